#!/bin/sh
# A re-refresh with nothing new, on a fresh machine (issue #18): a suite refreshed once, then
# refreshed again from another empty ARENA_HOME (its published rows are the starting state).
#   sh benchmarks/refresh_nothing_new.sh > benchmarks/results/refresh-nothing-new.txt 2>&1
# With a published suite's name, times that suite's re-refresh instead, from an empty
# ARENA_HOME (as a fresh clone would) and, where ARENA_HOME is set, from that store too:
#   ARENA_HOME=.arena/full-refresh-fashion_mnist sh benchmarks/refresh_nothing_new.sh fashion_mnist \
#       >> benchmarks/results/refresh-nothing-new.txt 2>&1
# Either way the published boards are restored from git afterwards: commit them first.
set -e
timed_refresh() {  # HOME_DIR SUITE LABEL
  start=$(date +%s.%N)
  ARENA_HOME=$1 arena leaderboard refresh "$2" --quiet 2>&1 >/dev/null | grep -E "started from|ran "
  end=$(date +%s.%N)
  echo "$3: $(echo "$end - $start" | bc) s"
}
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) $(nproc) cores"
if [ -n "${1:-}" ]; then
  rows=$(($(wc -l < "leaderboards/$1/results.csv") - 1))
  timed_refresh "$(mktemp -d)" "$1" "$1 re-refresh with nothing new, fresh ARENA_HOME ($rows published rows)"
  if [ -n "${ARENA_HOME:-}" ]; then
    timed_refresh "$ARENA_HOME" "$1" "$1 re-refresh with nothing new, the refresh's own store"
  fi
  git checkout -q -- leaderboards
  exit 0
fi
dir=$(mktemp -d)
cat > "$dir/suite.yaml" <<'YAML'
name: nothing-new
dataset: digits
epochs: 3
seeds: [0, 1, 2]
attackers: [none, badnets, pruning_aware]
defenders: [none, fine_pruning, {name: fine_tuning, params: {steps: 10}}]
YAML
ARENA_HOME=$(mktemp -d) arena leaderboard refresh "$dir/suite.yaml" --quiet > /dev/null 2>&1
echo "first refresh done; rows: $(($(wc -l < "$dir/results.csv") - 1))"
timed_refresh "$(mktemp -d)" "$dir/suite.yaml" "re-refresh with nothing new, fresh ARENA_HOME"
start=$(date +%s.%N)
ARENA_HOME=$(mktemp -d) arena leaderboard refresh fashion_mnist --pages-only --quiet > /dev/null 2>&1
end=$(date +%s.%N)
echo "fashion_mnist --pages-only (published rows): $(echo "$end - $start" | bc) s"
git checkout -q -- leaderboards

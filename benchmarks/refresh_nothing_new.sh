#!/bin/sh
# A re-refresh with nothing new, on a fresh machine (issue #18): a suite refreshed once, then
# refreshed again from another empty ARENA_HOME (its published rows are the starting state).
#   sh benchmarks/refresh_nothing_new.sh > benchmarks/results/refresh-nothing-new.txt 2>&1
set -e
dir=$(mktemp -d)
cat > "$dir/suite.yaml" <<'YAML'
name: nothing-new
dataset: digits
epochs: 3
seeds: [0, 1, 2]
attackers: [none, badnets, pruning_aware]
defenders: [none, fine_pruning, {name: fine_tuning, params: {steps: 10}}]
YAML
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)"
ARENA_HOME=$(mktemp -d) arena leaderboard refresh "$dir/suite.yaml" --quiet > /dev/null 2>&1
echo "first refresh done; rows: $(($(wc -l < "$dir/results.csv") - 1))"
start=$(date +%s.%N)
ARENA_HOME=$(mktemp -d) arena leaderboard refresh "$dir/suite.yaml" --quiet 2>&1 >/dev/null | grep -E "started from|ran "
end=$(date +%s.%N)
echo "re-refresh with nothing new, fresh ARENA_HOME: $(echo "$end - $start" | bc) s"
start=$(date +%s.%N)
ARENA_HOME=$(mktemp -d) arena leaderboard refresh fashion_mnist --pages-only --quiet > /dev/null 2>&1
end=$(date +%s.%N)
echo "fashion_mnist --pages-only (48 published rows): $(echo "$end - $start" | bc) s"
git checkout -q -- leaderboards

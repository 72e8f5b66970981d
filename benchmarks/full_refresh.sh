#!/bin/sh
# A full refresh of a published suite (issue #18), played in segments: each run refreshes
# leaderboards/SUITE (default fashion_mnist) from the same store for at most SECONDS seconds (then stops the way
# Ctrl-C does: the rows played so far stay in the store, and the next segment plays only the
# missing cells), and appends one line to the log saying when, on which commit, for how long
# and how many of the suite's rows the store held before and after. The last segment publishes.
#   sh benchmarks/full_refresh.sh SECONDS [SUITE] >> benchmarks/results/full-refresh-SUITE.log
# The store: $ARENA_HOME, default .arena/full-refresh-SUITE (ignored by git). Its rows,
# with each match's seconds per stage, give the breakdown (benchmarks/throughput.py breakdown).
set -u
seconds=${1:?usage: sh benchmarks/full_refresh.sh SECONDS [SUITE]}
suite=${2:-fashion_mnist}
export ARENA_HOME="${ARENA_HOME:-$(pwd)/.arena/full-refresh-$suite}"
mkdir -p "$ARENA_HOME"
rows() { arena results "$suite" --format csv 2>/dev/null | tail -n +2 | wc -l; }
before=$(rows)
commit=$(git rev-parse --short HEAD)
start=$(date +%s)
timeout -s INT "$seconds" arena leaderboard refresh "$suite" --quiet > "$ARENA_HOME/last-segment.out" 2>&1
rc=$?
end=$(date +%s)
echo "$(date -u -d @"$start" +%FT%TZ) commit $commit wall_s $((end - start)) rc $rc rows_before $before rows_after $(rows) $(nproc) cores"

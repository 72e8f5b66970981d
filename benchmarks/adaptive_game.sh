#!/usr/bin/env bash
# Issue #13's figures: the adaptive game (`arena oracle`) on digits and on the published
# Fashion-MNIST suite, and the constrained fine-pruning question. Raw outputs go to
# benchmarks/results/oracle/. Run from the repository root on an otherwise idle machine:
#   bash benchmarks/adaptive_game.sh digits          # the 3x3 digits suite (budget: 15 min on 2 cores)
#   bash benchmarks/adaptive_game.sh constrained-digits
#   ARENA_HOME=<the published board's store> bash benchmarks/adaptive_game.sh fashion_mnist
#   ARENA_HOME=<the published board's store> bash benchmarks/adaptive_game.sh constrained-fashion_mnist
#   ARENA_HOME=<the published board's store> bash benchmarks/adaptive_game.sh board SUITE   # issue #18
# `board SUITE` grows the game of a published board (leaderboards/SUITE, its `search` block) and
# writes board-SUITE*.* ; `arena leaderboard refresh SUITE` with the same ARENA_HOME then publishes
# it beside the static game. TRIALS (default 4), ITERATIONS (default 2) and TIME_BUDGET (seconds).
# The Fashion-MNIST runs reuse the published board's rows and models, so ARENA_HOME should be the
# store `arena leaderboard refresh fashion_mnist` wrote (a fresh one re-plays the board first).
set -euo pipefail
out=benchmarks/results/oracle
mkdir -p "$out"
export RAY_AUTH_MODE=disabled
# grow_board SUITE PREFIX: the oracle on the published board leaderboards/SUITE, its outputs
# written as $out/PREFIX*.*
grow_board() {
  : "${ARENA_HOME:?set ARENA_HOME to the store of the published board}"
  /usr/bin/time -v arena oracle "leaderboards/$1" --iterations "${ITERATIONS:-2}" --trials "${TRIALS:-4}" ${TIME_BUDGET:+--time "$TIME_BUDGET"} --json \
    --plot "$out/$2.png" > "$out/$2.json" 2> >(tail -n 40 > "$out/$2-time.txt")
  cp "$ARENA_HOME/oracle/$1/game.json" "$out/$2-game.json"
  arena results "$1+oracle" --format json > "$out/$2-cells.json"
}
case "${1:?which run}" in
  digits)
    export ARENA_HOME=${ARENA_HOME:-$(mktemp -d)}
    /usr/bin/time -v arena oracle benchmarks/suites/oracle-digits.yaml --json --plot "$out/oracle-digits.png" \
      > "$out/oracle-digits.json" 2> >(tail -n 40 > "$out/oracle-digits-time.txt")
    ;;
  constrained-digits|constrained-fashion_mnist)
    ds=${1#constrained-}
    export ARENA_HOME=${ARENA_HOME:-$(mktemp -d)}
    arena oracle "benchmarks/suites/fine-pruning-constrained-$ds.yaml" --iterations 2 --trials "${TRIALS:-16}" --json \
      --plot "$out/fine-pruning-constrained-$ds.png" > "$out/fine-pruning-constrained-$ds.json"
    arena results "fine-pruning-constrained-$ds+oracle" --format json > "$out/fine-pruning-constrained-$ds-cells.json"
    ;;
  fashion_mnist) grow_board fashion_mnist fashion_mnist ;;  # issue #13's run, under its file names
  board) grow_board "${2:?usage: bash benchmarks/adaptive_game.sh board SUITE}" "board-$2" ;;
  *) echo "unknown run $1" >&2; exit 2 ;;
esac

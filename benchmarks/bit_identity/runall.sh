# Play every case of cases.txt on digits (5 epochs) with the arena of source tree TREE, on a fresh
# ARENA_HOME, writing one match JSON per case (with the deployed model's SHA-256) into OUTDIR.
#   git worktree add /tmp/before REV_BEFORE
#   bash benchmarks/bit_identity/runall.sh /tmp/before /tmp/home-before /tmp/out-before
#   bash benchmarks/bit_identity/runall.sh "$PWD" /tmp/home-after /tmp/out-after
#   python benchmarks/bit_identity/compare.py /tmp/out-before /tmp/out-after
# (the redesign's shared-mechanism move: REV_BEFORE = 46bd7da, after = 5f59d8b; outputs in
# benchmarks/results/bit-identity-shared-mechanisms/{before,after}; run.py reads the tree from
# PYTHONPATH, so run it from a tree that has arena on its path as its own package.)
set -e
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
tree=$1; home=$2; outdir=$3
rm -rf "$home"; mkdir -p "$outdir"
while IFS='|' read -r name args; do
  [ -z "$name" ] && continue
  start=$(date +%s)
  # shellcheck disable=SC2086  # the case's arguments are meant to split
  (cd "$tree" && PYTHONPATH="$tree" ARENA_HOME="$home" "$python" "$here/run.py" "$outdir/$name.json" -- $args --dataset digits --epochs 5)
  echo "  $name $(( $(date +%s) - start ))s"
done < "$here/cases.txt"

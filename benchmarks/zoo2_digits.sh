#!/usr/bin/env bash
# The digits figures of the attack zoo, part 2 (issue #14) and of the mends to clean_label and
# trojan_nn, quoted in docstrings and in benchmarks/RESULTS.md. One match per line, seed 0
# unless "_seed" says otherwise; the rows go to benchmarks/results/zoo2-digits.txt.
#     bash benchmarks/zoo2_digits.sh [HOME]
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${1:-$(mktemp -d)}
out=benchmarks/results/zoo2-digits.txt
{
  echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD): python benchmarks/play.py HOME ..."
  python benchmarks/play.py "$HOME_DIR" \
    post_it 'post_it:{"trigger_pattern":"white"}' large_trigger tact 'tact:{"cover_rate":0.0}' \
    adaptive_blend 'adaptive_blend:{"poison_rate":0.05,"cover_rate":0.05}' 'adaptive_blend:{"alpha":0.2,"test_alpha":0.3}' adaptive_patch strip_evading \
    'badnets:{"_defender":"strip"}' 'strip_evading:{"_defender":"strip"}' \
    'badnets:{"_defender":"feature_squeezing"}' 'badnets:{"_defender":"feature_squeezing","squeeze_robust":true}' 'tact:{"_defender":"strip"}' \
    wanet 'wanet:{"warp_seed":1}' 'wanet:{"warp_seed":2}' 'wanet:{"strength":1.0,"poison_rate":0.3}' 'wanet:{"strength":1.0,"poison_rate":0.3,"warp_seed":1}' 'wanet:{"strength":1.0,"poison_rate":0.3,"warp_seed":2}' \
    reflection 'reflection:{"poison_rate":1.0}' input_aware 'input_aware:{"_seed":1}' \
    sbl 'sbl:{"_defender":"fine_tuning"}' 'badnets:{"_defender":"fine_tuning"}' 'sbl:{"_defender":"fine_pruning"}' 'badnets:{"_defender":"fine_pruning"}' \
    clean_label 'clean_label:{"_seed":1}' 'clean_label:{"surrogate":"standard"}' 'clean_label:{"poison_rate":1.0}' 'clean_label:{"epsilon":0.1}' 'clean_label:{"epsilon":0.3}' \
    trojan_nn 'trojan_nn:{"_seed":1}' 'trojan_nn:{"trigger_area":0.25}' 'trojan_nn:{"trigger_area":0.25,"_seed":1}'
} | tee "$out"

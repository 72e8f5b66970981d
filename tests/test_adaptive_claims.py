"""Claims that compare a defense with its baseline on digits, each against the same attacked model."""


from arena.match import prepare, run_match


def test_fine_pruning_removes_more_of_a_badnets_backdoor_than_fine_tuning(store):
    """Fine-Pruning's claim against its fine-tuning baseline, both at their defaults (same clean
    split and fine-tuning budget; fine-pruning first prunes to a 15% accuracy drop). On digits
    neither removes the backdoor, but fine-pruning leaves clearly less of it (the assertions say
    how much); seeds 1 and 2 gave the same order when this test was written."""
    tuned = run_match(prepare("badnets", "fine_tuning"), store).to_json()
    pruned = run_match(prepare("badnets", "fine_pruning"), store).to_json()
    assert tuned["attacked"]["asr"] > 0.95 and tuned["artifact_sha256"] == pruned["artifact_sha256"]
    assert tuned["defended"]["asr"] > 0.9  # fine-tuning alone leaves the backdoor
    assert pruned["defended"]["asr"] < tuned["defended"]["asr"] - 0.15

"""Play matches one after another and print a row each (a quick figure with its command).

    python benchmarks/play.py HOME 'ATTACKER[:JSON params]' ...

JSON params may carry "_defender" (default none), "_dparams" (defender params) and "_seed" (0).
Digits by default ("_dataset" picks another)."""
import sys, time, json, torch
torch.set_num_threads(1)
from arena.match import prepare, run_match
from arena.store import ArtifactStore
store = ArtifactStore(sys.argv[1])
for spec in sys.argv[2:]:
    name, _, rest = spec.partition(":")
    params = json.loads(rest) if rest else {}
    defender = params.pop("_defender", "none")
    dp = params.pop("_dparams", {})
    seed = params.pop("_seed", 0)
    dataset = params.pop("_dataset", "digits")
    t = time.time()
    r = run_match(prepare(name, defender, attacker_params=params, defender_params=dp, seed=seed, dataset=dataset), store).to_json()
    print(spec, defender, "CA %.3f ASR %.3f honest %.3f stealthy %s per %s | defended CA %.3f ASR %.3f  %.0fs" % (r["attacked"]["ca"], r["attacked"]["asr"], r["honest"]["ca"], r["stealthy"], {k: round(v,3) for k,v in r["attacked"]["asr_per_trigger"].items()}, r["defended"]["ca"], r["defended"]["asr"], time.time()-t), flush=True)

"""Compare the before/after match JSONs: every metric, verdict, hash; ignore timings, fingerprints, provenance."""
import json, sys
from pathlib import Path
IGNORE = {"seconds", "fingerprints", "provenance", "arena_file", "cached"}
def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if k in IGNORE: continue
        key = f"{prefix}{k}"
        if isinstance(v, dict): out.update(flat(v, key + "."))
        else: out[key] = v
    return out
before, after = Path(sys.argv[1]), Path(sys.argv[2])
ok = True
print(f"| case | attacked model sha256 | deployed model sha256 | defended CA / ASR | verdict | fields compared | equal |")
print("|---|---|---|---|---|---|---|")
for f in sorted(before.glob("*.json")):
    b, a = flat(json.load(open(f))), flat(json.load(open(after / f.name)))
    diff = sorted(k for k in b.keys() | a.keys() if b.get(k) != a.get(k))
    ok &= not diff
    v = b.get("defended.verdict.labels")
    print(f"| {f.stem} | {b['artifact_sha256'][:12]} | {b['deployed_sha256'][:12]} | {b['defended.ca']:.4f} / {b['defended.asr']:.4f} | {'flagged ' + str(v) if b.get('defended.verdict.flagged') else '-'} | {len(b)} | {'yes' if not diff else 'NO: ' + ', '.join(diff)} |")
print("ALL EQUAL" if ok else "DIFFERENCES")

"""The red team against the boundary, as figures (issue 17).

    python benchmarks/redteam.py

Plays badnets against `none` and against each red-team defender of
tests/fixture_plugins/arena_redteam.py on digits, once in the sandbox mode in force (`arena
doctor`) and once in the weaker `process` mode, on one fresh home whose name the red team
recognises (it keeps to homes named for it). Writes one JSON row per (defender, mode) to
results/redteam-digits.jsonl: the defended CA, ASR and utility, or the error its cell failed with,
and whether the home's manifests still verify afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PLUGINS = Path(__file__).parents[1] / "tests" / "fixture_plugins"
DEFENDERS = ("none", "arena_redteam/spy", "arena_redteam/stateful_filter", "arena_redteam/remembering_filter", "arena_redteam/forger")


def main() -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(PLUGINS))
    from arena.errors import ArenaError
    from arena.match import prepare, run_match
    from arena.registry import DEFENDERS as REGISTRY
    from arena.sandbox import sandbox_mode
    from arena.store import ArtifactStore

    REGISTRY.refresh()
    in_force = sandbox_mode()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "redteam-digits.jsonl"
    for mode in dict.fromkeys((in_force, "process")):
        home = Path(tempfile.mkdtemp(prefix=f"redteam-{mode}-"))
        os.environ["ARENA_SANDBOX"] = mode
        for defender in DEFENDERS:
            row: dict = {"mode": mode, "defender": defender}
            try:
                result = run_match(prepare("badnets", defender), ArtifactStore(home)).to_json()
                row.update(status="ok", defended=result["defended"], utility=result["utility"], attacked_asr=result["attacked"]["asr"])
            except ArenaError as exc:
                row.update(status="error", error=str(exc)[:300])
            store = ArtifactStore(home)
            intact = True
            for path in (home / "models").glob("*.json"):
                try:
                    store.read_manifest(path.stem)
                except ArenaError:
                    intact = False
            row["store_verifies_after"] = intact
            print(json.dumps(row), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

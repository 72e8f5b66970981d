"""`arena doctor`: what this machine gives arena (the sandbox in force, the state home, devices)."""

from __future__ import annotations

import argparse
import json

from arena.cli import render


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="say which sandbox is in force, where state lives, which devices arena sees")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from arena.device import cuda_available
    from arena.sandbox import doctor
    from arena.store import arena_home

    report = {
        "sandbox": doctor(),
        "arena_home": str(arena_home()),
        "torch": torch.__version__,
        "cuda": cuda_available(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render.doctor_report(report, render.out())
    return 0

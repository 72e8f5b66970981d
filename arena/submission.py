"""Submitting a strategy: the author's bundle and the maintainer's isolated install.

`arena submit PACKAGE_DIR` builds the plugin's wheel, installs it into a folder of its own (never
the user's environment), runs `arena check` on every strategy it declares, and writes a bundle:
one zip holding the wheel and `submission.json` (the wheel's SHA-256, the strategies, the check
report, the arena version and commit it was checked with). A strategy that fails a check gets no
bundle.

`arena leaderboard refresh SUITE --submission BUNDLE` opens the bundle, refuses it unless the
wheel's SHA-256 is the one recorded (a wheel altered after it was checked), installs the wheel
into a fresh folder outside ARENA_HOME (no dependencies are installed: a submission runs on the
arena environment's packages) and puts that folder on the path of this process and of every
tournament worker, where the strategy runs sandboxed like any plugin (docs/design.md §1). The
published board records the bundle's hash beside the strategy's rows (submissions.json).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arena
from arena.errors import UsageError

MANIFEST = "submission.json"
FORMAT = 1
GROUPS = {"arena.attackers": "attacker", "arena.defenders": "defender"}
MAX_WHEEL_BYTES = 256 * 2**20
MAX_WHEEL_UNPACKED = 1024 * 2**20
MAX_WHEEL_FILES = 10_000
MAX_MANIFEST_BYTES = 2**20


class SubmissionError(UsageError):
    """A bundle that is not one, or one that was altered: refused, nothing installed or played."""


@dataclass(frozen=True)
class Submission:
    """An opened, verified and installed bundle."""

    bundle: Path
    manifest: dict[str, Any]
    site: Path  # the folder the wheel was installed into

    @property
    def strategies(self) -> list[tuple[str, str]]:
        return [(s["kind"], s["name"]) for s in self.manifest["strategies"]]

    def provenance(self) -> dict[str, Any]:
        m = self.manifest
        return {"bundle": self.bundle.name, "wheel": m["wheel"], "sha256": m["sha256"], "checked_with": m["checked_with"], "built": m["built"]}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-600:]
        raise SubmissionError(f"{what} failed (pip exited {proc.returncode}): {tail}")


def build_wheel(package_dir: Path, out: Path) -> Path:
    """The package's wheel, built with the build tools of this environment (no download)."""
    if not package_dir.is_dir() or not ((package_dir / "pyproject.toml").exists() or (package_dir / "setup.py").exists()):
        raise SubmissionError(
            f"{package_dir} is not a Python package folder (it has no pyproject.toml or setup.py); "
            "`arena submit` takes the folder of a plugin package, like examples/arena-squeeze-defense."
        )
    out.mkdir(parents=True, exist_ok=True)
    _pip(["wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(package_dir)], f"building the wheel of {package_dir}")
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise SubmissionError(f"building {package_dir} gave {len(wheels)} wheels, not one.")
    return wheels[0]


def install_isolated(wheel: Path, site: Path) -> Path:
    """Install `wheel` alone into `site` (a folder of its own; no dependencies)."""
    site.mkdir(parents=True, exist_ok=True)
    _pip(["install", "--quiet", "--no-deps", "--no-compile", "--target", str(site), str(wheel)], f"installing {wheel.name} into an isolated folder")
    return site


def the_distribution(site: Path) -> Any:
    """The one distribution installed in `site`, as Python's metadata lookup sees it (whatever
    the case of its folder's name). Anything else (none, two, no Name) is a SubmissionError."""
    from importlib.metadata import distributions

    found = list(distributions(path=[str(site)]))
    if len(found) != 1:
        raise SubmissionError(f"the installed wheel holds {len(found)} distributions' metadata; a submission is one distribution. Refused; nothing was played.")
    dist = found[0]
    try:
        name = dist.metadata["Name"] if dist.metadata is not None else None
    except (OSError, ValueError, TypeError):
        name = None
    if not isinstance(name, str) or not name.strip():
        raise SubmissionError("the installed wheel names no distribution (its METADATA has no Name); a wheel pip builds has one. Refused; nothing was played.")
    return dist


def declared_strategies(site: Path) -> list[dict[str, str]]:
    """The strategies the installed wheel declares, named as arena lists them (package/name).
    A wheel may declare attackers and defenders only: the other extension points (trigger
    kinds, architectures, datasets) run in arena's own process, outside any sandbox, so a
    submission that declares one is refused."""
    dist = the_distribution(site)
    package = dist.metadata["Name"].lower().replace("-", "_")
    out = []
    for ep in dist.entry_points:
        if ep.group in GROUPS:
            out.append({"kind": GROUPS[ep.group], "name": f"{package}/{ep.name}", "entry_point": ep.value})
        elif ep.group.startswith("arena"):
            raise SubmissionError(f"the wheel declares {ep.name!r} in the entry point group {ep.group!r}; a submission may declare attackers and defenders only "
                                  "(other extension points run unsandboxed in arena's process). Refused; nothing was played.")
    return sorted(out, key=lambda s: (s["kind"], s["name"]))


def on_path(site: Path) -> None:
    """Make the installed submission importable here and in the workers this process starts or
    sends jobs to (arena.registry.add_plugin_path); the registries find its entry points."""
    from arena.registry import add_plugin_path

    add_plugin_path(str(site))


def build_bundle(package_dir: Path, output: Path | None = None, time_budget_s: float = 60.0, progress: Any = None) -> tuple[Path, dict[str, Any]]:
    """Build, install in isolation, check, and bundle a plugin package; returns the bundle's path
    and manifest. Raises SubmissionError (no bundle written) when a check fails."""
    from arena.contract import check
    from arena.provenance import git_commit

    package_dir = package_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="arena-submit-") as tmp:
        wheel = build_wheel(package_dir, Path(tmp) / "wheel")
        if wheel.stat().st_size > MAX_WHEEL_BYTES:
            raise SubmissionError(f"the wheel of {package_dir} is {wheel.stat().st_size / 2**20:.0f} MiB, over the {MAX_WHEEL_BYTES // 2**20} MiB a submission may be.")
        site = install_isolated(wheel, Path(tmp) / "site")
        # the check must import the wheel's code, not a copy of the package already installed here (pip install -e)
        refuse_shadowing(site, f"the wheel of {package_dir}", remedy="Uninstall the development copy (pip uninstall) or submit from an environment without it; no bundle was written.")
        strategies = declared_strategies(site)
        if not strategies:
            raise SubmissionError(f"{wheel.name} declares no strategy: a plugin names its classes under [project.entry-points.\"arena.attackers\"] or [project.entry-points.\"arena.defenders\"].")
        on_path(site)
        report: dict[str, list[dict[str, Any]]] = {}
        failed = []
        try:
            for s in strategies:
                if progress is not None:
                    progress(f"checking {s['kind']} {s['name']}")
                checks = check(s["kind"], s["name"], time_budget_s=time_budget_s)
                report[s["name"]] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]
                failed += [f"{s['name']}: {c.name} ({c.detail[:200]})" for c in checks if not c.ok]
        finally:
            from arena.registry import remove_plugin_path

            remove_plugin_path(str(site))  # the folder goes with the temporary directory
            for module in [m for m in sys.modules if m.split(".")[0] in {s["entry_point"].split(":")[0].split(".")[0] for s in strategies}]:
                del sys.modules[module]  # imported from the folder by the check: a later import must not find the stale one
        if failed:
            raise SubmissionError(f"{len(failed)} check(s) failed, so no bundle was written: " + "; ".join(failed) + ". `arena check KIND NAME` shows each in full.")
        manifest = {
            "format": FORMAT,
            "wheel": wheel.name,
            "sha256": sha256_file(wheel),
            "size": wheel.stat().st_size,
            "strategies": strategies,
            "check": report,
            "checked_with": {"arena_version": arena.__version__, "git_commit": git_commit(), "python": sys.version.split()[0]},
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        name = wheel.name.removesuffix(".whl")
        bundle = (output or Path.cwd() / f"{name}.arena-submission.zip").resolve()
        if bundle.is_dir():
            bundle = bundle / f"{name}.arena-submission.zip"
        part = bundle.with_name(bundle.name + ".part")
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            z.write(wheel, wheel.name)
        part.replace(bundle)
        return bundle, manifest


def _manifest_problem(m: Any) -> str | None:
    if not isinstance(m, dict):
        return "its submission.json is not a JSON object"
    if m.get("format") != FORMAT:
        return f"its format is {m.get('format')!r}, this arena reads format {FORMAT}"
    for field, kind in (("wheel", str), ("sha256", str), ("strategies", list), ("check", dict), ("checked_with", dict), ("built", str)):
        if not isinstance(m.get(field), kind):
            return f"its {field!r} is missing or not a {kind.__name__}"
    wheel = m["wheel"]
    if "/" in wheel or "\\" in wheel or not wheel.endswith(".whl") or wheel.startswith("."):
        return f"its wheel name {wheel!r} is not a plain .whl file name"
    if len(m["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in m["sha256"]):
        return "its sha256 is not a SHA-256 in hex"
    for s in m["strategies"]:
        if not isinstance(s, dict) or s.get("kind") not in GROUPS.values() or not isinstance(s.get("name"), str):
            return f"its strategy entry {s!r} is not {{kind, name}}"
    return None


def _read_bundle(bundle: Path, workdir: Path) -> tuple[dict[str, Any], Path, str]:
    """The bundle's manifest, its wheel written to `workdir` and the wheel's SHA-256 (hashed as
    it is written). Every way a zip can be damaged or hostile is a SubmissionError."""
    try:
        with zipfile.ZipFile(bundle) as z:
            infos = {i.filename: i for i in z.infolist()}
            if MANIFEST not in infos:
                raise SubmissionError(f"{bundle} is not a submission bundle: it has no {MANIFEST}.")
            if infos[MANIFEST].file_size > MAX_MANIFEST_BYTES:
                raise SubmissionError(f"the {MANIFEST} of {bundle} is over {MAX_MANIFEST_BYTES // 2**20} MiB; a bundle's manifest is a few KiB. Nothing was installed.")
            manifest = json.loads(z.read(MANIFEST).decode("utf-8"))
            problem = _manifest_problem(manifest)
            if problem:
                raise SubmissionError(f"{bundle} is not a sound submission bundle: {problem}. Nothing was installed.")
            if sorted(infos) != sorted([MANIFEST, manifest["wheel"]]):
                raise SubmissionError(f"{bundle} holds {len(infos)} files; a bundle holds {MANIFEST} and the wheel {manifest['wheel']} only. Nothing was installed.")
            if infos[manifest["wheel"]].file_size > MAX_WHEEL_BYTES:
                raise SubmissionError(f"the wheel in {bundle} is over the {MAX_WHEEL_BYTES // 2**20} MiB a submission may be. Nothing was installed.")
            workdir.mkdir(parents=True, exist_ok=True)
            wheel = workdir / manifest["wheel"]
            digest, written = hashlib.sha256(), 0
            with z.open(manifest["wheel"]) as source, wheel.open("wb") as target:
                for block in iter(lambda: source.read(1 << 20), b""):
                    written += len(block)
                    if written > MAX_WHEEL_BYTES:  # a size field can lie; the bytes cannot
                        raise SubmissionError(f"the wheel in {bundle} unpacks past the {MAX_WHEEL_BYTES // 2**20} MiB a submission may be. Nothing was installed.")
                    digest.update(block)
                    target.write(block)
            _check_wheel_contents(wheel, bundle)
            return manifest, wheel, digest.hexdigest()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError (a RuntimeError): an unknown compression
        raise SubmissionError(f"{bundle} is not a readable submission bundle ({type(exc).__name__}: {str(exc)[:200]}). Nothing was installed.") from None


def _check_wheel_contents(wheel: Path, bundle: Path) -> None:
    """A wheel pip may unpack: bounded in files and bytes, one distribution, no path outside."""
    with zipfile.ZipFile(wheel) as w:
        infos = w.infolist()
        if len(infos) > MAX_WHEEL_FILES or sum(i.file_size for i in infos) > MAX_WHEEL_UNPACKED:
            raise SubmissionError(f"the wheel in {bundle} unpacks to {len(infos)} files and {sum(i.file_size for i in infos) / 2**20:.0f} MiB, over the "
                                  f"{MAX_WHEEL_FILES} files and {MAX_WHEEL_UNPACKED // 2**20} MiB a submission may be. Nothing was installed.")
        for info in infos:
            name = info.filename
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name.split("/")[0]:
                raise SubmissionError(f"the wheel in {bundle} holds {name!r}, a path outside its own folder. Refused; nothing was installed.")
        tops = {Path(i.filename).parts[0] for i in infos if Path(i.filename).parts}
        infos_dirs = [t for t in tops if t.lower().endswith((".dist-info", ".egg-info"))]  # Python's metadata lookup ignores case
        if len([t for t in infos_dirs if t.lower().endswith(".dist-info")]) != 1 or any(t.lower().endswith(".egg-info") for t in infos_dirs):
            raise SubmissionError(f"the wheel in {bundle} holds {sorted(infos_dirs) or 'no'} distribution metadata; a submission is one distribution (one .dist-info). Refused; nothing was installed.")


def _module_name(entry: Path) -> str | None:
    """The top-level module name a folder or file of an install folder is importable as."""
    import importlib.machinery

    if entry.is_dir():
        return entry.name if entry.name.isidentifier() else None
    for suffix in sorted(importlib.machinery.all_suffixes(), key=len, reverse=True):  # .py, .pyc, .cpython-311-x86_64-linux-gnu.so, .abi3.so, .so
        if entry.name.endswith(suffix):
            stem = entry.name[: -len(suffix)]
            return stem if stem.isidentifier() else None
    return None


def refuse_shadowing(site: Path, where: str, remedy: str = "Refused; nothing was played.") -> None:
    """A submission adds new names only: no module that this environment already imports or
    finds elsewhere (the standard library, arena's dependencies, another plugin, a development
    copy of the same package), no distribution already installed, no strategy name already
    registered. The folder is put last on the path, so even a name this misses resolves to what
    was there before."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, distribution

    from arena.registry import ATTACKERS, DEFENDERS

    name = the_distribution(site).metadata["Name"]
    try:
        distribution(name)
        installed = True
    except (PackageNotFoundError, ValueError):
        installed = False
    if installed:
        raise SubmissionError(f"{where} is distribution {name!r}, which is already installed here: a submission may not stand in for an installed package. {remedy}")
    for entry in sorted(site.iterdir()):
        if entry.name.lower().endswith(".dist-info") or entry.name in ("bin", "__pycache__"):
            continue
        module = _module_name(entry)
        if module is None:
            continue  # not importable by name (data files; a .pth is not read from a --target folder)
        if module in sys.modules or module in sys.stdlib_module_names or importlib.util.find_spec(module) is not None:
            raise SubmissionError(f"{where} ships the top-level module {module!r}, which this environment already has: a submission may not "
                                  f"replace code arena or another package imports. {remedy}")
    for strategy in declared_strategies(site):
        registry = ATTACKERS if strategy["kind"] == "attacker" else DEFENDERS
        if strategy["name"] in registry.names():
            raise SubmissionError(f"{strategy['kind']} {strategy['name']!r} is already registered here (installed, or another submission): a submission may not "
                                  f"take over a name. {remedy}")


def open_bundle(bundle: Path, workdir: Path) -> Submission:
    """Verify a bundle and install its wheel into `workdir`/site. Refused (SubmissionError, and
    nothing played) when it is not a bundle, when the wheel's SHA-256 is not the recorded one
    (altered after it was written), when it would shadow anything already here, or when the
    installed wheel declares other strategies than its report covers. The hash shows the wheel is
    the one its manifest names, not that the manifest is honest: the refresh checks the
    strategies again itself (`open_submissions`)."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise SubmissionError(f"no submission bundle at {bundle}; `arena submit PACKAGE_DIR` writes one.")
    manifest, wheel, actual = _read_bundle(bundle, workdir)
    if actual != manifest["sha256"]:
        wheel.unlink()
        raise SubmissionError(
            f"the wheel in {bundle} has SHA-256 {actual}, but the bundle records {manifest['sha256']}: it was altered after it was built and checked. "
            "Refused; nothing was installed or played. Ask the author for the bundle `arena submit` wrote."
        )
    site = install_isolated(wheel, workdir / "site")
    refuse_shadowing(site, f"the wheel in {bundle}")
    declared = [{"kind": s["kind"], "name": s["name"]} for s in declared_strategies(site)]
    recorded = sorted(({"kind": s["kind"], "name": s["name"]} for s in manifest["strategies"]), key=lambda s: (s["kind"], s["name"]))
    if declared != recorded:
        raise SubmissionError(f"the wheel in {bundle} declares {declared}, the bundle records {recorded}. Refused; nothing was played.")
    failed = [f"{n}: {c.get('name') if isinstance(c, dict) else c!r}" for n, checks in manifest["check"].items() for c in (checks if isinstance(checks, list) else [checks])
              if not (isinstance(c, dict) and c.get("ok") is True)]  # fmt: skip
    if failed or set(manifest["check"]) != {s["name"] for s in recorded}:
        raise SubmissionError(f"the bundle's check report does not pass every check of every strategy ({', '.join(failed) or 'strategies missing from it'}). Refused; nothing was played.")
    return Submission(bundle.resolve(), manifest, site)


def provenance_entries(submission: Submission) -> dict[str, dict[str, Any]]:
    """What submissions.json keeps of a played bundle, per strategy name (written by
    arena.leaderboard.publish with the rest of the board)."""
    return {name: {"kind": kind, **submission.provenance(), "played": time.strftime("%Y-%m-%d")} for kind, name in submission.strategies}

"""Issue 17, "No traceback anywhere": every bad input below is one `arena: error:` paragraph on
stderr and a non-zero exit, and leaves the user's files as they were."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from arena import data
from arena.cli import main

SUITE = "dataset: digits\nseeds: [0]\nattackers: [badnets]\ndefenders: [none]\n"


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    """main(argv): its exit code, stdout, and stderr joined onto one line (rich wraps long lines)."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.replace("\n", " ")
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, err


def suite_file(folder: Path, text: str | bytes = SUITE, name: str = "suite.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# ---------------------------------------------------------------------------------------------
# 1. A damaged results database


@pytest.fixture
def damaged_results(arena_home: Path) -> bytes:
    """results.sqlite overwritten with bytes that are not a database; returns them."""
    arena_home.mkdir(parents=True)
    garbage = np.random.default_rng(0).bytes(8192)
    (arena_home / "results.sqlite").write_bytes(garbage)
    return garbage


@pytest.mark.parametrize("command", [["results", "s"], ["leaderboard", "show", "SUITE"], ["tournament", "SUITE", "--quiet"]])
def test_a_damaged_results_database_is_named_and_left_alone(command, damaged_results, arena_home, tmp_path, capsys):
    suite = suite_file(tmp_path / "s")
    argv = [str(suite) if part == "SUITE" else part for part in command]
    code, out, err = run_cli(capsys, argv)
    path = arena_home / "results.sqlite"
    assert code == 1 and out == ""
    assert f"The results database {path} is damaged" in err and "Move it away" in err
    assert path.read_bytes() == damaged_results


def test_a_truncated_results_database_is_named(arena_home, capsys):
    from arena.results import ResultsStore

    path = arena_home / "results.sqlite"
    store = ResultsStore(path)
    store.db.executemany("INSERT INTO matches VALUES (?, ?, ?, 'ok', '{}', NULL, 1, 't')", [("s", f"k{i}", json.dumps({"pad": "x" * 400})) for i in range(200)])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, _, err = run_cli(capsys, ["results", "s"])
    assert code == 1 and f"{path} is damaged" in err


@pytest.mark.parametrize(
    "spec, result, why",
    [
        ("{}", "not json {", "JSONDecodeError"),  # a result column that is not JSON
        ('{"attack": {}}', "{}", "KeyError"),  # a spec without its fields
        (None, '{"defended": 3}', "AttributeError"),  # a result of the wrong shape
        (None, "[1, 2]", "not an object"),
    ],
)
def test_an_unreadable_row_names_its_match_and_how_to_drop_it(spec, result, why, arena_home, capsys):
    from arena.results import ResultsStore
    from arena.suite import parse_suite

    path = arena_home / "results.sqlite"
    match = parse_suite({"dataset": "digits", "seeds": [0], "attackers": ["badnets"], "defenders": ["none"]}, "s").matches()[0]
    store = ResultsStore(path)
    store.db.execute("INSERT INTO matches VALUES ('s', 'k1', ?, 'ok', ?, NULL, 1, 't')", (spec or json.dumps(match.to_dict()), result))
    store.close()
    before = path.read_bytes()
    code, out, err = run_cli(capsys, ["results", "s"])
    assert code == 1 and out == ""
    assert f"{path} holds a row it cannot read (suite 's', match k1)" in err and why in err and "DELETE FROM matches" in err
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 2. Brackets in user text reach rich as text, never as markup


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["match", "--attacker", "[/]", "--defender", "none"], "Unknown attacker '[/]'"),  # rich used to raise MarkupError
        (["match", "--attacker", "[red]bad", "--defender", "none"], "Unknown attacker '[red]bad'"),  # rich used to swallow the tag
        (["match", "--attacker", "badnets", "--defender", "none", "--set", "attacker.[bold]x=1"], "hyperparameter '[bold]x'"),
        (["match", "--attacker", "badnets", "--defender", "none", "--set", "attacker.target=[/red]"], "got '[/red]'"),
        (["results", "[/]"], "no results for suite '[/]'"),
    ],
)
def test_brackets_in_user_text_are_printed_as_typed(argv, shown, arena_home, capsys):
    code, _, err = run_cli(capsys, argv)
    assert code == 2 and err.startswith("arena: error:") and shown in err


def test_brackets_in_labels_are_shown_in_tables(tmp_path, capsys):
    matrix = tmp_path / "m.csv"
    matrix.write_text(",[/],[bold]b\n[red]x,1,0\ny,0,1\n")
    code, out, _ = run_cli(capsys, ["nash", str(matrix)])
    assert code == 0 and all(label in out for label in ("[/]", "[bold]b", "[red]x"))


# ---------------------------------------------------------------------------------------------
# 3. Damaged dataset files, and which copy was read


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic, dimensions, values."""
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.astype(np.uint8).tobytes()


def write_fashion(folder: Path, n: int = 20) -> None:
    """A tiny but well-formed Fashion-MNIST: n training and n test images with labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(rng.integers(0, 256, (n, 28, 28)))))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(rng.integers(0, 10, n))))


@pytest.fixture
def fashion_dirs(tmp_path, monkeypatch):
    """ARENA_DATA_DIR and the system folder, both under tmp_path; the loader's cache cleared around."""
    user, system = tmp_path / "user", tmp_path / "system"
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", system)
    monkeypatch.setattr(data, "_fashion_mnist_torchvision", lambda: None)
    data._load_dataset.cache_clear()
    yield user, system
    data._load_dataset.cache_clear()


FASHION_MATCH = ["match", "--attacker", "badnets", "--defender", "none", "--dataset", "fashion_mnist", "--quiet"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[: len(raw) // 2], "is damaged: it is not a complete gzip file"),
        (lambda raw: b"\x00" * len(raw), "is damaged: it is not a complete gzip file"),
        (lambda raw: gzip.compress(gzip.decompress(raw)[:-7]), "is damaged: its header promises"),
        (lambda raw: gzip.compress(gzip.decompress(raw)[:6]), "is damaged: its header is cut short"),
    ],
)
def test_a_damaged_dataset_file_is_named(damage, message, fashion_dirs, arena_home, monkeypatch, capsys):
    user, _ = fashion_dirs
    write_fashion(user)
    target = user / "train-images-idx3-ubyte.gz"
    target.write_bytes(damage(target.read_bytes()))
    monkeypatch.setenv("ARENA_DATA_DIR", str(user))
    code, out, err = run_cli(capsys, FASHION_MATCH)
    assert code == 1 and out == "" and f"{target} {message}" in err


def test_labels_where_images_belong_are_refused_by_name(fashion_dirs, arena_home, monkeypatch, capsys):
    user, _ = fashion_dirs
    write_fashion(user)
    (user / "train-images-idx3-ubyte.gz").write_bytes((user / "train-labels-idx1-ubyte.gz").read_bytes())
    monkeypatch.setenv("ARENA_DATA_DIR", str(user))
    code, _, err = run_cli(capsys, FASHION_MATCH)
    assert code == 1 and "are not an image file (3-D) and a label file (1-D)" in err


@pytest.mark.parametrize("user_dir_set", [False, True])
def test_the_system_copy_of_a_dataset_is_named_once(user_dir_set, fashion_dirs, arena_home, monkeypatch, capsys):
    user, system = fashion_dirs
    write_fashion(system)
    if user_dir_set:
        user.mkdir()
        monkeypatch.setenv("ARENA_DATA_DIR", str(user))
    else:
        monkeypatch.delenv("ARENA_DATA_DIR", raising=False)
    # fails after the data is read (1 clean sample of 20; fine_pruning needs 10): no training
    code, _, err = run_cli(capsys, ["match", "--attacker", "badnets", "--defender", "fine_pruning", "--dataset", "fashion_mnist"])
    assert code == 2 and "needs at least" in err
    note = f"arena: note: Fashion-MNIST: read from the system copy in {system}"
    assert err.count(note) == 1
    assert (f"ARENA_DATA_DIR={user} lacks its four IDX files" if user_dir_set else "ARENA_DATA_DIR is not set") in err


def test_a_dataset_from_arena_data_dir_gets_no_note(fashion_dirs, arena_home, monkeypatch, capsys):
    user, system = fashion_dirs
    write_fashion(user)
    write_fashion(system)
    monkeypatch.setenv("ARENA_DATA_DIR", str(user))
    code, _, err = run_cli(capsys, ["match", "--attacker", "badnets", "--defender", "fine_pruning", "--dataset", "fashion_mnist"])
    assert code == 2 and "arena: note:" not in err


# ---------------------------------------------------------------------------------------------
# 4. Suites: encoding, duplicate keys, non-finite numbers, grids too large to expand


@pytest.mark.parametrize(
    "text, message",
    [
        (SUITE + "seeds: [1]\n", "the key 'seeds' is given twice in one mapping (lines 2 and 5)"),
        (SUITE.replace("[badnets]", "[{name: badnets, params: {target: 1, target: 2}}]"), "the key 'target' is given twice"),
        (SUITE + "limits: {attack_timeout_s: .nan}\n", "`limits.attack_timeout_s` must be a finite number, got nan"),
        (SUITE + "limits: {defense_timeout_s: .inf}\n", "`limits.defense_timeout_s` must be a finite number, got inf"),
        (SUITE + "limits: {retries: 1.5}\n", "`limits.retries` must be a whole number"),
        (SUITE + "stealth_tolerance: .nan\n", "`stealth_tolerance` must be a finite number"),
        (SUITE + "clean_budget: .inf\n", "`clean_budget` must be a finite number"),
        (SUITE + "limits: {max_matches: 1000000}\n", "at most 100,000"),
        (SUITE.replace("[0]", "[4294967296]"), "a seed must be in [0, 2**32)"),
        (SUITE.replace("[0]", "[-1]"), "a seed must be in [0, 2**32)"),
        (SUITE + "name: ../escape\n", "`name` must be a non-empty text without /"),
    ],
)
def test_a_bad_suite_file_is_one_error(text, message, tmp_path, arena_home, capsys):
    path = suite_file(tmp_path / "s", text)
    code, _, err = run_cli(capsys, ["tournament", str(path), "--quiet"])
    assert code == 2 and message in err


def test_a_suite_that_is_not_utf8_names_the_byte_and_line(tmp_path, arena_home, capsys):
    raw = (SUITE + "name: café\n").encode("latin-1")
    path = suite_file(tmp_path / "s", raw)
    code, _, err = run_cli(capsys, ["tournament", str(path), "--quiet"])
    bad = raw.index("é".encode("latin-1"))
    line = raw[:bad].count(b"\n") + 1
    assert code == 2 and f"{path} is not UTF-8 text: byte {bad} (line {line})" in err


def test_a_grid_is_counted_before_it_is_expanded(tmp_path, arena_home, capsys, monkeypatch):
    from arena import suite

    def refuse(*args, **kwargs):
        raise AssertionError("the grid was expanded before it was counted")

    monkeypatch.setattr(suite, "_expand_entries", refuse)
    axes = ", ".join(f"a{i}: [{', '.join(str(v) for v in range(10))}]" for i in range(12))  # 10**12 points
    path = suite_file(tmp_path / "s", SUITE.replace("[badnets]", f"[{{name: badnets, grid: {{{axes}}}}}]"))
    code, _, err = run_cli(capsys, ["tournament", str(path), "--quiet"])
    assert code == 2 and "the suite expands to 1,000,000,000,000 matches (1,000,000,000,000 attacker points × 1 defender points × 1 seeds)" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["match", "--attacker", "badnets", "--defender", "none", "--stealth-tolerance", "nan"], "argument --stealth-tolerance: expected a finite number in [0, 1], got 'nan'"),
        (["match", "--attacker", "badnets", "--defender", "none", "--clean-budget", "inf"], "argument --clean-budget: expected a finite number, got 'inf'"),
        (["leaderboard", "verify", "SUITE", "--tolerance", "nan"], "argument --tolerance: expected a finite number in [0, inf], got 'nan'"),
        (["oracle", "SUITE", "--epsilon", "nan"], "argument --epsilon"),
        (["oracle", "SUITE", "--time", "inf"], "argument --time: expected a finite number"),
        (["tournament", "SUITE", "--gpus-per-task", "nan"], "argument --gpus-per-task"),
        (["tournament", "SUITE", "--cpus", "0"], "argument --cpus: expected an integer in [1, inf]"),
        (["match", "--attacker", "badnets"], "the following arguments are required: --defender"),
    ],
)
def test_non_finite_and_malformed_options_are_usage_errors(argv, message, tmp_path, arena_home, capsys):
    suite = suite_file(tmp_path / "s")
    code, out, err = run_cli(capsys, [str(suite) if part == "SUITE" else part for part in argv])
    assert code == 2 and out == "" and err.startswith("arena: error: arena ") and message in err


# ---------------------------------------------------------------------------------------------
# 5. arena nash input


@pytest.mark.parametrize(
    "text, message",
    [
        (",a,b\nx,1,oops\ny,0,1\n", "the cell of defender 'x' against attacker 'b' (row 2) is 'oops', not a number"),
        (",a,b\nx,1\ny,0,1,2\n", "row 2 has 2 fields, the header 3"),
        (",a,b\nx,1,nan\ny,0,1\n", "needs a finite number in every cell"),
        (",a,b\nx,1,1e400\ny,0,1\n", "needs a finite number in every cell"),
        (",a,a\nx,1,0\n", "repeats the attacker (column) label 'a'"),
        ("", "holds no cells"),
    ],
)
def test_a_bad_matrix_is_one_error(text, message, tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text(text)
    code, out, err = run_cli(capsys, ["nash", str(path)])
    assert code == 2 and out == "" and message in err


def test_a_directory_or_binary_file_is_not_a_matrix(tmp_path, capsys):
    assert run_cli(capsys, ["nash", str(tmp_path)])[2].endswith(f"{tmp_path} is a directory; give the path of a CSV file. ")
    binary = tmp_path / "m.csv"
    binary.write_bytes(b",a\n\xff\xfe,1\n")
    code, _, err = run_cli(capsys, ["nash", str(binary)])
    assert code == 2 and "is not UTF-8 text (byte 3" in err


@pytest.mark.parametrize("big", ["1e300", "1.7e308"])
def test_huge_cells_are_solved_not_crashed_on(big, tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text(f",a,b\nx,{big},-{big}\ny,-{big},{big}\n")  # matching pennies at a huge stake: value 0, both sides 1/2
    code, out, _ = run_cli(capsys, ["nash", str(path), "--json"])
    solution = json.loads(out)
    assert code == 0 and solution["defender"] == {"x": 0.5, "y": 0.5} and solution["attacker"] == {"a": 0.5, "b": 0.5}
    assert abs(solution["value"]) <= float(big) * 1e-9


# ---------------------------------------------------------------------------------------------
# 6. --output (and --plot) pointing at a directory; 7. seeds outside [0, 2**32)


@pytest.mark.parametrize(
    "argv",
    [["results", "s", "--format", "csv", "--output", "DIR"], ["oracle", "SUITE", "--plot", "DIR"]],
)
def test_an_output_that_is_a_directory_is_refused_before_any_work(argv, tmp_path, arena_home, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    suite = suite_file(tmp_path / "s")
    code, _, err = run_cli(capsys, [str(folder) if a == "DIR" else str(suite) if a == "SUITE" else a for a in argv])
    assert code == 2 and f"{folder} is a directory; give the path of a file to write" in err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and not arena_home.exists()


def test_an_output_in_a_missing_folder_is_refused(tmp_path, arena_home, capsys):
    code, _, err = run_cli(capsys, ["results", "s", "--output", str(tmp_path / "absent" / "r.csv")])
    assert code == 2 and f"the folder {tmp_path / 'absent'} of" in err


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1e3", "x"])
@pytest.mark.parametrize("command", [["match", "--attacker", "badnets", "--defender", "none"], ["leaderboard", "verify", "SUITE"], ["oracle", "SUITE"]])
def test_a_seed_outside_32_bits_is_a_usage_error(command, seed, tmp_path, arena_home, capsys):
    suite = suite_file(tmp_path / "s")
    code, out, err = run_cli(capsys, [str(suite) if a == "SUITE" else a for a in command] + ["--seed", seed])
    assert code == 2 and out == "" and "argument --seed: a seed must be" in err


# ---------------------------------------------------------------------------------------------
# 8. Ctrl-C; 9. stdout holds the JSON alone


def test_ctrl_c_exits_130_in_one_line_and_shuts_down_the_ray_it_started(tmp_path, arena_home, capsys, monkeypatch):
    """A stand-in Ray module records the calls: starting a real one takes longer than this test."""
    from arena.cli import tournament

    ray = types.SimpleNamespace(up=False, shutdowns=0)
    ray.is_initialized = lambda: ray.up
    ray.shutdown = lambda: setattr(ray, "shutdowns", ray.shutdowns + 1)

    def play(*args, **kwargs):
        ray.up = True  # the command started Ray, then the user pressed Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setattr(tournament, "play", play)
    code, out, err = run_cli(capsys, ["tournament", str(suite_file(tmp_path / "s")), "--quiet"])
    assert code == 130 and out == "" and err.strip() == "arena: interrupted; everything stored so far is kept."
    assert ray.shutdowns == 1


def test_ctrl_c_leaves_a_ray_it_did_not_start_running(tmp_path, arena_home, capsys, monkeypatch):
    from arena.cli import tournament

    ray = types.SimpleNamespace(shutdowns=0, is_initialized=lambda: True)
    ray.shutdown = lambda: setattr(ray, "shutdowns", ray.shutdowns + 1)
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setattr(tournament, "play", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run_cli(capsys, ["tournament", str(suite_file(tmp_path / "s")), "--quiet"])[0] == 130
    assert ray.shutdowns == 0


def test_json_stdout_holds_the_json_alone_whatever_the_work_writes(tmp_path, capfd, monkeypatch):
    """Writes to sys.stdout, to file descriptor 1 and from a child process during the work all
    land on stderr (capfd sees the real descriptors)."""
    from arena import game

    solve = game.solve_zero_sum

    def noisy(values):
        print("a print")
        os.write(1, b"a write to fd 1\n")
        subprocess.run([sys.executable, "-c", "print('a child process')"], check=True)
        return solve(values)

    monkeypatch.setattr(game, "solve_zero_sum", noisy)
    path = tmp_path / "m.csv"
    path.write_text(",a,b\nx,1,0\ny,0,1\n")
    assert main(["nash", str(path), "--json"]) == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out)["value"] == pytest.approx(0.5)
    assert all(noise in captured.err for noise in ("a print", "a write to fd 1", "a child process"))

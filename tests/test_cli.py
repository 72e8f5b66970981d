"""The CLI: the headline command's JSON contract, and one clear error per bad input."""

import json
import os

import pytest

from arena import data
from arena.cli import main
from arena.protocol import DefenseOutcome
from arena.strategy import Defender

HEADLINE = ["match", "--attacker", "pruning_aware", "--defender", "fine_pruning", "--quiet"]


def test_json_output_is_one_object_with_the_documented_keys(arena_home, capsys):
    assert main(HEADLINE + ["--json", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # nothing else on stdout
    for key in ("attacker", "defender", "dataset", "seed", "utility", "stealthy", "cached"):
        assert key in result
    assert {"name", "version", "params"} <= set(result["attacker"]) and result["attacker"]["name"] == "pruning_aware"
    assert set(result["honest"]) >= {"ca"}
    assert {"ca", "asr", "asr_per_trigger"} <= set(result["attacked"])
    assert {"ca", "asr", "asr_per_trigger", "verdict"} <= set(result["defended"])
    assert {"attack", "defense"} <= set(result["seconds"])
    for rate in (result["honest"]["ca"], result["attacked"]["ca"], result["attacked"]["asr"], result["defended"]["asr"]):
        assert 0.0 <= rate <= 1.0
    assert result["utility"] == pytest.approx(result["defended"]["ca"] - result["defended"]["asr"])
    assert result["cached"] is False
    assert main(HEADLINE + ["--json", "--epochs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True


def test_rich_output_names_every_figure(arena_home, capsys):
    assert main(HEADLINE + ["--epochs", "2"]) == 0
    out = capsys.readouterr().out
    for text in ("honest baseline", "attacked, undefended", "attacked, defended", "utility", "seconds"):
        assert text in out


def test_set_overrides_reach_the_strategy(arena_home, capsys):
    args = ["match", "--attacker", "badnets", "--defender", "none", "--quiet", "--json", "--epochs", "1"]
    assert main(args + ["--set", "attacker.target=7", "--set", "defender.steps=5"]) == 2  # `none` has no steps
    assert "steps" in capsys.readouterr().err
    assert main(args + ["--set", "attacker.target=7"]) == 0
    assert json.loads(capsys.readouterr().out)["attacker"]["params"]["target"] == 7


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["match", "--attacker", "prunning_aware", "--defender", "none"], 2, "Did you mean 'pruning_aware'"),
        (["match", "--attacker", "badnets", "--defender", "finepruning"], 2, "Did you mean 'fine_pruning'"),
        (["match", "--attacker", "badnets", "--defender", "none", "--dataset", "fashion"], 2, "fashion_mnist"),
        (["match", "--attacker", "badnets", "--defender", "none", "--set", "attacker.poison_rate=2"], 2, "poison_rate"),
        (["match", "--attacker", "badnets", "--defender", "none", "--set", "attacker.target=x"], 2, "integer"),
        (["match", "--attacker", "badnets", "--defender", "none", "--set", "target=1"], 2, "attacker.NAME=VALUE"),
        (["match", "--attacker", "badnets", "--defender", "none", "--clean-budget", "0"], 2, "clean budget"),
        (["match", "--attacker", "badnets", "--defender", "fine_pruning", "--clean-budget", "0.005"], 2, "needs at least 10 clean samples"),
        (["match", "--attacker", "badnets", "--defender", "anp"], 2, "needs a model that is BatchNormalized"),
        (["match", "--attacker", "badnets", "--defender", "none", "--architecture", "resnet"], 2, "Known architectures: badnets_cnn, preact_resnet"),
    ],
)
def test_bad_input_is_one_clear_error_and_a_nonzero_exit(arena_home, capsys, argv, code, message):
    assert main(argv) == code
    captured = capsys.readouterr()
    assert message in captured.err.replace("\n", " ") and "Traceback" not in captured.err
    assert captured.out == ""


def test_missing_dataset_says_how_to_get_it(arena_home, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("ARENA_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "_fashion_mnist_torchvision", lambda: None)
    data._load_dataset.cache_clear()
    try:
        assert main(["match", "--attacker", "badnets", "--defender", "none", "--dataset", "fashion_mnist"]) == 1
    finally:
        data._load_dataset.cache_clear()
    err = capsys.readouterr().err.replace("\n", " ")
    assert "apt-get install dataset-fashion-mnist" in err and "ARENA_DATA_DIR" in err


def test_unusable_arena_home_is_a_clear_error(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ARENA_HOME", str(blocker))
    assert main(HEADLINE + ["--epochs", "1"]) == 1
    assert "ARENA_HOME" in capsys.readouterr().err


def test_tampered_artifact_via_cli_is_refused(arena_home, capsys):
    args = ["match", "--attacker", "badnets", "--defender", "none", "--quiet", "--json", "--epochs", "1"]
    assert main(args) == 0
    sha = json.loads(capsys.readouterr().out)["artifact_sha256"]
    blob = arena_home / "blobs" / f"{sha}.safetensors"
    raw = bytearray(blob.read_bytes())
    raw[100] ^= 0x10
    blob.write_bytes(bytes(raw))
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "tampered" in captured.err and captured.out == ""
    assert blob.exists()


def test_list_shows_strategies_with_versions_and_papers(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in listing["attackers"]} | {row["name"] for row in listing["defenders"]}
    assert {"badnets", "pruning_aware", "fine_pruning", "pruning", "fine_tuning", "none"} <= names
    row = next(r for r in listing["defenders"] if r["name"] == "fine_pruning")
    assert row["version"] and "Fine-Pruning" in row["paper"] and "max_accuracy_drop" in row["params"]
    assert main(["list"]) == 0 and "pruning_aware" in capsys.readouterr().out


class Chatty(Defender):
    """Prints while it works (in its sandboxed worker, whose stdout is the driver's stderr)."""

    name = "chatty"
    version = "1"
    paper = "test double"

    def run(self, model, ctx):
        print("hello from a plugin")
        os.write(1, b"and to file descriptor 1\n")
        return DefenseOutcome()


def test_a_strategy_that_prints_cannot_corrupt_the_json_on_stdout(arena_home, capfd, monkeypatch):
    from arena.registry import DEFENDERS

    monkeypatch.setitem(DEFENDERS._builtins, "chatty", Chatty)
    assert main(["match", "--attacker", "badnets", "--defender", "chatty", "--quiet", "--json", "--epochs", "1"]) == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out)["defender"]["name"] == "chatty"
    assert "hello from a plugin" in captured.err and "and to file descriptor 1" in captured.err


def test_list_is_one_line_per_strategy_in_an_80_column_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    row = next(line for line in lines if line.split()[:1] == ["pruning_aware"])
    assert row.split()[1] == "1" and "Fine-Pruning" in row  # name, version and what it does on one line


def test_show_gives_paper_deviations_requirements_and_the_full_space(capsys):
    assert main(["show", "neural_cleanse"]) == 0
    out = capsys.readouterr().out
    for text in ("Neural Cleanse", "deviations", "min_clean=20", "stop_success", "nc_steps", "version 4"):
        assert text in out
    assert main(["show", "none", "--json"]) == 0  # an attacker and a defender share the name
    assert {d["kind"] for d in json.loads(capsys.readouterr().out)} == {"attacker", "defender"}
    assert main(["show", "nueral_cleanse"]) == 2
    assert "Did you mean 'neural_cleanse'" in capsys.readouterr().err
    # and what `arena oracle` searches: the declared ranges, the training recipe among them
    assert main(["show", "badnets", "--json"]) == 0
    params = json.loads(capsys.readouterr().out)["params"]
    assert params["optimizer"]["search"] == {"choices": ["adam", "sgd", "adadelta"]} and params["trigger_margin"]["search"] is None

"""One device for a job (docs/design.md §11): the choice, its errors, its numerics and store keys,
the fake device; tests marked `cuda` run only where torch sees a GPU (CI has none)."""

import json

import pytest
import torch
from torch import nn

from arena.cli import main
from arena.device import (
    Compute,
    DeviceError,
    DeviceGuard,
    check_gpus_per_task,
    numerics_class,
    resolve,
    store_key,
    using,
)
from arena.errors import StrategyError
from arena.match import prepare, run_match
from arena.provenance import numerics
from arena.store import ArtifactStore

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def test_auto_takes_a_gpu_only_where_there_is_one():
    assert resolve("auto") == Compute("cuda" if HAS_CUDA else "cpu")
    assert resolve("cpu") == Compute("cpu") and resolve("cpu", amp=True) == Compute("cpu", True)


def test_an_unknown_device_is_refused_by_name():
    with pytest.raises(DeviceError, match="one of auto, cpu, cuda, got 'tpu'"):
        resolve("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is here")
def test_cuda_where_there_is_none_is_one_clear_error(arena_home, capsys):
    with pytest.raises(DeviceError, match="torch sees no CUDA device"):
        resolve("cuda")
    assert main(["match", "--attacker", "badnets", "--defender", "none", "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "torch sees no CUDA device" in err and "Traceback" not in err
    assert not list((arena_home / "models").glob("*.json"))  # refused before any training


def test_cpu_numerics_keep_their_fields_so_stored_cpu_models_keep_their_keys():
    assert set(numerics(Compute("cpu"))) == {"torch", "device", "threads", "cpu_kernels", "machine"}
    assert store_key("k", Compute("cpu")) == "k"
    assert store_key("k", Compute("cuda")) == "k.cuda"
    assert store_key("k", Compute("cuda", amp=True)) == "k.cuda-amp"


def test_mixed_precision_is_recorded_and_is_a_numerics_class_of_its_own():
    amp = numerics(Compute("cpu", amp=True))
    assert amp["amp"] == "bfloat16"
    assert numerics_class(amp) == "cpu+amp" and numerics_class(numerics(Compute("cpu"))) == "cpu"
    assert numerics_class({"device": "cuda", "gpu": "H100"}) == "cuda"


def test_using_autocasts_only_with_amp_and_leaves_nothing_behind():
    layer = nn.Linear(4, 4)
    with using(Compute("cpu", amp=True)):
        assert layer(torch.ones(2, 4)).dtype == torch.bfloat16
    with using(Compute("cpu")):
        assert layer(torch.ones(2, 4)).dtype == torch.float32
    assert layer(torch.ones(2, 4)).dtype == torch.float32


def test_gpu_requests_are_checked_against_the_cluster_before_scheduling():
    with pytest.raises(DeviceError, match="the Ray cluster has none"):
        check_gpus_per_task(0.25, "auto", cluster=0.0)
    with pytest.raises(DeviceError, match="needs GPUs for its workers"):
        check_gpus_per_task(0.0, "cuda", cluster=1.0)
    with pytest.raises(DeviceError, match="a fraction in"):
        check_gpus_per_task(1.5, "auto", cluster=2.0)
    with pytest.raises(DeviceError, match="more than the cluster's 1 GPUs"):
        check_gpus_per_task(2.0, "auto", cluster=1.0)
    check_gpus_per_task(0.25, "auto", cluster=1.0)  # four matches per card


# ---------------------------------------------------------------------------------------------
# The fake device


def _guarded(body):
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    guard = DeviceGuard("strategy 'planted'")
    guard.adopt(model, x, y)
    with guard:
        body(model, x, y, torch.Generator().manual_seed(0))


def test_the_fake_device_accepts_device_correct_code():
    def body(model, x, y, g):
        opt = torch.optim.Adam(model.parameters())
        idx = torch.randperm(8, generator=g)  # host indices may index device tensors
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        noisy = x + torch.rand(x.shape, generator=g).to(x.device)
        target = torch.full((8,), 2, device=x.device)
        head = nn.Linear(3, 3).to(x.device)
        nn.functional.cross_entropy(head(model(noisy)), target).item()
        (x * torch.tensor(0.5)).sum()  # a host scalar is fine on a GPU too
        torch.cat([model(x).detach().cpu(), torch.zeros(1, 3)])  # back on the host, with the host's

    _guarded(body)


def test_a_host_copy_stays_the_hosts_where_freed_device_memory_is_reused():
    # the allocator hands a freed device tensor's memory to the next copy; marks by storage must
    # not make that copy a device tensor (this loop failed before the fix)
    def body(model, x, y, g):
        for _ in range(300):
            torch.cat([model(x).detach().cpu(), torch.zeros(1, 3)])
            torch.cat([model(x).detach().to("cpu", copy=True).cpu(), torch.zeros(1, 3)])

    _guarded(body)


@pytest.mark.parametrize(
    "mistake, message",
    [
        (lambda m, x, y, g: x + torch.rand(x.shape, generator=g), "mixes a tensor made on the host"),
        (lambda m, x, y, g: nn.functional.cross_entropy(m(x), torch.full((8,), 2)), "cross_entropy"),
        (lambda m, x, y, g: nn.Linear(64, 3)(x.flatten(1)), "linear"),
        (lambda m, x, y, g: torch.tensor([1, 2, 0])[y], "indexes a host tensor with device indices"),
        (lambda m, x, y, g: torch.rand(3, generator=g, device=x.device), "from a CPU generator"),
    ],
)
def test_the_fake_device_fails_what_a_gpu_would_fail(mistake, message):
    with pytest.raises(StrategyError, match=message):
        _guarded(mistake)


# ---------------------------------------------------------------------------------------------
# Matches


def test_a_mixed_precision_match_is_stored_apart_and_says_so(tmp_path):
    prepared = prepare("badnets", "none", epochs=5)
    store = ArtifactStore(tmp_path)
    fp32 = run_match(prepared, store)
    amp = run_match(prepared, store, compute=Compute("cpu", amp=True))
    assert amp.numerics["amp"] == "bfloat16" and "amp" not in fp32.numerics
    assert not amp.cached  # the float32 model in the store is not this job's
    assert store.has(prepared.spec.attack.key) and store.has(prepared.spec.attack.key + ".cpu-amp")
    # it learns the task and the backdoor as float32 does (the weights of a long autocast region
    # once went stale in its cast cache: CA fell to chance)
    assert amp.honest_ca > 0.8 and amp.attacked.asr > 0.8 and abs(amp.honest_ca - fp32.honest_ca) < 0.1


@cuda
def test_a_gpu_match_is_reproducible_and_close_to_its_cpu_twin(tmp_path):
    prepared = prepare("badnets", "fine_pruning", epochs=10)
    first = run_match(prepared, ArtifactStore(tmp_path / "a"), compute=Compute("cuda"))
    again = run_match(prepared, ArtifactStore(tmp_path / "b"), compute=Compute("cuda"))
    cpu = run_match(prepared, ArtifactStore(tmp_path / "c"))
    assert first.artifact_sha256 == again.artifact_sha256 and first.to_json()["defended"] == again.to_json()["defended"]
    assert first.numerics["device"] == "cuda" and first.numerics["gpu"]
    assert abs(first.attacked.ca - cpu.attacked.ca) < 0.05 and abs(first.attacked.asr - cpu.attacked.asr) < 0.05


@cuda
@pytest.mark.parametrize("role", ["attacker", "defender"])
def test_every_built_in_strategy_runs_on_the_gpu(role, tmp_path, monkeypatch):
    from arena.registry import ATTACKERS, DEFENDERS

    monkeypatch.setenv("ARENA_HOME", str(tmp_path))
    names = ATTACKERS.names() if role == "attacker" else DEFENDERS.names()
    for name in names:
        attacker, defender = (name, "none") if role == "attacker" else ("badnets", name)
        result = run_match(prepare(attacker, defender, epochs=3), ArtifactStore(tmp_path), compute=Compute("cuda")).to_json()
        assert result["numerics"]["device"] == "cuda", json.dumps(result)[:200]

"""Datasets and the fixed split of the training data between attacker and defender (docs/design.md §1, §9)."""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arena.errors import ArenaError, DatasetMissingError, ParamError, UsageError
from arena.protocol import Split
from arena.registry import RegistrationError, Registry

# Which copy of a dataset was read, when it is not the one the user named (the CLI prints it).
logger = logging.getLogger(__name__)

# The seed of the once-and-for-all division of each training split; not a match seed, so every
# match on a dataset sees the same attacker part, defender reserve and test split.
SPLIT_SEED = 20180530


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    epochs: int  # default training budget: enough for a clean model to converge on this data

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return (int(c), int(h), int(w))


@dataclass(frozen=True)
class PlayerSplits:
    """The three disjoint parts of a dataset: one per role of the threat model."""

    attacker: Split  # the attacker's labelled training data
    clean: Split  # the defender's clean reserve (its clean budget)
    test: Split  # the evaluator's alone

    def to(self, device: torch.device | str) -> PlayerSplits:
        """The three splits on `device`: moved once per job, then every batch is sliced there."""
        return PlayerSplits(self.attacker.to(device), self.clean.to(device), self.test.to(device))


def clean_count(dataset: Dataset, clean_budget: float) -> int:
    """How many clean samples the defender's split holds at `clean_budget` (player_splits' count)."""
    return max(1, round(clean_budget * len(dataset.train)))


def player_splits(dataset: Dataset, clean_budget: float) -> PlayerSplits:
    """Divide the official training split by the fixed SPLIT_SEED; a larger budget extends a smaller one."""
    if not 0.0 < clean_budget <= 0.5:
        raise ParamError(f"clean budget {clean_budget!r} must be a fraction in (0, 0.5] of the training split.")
    n = len(dataset.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    k = clean_count(dataset, clean_budget)
    return PlayerSplits(dataset.train.subset(order[k:]), dataset.train.subset(order[:k]), dataset.test)


# ---------------------------------------------------------------------------------------------
# Loaders


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    # digits has no official test split: fix one (30%) with the split seed
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED + 1))
    n_test = round(0.3 * len(y))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", Split(x[train], y[train]), Split(x[test], y[test]), 10, epochs=50)


FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


REFETCH = "Download it again (or `sudo apt-get install --reinstall dataset-fashion-mnist` where it is the Debian package's copy)."


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format of MNIST and Fashion-MNIST. A file that
    cannot be decompressed or parsed is a DatasetMissingError naming it as damaged."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # a truncated or corrupted download
        raise DatasetMissingError(f"{path} is damaged: it is not a complete gzip file ({exc or type(exc).__name__}). {REFETCH}") from None
    except OSError as exc:
        raise DatasetMissingError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetMissingError(f"{path} is damaged: it is not an unsigned-byte IDX file (bad magic number). {REFETCH}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetMissingError(f"{path} is damaged: its header is cut short ({len(raw)} of {header} bytes). {REFETCH}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise DatasetMissingError(f"{path} is damaged: its header promises {expected} values, the file holds {len(raw) - header}. {REFETCH}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz", directory / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    return None


def _idx_directories() -> list[Path]:
    dirs = []
    if os.environ.get("ARENA_DATA_DIR"):
        dirs.append(Path(os.environ["ARENA_DATA_DIR"]).expanduser())
    dirs.append(DEBIAN_FASHION_DIR)
    return dirs


def _check_images_labels(images: np.ndarray, labels: np.ndarray, files: tuple[Path | None, Path | None], num_classes: int) -> None:
    """An IDX pair read whole can still be the wrong file (labels where images belong, another
    dataset's): refused here, by name, rather than as a shape error deep in training."""
    x_path, y_path = files
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetMissingError(f"{x_path} and {y_path} are not an image file (3-D) and a label file (1-D): they hold {images.ndim}-D and {labels.ndim}-D arrays. {REFETCH}")
    if len(images) != len(labels):
        raise DatasetMissingError(f"{x_path} holds {len(images)} images but {y_path} {len(labels)} labels: they are not one pair. {REFETCH}")
    if labels.size and int(labels.max()) >= num_classes:
        raise DatasetMissingError(f"{y_path} holds label {int(labels.max())}; Fashion-MNIST has {num_classes} classes (0 to {num_classes - 1}). {REFETCH}")


def _fashion_mnist() -> Dataset:
    searched = _idx_directories()
    arrays: dict[str, np.ndarray] | None
    for directory in searched:
        paths = {key: _find_idx(directory, stem) for key, stem in FASHION_FILES.items()}
        if all(paths.values()):
            if directory == DEBIAN_FASHION_DIR:
                why = f"ARENA_DATA_DIR={searched[0]} lacks its four IDX files" if len(searched) > 1 else "ARENA_DATA_DIR is not set"
                logger.info("Fashion-MNIST: read from the system copy in %s (the Debian package dataset-fashion-mnist): %s.", directory, why)
            arrays = {key: read_idx(path) for key, path in paths.items()}  # type: ignore[arg-type]
            for split in ("train", "test"):
                _check_images_labels(arrays[f"{split}_x"], arrays[f"{split}_y"], (paths[f"{split}_x"], paths[f"{split}_y"]), 10)
            break
    else:
        arrays = _fashion_mnist_torchvision()
        if arrays is None:
            where = ", ".join(str(d) for d in searched)
            raise DatasetMissingError(
                "Fashion-MNIST is not on this machine (looked for its four IDX files in "
                f"{where}). Get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                "or download the IDX files and point ARENA_DATA_DIR at their folder, or install "
                "the online extra (`pip install 'arena-backdoor[online]'`) to let torchvision download it."
            )

    def as_split(images: np.ndarray, labels: np.ndarray) -> Split:
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        return Split(x.contiguous(), torch.from_numpy(labels.astype(np.int64)))

    return Dataset(
        "fashion_mnist",
        as_split(arrays["train_x"], arrays["train_y"]),
        as_split(arrays["test_x"], arrays["test_y"]),
        10,
        epochs=8,
    )


def _fashion_mnist_torchvision() -> dict[str, np.ndarray] | None:
    """Download through torchvision where the optional extra is installed and the net is reachable."""
    try:
        from torchvision.datasets import FashionMNIST  # type: ignore[import-not-found]
    except Exception:  # torchvision absent, or broken beside this torch build
        return None
    from arena.store import arena_home

    root = arena_home() / "data"
    try:
        train = FashionMNIST(root, train=True, download=True)
        test = FashionMNIST(root, train=False, download=True)
    except Exception:
        return None
    return {
        "train_x": train.data.numpy(),
        "train_y": train.targets.numpy(),
        "test_x": test.data.numpy(),
        "test_y": test.targets.numpy(),
    }


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: its name and the loader that builds it (docs/design.md §10). A new
    dataset is one object, registered here or published under the entry point group `arena.datasets`."""

    name: str
    load: Callable[[], Dataset]

    @property
    def module(self) -> str:
        return str(getattr(self.load, "__module__", __name__))


def _validate_source(entry: Any) -> None:
    if not isinstance(entry, DatasetSource) or not callable(entry.load):
        raise RegistrationError(f"{entry!r} is not an arena.data.DatasetSource with a callable `load`")


DATASETS: Registry[DatasetSource] = Registry("dataset", group="arena.datasets", builtins=("arena.data",), key=lambda d: d.name, validate=_validate_source)
register_dataset = DATASETS.register
register_dataset(DatasetSource("digits", _digits))
register_dataset(DatasetSource("fashion_mnist", _fashion_mnist))

# While set, loading any dataset calls this instead (the contract checks fence strategies off
# the data: a strategy must use only what its context gives it).
_fence: Callable[[str], Dataset] | None = None


def load_dataset(name: str) -> Dataset:
    if _fence is not None:
        return _fence(name)
    return _load_dataset(name)


@lru_cache(maxsize=4)
def _load_dataset(name: str) -> Dataset:
    source = DATASETS.get(name)
    try:
        dataset = source.load()
    except ArenaError:
        raise
    except Exception as exc:  # a plugin loader's own failure, named
        raise UsageError(f"the loader of dataset {name!r} (module {source.module}) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(dataset, Dataset) or dataset.name != name:
        raise UsageError(f"the loader of dataset {name!r} returned {dataset!r}, not an arena.data.Dataset named {name!r}.")
    return dataset

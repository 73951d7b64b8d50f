"""Data for a job: CIFAR-10 with NAS-Bench-101's split, or a generated CIFAR-shaped data set.

CIFAR-10 is read from the standard python-pickle batches (``data_batch_1`` .. ``data_batch_5``,
``test_batch``), directly in ``root`` or in ``root/cifar-10-batches-py``. The split is NAS-Bench-101's
(google-research/nasbench ``nasbench/scripts/generate_cifar10_tfrecords.py`` and ``lib/cifar.py``):
train = data_batch_1..4 (40,000 images), validation = data_batch_5 (10,000), test = test_batch
(10,000). ``n_train``/``n_valid``/``n_test`` may only shrink a split, to a subset drawn with
``split_seed``. Normalisation constants are NAS-Bench-101's fixed ``RGB_MEAN``/``RGB_STD``.

The synthetic data set (``kind="synthetic"``) has 10 classes, each a fixed pair of coloured,
oriented sine gratings; every image shows its class's pattern with a random phase (a random shift),
a random contrast and pixel noise. A small network learns it well above chance within an epoch or
two. The class patterns are the same for every seed; ``split_seed`` draws the images.

Images are uint8 NCHW tensors (raw pixel values 0..255; augmentation pads with 0 before
normalisation, as NAS-Bench-101 does), labels int64. ``check_dataset`` and the config are torch-free.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.errors import CampaignError

if TYPE_CHECKING:
    import numpy as np
    import torch

KINDS = ("cifar10", "synthetic")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4")
CIFAR_VALID_FILES = ("data_batch_5",)
CIFAR_TEST_FILES = ("test_batch",)
CIFAR_FILES = CIFAR_TRAIN_FILES + CIFAR_VALID_FILES + CIFAR_TEST_FILES
CIFAR_SIZES = {"train": 40_000, "valid": 10_000, "test": 10_000}
# nasbench/lib/cifar.py RGB_MEAN and RGB_STD (per channel, on 0..255 pixel values).
CIFAR_MEAN = (125.31, 122.95, 113.87)
CIFAR_STD = (62.99, 62.09, 66.70)
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)

# The synthetic classes are fixed; only the images depend on split_seed.
_SYNTHETIC_STRUCTURE_SEED = 101
_CONTRAST = (20.0, 50.0)
_NOISE = 40.0
_TINT = 8.0


class DataError(CampaignError, RuntimeError):
    """A data set that is missing, unreadable or inconsistent; one line saying what and how to fix it."""


@dataclass
class DatasetConfig:
    """Which data a job trains on. For synthetic data the n_* are the sizes generated; for CIFAR-10
    the split is NAS-Bench-101's 40k/10k/10k and the n_* may only shrink it (for quick runs)."""

    kind: str = "synthetic"  # "cifar10" | "synthetic"
    root: str | None = None
    download: bool = False
    split_seed: int = 0
    n_train: int = 40000
    n_valid: int = 10000
    n_test: int = 10000


@dataclass
class DataSplits:
    """Train/validation/test tensors: x uint8 (N, 3, 32, 32) raw pixels, y int64 (N,), on the CPU.

    ``mean``/``std`` are the per-channel normalisation constants on the 0..255 scale; ``origin``
    says where the images came from (recorded with every run).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: str = ""

    def describe(self) -> str:
        """One line naming the data set, its split sizes and its origin."""
        sizes = f"{len(self.y_train)} train / {len(self.y_valid)} valid / {len(self.y_test)} test"
        return f"{self.name}: {sizes} images ({self.origin})" if self.origin else f"{self.name}: {sizes} images"


def _batch_dir(root: Path) -> Path:
    """The folder holding the batches: root itself, or root/cifar-10-batches-py (torchvision's layout)."""
    if (root / CIFAR_FILES[0]).exists() or not (root / CIFAR_FOLDER).is_dir():
        return root
    return root / CIFAR_FOLDER


def _expected() -> str:
    return "expected data_batch_1..5 and test_batch, the python-pickle version, in DIR or DIR/cifar-10-batches-py"


def check_dataset(cfg: DatasetConfig) -> None:
    """Fast pre-flight check, no images loaded: the config is consistent and the files are there.

    For CIFAR-10 every batch file must exist, be readable and start like a pickle, unless they are
    missing and ``download`` is set (then the root must be creatable). Raises DataError.
    """
    if cfg.kind not in KINDS:
        raise DataError(f"dataset.kind = {cfg.kind!r} is not one of {', '.join(KINDS)}; set dataset.kind=cifar10 or synthetic")
    for split in ("train", "valid", "test"):
        n = getattr(cfg, f"n_{split}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise DataError(f"dataset.n_{split} = {n!r} must be a positive integer")
        if cfg.kind == "cifar10" and n > CIFAR_SIZES[split]:
            raise DataError(
                f"dataset.n_{split} = {n} exceeds the {CIFAR_SIZES[split]} images of NAS-Bench-101's CIFAR-10 "
                f"{split} split; set dataset.n_{split} <= {CIFAR_SIZES[split]}"
            )
    if cfg.kind == "synthetic":
        return
    if not cfg.root:
        raise DataError("CIFAR-10 needs a data root: dataset.root is not set; set dataset.root=DIR (add dataset.download=true to fetch it there)")
    root = Path(cfg.root).expanduser()
    folder = _batch_dir(root)
    missing = [name for name in CIFAR_FILES if not (folder / name).is_file()]
    if missing:
        if cfg.download:
            _check_writable(root)
            return
        raise DataError(
            f"CIFAR-10 not found at {root} (missing {', '.join(missing)}; {_expected()}); "
            "set dataset.root=DIR or dataset.download=true"
        )
    for name in CIFAR_FILES:
        path = folder / name
        try:
            with path.open("rb") as f:
                head = f.read(2)
        except OSError as exc:
            raise DataError(f"CIFAR-10 file {path} is not readable ({exc.strerror or exc}); fix its permissions") from exc
        if len(head) < 2 or head[0] != 0x80:
            raise DataError(
                f"CIFAR-10 file {path} is not a python pickle (corrupt or another format); "
                "replace the folder with the python version (cifar-10-python.tar.gz) or delete it and set dataset.download=true"
            )


def _check_writable(root: Path) -> None:
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise DataError(f"cannot download CIFAR-10 into {root}: {existing} is not a writable folder; set dataset.root to a writable DIR")


def load_dataset(cfg: DatasetConfig) -> DataSplits:
    """Loads (CIFAR-10; downloading it first only if allowed and missing) or generates the splits.

    Runs :func:`check_dataset` first; a corrupt or inconsistent file, or a split smaller than the
    requested n_*, raises DataError.
    """
    check_dataset(cfg)
    if cfg.kind == "synthetic":
        return make_synthetic(cfg.n_train, cfg.n_valid, cfg.n_test, cfg.split_seed)
    return _load_cifar(cfg)


def _load_cifar(cfg: DatasetConfig) -> DataSplits:
    import numpy as np
    import torch

    assert cfg.root is not None  # check_dataset guarantees it
    root = Path(cfg.root).expanduser()
    folder = _batch_dir(root)
    if any(not (folder / name).is_file() for name in CIFAR_FILES):
        _download(root)
        folder = _batch_dir(root)
        check_dataset(DatasetConfig(**{**cfg.__dict__, "download": False}))
    rng = np.random.default_rng(cfg.split_seed)
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, files in (("train", CIFAR_TRAIN_FILES), ("valid", CIFAR_VALID_FILES), ("test", CIFAR_TEST_FILES)):
        parts = [_read_batch(folder / name) for name in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        n = getattr(cfg, f"n_{split}")
        if n > len(y):
            raise DataError(
                f"dataset.n_{split} = {n} but the CIFAR-10 {split} files at {folder} ({', '.join(files)}) hold only "
                f"{len(y)} images; lower dataset.n_{split} or point dataset.root at the full data set"
            )
        if n < len(y):
            keep = np.sort(rng.choice(len(y), size=n, replace=False))
            x, y = x[keep], y[keep]
        splits[split] = (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)))
    full = all(getattr(cfg, f"n_{s}") == CIFAR_SIZES[s] for s in CIFAR_SIZES)
    split_note = "NAS-Bench-101 split" if full else f"subset of NAS-Bench-101 split, split_seed={cfg.split_seed}"
    return DataSplits(
        name="cifar10",
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_valid=splits["valid"][0],
        y_valid=splits["valid"][1],
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        origin=f"{folder}; {split_note}: train data_batch_1-4, valid data_batch_5, test test_batch",
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 pickle batch as (uint8 (N, 3, 32, 32), int64 (N,)); DataError if it is not one."""
    import numpy as np

    fix = "replace it with the python version (cifar-10-python.tar.gz) or delete the folder and set dataset.download=true"
    try:
        with path.open("rb") as f:
            # The official batches are Python 2 pickles; latin1 turns their byte strings into str keys.
            batch: Any = pickle.load(f, encoding="latin1")
    except Exception as exc:  # pickle raises many types for a damaged file
        raise DataError(f"CIFAR-10 file {path} is corrupt ({type(exc).__name__}: {exc}); {fix}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR-10 file {path} holds a {type(batch).__name__}, not a batch dict; {fix}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"CIFAR-10 file {path} has no 'data'/'labels' entries (keys: {sorted(batch)[:6]}); {fix}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    size = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        raise DataError(f"CIFAR-10 file {path}: data is {data.dtype} {data.shape}, expected uint8 (N, {size}); {fix}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"CIFAR-10 file {path}: {len(labels)} labels for {len(data)} images; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"CIFAR-10 file {path}: labels outside 0..{NUM_CLASSES - 1}; {fix}")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def _download(root: Path) -> None:
    """Fetches and extracts the python version of CIFAR-10 into root/cifar-10-batches-py (torchvision)."""
    try:
        from torchvision.datasets import CIFAR10

        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(root=str(root), train=True, download=True)
    except Exception as exc:  # network, disk or checksum errors all mean the same to the user
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"downloading CIFAR-10 into {root} failed ({detail}); fetch cifar-10-python.tar.gz by hand and extract it there"
        ) from exc


def make_synthetic(n_train: int, n_valid: int, n_test: int, seed: int) -> DataSplits:
    """The generated CIFAR-shaped data set (see the module docstring); deterministic in ``seed``.

    Each split comes from its own random stream, so changing one split's size leaves the others'
    images unchanged. About 20 ms per 1,000 images.
    """
    import numpy as np
    import torch

    protos = _synthetic_classes()
    streams = np.random.SeedSequence([_SYNTHETIC_STRUCTURE_SEED, seed]).spawn(3)
    out = []
    for n, stream in zip((n_train, n_valid, n_test), streams, strict=True):
        x, y = _synthetic_images(n, np.random.default_rng(stream), protos)
        out.append((torch.from_numpy(x), torch.from_numpy(y)))
    mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if n_train:
        pixels = out[0][0].double()  # once: a float64 copy of the training images
        mean = pixels.mean(dim=(0, 2, 3)).tolist()
        if n_train > 1:
            std = pixels.std(dim=(0, 2, 3)).tolist()
    return DataSplits(
        name="synthetic",
        x_train=out[0][0],
        y_train=out[0][1],
        x_valid=out[1][0],
        y_valid=out[1][1],
        x_test=out[2][0],
        y_test=out[2][1],
        mean=(mean[0], mean[1], mean[2]),
        std=(max(std[0], 1e-3), max(std[1], 1e-3), max(std[2], 1e-3)),
        origin=f"generated, {NUM_CLASSES} grating classes, seed={seed}",
    )


def _synthetic_classes() -> dict[str, np.ndarray]:
    """Per class: two grating wave vectors (cycles per image) and their per-channel colour weights."""
    import numpy as np

    rng = np.random.default_rng(_SYNTHETIC_STRUCTURE_SEED)
    angles = rng.permutation(NUM_CLASSES) * (np.pi / NUM_CLASSES) + rng.uniform(0, 0.2, NUM_CLASSES)
    freq = rng.uniform(1.5, 4.5, (NUM_CLASSES, 2))
    second = angles + rng.uniform(np.pi / 4, 3 * np.pi / 4, NUM_CLASSES)
    waves = np.stack(
        [
            np.stack([freq[:, 0] * np.cos(angles), freq[:, 0] * np.sin(angles)], axis=1),
            np.stack([freq[:, 1] * np.cos(second), freq[:, 1] * np.sin(second)], axis=1),
        ],
        axis=1,
    )  # (classes, 2 gratings, 2 coordinates)
    colours = rng.uniform(-1.0, 1.0, (NUM_CLASSES, 2, 3))  # (classes, gratings, channels)
    base = rng.uniform(-_TINT, _TINT, (NUM_CLASSES, 3))  # per-class tint on the 0..255 scale
    return {"waves": waves, "colours": colours, "base": base}


def _synthetic_images(n: int, rng: np.random.Generator, protos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)
    _, h, w = IMAGE_SHAPE
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    waves = protos["waves"][labels].astype(np.float32)  # (n, 2, 2)
    phase = rng.uniform(0, 2 * np.pi, (n, 2, 1, 1)).astype(np.float32)
    arg = (2 * np.pi / w) * (waves[:, :, 0, None, None] * xx + waves[:, :, 1, None, None] * yy) + phase
    gratings = np.sin(arg)  # (n, 2, h, w)
    colours = protos["colours"][labels].astype(np.float32)  # (n, 2, 3)
    contrast = rng.uniform(*_CONTRAST, (n, 1, 1, 1)).astype(np.float32)
    img = colours[:, 0, :, None, None] * gratings[:, 0, None] + colours[:, 1, :, None, None] * gratings[:, 1, None]
    img *= contrast
    img += 128.0 + protos["base"][labels].astype(np.float32)[:, :, None, None]
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= _NOISE
    img += noise
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), labels

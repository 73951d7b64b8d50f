"""Data: the CIFAR-10 loader on a CIFAR-format root written here, its errors, and the synthetic set."""

from __future__ import annotations

import pickle
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import jobs.data as data_module
from jobs.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    DataError,
    DatasetConfig,
    check_dataset,
    load_dataset,
    make_synthetic,
)

PER_BATCH = 12


def _write_cifar(folder: Path, per_batch: int = PER_BATCH, bytes_keys: bool = False) -> dict[str, tuple]:
    """A CIFAR-10 python-pickle root: data_batch_1..5 and test_batch, pixels encode (batch, index)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        rng = np.random.default_rng(b)
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, 0] = b  # first red pixel: which file
        data[:, 1] = np.arange(per_batch)  # second: index in the file
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        entry = {"batch_label": f"batch {b}", "data": data, "labels": labels, "filenames": [f"{i}.png" for i in range(per_batch)]}
        if bytes_keys:
            entry = {k.encode(): v for k, v in entry.items()}
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[name] = (data, labels)
    return written


def _cfg(root: Path, **kwargs: object) -> DatasetConfig:
    sizes = {"n_train": 4 * PER_BATCH, "n_valid": PER_BATCH, "n_test": PER_BATCH}
    return DatasetConfig(kind="cifar10", root=str(root), **{**sizes, **kwargs})  # type: ignore[arg-type]


def test_loader_reads_nasbench_split(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path / "cifar")
    splits = load_dataset(_cfg(tmp_path / "cifar"))
    assert splits.name == "cifar10"
    assert splits.x_train.dtype == torch.uint8 and splits.x_train.shape == (4 * PER_BATCH, 3, 32, 32)
    assert splits.y_train.dtype == torch.int64
    # train = data_batch_1..4 in order, valid = data_batch_5, test = test_batch
    assert splits.x_train[:, 0, 0, 0].tolist() == [b for b in range(4) for _ in range(PER_BATCH)]
    assert splits.x_valid[:, 0, 0, 0].unique().tolist() == [4]
    assert splits.x_test[:, 0, 0, 0].unique().tolist() == [5]
    data, labels = written["data_batch_2"]
    assert torch.equal(splits.x_train[PER_BATCH:2 * PER_BATCH], torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert splits.y_train[PER_BATCH:2 * PER_BATCH].tolist() == labels
    assert splits.y_test.tolist() == written["test_batch"][1]
    assert splits.mean == CIFAR_MEAN and splits.std == CIFAR_STD
    text = splits.describe()
    assert "cifar10" in text and f"{4 * PER_BATCH} train" in text and "data_batch_5" in text


def test_loader_accepts_torchvision_layout_and_bytes_keys(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "root" / "cifar-10-batches-py", bytes_keys=True)
    cfg = _cfg(tmp_path / "root")
    check_dataset(cfg)
    splits = load_dataset(cfg)
    assert len(splits.y_valid) == PER_BATCH


def test_shrinking_draws_a_seeded_subset(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    a = load_dataset(_cfg(tmp_path, n_train=10, n_valid=5, n_test=3, split_seed=1))
    b = load_dataset(_cfg(tmp_path, n_train=10, n_valid=5, n_test=3, split_seed=1))
    c = load_dataset(_cfg(tmp_path, n_train=10, n_valid=5, n_test=3, split_seed=2))
    assert (len(a.y_train), len(a.y_valid), len(a.y_test)) == (10, 5, 3)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    # still from the right files, in file order, without repeats
    keys = (a.x_train[:, 0, 0, 0].long() * 100 + a.x_train[:, 0, 0, 1].long()).tolist()
    assert keys == sorted(set(keys)) and all(k // 100 < 4 for k in keys)
    assert "split_seed=1" in a.describe()


def _one_line(exc: pytest.ExceptionInfo[DataError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_root_says_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        check_dataset(_cfg(tmp_path / "nowhere"))
    message = _one_line(info)
    assert "CIFAR-10 not found at" in message and "data_batch_1" in message and "test_batch" in message
    assert "dataset.root=DIR" in message and "dataset.download=true" in message
    with pytest.raises(DataError, match="dataset.root is not set"):
        check_dataset(DatasetConfig(kind="cifar10"))


def test_partial_root_names_the_missing_files(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError) as info:
        load_dataset(_cfg(tmp_path))
    assert "missing data_batch_3" in _one_line(info)


def test_corrupt_files_are_caught(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    # not a pickle at all: caught by the fast check, before anything is loaded
    (tmp_path / "test_batch").write_text("<html>404</html>")
    with pytest.raises(DataError) as info:
        check_dataset(_cfg(tmp_path))
    assert "test_batch is not a python pickle" in _one_line(info)
    # a truncated pickle passes the fast check and fails when loaded
    _write_cifar(tmp_path)
    raw = (tmp_path / "data_batch_2").read_bytes()
    (tmp_path / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    check_dataset(_cfg(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset(_cfg(tmp_path))
    message = _one_line(info)
    assert "data_batch_2 is corrupt" in message and "dataset.download=true" in message


def test_wrong_contents_are_caught(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with (tmp_path / "data_batch_5").open("wb") as f:
        pickle.dump({"data": np.zeros((PER_BATCH, 100), dtype=np.uint8), "labels": [0] * PER_BATCH}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_5: data is uint8 \(12, 100\)"):
        load_dataset(_cfg(tmp_path))
    with (tmp_path / "data_batch_5").open("wb") as f:
        pickle.dump({"data": np.zeros((PER_BATCH, 3072), dtype=np.uint8), "labels": [11] * PER_BATCH}, f, protocol=2)
    with pytest.raises(DataError, match="labels outside 0..9"):
        load_dataset(_cfg(tmp_path))
    with (tmp_path / "data_batch_5").open("wb") as f:
        pickle.dump([1, 2, 3], f, protocol=2)
    with pytest.raises(DataError, match="not a batch dict"):
        load_dataset(_cfg(tmp_path))


def test_sizes_are_checked(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with pytest.raises(DataError, match=r"dataset.n_train = 49 but the CIFAR-10 train files .* hold only 48 images"):
        load_dataset(_cfg(tmp_path, n_train=49))
    with pytest.raises(DataError, match="exceeds the 40000 images of NAS-Bench-101's CIFAR-10 train split"):
        check_dataset(_cfg(tmp_path, n_train=50000))
    with pytest.raises(DataError, match="dataset.n_valid = 0 must be a positive integer"):
        check_dataset(DatasetConfig(n_valid=0))
    with pytest.raises(DataError, match="dataset.kind = 'imagenet' is not one of cifar10, synthetic"):
        check_dataset(DatasetConfig(kind="imagenet"))


def test_download_only_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_download(root: Path) -> None:  # stands in for torchvision's download (no network here)
        calls.append(root)
        _write_cifar(root / "cifar-10-batches-py")

    monkeypatch.setattr(data_module, "_download", fake_download)
    root = tmp_path / "new" / "cifar"
    with pytest.raises(DataError):
        load_dataset(_cfg(root))
    assert calls == []
    cfg = _cfg(root, download=True)
    check_dataset(cfg)  # missing but downloadable into a writable place
    splits = load_dataset(cfg)
    assert calls == [root] and len(splits.y_train) == 4 * PER_BATCH
    load_dataset(cfg)  # present now: no second download
    assert calls == [root]


def test_download_failure_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Offline:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OSError("Network is unreachable")

    # a stand-in torchvision whose CIFAR10 cannot reach the network (and that imports instantly)
    fake_datasets = types.ModuleType("torchvision.datasets")
    fake_datasets.CIFAR10 = Offline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_datasets)
    with pytest.raises(DataError) as info:
        load_dataset(_cfg(tmp_path / "dl", download=True))
    message = _one_line(info)
    assert "downloading CIFAR-10 into" in message and "Network is unreachable" in message


# --- synthetic ----------------------------------------------------------------------------------------


def test_synthetic_shapes_and_determinism() -> None:
    a = load_dataset(DatasetConfig(n_train=300, n_valid=100, n_test=50, split_seed=3))
    b = make_synthetic(300, 100, 50, seed=3)
    c = make_synthetic(300, 100, 50, seed=4)
    assert a.name == "synthetic"
    assert a.x_train.shape == (300, 3, 32, 32) and a.x_train.dtype == torch.uint8
    assert (len(a.y_valid), len(a.y_test)) == (100, 50)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.bincount(a.y_train, minlength=10).tolist() == [30] * 10  # balanced classes
    assert all(0 < m < 255 for m in a.mean) and all(s > 10 for s in a.std)
    # each split has its own stream: a bigger training set leaves validation unchanged
    assert torch.equal(make_synthetic(400, 100, 50, seed=3).x_valid, a.x_valid)
    assert "synthetic" in a.describe() and "300 train" in a.describe()


def test_synthetic_images_of_a_class_vary() -> None:
    """Images of one class are not copies (random phase, contrast, noise); that the classes are
    learnable is tested by training on them (tests/jobs/test_train.py)."""
    d = make_synthetic(200, 10, 10, seed=0)
    first = d.x_train[d.y_train == 0].float()
    assert (first[0] - first[1]).abs().mean() > 10
    assert d.x_train.float().std() > 20


def test_synthetic_generation_is_fast() -> None:
    make_synthetic(10, 10, 10, seed=0)  # warm up imports
    start = time.perf_counter()
    make_synthetic(3000, 1, 1, seed=1)
    assert time.perf_counter() - start < 2.0  # about 0.2 s on an idle 2-core machine

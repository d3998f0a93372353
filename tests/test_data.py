"""The data modules: IDX reading (gz and raw), digits, MNIST download with MD5 checks."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bz_lightning.data import DigitsDataModule, MNISTDataModule, read_idx
from bz_lightning.data import mnist as mnist_module
from bz_lightning.errors import BzConfigError


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(raw: Path, n: int = 12, gz: bool = True) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        arrays = {"images-idx3": rng.integers(0, 256, (n, 28, 28)), "labels-idx1": rng.integers(0, 10, (n,))}
        for kind, array in arrays.items():
            data = idx_bytes(array)
            name = f"{split}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_read_idx(tmp_path: Path, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
    assert torch.equal(read_idx(path), torch.from_numpy(array))


def test_read_idx_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(BzConfigError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(np.zeros((3, 2), np.uint8))[:-1])
    with pytest.raises(BzConfigError, match="holds"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_mnist_reads_local_files_without_checksums(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path / "MNIST/raw", gz=gz)
    dm = MNISTDataModule(root=str(tmp_path), download=False, batch_size=5)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    # val carved from the 12 train-* samples (10%: 1), test = the 12 t10k-* samples.
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (11, 1, 12)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


def test_mnist_mini_test_split_is_the_official_test_files_and_val_is_carved_from_train(mnist_mini: Path) -> None:
    dm = MNISTDataModule(root=str(mnist_mini), download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (7200, 800, 2000)
    raw = mnist_mini / "MNIST/raw"
    test_images = read_idx(raw / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(raw / "t10k-labels-idx1-ubyte.gz")
    train_images = read_idx(raw / "train-images-idx3-ubyte.gz")
    # The test split is the t10k files, in their order; images only normalised.
    assert torch.equal(dm.test_set.tensors[1], test_labels.long())
    assert torch.allclose(dm.test_set.tensors[0][:, 0] * 0.3081 + 0.1307, test_images.float() / 255, atol=1e-6)
    # train and val partition the train-* images: together all of them, none in both.
    train, val = dm.train_set.tensors[0], dm.val_set.tensors[0]
    originals = torch.round((torch.cat([train, val])[:, 0] * 0.3081 + 0.1307) * 255).to(torch.uint8)
    assert len(originals) == 8000 and _rows(originals) == _rows(train_images)  # 8,000 distinct images
    assert torch.equal(torch.sort(torch.cat([dm.train_set.tensors[1], dm.val_set.tensors[1]])).values,
                       torch.sort(read_idx(raw / "train-labels-idx1-ubyte.gz").long()).values)
    assert not _rows(train) & _rows(val)


def test_missing_files_name_the_root_and_the_fix(tmp_path: Path) -> None:
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(BzConfigError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "data.root=" in message and "data.download=true" in message


def test_download_without_network_fails_with_the_fix(tmp_path: Path) -> None:
    dm = MNISTDataModule(root=str(tmp_path), mirrors=[f"file://{tmp_path}/no-such-mirror/"])
    with pytest.raises(BzConfigError, match="download failed.*Copy the IDX files"):
        dm.prepare_data()


def _mirror(tmp_path: Path) -> Path:
    mirror = tmp_path / "mirror"
    write_mnist(mirror, gz=True)
    return mirror


def test_download_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = _mirror(tmp_path)
    sums = {stem: hashlib.md5((mirror / f"{stem}.gz").read_bytes()).hexdigest() for stem in mnist_module.MNIST_FILES}
    monkeypatch.setattr(mnist_module, "MNIST_FILES", sums)
    root = tmp_path / "root"
    dm = MNISTDataModule(root=str(root), download=True, mirrors=[f"file://{mirror}/"])
    dm.prepare_data()
    dm.setup("fit")
    assert sorted(p.name for p in (root / "MNIST/raw").iterdir()) == sorted(f"{s}.gz" for s in sums)
    assert len(dm.train_set) + len(dm.val_set) == 12


def test_download_with_wrong_md5_fails_and_removes_the_file(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path)  # the official sums cannot match these files
    root = tmp_path / "root"
    dm = MNISTDataModule(root=str(root), download=True, mirrors=[f"file://{mirror}/"])
    with pytest.raises(BzConfigError, match="MD5"):
        dm.prepare_data()
    assert not any((root / "MNIST/raw").glob("*.gz"))


def test_present_files_are_not_downloaded_again(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST/raw")
    dm = MNISTDataModule(root=str(tmp_path), download=True, mirrors=["file:///nonexistent/"])
    dm.prepare_data()  # would fail if it tried a download


def test_digits_split_is_deterministic() -> None:
    a, b = DigitsDataModule(batch_size=16, seed=3), DigitsDataModule(batch_size=16, seed=3)
    a.setup("fit")
    b.setup("fit")
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (1258, 359, 180)
    assert torch.equal(a.val_set.tensors[1], b.val_set.tensors[1])
    assert torch.equal(a.test_set.tensors[1], b.test_set.tensors[1])
    x, _ = next(iter(a.val_dataloader()))
    assert x.shape == (16, 1, 8, 8) and float(x.max()) <= 1.0


def test_shape_mismatch_is_reported() -> None:
    dm = DigitsDataModule(input_shape=[1, 28, 28])
    with pytest.raises(BzConfigError, match=r"data.input_shape is \[1, 28, 28\]"):
        dm.setup("fit")


def test_digits_splits_partition_the_data_and_keep_the_old_validation_samples() -> None:
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(seed=0)
    dm.setup("fit")
    images = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    # Before the test split existed, val was the first 20% of this permutation.
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dm.val_set.tensors[0], images[order[:359]])
    parts = [dm.train_set, dm.val_set, dm.test_set]
    assert sum(len(p) for p in parts) == 1797
    keys = [_rows(p.tensors[0]) for p in parts]
    # Distinct images only: load_digits holds a few exact duplicates.
    assert not (keys[0] & keys[2]) - _duplicates(images) and not (keys[1] & keys[2]) - _duplicates(images)


def _duplicates(images: torch.Tensor) -> set[bytes]:
    seen: set[bytes] = set()
    twice: set[bytes] = set()
    for key in (row.numpy().tobytes() for row in images.reshape(len(images), -1)):
        (twice if key in seen else seen).add(key)
    return twice


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_split_dataloader_is_unshuffled_and_complete(split: str) -> None:
    dm = DigitsDataModule(batch_size=50)
    dm.setup("fit")
    stored = getattr(dm, f"{split}_set").tensors[1]
    assert torch.equal(torch.cat([y for _, y in dm.split_dataloader(split)]), stored)
    with pytest.raises(BzConfigError, match="unknown split 'tset'; available: train, val, test"):
        dm.split_dataloader("tset")


def test_diabetes_is_standardised_with_the_training_split_only() -> None:
    from sklearn.datasets import load_diabetes

    from bz_lightning.data import DiabetesDataModule

    raw = load_diabetes(scaled=False)
    dm = DiabetesDataModule(seed=1)
    dm.setup("fit")
    sizes = (len(dm.train_set), len(dm.val_set), len(dm.test_set))
    assert sizes == (266, 88, 88) and sum(sizes) == len(raw.target)
    x_train, y_train = dm.train_set.tensors
    assert x_train.shape == (266, 10) and y_train.shape == (266, 1) and y_train.dtype == torch.float32
    assert torch.allclose(x_train.mean(0), torch.zeros(10), atol=1e-5)
    assert torch.allclose(x_train.std(0), torch.ones(10), atol=1e-5)
    # Targets convert back to the data's own values; every sample in exactly one split.
    back = torch.cat([s.tensors[1] for s in (dm.train_set, dm.val_set, dm.test_set)]) * dm.target_std + dm.target_mean
    assert np.allclose(np.sort(back.numpy().ravel()), np.sort(raw.target), atol=1e-3)
    # The scaling is the training split's: val/test means are not forced to 0.
    assert abs(float(dm.test_set.tensors[0].mean())) > 1e-4
    plain = DiabetesDataModule(seed=1, standardize_target=False)
    plain.setup("fit")
    assert np.allclose(np.sort(plain.test_set.tensors[1].numpy().ravel()),
                       np.sort(dm.test_set.tensors[1].numpy().ravel() * dm.target_std + dm.target_mean), atol=1e-3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"val_fraction": 0.6, "test_fraction": 0.5}, r"val_fraction \+ data.test_fraction must be < 1"),
    ({"test_fraction": 0.0}, "data.test_fraction must be between 0 and 1"),
    ({"num_classes": 2}, r"targets have 1 value\(s\) each but data.num_classes is 2"),
])
def test_diabetes_bad_settings_are_named(kwargs, match) -> None:
    from bz_lightning.data import DiabetesDataModule

    with pytest.raises(BzConfigError, match=match):
        DiabetesDataModule(**kwargs).setup("fit")

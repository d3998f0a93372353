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
    assert len(dm.val_set) == 12


def test_mnist_mini(mnist_mini: Path) -> None:
    dm = MNISTDataModule(root=str(mnist_mini), download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 8000 and len(dm.val_set) == 2000


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
    assert len(dm.train_set) == 12


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
    assert len(a.train_set) + len(a.val_set) == 1797
    assert torch.equal(a.val_set.tensors[1], b.val_set.tensors[1])
    x, _ = next(iter(a.val_dataloader()))
    assert x.shape == (16, 1, 8, 8) and float(x.max()) <= 1.0


def test_shape_mismatch_is_reported() -> None:
    dm = DigitsDataModule(input_shape=[1, 28, 28])
    with pytest.raises(BzConfigError, match=r"data.input_shape is \[1, 28, 28\]"):
        dm.setup("fit")

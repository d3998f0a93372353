"""MNIST from the standard IDX files in ``<root>/MNIST/raw`` (``.gz`` or uncompressed).

Files that are present are read as they are, without checksums: checksums belong to
downloads (``../shared/data/mnist-mini`` holds real digits whose sums differ from the
official files). Missing files are downloaded only with ``download=True``, each checked
against its official MD5.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from bz_lightning.data._base import TensorDataModule
from bz_lightning.errors import BzConfigError

__all__ = ["MNISTDataModule", "read_idx", "MNIST_FILES", "MNIST_MIRRORS", "download_and_verify"]

logger = logging.getLogger("bz_lightning.data")

# File stem -> MD5 of the official ``.gz`` file.
MNIST_FILES = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
# The mirrors torchvision uses, in its order.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Normalisation constants of the full MNIST training set.
_MEAN, _STD = 0.1307, 0.3081

# How to mend a damaged file, for the errors that name one.
_REPLACE = ("delete it and run again with data.download=true to fetch the official file, "
            "or copy an intact one in its place")

# IDX type byte -> numpy dtype (big-endian where it matters).
_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file (``.gz`` or raw) into a tensor of its stored shape.

    Raises:
        BzConfigError: the file cannot be read (a truncated or garbage ``.gz`` included) or
            is not a valid IDX file; the message names it and says how to replace it.

    Example:
        >>> read_idx("MNIST/raw/t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
        torch.Size([10000])
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip: BadGzipFile (an OSError), EOFError if truncated
        raise BzConfigError(f"{path} cannot be read ({type(err).__name__}: {err}); {_REPLACE}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise BzConfigError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}); {_REPLACE}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BzConfigError(f"{path} is truncated: it ends inside its header; {_REPLACE}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise BzConfigError(
            f"{path}: header says shape {shape} ({expected} bytes) but it holds {len(data) - header}; {_REPLACE}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_and_verify(url: str, dst: Path, md5: str) -> None:
    """Download ``url`` to ``dst`` with ``torch.hub.download_url_to_file`` and check its MD5.

    Raises:
        BzConfigError: the download failed, or the file's MD5 is not ``md5`` (the file is
            removed then).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), progress=False)
    got = _md5(dst)
    if got != md5:
        dst.unlink()
        raise BzConfigError(f"downloaded {url} has MD5 {got}, expected {md5}; the file was removed")


class MNISTDataModule(TensorDataModule):
    """MNIST handwritten digits, 1x28x28; trains on ``train-*`` and validates on ``t10k-*``.

    Args:
        root: directory holding ``MNIST/raw/`` (torchvision's layout).
        download: fetch missing files from ``mirrors`` (MD5-checked).
        batch_size / num_workers: DataLoader settings.
        mirrors: base URLs tried in order for a missing file.
        input_shape / num_classes: what the config says the data is; checked in ``setup``.
        pin_memory: batches in page-locked memory for fast copies to a GPU; ``None``: when
            CUDA is available.

    Raises:
        BzConfigError: files are missing (and ``download`` is off or failed), or malformed.
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        mirrors: Sequence[str] = MNIST_MIRRORS,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, input_shape, num_classes, pin_memory)
        self.root = Path(root).expanduser()
        self.download = download
        self.mirrors = list(mirrors)

    @property
    def raw_dir(self) -> Path:
        return self.root / "MNIST" / "raw"

    def _find(self, stem: str) -> Path | None:
        for name in (stem, stem + ".gz"):
            if (self.raw_dir / name).is_file():
                return self.raw_dir / name
        return None

    def prepare_data(self) -> None:
        missing = [stem for stem in MNIST_FILES if self._find(stem) is None]
        if not missing:
            return
        if not self.download:
            raise BzConfigError(self._missing_message(missing, "data.download is false"))
        for stem in missing:
            errors = []
            for mirror in self.mirrors:
                url = mirror.rstrip("/") + "/" + stem + ".gz"
                try:
                    logger.info("downloading %s", url)
                    download_and_verify(url, self.raw_dir / (stem + ".gz"), MNIST_FILES[stem])
                    break
                except BzConfigError as err:
                    errors.append(str(err))
                except OSError as err:  # URLError, HTTPError and socket errors are OSErrors
                    errors.append(f"{url}: {err}")
            else:
                raise BzConfigError(self._missing_message([stem], "download failed: " + "; ".join(errors)))

    def _missing_message(self, missing: list[str], why: str) -> str:
        return (
            f"MNIST files missing in {self.raw_dir} ({why}): {', '.join(s + '[.gz]' for s in missing)}. "
            f"Copy the IDX files into {self.raw_dir}/, point data.root=<dir> at a directory holding "
            "MNIST/raw/ (e.g. data.root=../shared/data/mnist-mini), or set data.download=true with network access"
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        missing = [stem for stem in MNIST_FILES if self._find(stem) is None]
        if missing:
            raise BzConfigError(self._missing_message(missing, "call prepare_data() or set data.download=true"))
        self.train_set = self._load("train")
        self.val_set = self._load("t10k")

    def _load(self, split: str) -> TensorDataset:
        images = read_idx(self._find(f"{split}-images-idx3-ubyte"))  # type: ignore[arg-type]
        labels = read_idx(self._find(f"{split}-labels-idx1-ubyte"))  # type: ignore[arg-type]
        if len(images) != len(labels):
            raise BzConfigError(f"MNIST {split}: {len(images)} images but {len(labels)} labels in {self.raw_dir}")
        x = (images.float().unsqueeze(1) / 255.0 - _MEAN) / _STD
        y = labels.long()
        self._check(f"MNIST {split}", x, y)
        return TensorDataset(x, y)

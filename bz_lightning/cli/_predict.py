"""``bz predict``: a checkpoint's predictions for one split of the run your config describes, as CSV.

The run is rebuilt as ``bz validate`` rebuilds it (``open_checkpoint_run``: the user's config,
only tensors from the file) and ``lightning.Trainer.predict`` runs it over the split in the
split's stored order. One CSV row per sample:

- ``index``: the sample's position in the split (0-based);
- ``target`` (``target_<j>`` for several values per sample): what the data says;
- classification (loss ``cross_entropy`` / NLL): ``pred``, the class with the highest score,
  and ``prob_<c>``, the softmax probability of each class;
- ``bce_with_logits``: ``prob_<j>`` (sigmoid) and ``pred_<j>`` (1 where ``prob_<j> >= 0.5``);
- anything else (regression): ``pred`` (``pred_<j>``), the model's raw output.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

from bz_lightning.cli._validate import _CLASS_INDEX_LOSSES
from bz_lightning.errors import BzCheckpointError, BzConfigError

__all__ = ["check_output", "predict_checkpoint", "prediction_rows"]

_BINARY_LOSSES = ("torch.nn.BCEWithLogitsLoss",)


def check_output(output: str, force: bool) -> Path:
    """Check before any work that ``output`` can be written: its folder exists and is
    writable, and it does not exist yet unless ``force``.

    Raises:
        BzConfigError: naming the path and what to do.
    """
    path = Path(output)
    if path.is_dir():
        raise BzConfigError(f"--output {output}: is a directory; name a file, e.g. {path / 'predictions.csv'}")
    if path.exists() and not force:
        raise BzConfigError(f"--output {output}: the file exists and is kept; pass --force to overwrite it "
                            "or name another file")
    folder = path.parent
    if not folder.is_dir():
        raise BzConfigError(f"--output {output}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BzConfigError(f"--output {output}: not writable (permission denied in {folder})")
    return path


def predict_checkpoint(path: str, overrides: list[str], split: str, output: str, *, force: bool = False,
                       config_dir: str | None = None, note: Any = None) -> tuple[Path, int]:
    """Write the predictions of the checkpoint at ``path`` for ``split`` to ``output`` (CSV);
    returns the file and the number of rows.

    Raises:
        BzConfigError: an unknown split, an output that cannot or may not be written, or
            a bad config; all but the config before anything is loaded.
        BzCheckpointError: as ``bz validate``.
    """
    from bz_lightning.cli._checkpoint import check_split, open_checkpoint_run
    from bz_lightning.data import SPLITS

    check_split(split, SPLITS)
    if not os.path.isfile(path):
        raise BzCheckpointError(f"checkpoint not found: {path}")
    target = check_output(output, force)
    run = open_checkpoint_run(path, overrides, config_dir=config_dir, note=note, split=split)

    import torch

    from bz_lightning.cli._evaluate import _evaluation_trainer

    trainer = _evaluation_trainer(run.values["device"])
    batches = trainer.predict(run.module, dataloaders=run.loader)
    outputs = torch.cat([torch.as_tensor(b).detach().cpu() for b in batches or []])
    targets = torch.cat([torch.as_tensor(run.module.unpack_batch(b)[1]) for b in run.loader])
    header, rows = prediction_rows(outputs, targets, run.values["loss"]["_target_"])
    _write_csv(target, header, rows)
    return target, len(rows)


def prediction_rows(outputs: Any, targets: Any, loss_target: str) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and rows for ``outputs`` (N, ...) and ``targets`` (N, ...) of a model
    trained with the loss ``loss_target`` (see the module's docstring for the columns)."""
    import torch

    n = len(outputs)
    if len(targets) != n:
        raise BzCheckpointError(f"the model made {n} predictions for {len(targets)} samples")
    flat = outputs.float().reshape(n, -1)
    target_columns = _columns("target", targets.reshape(n, -1).shape[1])
    if loss_target in _CLASS_INDEX_LOSSES:
        probs = torch.softmax(flat, dim=1)
        header = ["index", *target_columns, "pred", *(f"prob_{c}" for c in range(flat.shape[1]))]
        values = [probs.argmax(1, keepdim=True).double(), probs.double()]
    elif loss_target in _BINARY_LOSSES:
        probs = torch.sigmoid(flat)
        header = ["index", *target_columns, *_columns("pred", flat.shape[1]), *_columns("prob", flat.shape[1])]
        values = [(probs >= 0.5).double(), probs.double()]
    else:
        header = ["index", *target_columns, *_columns("pred", flat.shape[1])]
        values = [flat.double()]
    table = torch.cat([torch.arange(n, dtype=torch.float64)[:, None], targets.reshape(n, -1).double(), *values], 1)
    integer = [False] * len(header)
    integer[0] = True
    integer[1:1 + len(target_columns)] = [not targets.dtype.is_floating_point] * len(target_columns)
    if loss_target in _CLASS_INDEX_LOSSES:
        integer[1 + len(target_columns)] = True
    elif loss_target in _BINARY_LOSSES:
        integer[1 + len(target_columns): 1 + len(target_columns) + flat.shape[1]] = [True] * flat.shape[1]
    rows = [[int(v) if whole else float(v) for v, whole in zip(row, integer)] for row in table.tolist()]
    return header, rows


def _columns(name: str, count: int) -> list[str]:
    return [f"{name}_{j}" for j in range(count)] if count > 1 else [name]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write atomically: a temp file in the same folder, then ``os.replace``, so an
    interrupted write never leaves half a file where the user asked for one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

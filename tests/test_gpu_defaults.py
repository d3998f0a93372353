"""What a practitioner sets by hand for a GPU, set by bz: page-locked batches copied without
blocking, persistent workers, TF32 matmuls under ``trainer=gpu`` (issue 18). Checked on the
CPU: the decisions, and what Lightning does with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from bz_lightning.cli._build import lightning_kwargs
from bz_lightning.cli._validate import validate_config
from bz_lightning.cli.train import CONF_DIR, train
from bz_lightning.data import DigitsDataModule


@pytest.mark.parametrize("cuda, option, pinned", [(True, None, True), (False, None, False), (True, False, False)])
def test_loaders_pin_memory_when_cuda_is_there(monkeypatch, cuda, option, pinned) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    data = DigitsDataModule(batch_size=32, pin_memory=option)
    data.setup("fit")
    assert data.train_dataloader().pin_memory is pinned and data.val_dataloader().pin_memory is pinned


def test_workers_persist_between_epochs_when_there_are_workers() -> None:
    data = DigitsDataModule(batch_size=32, num_workers=2)
    data.setup("fit")
    assert data.train_dataloader().persistent_workers
    assert not DigitsDataModule(batch_size=32)._loader(data.val_set, shuffle=False).persistent_workers


def test_lightning_copies_batches_to_a_gpu_without_blocking(monkeypatch) -> None:
    # The other half of pin_memory: Lightning's batch transfer asks for non_blocking on CUDA.
    from lightning.fabric.utilities.apply_func import move_data_to_device

    calls = []
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append(kwargs) or self)
    move_data_to_device((torch.zeros(2), torch.zeros(2)), torch.device("cuda", 0))
    move_data_to_device(torch.zeros(2), torch.device("cpu"))
    assert calls == [{"non_blocking": True}, {"non_blocking": True}, {}]


def _compose(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}", "print_config=false"])


def test_trainer_gpu_asks_for_tf32_matmuls_and_bz_keeps_the_key(tmp_path: Path) -> None:
    values = validate_config(_compose(["trainer=gpu"], tmp_path))
    assert values["trainer"]["float32_matmul_precision"] == "high"
    assert "float32_matmul_precision" not in lightning_kwargs(values["trainer"])  # bz's key, not Lightning's
    assert validate_config(_compose([], tmp_path))["trainer"]["float32_matmul_precision"] is None


def test_bz_train_sets_the_matmul_precision(tmp_path: Path) -> None:
    before = torch.get_float32_matmul_precision()
    cfg = _compose(["trainer=cpu", "trainer.float32_matmul_precision=medium", "trainer.fast_dev_run=true",
                    f"paths.runs_dir={tmp_path}/runs", "plugins=none"], tmp_path)
    try:
        train(cfg)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_bad_matmul_precision_is_named(tmp_path: Path) -> None:
    from bz_lightning.errors import BzConfigError

    with pytest.raises(BzConfigError, match="float32_matmul_precision.*highest.*high.*medium"):
        validate_config(_compose(["trainer.float32_matmul_precision=hgh"], tmp_path))

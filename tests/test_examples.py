"""Every example runs, on tiny data, so none of them rots."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_custom_plugin_example_prints_each_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    import custom_plugin

    metrics = custom_plugin.main(["--epochs", "2", "--samples", "300"])
    out = capsys.readouterr().out
    assert "Training started!" in out
    assert "Epoch 0 - Loss:" in out and "Epoch 1 - Loss:" in out
    assert metrics["val_loss"] < metrics["train_loss"] * 5  # trained, finite


def test_plain_lightning_example_writes_a_loadable_best_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    import plain_lightning

    best = plain_lightning.main(["--epochs", "2", "--samples", "300", "--dir", str(tmp_path)])
    state = torch.load(best, weights_only=True)
    assert any(key.startswith("model.") for key in state["state_dict"])
    assert "LifecycleCallback" in "".join(state["callbacks"])

"""bz's exceptions keep their message and attributes across a pickle round trip, as a sweep
job's error does on its way back from a submitit (SLURM) or joblib worker."""

from __future__ import annotations

import pickle
import re

import pytest

from bz_lightning.errors import BzCheckpointError, BzConfigError, BzError, BzPluginError, NonFiniteLossError


@pytest.mark.parametrize("error", [
    BzError("something failed"),
    BzConfigError("epochs=abc: expected an integer"),
    BzCheckpointError("last.ckpt is truncated"),
    BzPluginError("console_out", "end_epoch", RuntimeError("boom")),
    NonFiniteLossError(epoch=2, batch=7, value=float("inf"), last_finite_loss=0.25),
], ids=lambda e: type(e).__name__)
def test_errors_survive_pickling(error: BzError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)
    with pytest.raises(type(error), match=re.escape(str(error))):
        raise copy


def test_the_attributes_come_back() -> None:
    copy = pickle.loads(pickle.dumps(NonFiniteLossError(3, 11, float("nan"), None)))
    assert (copy.epoch, copy.batch, copy.last_finite_loss) == (3, 11, None)
    assert isinstance(copy, FloatingPointError)
    plugin = pickle.loads(pickle.dumps(BzPluginError("tensorboard", "start_epoch")))
    assert (plugin.plugin, plugin.stage) == ("tensorboard", "start_epoch")

"""bz checkpoints: a plain, versioned, atomically written format, keyed by the run's signature.

* ``signature``: ``compute_training_signature`` (what defines a run) and the config keys
  it ignores; ``fingerprint``: the user's code and the data, as the signature sees them.
* ``io``: ``AtomicCheckpointIO`` (Lightning ``CheckpointIO``), ``load_checkpoint``,
  ``to_plain``.
* ``rng``: RNG state as plain data and the loader replay behind exact mid-epoch resume.
* ``callbacks``: ``EpochCheckpoint`` (``epoch-N.ckpt``), ``ResumeCheckpoint``
  (``last.ckpt``, RNG, SIGTERM, Ctrl-C), ``Preempted`` and ``Interrupted``.
* ``failures``: ``on_checkpoint_error``: a failing write logged and counted, or raised.
* ``resume``: the directory layout, ``plan_resume`` and the finished-run record.
* ``run``: ``RunCheckpoints``, all of the above for one ``Trainer.train`` call.

Names are imported from their module on first access, so ``compute_training_signature``
(torch only) does not bring in Lightning, which ``callbacks`` and ``io`` need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bz_lightning._lazy import lazy_getattr

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "INTERRUPTED_EXIT_CODE": "bz_lightning.checkpointing.callbacks",
    "Interrupted": "bz_lightning.checkpointing.callbacks",
    "LAST": "bz_lightning.checkpointing.callbacks",
    "PREEMPTED_EXIT_CODE": "bz_lightning.checkpointing.callbacks",
    "SIGNATURE_KEY": "bz_lightning.checkpointing.callbacks",
    "SIGNATURE_PARTS_KEY": "bz_lightning.checkpointing.callbacks",
    "EpochCheckpoint": "bz_lightning.checkpointing.callbacks",
    "Preempted": "bz_lightning.checkpointing.callbacks",
    "ResumeCheckpoint": "bz_lightning.checkpointing.callbacks",
    "CheckpointErrorPolicy": "bz_lightning.checkpointing.failures",
    "CheckpointFailure": "bz_lightning.checkpointing.failures",
    "CheckpointWrites": "bz_lightning.checkpointing.failures",
    "GuardedCheckpointIO": "bz_lightning.checkpointing.failures",
    "CHECKPOINT_VERSION": "bz_lightning.checkpointing.io",
    "VERSION_KEY": "bz_lightning.checkpointing.io",
    "AtomicCheckpointIO": "bz_lightning.checkpointing.io",
    "load_checkpoint": "bz_lightning.checkpointing.io",
    "remove_stale_temp_files": "bz_lightning.checkpointing.io",
    "to_plain": "bz_lightning.checkpointing.io",
    "FINAL_WEIGHTS_FILE": "bz_lightning.checkpointing.resume",
    "RESULT_FILE": "bz_lightning.checkpointing.resume",
    "ResumeMode": "bz_lightning.checkpointing.resume",
    "ResumePlan": "bz_lightning.checkpointing.resume",
    "checkpoint_directory": "bz_lightning.checkpointing.resume",
    "find_latest_checkpoint_epoch": "bz_lightning.checkpointing.resume",
    "plan_resume": "bz_lightning.checkpointing.resume",
    "read_finished_run": "bz_lightning.checkpointing.resume",
    "run_directory": "bz_lightning.checkpointing.resume",
    "write_finished_run": "bz_lightning.checkpointing.resume",
    "ReplayState": "bz_lightning.checkpointing.rng",
    "capture_rng": "bz_lightning.checkpointing.rng",
    "restore_rng": "bz_lightning.checkpointing.rng",
    "resumable_loader": "bz_lightning.checkpointing.rng",
    "IGNORED_CONFIG_KEYS": "bz_lightning.checkpointing.signature",
    "compute_training_signature": "bz_lightning.checkpointing.signature",
    "signature_payload": "bz_lightning.checkpointing.signature",
    "code_fingerprint": "bz_lightning.checkpointing.fingerprint",
    "data_fingerprint": "bz_lightning.checkpointing.fingerprint",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from bz_lightning.checkpointing.callbacks import (
        INTERRUPTED_EXIT_CODE,
        LAST,
        PREEMPTED_EXIT_CODE,
        SIGNATURE_KEY,
        SIGNATURE_PARTS_KEY,
        EpochCheckpoint,
        Interrupted,
        Preempted,
        ResumeCheckpoint,
    )
    from bz_lightning.checkpointing.failures import (
        CheckpointErrorPolicy,
        CheckpointFailure,
        CheckpointWrites,
        GuardedCheckpointIO,
    )
    from bz_lightning.checkpointing.fingerprint import code_fingerprint, data_fingerprint
    from bz_lightning.checkpointing.io import (
        CHECKPOINT_VERSION,
        VERSION_KEY,
        AtomicCheckpointIO,
        load_checkpoint,
        remove_stale_temp_files,
        to_plain,
    )
    from bz_lightning.checkpointing.resume import (
        FINAL_WEIGHTS_FILE,
        RESULT_FILE,
        ResumeMode,
        ResumePlan,
        checkpoint_directory,
        find_latest_checkpoint_epoch,
        plan_resume,
        read_finished_run,
        run_directory,
        write_finished_run,
    )
    from bz_lightning.checkpointing.rng import (
        ReplayState,
        capture_rng,
        restore_rng,
        resumable_loader,
    )
    from bz_lightning.checkpointing.signature import (
        IGNORED_CONFIG_KEYS,
        compute_training_signature,
        signature_payload,
    )


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return __all__

"""bz checkpoints: a plain, versioned, atomically written format, keyed by the run's signature.

* ``signature``: ``compute_training_signature`` (what defines a run) and the config keys
  it ignores.
* ``io``: ``AtomicCheckpointIO`` (Lightning ``CheckpointIO``), ``load_checkpoint``,
  ``to_plain``.
* ``rng``: RNG state as plain data and the loader replay behind exact mid-epoch resume.
* ``callbacks``: ``EpochCheckpoint`` (``epoch-N.ckpt``), ``ResumeCheckpoint``
  (``last.ckpt``, RNG, SIGTERM) and ``Preempted``.
* ``resume``: the directory layout, ``plan_resume`` and the finished-run marker.
"""

from bz_lightning.checkpointing.callbacks import (
    LAST,
    PREEMPTED_EXIT_CODE,
    SIGNATURE_KEY,
    EpochCheckpoint,
    Preempted,
    ResumeCheckpoint,
)
from bz_lightning.checkpointing.io import (
    CHECKPOINT_VERSION,
    VERSION_KEY,
    AtomicCheckpointIO,
    load_checkpoint,
    remove_stale_temp_files,
    to_plain,
)
from bz_lightning.checkpointing.resume import (
    RESULT_FILE,
    ResumeMode,
    ResumePlan,
    checkpoint_directory,
    find_latest_checkpoint_epoch,
    is_finished,
    plan_resume,
    read_finished_run,
    run_directory,
    write_finished_run,
)
from bz_lightning.checkpointing.rng import ReplayState, capture_rng, restore_rng, resumable_loader
from bz_lightning.checkpointing.signature import IGNORED_CONFIG_KEYS, compute_training_signature

__all__ = [
    "AtomicCheckpointIO",
    "CHECKPOINT_VERSION",
    "EpochCheckpoint",
    "IGNORED_CONFIG_KEYS",
    "LAST",
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "RESULT_FILE",
    "ReplayState",
    "ResumeCheckpoint",
    "ResumeMode",
    "ResumePlan",
    "SIGNATURE_KEY",
    "VERSION_KEY",
    "capture_rng",
    "checkpoint_directory",
    "compute_training_signature",
    "find_latest_checkpoint_epoch",
    "is_finished",
    "load_checkpoint",
    "plan_resume",
    "read_finished_run",
    "remove_stale_temp_files",
    "restore_rng",
    "resumable_loader",
    "run_directory",
    "to_plain",
    "write_finished_run",
]

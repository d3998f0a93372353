"""The 14 lifecycle stages of a bz training run."""

from __future__ import annotations

from enum import Enum

__all__ = ["Stage"]


class Stage(str, Enum):
    """A stage of the bz lifecycle; each value is the name of the ``Plugin`` method it calls.

    The members are declared in the order they fire. One ``fit`` runs::

        start_training_session                 # once, after Lightning's sanity check
        load_checkpoint                        # only when training resumed from a checkpoint
        for epoch in range(start_epoch, epochs):
            start_epoch
            start_training_loop
            for batch in training_loader:
                start_training_batch
                ...forward, loss, backward, optimizer step (Lightning)...
                end_training_batch
            end_training_loop
            if validation_loader:              # the validation stages fire only with one
                start_validation_loop
                for batch in validation_loader:
                    start_validation_batch
                    ...forward, loss, metrics...
                    end_validation_batch
                end_validation_loop
            save_checkpoint                    # only in epochs that write a checkpoint
            end_epoch                          # a stop requested here or earlier ends the run
        end_training_session                   # once, also after a requested stop

    Lightning runs validation *inside* its training epoch and a sanity-check validation
    before the first epoch; ``LifecycleCallback`` re-orders its hooks into the order above
    and never shows the sanity check to plugins.
    """

    START_TRAINING_SESSION = "start_training_session"
    LOAD_CHECKPOINT = "load_checkpoint"
    START_EPOCH = "start_epoch"
    START_TRAINING_LOOP = "start_training_loop"
    START_TRAINING_BATCH = "start_training_batch"
    END_TRAINING_BATCH = "end_training_batch"
    END_TRAINING_LOOP = "end_training_loop"
    START_VALIDATION_LOOP = "start_validation_loop"
    START_VALIDATION_BATCH = "start_validation_batch"
    END_VALIDATION_BATCH = "end_validation_batch"
    END_VALIDATION_LOOP = "end_validation_loop"
    SAVE_CHECKPOINT = "save_checkpoint"
    END_EPOCH = "end_epoch"
    END_TRAINING_SESSION = "end_training_session"

    def __str__(self) -> str:
        return self.value

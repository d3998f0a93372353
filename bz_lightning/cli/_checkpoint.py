"""``bz validate``: evaluate a bz-train checkpoint on its run's validation data.

bz-train stores the resolved config (plain values) in the checkpoint's
``hyper_parameters["bz_config"]``; ``key=value`` overrides change it (``data.root=DIR``
when the data moved). A checkpoint without a stored config is evaluated with bz-train's
default config composed with the overrides (``model=cnn data=mnist ...``).
"""

from __future__ import annotations

import os
from typing import Any

from bz_lightning.errors import BzCheckpointError, BzConfigError

__all__ = ["validate_checkpoint", "config_from_checkpoint"]


def config_from_checkpoint(checkpoint: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The run's config: the stored one with ``overrides`` merged in, validated."""
    from omegaconf import DictConfig, OmegaConf

    from bz_lightning.cli._build import CONFIG_KEY
    from bz_lightning.cli._validate import validate_config

    stored = (checkpoint.get("hyper_parameters") or {}).get(CONFIG_KEY)
    if stored is None:
        from hydra import compose, initialize_config_dir

        from bz_lightning.cli._constants import CONF_DIR

        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "paths.output_dir=."])
        return validate_config(cfg)
    try:
        merged = OmegaConf.merge(OmegaConf.create(stored), OmegaConf.from_dotlist(overrides))
    except Exception as err:
        raise BzConfigError(f"bad override in {overrides}: {str(err).splitlines()[0]}") from None
    assert isinstance(merged, DictConfig)  # both sides are mappings
    return validate_config(merged)


def validate_checkpoint(path: str, overrides: list[str] = ()) -> dict[str, float]:  # type: ignore[assignment]
    """Rebuild the model, load the checkpoint's weights, run ``lightning.Trainer.validate``
    on the data's validation split; returns ``val_loss`` and ``val_<metric>``.

    Raises:
        BzCheckpointError: the file is missing, unreadable or does not fit the model.
        BzConfigError: an override or the stored config is invalid.
    """
    import lightning.pytorch as pl
    import torch

    from bz_lightning.cli._build import build_metrics, instantiate
    from bz_lightning.module import BzModule
    from bz_lightning.trainer import lightning_device_args

    if not os.path.isfile(path):
        raise BzCheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BzCheckpointError(f"{path}: cannot be read as a checkpoint: {str(err).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise BzCheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    values = config_from_checkpoint(checkpoint, list(overrides))

    datamodule = instantiate("data", values["data"])
    datamodule.prepare_data()
    datamodule.setup("validate")
    model = instantiate("model", values["model"])
    # BzModule registers the network as `model`; a compiled copy would add `_forward.*` keys.
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BzCheckpointError(
            f"{path}: its weights do not fit the model built from the config "
            f"({values['model']['_target_']}): {str(err).splitlines()[0]}"
        ) from None
    module = BzModule(model, instantiate("loss", values["loss"]), instantiate("optimizer", values["optimizer"]),
                      metrics=build_metrics(values["metrics"]))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, **lightning_device_args(values["device"]))
    (results,) = trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)
    return {name: float(value) for name, value in results.items()}

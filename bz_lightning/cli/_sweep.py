"""A sweep's overrides, made to run as bz-train checked them: what ``preflight`` hands to
Hydra's multirun (see :func:`sweep_overrides`), and the packages its sweeper needs."""

from __future__ import annotations

import json
from typing import Any

from bz_lightning.cli._constants import CONFIG_NAME
from bz_lightning.cli._launch import _first_lines, _lenient
from bz_lightning.errors import BzConfigError

__all__ = ["sweep_overrides"]


def sweep_overrides(hydra: Any, parsed: list[Any], groups: dict[str, list[str]]) -> list[str]:
    """The overrides of a sweep, as Hydra's multirun must get them to run the jobs checked.

    * Hydra composes the sweep's base config first, from the overrides that do not sweep,
      before any job's groups apply: ``-m experiment=glob(*) data.root=DIR`` failed there
      ("Could not override 'data.root'") when the default ``data`` has no ``root``, though
      every job has one. A plain ``key=value`` whose key that base config lacks becomes
      ``++key=value`` (set or add); each job was validated against its schema above, so a
      mistyped key still fails there, with its name.
    * ``hydra.sweep.dir`` is resolved once, from the base config, and fixed: it holds
      ``${task_name}``, which each job would resolve again, and an experiment that sets its
      own ``task_name`` put its job in another directory, where the sweep summary never
      looked.

    Raises:
        BzConfigError: the base config does not compose, or its sweep directory does not resolve.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    def compose(overrides: list[str]) -> Any:
        try:
            return hydra.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.MULTIRUN,
                                        with_log_configuration=False)
        except Exception as err:  # Hydra's composition errors: their message is what matters
            raise BzConfigError(_first_lines(err)) from None

    lines = [o.input_line for o in parsed]
    plain = [_lenient(line, groups) != line for line in lines]
    base = compose([line for line, is_plain in zip(lines, plain) if not is_plain])
    absent = object()
    lines = [
        "++" + line if is_plain and OmegaConf.select(
            base, o.key_or_group, default=absent, throw_on_resolution_failure=False) is absent else line
        for o, line, is_plain in zip(parsed, lines, plain)
    ]
    cfg = compose(lines)
    _check_sweeper_installed(cfg)
    HydraConfig.instance().set_config(cfg)
    try:
        sweep_dir = str(OmegaConf.select(cfg, "hydra.sweep.dir", throw_on_missing=True))
    except Exception as err:
        raise BzConfigError(f"bad interpolation at hydra.sweep.dir: {_first_lines(err)}") from None
    lines = [line for o, line in zip(parsed, lines) if o.key_or_group != "hydra.sweep.dir"]
    return [*lines, f"hydra.sweep.dir={json.dumps(sweep_dir)}"]


#: Sweepers of bz's configs -> (the module they need, the extra of pyproject.toml that installs it).
_SWEEPER_NEEDS = {"hydra_plugins.bz_optuna_sweeper.sweeper.BzOptunaSweeper": ("optuna", "optuna")}


def _check_sweeper_installed(cfg: Any) -> None:
    """Refuse a sweep whose sweeper needs a package that is not installed, naming the extra
    (Hydra would fail with an ImportError traceback once the sweep had started)."""
    from omegaconf import OmegaConf

    target = OmegaConf.select(cfg, "hydra.sweeper._target_", default=None)
    if target not in _SWEEPER_NEEDS:
        return
    module, extra = _SWEEPER_NEEDS[target]
    if not _importable(module):
        choice = OmegaConf.select(cfg, "hydra.runtime.choices.hparams_search", default=None)
        what = f"hparams_search={choice}" if choice else f"hydra.sweeper {target}"
        raise BzConfigError(f"{what}: needs {module}, which is not installed; pip install 'bz-lightning[{extra}]'")


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except ImportError:  # a finder that refuses it
        return False

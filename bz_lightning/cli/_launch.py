"""bz-train's checks before Hydra runs: the command line is composed and validated once
in-process (no torch, no Lightning), so a typo fails in a fraction of a second with a
message that names the key, the value and what is allowed, instead of a traceback or
Hydra's silent acceptance of ``+optimizer.lrr=0.1``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from bz_lightning.errors import BzConfigError

__all__ = ["prepare_argv", "preflight", "exit_with", "OVERLAY_GROUPS"]

# Groups that train.yaml lists as `group: null`: Hydra wants `experiment=x` for them, and
# `+experiment=x` fails ("Multiple values for experiment"); both spellings are accepted.
OVERLAY_GROUPS = ("experiment", "debug", "hparams_search")
# Flags with which Hydra only prints something; nothing to check then.
_INFO_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion")
# Sweeps larger than this are checked on their first jobs only.
_MAX_CHECKED_JOBS = 32


def prepare_argv(argv: list[str], cwd: str | None = None) -> list[str]:
    """Normalise bz-train's command line before Hydra sees it.

    * ``+experiment=x`` -> ``experiment=x`` (and the same for ``debug``, ``hparams_search``);
    * with ``cwd`` holding a ``conf`` directory, add it to Hydra's search path, so a
      project's own groups and experiments are found (``--config-dir`` adds another).
    """
    argv = [arg[1:] if any(arg.startswith(f"+{g}=") for g in OVERLAY_GROUPS) else arg for arg in argv]
    if cwd is not None and os.path.isdir(os.path.join(cwd, "conf")):
        if not any(arg.startswith("hydra.searchpath=") for arg in argv):
            argv.append(f"hydra.searchpath=[file://{os.path.join(os.path.abspath(cwd), 'conf')}]")
    return argv


def exit_with(err: BaseException, prog: str = "bz-train") -> NoReturn:
    """Report a user error on stderr in one message and exit with status 2; with
    ``HYDRA_FULL_ERROR=1`` raise it instead, for the traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    lines = str(err).splitlines() or [type(err).__name__]
    if len(lines) == 1:
        print(f"{prog}: error: {lines[0]}", file=sys.stderr)
    else:
        print(f"{prog}: {len(lines)} config errors:", *(f"  {line}" for line in lines), sep="\n", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for a traceback)", file=sys.stderr)
    sys.exit(2)


def preflight(argv: list[str]) -> None:
    """Compose and validate every job ``argv`` describes, as bz-train would.

    Raises:
        BzConfigError: an unknown group option, key, type, missing value or bad interpolation.
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in _INFO_FLAGS):
        return
    from hydra.core.global_hydra import GlobalHydra

    try:
        _check(args)
    finally:
        GlobalHydra.instance().clear()


def _check(args: Any) -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.errors import HydraException

    from bz_lightning.cli import train as train_module

    search_path = create_config_search_path(f"file://{train_module.CONF_DIR}")
    if args.config_dir is not None:
        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            raise BzConfigError(f"--config-dir {args.config_dir}: no such directory ({config_dir})")
        search_path.prepend("command-line", f"file://{config_dir}", anchor=SearchPathQuery(provider="schema"))
    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
    loader = hydra.config_loader

    parser = OverridesParser.create(config_loader=loader)
    try:
        parsed = parser.parse_overrides(args.overrides)
    except HydraException as err:
        raise BzConfigError(_first_lines(err)) from None

    # The project's ./conf arrives as a hydra.searchpath override; group options include it.
    searchpath = [o for o in args.overrides if o.startswith("hydra.searchpath=")]
    groups: dict[str, list[str]] = {}
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_delete():
            continue
        options = loader.get_group_options(key, config_name="train", overrides=searchpath)
        if not options:
            continue
        groups[key] = options
        for value in _choices(override):
            if value not in options and not (key in OVERLAY_GROUPS and value == "null"):
                from bz_lightning.cli._validate import group_option_error

                raise group_option_error(key, value, options)

    try:
        jobs = BasicSweeper.split_arguments(parsed, None)[0][:_MAX_CHECKED_JOBS]
    except HydraException:  # a sweep type only a sweeper plugin knows (interval, range...)
        jobs = [[o.input_line for o in parsed if not o.is_sweep_override()]]
    for job in jobs or [[]]:
        _check_job(hydra, [_lenient(o, groups) for o in job])


def _check_job(hydra: Any, overrides: list[str]) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from bz_lightning.cli._validate import validate_config

    try:
        cfg = hydra.compose_config("train", overrides, run_mode=RunMode.RUN, with_log_configuration=False)
    except Exception as err:  # Hydra's composition errors: their message is what matters
        raise BzConfigError(_first_lines(err)) from None
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "<output_dir>"
    HydraConfig.instance().set_config(cfg)
    validate_config(cfg)


def _choices(override: Any) -> list[str]:
    if override.is_sweep_override():
        if override.is_choice_sweep():
            return [str(v) for v in override.sweep_string_iterator()]
        return []
    value = override.value()
    if isinstance(value, list):  # metrics=[accuracy,f1_score]
        return [str(v) for v in value]
    return [str(value)]


def _lenient(line: str, groups: dict[str, list[str]]) -> str:
    """``key=value`` -> ``++key=value`` for plain keys, so an unknown key composes and the
    schema check reports it with "did you mean" instead of Hydra's bare refusal."""
    if line.startswith(("+", "~")) or line.startswith("hydra"):
        return line
    key = line.split("=", 1)[0]
    if key.split("@", 1)[0] in groups or "/" in key:
        return line
    return "++" + line


def _first_lines(err: BaseException) -> str:
    text = str(err).split("\nConfig search path", 1)[0].strip()
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())

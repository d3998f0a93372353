"""bz-train's checks before Hydra runs: the command line is composed and validated once
in-process (no torch, no Lightning), so a typo fails in a fraction of a second with a
message that names the key, the value and what is allowed, instead of a traceback or
Hydra's silent acceptance of ``+optimizer.lrr=0.1``. A single run's composed config is then
run as it is (``PreparedRun``), not composed again by ``@hydra.main``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from bz_lightning.cli._constants import CONF_DIR, CONFIG_NAME
from bz_lightning.errors import BzConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["add_project_path", "compose_run", "prepare_argv", "preflight", "exit_with", "is_ddp_child", "multirun_job", "PreparedRun", "OVERLAY_GROUPS", "DDP_JOB_ARGV_ENV"]


def _register_resolvers() -> None:
    """``${bz.pid:}``: the id of the process that first resolves it, which keeps the run and
    sweep directories of two ``bz-train`` started in the same second apart. Cached in the
    config (like Hydra's ``${now:}``), so the jobs of a sweep launched elsewhere (SLURM,
    joblib) see the launching process's id, not their own. Registered on import: every path
    that composes bz-train's config (the preflight, the Hydra app) imports this module."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("bz.pid"):
        OmegaConf.register_new_resolver("bz.pid", lambda: str(os.getpid()), use_cache=True)


_register_resolvers()

# Groups that train.yaml lists as `group: null`: Hydra wants `experiment=x` for them, and
# `+experiment=x` fails ("Multiple values for experiment"); both spellings are accepted.
OVERLAY_GROUPS = ("experiment", "debug", "hparams_search")
# Flags with which Hydra only prints something; nothing to check then.
_INFO_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion")
# Sweeps larger than this are checked on their first jobs only.
_MAX_CHECKED_JOBS = 32

#: Set by a multirun job for the DDP processes Lightning starts: the command line of that
#: one job (JSON list), which the processes run instead of the whole sweep.
DDP_JOB_ARGV_ENV = "BZ_DDP_JOB_ARGV"
# What Lightning's `_hydra_subprocess_cmd` appends to a DDP child's command line.
_DDP_CHILD_MARKER = "hydra.job.name=train_ddp_process_"
# Environment Lightning's subprocess launcher sets in the process that starts the others;
# left behind, the next job of a sweep in this process would wait for processes nobody starts.
_DDP_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Hydra overrides of the sweep that a DDP child, which runs one job, must not repeat.
_SWEEP_ONLY_KEYS = ("hydra.mode", "hydra.run.dir", "hydra.job.name", "hydra.output_subdir")


def add_project_path(cwd: str | None = None) -> None:
    """Let a project's own ``_target_: project_models.Model`` import from the directory bz
    runs in, as ``python train.py`` would, but *after* the installed packages: a stray
    ``sklearn.py`` or ``torch.py`` there must not shadow the real one."""
    cwd = cwd or os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)


def prepare_argv(argv: list[str]) -> list[str]:
    """Normalise bz-train's command line before Hydra sees it.

    * ``+experiment=x`` -> ``experiment=x`` (and the same for ``debug``, ``hparams_search``);
    * ``trainer.KEY=v`` -> ``++trainer.KEY=v`` for a KEY the trainer group does not list:
      every ``lightning.Trainer`` argument may be set without Hydra's ``+``;
    * in a DDP process that Lightning started for one job of a multirun (Lightning re-runs
      the parent's command line, ``-m`` and all, which would start a new sweep in every
      process: Lightning #11300, Hydra #2070), that job's own command line instead.

    A project's ``./conf`` is not added here: Hydra's search path plugin
    ``hydra_plugins.bz_project_conf`` adds it wherever Hydra builds bz-train's search path,
    tab completion included (an override appended here broke ``--cfg job`` and a trailing ``-m``).
    """
    child = _ddp_child_argv(argv, os.environ)
    if child is not None:
        return child
    argv = [arg[1:] if any(arg.startswith(f"+{g}=") for g in OVERLAY_GROUPS) else arg for arg in argv]
    # Any lightning.Trainer argument is a trainer key, as in Lightning: trainer.profiler=simple
    # needs no `+` (the schema check still names an unknown one, with "did you mean").
    return ["++" + arg if _lightning_only_trainer_key(arg) else arg for arg in argv]


def _lightning_only_trainer_key(arg: str) -> bool:
    """``trainer.KEY=v`` where KEY is not one of the keys the trainer group lists."""
    import dataclasses

    from bz_lightning.config import TrainerConfig

    key, sep, _ = arg.partition("=")
    group, _, name = key.partition(".")
    return bool(sep and name) and group == "trainer" and "." not in name and name not in {
        f.name for f in dataclasses.fields(TrainerConfig)}


def is_ddp_child(argv: list[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a DDP process that Lightning started from a Hydra app."""
    return "LOCAL_RANK" in environ and any(arg.startswith(_DDP_CHILD_MARKER) for arg in argv)


def _ddp_child_argv(argv: list[str], environ: Mapping[str, str]) -> list[str] | None:
    job = environ.get(DDP_JOB_ARGV_ENV)
    if job is None or not is_ddp_child(argv, environ):
        return None
    marker = next(arg for arg in argv if arg.startswith(_DDP_CHILD_MARKER))
    return [*json.loads(job), marker, "hydra.output_subdir=null"]


@contextmanager
def multirun_job() -> Iterator[None]:
    """Around one job of a Hydra multirun that may train with DDP.

    Publishes the job's own command line in ``BZ_DDP_JOB_ARGV`` (its overrides, its output
    directory as ``hydra.run.dir``, ``hydra.mode=RUN``) for the processes Lightning starts,
    and afterwards removes what Lightning's launcher left in this process (its environment
    variables, the process group), so the next job of the sweep starts its own. Does
    nothing outside a multirun, or in a process that did not start the others.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or "LOCAL_RANK" in os.environ:
        yield
        return
    sweep_only = [o for o in hydra_cfg.overrides.hydra if o.split("=", 1)[0].lstrip("+~") in _SWEEP_ONLY_KEYS]
    job_argv = [
        *hydra_cfg.overrides.task,
        *(o for o in hydra_cfg.overrides.hydra if o not in sweep_only),
        f"hydra.run.dir={json.dumps(str(hydra_cfg.runtime.output_dir))}",
        "hydra.mode=RUN",
    ]
    saved = {key: os.environ.get(key) for key in (DDP_JOB_ARGV_ENV, *_DDP_LAUNCH_ENV)}
    os.environ[DDP_JOB_ARGV_ENV] = json.dumps(job_argv)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        distributed = sys.modules.get("torch.distributed")
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            distributed.destroy_process_group()


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


def preflight(argv: list[str]) -> PreparedRun | list[str]:
    """Compose and validate every job ``argv`` describes, as bz-train would.

    Returns the run composed, ready to start, when ``argv`` describes a single run (no
    ``-m``, no sweep, no ``--cfg``-style flag, bz-train's own config); otherwise the command
    line for Hydra's own entry point: ``argv`` itself for a flag with which Hydra only prints
    something, and for a sweep ``argv`` with its overrides made to compose as each job does
    (see ``_sweep.sweep_overrides``) and its sweep directory fixed.

    Raises:
        BzConfigError: an unknown group option, key, type, missing value or bad interpolation,
            a value outside what its key allows, an output place that cannot be written,
            or ``--experimental-rerun`` (it unpickles a file).
    """
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if args.experimental_rerun:
        raise BzConfigError(
            f"--experimental-rerun {args.experimental_rerun}: refused: Hydra's rerun unpickles that file, which "
            "runs whatever code it names; run bz-train again with the overrides in the job's .hydra/overrides.yaml"
        )
    if any(getattr(args, flag, None) for flag in _INFO_FLAGS):
        return argv
    from hydra.core.global_hydra import GlobalHydra

    try:
        checked = _check(args)
    finally:
        GlobalHydra.instance().clear()
    if isinstance(checked, PreparedRun):
        return checked
    # Overrides first, then the flags: argparse takes the overrides as one group, so an
    # override after a flag that follows other overrides would be "unrecognized".
    flags = list(argv)
    for override in args.overrides:
        flags.remove(override)
    return [*(checked if checked is not None else args.overrides), *flags]


def compose_run(overrides: list[str], config_dir: str | None = None) -> dict[str, Any]:
    """The config of the one run ``overrides`` describe, composed and validated exactly as
    bz-train composes it (its configs, the project's ``./conf``, ``config_dir``), as plain
    values. For commands that rebuild a run without training it (``bz validate``): the places
    a run writes to are not checked.

    Raises:
        BzConfigError: as for bz-train, and for a sweep (``key=a,b``, ``-m``).
    """
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra

    argv = prepare_argv(list(overrides))
    try:
        args = get_args_parser().parse_args([*(["--config-dir", config_dir] if config_dir else []), *argv])
    except SystemExit:  # argparse has printed its complaint
        raise BzConfigError(f"cannot read the overrides {' '.join(overrides)}") from None
    try:
        prepared = _check(args, writes=False)
    finally:
        GlobalHydra.instance().clear()
    if not isinstance(prepared, PreparedRun) or prepared.values is None:
        raise BzConfigError(f"{' '.join(overrides)}: describes a sweep; name one value per key")
    return prepared.values


@dataclass
class PreparedRun:
    """A single run composed and validated by :func:`preflight`.

    Hydra's ``@hydra.main`` would compose the same config twice more (once to read
    ``hydra.mode``, once to run it); :meth:`run` hands this one to Hydra's ``run_job``
    instead, the same steps as Hydra's ``Hydra.run`` (output directory, logging, the
    ``.hydra`` files, callbacks). bz-train reaches its first step ~0.4 s sooner for it.
    """

    hydra: Any
    config: DictConfig
    #: The config resolved to plain values, as validated (its ``paths.output_dir`` is a
    #: placeholder until ``run_job`` sets the output directory).
    values: dict[str, Any] | None = None

    def run(self, task_function: Callable[[DictConfig], Any]) -> None:
        from hydra._internal.callbacks import Callbacks
        from hydra._internal.utils import run_and_report
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.utils import run_job
        from hydra.types import HydraContext

        def run() -> None:
            callbacks = Callbacks(self.config)
            callbacks.on_run_start(config=self.config, config_name=CONFIG_NAME)
            context = HydraContext(config_loader=self.hydra.config_loader, callbacks=callbacks)
            ret = run_job(hydra_context=context, task_function=task_function, config=self.config,
                          job_dir_key="hydra.run.dir", job_subdir_key=None, configure_logging=True)
            callbacks.on_run_end(config=self.config, config_name=CONFIG_NAME, job_return=ret)
            _ = ret.return_value  # raises the job's exception, as Hydra.run does

        GlobalHydra.instance().initialize(self.hydra)
        try:
            run_and_report(run)
        finally:
            GlobalHydra.instance().clear()


def _check(args: Any, writes: bool = True) -> PreparedRun | list[str] | None:
    """The single run ``args`` describe, composed; or, for a sweep, its overrides as
    Hydra's multirun must get them (``None``: not checked, ``writes`` is false)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    search_path = create_config_search_path(f"file://{CONF_DIR}")
    if args.config_dir is not None:
        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            raise BzConfigError(f"--config-dir {args.config_dir}: no such directory ({config_dir})")
        search_path.prepend("command-line", f"file://{config_dir}", anchor=SearchPathQuery(provider="schema"))
    hydra = Hydra.create_main_hydra2(task_name=CONFIG_NAME, config_search_path=search_path)
    loader = hydra.config_loader

    parser = OverridesParser.create(config_loader=loader)
    try:
        parsed = parser.parse_overrides(args.overrides)
    except HydraException as err:
        raise BzConfigError(_first_lines(err)) from None

    groups: dict[str, list[str]] = {}
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or override.is_delete():
            continue
        options = loader.get_group_options(key, config_name=CONFIG_NAME, overrides=[])
        if not options:
            continue
        groups[key] = options
        for value in _choices(override):
            if value not in options and not (key in OVERLAY_GROUPS and value == "null"):
                from bz_lightning.cli._validate import group_option_error

                raise group_option_error(key, value, options)

    single = not (args.multirun or args.config_name or args.config_path or args.experimental_rerun
                  or any(o.is_sweep_override() for o in parsed))
    if not single and not writes:  # a sweep, where only a single run is wanted
        return None
    if single:
        prepared = _prepare_single(hydra, list(args.overrides), groups, writes)
        if prepared is not None or not writes:
            return prepared
    try:
        jobs = BasicSweeper.split_arguments(parsed, None)[0][:_MAX_CHECKED_JOBS]
    except HydraException:  # a sweep type only a sweeper plugin knows (interval, range...)
        jobs = [[o.input_line for o in parsed if not o.is_sweep_override() and o.input_line]]
    output_key = "hydra.run.dir" if single else "hydra.sweep.dir"
    for job in jobs or [[]]:
        try:
            _check_job(hydra, [_lenient(o, groups) for o in job], output_key)
        except BzConfigError as err:
            if single:
                raise
            raise BzConfigError(f"the sweep's job {' '.join(job)}: {err}") from None
    from bz_lightning.cli._sweep import sweep_overrides

    return sweep_overrides(hydra, parsed, groups)


def _prepare_single(hydra: Any, overrides: list[str], groups: dict[str, list[str]],
                    writes: bool = True) -> PreparedRun | None:
    """The single run ``overrides`` describe, composed as Hydra's run would compose it and
    validated (with the places it writes to when ``writes``); ``None`` when its config asks
    for a multirun (``hydra.mode: MULTIRUN``)."""
    from hydra.types import RunMode
    from omegaconf import read_write

    try:
        # Logging is configured for a run (Hydra's console handler); a command that only
        # rebuilds one keeps its stdout to itself (`bz validate --json`).
        cfg = hydra.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.RUN, with_log_configuration=writes)
    except Exception as err:
        # Composed leniently, an unknown key reaches the schema check, which names it with
        # "did you mean"; what the schema accepts fails with Hydra's own message.
        _check_job(hydra, [_lenient(o, groups) for o in overrides], "hydra.run.dir" if writes else None)
        raise BzConfigError(_first_lines(err)) from None
    if cfg.hydra.mode == RunMode.MULTIRUN:
        return None
    values = _validate_job(cfg, "hydra.run.dir" if writes else None)
    if cfg.hydra.mode is None:  # what Hydra's entry point adds for a run
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
            cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
    return PreparedRun(hydra, cfg, values)


def _check_job(hydra: Any, overrides: list[str], output_key: str | None = "hydra.run.dir") -> None:
    from hydra.types import RunMode

    try:
        cfg = hydra.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.RUN, with_log_configuration=False)
    except Exception as err:  # Hydra's composition errors: their message is what matters
        raise BzConfigError(_first_lines(err)) from None
    _validate_job(cfg, output_key)


def _validate_job(cfg: DictConfig, output_key: str | None = "hydra.run.dir") -> dict[str, Any]:
    """Validate a job's config before Hydra has given it an output directory, and the places
    it will write to: ``output_key`` (the run's or the sweep's directory; ``None``: none are
    checked) and ``paths.runs_dir``. Returns the config as plain values."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from bz_lightning.cli._paths import check_output_places
    from bz_lightning.cli._validate import validate_config

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "<output_dir>"  # run_job sets the real one
    HydraConfig.instance().set_config(cfg)
    values = validate_config(cfg)
    if output_key is None:
        return values
    try:
        output_dir = str(OmegaConf.select(cfg, output_key, throw_on_missing=True))
    except Exception as err:  # an interpolation in hydra.run.dir that does not resolve
        raise BzConfigError(f"bad interpolation at {output_key}: {_first_lines(err)}") from None
    problems = check_output_places([(output_key, output_dir), ("paths.runs_dir", str(values["paths"]["runs_dir"]))])
    if problems:
        raise BzConfigError("\n".join(problems))
    return values


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

"""``bz``: project and checkpoint commands around ``bz-train``.

    bz train [--epochs N] [--device D] [--config FILE]
                                       train the bz project (train.py + JSON config) here
    bz init [DIR] [--layout bz]        write a project that runs with bz-train (or bz train)
    bz validate CKPT [key=value ...] [--split val|test]
                                       evaluate a checkpoint on its data's validation (or test) split
    bz predict CKPT [key=value ...] [--split S] [-o FILE]
                                       write a checkpoint's predictions for a split to a CSV file
    bz report SWEEP_DIR                a sweep's table again, and its report.png (re)drawn
    bz runs [--runs-dir DIR]           the runs stored under paths.runs_dir, finished or not
    bz list-plugins | bz list-metrics  what configs can name
    bz health [--json]                 Python, torch, Lightning, devices, memory, disk

``bz --help`` and the list commands import neither torch nor Lightning; ``bz runs`` and
``bz report`` do not import Lightning.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import types
from typing import Any

from bz_lightning.errors import BzCheckpointError, BzConfigError

__all__ = ["create_parser", "main", "run_init", "run_training", "run_validation", "run_predict", "run_report", "run_runs",
           "run_list_plugins", "run_list_metrics", "run_health"]


def create_parser() -> argparse.ArgumentParser:
    """The ``bz`` argument parser (Hydra runs are ``bz-train``; ``bz train`` runs a bz project)."""
    parser = argparse.ArgumentParser(
        prog="bz",
        description="bz on PyTorch Lightning. Train with `bz-train` (see `bz-train --help`), "
                    "or a bz project (train.py + bz_config.json) with `bz train`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = sub.add_parser("train", help="train the bz project in this directory (train.py + a JSON config)")
    train.add_argument("--epochs", type=int, help="epochs to train (default: the config's)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the config's)")
    train.add_argument("--config", help="the JSON config (default: $BZ_CONFIG, bz_config.json, config.json)")
    train.add_argument("--resume", choices=["auto", "never", "must"], default="auto",
                       help="auto: continue this run's checkpoints (default); never: start fresh; must: fail if "
                            "there is nothing to continue")
    train.set_defaults(func=run_training)
    init = sub.add_parser("init", help="write a small project (conf/, a model, a README) that bz-train runs")
    init.add_argument("directory", nargs="?", default=".", help="where to write it (default: .)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.add_argument("--layout", choices=["hydra", "bz"], default="hydra",
                      help="hydra: a bz-train project (default); bz: bz's layout (train.py, bz_config.json) "
                           "for bz train")
    init.set_defaults(func=run_init)
    validate = sub.add_parser(
        "validate", help="evaluate a checkpoint's weights on the validation (or test) data of the run your config "
                         "describes")
    validate.add_argument("checkpoint", help="a .ckpt written by bz-train (only its tensors are read)")
    validate.add_argument("overrides", nargs="*",
                          help="key=value / group=option, as for bz-train (the run is rebuilt from your config)")
    validate.add_argument("--config-dir", help="another config directory, as bz-train's --config-dir")
    validate.add_argument("--split", default="val",
                          help="val (lightning.Trainer.validate, val_* values; default) or test "
                               "(lightning.Trainer.test, test_* values)")
    validate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    validate.set_defaults(func=run_validation)
    predict = sub.add_parser(
        "predict", help="write a checkpoint's predictions for a split of the run your config describes to a CSV file")
    predict.add_argument("checkpoint", help="a .ckpt written by bz-train (only its tensors are read)")
    predict.add_argument("overrides", nargs="*", help="key=value / group=option, as for bz-train")
    predict.add_argument("--split", default="test", help="train, val or test (default: test)")
    predict.add_argument("-o", "--output", help="the CSV file to write (default: predictions-<split>.csv)")
    predict.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    predict.add_argument("--config-dir", help="another config directory, as bz-train's --config-dir")
    predict.set_defaults(func=run_predict)
    report = sub.add_parser("report", help="print a sweep's summary table and (re)draw its report.png")
    report.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a directory bz-train -m wrote (it holds summary.json)")
    report.set_defaults(func=run_report)
    runs = sub.add_parser("runs", help="list the runs stored under the runs directory, finished or not")
    runs.add_argument("--runs-dir", default="runs", help="bz-train's paths.runs_dir (default: runs)")
    runs.add_argument("--json", action="store_true", help="print as JSON")
    runs.set_defaults(func=run_runs)
    sub.add_parser("list-plugins", help="plugin names for the plugins group").set_defaults(func=run_list_plugins)
    sub.add_parser("list-metrics", help="metric names for the metrics group").set_defaults(func=run_list_metrics)
    health = sub.add_parser("health", help="versions, accelerators, memory and disk")
    health.add_argument("--json", action="store_true", help="print as JSON")
    health.set_defaults(func=run_health)
    return parser


def main(argv: list[str] | None = None) -> None:
    """The ``bz`` console script; exits 2 on a user error, without a traceback."""
    args = create_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (BzConfigError, BzCheckpointError) as err:
        from bz_lightning.cli._launch import exit_with

        exit_with(err, prog=f"bz {args.command}")
    sys.exit(code or 0)


def run_init(args: argparse.Namespace) -> int:
    from bz_lightning.cli._init import write_project

    layout = getattr(args, "layout", "hydra")
    written = write_project(args.directory, force=args.force, layout=layout)
    for path in written:
        print(f"wrote {path}")
    where = "" if os.path.abspath(args.directory) == os.getcwd() else f"cd {args.directory} && "
    print(f"\nnext: {where}{'bz train' if layout == 'bz' else 'bz-train +experiment=example'}")
    return 0


def run_training(args: argparse.Namespace) -> int:
    """``bz train``: train the bz project in the working directory (see ``bz_lightning.cli._project``)."""
    from bz_lightning.cli._project import run_training as run

    return run(args)


def run_list_plugins(args: argparse.Namespace) -> int:
    from bz_lightning.plugins import list_plugins

    print("\n".join(list_plugins()))
    return 0


def run_list_metrics(args: argparse.Namespace) -> int:
    from bz_lightning.metrics import list_available_metrics

    print("\n".join(list_available_metrics()))
    return 0


def run_validation(args: argparse.Namespace) -> int:
    """Rebuild the run from the user's config (as bz-train composes it, with the overrides),
    load only the checkpoint's tensors into it and run ``lightning.Trainer.validate``; a
    stored config that differs is reported on stderr, never built."""
    from bz_lightning.cli._checkpoint import validate_checkpoint
    from bz_lightning.cli._launch import add_project_path

    add_project_path()  # the project's own model classes, named by its conf/
    metrics = validate_checkpoint(args.checkpoint, args.overrides, config_dir=args.config_dir,
                                  note=lambda line: print(f"bz validate: note: {line}", file=sys.stderr),
                                  split=args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        width = max(map(len, metrics), default=0)
        for name, value in metrics.items():
            print(f"{name:<{width}}  {value:.4f}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Rebuild the run as ``bz validate`` does and write ``lightning.Trainer.predict``'s
    outputs for ``--split`` to a CSV file (see ``bz_lightning.cli._predict``)."""
    from bz_lightning.cli._launch import add_project_path
    from bz_lightning.cli._predict import predict_checkpoint

    add_project_path()
    output = args.output or f"predictions-{args.split}.csv"
    path, rows = predict_checkpoint(args.checkpoint, args.overrides, args.split, output, force=args.force,
                                    config_dir=args.config_dir,
                                    note=lambda line: print(f"bz predict: note: {line}", file=sys.stderr))
    print(f"wrote {rows} predictions for the {args.split} split to {path}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Print the sweep's table (its ``summary.json``) and draw ``report.png`` beside it."""
    from bz_lightning.cli.report import load_summary, write_report
    from bz_lightning.cli.summary import format_table

    summary = load_summary(args.sweep_dir)
    if summary.get("summarized_now"):
        print(f"no summary.json in {args.sweep_dir} (the sweep did not end): summarized from its job directories")
    print(format_table(summary))
    print(*write_report(summary, args.sweep_dir), sep="\n")
    return 0


def run_runs(args: argparse.Namespace) -> int:
    """List ``<runs_dir>/<signature>/checkpoints*`` (``bz_lightning.cli.runs``)."""
    from bz_lightning.cli.runs import format_runs, list_runs, runs_as_json

    runs = list_runs(args.runs_dir)
    print(runs_as_json(runs) if args.json else format_runs(runs, args.runs_dir))
    return 0


def run_health(args: argparse.Namespace) -> int:
    report = health_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print("  " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{key}: {value}")
    return 0


def health_report() -> dict[str, Any]:
    """What the machine offers bz: versions, accelerators, memory and disk."""
    import lightning
    import torch

    gib = 1024**3
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bz_lightning": _version("bz-lightning"),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "hydra": _version("hydra-core"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        report["memory_gib"] = round(pages * page_size / gib, 1)
    except (ValueError, OSError, AttributeError):
        report["memory_gib"] = None
    devices = []
    for index in range(torch.cuda.device_count() if report["cuda_available"] else 0):
        free, total = torch.cuda.mem_get_info(index)
        devices.append({
            "index": index, "name": torch.cuda.get_device_name(index),
            "memory_total_gib": round(total / gib, 1), "memory_free_gib": round(free / gib, 1),
        })
    report["cuda_devices"] = devices
    disk = shutil.disk_usage(os.getcwd())
    report["disk_free_gib"] = round(disk.free / gib, 1)
    report["disk_total_gib"] = round(disk.total / gib, 1)
    return report


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


class _CallableModule(types.ModuleType):
    """This module, callable as ``main``: importing it makes ``bz_lightning.cli.main`` (the
    package's ``main()``) name the module, which must stay callable as the spec's ``main()``."""

    def __call__(self, argv: list[str] | None = None) -> None:
        main(argv)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    main()

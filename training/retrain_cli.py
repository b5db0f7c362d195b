"""``medscreen export-training`` (studies with final reads, de-identified, + labels CSV) and ``medscreen retrain``
(a challenger trained on that folder): the retraining loop's commands. The gate that follows is ``medscreen quality``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from service.lifecycle import TASKS
from service.settings import Settings
from service.utc_instant import UTC_INSTANT_HELP, utc_instant_arg
from training.cli import int_at_least

__all__ = ["add_commands", "run_retrain"]


def add_commands(subparsers: Any) -> None:
    export = subparsers.add_parser(
        "export-training",
        help="write studies with final reads as a de-identified DICOM folder + labels CSV (PS3.15 Basic Profile)",
    )
    export.add_argument("out", type=Path, help="export folder (new or empty): OUT/dicom and OUT/labels.csv")
    # A task not among these (chest_xray, pneumonia) had exported nothing and exited 0: an empty labels.csv that a
    # scheduled retrain stopped on, far from the cause.
    export.add_argument("--task", required=True, choices=TASKS, help="the finding to label")
    export.add_argument(
        "--since", type=utc_instant_arg, default=None, help=f"only studies read at or after this ({UTC_INSTANT_HELP})"
    )
    export.add_argument(
        "--crosswalk",
        type=Path,
        default=None,
        help="where the original-to-new identifier map goes (default OUT-crosswalk.csv beside OUT; never inside OUT)",
    )
    export.set_defaults(func=run_export, needs_database=True)

    retrain = subparsers.add_parser(
        "retrain", help="train a challenger on an export-training folder and register it with the challenger alias"
    )
    # The tasks training.retrain.RETRAINABLE_TASKS takes (not imported here: the parser is built for every command).
    # Another task had been read, then refused with exit 1, a gate's code, where a usage error is 2.
    retrain.add_argument("--task", required=True, choices=("chest-xray",), help="chest-xray (whole-film tasks only, for now)")
    retrain.add_argument("--data", type=Path, required=True, help="the folder medscreen export-training wrote")
    retrain.add_argument("--epochs", type=int_at_least(1, "an untrained model would be registered"), default=6)
    retrain.add_argument("--seed", type=int, default=0)
    retrain.add_argument("--out", type=Path, default=None, help="bundle folder (default $MEDSCREEN_HOME/models/<task>-retrained)")
    retrain.set_defaults(func=run_retrain)


def _sessions(settings: Settings) -> Any:
    # The schema is brought up to date by the root before a command with needs_database runs.
    from service.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.resolved_database_url))


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import session_scope
    from service.users_command import cli_actor
    from training.errors import ExportError
    from training.export_training import export_training

    crosswalk = args.crosswalk or args.out.parent / f"{args.out.name}-crosswalk.csv"
    try:
        with session_scope(_sessions(settings)) as session:
            summary = export_training(session, args.task, args.since, args.out, crosswalk, actor=cli_actor())
    except ExportError as exc:
        print(f"refused: {exc}")
        return 1
    print(
        f"{args.task}: {summary.studies} studies ({summary.positives} with the finding, {summary.negatives} without), "
        f"{summary.instances} instances -> {summary.out_dir}; labels {summary.labels_csv}; crosswalk {summary.crosswalk} "
        f"(keep it apart); {len(summary.skipped)} skipped"
    )
    return 0


def run_retrain(args: argparse.Namespace, settings: Settings) -> int:
    from inference.errors import RegistryLost
    from inference.shipped_models import scored_models
    from service.steering import defer_rules_from_settings
    from training.errors import TrainingError, TrainingInputError
    from training.registry import SHIPPED_FIRST
    from training.retrain import retrain_from_export

    out = args.out or settings.home / "models" / f"{args.task}-retrained"
    try:
        result = retrain_from_export(
            args.task, args.data, out, settings.resolved_mlflow_tracking_uri, epochs=args.epochs, seed=args.seed,
            rules=defer_rules_from_settings(settings), scored=scored_models(settings.resolved_database_url),
        )
    except TrainingInputError as exc:
        # A usage error, as the root reports one: one line naming the command, exit 2.
        sys.stderr.write(f"medscreen {getattr(args, 'command', 'retrain')}: {exc}\n")
        return 2
    except TrainingError as exc:
        print(f"refused: {exc}")
        return 1
    except RegistryLost as exc:
        sys.stderr.write(f"medscreen {getattr(args, 'command', 'retrain')}: nothing was trained or registered: {exc}\n")
        return 1
    headline = result["headline"]
    if result["shipped_first"] is not None:
        print(SHIPPED_FIRST.format(name=result["name"], version=result["shipped_first"]))
    print(
        f"{args.task}: version {result['version']} registered as challenger (run {result['run_id']}); held-out AUROC "
        f"{headline['val_auroc']:.3f}; the worker now shadow-scores it, `medscreen quality gate` decides"
    )
    return 0

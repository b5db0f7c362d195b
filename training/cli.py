"""``medscreen train {chest-xray,mammography,ct-chest}`` and ``medscreen models {list,promote,register-shipped}``.

torch, MONAI and MLflow are imported inside the handlers so that ``medscreen --help`` and the
serving process never load them.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.lifecycle import ModelRole
from service.settings import Settings
from service.steering import defer_rules_from_settings

if TYPE_CHECKING:
    from service.model_registry import RegisteredVersion

__all__ = ["add_commands"]

log = logging.getLogger(__name__)

TASK_MODULES = {
    "chest-xray": "training.tasks.chest_xray",
    "mammography": "training.tasks.mammography",
    "ct-chest": "training.tasks.ct_chest",
}
DEFAULT_EPOCHS = {"chest-xray": 4, "mammography": 12, "ct-chest": 12}


def int_at_least(minimum: int, why: str) -> Any:
    """An argparse ``type``: an integer >= ``minimum``, else a usage error saying why (exit 2, one line).
    ``--epochs 0`` had registered an untrained model, ``--limit -5`` had become 2 films per class, ``--folds 1`` a
    traceback, and ``--folds 0`` the task's default."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value} ({why})")
        return value

    return parse


def registry_answers(action: Callable[[argparse.Namespace, Settings], int]) -> Callable[[argparse.Namespace, Settings], int]:
    """``action`` with a registry that cannot be read or written (a corrupt or locked store, a tracking server down)
    as one line on stderr and exit code 1: ``models list``, ``promote`` and ``register-shipped`` had printed MLflow's
    or SQLAlchemy's traceback."""

    @functools.wraps(action)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return action(args, settings)
        except (MlflowException, SQLAlchemyError) as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            # Not the tracking URI: a server's may carry a password.
            sys.stderr.write(f"medscreen models {getattr(args, 'models_command', '')}: the model registry cannot be used: {first_line}\n")
            return 1

    return run


def add_commands(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train an imaging model, export ONNX, register it in MLflow")
    train.add_argument("task", choices=sorted(TASK_MODULES))
    train.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data"),
        help="the shared data folder (default ../shared/data), or a folder written by `medscreen export-training` "
        "(DICOM + labels.csv): then the new version is registered as `challenger` for the evaluation gate",
    )
    train.add_argument(
        "--epochs", type=int_at_least(1, "an untrained model would be registered"), default=None,
        help="training epochs, 1 or more (default per task: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPOCHS.items()) + ")",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--folds", type=int_at_least(2, "cross-validation needs at least 2 folds"), default=None,
        help="patient-level cross-validation folds, 2 or more (default per task: chest-xray and mammography 5; "
        "ct-chest is always leave-one-patient-out, one fold per patient, and refuses any other number)",
    )
    train.add_argument(
        "--limit", type=int_at_least(1, "omit --limit to use all the data"), default=None,
        help="tiny runs: use at most this many images per class (chest-xray, at least 2), patients (mammography) or "
        "training patches per class (ct-chest); 1 or more (default: no limit, all the data)",
    )
    train.add_argument("--out", type=Path, default=None, help="bundle folder (default $MEDSCREEN_HOME/models/<task>; models/<task> to refresh the shipped one)")
    train.add_argument("--cache", type=Path, default=None, help="preprocessed-array cache (default $MEDSCREEN_HOME/cache/training)")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    train.set_defaults(func=run_train)

    models = subparsers.add_parser("models", help="list registered models, promote a version through the gate")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = models_sub.add_parser("list", help="registered models and versions with aliases and validation AUROC")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    promote = models_sub.add_parser(
        "promote", help="make a version champion through quality review's gate (as `medscreen quality promote`), "
        "or point the challenger alias at it",
    )
    promote.add_argument("name", help="registered model name: chest-xray, mammography or ct-chest")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion", choices=[ModelRole.champion.value, ModelRole.challenger.value])
    promote.add_argument("--actor", default=None, help="who promotes (recorded in the audit log); needed for champion")
    promote.add_argument("--force", action="store_true", help="promote despite a failed gate (audited as forced)")
    # The gate reads this site's confirmed studies and audits the promotion.
    promote.set_defaults(func=run_promote, needs_database=lambda args: args.alias == ModelRole.champion.value)
    shipped = models_sub.add_parser("register-shipped", help="register the bundles in models/ when the registry has none")
    shipped.add_argument("--models-dir", type=Path, default=None)
    shipped.add_argument(
        "--update", action="store_true",
        help="after an upgrade: register each shipped bundle no version carries as a new challenger version (promote it by hand)",
    )
    shipped.set_defaults(func=run_register_shipped)


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    """Train, export, register; a --data the task cannot read is a usage error (one line, exit 2), not a traceback."""
    from inference.errors import RegistryLost
    from training.errors import ParityError, TrainingInputError

    try:
        return _train(args, settings)
    except TrainingInputError as exc:
        sys.stderr.write(f"medscreen train: {exc}\n")
        return 2
    except RegistryLost as exc:
        sys.stderr.write(f"medscreen train: nothing was trained or registered: {exc}\n")
        return 1
    except ParityError as exc:
        # The gate did its work: nothing registered, the bundle folder as it was (training.publish.write_bundle).
        sys.stderr.write(f"medscreen train: the ONNX export failed the parity gate ({exc}): nothing was registered and "
                         "the bundle folder is unchanged\n")
        return 1


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from training.task_data import require_data_folder

    require_data_folder(args.data)
    if (args.data / "labels.csv").is_file():
        # A hospital's own confirmed cases: trained the same way, registered as challenger, never champion directly.
        import torch

        from training.errors import TrainingInputError
        from training.retrain_cli import run_retrain

        # An export is split by patient three ways and used whole: --limit and --folds had been ignored without a word,
        # so a tiny trial became a full retrain registered as challenger.
        unused = [f"--{name}" for name in ("limit", "folds") if getattr(args, name) is not None]
        if unused:
            raise TrainingInputError(
                f"--data {args.data} is a `medscreen export-training` folder: a retrain uses all its studies, split by "
                f"patient into fitting, operating-point and validation parts; leave out {' and '.join(unused)} (for the "
                "shared data only)"
            )
        # --threads had been ignored too: torch took every core of the machine that serves the studies.
        torch.set_num_threads(max(1, args.threads))
        args.epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[args.task]
        return run_retrain(args, settings)
    import torch

    from inference.shipped_models import log_onnx_bundle, scored_models
    from training.registry import SHIPPED_FIRST, make_first_champion, register_shipped_first

    torch.set_num_threads(max(1, args.threads))
    tracking_uri = settings.resolved_mlflow_tracking_uri
    rules = defer_rules_from_settings(settings)
    out_dir = args.out or settings.home / "models" / args.task
    cache_dir = args.cache or settings.home / "cache" / "training"
    epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[args.task]
    module = importlib.import_module(TASK_MODULES[args.task])
    extra = {"folds": args.folds} if args.folds is not None else {}
    # The bundle start-up would have registered comes first, read before this run can write over it (--out
    # models/<task>), and into the site's registry only: one that lacks models the site has results of is refused
    # before the run spends its hours (RegistryLost), where the run had registered the shipped bundle and its own
    # version into it.
    shipped = register_shipped_first(tracking_uri, args.task, rules=rules, scored=scored_models(settings.resolved_database_url))
    if shipped is not None:
        print(SHIPPED_FIRST.format(name=shipped.name, version=shipped.version))
    metrics = module.train(args.data, out_dir, tracking_uri, epochs=epochs, seed=args.seed, limit=args.limit, cache_dir=cache_dir, **extra)
    registered = log_onnx_bundle(tracking_uri, out_dir, run_id=metrics["mlflow_run_id"], source="trained", rules=rules)
    headline = metrics["headline"]
    print(
        f"{args.task}: cross-validated AUROC {headline['val_auroc']:.4f} "
        f"(95% CI {headline['val_auroc_ci_low']:.4f}-{headline['val_auroc_ci_high']:.4f}), "
        f"sensitivity {headline['sensitivity']:.3f} / specificity {headline['specificity']:.3f} at {headline['threshold']:.3f}"
    )
    print(f"bundle: {out_dir}; registered {registered.name} version {registered.version} (run {registered.run_id})")
    from service.model_registry import alias_version

    if alias_version(tracking_uri, registered.name, ModelRole.champion) is None:
        # A registry without a champion cannot score anything, and nothing is shipped for this model: the first
        # version takes the alias.
        make_first_champion(tracking_uri, registered.name, registered.version, rules=rules)
        print(f"{registered.name} had no champion: version {registered.version} is now champion")
    else:
        print(f"{registered.name} version {registered.version} holds no alias and scores nothing: shadow-score it with "
              f"`medscreen models promote {registered.name} {registered.version} --alias challenger`; the gate then "
              f"decides (`medscreen quality gate --task {registered.name} --challenger {registered.version}`)")
    return 0


@registry_answers
def run_list(args: argparse.Namespace, settings: Settings) -> int:
    from training.registry import list_versions

    rows = list_versions(settings.resolved_mlflow_tracking_uri)
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return 0
    # The steering right is what a version may do to the worklist: an ML engineer reads it beside the alias.
    header = ("model", "version", "aliases", "val AUROC", "threshold", "steering", "source", "run")
    table = [header, *(_list_cells(row) for row in rows)]
    # Each column as wide as its widest cell, two spaces between: fixed widths had run "retrained" (9 characters, in a
    # 9-wide column) into the run id, and "rare-disease-screener" and "champion,previous-champion" out of line.
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
    right_aligned = {1, 3, 4}  # version, val AUROC, threshold
    for cells in table:
        print("  ".join(
            f"{cell:>{width}}" if i in right_aligned else f"{cell:<{width}}"
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip())
    return 0


def _list_cells(row: RegisteredVersion) -> tuple[str, ...]:
    """One ``models list`` row: a registered version's name, version, aliases, figures, steering right, source, run."""
    val_auroc, threshold = row.float_tag("val_auroc"), row.float_tag("threshold")
    # A steering right is what an imaging version may do to the worklist; the screener moves no study.
    steering = row.steering.value if "task" in row.tags else "-"
    return (
        row.name, row.version, ",".join(row.aliases) or "-", f"{val_auroc:.4f}" if val_auroc is not None else "-",
        f"{threshold:.3f}" if threshold is not None else "-", steering, row.tags.get("source", "") or "-", row.run_id,
    )


@registry_answers
def run_promote(args: argparse.Namespace, settings: Settings) -> int:
    """Champion: the same audited promotion through the gate as ``medscreen quality promote`` (previous-champion
    kept, so ``medscreen quality rollback`` works; challenger alias cleared). It had set the alias on the version's
    training-time AUROC alone, unaudited, with no previous-champion."""
    from quality.errors import RegistryError as QualityRegistryError
    from service.errors import SteeringRefused
    from training.errors import PromotionRefused, RegistryError
    from training.registry import set_challenger

    if args.alias == ModelRole.challenger.value:
        try:
            previous = set_challenger(settings.resolved_mlflow_tracking_uri, args.name, args.version)
        except (PromotionRefused, RegistryError) as exc:
            print(f"refused: {exc}")
            return 1
        print(f"{args.name}: challenger -> version {args.version} (was {previous or 'unset'}); scored in shadow")
        return 0
    if not args.actor:
        print("refused: a champion is promoted through the quality gate and audited: give --actor NAME "
              f"(the same as: medscreen quality promote --task {args.name} --version {args.version} --actor NAME)")
        return 2
    from quality.cli import run_promote as promote_through_quality_gate

    gated = argparse.Namespace(task=args.name, version=args.version, actor=args.actor, force=args.force)
    try:
        return promote_through_quality_gate(gated, settings)
    except (QualityRegistryError, SteeringRefused) as exc:
        print(f"refused: {exc}")
        return 2


@registry_answers
def run_register_shipped(args: argparse.Namespace, settings: Settings) -> int:
    """A bundle that is not the model it describes (``inference.model_contract``) is one line on stderr and exit code
    1: it had been a traceback (protobuf's "Wire format was corrupt" for a truncated model.onnx), and a bundle whose
    ONNX input differed from its bundle.json was registered without a word."""
    from inference.errors import BundleInvalid

    try:
        return _register_shipped(args, settings)
    except BundleInvalid as exc:
        sys.stderr.write(f"medscreen models register-shipped: refused: {exc.reason}\n")
    return 1


def _register_shipped(args: argparse.Namespace, settings: Settings) -> int:
    from inference.shipped_models import SHIPPED_MODELS_DIR, register_shipped_bundles, register_updated_shipped_bundles

    uri, folder = settings.resolved_mlflow_tracking_uri, args.models_dir or SHIPPED_MODELS_DIR
    rules = defer_rules_from_settings(settings)
    if not args.update:
        for item in register_shipped_bundles(uri, folder, rules=rules):
            state = "registered as champion" if item.newly_registered else "already registered"
            print(f"{item.name} version {item.version}: {state}")
        return 0
    for item in register_updated_shipped_bundles(uri, folder, rules=rules):
        if not item.newly_registered:
            print(f"{item.name} version {item.version}: already registered")
        elif item.version == "1":
            print(f"{item.name} version 1: registered as champion")
        else:
            print(f"{item.name} version {item.version}: registered as challenger; once it has scored confirmed studies, "
                  f"promote it through the gate: medscreen quality promote --task {item.name} --version {item.version} "
                  "--actor NAME")
    return 0

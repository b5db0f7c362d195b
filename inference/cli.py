"""Commands of ``inference``: ``medscreen score``, ``medscreen routes test``, ``medscreen backfill``."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from service.settings import Settings

__all__ = ["add_commands"]


def _routes_test(args: argparse.Namespace, settings: Settings) -> int:
    import warnings

    from sqlalchemy import select

    from inference.errors import IngestError, RoutingRulesError
    from inference.offline_score import collect_studies
    from inference.route import load_rules
    from inference.tables import Series, Study
    from service.db import make_engine, make_session_factory

    warnings.filterwarnings("ignore", module="pydicom")
    try:
        rules = load_rules(args.rules)
    except RoutingRulesError as exc:
        sys.stderr.write(f"invalid routing rules: {exc}\n")
        return 2
    sys.stderr.write(f"{args.rules}: {len(rules.rules)} valid rules ({', '.join(r.name for r in rules.rules)})\n")

    studies: dict[str, list[dict[str, str]]] = defaultdict(list)
    refused = 0
    if args.paths:

        def show_refused(path: Path, exc: IngestError) -> None:
            if args.verbose:
                sys.stderr.write(f"{path}: would be refused: {exc.kind}: {exc.reason}\n")

        try:
            found, refused_by_kind = collect_studies(args.paths, progress=False, on_refused=show_refused)
        except FileNotFoundError as exc:  # a usage error, exit code 2 as in `medscreen score` (it had been 1)
            sys.stderr.write(f"medscreen routes test: {exc}\n")
            return 2
        refused = sum(refused_by_kind.values())
        for offline in found:
            studies[offline.study_instance_uid] = list(offline.series.values())
    else:
        session = make_session_factory(make_engine(settings.resolved_database_url))()
        with session:
            for study in session.scalars(select(Study)):
                studies[study.study_instance_uid] = list(
                    session.scalars(select(Series.headers).where(Series.study_id == study.id))
                )
    for study_uid, series in studies.items():
        decision = rules.route(study_uid, 1, series)
        if args.json:
            print(json.dumps({"study_instance_uid": study_uid, "task": decision.task, "rule": decision.rule,
                              "reasons": decision.reasons}))
        elif decision.task:
            print(f"{study_uid}  -> {decision.task}  (rule {decision.rule})")
        else:
            print(f"{study_uid}  -> not applicable: {'; '.join(decision.reasons)}")
    sys.stderr.write(f"{len(studies)} studies routed (dry run, nothing stored); {refused} files would be refused\n")
    return 0


def _registry_unusable(exc: Exception) -> int:
    """A registry that cannot be read (a corrupt or locked store, a tracking server down) or a shipped bundle that
    cannot be registered: one line and exit code 1, where ``score`` had printed MLflow's or SQLAlchemy's traceback."""
    first_line = getattr(exc, "reason", None) or (str(exc).strip().splitlines() or [""])[0]
    # Not the tracking URI: a server's may carry a password.
    sys.stderr.write(f"medscreen score: the model registry cannot be used: {first_line}\n")
    return 1


def _score(args: argparse.Namespace, settings: Settings) -> int:
    import warnings

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from inference.champions import ModelSelector
    from inference.errors import BundleInvalid, RoutingRulesError
    from inference.offline_score import collect_studies, score_offline
    from inference.route import load_rules
    from inference.shipped_models import register_shipped_bundles
    from service.steering import defer_rules_from_settings

    warnings.filterwarnings("ignore")
    try:
        rules = load_rules(args.rules or settings.routes_file)
    except RoutingRulesError as exc:
        sys.stderr.write(f"invalid routing rules: {exc}\n")
        return 2
    settings.home.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_mlflow_tracking_uri
    try:
        # An empty registry gets the shipped models, as on the service's first start, under the site's defer rules.
        register_shipped_bundles(uri, rules=defer_rules_from_settings(settings))
    except (MlflowException, SQLAlchemyError, BundleInvalid) as exc:
        return _registry_unusable(exc)
    try:
        studies, refused = collect_studies(args.paths, progress=not args.quiet)
    except FileNotFoundError as exc:
        sys.stderr.write(f"medscreen score: {exc}\n")
        return 2
    selector = ModelSelector(
        uri, settings.home / "model-cache", intra_op_threads=settings.ort_threads, refresh_s=0,
        defer_rules=defer_rules_from_settings(settings),
    )
    if args.assume_age is not None and not 0 <= args.assume_age <= 130:
        sys.stderr.write(f"medscreen score: --assume-age {args.assume_age} is not an age in years\n")
        return 2
    if args.assume_age is not None:
        sys.stderr.write(f"medscreen score: images without an age are taken as {args.assume_age} y (--assume-age); "
                         "each such study's line says so\n")
    try:
        counts = score_offline(studies, rules, selector, sys.stdout, min_ct_slices=settings.ct_min_slices,
                               progress=not args.quiet, assume_age_years=args.assume_age,
                               max_decoded_mb=settings.max_study_decoded_mb)
    except (MlflowException, SQLAlchemyError) as exc:
        return _registry_unusable(exc)
    summary = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(counts.items())) or "nothing"
    refused_text = ", ".join(f"{v} {k}" for k, v in sorted(refused.items())) or "none"
    sys.stderr.write(f"{len(studies)} studies: {summary}; files refused: {refused_text}\n")
    return 0


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    import logging
    import warnings
    from datetime import date

    from tqdm import tqdm

    from inference.backfill import BackfillReport, PacsStudy, find_studies, run_backfill
    from inference.receive.process import build_ingestor
    from inference.tls import pacs_tls_args
    from service.db import make_session_factory

    if not (settings.pacs_ae_title and settings.pacs_host and settings.pacs_port):
        sys.stderr.write("medscreen backfill: set MEDSCREEN_PACS_AE_TITLE, MEDSCREEN_PACS_HOST and MEDSCREEN_PACS_PORT\n")
        return 2
    try:
        since = date.fromisoformat(args.since)
        until = date.fromisoformat(args.until) if args.until else None
    except ValueError as exc:
        sys.stderr.write(f"medscreen backfill: {exc} (dates are YYYY-MM-DD)\n")
        return 2
    warnings.filterwarnings("ignore", module="pydicom")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    host, port, called_ae = settings.pacs_host, settings.pacs_port, settings.pacs_ae_title
    calling_ae = settings.dicom_ae_title
    try:
        studies = find_studies(host, port, called_ae, calling_ae, since=since, until=until,
                               modalities=args.modality or (), tls_args=pacs_tls_args(settings))
    except ConnectionError as exc:
        sys.stderr.write(f"medscreen backfill: {exc}\n")
        return 1
    sys.stderr.write(f"{len(studies)} studies at {settings.pacs_ae_title} since {since}\n")
    if args.dry_run:
        for study in studies:
            sys.stdout.write(f"{study.study_instance_uid}\t{study.study_date}\t{'/'.join(study.modalities)}\t"
                             f"{study.instances if study.instances is not None else ''}\n")
        return 0
    ingestor = build_ingestor(settings)
    # disable=None: a bar on a terminal only, not redrawn into a log.
    bar = tqdm(total=len(studies), unit="study", disable=True if args.quiet else None, file=sys.stderr)

    def progress(_study: PacsStudy, report: BackfillReport) -> None:
        bar.update(1)
        bar.set_postfix(stored=report.stored, failed=report.failed_studies)

    try:
        report = run_backfill(ingestor, make_session_factory(ingestor.engine), studies, host=host, port=port,
                              called_ae=called_ae, calling_ae=calling_ae, studies_per_minute=args.rate,
                              tls_args=pacs_tls_args(settings), progress=progress)
    finally:
        bar.close()
        ingestor.engine.dispose()
    bar.update(report.skipped_known)
    sys.stderr.write(
        f"{report.found} found, {report.skipped_known} already held (skipped), {report.retrieved_studies} retrieved "
        f"({report.stored} instances stored, {report.duplicates} already held, {report.refused} refused, "
        f"{report.own_output_dropped} of medscreen's own results dropped), {report.failed_studies} failed "
        f"(run again to retry)\n"
    )
    return 1 if report.failed_studies else 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    backfill = subparsers.add_parser(
        "backfill",
        help="pull studies since a date from the PACS (C-FIND, C-GET) into the normal ingest path",
        description="Find studies dated from --since at the PACS (MEDSCREEN_PACS_AE_TITLE/HOST/PORT) by C-FIND and "
        "retrieve each by C-GET into the spool, as if the PACS had sent it: the running service completes, routes "
        "and scores them. Studies medscreen already holds are skipped (never scored twice), medscreen's own "
        "written-back results are dropped, and an interrupted run resumes where it stopped. Progress on stderr.",
    )
    backfill.add_argument("--since", required=True, metavar="YYYY-MM-DD", help="first study date")
    backfill.add_argument("--until", metavar="YYYY-MM-DD", help="last study date (default: today)")
    backfill.add_argument("--modality", action="append", metavar="MOD",
                          help="only studies with this modality (repeat: --modality CT --modality DX)")
    backfill.add_argument("--rate", type=float, default=0.0, metavar="N",
                          help="start at most N study retrievals a minute (default: no limit)")
    backfill.add_argument("--dry-run", action="store_true", help="list the studies found (UID, date, modalities, instances)")
    backfill.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    backfill.set_defaults(func=_backfill, needs_database=True)

    score = subparsers.add_parser(
        "score",
        help="score DICOM files or folders offline (one JSON line per study)",
        description="Group DICOM files into studies by StudyInstanceUID, route them with the routing rules and score "
        "each with its task's champion model (shipped models are registered first if the registry is empty). Prints "
        "one JSON object per study: study_instance_uid, task, score, call, threshold, model_name, model_version, "
        "steering (the version's right: shadow, raise-only, defer), call_note (for a shadow version: not a finding), "
        "mlflow_run_id, localisation, instances, error (null, or why it could not score), assumed (what "
        "--assume-age supplied, or null). Progress bars on stderr when it is a terminal. Scores are decision support, "
        "not diagnoses. Ctrl-C stops it (exit code 130) after the last whole line.",
    )
    score.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)")
    score.add_argument("--rules", type=Path, help="routing rules YAML (default: MEDSCREEN_ROUTES_FILE or the shipped rules)")
    score.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    score.add_argument("--assume-age", type=int, metavar="YEARS",
                       help="age of patients whose headers give none (a research set stripped of demographics); "
                       "without it such studies are out of scope for age-bounded models. Never overrides a stated age")
    score.set_defaults(func=_score)

    routes = subparsers.add_parser("routes", help="routing rules")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True, metavar="SUBCOMMAND")
    test = routes_sub.add_parser(
        "test",
        help="dry-run routing rules on DICOM files or on the stored studies",
        description="Validate a routing rules file and show which task each study would go to. With PATHs "
        "(files or folders of DICOM), studies are grouped by StudyInstanceUID; without, the studies in the "
        "database are used. Nothing is stored.",
    )
    test.add_argument("rules", type=Path, metavar="RULES_FILE", help="routing rules YAML")
    # default=[]: argparse counts a "*" positional without a default as required in its error message ("the
    # following arguments are required: RULES_FILE, PATH"), though it is optional.
    test.add_argument(
        "paths", type=Path, nargs="*", default=[], metavar="PATH", help="DICOM files or folders (none: the stored studies)"
    )
    test.add_argument("--json", action="store_true", help="one JSON object per study")
    test.add_argument("-v", "--verbose", action="store_true", help="also list files that would be refused")
    # With files, nothing under MEDSCREEN_HOME is touched; without, the stored studies are read.
    test.set_defaults(func=_routes_test, needs_home=lambda args: not args.paths)

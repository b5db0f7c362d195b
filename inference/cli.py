"""Commands of ``inference``: ``medscreen routes test`` (dry-run the routing rules)."""

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
        except FileNotFoundError as exc:
            raise SystemExit(f"medscreen routes test: {exc}") from exc
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


def _score(args: argparse.Namespace, settings: Settings) -> int:
    import warnings

    from inference.champions import ModelSelector
    from inference.errors import RoutingRulesError
    from inference.offline_score import collect_studies, score_offline
    from inference.route import load_rules
    from inference.shipped_models import register_shipped_bundles

    warnings.filterwarnings("ignore")
    try:
        rules = load_rules(args.rules or settings.routes_file)
    except RoutingRulesError as exc:
        sys.stderr.write(f"invalid routing rules: {exc}\n")
        return 2
    settings.home.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_mlflow_tracking_uri
    register_shipped_bundles(uri)  # an empty registry gets the shipped models, as on the service's first start
    try:
        studies, refused = collect_studies(args.paths, progress=not args.quiet)
    except FileNotFoundError as exc:
        sys.stderr.write(f"medscreen score: {exc}\n")
        return 2
    selector = ModelSelector(uri, settings.home / "model-cache", intra_op_threads=settings.ort_threads, refresh_s=0)
    counts = score_offline(studies, rules, selector, sys.stdout, min_ct_slices=settings.ct_min_slices,
                           progress=not args.quiet)
    summary = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(counts.items())) or "nothing"
    refused_text = ", ".join(f"{v} {k}" for k, v in sorted(refused.items())) or "none"
    sys.stderr.write(f"{len(studies)} studies: {summary}; files refused: {refused_text}\n")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    score = subparsers.add_parser(
        "score",
        help="score DICOM files or folders offline (one JSON line per study)",
        description="Group DICOM files into studies by StudyInstanceUID, route them with the routing rules and score "
        "each with its task's champion model (shipped models are registered first if the registry is empty). Prints "
        "one JSON object per study: study_instance_uid, task, score, call, threshold, model_name, model_version, "
        "mlflow_run_id, localisation, instances, error (null, or why it could not score). Progress on stderr. "
        "Scores are decision support, not diagnoses.",
    )
    score.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)")
    score.add_argument("--rules", type=Path, help="routing rules YAML (default: MEDSCREEN_ROUTES_FILE or the shipped rules)")
    score.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
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
    test.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="DICOM files or folders")
    test.add_argument("--json", action="store_true", help="one JSON object per study")
    test.add_argument("-v", "--verbose", action="store_true", help="also list files that would be refused")
    # With files, nothing under MEDSCREEN_HOME is touched; without, the stored studies are read.
    test.set_defaults(func=_routes_test, needs_home=lambda args: not args.paths)

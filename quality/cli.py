"""``medscreen quality {report,gate,promote,rollback}`` for the command line: the same logic the quality API
serves."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from quality.errors import RegistryError
from service.lifecycle import TASKS
from service.settings import Settings
from service.utc_instant import UTC_INSTANT_HELP, utc_instant_arg

__all__ = ["add_commands"]


def add_commands(subparsers: Any) -> None:
    quality = subparsers.add_parser("quality", help="quality review of model versions against final reads")
    quality.set_defaults(needs_database=True)
    sub = quality.add_subparsers(dest="quality_command", required=True, metavar="ACTION")
    report = sub.add_parser("report", help="write the HTML quality report of a version (and log it to MLflow)")
    report.add_argument("--task", required=True, choices=TASKS)
    report.add_argument("--version", required=True)
    report.add_argument("--since", type=utc_instant_arg, default=None, help=f"studies that arrived at or after this ({UTC_INSTANT_HELP})")
    report.add_argument("--until", type=utc_instant_arg, default=None, help=f"studies that arrived before this ({UTC_INSTANT_HELP})")
    report.add_argument("--mlflow", action="store_true", help="also log it to the version's MLflow run")
    report.add_argument("out", type=Path)
    report.set_defaults(func=run_report)
    gate = sub.add_parser("gate", help="compare a challenger with the champion on confirmed studies; exit 1 if it fails")
    gate.add_argument("--task", required=True, choices=TASKS)
    gate.add_argument("--challenger", required=True)
    gate.add_argument("--champion", default=None)
    gate.set_defaults(func=run_gate)
    promote = sub.add_parser("promote", help="promote a version to champion through the gate (audited)")
    promote.add_argument("--task", required=True, choices=TASKS)
    promote.add_argument("--version", required=True)
    promote.add_argument("--actor", required=True, help="who promotes (recorded in the audit log)")
    promote.add_argument("--force", action="store_true", help="promote despite a failed gate (audited as forced)")
    promote.set_defaults(func=run_promote)
    rollback = sub.add_parser("rollback", help="point champion back at the version the last promotion replaced (audited)")
    rollback.add_argument("--task", required=True, choices=TASKS)
    rollback.add_argument("--actor", required=True)
    rollback.set_defaults(func=run_rollback)


def _sessions(settings: Settings) -> Any:
    # The schema is brought up to date by the root before a command with needs_database runs.
    from service.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.resolved_database_url))


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    from inference.shipped_models import SHIPPED_MODELS_DIR
    from quality.api import drift_thresholds, gate_rules
    from quality.gate import registry_champion, require_known_version
    from quality.metrics import sensitivity_over_read
    from quality.report import ReportQuery, build_report, format_figure, log_report_to_mlflow, render_report
    from service.db import session_scope, utcnow

    now = utcnow()
    with session_scope(_sessions(settings)) as session:
        # Before anything is written: a version with no results that is not registered (a typo such as "v1") had
        # a report of "0 confirmed studies", exit 0, and with --mlflow a traceback after the file was written.
        try:
            require_known_version(session, settings.resolved_mlflow_tracking_uri, args.task, args.version,
                                  registered=args.mlflow)
        except RegistryError as exc:
            return _cannot(exc)
        report = build_report(
            session,
            ReportQuery(args.task, args.version, args.since, args.until),
            thresholds=drift_thresholds(settings),
            rules=gate_rules(settings),
            models_dir=SHIPPED_MODELS_DIR,
            now=now,
            champion_version=registry_champion(settings.resolved_mlflow_tracking_uri, args.task, args.version),
            tracking_uri=settings.resolved_mlflow_tracking_uri,
        )
    document = render_report(report)
    args.out.write_text(document)
    m = report.metrics
    # As the report prints them: a figure there is none of (one class read, nothing confirmed) had been "nan".
    print(f"{args.task} v{args.version}: {m.n} confirmed studies, sensitivity {format_figure(m.sensitivity.value)}, "
          f"specificity {format_figure(m.specificity.value)}, AUROC {format_figure(m.auroc)}, "
          f"{len(report.drift.alerts)} drift alerts -> {args.out}")
    # The figures above are over scored studies: say what they leave out, as the report does.
    print(report.unscored.sentence().replace("the figures above are", "those figures are"))
    if report.unscored.could_not_score:
        over_read = report.over_read or sensitivity_over_read(m, report.unscored)
        print(f"sensitivity over every read study in intended use (could-not-score positives as missed): "
              f"{format_figure(over_read.value)} ({over_read.successes} of {over_read.total})")
    if args.mlflow:
        artifact = log_report_to_mlflow(settings.resolved_mlflow_tracking_uri, args.task, args.version, document, now)
        print(f"logged to MLflow: {args.task} v{args.version} {artifact}")
    return 0


def run_gate(args: argparse.Namespace, settings: Settings) -> int:
    from quality.api import gate_rules
    from quality.gate import compare_versions, evaluate_gate, registry_champion
    from service.db import session_scope

    # The registry's champion, the version a promotion would replace, unless --champion names another.
    champion = args.champion or registry_champion(settings.resolved_mlflow_tracking_uri, args.task, args.challenger)
    try:
        with session_scope(_sessions(settings)) as session:
            decision = evaluate_gate(compare_versions(session, args.task, args.challenger, champion), gate_rules(settings))
    except RegistryError as exc:
        return _cannot(exc)
    print(json.dumps(decision.to_dict(), indent=2))
    return 0 if decision.passed else 1


def run_promote(args: argparse.Namespace, settings: Settings) -> int:
    from quality.api import gate_rules
    from quality.errors import GateRefused
    from quality.gate import promote_through_gate

    # Not session_scope: a refusal must still commit its audit row.
    session = _sessions(settings)()
    try:
        decision = promote_through_gate(
            session, settings.resolved_mlflow_tracking_uri, args.task, args.version,
            actor=args.actor, rules=gate_rules(settings), force=args.force,
        )
        session.commit()
    except GateRefused as exc:
        session.commit()  # the refusal is audited
        print(f"refused: {exc}")
        return 1
    except RegistryError as exc:
        return _cannot(exc)
    finally:
        session.close()
    print(f"{args.task}: champion -> version {args.version} (gate {'passed' if decision.passed else 'forced'})")
    # A champion recorded shadow moves no study: say so where the promotion is made.
    print(f"{args.task} version {args.version} steering right: {decision.steering}"
          + (" (its results move no study; quality review grants a right: POST /api/quality/steering)"
             if decision.steering == "shadow" else ""))
    return 0


def run_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from quality.gate import rollback_champion
    from service.db import session_scope
    from service.steering import defer_rules_from_settings

    try:
        with session_scope(_sessions(settings)) as session:
            previous, current = rollback_champion(
                session, settings.resolved_mlflow_tracking_uri, args.task, actor=args.actor,
                rules=defer_rules_from_settings(settings),
            )
    except RegistryError as exc:
        return _cannot(exc)
    if previous == current:
        print(f"{args.task}: champion is already v{current}, the version the last promotion replaced: nothing to roll "
              "back (a version a rollback withdrew comes back only through `medscreen quality promote`, which runs the gate)")
        return 0
    print(f"{args.task}: champion {previous} -> {current}")
    return 0


def _cannot(exc: Exception) -> int:
    """What cannot be evaluated or done at all (no champion results, a version not registered, nothing to roll back
    to): one line and exit code 2, apart from a gate that refused (1); these had been tracebacks with exit code 1."""
    sys.stderr.write(f"cannot: {exc}\n")
    return 2

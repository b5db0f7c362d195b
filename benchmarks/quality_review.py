"""Quality review at a hospital's scale: time to pair results with final reads, compute the figures with CIs,
subgroups and drift, render the report, and run the gate, for N confirmed studies scored by a champion and a
shadow challenger (SQLite, simulated scores whose AUROC is known).

    .venv/bin/python -m benchmarks.quality_review [--studies 5000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from medscreen.schema import migrate_all
from quality.drift import DriftThresholds
from quality.gate import GateRules, compare_versions, evaluate_gate
from quality.metrics import compute_metrics, load_paired_cases, subgroup_metrics
from quality.report import ReportQuery, build_report, render_report
from service.db import make_engine, make_session_factory, session_scope
from tests.quality.quality_rows import add_final_read, add_result, add_study

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def seed(factory, n: int, rng: np.random.Generator) -> None:
    with session_scope(factory) as session:
        for i in range(n):
            truth = rng.random() < 0.3
            # Champion: scores separate the classes (AUROC about 0.92); challenger slightly better.
            champion = float(1 / (1 + np.exp(-(rng.normal(2.0 if truth else -0.2, 1.0)))))
            challenger = float(1 / (1 + np.exp(-(rng.normal(2.3 if truth else -0.2, 1.0)))))
            arrived = T0 + timedelta(minutes=i * 10)
            study = add_study(
                session,
                arrived=arrived,
                manufacturer=("GE", "Siemens", "Philips")[i % 3],
                station=f"CR{i % 5}",
                sex="FM"[i % 2],
                birth_date=f"{1940 + i % 80}0101",
            )
            add_result(session, study, score=champion, at=arrived + timedelta(minutes=1))
            add_result(session, study, score=challenger, role="challenger", model_version="4", at=arrived + timedelta(minutes=1))
            add_final_read(session, study, truth, read_at=arrived + timedelta(hours=float(rng.uniform(0.5, 24))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=5000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'q.db'}"
        migrate_all(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        started = time.perf_counter()
        seed(factory, args.studies, rng)
        print(f"seeded {args.studies} confirmed studies (champion + challenger results) in {time.perf_counter() - started:.1f} s")
        with session_scope(factory) as session:
            t = time.perf_counter()
            cases = load_paired_cases(session, task="chest-xray", model_version="3")
            t_load = time.perf_counter() - t
            t = time.perf_counter()
            m = compute_metrics(cases)
            t_metrics = time.perf_counter() - t
            t = time.perf_counter()
            subgroup_metrics(cases)
            t_sub = time.perf_counter() - t
            t = time.perf_counter()
            report = build_report(
                session, ReportQuery("chest-xray", "3"), thresholds=DriftThresholds(), rules=GateRules(),
                models_dir=Path(__file__).resolve().parents[1] / "models", now=datetime.now(UTC),
            )
            html = render_report(report)
            t_report = time.perf_counter() - t
            t = time.perf_counter()
            decision = evaluate_gate(compare_versions(session, "chest-xray", "4"), GateRules())
            t_gate = time.perf_counter() - t
        engine.dispose()
    c = decision.comparison
    assert c is not None, decision.reasons
    print(f"pair results with final reads: {t_load:.2f} s ({len(cases)} cases)")
    print(f"metrics with 1000-round bootstrap CI: {t_metrics:.2f} s; subgroups (4 keys): {t_sub:.2f} s")
    print(f"full report (metrics, subgroups, weekly drift, comparison) + HTML ({len(html) / 1024:.0f} KiB): {t_report:.2f} s")
    print(f"champion vs challenger + gate: {t_gate:.2f} s")
    print(
        f"champion v3: sensitivity {m.sensitivity.value:.3f} ({m.sensitivity.ci_low:.3f}-{m.sensitivity.ci_high:.3f}), "
        f"specificity {m.specificity.value:.3f}, AUROC {m.auroc:.3f} ({m.auroc_ci_low:.3f}-{m.auroc_ci_high:.3f}), "
        f"Brier {m.brier:.3f}, flag rate {m.flag_rate.value:.3f}"
    )
    print(
        f"challenger v4: sensitivity {c.challenger.sensitivity.value:.3f}, AUROC {c.challenger.auroc:.3f}; "
        f"discordant positives {c.positives_champion_only}/{c.positives_challenger_only}, "
        f"McNemar p {c.sensitivity_drop_p:.3g}; discordant negatives {c.negatives_challenger_only}/{c.negatives_champion_only}, "
        f"McNemar p {c.specificity_drop_p:.3g}; gate {'passed' if decision.passed else 'failed: ' + '; '.join(decision.reasons)}"
    )
    print(f"drift alerts: {len(report.drift.alerts)} over {len(report.drift.weeks)} weeks (reference: {report.drift.reference})")
    point = report.operating_point
    if point is not None and point.threshold is not None and point.sensitivity is not None and point.specificity is not None:
        print(
            f"operating point at this site (sensitivity >= {point.min_sensitivity}): threshold {point.threshold:.3f} "
            f"(the version's {point.shipped_threshold}); out of fold sensitivity {point.sensitivity.value:.3f} "
            f"({point.sensitivity.ci_low:.3f}-{point.sensitivity.ci_high:.3f}), specificity {point.specificity.value:.3f} "
            f"({point.specificity.ci_low:.3f}-{point.specificity.ci_high:.3f})"
        )


if __name__ == "__main__":
    main()

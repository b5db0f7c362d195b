"""The quality report of one model version: figures, subgroups, drift and the champion comparison as one HTML
document with inline SVG plots (no matplotlib, no scripts, nothing fetched), for the page and for download,
and logged to MLflow against the model version.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inference.tables import ScoreResult
from quality.drift import (
    DriftReport,
    DriftThresholds,
    WeekDrift,
    header_drift,
    score_drift,
    validation_score_distribution,
    version_validation_distribution,
)
from quality.gate import GateDecision, GateRules, compare_versions, evaluate_gate
from quality.metrics import (
    Proportion,
    QualityMetrics,
    UnscoredReads,
    compute_metrics,
    load_paired_cases,
    roc_points,
    sensitivity_over_read,
    subgroup_metrics,
)
from quality.operating_point import SiteOperatingPoint, site_operating_point
from quality.statistics import wilson_interval
from service.lifecycle import ModelRole, StudyStatus

__all__ = ["ReportQuery", "QualityReport", "build_report", "render_report", "list_versions_in_service", "log_report_to_mlflow",
           "format_figure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportQuery:
    task: str
    model_version: str
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class QualityReport:
    query: ReportQuery
    metrics: QualityMetrics
    subgroups: dict[str, dict[str, QualityMetrics]]
    roc: list[tuple[float, float]]
    drift: DriftReport
    headers: dict[str, list[dict[str, Any]]]
    gate: GateDecision | None
    created_at: datetime
    operating_point: SiteOperatingPoint | None = None
    # Read studies the version left unscored in the period: stated next to the figures, which leave them out.
    unscored: UnscoredReads = UnscoredReads()
    # Sensitivity over every read study in intended use (could-not-score positives as missed), over patients.
    over_read: Proportion | None = None


def list_versions_in_service(session: Session) -> list[dict[str, Any]]:
    """Every (task, version, role) with scored results, newest first: the page's filter choices."""
    rows = session.execute(
        select(
            ScoreResult.task,
            ScoreResult.model_version,
            ScoreResult.role,
            func.count(),
            func.max(ScoreResult.created_at),
        )
        .where(ScoreResult.outcome == StudyStatus.scored)
        .group_by(ScoreResult.task, ScoreResult.model_version, ScoreResult.role)
    ).all()
    out = [{"task": t, "version": v, "role": r, "results": n, "last": last} for t, v, r, n, last in rows]
    out.sort(key=lambda row: (row["task"], row["last"]), reverse=True)
    return out


def build_report(
    session: Session,
    query: ReportQuery,
    *,
    thresholds: DriftThresholds,
    rules: GateRules,
    models_dir: Path,
    now: datetime,
    champion_version: str | None = None,
    tracking_uri: str | None = None,
) -> QualityReport:
    """``champion_version``: the version the comparison (for a version with challenger results) is with, the
    registry's champion (``registry_champion``) as the gate has it; None: the version of the latest champion results.
    ``tracking_uri``: the registry whose record of the version names its bundle, whose validation scores are the
    score drift's reference (``version_validation_distribution``); None: the shipped bundle's in ``models_dir``."""
    cases = load_paired_cases(
        session, task=query.task, model_version=query.model_version, since=query.since, until=query.until
    )
    drift = score_drift(
        session,
        query.task,
        query.model_version,
        thresholds,
        reference=(
            validation_score_distribution(models_dir, query.task) if tracking_uri is None
            else version_validation_distribution(tracking_uri, models_dir, query.task, query.model_version)
        ),
        since=query.since,
        until=query.until,
    )
    headers, header_alerts = header_drift(
        session, query.task, thresholds, model_version=query.model_version, since=query.since, until=query.until
    )
    drift.alerts.extend(header_alerts)
    roles = {c.role for c in cases}
    gate = None
    if ModelRole.challenger in roles:
        try:
            gate = evaluate_gate(compare_versions(session, query.task, query.model_version, champion_version), rules)
        except Exception as exc:  # noqa: BLE001 - a missing champion leaves the comparison out, not the report
            log.info("no comparison for %s v%s: %s", query.task, query.model_version, exc)
    metrics = compute_metrics(cases)
    unscored = cases.unscored_of(query.task, query.model_version)
    return QualityReport(
        query=query,
        metrics=metrics,
        subgroups=subgroup_metrics(cases),
        roc=roc_points(cases),
        drift=drift,
        headers=headers,
        gate=gate,
        created_at=now,
        operating_point=site_operating_point(cases),
        unscored=unscored,
        over_read=sensitivity_over_read(metrics, unscored, cases),
    )


# --- rendering ---------------------------------------------------------------------------------------


def format_figure(value: float | None, digits: int = 3) -> str:
    """A figure as the report, the page and the CLI print it: "n/a" where there is none."""
    if value is None or value != value:  # NaN: one class only, or nothing to count
        return "n/a"
    return f"{value:.{digits}f}"


# Series are told apart by more than their colour (WCAG 1.4.1): each has its own marker and dash, and the legend
# draws both beside its label. The version's and the site's operating points had been dots of the same size in red
# and green, and each legend only its labels in the series' colours: a red-green colour-blind reviewer could not
# tell which point was the site's threshold, nor which drift line was the PSI and which the flag rate.
_MARKERS = ("circle", "square", "diamond")
_DASHES = ("", "6 3", "2 2")


def _marker(kind: str, x: float, y: float, radius: float, colour: str) -> str:
    if kind == "square":
        side = radius * 1.8
        return f'<rect x="{x - side / 2:.1f}" y="{y - side / 2:.1f}" width="{side:.1f}" height="{side:.1f}" fill="{colour}"/>'
    if kind == "diamond":
        d = radius * 1.4
        return f'<polygon points="{x:.1f},{y - d:.1f} {x + d:.1f},{y:.1f} {x:.1f},{y + d:.1f} {x - d:.1f},{y:.1f}" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{colour}"/>'


def _svg_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]], str]],
    *,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
    diagonal: bool = False,
    x_ticks: Sequence[str] | None = None,
    legend_bottom_right: bool = False,
) -> str:
    """A small line chart as inline SVG: axes, optional diagonal, one polyline with markers per series (the legend
    at the top left, or the bottom right where a ROC curve leaves room)."""
    width, height, left, bottom, top, right = 360, 300, 48, 40, 24, 12
    pw, ph = width - left - right, height - top - bottom
    (x0, x1), (y0, y1) = x_range, y_range
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" class="chart">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
    ]
    for i in range(5):
        fy = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{left - 4}" y="{sy(fy) + 4:.1f}" text-anchor="end" font-size="9">{fy:.2g}</text>')
        if x_ticks is None:
            fx = x0 + (x1 - x0) * i / 4
            parts.append(f'<text x="{sx(fx):.1f}" y="{top + ph + 12}" text-anchor="middle" font-size="9">{fx:.2g}</text>')
    for i, label in enumerate(x_ticks or []):
        parts.append(
            f'<text x="{sx(i):.1f}" y="{top + ph + 12}" text-anchor="middle" font-size="8">{html.escape(label[5:])}</text>'
        )
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" font-size="10">{html.escape(x_label)}</text>')
    parts.append(
        f'<text x="12" y="{top + ph / 2}" text-anchor="middle" font-size="10" '
        f'transform="rotate(-90 12 {top + ph / 2})">{html.escape(y_label)}</text>'
    )
    if diagonal:
        parts.append(f'<line x1="{sx(x0)}" y1="{sy(y0)}" x2="{sx(x1)}" y2="{sy(y1)}" stroke="#bbb" stroke-dasharray="4 3"/>')
    for i, (label, points, colour) in enumerate(series):
        if not points:
            continue
        marker, dash = _MARKERS[i % len(_MARKERS)], _DASHES[i % len(_DASHES)]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dashed} points="{coords}"/>')
        if len(points) <= 30:
            radius = 5 if len(points) == 1 else 2.5  # a lone operating point must stand out on the curve
            parts.extend(_marker(marker, sx(x), sy(y), radius, colour) for x, y in points)
        # The legend's key (a piece of the line with the marker on it) before the label, or after it at the right.
        key_y = top + ph - 8 - 12 * (len(series) - 1 - i) if legend_bottom_right else top + 14 + 12 * i
        key_x = left + pw - 26 if legend_bottom_right else left + 8
        parts.append(
            f'<line x1="{key_x}" y1="{key_y - 3.5}" x2="{key_x + 18}" y2="{key_y - 3.5}" stroke="{colour}" '
            f'stroke-width="1.8"{dashed}/>'
        )
        parts.append(_marker(marker, key_x + 9, key_y - 3.5, 3.5 if len(points) == 1 else 2.5, colour))
        if legend_bottom_right:
            legend = f'x="{left + pw - 30}" y="{key_y}" text-anchor="end"'
        else:
            legend = f'x="{left + 30}" y="{key_y}"'
        parts.append(f'<text {legend} font-size="10" fill="{colour}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _metrics_rows(name: str, m: QualityMetrics) -> str:
    def prop(p: Any) -> str:
        return f"{format_figure(p.value)} ({format_figure(p.ci_low)}-{format_figure(p.ci_high)})"

    return (
        f"<tr><th>{html.escape(name)}</th><td>{m.n}</td><td>{m.n_patients}</td><td>{m.n_positive}</td><td>{prop(m.sensitivity)}</td>"
        f"<td>{prop(m.specificity)}</td><td>{prop(m.ppv)}</td><td>{prop(m.npv)}</td>"
        f"<td>{format_figure(m.auroc)} ({format_figure(m.auroc_ci_low)}-{format_figure(m.auroc_ci_high)})</td>"
        f"<td>{format_figure(m.brier)} ({format_figure(m.brier_ci_low)}-{format_figure(m.brier_ci_high)})</td><td>{prop(m.flag_rate)}</td></tr>"
    )


def _week_flag_rate(week: WeekDrift) -> str:
    low, high = wilson_interval(week.flagged, week.n)
    return f"{format_figure(week.flag_rate)} ({format_figure(low)}-{format_figure(high)})"


_TABLE_HEAD = (
    "<tr><th></th><th>n</th><th>patients</th><th>positive</th><th>sensitivity (95% CI)</th><th>specificity</th><th>PPV</th>"
    "<th>NPV</th><th>AUROC</th><th>Brier (bootstrap 95% CI)</th><th>flag rate (95% CI)</th></tr>"
)

_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.2em}"
    "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}th:first-child{text-align:left}"
    ".alert{color:#a00}.pass{color:#060}.fail{color:#a00}.chart{margin-right:1em}"
)


def _roc_series(report: QualityReport) -> list[tuple[str, Sequence[tuple[float, float]], str]]:
    """The site's ROC curve with the version's operating point and, when there is one, the site's."""
    m, point = report.metrics, report.operating_point
    series: list[tuple[str, Sequence[tuple[float, float]], str]] = [(f"AUROC {format_figure(m.auroc)}", report.roc, "#1f5fa8")]
    if m.sensitivity.total and m.specificity.total:
        threshold = format_figure(point.shipped_threshold) if point is not None else "the version's"
        series.append((f"version's threshold {threshold}", [(1 - m.specificity.value, m.sensitivity.value)], "#c0392b"))
    if point is not None and point.threshold is not None and point.apparent is not None:
        series.append((f"site threshold {format_figure(point.threshold)}", [point.apparent], "#237523"))
    return series


def _operating_point(point: SiteOperatingPoint | None, m: QualityMetrics) -> list[str]:
    if point is None:
        return []
    out = ["<h3>Operating point at this site</h3><p id=\"operating-point\">"]
    if point.threshold is None or point.sensitivity is None or point.specificity is None:
        out.append(f"No threshold suggested: {html.escape(point.reason)}.</p>")
        return out

    def prop(p: Proportion) -> str:
        return f"{format_figure(p.value)} ({format_figure(p.ci_low)}-{format_figure(p.ci_high)})"

    out.append(
        f"Holding sensitivity at or above {point.min_sensitivity:.2f} on these {point.n} confirmed studies "
        f"({point.n_patients} patients) needs a threshold "
        f"of {format_figure(point.threshold)} (the version's: {format_figure(point.shipped_threshold)}, where sensitivity is {prop(m.sensitivity)} "
        f"and specificity {prop(m.specificity)}). Chosen on the other folds and applied to each held-out fold ({point.folds} "
        f"folds, each patient's studies in one), such a threshold gave sensitivity {prop(point.sensitivity)} and specificity {prop(point.specificity)}. "
        f"{html.escape(point.reason.capitalize())}.</p>"
    )
    return out


def _unscored(unscored: UnscoredReads, m: QualityMetrics, over_read: Proportion | None = None) -> str:
    """The read studies the figures leave out, and sensitivity with the could-not-score positives counted missed."""
    text = html.escape(unscored.sentence())
    if not unscored.n:
        return f'<p id="unscored">{text}</p>'
    if unscored.could_not_score:
        over_read = over_read or sensitivity_over_read(m, unscored)
        missed = "positive counts" if unscored.could_not_score_positive == 1 else "positives count"
        text += (
            f" Sensitivity over every read study in intended use, where the {unscored.could_not_score_positive} "
            f"could-not-score {missed} as missed: {format_figure(over_read.value)} ({format_figure(over_read.ci_low)}-"
            f"{format_figure(over_read.ci_high)}), {over_read.successes} of {over_read.total}; {unscored.could_not_score} of "
            f"{m.n + unscored.could_not_score} read studies in intended use could not be scored "
            f"({unscored.share_could_not_score(m.n):.1%})."
        )
    if unscored.out_of_scope:
        text += " Studies outside the version's intended use are not its to find: counted here, in no figure."
    return f'<p class="alert" id="unscored">{text}</p>'


def _clustered(m: QualityMetrics) -> str:
    return "; a patient's studies are not independent, so the intervals are over patients" if m.n_patients < m.n else ""


def _midnight(moment: datetime) -> bool:
    return moment.utcoffset() in (None, timedelta(0)) and moment.time() == time(0)


def _period(since: datetime | None, until: datetime | None) -> str:
    """The period as the UTC days it covers, both included. ``until`` is exclusive, so the midnight that ends a
    day (what the page sends for its "To" date) is that day; a bound with a time of day is stated with it, in UTC
    (a bound with an offset had been printed in its own zone and called UTC)."""
    since = since.astimezone(UTC) if since is not None and since.tzinfo is not None else since
    until = until.astimezone(UTC) if until is not None and until.tzinfo is not None else until
    start = "start" if since is None else str(since.date()) if _midnight(since) else f"{since:%Y-%m-%d %H:%M} UTC"
    if until is None:
        end = "now"
    elif _midnight(until):
        end = str((until - timedelta(days=1)).date())
    else:
        end = f"before {until:%Y-%m-%d %H:%M} UTC"
    return f"{start} to {end}" + (" (UTC days, both included)" if until is not None and _midnight(until) else "")


def render_report(report: QualityReport, *, document: bool = True) -> str:
    """The report as HTML: a full standalone document for download, or the body for the quality page."""
    q = report.query
    m = report.metrics
    period = _period(q.since, q.until)
    out = [
        f'<section id="quality-report" data-task="{html.escape(q.task)}" data-version="{html.escape(q.model_version)}">',
        f"<h2>{html.escape(q.task)} version {html.escape(q.model_version)}</h2>",
        f"<p>Period {period}; {m.n} scored studies confirmed by a final read ({m.n_positive} with the finding). "
        f"They are of {m.n_patients} patients ({m.n_patients_positive} with the finding){_clustered(m)}. "
        f"Generated {report.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC. Decision support only: figures compare the "
        "model with radiologists' final reads, not with pathology.</p>",
        "<h3>Against final reads</h3><table class=\"metrics\">",
        _TABLE_HEAD,
        _metrics_rows("all", m),
        "</table>",
        _unscored(report.unscored, m, report.over_read),
        f"<p>Confusion: TP {m.tp}, FP {m.fp}, TN {m.tn}, FN {m.fn}. ECE {format_figure(m.ece)}. Median hours from arrival to "
        f"final read: all {format_figure(m.median_hours_to_read_all, 2)}, with the finding {format_figure(m.median_hours_to_read_positive, 2)}.</p>",
        *_operating_point(report.operating_point, m),
        "<div class=\"plots\">",
        _svg_chart("ROC", _roc_series(report), x_label="1 - specificity", y_label="sensitivity", diagonal=True, legend_bottom_right=True),
        _svg_chart(
            "Calibration",
            [(f"Brier {format_figure(m.brier)}", [(r["mean_score"], r["observed"]) for r in m.reliability], "#b35a00")],
            x_label="mean score",
            y_label="observed rate",
            diagonal=True,
        ),
    ]
    weeks = report.drift.weeks
    if weeks:
        psi_points = [(i, w.psi) for i, w in enumerate(weeks) if w.psi is not None]
        top = max([0.3] + [p for _, p in psi_points])
        out.append(
            _svg_chart(
                "Drift by week",
                [
                    (f"score PSI vs {report.drift.reference}", psi_points, "#7a1fa8"),
                    ("flag rate", [(i, w.flag_rate) for i, w in enumerate(weeks)], "#237523"),
                ],
                x_label="week",
                y_label="PSI / flag rate",
                x_range=(0, max(len(weeks) - 1, 1)),
                y_range=(0.0, max(top, 1.0)),
                x_ticks=[w.week for w in weeks],
            )
        )
    out.append("</div>")
    out.append("<h3>Subgroups</h3>")
    for key, groups in report.subgroups.items():
        out.append(f"<h4>{html.escape(key.replace('_', ' '))}</h4><table class=\"metrics\">{_TABLE_HEAD}")
        out.extend(_metrics_rows(name, g) for name, g in groups.items())
        out.append("</table>")
    out.append(
        f"<h3>Drift</h3><p class=\"note\">Weeks with fewer than {report.drift.min_week_n} scored studies raise no alert: "
        "their PSI is large by chance. The flag rate (and each header) is compared with the version's first weeks in "
        f"service, whatever the period: {report.drift.baseline_n} scored studies, flag rate "
        f"{format_figure(report.drift.reference_flag_rate)}; a baseline of fewer than {report.drift.min_baseline_n} raises no "
        "alert.</p>"
        + (f'<p class="alert" id="baseline-note">{html.escape(report.drift.baseline_note.capitalize())}.</p>'
           if report.drift.baseline_note else "")
        + "<table><tr><th>week</th><th>scored</th><th>flag rate (95% CI)</th><th>score PSI</th></tr>"
    )
    out.extend(
        f"<tr><th>{w.week}</th><td>{w.n}</td><td>{_week_flag_rate(w)}</td><td>{format_figure(w.psi)}</td></tr>" for w in weeks
    )
    out.append("</table>")
    for name, rows in report.headers.items():
        base = rows[0]["baseline_n"] if rows else 0
        small = "; baseline too small: no alert" if base < report.drift.min_baseline_n else ""
        out.append(
            f"<h4>header: {html.escape(name)} (baseline {base} studies{small})</h4>"
            "<table><tr><th>week</th><th>n</th><th>summary</th><th>PSI</th></tr>"
        )
        out.extend(
            f"<tr><th>{r['week']}</th><td>{r['n']}</td><td>{html.escape(str(r['summary']))}</td><td>{format_figure(r['psi'])}</td></tr>"
            for r in rows
        )
        out.append("</table>")
    alerts = report.drift.alerts
    out.append(f"<h3>Alerts ({len(alerts)})</h3><ul class=\"alerts\">")
    out.extend(f'<li class="alert">{a.week}: {html.escape(a.detail)} (threshold {a.threshold})</li>' for a in alerts)
    out.append("</ul>")
    if report.gate is not None and report.gate.comparison is not None:
        c = report.gate.comparison
        verdict = "passes" if report.gate.passed else "fails"
        out.append(
            f"<h3>Challenger v{html.escape(c.challenger_version)} vs champion v{html.escape(c.champion_version)}: "
            "all confirmed studies, whatever the period</h3>"
            # The gate judges the whole history (as /compare, `quality gate` and promotion do), so its table
            # does too; it had stood under the period's heading unlabelled, with other figures than the rows above.
            f"<p class=\"note\" id=\"comparison-period\">Every study both versions scored and a radiologist read, "
            f"not only the period {period}: the figures the gate decides on.</p>"
            f"<table class=\"metrics\">{_TABLE_HEAD}{_metrics_rows('champion', c.champion)}"
            f"{_metrics_rows('challenger', c.challenger)}</table>"
            f"<p id=\"comparison-unscored\">Left out of the pairs: champion: {html.escape(c.champion_unscored.sentence())} "
            f"Challenger: {html.escape(c.challenger_unscored.sentence())}</p>"
            f"<p id=\"comparison-trained-on\">{html.escape(c.trained_on_note)}</p>"
            f"<p class=\"{'pass' if report.gate.passed else 'fail'}\" id=\"gate\">The challenger {verdict} the gate on "
            f"{c.n_paired} paired studies of {c.n_patients} patients.</p>"
        )
        out.extend(
            f"<p class=\"note\">{d.figure.capitalize()} drop against the champion {format_figure(d.value)} ({d.confidence:.0%} interval "
            f"{format_figure(d.ci_low)} to {format_figure(d.ci_high)}, {d.studies} studies of {d.patients} patients): "
            f"{'below' if d.non_inferior else 'not below'} the margin of {d.margin:.2f} its upper bound must stay under.</p>"
            for d in report.gate.drops
        )
        out.append("<ul>")
        out.extend(f"<li>{html.escape(reason)}</li>" for reason in report.gate.reasons)
        out.append("</ul>")
    out.append("</section>")
    body = "\n".join(out)
    if not document:
        return body
    title = f"medscreen quality report: {q.task} v{q.model_version}"
    return (
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>"
    )


def log_report_to_mlflow(tracking_uri: str, task: str, version: str, document: str, now: datetime) -> str:
    """Attach the report to the model version's run (registered model name = task); returns the artifact path."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    model_version = client.get_model_version(task, version)
    if not model_version.run_id:
        raise ValueError(f"{task} v{version} has no run to log the report to")
    artifact = f"quality/report-{now.strftime('%Y%m%dT%H%M%SZ')}.html"
    client.log_text(model_version.run_id, document, artifact)
    client.set_model_version_tag(task, version, "quality_report", artifact)
    return artifact

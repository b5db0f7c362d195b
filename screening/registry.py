"""The screener as a versioned MLflow model: a training run with its metrics, the artefact and its card,
a registered version, and the ``champion`` alias. MLflow is imported only here, inside functions."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from screening.risk_model import RiskModel
from service.lifecycle import ModelRole
from service.model_registry import ensure_experiment, ensure_registered_model, registry_client, set_alias

__all__ = ["REGISTERED_NAME", "model_card", "log_and_register"]

logger = logging.getLogger(__name__)

REGISTERED_NAME = "rare-disease-screener"


def _flat(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)


def model_card(model: RiskModel) -> str:
    m = model.metrics
    projections = m.get("projections", {})
    nan = float("nan")
    rows = []
    for name, p in projections.items():
        at = p.get("at_fold_thresholds", {})
        low, high = at.get("sensitivity_95ci_by_cohort", [nan, nan])
        goal = p.get("sensitivity_at_flag_rate", {}).get("0.015", {})
        g_low, g_high = goal.get("sensitivity_95ci", goal.get("sensitivity_95ci_by_cohort", [nan, nan]))
        every = p.get("baseline_finding_count", {}).get("sensitivity_at_flag_rate", {})
        informative = p.get("baseline_informative_count", {}).get("sensitivity_at_flag_rate", {})
        gaps = p.get("screener_minus_informative_count", {})
        gap_cells = []
        for rate in ("0.01", "0.015"):
            gap = gaps.get(rate, {})
            g_lo, g_hi = gap.get("difference_95ci", [nan, nan])
            gap_cells.append(f"{gap.get('difference', nan):+.3f} ({g_lo:+.3f} to {g_hi:+.3f})")
        rows.append(
            f"| {name} | {p.get('n_cases')} | {p.get('sensitivity_at_budget', nan):.3f} | "
            f"{goal.get('sensitivity', nan):.3f} ({g_low:.2f}-{g_high:.2f}) | "
            f"{every.get('0.01', {}).get('sensitivity', nan):.3f} / {every.get('0.015', {}).get('sensitivity', nan):.3f} | "
            f"{informative.get('0.01', {}).get('sensitivity', nan):.3f} / {informative.get('0.015', {}).get('sensitivity', nan):.3f} | "
            f"{' / '.join(gap_cells)} | "
            f"{p.get('auprc', nan):.3f} | {at.get('sensitivity', nan):.3f} ({low:.2f}-{high:.2f}) | "
            f"{at.get('control_flag_rate', nan):.3f} |"
        )
    below = m.get("below_informative_count", [])
    beaten = "; ".join(
        f"{b['projection']} at {b['flag_rate'] * 100:g}% flags ({b['informative_count']:.3f} against {b['screener']:.3f})"
        for b in below
    )
    versus_count = (
        f"Counting the informative findings finds more cases than the screener in {beaten}."
        if below
        else "The screener finds at least as many cases as counting the informative findings in every projection."
    )
    ranking = m.get("ranking", {})
    served = ranking.get("served") or ranking.get(ranking.get("served_ranker", ""), {})
    emr = "; ".join(f"{name} {p['candidates']['top10']:.3f}" for name, p in projections.items() if p.get("candidates"))
    weights = ", ".join(
        f"{n} {sum(model.coef[i * (len(model.knots) + 1) : (i + 1) * (len(model.knots) + 1)]):.2f}"
        for i, n in enumerate(model.feature_names)
    )
    table = "\n".join(rows)
    return f"""# Rare-disease screener {model.version}

Flags children under 7 whose EMR findings resemble a rare genetic disease, for a genetics referral.
Decision support only: a flag is not a diagnosis.

- **Inputs**: ICD-10, SNOMED CT and HPO codes, LOINC growth and lab values, mapped to HPO findings.
- **Model**: logistic over {len(model.feature_names)} bounded features (counts and information content
  capped, growth deficits), each through a monotone piecewise-linear shape with non-negative weights:
  an added or more specific finding never lowers the risk. Intercept shifted to a population prevalence
  of 1:{round(1 / model.prevalence)}. Total weight per feature: {weights}.
- **Training data**: published phenopackets of children under 7 (monarch-initiative phenopacket-store,
  BSD-3-Clause) projected into EMR-like records in {len(projections)} ways, vs simulated control children.
- **Evaluation**: {m.get("folds")}-fold cross-validation with whole gene cohorts held out
  ({m.get("n_cohorts")} cohorts), operating point of each fold from the other folds' controls, alert budget
  {m.get("alert_budget")} flags per child. Headline = the worst projection: **{m.get("headline_projection")}**,
  sensitivity at budget {m.get("sensitivity_at_budget", nan):.3f} (counting every finding:
  {m.get("baseline_finding_count_sensitivity_at_budget", nan):.3f}; counting the informative findings:
  {m.get("baseline_informative_count_sensitivity_at_budget", nan):.3f}).
- **Baselines**: at the same flag rates, ties split. Counting every finding credits the screener with what its
  commonplace list does; counting the informative findings (the commonplace childhood illnesses left out, as the
  screener leaves them out: its feature 0, no training) is the baseline to beat. {versus_count}
- **Intervals**: {m.get("intervals", "95%, gene cohorts of the cases resampled")}.

| projection | cases | sensitivity at budget | sensitivity at 1.5% flags (the goal's rate; 95% CI) | counting every finding at 1% / 1.5% | counting informative findings at 1% / 1.5% | screener minus informative count at 1% / 1.5% (95% CI) | AUPRC (1:500) | sensitivity at fold threshold (95% CI by cohort) | control flag rate |
|---|---|---|---|---|---|---|---|---|---|
{table}

Candidate ranking ({ranking.get("served_ranker")}, on the findings beyond commonplace childhood illness) on the
published HPO terms of {ranking.get("cases")} children: top-1 {served.get("top1")}, top-10 {served.get("top10")}.
The case's disease in the top 10 candidates of its EMR record, per projection: {emr or "not measured"}.

**Limits**: the cases are published, curated reports projected by our own rules, and the controls
are simulated, so these figures are optimistic for a real EMR; at a real prevalence most flags are
still false positives. Not validated on real EMR data.
"""


def log_and_register(tracking_uri: str, model: RiskModel, params: dict[str, Any]) -> dict[str, str]:
    """Log a training run, register its artefact as a new version and make it ``champion``.

    A screener already registered (the same ``screener_version``: its training timestamp) is not logged again:
    its version is made ``champion``. Registering the shipped screener twice had made a second version of the
    same model, with its own run, that nothing told apart from the first."""
    import mlflow

    existing = _registered_version(tracking_uri, model.version)
    if existing is not None:
        set_alias(tracking_uri, REGISTERED_NAME, ModelRole.champion, existing.version)
        logger.info("%s %s is version %s already: made champion", REGISTERED_NAME, model.version, existing.version)
        return {
            "run_id": existing.run_id,
            "registered_model": REGISTERED_NAME,
            "version": str(existing.version),
            "alias": ModelRole.champion.value,
            "already_registered": "true",
        }

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # a registry URI left by an earlier caller must not win
    # Artifacts beside the store, as the imaging models' are: MLflow's default experiment location is ./mlruns of
    # the working directory, which put the screener outside the service's home.
    experiment_id = ensure_experiment(tracking_uri, "rare-disease-screening")
    metrics: dict[str, float] = {}
    _flat("", model.metrics, metrics)
    with (
        tempfile.TemporaryDirectory() as tmp,
        mlflow.start_run(experiment_id=experiment_id, run_name=f"screener-{model.version}") as run,
    ):
        folder = Path(tmp) / "screener"
        folder.mkdir()
        model.save(folder / "screener.json")
        (folder / "card.md").write_text(model_card(model), encoding="utf-8")
        mlflow.log_params({**params, "model_version": model.version})
        mlflow.log_metrics({k.replace("/", "_"): v for k, v in metrics.items()})
        mlflow.log_artifacts(str(folder), artifact_path="screener")
        source = f"{run.info.artifact_uri}/screener"
        run_id = run.info.run_id
    ensure_registered_model(tracking_uri, REGISTERED_NAME, description="Rare-disease EMR screener (children under 7)")
    version = registry_client(tracking_uri).create_model_version(
        REGISTERED_NAME,
        source=source,
        run_id=run_id,
        # `medscreen models list` shows where a version came from, as for the imaging models
        tags={"screener_version": model.version, "source": str(params.get("source", "trained"))},
    )
    set_alias(tracking_uri, REGISTERED_NAME, ModelRole.champion, str(version.version))
    logger.info("registered %s version %s as champion (run %s)", REGISTERED_NAME, version.version, run_id)
    return {
        "run_id": run_id,
        "registered_model": REGISTERED_NAME,
        "version": str(version.version),
        "alias": ModelRole.champion.value,
    }


def _registered_version(tracking_uri: str, screener_version: str) -> Any:
    """The registered version of the screener trained at ``screener_version``, if there is one (the first)."""
    from mlflow.exceptions import MlflowException

    try:
        found = registry_client(tracking_uri).search_model_versions(
            filter_string=f"name = '{REGISTERED_NAME}' and tags.screener_version = '{screener_version}'"
        )
    except MlflowException:  # no registered model of that name yet
        return None
    return min(found, key=lambda v: int(v.version)) if found else None

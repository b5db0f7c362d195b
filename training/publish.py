"""From a trained network to a bundle: ONNX export, parity gate, metrics.json, bundle.json, card.md, MLflow.

Every task ends here, so the three shipped bundles share one layout (documented in each card):

- ``model.onnx``   the exported ``ScoreAndHeatmap`` network, batch axis dynamic
- ``bundle.json``  the I/O contract: input name/shape/dtype, preprocessing, outputs, threshold
- ``metrics.json`` ``headline`` (what promotion compares) and every evaluation with its CIs
- ``card.md``      the model card
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.export import check_parity, export_onnx
from training.metrics import BinaryMetrics, plot_calibration, plot_roc

__all__ = ["Evaluation", "TaskReport", "training_run", "write_bundle", "limit_option"]

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """One named evaluation: labels, scores and their metrics (plots are drawn for each)."""

    name: str
    title: str
    labels: np.ndarray
    scores: np.ndarray
    metrics: BinaryMetrics


@dataclass
class TaskReport:
    task: str
    export_module: torch.nn.Module
    parity_inputs: np.ndarray
    input_name: str
    input_shape: list[int]
    outputs: list[dict[str, Any]]
    preprocess: dict[str, Any]
    headline: Evaluation
    evaluations: list[Evaluation]
    card: dict[str, str]
    params: dict[str, Any]
    history: list[dict[str, float]]
    bundle_extra: dict[str, Any] = field(default_factory=dict)
    extra_metrics: dict[str, Any] = field(default_factory=dict)


@contextmanager
def training_run(tracking_uri: str, task: str, params: dict[str, Any]) -> Iterator[Any]:
    """An MLflow run in experiment ``medscreen-<task>`` with the params logged; FAILED if the body raises."""
    import mlflow

    from service.model_registry import ensure_experiment

    experiment_id = ensure_experiment(tracking_uri, f"medscreen-{task}")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{task}") as run:
        mlflow.set_tags({"task": task, "source": "trained"})
        mlflow.log_params({k: (json.dumps(v) if isinstance(v, list | dict | tuple) else v) for k, v in params.items()})
        yield run


def _headline(metrics: BinaryMetrics) -> dict[str, float]:
    return {
        "val_auroc": metrics.auroc,
        "val_auroc_ci_low": metrics.auroc_ci_low,
        "val_auroc_ci_high": metrics.auroc_ci_high,
        "sensitivity": metrics.sensitivity,
        "specificity": metrics.specificity,
        "threshold": metrics.threshold,
        "brier": metrics.brier,
        "ece": metrics.ece,
        "n_val": metrics.n,
        "n_val_positive": metrics.n_positive,
    }


def _fmt(metrics: BinaryMetrics) -> str:
    return (
        f"| AUROC | {metrics.auroc:.3f} (95% CI {metrics.auroc_ci_low:.3f}-{metrics.auroc_ci_high:.3f}) |\n"
        f"| sensitivity @ {metrics.threshold:.3f} | {metrics.sensitivity:.3f} "
        f"({metrics.sensitivity_ci[0]:.3f}-{metrics.sensitivity_ci[1]:.3f}) |\n"
        f"| specificity @ {metrics.threshold:.3f} | {metrics.specificity:.3f} "
        f"({metrics.specificity_ci[0]:.3f}-{metrics.specificity_ci[1]:.3f}) |\n"
        f"| Brier score | {metrics.brier:.3f} |\n"
        f"| expected calibration error | {metrics.ece:.3f} |\n"
        f"| n (positive) | {metrics.n} ({metrics.n_positive}) |\n"
    )


def limit_option(params: dict[str, Any]) -> str:
    """The ``--limit N`` a run was given, as its card's reproduce line must repeat it ("" for a run on all the data)."""
    limit = params.get("limit")
    return f" --limit {limit}" if limit else ""


def render_card(report: TaskReport, run_id: str, parity_diff: float, onnx_bytes: int) -> str:
    sections = [f"# Model card: `{report.task}`\n"]
    sections.append(f"Registered model name: `{report.task}`. MLflow run id (training store): `{run_id}`.\n")
    sections.append(f"## Intended use\n\n{report.card['intended_use']}\n")
    subset = ""
    if report.params.get("limit"):
        # A tiny run's card had described the whole set (5,216 films) and given a reproduce line without --limit.
        subset = (
            f"\n\n**This version was trained on a subset** (`{limit_option(report.params).strip()}`, see `medscreen "
            "train --help`): the set described above is what it was drawn from; Split gives what was used."
        )
    sections.append(f"## Data and licence\n\n{report.card['data']}{subset}\n")
    sections.append(f"## Split\n\n{report.card['split']}\n")
    sections.append(f"## Model\n\n{report.card['model']}\n")
    if report.card.get("steering"):
        sections.append(f"## Steering right\n\n{report.card['steering']}\n")
    sections.append(f"## Metrics\n\n{report.card.get('metrics_note', 'Validation on held-out patients.')}\n")
    for evaluation in report.evaluations:
        sections.append(f"### {evaluation.title}\n\n| metric | value |\n|---|---|\n{_fmt(evaluation.metrics)}")
    sections.append(
        report.card.get(
            "intervals",
            "95% intervals: AUROC by 2,000 patient-unaware bootstrap resamples of the validation items; "
            "sensitivity and specificity by the Wilson interval.",
        )
        + "\n"
    )
    if report.card.get("figures"):
        sections.append(f"## Figures\n\n{report.card['figures']}\n")
    sections.append(f"## Operating point\n\n{report.card['operating_point']}\n")
    sections.append(f"## Localisation\n\n{report.card['localisation']}\n")
    sections.append(f"## Limitations\n\n{report.card['limitations']}\n")
    sections.append(
        "## Bundle\n\n"
        "`model.onnx` (ONNX opset 17, "
        f"{onnx_bytes / 1e6:.2f} MB), `bundle.json` (input name/shape/dtype, preprocessing parameters for "
        "`datasets.preprocess`, output names, threshold), `metrics.json` (`headline` is what promotion "
        "compares; `evaluations` has every table above with its reliability bins).\n"
        f"ONNX Runtime reproduced PyTorch on {len(report.parity_inputs)} validation inputs "
        f"(max abs difference {parity_diff:.2g}).\n"
    )
    sections.append(f"## Reproduce\n\n```\n{report.card['reproduce']}\n```\n")
    return "\n".join(sections)


def write_bundle(report: TaskReport, out_dir: Path, run: Any) -> dict[str, Any]:
    """Export, gate on parity (raises :class:`~training.errors.ParityError`), write the bundle, log it to the run."""
    import mlflow

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The four files are written to a folder inside it and moved in only once the export has passed the parity gate
    # and all are complete: the export had been written over the folder's model.onnx first, so a failed gate (or a
    # Ctrl-C) left a network beside another model's bundle.json, card and threshold (README: --out models/<task>).
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".partial-") as staging_name:
        staging = Path(staging_name)
        metrics = _stage_bundle(report, out_dir, staging, run)
        for filename in ("metrics.json", "card.md", "bundle.json", "model.onnx"):
            os.replace(staging / filename, out_dir / filename)
    headline = _headline(report.headline.metrics)
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    for evaluation in report.evaluations:
        plot_roc(evaluation.labels, evaluation.scores, evaluation.metrics, plots / f"roc_{evaluation.name}.png", evaluation.title)
        plot_calibration(evaluation.metrics, plots / f"calibration_{evaluation.name}.png", evaluation.title)
    mlflow.log_artifacts(str(plots), artifact_path="plots")
    # The PyTorch weights stay in MLflow (fine-tuning, eager benchmarks); the bundle ships ONNX only.
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(report.export_module.state_dict(), Path(tmp) / "state_dict.pt")
        mlflow.log_artifact(str(Path(tmp) / "state_dict.pt"), artifact_path="pytorch")
    mlflow.log_artifact(str(out_dir / "card.md"))
    mlflow.log_artifact(str(out_dir / "metrics.json"))
    mlflow.log_artifact(str(out_dir / "bundle.json"))
    mlflow.log_metrics({k: float(v) for k, v in headline.items()})
    for evaluation in report.evaluations:
        mlflow.log_metrics({f"{evaluation.name}.auroc": evaluation.metrics.auroc, f"{evaluation.name}.brier": evaluation.metrics.brier})
    log.info("bundle for %s written to %s (val AUROC %.4f)", report.task, out_dir, headline["val_auroc"])
    return metrics


def _stage_bundle(report: TaskReport, out_dir: Path, staging: Path, run: Any) -> dict[str, Any]:
    """Export to ``staging``, gate on parity (ParityError), write metrics.json, bundle.json and card.md there; the
    metrics. ``out_dir``'s bundle.json, when there is one, gives the hand-written block a retrain keeps."""
    import mlflow

    example = torch.from_numpy(report.parity_inputs[:1].astype(np.float32))
    onnx_path = export_onnx(
        report.export_module,
        example,
        staging / "model.onnx",
        input_name=report.input_name,
        output_names=[o["name"] for o in report.outputs],
    )
    parity = check_parity(report.export_module, onnx_path, report.parity_inputs.astype(np.float32))
    mlflow.log_metric("onnx_parity_max_abs_diff", parity)
    run_id = run.info.run_id
    headline = _headline(report.headline.metrics)
    metrics = {
        "task": report.task,
        "headline": headline,
        "evaluations": {e.name: e.metrics.to_dict() for e in report.evaluations},
        "history": report.history,
        "onnx_parity_max_abs_diff": parity,
        "mlflow_run_id": run_id,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": f"{platform.machine()} torch {torch.__version__}",
        "params": report.params,
        **report.extra_metrics,
    }
    bundle = {
        "format_version": 1,
        "task": report.task,
        "model_name": report.task,
        "input": {"name": report.input_name, "shape": report.input_shape, "dtype": "float32"},
        "outputs": report.outputs,
        "preprocess": report.preprocess,
        "threshold": report.headline.metrics.threshold,
        "mlflow_run_id": run_id,
        **report.bundle_extra,
    }
    previous = out_dir / "bundle.json"
    if previous.is_file():
        # The intended-use block is written by hand for the serving checks, not learned: a retrain keeps it.
        kept = json.loads(previous.read_text())
        for key in ("intended_use",):
            if key in kept and key not in bundle:
                bundle[key] = kept[key]
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (staging / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
    (staging / "card.md").write_text(render_card(report, run_id, parity, onnx_path.stat().st_size))
    return metrics

"""Re-wire a shipped fold ensemble's ``score`` to the mean of its ``fold_scores``, without retraining.

The mammography bundle was exported with ``score`` = calibrated maximum of the fold networks' mean
logit map, a distribution far below the single-fold scores its threshold was chosen on
(``models.networks.FoldEnsemble``, ``score="fold_mean"``, is the fix for later trainings). This
edits the ONNX graph (``score`` becomes ``ReduceMean(fold_scores)``, nodes left unused are pruned)
and rewrites the bundle's apparent figures from the edited file:

    python -m training.rewire_fold_mean models/mammography --data ../shared/data
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import onnx
from onnx import helper

from training.card_figures import figures_from_file, headline_of
from training.errors import TrainingInputError

__all__ = ["rewire_score_to_fold_mean", "main"]


def rewire_score_to_fold_mean(model: onnx.ModelProto) -> onnx.ModelProto:
    """``score [N, C]`` = mean over the last axis of ``fold_scores [N, C, k]``; unused nodes removed."""
    graph = model.graph
    nodes = [n for n in graph.node if "score" not in n.output]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:
        axes = helper.make_tensor("fold_axis", onnx.TensorProto.INT64, [1], [-1])
        graph.initializer.append(axes)
        nodes.append(helper.make_node("ReduceMean", ["fold_scores", "fold_axis"], ["score"], keepdims=0, name="score_fold_mean"))
    else:
        nodes.append(helper.make_node("ReduceMean", ["fold_scores"], ["score"], axes=[-1], keepdims=0, name="score_fold_mean"))
    wanted = {o.name for o in graph.output}
    # Prune backwards from the outputs: the pooled-score branch no longer feeds anything.
    kept: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(out in wanted for out in node.output):
            kept.append(node)
            wanted.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = {name for node in graph.node for name in node.input}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--task-module", default="training.tasks.mammography")
    args = parser.parse_args(argv)
    # The data first: a --data that cannot be read must stop before the bundle's model is rewritten.
    try:
        dev = importlib.import_module(args.task_module).development_set(args.data, None)
    except TrainingInputError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    onnx_path = args.model_dir / "model.onnx"
    onnx.save(rewire_score_to_fold_mean(onnx.load(str(onnx_path))), str(onnx_path))
    figures = figures_from_file(args.model_dir, dev)
    metrics_path = args.model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["headline"].update(headline_of(figures))
    metrics["evaluations"]["apparent"] = {**metrics["evaluations"]["apparent"], **figures.apparent.to_dict()}
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    bundle_path = args.model_dir / "bundle.json"
    bundle = json.loads(bundle_path.read_text())
    for output in bundle["outputs"]:
        if output["name"] == "score":
            output["meaning"] = "calibrated probabilities [suspicious finding, malignant finding]: mean of the fold networks' calibrated scores"
    bundle_path.write_text(json.dumps(bundle, indent=2) + "\n")
    print(json.dumps(headline_of(figures), indent=2))


if __name__ == "__main__":
    main()

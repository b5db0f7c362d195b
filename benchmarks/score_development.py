"""`medscreen score` on development studies wrapped as the DICOM a PACS sends gives the card's figures.

    nice -n 10 python benchmarks/score_development.py --data ../shared/data --task chest-xray [--limit N]
    nice -n 10 python benchmarks/score_development.py --data ../shared/data --task all

Each development film is wrapped as one DX/MG study (``benchmarks.study_factory``: Kermany JPEGs as DX,
MIAS films as MG with the laterality of their numbering), the LIDC slabs are scored as they are (they
are DICOM already), and ``python -m medscreen --create-home score FOLDER`` runs in a fresh home exactly
as a site would run it: its registry gets the shipped bundles, its JSON lines are joined back to the
labels by StudyInstanceUID. Printed per task: the card's "shipped ensemble on all development films"
figures (``metrics.json``, apparent: training data included), the same figures recomputed in process the
way the card computes them (the training reader and float16 arrays) on the films scored here, and what
``medscreen score`` gives at the card's threshold, with the largest per-film score difference.
``--limit N`` scores N films per class (chest) or N women (mammography), seeded; CT always scores its
three slabs, whose card figures are per patch and so are compared per series instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Case:
    """One development study: its StudyInstanceUID, label and patient, and the card pipeline's input."""

    study_uid: str
    label: int
    patient: str
    name: str
    x: np.ndarray | None = None


def _run_score(folder: Path, home: Path) -> tuple[dict[str, dict[str, Any]], float, str]:
    """``medscreen score`` as a user runs it: lines by StudyInstanceUID, wall seconds, the stderr summary."""
    env = {**os.environ, "MEDSCREEN_HOME": str(home)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "medscreen", "--create-home", "score", "--quiet", str(folder)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"medscreen score failed ({result.returncode}):\n{result.stderr[-3000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {line["study_instance_uid"]: line for line in lines}, wall, result.stderr.strip().splitlines()[-1]


def _chest_cases(data: Path, folder: Path, limit: int | None, seed: int) -> list[Case]:
    from pydicom.uid import generate_uid

    from benchmarks.study_factory import wrap_radiograph
    from datasets.chest_xray import load_kermany
    from datasets.preprocess import prepare_image, read_image_file
    from training.tasks.chest_xray import SPEC

    items = load_kermany(data / "chest-xray" / "kermany")
    if limit:
        rng = np.random.default_rng(seed)
        by_label = [[i for i in items if i.label == label] for label in (0, 1)]
        items = [group[int(k)] for group in by_label for k in rng.permutation(len(group))[:limit]]
    cases = []
    for n, item in enumerate(items):
        uid = generate_uid()
        wrap_radiograph(item.path, folder / f"cxr{n:05d}.dcm", study_uid=uid, patient_id=f"DEV{n:05d}")
        # The card's input: the training reader on the JPEG, stored as float16 as training caches it.
        x = prepare_image(read_image_file(item.path), SPEC)[0].astype(np.float16)
        cases.append(Case(uid, item.label, item.patient_id, item.path.name, x))
    return cases


def _mammography_cases(data: Path, folder: Path, limit: int | None, seed: int) -> list[Case]:
    from pydicom.uid import generate_uid

    from benchmarks.study_factory import wrap_mammogram
    from datasets.mias import load_mias, read_film
    from datasets.preprocess import prepare_image
    from training.tasks.mammography import SPEC

    films = load_mias(data / "mammography" / "mias")
    if limit:
        rng = np.random.default_rng(seed)
        women = sorted({f.patient_id for f in films})
        keep = set(rng.choice(women, min(limit, len(women)), replace=False).tolist())
        films = [f for f in films if f.patient_id in keep]
    cases = []
    for n, film in enumerate(films):
        uid = generate_uid()
        # One film per study, as the card counts films; odd MIAS numbers are left films, even ones right.
        laterality = "L" if int(film.refnum[3:]) % 2 else "R"
        wrap_mammogram(film.path, folder / f"mg{n:04d}.dcm", laterality=laterality, study_uid=uid, patient_id=f"DEV{n:04d}")
        x = prepare_image(read_film(film), SPEC)[0].astype(np.float16)
        cases.append(Case(uid, film.suspicious, film.patient_id, film.refnum, x))
    return cases


def _apparent_in_process(model_dir: Path, cases: list[Case]) -> np.ndarray:
    from training.card_figures import run_ensemble

    bundle = json.loads((model_dir / "bundle.json").read_text())
    x = np.stack([c.x for c in cases if c.x is not None])
    scores, _ = run_ensemble(model_dir / "model.onnx", x, input_name=bundle["input"]["name"], score_index=int(bundle.get("score_index", 0)))
    return scores


def _figure_rows(card: dict[str, Any], in_process: Any, served: Any) -> list[tuple[str, float, float, float]]:
    return [
        ("AUROC", float(card["auroc"]), in_process.auroc, served.auroc),
        ("sensitivity", float(card["sensitivity"]), in_process.sensitivity, served.sensitivity),
        ("specificity", float(card["specificity"]), in_process.specificity, served.specificity),
        ("n", float(card["n"]), float(in_process.n), float(served.n)),
        ("n positive", float(card["n_positive"]), float(in_process.n_positive), float(served.n_positive)),
    ]


def _image_task(task: str, data: Path, work: Path, limit: int | None, seed: int) -> int:
    from training.metrics import evaluate_binary

    model_dir = REPO / "models" / task
    metrics = json.loads((model_dir / "metrics.json").read_text())
    threshold = float(json.loads((model_dir / "bundle.json").read_text())["threshold"])
    folder = work / task
    started = time.perf_counter()
    cases = (_chest_cases if task == "chest-xray" else _mammography_cases)(data, folder, limit, seed)
    wrap_s = time.perf_counter() - started
    lines, wall, summary = _run_score(folder, work / f"home-{task}")
    scored = [c for c in cases if lines.get(c.study_uid, {}).get("score") is not None]
    unscored = {c.name: lines.get(c.study_uid, {}).get("error", "no line") for c in cases if c not in scored}
    labels = np.array([c.label for c in scored])
    groups = np.array([c.patient for c in scored])
    served_scores = np.array([float(lines[c.study_uid]["score"]) for c in scored])
    reference = _apparent_in_process(model_dir, cases)
    reference = reference[[cases.index(c) for c in scored]]
    served = evaluate_binary(labels, served_scores, threshold=threshold, seed=seed, groups=groups)
    in_process = evaluate_binary(labels, reference, threshold=threshold, seed=seed, groups=groups)
    card = metrics["evaluations"]["apparent"]
    versions = sorted({f"{lines[c.study_uid]['model_name']} v{lines[c.study_uid]['model_version']}" for c in scored})
    print(f"\n{task}: {len(cases)} development studies wrapped as DICOM in {wrap_s:.0f} s; `medscreen score` {wall:.0f} s wall "
          f"({1000 * wall / max(len(cases), 1):.0f} ms per study, start-up included); {summary}")
    print(f"  model {', '.join(versions)}, threshold {threshold:.3f}; sample: {'all development films' if not limit else f'--limit {limit}, seed {seed}'}")
    print(f"  {'figure':<12} {'card (all films)':>17} {'card pipeline, these films':>27} {'medscreen score':>16}")
    for name, a, b, c in _figure_rows(card, in_process, served):
        fmt = "{:>17.0f} {:>27.0f} {:>16.0f}" if name.startswith("n") else "{:>17.3f} {:>27.3f} {:>16.3f}"
        print(f"  {name:<12} " + fmt.format(a, b, c))
    print(f"  AUROC 95% CI: card {card['auroc_ci_low']:.3f}-{card['auroc_ci_high']:.3f}, medscreen score "
          f"{served.auroc_ci_low:.3f}-{served.auroc_ci_high:.3f}")
    difference = np.abs(served_scores - reference)
    worst = int(np.argmax(difference)) if len(difference) else 0
    print(f"  per-study score, medscreen score vs card pipeline: max |difference| {difference.max():.4f} "
          f"({scored[worst].name}), mean {difference.mean():.5f}; calls that differ at the threshold: "
          f"{int(((served_scores >= threshold) != (reference >= threshold)).sum())}")
    if unscored:
        print(f"  not scored ({len(unscored)}): " + "; ".join(f"{k}: {v}" for k, v in list(unscored.items())[:5]))
    return 0


def _ct_task(data: Path, work: Path) -> int:
    import pydicom

    from datasets.dicom_folder import dicom_files
    from inference.champions import LoadedModel
    from inference.scorers import score_ct

    model_dir = REPO / "models" / "ct-chest"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    bundle = json.loads((model_dir / "bundle.json").read_text())
    threshold = float(bundle["threshold"])
    root = data / "ct" / "lidc" / "small"
    lines, wall, summary = _run_score(root, work / "home-ct-chest")
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    model = LoadedModel("ct-chest", "ct-chest", "shipped", None, threshold, bundle, session)
    out_of_fold = {row["patient"]: row["series_score"] for row in metrics.get("series_validation", [])}
    print(f"\nct-chest: the {len(lines)} LIDC slabs (DICOM as stored); `medscreen score` {wall:.0f} s wall; {summary}")
    print("  The card's headline figures are per candidate patch; a study gets one series score, so series are compared.")
    print(f"  {'patient':<16} {'card out-of-fold':>17} {'in-process ensemble':>20} {'medscreen score':>16} {'call':>9}")
    for patient_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        datasets = [pydicom.dcmread(p) for p in dicom_files([patient_dir])]
        uid = str(datasets[0].StudyInstanceUID)
        line = lines.get(uid, {})
        in_process = score_ct(model, datasets, min_ct_slices=1).score
        served = line.get("score")
        served_text = f"{served:.3f}" if served is not None else f"error: {line.get('error')}"
        print(f"  {patient_dir.name:<16} {out_of_fold.get(patient_dir.name, float('nan')):>17.3f} {in_process:>20.3f} "
              f"{served_text:>16} {line.get('call') or '':>9}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MEDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--task", choices=["chest-xray", "mammography", "ct-chest", "all"], default="all")
    parser.add_argument("--limit", type=int, default=None, help="films per class (chest) or women (mammography); default all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write the wrapped studies and homes here (default: a temporary folder)")
    args = parser.parse_args()
    tasks = ["chest-xray", "mammography", "ct-chest"] if args.task == "all" else [args.task]
    with tempfile.TemporaryDirectory(prefix="score-dev-") as tmp:
        work = args.keep or Path(tmp)
        print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} on {os.cpu_count()} CPUs")
        for task in tasks:
            if task == "ct-chest":
                _ct_task(args.data, work)
            else:
                _image_task(task, args.data, work, args.limit, args.seed)
        print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

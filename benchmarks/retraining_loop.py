"""The retraining loop end to end on real chest films (Kermany, wrapped as DX DICOM): the shipped champion scores
phase-1 studies, radiologists' final reads (the data set's labels) confirm them, ``export-training`` writes them
de-identified, ``retrain`` trains and registers a challenger, phase-2 studies are scored by the champion and
shadow-scored by the challenger, and the gate decides. Prints each step's figures.

    .venv/bin/python -m benchmarks.retraining_loop [--phase1 300] [--phase2 440] [--epochs 6]

Needs ../shared/data/chest-xray/kermany and the train extra (torch). The champion was trained on Kermany, so
its figures here are optimistic; the loop, not the champion, is what this measures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom

from benchmarks.study_factory import wrap_radiograph
from inference.champions import ModelSelector
from inference.scorers import score_task
from inference.shipped_models import SHIPPED_MODELS_DIR, register_shipped_bundles
from inference.tables import Instance, Series
from medscreen.schema import migrate_all
from quality.gate import GateRules, compare_versions, evaluate_gate
from service.db import make_engine, make_session_factory, session_scope
from service.model_registry import version_of
from tests.quality.quality_rows import add_final_read, add_result, add_study
from training.export_training import export_training
from training.retrain import retrain_from_export

KERMANY = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest-xray" / "kermany" / "train"
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def sample(n: int, rng: np.random.Generator, offset: int) -> list[tuple[Path, bool]]:
    """n films, half pneumonia, taken from the end of each sorted folder (disjoint between phases by offset)."""
    picked = []
    for label, folder in ((False, "NORMAL"), (True, "PNEUMONIA")):
        files = sorted((KERMANY / folder).glob("*.jpeg"))
        take = files[::-1][offset : offset + n // 2]
        picked += [(f, label) for f in take]
    rng.shuffle(picked)
    return picked


def store(session, films: list[tuple[Path, bool]], start: datetime, dicom_dir: Path) -> list[tuple[int, Path, bool]]:
    """Wrap each film as a one-instance DX study and record it as ingest would (study, series, instance)."""
    stored = []
    for i, (image, label) in enumerate(films):
        arrived = start + timedelta(minutes=10 * i)
        path = wrap_radiograph(image, dicom_dir / f"{start:%Y%m%d}-{i:05d}.dcm", patient_id=f"P{start:%m%d}{i:05d}")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study = add_study(session, arrived=arrived, modality="DX")
        study.study_instance_uid = str(ds.StudyInstanceUID)
        study.patient_id = str(ds.PatientID)
        series = session.query(Series).filter_by(study_id=study.id).one()
        session.add(Instance(
            sop_instance_uid=str(ds.SOPInstanceUID), study_id=study.id, series_id=series.id, sop_class_uid=str(ds.SOPClassUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), path=str(path), size=path.stat().st_size, revision=1,
            source="dimse", received_at=arrived,
        ))
        stored.append((study.id, path, label))
    session.flush()
    return stored


def score_all(session, selector: ModelSelector, version: str, role: str, stored, start: datetime) -> float:
    """Score every study with one registered version (what the worker does per job); returns seconds."""
    from inference.tables import Study

    model = selector.load("chest-xray", version)
    t = time.perf_counter()
    for i, (study_id, path, _) in enumerate(stored):
        result = score_task("chest-xray", model, [pydicom.dcmread(path)], min_ct_slices=1)
        add_result(
            session, session.get(Study, study_id), score=result.score, threshold=model.threshold, role=role,
            model_version=version, at=start + timedelta(minutes=10 * i + 1),
        )
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase1", type=int, default=300, help="confirmed studies exported for retraining")
    parser.add_argument("--phase2", type=int, default=440, help="studies scored by champion and challenger for the gate")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url, tracking_uri = f"sqlite:///{root / 'medscreen.db'}", f"sqlite:///{root / 'mlflow.db'}"
        migrate_all(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        (champion,) = [b for b in register_shipped_bundles(tracking_uri, SHIPPED_MODELS_DIR) if b.name == "chest-xray"]
        selector = ModelSelector(tracking_uri, root / "models", intra_op_threads=2, refresh_s=0)

        phase1_end = T0 + timedelta(days=14)
        with session_scope(factory) as session:
            stored1 = store(session, sample(args.phase1, rng, 0), T0, root / "pacs")
            s1 = score_all(session, selector, champion.version, "champion", stored1, T0)
            for i, (study_id, _, label) in enumerate(stored1):
                from inference.tables import Study

                add_final_read(session, session.get_one(Study, study_id), label, read_at=T0 + timedelta(minutes=10 * i, hours=3))
        print(f"phase 1: {len(stored1)} studies scored by champion v{champion.version} ({s1 / len(stored1) * 1000:.0f} ms each) and read")

        t = time.perf_counter()
        with session_scope(factory) as session:
            summary = export_training(session, "chest-xray", T0, root / "export", root / "crosswalk.csv",
                                     actor="benchmark:retraining_loop")
        print(f"export-training: {summary.studies} studies ({summary.positives} positive), {summary.instances} instances "
              f"in {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        retrained = retrain_from_export("chest-xray", root / "export", root / "bundle", tracking_uri, epochs=args.epochs)
        challenger = version_of(tracking_uri, "chest-xray", retrained["version"])
        assert challenger is not None
        print(f"retrain: version {retrained['version']} registered as challenger in {time.perf_counter() - t:.0f} s; "
              f"held-out AUROC {retrained['headline']['val_auroc']:.3f} "
              f"({retrained['headline']['val_auroc_ci_low']:.3f}-{retrained['headline']['val_auroc_ci_high']:.3f}, "
              f"{retrained['headline']['n_val']} studies); steering right "
              f"{challenger.steering.value}")

        with session_scope(factory) as session:
            stored2 = store(session, sample(args.phase2, rng, args.phase1 // 2), phase1_end, root / "pacs2")
            s_champ = score_all(session, selector, champion.version, "champion", stored2, phase1_end)
            s_chall = score_all(session, selector, retrained["version"], "challenger", stored2, phase1_end)
            for i, (study_id, _, label) in enumerate(stored2):
                from inference.tables import Study

                add_final_read(session, session.get_one(Study, study_id), label, read_at=phase1_end + timedelta(minutes=10 * i, hours=3))
        print(f"phase 2: {len(stored2)} new studies scored by the champion ({s_champ:.1f} s) and shadow-scored by "
              f"the challenger ({s_chall:.1f} s), then read")

        with session_scope(factory) as session:
            decision = evaluate_gate(compare_versions(session, "chest-xray", retrained["version"]), GateRules())
        c = decision.comparison
        assert c is not None, decision.reasons
        for name, m in (("champion", c.champion), ("challenger", c.challenger)):
            print(f"  {name}: sensitivity {m.sensitivity.value:.3f} ({m.sensitivity.ci_low:.3f}-{m.sensitivity.ci_high:.3f}), "
                  f"specificity {m.specificity.value:.3f}, AUROC {m.auroc:.3f} ({m.auroc_ci_low:.3f}-{m.auroc_ci_high:.3f})")
        print(f"  discordant positives (champion only / challenger only) {c.positives_champion_only} / "
              f"{c.positives_challenger_only}, McNemar p {c.sensitivity_drop_p:.3g}; discordant negatives (challenger "
              f"only / champion only) {c.negatives_challenger_only} / {c.negatives_champion_only}, McNemar p {c.specificity_drop_p:.3g}")
        print(f"gate on {c.n_paired} paired studies: {'PASSED' if decision.passed else 'FAILED'}"
              + ("" if decision.passed else ": " + "; ".join(decision.reasons)))
        engine.dispose()


if __name__ == "__main__":
    main()

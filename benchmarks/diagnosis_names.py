"""Figures: diagnosed children whose diagnosis is coded in SNOMED CT, read by its name.

    python benchmarks/diagnosis_names.py [--data ../shared/data]

SNOMED CT has no map to rare diseases, so a SNOMED-coding site's recorded diagnosis is recognised by its name
(``screening.orphanet.OrphanDiagnoses.lookup_name``, built from Orphanet's labels). The names here come from
elsewhere: each published case under 7 in ``rare-disease/phenopackets`` (phenopacket-store, whose curators name
the disease as OMIM does: "Noonan syndrome 3") is projected as the SNOMED CT 60% projection of
``screening evaluate`` projects it, once as it is and once with its diagnosis recorded: a SNOMED CT Condition
coded with the generic concept 64572001 "Disease" and the case's disease name as display (the specific SNOMED CT
code would not change the reading: no map holds it). Printed: cases, flagged without the diagnosis, flagged and
"already diagnosed" with it, how each name was matched, and the most frequent names not recognised; and how many
of 88 genetic diagnoses common in a children's hospital (``PAEDIATRIC_DIAGNOSES``, as SNOMED CT names them) read.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


# Genetic diagnoses common in a children's hospital, as SNOMED CT's preferred terms (or their usual forms) name
# them: a second, hand-made set of names from elsewhere, written down on 2026-12-01 after the subtype and group
# rule and before the disorders-by-gene rule (37 of them read as nothing at commit 8dd283f). Some should never read as a diagnosis here: HPO phenotype names
# (hypertrophic cardiomyopathy, spinal muscular atrophy), a neoplasm (retinoblastoma), malformations (Pierre Robin
# sequence, Poland syndrome).
PAEDIATRIC_DIAGNOSES = (
    "Fanconi anemia", "Diamond-Blackfan anemia", "Shwachman-Diamond syndrome", "Treacher Collins syndrome",
    "Crouzon syndrome", "Apert syndrome", "Pfeiffer syndrome", "Dravet syndrome", "CDKL5 deficiency disorder",
    "Angelman syndrome", "Smith-Magenis syndrome", "Cornelia de Lange syndrome", "CHARGE syndrome", "Kabuki syndrome",
    "Sotos syndrome", "Beckwith-Wiedemann syndrome", "Silver-Russell syndrome", "Rubinstein-Taybi syndrome",
    "Coffin-Siris syndrome", "Pitt-Hopkins syndrome", "Alagille syndrome", "Joubert syndrome", "Bardet-Biedl syndrome",
    "Alport syndrome", "Stickler syndrome", "Wolf-Hirschhorn syndrome", "Cri du chat syndrome",
    "Smith-Lemli-Opitz syndrome", "Zellweger syndrome", "Menkes disease", "Wilson disease", "Hereditary spherocytosis",
    "Glanzmann thrombasthenia", "Von Willebrand disease", "Severe combined immunodeficiency",
    "Chronic granulomatous disease", "Wiskott-Aldrich syndrome", "Ataxia telangiectasia", "Friedreich ataxia",
    "Charcot-Marie-Tooth disease", "Becker muscular dystrophy", "Congenital myotonic dystrophy", "Spinal muscular atrophy",
    "Leber congenital amaurosis", "Retinoblastoma", "Usher syndrome", "Familial Mediterranean fever", "Long QT syndrome",
    "Hypertrophic cardiomyopathy", "Autosomal recessive polycystic kidney disease", "Nephronophthisis", "Cystinosis",
    "Pseudohypoparathyroidism", "Congenital hyperinsulinism", "Hypophosphatemic rickets", "Achondroplasia",
    "Hypochondroplasia", "Thanatophoric dysplasia", "Mucopolysaccharidosis type II", "Hunter syndrome",
    "Sanfilippo syndrome", "Krabbe disease", "Metachromatic leukodystrophy", "Adrenoleukodystrophy", "Canavan disease",
    "Alexander disease", "Pelizaeus-Merzbacher disease", "Rett syndrome", "Tuberous sclerosis complex",
    "Sturge-Weber syndrome", "Neurofibromatosis type 2", "Hereditary angioedema", "Primary ciliary dyskinesia",
    "Kartagener syndrome", "Cornelia de Lange", "Williams-Beuren syndrome", "Jacobsen syndrome", "Kleefstra syndrome",
    "Phelan-McDermid syndrome", "Costello syndrome", "Cardiofaciocutaneous syndrome", "Legius syndrome",
    "Holt-Oram syndrome", "Goldenhar syndrome", "Pierre Robin sequence", "VACTERL association", "Klippel-Feil syndrome",
    "Poland syndrome",
)


def _match_kind(orphan: object, name: str) -> str:
    """How ``name`` was matched: word for word, in another order, or as a numbered subtype."""
    from screening.orphanet import disease_name_key

    table = orphan.by_name  # type: ignore[attr-defined]
    return "word for word" if disease_name_key(name) in table else "other order or subtype number"


def main() -> None:
    from datasets.emr_records import CodedFact
    from datasets.phenopackets import read_phenopacket
    from screening.screener import Screener
    from screening.simulate import PROJECTIONS, CaseProjector

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=_HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    folder = args.data / "rare-disease" / "phenopackets"
    if not folder.is_dir():
        raise SystemExit(f"no phenopackets under {folder}")
    screener = Screener.load(0.01)
    projector = CaseProjector(screener.maps)
    projection = next(p for p in PROJECTIONS if p.name == "snomed-60")
    orphan = screener.maps.orphan
    began = time.perf_counter()
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    rng = random.Random(13)
    for path in sorted(folder.glob("*/*.json")):
        diseases = json.loads(path.read_text()).get("diseases") or []
        name = str(diseases[0].get("term", {}).get("label", "")) if diseases else ""
        case = read_phenopacket(path)
        projected = projector.project(case, rng, projection)
        if projected is None or not name:
            continue
        record, when = projected
        counts["cases"] += 1
        counts["flagged_without_the_diagnosis"] += screener.screen(record, when).flagged
        dated = CodedFact("condition", "snomed", "64572001", record.birth_date, display=name)
        result = screener.screen(replace(record, facts=[*record.facts, dated]), when)
        counts["flagged_with_the_diagnosis_in_snomed_ct"] += result.flagged
        counts["already_diagnosed_with_it"] += result.status == "already_diagnosed"
        if orphan.lookup_name(name):
            kinds[_match_kind(orphan, name)] += 1
        else:
            missed[name] += 1
    out = {
        **dict(counts),
        "share_read_as_diagnosed": round(counts["already_diagnosed_with_it"] / max(counts["cases"], 1), 4),
        "matched": dict(kinds),
        "distinct_names_not_recognised": len(missed),
        "most_frequent_names_not_recognised": missed.most_common(12),
        "paediatric_diagnoses_read": f"{sum(bool(orphan.lookup_name(n)) for n in PAEDIATRIC_DIAGNOSES)} of {len(PAEDIATRIC_DIAGNOSES)}",
        "paediatric_diagnoses_not_read": [n for n in PAEDIATRIC_DIAGNOSES if not orphan.lookup_name(n)],
        "seconds": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

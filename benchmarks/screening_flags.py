"""Figures: how often the shipped screener flags fresh ordinary children, and whether the candidates it
shows for flagged children fit them (sex, onset).

    python benchmarks/screening_flags.py [--children 20000] [--cases 400]

Ordinary children are simulated afresh (a seed the training never used; 20% with a hard negative; growth
tracking a centile) and coded as ICD-10 and as HPO; the flag rate is compared with the alert budget.
With ``--everyday N`` the same ordinary children also carry N everyday episodes coded in SNOMED CT as a
primary-care record holds them (``EVERYDAY_SNOMED``: otitis media, eczema, rashes, a febrile convulsion, ...,
drawn at random, the simulator's own illnesses aside): another site's coding of ordinary childhood, which the
flag rate should survive. Cases are drawn from childhood-onset disease annotations (``simulate`` without phenopackets); for every
flagged child the top 5 candidates are checked: none of the other sex, no adult-onset-only disease first.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date, timedelta
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


# Everyday episodes of children under 7 as SNOMED CT codes a primary-care record holds (each maps to an HPO term
# through hp.obo's xrefs): infections, atopy, skin, symptoms, and hard negatives.
EVERYDAY_SNOMED = {
    "3110003": "acute otitis media", "65363002": "otitis media", "24079001": "atopic dermatitis",
    "50563003": "seborrheic dermatitis", "271807003": "rash", "418290006": "itching", "30746006": "lymphadenopathy",
    "128045006": "cellulitis", "41497008": "febrile convulsion", "18165001": "jaundice", "84229001": "fatigue",
    "79890006": "loss of appetite", "14760008": "constipation", "386661006": "fever", "4120002": "bronchiolitis",
    "9826008": "conjunctivitis", "61582004": "allergic rhinitis", "195967001": "asthma", "233604007": "pneumonia",
    "87522002": "iron deficiency anaemia", "422400008": "vomiting", "62315008": "diarrhoea", "49727002": "cough",
    "21522001": "abdominal pain", "25064002": "headache", "249366005": "epistaxis", "126485001": "urticaria",
    "235595009": "gastro-oesophageal reflux", "56018004": "wheezing", "10509002": "acute bronchitis",
}


def _with_everyday(record, rng: random.Random, n: int, as_of: date):  # type: ignore[no-untyped-def]
    """The record with ``n`` everyday SNOMED CT episodes at random ages (a copy)."""
    from dataclasses import replace

    from datasets.emr_records import CodedFact

    span = max(1, (as_of - record.birth_date).days)
    facts = [CodedFact("condition", "snomed", code, record.birth_date + timedelta(days=rng.randrange(span)))
             for code in rng.sample(sorted(EVERYDAY_SNOMED), n)]
    return replace(record, facts=[*record.facts, *facts])


def main() -> None:
    from screening.disease_fit import ADULT_DAYS
    from screening.screener import Screener
    from screening.simulate import CaseProjector, annotation_case, recode, simulate_controls

    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=20000)
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--budget", type=float, default=0.01)
    parser.add_argument("--everyday", type=int, default=0, help="everyday SNOMED CT episodes added to each ordinary child")
    args = parser.parse_args()
    screener = Screener.load(args.budget)
    kb, maps = screener.kb, screener.maps
    as_of = date(2026, 6, 1)
    began = time.perf_counter()
    out: dict[str, object] = {"model": screener.model.version, "budget": args.budget, "threshold": screener.threshold}
    flagged_results = []
    for coding in ("icd10", "hpo"):
        flags = 0
        for record, when in simulate_controls(maps, args.children, seed=424242, as_of=as_of, hard_fraction=0.2):
            result = screener.screen(recode(record, maps, coding), when)
            flags += result.flagged
            if result.flagged:
                flagged_results.append((record.sex, result))
        out[f"ordinary_flag_rate_{coding}"] = round(flags / args.children, 4)
        if args.everyday:
            rng_everyday, flags = random.Random(99), 0
            for record, when in simulate_controls(maps, args.children, seed=424242, as_of=as_of, hard_fraction=0.2):
                flags += screener.screen(_with_everyday(recode(record, maps, coding), rng_everyday, args.everyday, when), when).flagged
            out[f"ordinary_with_{args.everyday}_everyday_snomed_flag_rate_{coding}"] = round(flags / args.children, 4)
    rng = random.Random(77)
    projector = CaseProjector(maps)
    found = 0
    for i in range(args.cases):
        projected = projector.project(annotation_case(kb, rng, i), rng, as_of=as_of)
        if projected is None:
            continue
        result = screener.screen(projected[0], projected[1])
        found += result.flagged
        if result.flagged:
            flagged_results.append((projected[0].sex, result))
    out["annotation_cases_flagged"] = round(found / args.cases, 4)
    other_sex = adult_first = infertility_top3 = 0
    assert kb.fit is not None
    for child_sex, result in flagged_results:
        ids = [kb.disease_index[c.disease_id] for c in result.candidates[:5]]
        other = {"F": "M", "M": "F"}.get(child_sex, "")
        other_sex += bool(other) and any(kb.fit.sex[i] == other for i in ids)
        adult_first += bool(ids) and kb.fit.earliest_onset_days[ids[0]] >= ADULT_DAYS
        infertility_top3 += "ORPHA:399808" in [c.disease_id for c in result.candidates[:3]]
    out.update(
        flagged_children_checked=len(flagged_results),
        other_sex_in_top5=other_sex,
        adult_onset_only_first=adult_first,
        male_infertility_in_top3=infertility_top3,
        seconds=round(time.perf_counter() - began, 1),
    )
    print(json.dumps(out, indent=1, default=int))  # numpy integers from the counts


if __name__ == "__main__":
    main()

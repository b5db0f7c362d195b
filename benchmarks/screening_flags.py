"""Figures: how often the shipped screener flags fresh ordinary children, and whether the candidates it
shows for flagged children fit them (sex, onset).

    python benchmarks/screening_flags.py [--children 20000] [--cases 400]

Ordinary children are simulated afresh (a seed the training never used; 20% with a hard negative; growth
tracking a centile) and coded as ICD-10 and as HPO; the flag rate is compared with the alert budget.
With ``--everyday N`` the same ordinary children also carry N everyday episodes coded in SNOMED CT as a
primary-care record holds them (``screening.simulate.EVERYDAY_SNOMED``: otitis media, eczema, rashes, a febrile
convulsion, ..., drawn at random): another site's coding of ordinary childhood, which the flag rate should
survive (the evaluation's projection ``snomed-60-everyday`` trains and measures on three). Cases are drawn from childhood-onset disease annotations (``simulate`` without phenopackets); for every
flagged child the top 5 candidates are checked: none of the other sex, no adult-onset-only disease first.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import date
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def main() -> None:
    from screening.disease_fit import ADULT_DAYS
    from screening.screener import Screener
    from screening.simulate import CaseProjector, add_everyday, annotation_case, recode, simulate_controls

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
                flags += screener.screen(add_everyday(recode(record, maps, coding), rng_everyday, args.everyday, when), when).flagged
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

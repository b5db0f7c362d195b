"""Figures: how much a commonplace finding should count in the served candidates, and the weight it is given.

    python benchmarks/candidate_commonplace_weight.py [--data ../shared/data] [--seed 7]

The served candidates are ranked on the findings beyond commonplace childhood illness; the commonplace ones count
``screening.ranking.COMMONPLACE_WEIGHT`` each in the best match. For each weight of ``COMMONPLACE_GRID`` this prints
top-1 and top-10 of the case's disease among the candidates on the published HPO terms of the children under 7
(as ``screening evaluate`` ranks them, ``ranking.served_by_commonplace_weight``) and on each EMR projection of the
cases (as ``screening evaluate`` projects them, ``projections.<name>.candidates`` at the served weight), then the
weight the rule chooses: the largest sum of top-1 and top-10 over all of them among the weights that lower no
projection's top-10 below weight 0's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=_HERE.parent.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=7, help="the projections' seed (screening evaluate's: 7)")
    args = parser.parse_args(argv)

    from screening.cli import _knowledge
    from screening.findings import MAX_AGE_DAYS
    from screening.metrics import expected_rank
    from screening.ranking import COMMONPLACE_GRID, COMMONPLACE_WEIGHT, SERVED_RANKER, _combine, _served_components
    from screening.simulate import PROJECTIONS
    from screening.train_screener import load_cases, scored_cases

    started = time.perf_counter()
    _, kb, maps = _knowledge()
    info = kb.information
    assert info is not None
    cases = load_cases(args.data / "rare-disease" / "phenopackets")

    def ranks(observed: list[int], sex: str, age_days: int | None, index: int | None) -> list[float]:
        if index is None or not observed:
            return [float("inf")] * len(COMMONPLACE_GRID)
        served, findings = _served_components(kb, observed, [], sex, age_days)
        kept = set(findings)
        lesser = [f for f in observed if f not in kept]
        out = []
        for w in COMMONPLACE_GRID:
            served.best_match = info.best_match(findings, lesser, w)
            out.append(expected_rank(_combine(served, SERVED_RANKER), index))
        return out

    def disease(diseases: tuple[str, ...]) -> int | None:
        return next((kb.disease_index[d] for d in diseases if d in kb.disease_index), None)

    table: dict[str, np.ndarray] = {}
    published = []
    for case in cases:
        if case.age_days is None or case.age_days >= MAX_AGE_DAYS:
            continue
        observed = kb.indices({f.hpo for f in case.features if not f.excluded})
        if observed:
            published.append(ranks(observed, case.sex, case.age_days, disease(case.diseases)))
    table["published terms"] = np.array(published)
    for projection in PROJECTIONS:
        table[projection.name] = np.array([
            ranks(scored.observed, scored.sex, scored.age_days, disease(case.diseases))
            for case, scored in scored_cases(cases, projection, kb, maps, args.seed)
        ])

    print(f"top-1 / top-10 of the case's disease among the served candidates, by commonplace weight "
          f"(served: {COMMONPLACE_WEIGHT}); {len(table['published terms'])} published cases")
    print("| commonplace weight | " + " | ".join(table) + " |")
    print("|---" * (len(table) + 1) + "|")
    for j, w in enumerate(COMMONPLACE_GRID):
        # to 4 places first, as screening evaluate reports them, then 3 shown
        cells = [f"{round(float(np.mean(r[:, j] <= 1)), 4):.3f} / {round(float(np.mean(r[:, j] <= 10)), 4):.3f}"
                 for r in table.values()]
        print(f"| {w:g} | " + " | ".join(cells) + " |")
    base = {name: np.mean(r[:, 0] <= 10) for name, r in table.items() if name != "published terms"}
    allowed = [
        j for j in range(len(COMMONPLACE_GRID))
        if all(np.mean(table[name][:, j] <= 10) >= base[name] for name in base)
    ]
    quality = {j: sum(np.mean(r[:, j] <= 1) + np.mean(r[:, j] <= 10) for r in table.values()) for j in allowed}
    chosen = max(quality, key=lambda j: quality[j])
    print(f"chosen by the rule: {COMMONPLACE_GRID[chosen]:g} (served: {COMMONPLACE_WEIGHT:g}); "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

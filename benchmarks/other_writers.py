"""Figures: the evaluation's children written by other rules than ours screen as ours.

    python benchmarks/other_writers.py [--data ../shared/data] [--controls 2000]

Issue 13's figures come from FHIR bundles "written by other rules than the project's simulator". Each child
of the HPO 60% and ICD-10 70% projections (the published cases under 7 and simulated ordinary children) is
written once as our writer writes it and once as :func:`as_other_writer` does (a transaction Bundle whose
resources name the Patient by the ``urn:uuid:`` of its entry's ``fullUrl``; HPO features as Phenomics
Exchange ``PhenotypicFeature`` Observations, HPO ids spelt ``HP_0001250``; system URIs over https with a
trailing slash or as HL7 OIDs; heights as LOINC 3137-7, weights in pounds), both read back by the fast reader
and screened. Printed: per projection, children whose findings, risk (to 1e-9: pounds back to kilograms differ
in the last places) and flag agree, and how many records read as incomplete or with an error.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

# Another writer's spelling of each of our system URIs.
_SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10": "urn:oid:2.16.840.1.113883.6.3",
    "http://snomed.info/sct": "https://snomed.info/sct/",
    "http://loinc.org": "urn:oid:2.16.840.1.113883.6.1",
}
_HPO_SYSTEMS = ("http://purl.obolibrary.org/obo/hp.owl", "http://human-phenotype-ontology.org")
_PRESENT = {"coding": [{"system": "http://loinc.org", "code": "LA9633-4", "display": "Present"}]}
_ABSENT = {"coding": [{"system": "http://loinc.org", "code": "LA9634-2", "display": "Absent"}]}
_POUND_KG = 0.45359237


def as_other_writer(bundle: dict[str, Any], number: int) -> dict[str, Any]:
    """``bundle`` (our writer's, one child) as another writer would send it (see the module doc)."""
    out = copy.deepcopy(bundle)
    out["type"] = "transaction"
    uuid = f"00000000-0000-4000-8000-{number:012d}"
    for index, entry in enumerate(out["entry"]):
        r = entry["resource"]
        entry["request"] = {"method": "POST", "url": r["resourceType"]}
        if r["resourceType"] == "Patient":
            r["id"], entry["fullUrl"] = uuid, f"urn:uuid:{uuid}"
            continue
        entry["fullUrl"] = f"urn:uuid:{uuid[:-6]}{index:06d}-{number}"
        r["subject"] = {"reference": f"urn:uuid:{uuid}"}
        codings = (r.get("code") or {}).get("coding") or []
        if r["resourceType"] == "Condition" and codings and codings[0].get("system") in _HPO_SYSTEMS:
            entry["resource"] = {
                "resourceType": "Observation",
                "id": r["id"],
                "status": "final",
                "subject": r["subject"],
                "code": {"coding": [{"system": "http://purl.obolibrary.org/obo/hp", "code": codings[0]["code"].replace(":", "_")}]},
                **({"effectiveDateTime": r["onsetDateTime"]} if "onsetDateTime" in r else {}),
                "valueCodeableConcept": _ABSENT if "verificationStatus" in r else _PRESENT,
            }
            continue
        for coding in codings:
            coding["system"] = _SYSTEMS.get(coding.get("system"), coding.get("system"))
            if coding.get("code") == "8302-2":
                coding["code"] = "3137-7"  # Body height Measured
        quantity = r.get("valueQuantity")
        if quantity and quantity.get("unit") == "kg":
            quantity.update(value=round(quantity["value"] / _POUND_KG, 6), unit="lb", code="[lb_av]")
    return out


def main() -> None:
    from datasets.emr_records import ChildRecord
    from datasets.fhir_emr import record_to_bundle
    from datasets.fhir_fast import records_from_bundle_fast
    from screening.screener import Screener
    from screening.simulate import PROJECTIONS, CaseProjector, recode, simulate_controls
    from screening.train_screener import load_cases

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_HERE.parent.parent / "shared" / "data")
    parser.add_argument("--controls", type=int, default=2000)
    args = parser.parse_args()
    began = time.perf_counter()
    screener = Screener.load(0.01)
    cases = load_cases(args.data / "rare-disease" / "phenopackets")
    report: dict[str, Any] = {}
    for projection in (p for p in PROJECTIONS if p.name in ("hpo-60", "icd10-70")):
        projector, rng = CaseProjector(screener.maps), random.Random(f"0-{projection.name}")
        children = [c for c in (projector.project(case, rng, projection) for case in cases) if c is not None]
        controls = simulate_controls(screener.maps, args.controls, 1, hard_fraction=projection.hard_fraction)
        children += [(recode(record, screener.maps, projection.coding), as_of) for record, as_of in controls]
        counts: dict[str, Any] = {"children": 0, "same_findings": 0, "same_risk": 0, "same_flag": 0, "flagged": 0,
                                  "incomplete_ours": 0, "incomplete_theirs": 0,
                                  "errors_theirs": 0, "largest_risk_difference": 0.0}
        for number, (record, as_of) in enumerate(children):
            ours_bundle = record_to_bundle(record)
            ours = [r for r in records_from_bundle_fast(ours_bundle, "ours") if isinstance(r, ChildRecord)]
            read = list(records_from_bundle_fast(as_other_writer(ours_bundle, number), "theirs"))
            theirs = [r for r in read if isinstance(r, ChildRecord)]
            counts["children"] += 1
            counts["errors_theirs"] += len(read) - len(theirs)
            if len(ours) != 1 or len(theirs) != 1:
                continue
            a, b = screener.screen(ours[0], as_of), screener.screen(theirs[0], as_of)
            counts["incomplete_ours"] += a.status == "incomplete"  # HPO ids newer than the shipped HPO
            counts["incomplete_theirs"] += b.status == "incomplete"
            counts["same_findings"] += [(f.hpo, f.excluded) for f in a.findings] == [(f.hpo, f.excluded) for f in b.findings]
            # pounds back to kg differ from the kg written in the last places: equal to 1e-9
            difference = abs((a.risk or 0.0) - (b.risk or 0.0))
            counts["largest_risk_difference"] = max(counts["largest_risk_difference"], difference)
            counts["same_risk"] += (a.risk is None) == (b.risk is None) and difference < 1e-9
            counts["same_flag"] += a.flagged == b.flagged
            counts["flagged"] += a.flagged
        report[projection.name] = counts
        print(f"{projection.name}: {json.dumps(counts)}", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Screening results as FHIR R4 ``RiskAssessment`` and ``Flag`` resources (built with ``fhir.resources``).

``risk_assessment_json`` and ``flag_json`` give the JSON a validated resource dumps to, built directly:
a population run writes both for every flagged child, and validating each took a millisecond, as long
as screening 40 children. They are written in the order and form ``fhir.resources`` dumps (tested: a
fixed point of validating and dumping, for every kind of result), so the resource models stay the
judge of what is valid."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.riskassessment import RiskAssessment

from datasets.emr_records import RecordError
from datasets.fhir_emr import fhir_id
from screening.ontology import Ontology
from screening.screener import ScreeningResult

__all__ = ["risk_assessment", "risk_assessment_json", "flag", "flag_json", "operation_outcome", "unassigned_care_team_outcome", "explanation"]

_DISEASE_SYSTEMS = {"OMIM": "https://omim.org", "ORPHA": "https://www.orpha.net"}
_HPO = "http://purl.obolibrary.org/obo/hp.owl"
_OUTCOME_TEXT = "Rare genetic disease warranting a genetics referral"


GENES_LISTED = 6  # a group entry may name dozens: the rest are counted


def _genes_text(genes: tuple[str, ...]) -> str:
    more = len(genes) - GENES_LISTED
    return ", ".join(genes[:GENES_LISTED]) + (f" and {more} more" if more > 0 else "")


def explanation(result: ScreeningResult, ontology: Ontology) -> dict[str, Any]:
    """The reasons behind a result, as plain data for the page, the API and the audit trail."""
    return {
        "findings": [
            {
                "hpo": f.hpo,
                "name": ontology.name(f.hpo),
                "age_years": None if f.age_days is None else round(f.age_days / 365.25, 2),
                "source": f.source,
                "excluded": f.excluded,
            }
            for f in sorted(result.findings, key=lambda f: (f.age_days is None, f.age_days or 0))
        ],
        "status": result.status,
        "dropped": [{"entry": d.entry, "reason": d.reason} for d in result.dropped],
        "organ_systems": result.organ_systems,
        "drivers": result.drivers,
        "candidates": [
            {
                "id": c.disease_id,
                "name": c.name,
                "score": round(c.score, 2),
                "matched": [{"hpo": t, "name": ontology.name(t)} for t in c.matched],
                "genes": list(c.genes),
            }
            for c in result.candidates
        ],
    }


def risk_assessment(result: ScreeningResult, ontology: Ontology) -> RiskAssessment:
    # Validated by the R4B model: an invalid resource fails here, not in the EMR that receives it.
    return RiskAssessment.model_validate(risk_assessment_json(result, ontology))


def risk_assessment_json(result: ScreeningResult, ontology: Ontology) -> dict[str, Any]:
    """The RiskAssessment as ``risk_assessment(...).model_dump(mode="json", exclude_none=True)`` gives it."""
    predictions: list[dict[str, Any]] = []
    if result.risk is not None:
        predictions.append(
            {
                "outcome": {"text": _OUTCOME_TEXT},
                "probabilityDecimal": round(result.risk, 6),
                "rationale": "calibrated at a population prevalence of 1:500" + _threshold_text(result.threshold)
                + "; decision support, not a diagnosis",
            }
        )
    for candidate in result.candidates:
        prefix, _, number = candidate.disease_id.partition(":")
        predictions.append(
            {
                "outcome": {
                    "coding": [{"system": _DISEASE_SYSTEMS.get(prefix, prefix), "code": number, "display": candidate.name}],
                    "text": candidate.name,
                },
                "qualitativeRisk": {"text": f"match score {candidate.score:.1f} (best-match information and shared information, fitted to age and sex)"},
                "rationale": "matched findings: " + ", ".join(ontology.name(t) for t in candidate.matched)
                + (f"; genes: {_genes_text(candidate.genes)}" if candidate.genes else ""),
            }
        )
    notes = []
    if result.status == "incomplete":
        notes.append({"text": f"incomplete record: {result.reason}; the risk uses only what could be read: a lower bound"})
        notes += [{"text": f"not read: {d.entry}: {d.reason}"} for d in result.dropped]
    elif result.status != "screened":
        notes.append({"text": f"not screened: {result.status} ({result.reason})"})
    if result.drivers:
        notes.append({"text": "drivers: " + "; ".join(result.drivers)})
    # In the R4B element order (resourceType first), as the model dumps it.
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": {"screened": "final", "incomplete": "preliminary"}.get(result.status, "cancelled"),
        "method": {
            "coding": [{"system": "urn:medscreen:model", "version": result.model_version, "code": "rare-disease-screener"}],
            "text": f"medscreen rare-disease screener {result.model_version}",
        },
        "subject": _subject(result.patient_id),
        "occurrenceDateTime": _date_time(result.screened_at),
    }
    if predictions:
        resource["prediction"] = predictions
    if notes:
        resource["note"] = notes
    return resource


def flag(result: ScreeningResult) -> Flag | None:
    """A clinical Flag for a flagged child, naming the reasons; None when not flagged."""
    resource = flag_json(result)
    return None if resource is None else Flag.model_validate(resource)


def flag_json(result: ScreeningResult) -> dict[str, Any] | None:
    """The Flag as ``flag(...).model_dump(mode="json", exclude_none=True)`` gives it; None when not flagged."""
    if not result.flagged:
        return None
    # The Flag is what an EMR shows as a banner: a disease named there reads as a diagnosis unless qualified, and a
    # risk means little without the threshold it was flagged at and the model that gave it.
    top = f"best-matching candidate, not a diagnosis: {result.candidates[0].name}" if result.candidates else "not a diagnosis"
    systems = ", ".join(result.organ_systems[:4]) or "several findings"
    return (
        {
            "resourceType": "Flag",
            "status": "active",
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/flag-category", "code": "clinical", "display": "Clinical"}
                    ]
                }
            ],
            "code": {
                "coding": [{"system": "urn:medscreen:flag", "code": "genetics-referral-suggested"}],
                "text": f"Consider a genetics referral: risk {result.risk:.3f}{_threshold_text(result.threshold, ' (', ')')}; "
                f"{systems}; {top}; medscreen rare-disease screener {result.model_version}",
            },
            "subject": _subject(result.patient_id),
            "period": {"start": _date_time(result.screened_at)},
        }
    )


def _threshold_text(threshold: float | None, before: str = "; ", after: str = " (flagged at or above)") -> str:
    """The alert threshold as the page shows it beside the risk ("" when the result had none: not scored)."""
    return "" if threshold is None else f"{before}alert threshold {threshold:.4g}{after}"


def _subject(patient_id: str) -> dict[str, Any]:
    """The child as a valid FHIR reference: a record id from a CSV extract can be any text ("MRN 12/34" had
    given "Patient/MRN 12/34", which an EMR rejects or resolves to another resource), so the reference uses the
    id the bundle reader names the Patient by (``fhir_id``), and the record id itself is kept as the identifier."""
    return {"reference": f"Patient/{fhir_id(patient_id)}", "identifier": {"value": patient_id}}


def _date_time(moment: datetime) -> str:
    """A FHIR dateTime as the resource models write it: UTC as ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")


def operation_outcome(errors: list[RecordError]) -> OperationOutcome:
    issues = [{"severity": "error", "code": "invalid", "diagnostics": f"{e.source} {e.record}: {e.reason}"} for e in errors]
    return OperationOutcome.model_validate(
        {
            "resourceType": "OperationOutcome",
            "issue": issues or [{"severity": "information", "code": "informational", "diagnostics": "all records read"}],
        }
    )


RECORDS_NAMED = 5  # per care team in a warning: a large Bundle's record ids are counted, not all listed


def unassigned_care_team_outcome(username: str, unassigned: dict[tuple[str, ...], list[str]]) -> OperationOutcome:
    """A warning per care team (practitioner, organisation) that the submitter's records named and they are not
    assigned to: those records were stored as the submitter's own patients (``screening.scope.child_of_record``),
    and the warning says so and how an admin assigns the care team."""
    issues = []
    for teams, patient_ids in unassigned.items():
        named = " and ".join(teams)
        more = len(patient_ids) - RECORDS_NAMED
        listed = ", ".join(patient_ids[:RECORDS_NAMED]) + (f" and {more} more" if more > 0 else "")
        option = next(
            (f"--organization {t}" for t in teams if t.startswith("Organization/")), f"--practitioner {teams[0]}"
        )
        issues.append({
            "severity": "warning",
            "code": "business-rule",
            "diagnostics": (
                f"{len(patient_ids)} record(s) ({listed}) name {named}, which you are not assigned to: stored as your "
                f"own patients, in your scope only; they do not withdraw, replace or repeat that care team's flags. "
                f"For your results to count as that care team's, an admin assigns you: "
                f"`medscreen screening assign {username} {option}`."
            ),
        })
    return OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": issues})

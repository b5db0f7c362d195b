"""Granting a model version a steering right from this site's confirmed studies, as one audited action.

Quality review is where a version can earn ``defer``: its results on the site's studies confirmed by final
reads are data from another source than its training data (unless it was retrained on this site's own
exports). The evidence is computed here, recorded with the version in the registry, and the right is
refused with the reasons when it falls short (``service/steering.py`` holds the thresholds' rule).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from quality.metrics import compute_metrics, load_paired_cases
from service.audit import record_audit
from service.errors import SteeringRefused
from service.lifecycle import SteeringRight
from service.model_registry import set_steering, version_of
from service.steering import DeferRules, SteeringEvidence

__all__ = ["site_evidence", "grant_steering"]


def site_evidence(session: Session, task: str, version: str, *, site: str, training_source: str) -> SteeringEvidence | None:
    """The version's figures on this site's confirmed studies (those it may have been trained on left out; intervals
    over patients when some have several studies); None when it has scored none of them."""
    cases = load_paired_cases(session, task=task, model_version=version)
    if not cases:
        return None
    metrics = compute_metrics(cases)
    return SteeringEvidence(
        kind="site-confirmed",
        source=site,
        n_studies=metrics.n,
        auroc_ci_low=float(metrics.auroc_ci_low),
        specificity=float(metrics.specificity.value),
        training_source=training_source,
        specificity_ci_low=float(metrics.specificity.ci_low),
        sensitivity=float(metrics.sensitivity.value),
        sensitivity_ci_low=float(metrics.sensitivity.ci_low),
        n_patients=metrics.n_patients,
    )


def grant_steering(
    session: Session, tracking_uri: str, task: str, version: str, right: SteeringRight, *, actor: str, site: str,
    rules: DeferRules,
) -> SteeringEvidence | None:
    """Record ``right`` with the version (``defer`` only on this site's evidence); audited, refusals too."""
    registered = version_of(tracking_uri, task, version)
    if registered is None:
        raise SteeringRefused(f"{task} version {version} is not registered")
    # A version retrained on this site's exports has seen these studies' source: they cannot validate it.
    trained_here = registered.tags.get("source") == "retrained"
    evidence = site_evidence(session, task, version, site=site, training_source=site if trained_here else "")
    detail = {"task": task, "version": version, "right": right.value, "evidence": evidence.to_json() if evidence else None}
    try:
        set_steering(tracking_uri, task, version, right, evidence=evidence, rules=rules, granted_by=actor)
    except SteeringRefused as exc:
        record_audit(session, actor, "model.steering_refused", "model", f"{task}:{version}", {**detail, "reason": str(exc)})
        raise
    record_audit(session, actor, "model.steering", "model", f"{task}:{version}", detail)
    return evidence

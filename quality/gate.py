"""Champion vs challenger on the same confirmed studies, the evaluation gate, and promotion/rollback as one
audited action.

The gate follows the Moscow radiology AI programme's minimum evidence: at least 400 studies confirmed by a final
read, at least 10% of them in each class. On them the challenger must be shown non-inferior to the champion: the
upper bound of the 95% interval of its paired sensitivity drop (the champion's sensitivity minus its own, on the
confirmed positives both scored; Tango's score interval, widened for patients with several studies) must be below
a margin (0.05), and the same for specificity on the confirmed negatives (a model's false positives move studies
ahead of others in the worklist; a retrain whose specificity fell from 0.98 to 0.88 on 220 negatives passed a
sensitivity-only gate). The gate had asked only for no significant drop (a one-sided exact McNemar test), which
passes any four net misses however few the positives: 0.95 -> 0.85 on 40 positives (p 0.0625). McNemar's p is
still reported, for information.
The studies compared are those both versions scored, so a challenger that fails on a kind of study would be
judged without it: above a set share of could-not-score studies among its read studies in intended use, the gate
refuses. Studies either version may have been trained on (exported for training before its first result) are
left out (``load_paired_cases``), and the comparison says how many.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm
from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.tables import ScoreResult
from quality.errors import GateRefused, RegistryError
from quality.metrics import PairedCase, QualityMetrics, UnscoredReads, compute_metrics, load_paired_cases
from quality.statistics import design_effect, paired_difference_interval
from service.audit import record_audit
from service.errors import SteeringRefused
from service.lifecycle import TASKS, ModelRole
from service.model_registry import (
    alias_version,
    check_steering_earned,
    move_champion,
    roll_back_champion,
    version_of,
)
from service.steering import DeferRules

__all__ = [
    "GateRules",
    "PairedCalls",
    "DropInterval",
    "Comparison",
    "GateDecision",
    "compare_versions",
    "evaluate_gate",
    "promote_through_gate",
    "registry_champion",
    "rollback_champion",
    "require_known_version",
]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class GateRules:
    min_studies: int = 400
    min_class_fraction: float = 0.10
    # The drops' intervals are two-sided (1 - alpha): their upper bound is a one-sided alpha / 2 test.
    alpha: float = 0.05
    # The site's MEDSCREEN_STEERING_DEFER_* thresholds: a version recorded defer without meeting them is refused.
    defer: DeferRules = field(default_factory=DeferRules)
    # MEDSCREEN_QUALITY_MAX_UNSCORED_SHARE: the challenger's could-not-score share of its read studies in intended use.
    max_unscored_share: float = 0.05
    # MEDSCREEN_QUALITY_GATE_MARGIN: the upper bound of the challenger's sensitivity (and specificity) drop against
    # the champion must be below it.
    margin: float = 0.05


@dataclass(frozen=True)
class PairedCalls:
    """Both versions' calls on the confirmed studies of one class: how many only one version called right."""

    studies: int
    patients: int
    champion_only: int  # called right by the champion only: the challenger's extra errors
    challenger_only: int
    # Of the per-study difference (champion right minus challenger right), by patient: 1 with one study each.
    design_effect: float = 1.0

    def drop(self, alpha: float) -> tuple[float, float, float]:
        """The champion's share called right minus the challenger's, with its two-sided (1 - alpha) interval."""
        z = float(norm.ppf(1 - alpha / 2)) * math.sqrt(self.design_effect)
        return paired_difference_interval(self.champion_only, self.challenger_only, self.studies, z=z)


@dataclass(frozen=True)
class DropInterval:
    """What the gate judged of one figure: the paired drop, its interval and the margin its upper bound must stay
    below."""

    figure: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    margin: float
    studies: int
    patients: int

    @property
    def non_inferior(self) -> bool:
        return self.ci_high < self.margin  # NaN (no studies of the class) is False: not shown

    def to_dict(self) -> dict[str, Any]:
        return {**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()},
                "non_inferior": self.non_inferior}


@dataclass(frozen=True)
class Comparison:
    task: str
    champion_version: str
    challenger_version: str
    n_paired: int
    champion: QualityMetrics
    challenger: QualityMetrics
    # Confirmed positives flagged by one version only: the discordant pairs of McNemar's test.
    positives_champion_only: int
    positives_challenger_only: int
    negatives_champion_only: int
    negatives_challenger_only: int
    # Exact one-sided McNemar p of each drop: reported for information, the gate decides on the drops' intervals.
    sensitivity_drop_p: float
    specificity_drop_p: float
    # Each version's read studies it left unscored (whatever the other did), and how many read studies it scored.
    champion_unscored: UnscoredReads = UnscoredReads()
    challenger_unscored: UnscoredReads = UnscoredReads()
    challenger_scored: int = 0
    positives: PairedCalls = PairedCalls(0, 0, 0, 0)
    negatives: PairedCalls = PairedCalls(0, 0, 0, 0)
    n_patients: int = 0
    # Read studies both versions scored, left out because either version may have been trained on them.
    left_out_trained_on: int = 0

    @property
    def challenger_unscored_share(self) -> float:
        return self.challenger_unscored.share_could_not_score(self.challenger_scored)

    @property
    def trained_on_note(self) -> str:
        if not self.left_out_trained_on:
            return "No study both versions scored was left out as training data."
        one = self.left_out_trained_on == 1
        return (
            f"{self.left_out_trained_on} {'study' if one else 'studies'} both versions scored and a radiologist read "
            f"{'is' if one else 'are'} left out of the comparison: exported for training before a version's first "
            f"result, {'it' if one else 'they'} may be in its training data."
        )

    def to_dict(self) -> dict[str, Any]:
        nested = ("champion", "challenger", "champion_unscored", "challenger_unscored", "positives", "negatives")
        out = {k: v for k, v in self.__dict__.items() if k not in nested}
        out["champion"] = self.champion.to_dict()
        out["challenger"] = self.challenger.to_dict()
        out["champion_unscored"] = self.champion_unscored.to_dict()
        out["challenger_unscored"] = self.challenger_unscored.to_dict()
        out["positives"] = dict(self.positives.__dict__)
        out["negatives"] = dict(self.negatives.__dict__)
        share = self.challenger_unscored_share
        out["challenger_unscored_share"] = None if share != share else share
        out["trained_on_note"] = self.trained_on_note
        return out


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    comparison: Comparison | None = None
    # Set by a promotion: the promoted version's steering right (it travels with the version, not the alias).
    steering: str | None = None
    # The sensitivity and specificity drops the gate judged, at its confidence and margin.
    drops: list[DropInterval] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "non_inferiority": {d.figure: d.to_dict() for d in self.drops},
            "comparison": self.comparison.to_dict() if self.comparison else None,
        }


def _latest_champion_version(cases: list[PairedCase], exclude: str) -> str | None:
    champions = [c for c in cases if c.role == ModelRole.champion and c.model_version != exclude]
    return max(champions, key=lambda c: c.scored_at).model_version if champions else None


def registry_champion(tracking_uri: str, task: str, challenger_version: str) -> str | None:
    """The version the registry's ``champion`` alias points at: the one a promotion of ``challenger_version`` would
    replace, so the one the gate must compare it with. None when there is none, when it is ``challenger_version``
    itself (a report of the champion compares it with the version that was champion before), or when the registry
    cannot be read (a warning; the version of the latest champion results is compared with instead).

    The latest champion results alone had chosen the version: after a rollback those are the withdrawn version's,
    so a challenger that missed as much as it did passed the gate against it and replaced the better champion."""
    try:
        champion = alias_version(tracking_uri, task, ModelRole.champion)
    except Exception as exc:  # noqa: BLE001 - a registry that cannot be read leaves the results to say
        log.warning("%s: the model registry cannot be read (%s: %s); comparing with the latest champion results",
                    task, type(exc).__name__, exc)
        return None
    if champion is None or champion.version == str(challenger_version):
        return None
    return champion.version


def compare_versions(
    session: Session, task: str, challenger_version: str, champion_version: str | None = None
) -> Comparison:
    """Both versions' figures on the studies both scored and a radiologist confirmed."""
    cases = load_paired_cases(session, task=task)
    champion_version = champion_version or _latest_champion_version(cases, challenger_version)
    if champion_version is None:
        raise RegistryError(f"no champion results for {task} to compare version {challenger_version} with")
    champion = {c.study_id: c for c in cases if c.model_version == champion_version}
    challenger = {c.study_id: c for c in cases if c.model_version == challenger_version}
    shared = sorted(champion.keys() & challenger.keys())
    trained_on_champion = cases.trained_on_of(task, champion_version)
    if not champion and not trained_on_champion:
        # The registry's champion, newly promoted, with no read study yet: nothing to judge the challenger against.
        raise RegistryError(f"no confirmed results of {task} champion v{champion_version} to compare version "
                            f"{challenger_version} with")
    trained_on_challenger = cases.trained_on_of(task, challenger_version)
    both_scored = (champion.keys() | trained_on_champion) & (challenger.keys() | trained_on_challenger)
    a = [champion[i] for i in shared]
    b = [challenger[i] for i in shared]
    pos_a_only = sum(1 for x, y in zip(a, b, strict=True) if x.truth and x.flagged and not y.flagged)
    pos_b_only = sum(1 for x, y in zip(a, b, strict=True) if x.truth and y.flagged and not x.flagged)
    neg_a_only = sum(1 for x, y in zip(a, b, strict=True) if not x.truth and x.flagged and not y.flagged)
    neg_b_only = sum(1 for x, y in zip(a, b, strict=True) if not x.truth and y.flagged and not x.flagged)
    # One-sided: is the champion-only share of discordant positives (the challenger's extra misses) larger than
    # chance would give? And the challenger-only share of discordant negatives (its extra false alarms)?
    p = _one_sided_mcnemar(pos_a_only, pos_b_only)
    p_specificity = _one_sided_mcnemar(neg_b_only, neg_a_only)
    return Comparison(
        task=task,
        champion_version=champion_version,
        challenger_version=challenger_version,
        n_paired=len(shared),
        champion=compute_metrics(a),
        challenger=compute_metrics(b),
        positives_champion_only=pos_a_only,
        positives_challenger_only=pos_b_only,
        negatives_champion_only=neg_a_only,
        negatives_challenger_only=neg_b_only,
        sensitivity_drop_p=p,
        specificity_drop_p=p_specificity,
        champion_unscored=cases.unscored_of(task, champion_version),
        challenger_unscored=cases.unscored_of(task, challenger_version),
        challenger_scored=len(challenger),
        positives=_paired_calls([(x, y) for x, y in zip(a, b, strict=True) if x.truth]),
        negatives=_paired_calls([(x, y) for x, y in zip(a, b, strict=True) if not x.truth]),
        n_patients=len({x.patient for x in a}),
        left_out_trained_on=len(both_scored) - len(shared),
    )


def _paired_calls(pairs: list[tuple[PairedCase, PairedCase]]) -> PairedCalls:
    """(champion, challenger) results on studies of one class: who called which right, with the patients."""
    champion_right = np.array([x.flagged == x.truth for x, _ in pairs], dtype=bool)
    challenger_right = np.array([y.flagged == y.truth for _, y in pairs], dtype=bool)
    patients = np.array([x.patient for x, _ in pairs], dtype=str)
    return PairedCalls(
        studies=len(pairs),
        patients=len(set(patients.tolist())),
        champion_only=int((champion_right & ~challenger_right).sum()),
        challenger_only=int((~champion_right & challenger_right).sum()),
        design_effect=design_effect(champion_right.astype(float) - challenger_right.astype(float), patients),
    )


def _one_sided_mcnemar(against: int, for_: int) -> float:
    """Exact one-sided McNemar p: ``against`` of the discordant pairs go against the challenger."""
    discordant = against + for_
    return float(binomtest(against, discordant, 0.5, alternative="greater").pvalue) if discordant else 1.0


def evaluate_gate(comparison: Comparison, rules: GateRules) -> GateDecision:
    reasons = []
    n = comparison.n_paired
    positives = comparison.challenger.n_positive
    negatives = n - positives
    if n < rules.min_studies:
        reasons.append(f"{n} confirmed studies scored by both versions; the gate needs at least {rules.min_studies}")
    for name, count in (("positive", positives), ("negative", negatives)):
        if n and count / n < rules.min_class_fraction:
            reasons.append(
                f"{count} {name} studies ({count / n:.1%}); the gate needs at least {rules.min_class_fraction:.0%} per class"
            )
    drops = []
    for figure, calls, kind, mcnemar, discordant in (
        ("sensitivity", comparison.positives, "positives", comparison.sensitivity_drop_p,
         f"{comparison.positives_champion_only} positives flagged by the champion only vs "
         f"{comparison.positives_challenger_only} by the challenger only"),
        ("specificity", comparison.negatives, "negatives", comparison.specificity_drop_p,
         f"{comparison.negatives_challenger_only} negatives flagged by the challenger only vs "
         f"{comparison.negatives_champion_only} by the champion only"),
    ):
        value, low, high = calls.drop(rules.alpha)
        drop = DropInterval(figure, value, low, high, 1 - rules.alpha, rules.margin, calls.studies, calls.patients)
        drops.append(drop)
        if drop.non_inferior:
            continue
        if not calls.studies:
            measured = f"no confirmed {kind} both versions scored"
        else:
            measured = (
                f"{figure} drop (champion's minus challenger's) {value:.3f}, {drop.confidence:.0%} interval "
                f"{low:.3f} to {high:.3f}, on {calls.studies} confirmed {kind} of {calls.patients} patients"
            )
        reasons.append(
            f"not enough evidence that {figure} is no more than {rules.margin:.2f} below champion "
            f"v{comparison.champion_version}'s: {measured}; the interval's upper bound must be below {rules.margin:.2f} "
            f"({discordant}; McNemar p={mcnemar:.4f}, for information)"
        )
    share = comparison.challenger_unscored_share
    if share > rules.max_unscored_share:  # NaN (nothing read in intended use) compares False: other rules refuse
        unscored = comparison.challenger_unscored
        reasons.append(
            f"challenger v{comparison.challenger_version} could not score {unscored.could_not_score} of the "
            f"{comparison.challenger_scored + unscored.could_not_score} studies in its intended use a radiologist read "
            f"({share:.1%}, {unscored.could_not_score_positive} of them read positive); the gate allows at most "
            f"{rules.max_unscored_share:.1%}: those studies are missing from the comparison"
        )
    return GateDecision(passed=not reasons, reasons=reasons, comparison=comparison, drops=drops)


def promote_through_gate(
    session: Session,
    tracking_uri: str,
    task: str,
    version: str,
    *,
    actor: str,
    rules: GateRules,
    force: bool = False,
) -> GateDecision:
    """Gate the version on this hospital's confirmed studies, then make it champion, in one audited step.

    The audit row is added to the caller's transaction before the alias moves: if MLflow refuses, the
    exception rolls the audit back; a refused gate is audited too (as ``model.promote_refused``). ``force``
    promotes despite a failed gate and the audit row says so.
    """
    promoted = version_of(tracking_uri, task, version)
    if promoted is None:
        raise RegistryError(f"{task} version {version} is not registered")
    # Compared with itself it had been "no champion results for <task> to compare version N with".
    champion = alias_version(tracking_uri, task, ModelRole.champion)
    if champion is not None and champion.version == promoted.version:
        raise RegistryError(f"{task} version {version} is already champion")
    # Against the champion it would replace, not the version whose champion results are the latest (after a
    # rollback, the withdrawn one).
    replaced = champion.version if champion is not None else None
    decision = evaluate_gate(compare_versions(session, task, version, replaced), rules)
    detail = {"task": task, "version": version, "gate": decision.to_dict(), "forced": force and not decision.passed}
    try:
        # A right the version's evidence does not earn is refused whatever the gate says (force included), and
        # audited as a refusal: raised by move_champion after the audit row, it had been a traceback (a 500 over
        # HTTP) with no record of the attempt.
        check_steering_earned(promoted, rules.defer)
    except SteeringRefused as exc:
        record_audit(session, actor, "model.promote_refused", "model", f"{task}:{version}", {**detail, "steering": str(exc)})
        raise GateRefused(str(exc)) from exc
    if not decision.passed and not force:
        record_audit(session, actor, "model.promote_refused", "model", f"{task}:{version}", detail)
        raise GateRefused("; ".join(decision.reasons))
    record_audit(session, actor, "model.promote", "model", f"{task}:{version}", detail)
    session.flush()
    # The hospital's own confirmed studies outrank the training-time validation AUROC rule of the registry.
    previous = move_champion(tracking_uri, task, version, rules=rules.defer)
    log.info("promoted %s v%s over v%s by %s (gate %s)", task, version, previous, actor, decision.passed)
    return replace(decision, steering=promoted.steering.value)


def rollback_champion(
    session: Session, tracking_uri: str, task: str, *, actor: str, rules: DeferRules | None = None
) -> tuple[str, str]:
    """Point ``champion`` back at the version the last promotion replaced; returns (from, to). from == to when the
    champion already is that version (a second rollback): nothing is moved or audited."""
    champion = alias_version(tracking_uri, task, ModelRole.champion)
    before = alias_version(tracking_uri, task, ModelRole.previous_champion)
    if champion is None or before is None:
        raise RegistryError(f"{task} has no champion and previous champion to roll back between")
    current, previous = champion.version, before.version
    if current == previous:
        # A second rollback (a retry, a second team member): the champion already is the version the last promotion
        # replaced. Nothing is moved or audited; a withdrawn version comes back only through promote_through_gate.
        log.info("%s: champion is already v%s, the version the last promotion replaced: nothing to roll back", task, current)
        return current, previous
    record_audit(session, actor, "model.rollback", "model", f"{task}:{previous}", {"task": task, "from": current, "to": previous})
    session.flush()
    # The site's defer rules: the version brought back keeps defer only while its evidence earns it under them.
    roll_back_champion(tracking_uri, task, rules=rules)
    log.info("rolled %s back from v%s to v%s by %s", task, current, previous, actor)
    return current, previous


def require_known_version(
    session: Session, tracking_uri: str, task: str, version: str, *, registered: bool = False
) -> None:
    """Refuse (RegistryError) a task that is not an imaging task, or a version with no results here that is not
    registered (``registered``: it must be registered, results or not). A report or figures of such a version (a
    typo: ``v1``, ``chest_xray``) had read "0 confirmed studies ... no study ... left unscored by this version"."""
    if task not in TASKS:
        raise RegistryError(f"{task} is not a task (one of {', '.join(TASKS)})")
    if not registered:
        results = select(ScoreResult.id).where(ScoreResult.task == task, ScoreResult.model_version == version).limit(1)
        if session.scalar(results) is not None:
            return
    if version_of(tracking_uri, task, version) is None:
        raise RegistryError(f"{task} version {version} is not registered")

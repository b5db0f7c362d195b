"""The priority policy: where a study goes in the radiologists' list, and why. A pure function, no I/O.

Each study gets a **due time**; the list is read earliest-due first (ties: higher champion score first).
A positive call *raises* a study by the policy's **raise** R = min(longest aging cap, urgent lead), default
90 min; a negative call from a version that earned `defer` *defers* a study, for at most the aging cap of its
modality. A study that has waited its cap is *settled*: back in its arrival place among everything settled.

| study | due time | tier |
|---|---|---|
| order priority STAT | arrival - `stat_lead` - R (default 24 h: above everything not STAT) | `stat` |
| order priority HIGH / URGENT / ASAP | arrival - `urgent_lead` - R (default 2 h) | `urgent` |
| champion call positive from a `raise-only` or `defer` version | arrival - R | `positive` |
| not scored yet, no model for it, could not score, outside the model's intended use, scoring failed | arrival | `unscored` |
| champion version with steering right `shadow` (recorded, never moves a study), any call | arrival | `unscored` |
| champion call negative from a `raise-only` version (the default: `defer` must be earned) | arrival | `unscored` |
| champion call negative from a `defer` version, waited less than the aging cap of its modality (default 90 min) | arrival + cap | `negative` |
| any of the four rows above once it has waited its modality's cap (settled) | arrival - R | its tier; `aged` for a deferred negative |

Why this shape:
- The order's clinical priority is a floor: the due time is the earliest of the order's and the model's,
  so a negative call never moves a STAT or urgent order down. Order leads count from the settled place
  (arrival - R), so an urgent order stays `urgent_lead` ahead of a positive or a settled study of the same
  arrival, as it was ahead of a plain arrival-order study before models moved anything.
- Only the champion's call moves a study; challengers run in shadow and never reach this function.
- A version moves a study only as far as its **steering right**, kept with the version in the registry
  (`service/steering.py`): deferring a negative makes a false negative wait, so only a version validated on
  data from another source may `defer`; a `raise-only` version moves positives up (ahead of the studies
  that arrived up to R before them and have not waited their cap) and leaves negatives in arrival order; a
  `shadow` version is shown and recorded and moves nothing. So `raise-only` and `shadow` never make a study
  due later than it would be without the model, nor later than its arrival (a property test checks it).
  The raise is what makes the list triage at all while no model has earned `defer`: before it, a positive
  from a `raise-only` version kept its arrival place (``benchmarks/prioritisation.py``: positives' mean wait
  +0% with the shipped rights, -36% with the raise).
- The call at the version's operating point, not the raw score, sets the tier: sensitivity and specificity
  were measured at that threshold. The score only breaks ties and is shown beside the call.
- A study the model could not judge is neither promoted nor demoted by it: it keeps the place a list
  without models would give it.
- **Aging cap**: once a study has waited its cap it is settled at arrival - R: ahead of every positive
  study that arrived after it, whether or not that one has been read yet, and behind those that arrived
  before it, as in FIFO. No study waits longer than its cap behind model-positive studies that came later.
  That bounds how long a study the model got wrong (a false negative), or one it could not judge, can be
  starved, and it costs the longest waits nothing: when the list is longer than the cap, the positives
  that passed a study are still unread when its cap runs out, and it goes back ahead of them
  (``benchmarks/prioritisation.py`` measures both effects). The recompute loop applies the change (with a
  recorded priority change) when the cap runs out; nothing else moves with time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from inference.score_text import score_and_threshold
from service.lifecycle import SteeringRight, WorklistState
from service.settings import Settings

__all__ = [
    "ChampionCall",
    "Priority",
    "PriorityPolicy",
    "StudyFacts",
    "TIERS",
    "TIER_LABELS",
    "tier_label",
    "policy_from_settings",
    "prioritise",
]

TIERS = ("stat", "urgent", "positive", "unscored", "aged", "negative")
# DICOM RequestedProcedurePriority (0040,1003) has STAT, HIGH, ROUTINE, MEDIUM, LOW; HL7 orders add ASAP/URGENT.
STAT_PRIORITIES = frozenset({"STAT"})
URGENT_PRIORITIES = frozenset({"HIGH", "URGENT", "ASAP"})

Tier = Literal["stat", "urgent", "positive", "unscored", "aged", "negative"]
# What people read: `unscored` holds every study in its arrival place, a raise-only model's scored negative too,
# so the page and the timeline call it "routine", as the RIS is told.
TIER_LABELS = {"unscored": "routine"}


def tier_label(tier: str) -> str:
    return TIER_LABELS.get(tier, tier)


@dataclass(frozen=True)
class ChampionCall:
    """What the champion model version said (only ``scored`` results reach the policy)."""

    call: Literal["positive", "negative"]
    score: float
    threshold: float
    model_name: str
    model_version: str
    # The version's SteeringRight value; a version without a recorded right is raise-only.
    steering: str = SteeringRight.raise_only.value


@dataclass(frozen=True)
class StudyFacts:
    """Everything the policy looks at for one study."""

    arrived_at: datetime
    modality: str
    order_priority: str = ""
    # awaiting_score, not_applicable, scored, could_not_score, out_of_scope, failed
    state: str = WorklistState.awaiting_score
    champion: ChampionCall | None = None


@dataclass(frozen=True)
class PriorityPolicy:
    aging_cap: timedelta = timedelta(minutes=60)
    aging_cap_by_modality: dict[str, timedelta] = field(default_factory=dict)
    stat_lead: timedelta = timedelta(hours=24)
    urgent_lead: timedelta = timedelta(hours=2)

    def cap_for(self, modality: str) -> timedelta:
        return self.aging_cap_by_modality.get(modality.upper(), self.aging_cap)

    @property
    def lift(self) -> timedelta:
        """R, how far a positive call moves a study up: the longest aging cap (a study it passes comes back ahead
        of it when that study's cap runs out), never more than the urgent lead."""
        return min(max([self.aging_cap, *self.aging_cap_by_modality.values()]), self.urgent_lead)


@dataclass(frozen=True)
class Priority:
    tier: Tier
    due_at: datetime
    # Orders studies due at the same instant: minus the champion score, so the likelier finding comes first.
    tie_break: float
    reason: str


def policy_from_settings(settings: Settings) -> PriorityPolicy:
    """The policy configured by the ``MEDSCREEN_WORKLIST_*`` settings."""
    minutes = timedelta(minutes=1)
    return PriorityPolicy(
        aging_cap=settings.worklist_aging_cap_minutes * minutes,
        aging_cap_by_modality={
            modality.upper(): value * minutes for modality, value in settings.worklist_aging_cap_by_modality.items()
        },
        stat_lead=settings.worklist_stat_lead_minutes * minutes,
        urgent_lead=settings.worklist_urgent_lead_minutes * minutes,
    )


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:g} min"


def _model_priority(facts: StudyFacts, policy: PriorityPolicy, now: datetime) -> Priority:
    champion = facts.champion
    cap, lift = policy.cap_for(facts.modality), policy.lift
    waited_cap = now - facts.arrived_at >= cap
    settled = f"; waited past the {_minutes(cap)} {facts.modality or 'default'} aging cap: settled in its arrival place"

    def in_place(tier: Tier, why: str, tie_break: float) -> Priority:
        """Arrival order; once the cap has run out, settled ahead of every positive that arrived later."""
        if waited_cap:
            return Priority(tier, facts.arrived_at - lift, tie_break, why + settled)
        return Priority(tier, facts.arrived_at, tie_break, why)

    if facts.state != WorklistState.scored or champion is None:
        reasons: dict[str, str] = {
            WorklistState.awaiting_score: "not scored yet",
            WorklistState.not_applicable: "no model for this study",
            WorklistState.could_not_score: "the model could not score it",
            WorklistState.out_of_scope: "outside the model's intended use, not scored",
            WorklistState.failed: "scoring failed",
        }
        return in_place("unscored", f"{reasons.get(facts.state, facts.state)}: arrival order", 0.0)
    # Enough decimals to tell the score from the threshold: the reason also goes to the RIS (ORC-16, NTE).
    score, threshold = score_and_threshold(champion.score, champion.threshold, digits=2)
    said = f"{champion.model_name} v{champion.model_version} {champion.call} (score {score}, threshold {threshold})"
    if champion.steering == SteeringRight.shadow:
        # Neither its call nor its score is in the reason: a shadow version's card says it must not be shown as
        # a finding, and the reason also goes to the RIS (ORC-16, NTE), which must get nothing of a shadow
        # model. The page shows the score itself, grey, as monitoring only.
        shadow = f"{champion.model_name} v{champion.model_version} recorded for monitoring"
        return in_place("unscored", f"{shadow}; shadow model, moves nothing: arrival order", 0.0)
    if champion.call == "positive":
        why = f"{said}: raised {_minutes(lift)}, ahead of studies that arrived up to {_minutes(lift)} before it"
        return Priority("positive", facts.arrived_at - lift, -champion.score, why)
    if champion.steering != SteeringRight.defer:
        # Anything but an earned `defer` (raise-only, or an unknown value) leaves a negative in its place.
        return in_place("unscored", f"{said}; raise-only model, a negative keeps its arrival place", -champion.score)
    if waited_cap:
        # The deferral is spent: back to the study's arrival place, ahead of every positive that came later.
        return Priority("aged", facts.arrived_at - lift, -champion.score, f"{said}{settled}")
    return Priority(
        "negative",
        facts.arrived_at + cap,
        -champion.score,
        f"{said}: due after the {_minutes(cap)} {facts.modality or 'default'} aging cap",
    )


def prioritise(facts: StudyFacts, policy: PriorityPolicy, now: datetime) -> Priority:
    """The study's place in the list at ``now``: a pure function of the order priority, the champion's call
    and score, and the time waited (see the module docstring for the rules)."""
    model = _model_priority(facts, policy, now)
    order = facts.order_priority.strip().upper()
    tier: Tier
    if order in STAT_PRIORITIES:
        lead, tier = policy.stat_lead, "stat"
    elif order in URGENT_PRIORITIES:
        lead, tier = policy.urgent_lead, "urgent"
    else:
        return model
    order_due = facts.arrived_at - lead - policy.lift
    if order_due <= model.due_at:
        # The order outranks what the model says: the model never lowers a STAT or urgent order.
        return Priority(
            tier, order_due, model.tie_break, f"order priority {order} (never lowered by the model); {model.reason}"
        )
    return model

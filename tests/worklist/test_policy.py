"""The priority policy as a pure function: order priority is a floor, only the call moves a study, a positive
is raised, the aging cap bounds how long any study waits behind later positives, unscored studies keep
arrival order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from service.settings import Settings
from worklist.policy import ChampionCall, PriorityPolicy, StudyFacts, policy_from_settings, prioritise

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
POLICY = PriorityPolicy(aging_cap=timedelta(minutes=60), aging_cap_by_modality={"MG": timedelta(hours=4)})


def scored(arrived: datetime, call: str, score: float, modality: str = "CR", order: str = "") -> StudyFacts:
    # A version that earned `defer`: these tests are about the deferral and its aging cap.
    champion = ChampionCall(call=call, score=score, threshold=0.5, model_name="chest-xray", model_version="3", steering="defer")  # type: ignore[arg-type]
    return StudyFacts(arrived_at=arrived, modality=modality, order_priority=order, state="scored", champion=champion)


def order_of(studies: dict[str, StudyFacts], now: datetime) -> list[str]:
    keyed = {name: prioritise(facts, POLICY, now) for name, facts in studies.items()}
    return sorted(keyed, key=lambda name: (keyed[name].due_at, keyed[name].tie_break))


def test_positive_goes_ahead_of_earlier_studies_within_the_raise() -> None:
    studies = {
        "neg-early": scored(T0, "negative", 0.1),
        "pos-later": scored(T0 + timedelta(minutes=30), "positive", 0.9),
        "unscored": StudyFacts(arrived_at=T0 + timedelta(minutes=10), modality="CR", state="awaiting_score"),
    }
    now = T0 + timedelta(minutes=40)
    assert order_of(studies, now) == ["pos-later", "unscored", "neg-early"]
    positive = prioritise(studies["pos-later"], POLICY, now)
    assert positive.tier == "positive" and positive.due_at == T0 + timedelta(minutes=30) - POLICY.lift
    assert POLICY.lift == timedelta(hours=2)  # the longest cap (MG, 4 h), held to the urgent lead
    assert "raised 120 min" in positive.reason
    assert prioritise(studies["unscored"], POLICY, now).reason == "not scored yet: arrival order"


def test_a_raise_only_positive_moves_up_and_its_negatives_keep_their_place() -> None:
    # The shipped chest model is raise-only: without the raise its positives kept their arrival place and the
    # list was FIFO at every new site.
    def raise_only(arrived: datetime, call: str, score: float) -> StudyFacts:
        champion = ChampionCall(call, score, 0.5, "chest-xray", "1", "raise-only")  # type: ignore[arg-type]
        return StudyFacts(arrived_at=arrived, modality="CR", state="scored", champion=champion)

    studies = {
        "neg": raise_only(T0, "negative", 0.1),
        "other": StudyFacts(arrived_at=T0 + timedelta(minutes=5), modality="CT", state="not_applicable"),
        "pos": raise_only(T0 + timedelta(minutes=20), "positive", 0.8),
    }
    now = T0 + timedelta(minutes=25)
    assert order_of(studies, now) == ["pos", "neg", "other"]
    assert prioritise(studies["neg"], POLICY, now).due_at == T0  # never later than its arrival
    # Once the negative has waited its cap (60 min for CR), it is back ahead of the positive that came later.
    assert order_of(studies, T0 + timedelta(minutes=60)) == ["neg", "pos", "other"]


def test_a_list_without_models_stays_in_arrival_order_as_studies_settle() -> None:
    rng = random.Random(3)
    policy = PriorityPolicy(aging_cap=timedelta(minutes=90))
    arrivals = sorted(T0 + timedelta(minutes=rng.uniform(0, 600)) for _ in range(200))
    studies = [StudyFacts(arrived_at=t, modality=rng.choice(["CR", "CT"]), state="awaiting_score") for t in arrivals]
    now = T0 + timedelta(minutes=600)
    keys = [(prioritise(facts, policy, now).due_at, i) for i, facts in enumerate(studies)]
    assert [i for _, i in sorted(keys)] == list(range(len(studies)))


def test_an_urgent_order_keeps_its_lead_over_positives_and_settled_studies() -> None:
    policy = PriorityPolicy(aging_cap=timedelta(minutes=90), urgent_lead=timedelta(minutes=120))
    settled = StudyFacts(arrived_at=T0, modality="CR", state="could_not_score")
    urgent = StudyFacts(arrived_at=T0 + timedelta(minutes=100), modality="CR", order_priority="URGENT", state="awaiting_score")
    positive = scored(T0 + timedelta(minutes=110), "positive", 0.99)
    now = T0 + timedelta(minutes=115)
    keyed = {name: prioritise(facts, policy, now) for name, facts in {"settled": settled, "urgent": urgent, "pos": positive}.items()}
    assert sorted(keyed, key=lambda name: keyed[name].due_at) == ["urgent", "settled", "pos"]
    # An urgent order is urgent_lead ahead of a settled study or a positive of the same arrival.
    assert keyed["urgent"].due_at == urgent.arrived_at - timedelta(minutes=120) - policy.lift


def test_aging_cap_stops_later_positives_from_overtaking() -> None:
    negative = scored(T0, "negative", 0.2)
    after_cap = scored(T0 + timedelta(minutes=61), "positive", 0.99)
    now = T0 + timedelta(minutes=62)
    assert order_of({"neg": negative, "pos": after_cap}, now) == ["neg", "pos"]
    aged = prioritise(negative, POLICY, now)
    assert aged.tier == "aged" and "waited past the 60 min CR aging cap" in aged.reason
    assert prioritise(negative, POLICY, T0 + timedelta(minutes=59)).tier == "negative"


def test_a_study_whose_cap_ran_out_goes_back_ahead_of_later_positives() -> None:
    negative = scored(T0, "negative", 0.2)
    within_cap = scored(T0 + timedelta(minutes=30), "positive", 0.9)
    studies = {"neg": negative, "pos": within_cap}
    assert order_of(studies, T0 + timedelta(minutes=45)) == ["pos", "neg"]
    assert order_of(studies, T0 + timedelta(minutes=60)) == ["neg", "pos"]
    assert prioritise(negative, POLICY, T0 + timedelta(minutes=60)).due_at == T0 - POLICY.lift


def test_per_modality_cap() -> None:
    mammogram = scored(T0, "negative", 0.2, modality="MG")
    assert prioritise(mammogram, POLICY, T0).due_at == T0 + timedelta(hours=4)
    assert Settings().worklist_aging_cap_minutes == 90
    settings = Settings(worklist_aging_cap_minutes=45, worklist_aging_cap_by_modality={"ct": 20})
    policy = policy_from_settings(settings)
    assert policy.cap_for("CT") == timedelta(minutes=20) and policy.cap_for("CR") == timedelta(minutes=45)


def test_order_priority_is_never_lowered_by_a_negative_call() -> None:
    stat_negative = scored(T0 + timedelta(hours=3), "negative", 0.01, order="STAT")
    urgent_negative = scored(T0 + timedelta(minutes=30), "negative", 0.01, order="HIGH")
    early_positive = scored(T0, "positive", 0.99)
    now = T0 + timedelta(hours=3)
    assert order_of({"pos": early_positive, "stat": stat_negative, "urgent": urgent_negative}, now) == [
        "stat",
        "urgent",
        "pos",
    ]
    stat = prioritise(stat_negative, POLICY, now)
    assert stat.tier == "stat" and stat.reason.startswith("order priority STAT (never lowered by the model)")
    unscored_stat = StudyFacts(arrived_at=T0, modality="CT", order_priority="stat", state="could_not_score")
    assert prioritise(unscored_stat, POLICY, now).tier == "stat"


def test_higher_score_breaks_ties() -> None:
    assert order_of({"low": scored(T0, "positive", 0.6), "high": scored(T0, "positive", 0.95)}, T0) == ["high", "low"]


def test_could_not_score_keeps_arrival_order_with_its_state() -> None:
    facts = StudyFacts(arrived_at=T0, modality="CT", state="could_not_score")
    assert prioritise(facts, POLICY, T0 + timedelta(minutes=30)).reason == "the model could not score it: arrival order"
    priority = prioritise(facts, POLICY, T0 + timedelta(hours=5))
    assert (priority.tier, priority.due_at) == ("unscored", T0 - POLICY.lift)
    assert priority.reason.startswith("the model could not score it: arrival order; waited past the 60 min CT aging cap")


def test_no_study_waits_past_its_cap_behind_a_later_positive() -> None:
    # The guarantee in the policy's docstring, over a random day of arrivals: every study that has waited
    # its cap is ahead of every positive study that arrived after it.
    rng = random.Random(7)
    studies = {}
    for index in range(400):
        arrived = T0 + timedelta(minutes=rng.uniform(0, 600))
        call = "positive" if rng.random() < 0.2 else "negative"
        facts = scored(arrived, call, rng.random(), modality=rng.choice(["CR", "MG", "CT"]))
        kind = rng.random()
        if kind < 0.2:  # not scored
            facts = StudyFacts(arrived_at=arrived, modality=facts.modality, state="could_not_score")
        elif kind < 0.5 and facts.champion is not None:  # a raise-only version's call
            facts = StudyFacts(arrived, facts.modality, "", "scored", ChampionCall(call, facts.champion.score, 0.5, "m", "1", "raise-only"))  # type: ignore[arg-type]
        studies[f"s{index}"] = facts
    now = T0 + timedelta(minutes=600)
    order = order_of(studies, now)
    place = {name: i for i, name in enumerate(order)}
    for name, facts in studies.items():
        if not (facts.champion and facts.champion.call == "positive"):
            cap = POLICY.cap_for(facts.modality)
            for other, later in studies.items():
                waited_cap = now - facts.arrived_at >= cap
                later_positive = (
                    later.champion and later.champion.call == "positive" and later.arrived_at > facts.arrived_at
                )
                if waited_cap and later_positive:
                    assert place[name] < place[other]

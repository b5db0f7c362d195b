"""Property: a model version with steering right `raise-only` or `shadow` never makes any study due later than
it would be with no model at all; only an earned `defer` may (and then by at most the aging cap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from worklist.policy import ChampionCall, PriorityPolicy, StudyFacts, prioritise

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

policies = st.builds(
    PriorityPolicy,
    aging_cap=st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(hours=12)),
    aging_cap_by_modality=st.dictionaries(
        st.sampled_from(["CR", "DX", "MG", "CT"]), st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(hours=12))
    ),
)
calls = st.builds(
    ChampionCall,
    call=st.sampled_from(["positive", "negative"]),
    score=st.floats(0, 1),
    threshold=st.floats(0.01, 0.99),
    model_name=st.sampled_from(["chest-xray", "mammography", "ct-chest"]),
    model_version=st.sampled_from(["1", "2", "17"]),
    steering=st.sampled_from(["raise-only", "shadow"]),
)
facts = st.builds(
    StudyFacts,
    arrived_at=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)),
    modality=st.sampled_from(["CR", "DX", "MG", "CT", ""]),
    order_priority=st.sampled_from(["", "ROUTINE", "STAT", "HIGH", "LOW"]),
    state=st.just("scored"),
    champion=calls,
)


@settings(max_examples=400, deadline=None)
@given(facts, policies, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
def test_raise_only_and_shadow_never_delay_a_study(study: StudyFacts, policy: PriorityPolicy, waited: timedelta) -> None:
    now = study.arrived_at + waited
    with_model = prioritise(study, policy, now)
    without_model = prioritise(StudyFacts(study.arrived_at, study.modality, study.order_priority, "awaiting_score"), policy, now)
    assert with_model.due_at <= without_model.due_at
    assert with_model.due_at <= study.arrived_at
    assert study.champion is not None
    if study.champion.steering == "shadow":
        assert (with_model.tier, with_model.due_at) == (without_model.tier, without_model.due_at)


def test_only_an_earned_defer_defers_a_negative() -> None:
    policy = PriorityPolicy(aging_cap=timedelta(minutes=90))
    negative = {right: StudyFacts(T0, "CR", "", "scored", ChampionCall("negative", 0.1, 0.5, "chest-xray", "1", right))
                for right in ("defer", "raise-only", "shadow")}
    assert prioritise(negative["defer"], policy, T0).due_at == T0 + timedelta(minutes=90)
    raise_only = prioritise(negative["raise-only"], policy, T0)
    assert raise_only.due_at == T0 and "raise-only" in raise_only.reason
    shadow = prioritise(negative["shadow"], policy, T0)
    assert shadow.due_at == T0 and "shadow" in shadow.reason
    positive = StudyFacts(T0, "CR", "", "scored", ChampionCall("positive", 0.9, 0.5, "chest-xray", "1", "raise-only"))
    assert prioritise(positive, policy, T0).tier == "positive"
    shadow_positive = StudyFacts(T0, "CR", "", "scored", ChampionCall("positive", 0.9, 0.5, "ct-chest", "1", "shadow"))
    assert prioritise(shadow_positive, policy, T0).tier == "unscored"

"""A simulated reading room: FIFO vs the worklist policy on the same days of arrivals and reads.

    python benchmarks/prioritisation.py [--days 15] [--per-day 400] [--seeds 20] [--cap-minutes 60]

Each study gets a true finding (task prevalence) and a champion call drawn with the model's measured
sensitivity and specificity per study, read from ``models/<task>/metrics.json`` (a task without a shipped bundle
uses the assumed figures printed at the top). A series model's headline is per patch (ct-chest: reader-mark
patches against candidate patches), not per series: its series figures are used, and while they lack series
without a finding (no series specificity) its studies get no model call: arrival order, as without a model, and
left out of the missed and model-negative rows; the reason is printed. 5% of orders are STAT and 2% of studies
cannot be scored.
Radiologists work shifts; arrivals peak in the day, so a backlog builds by the afternoon and drains at
night. The baseline is the same policy with the model taken out (``prioritise`` with no champion): STAT
orders first, then arrival order, which is what a list without AI does. The policy run uses
``worklist.policy.prioritise`` itself, with the default settings' aging cap. The first day (empty list) is
not counted. Reported: mean wait of truly positive studies (goal: 30% shorter), and the p99 wait of
studies the model called negative under the policy against FIFO's p99 of all studies (goal: no worse).
A short run may count no positive the model missed: that row says n/a; one seed gives no interval.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.percentiles import percentile  # noqa: E402
from quality.statistics import wilson_interval  # noqa: E402
from service.settings import Settings  # noqa: E402
from worklist.policy import ChampionCall, PriorityPolicy, StudyFacts, policy_from_settings, prioritise  # noqa: E402

HOUR = 3600.0
T0 = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True)
class TaskMix:
    task: str
    modality: str
    share: float
    prevalence: float
    read_minutes: float  # median reading time
    sensitivity: float | None  # per study; None: no per-study figures, so no model call is simulated
    specificity: float | None
    measured: bool
    steering: str  # the shipped version's steering right (raise-only without a bundle), or --steering
    source: str = ""  # where the figures come from, or why there are none


# Shares, prevalences and reading times of a general hospital's imaging triage list; sensitivity and
# specificity here are only used when the task ships no metrics.json.
TASKS = [
    ("chest-xray", "DX", 0.70, 0.15, 4.0, 0.90, 0.90),
    ("mammography", "MG", 0.20, 0.02, 6.0, 0.85, 0.90),
    ("ct-chest", "CT", 0.10, 0.10, 15.0, 0.85, 0.85),
]
# Hourly arrival weights (00h..23h): quiet night, a peak from 08h to 18h.
ARRIVAL_PROFILE = [1, 1, 1, 1, 1, 1, 2, 3, 6, 8, 8, 8, 7, 7, 8, 8, 7, 6, 4, 3, 2, 2, 1, 1]
# Reader shifts as (start hour, end hour); an end past 24 runs into the next morning.
SHIFTS = [(8, 20), (8, 20), (8, 17), (20, 32)]


def per_study_rates(metrics: dict) -> tuple[float | None, float | None, str]:
    """(sensitivity, specificity, source) per study from a bundle's ``metrics.json``.

    A series model (``series_validation``: ct-chest) states its headline per patch: reader-mark patches against
    candidate patches away from every mark. Those are no study's chance of a call: a mark the candidate step never
    finds counts as found there, and one candidate of hundreds reaching the threshold calls the series. Its series
    figures are used instead, and without series of both kinds there are none: (None, None, why).
    """
    headline = metrics["headline"]
    series = metrics.get("series_validation")
    if series is None:
        return headline["sensitivity"], headline["specificity"], "metrics.json"
    threshold = headline["threshold"]
    with_finding = [s for s in series if s["positive_marks"] > 0]
    without = [s for s in series if s["positive_marks"] == 0]
    called = sum(s["series_score"] >= threshold for s in with_finding)
    cleared = sum(s["series_score"] < threshold for s in without)
    if with_finding and without:
        return called / len(with_finding), cleared / len(without), "metrics.json series_validation, per series"
    low, high = wilson_interval(called, len(with_finding))
    return None, None, (
        f"the {headline['sensitivity']:.3f}/{headline['specificity']:.3f} of its metrics.json are per reader-mark patch and per "
        f"candidate patch, not per series; series called {called} of {len(with_finding)} with a finding (95% CI "
        f"{low:.2f}-{high:.2f}) and {len(without)} without one, so no series specificity"
    )


def load_tasks(steering: str = "shipped") -> list[TaskMix]:
    """The task mix; ``steering`` "shipped" gives each task its bundle's steering right, else that right for all."""
    mix = []
    for task, modality, share, prevalence, read_minutes, assumed_sensitivity, assumed_specificity in TASKS:
        metrics_path = REPO / "models" / task / "metrics.json"
        bundle_path = REPO / "models" / task / "bundle.json"
        measured = metrics_path.exists()
        sensitivity: float | None = assumed_sensitivity
        specificity: float | None = assumed_specificity
        source = "assumed (no shipped bundle)"
        if measured:
            sensitivity, specificity, source = per_study_rates(json.loads(metrics_path.read_text()))
        right = steering
        if steering == "shipped":
            shipped = json.loads(bundle_path.read_text()).get("steering", {}) if bundle_path.exists() else {}
            right = str(shipped.get("right", "raise-only"))
        mix.append(TaskMix(task, modality, share, prevalence, read_minutes, sensitivity, specificity, measured, right, source))
    return mix


@dataclass
class SimStudy:
    arrived: float  # seconds since T0
    modality: str
    truly_positive: bool
    model_call: str | None  # None: could not be scored, or no model call simulated (has_model False)
    score: float
    stat: bool
    read_s: float
    steering: str
    has_model: bool = True


def simulate_arrivals(rng: random.Random, days: int, per_day: int, mix: list[TaskMix]) -> list[SimStudy]:
    studies = []
    weights = [w / sum(ARRIVAL_PROFILE) for w in ARRIVAL_PROFILE]
    for day in range(days):
        for hour, weight in enumerate(weights):
            for _ in range(_poisson(rng, per_day * weight)):
                task = rng.choices(mix, weights=[t.share for t in mix])[0]
                truth = rng.random() < task.prevalence
                sensitivity, specificity = task.sensitivity, task.specificity
                has_model = sensitivity is not None and specificity is not None
                call, score = None, 0.0
                if rng.random() >= 0.02:
                    # Drawn for every task, so a task without a model call leaves the others' draws unchanged.
                    draw, spread = rng.random(), rng.random()
                    if sensitivity is not None and specificity is not None:
                        positive = draw < (sensitivity if truth else 1 - specificity)
                        call = "positive" if positive else "negative"
                        score = 0.5 + 0.5 * spread if positive else 0.5 * spread
                read_s = 60 * task.read_minutes * math.exp(rng.gauss(0, 0.5))
                arrived = (day * 24 + hour + rng.random()) * HOUR
                studies.append(
                    SimStudy(arrived, task.modality, truth, call, score, rng.random() < 0.05, read_s, task.steering, has_model)
                )
    return sorted(studies, key=lambda s: s.arrived)


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: fine for the small hourly means here.
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _facts(study: SimStudy, with_model: bool) -> StudyFacts:
    arrived = T0 + timedelta(seconds=study.arrived)
    order = "STAT" if study.stat else "ROUTINE"
    if not with_model or not study.has_model:
        return StudyFacts(arrived_at=arrived, modality=study.modality, order_priority=order, state="not_applicable")
    if study.model_call is None:
        return StudyFacts(arrived_at=arrived, modality=study.modality, order_priority=order, state="could_not_score")
    champion = ChampionCall(study.model_call, study.score, 0.5, "sim", "1", study.steering)  # type: ignore[arg-type]
    return StudyFacts(
        arrived_at=arrived, modality=study.modality, order_priority=order, state="scored", champion=champion
    )


def _next_on_shift(t: float, shift: tuple[int, int]) -> float:
    """The first moment at or after ``t`` inside the reader's daily shift."""
    start, end = shift
    day = math.floor(t / (24 * HOUR))
    for d in (day - 1, day, day + 1):
        window = ((d * 24 + start) * HOUR, (d * 24 + end) * HOUR)
        if t < window[1]:
            return max(t, window[0])
    return ((day + 1) * 24 + start) * HOUR


def run_day(studies: list[SimStudy], policy: PriorityPolicy, with_model: bool) -> list[float]:
    """Waits (arrival to start of read, seconds) of every study, in the order of ``studies``.

    A study's place can change once as time passes, when its modality's aging cap runs out; the policy is
    asked for its place at arrival and again at that moment, and the queue holds both entries (the stale one
    is skipped when it comes up).
    """
    first_keys: list[tuple[float, float]] = []
    later: list[tuple[float, float, float] | None] = []
    for study in studies:
        facts = _facts(study, with_model)
        arrived = T0 + timedelta(seconds=study.arrived)
        first = prioritise(facts, policy, arrived)
        first_keys.append(((first.due_at - T0).total_seconds(), first.tie_break))
        changes_at = arrived + policy.cap_for(study.modality)
        aged = prioritise(facts, policy, changes_at)
        if (aged.due_at, aged.tie_break) != (first.due_at, first.tie_break):
            later.append(((changes_at - T0).total_seconds(), (aged.due_at - T0).total_seconds(), aged.tie_break))
        else:
            later.append(None)
    waits = [-1.0] * len(studies)
    free_at = [0.0] * len(SHIFTS)
    queue: list[tuple[float, float, int]] = []
    agings: list[tuple[float, int]] = []
    next_arrival, read = 0, 0
    while read < len(studies):
        reader = min(range(len(SHIFTS)), key=lambda r: _next_on_shift(free_at[r], SHIFTS[r]))
        ready = _next_on_shift(free_at[reader], SHIFTS[reader])
        if next_arrival < len(studies) and studies[next_arrival].arrived <= ready:
            heapq.heappush(queue, (*first_keys[next_arrival], next_arrival))
            change = later[next_arrival]
            if change is not None:
                heapq.heappush(agings, (change[0], next_arrival))
            next_arrival += 1
            continue
        while agings and agings[0][0] <= ready:
            _, index = heapq.heappop(agings)
            if waits[index] < 0:
                change = later[index]
                assert change is not None
                heapq.heappush(queue, (change[1], change[2], index))
        while queue and waits[queue[0][2]] >= 0:
            heapq.heappop(queue)  # already read: a stale entry
        if not queue:
            free_at[reader] = studies[next_arrival].arrived
            continue
        _, _, index = heapq.heappop(queue)
        waits[index] = ready - studies[index].arrived
        free_at[reader] = ready + studies[index].read_s
        read += 1
    return waits


def _mean(values: Iterable[float]) -> float:
    """The mean of the values that are numbers; NaN when there is none. A short run may count no positive, or
    miss none (statistics.mean had raised), and a seed without a group is left out of the mean over seeds."""
    numbers = [v for v in values if not math.isnan(v)]
    return statistics.mean(numbers) if numbers else math.nan


def _shown(value: float, spec: str, missing: str = "n/a") -> str:
    return missing if math.isnan(value) else format(value, spec)


def _difference(diff: float, error: float | None) -> str:
    """The paired p99 difference with its standard error; one seed has none, and says so instead of '± nan'."""
    if math.isnan(diff):
        return "n/a (no model-negative study counted)"
    return f"{diff:+.1f} ± {error:.1f}" if error is not None else f"{diff:+.1f} (one seed: no interval)"


def _at_least(minimum: int, why: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value} ({why})")
        return value

    return parse


def simulate(policy: PriorityPolicy, mix: list[TaskMix], days: int, per_day: int, seed: int) -> dict[str, float]:
    """One seed: the same arrivals and reading times under FIFO and under the policy; figures in minutes."""
    studies = simulate_arrivals(random.Random(seed), days, per_day, mix)
    fifo = run_day(studies, policy, with_model=False)
    ai = run_day(studies, policy, with_model=True)
    counted = [i for i, s in enumerate(studies) if s.arrived >= 24 * HOUR and not s.stat]
    positives = [i for i in counted if studies[i].truly_positive]
    model_negative = [i for i in counted if studies[i].model_call == "negative"]
    missed = [i for i in positives if studies[i].has_model and studies[i].model_call != "positive"]
    minute = 60.0
    return {
        "n": len(counted),
        "n_pos": len(positives),
        "fifo_tp_mean": _mean(fifo[i] for i in positives) / minute,
        "ai_tp_mean": _mean(ai[i] for i in positives) / minute,
        "fifo_p99_all": percentile((fifo[i] for i in counted), 99) / minute,
        "fifo_p99_neg": percentile((fifo[i] for i in model_negative), 99) / minute,
        "ai_p99_neg": percentile((ai[i] for i in model_negative), 99) / minute,
        "fifo_missed_mean": _mean(fifo[i] for i in missed) / minute,
        "ai_missed_mean": _mean(ai[i] for i in missed) / minute,
        "ai_missed_max": max((ai[i] for i in missed), default=math.nan) / minute,
        "fifo_all_mean": _mean(fifo[i] for i in counted) / minute,
        "ai_all_mean": _mean(ai[i] for i in counted) / minute,
    }


def summarise(rows: list[dict[str, float]]) -> tuple[float, float, float | None]:
    """Relative change of the positives' mean wait (NaN without positives); mean and standard error of (policy p99
    of model-negative studies - FIFO p99 of all studies), paired by seed: no error from fewer than two seeds."""
    fifo_tp = _mean(r["fifo_tp_mean"] for r in rows)
    change = (_mean(r["ai_tp_mean"] for r in rows) - fifo_tp) / fifo_tp if fifo_tp > 0 else math.nan
    diffs = [d for d in (r["ai_p99_neg"] - r["fifo_p99_all"] for r in rows) if not math.isnan(d)]
    error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return change, _mean(diffs), error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--days", type=_at_least(2, "day 1 starts from an empty list and is not counted"), default=15,
        help="simulated days, 2 or more (default 15)",
    )
    parser.add_argument("--per-day", type=_at_least(1, "studies per day"), default=400, help="mean studies per day")
    parser.add_argument("--seeds", type=_at_least(1, "runs"), default=20, help="runs (default 20; one gives no interval)")
    parser.add_argument("--cap-minutes", type=float, default=None, help="aging cap (default: the settings default)")
    parser.add_argument("--sweep", action="store_true", help="also print the trade-off over a range of aging caps")
    parser.add_argument(
        "--steering",
        choices=("shipped", "raise-only", "defer"),
        default="shipped",
        help="each model's steering right: the shipped bundles' (default), or one right for all models",
    )
    args = parser.parse_args(argv)

    settings = Settings() if args.cap_minutes is None else Settings(worklist_aging_cap_minutes=args.cap_minutes)
    policy = policy_from_settings(settings)
    mix = load_tasks(args.steering)
    for task in mix:
        where = f"models/{task.task}/{task.source}" if task.measured else task.source
        described = f"{task.task:12s} share {task.share:.0%} prevalence {task.prevalence:.0%} read {task.read_minutes:g} min "
        if task.sensitivity is None or task.specificity is None:
            print(
                f"{described}no model call simulated (arrival order, as without a model; not in the missed or "
                f"model-negative rows): {task.source}"
            )
            continue
        print(
            f"{described}sensitivity {task.sensitivity:.3f} specificity {task.specificity:.3f} steering {task.steering} [{where}]"
        )
    cap = policy.aging_cap.total_seconds() / 60
    print(
        f"aging cap {cap:g} min; reader shifts {SHIFTS}; {args.per_day} studies/day; "
        f"{args.days} days x {args.seeds} seeds (day 1 not counted; STAT orders not counted: first in both)"
    )
    rows = [simulate(policy, mix, args.days, args.per_day, seed) for seed in range(args.seeds)]

    def mean(key: str) -> float:
        return _mean(row[key] for row in rows)

    change, p99_diff, p99_error = summarise(rows)
    print(f"{mean('n'):.0f} routine studies per seed, {mean('n_pos'):.0f} truly positive")
    print()
    print("| minutes (mean over seeds) | FIFO | policy |")
    print("|---|---|---|")
    no_positive, no_change = "no truly positive study counted", "no FIFO wait to shorten"
    if math.isnan(mean("fifo_tp_mean")):
        print(f"| mean wait, truly positive studies | n/a ({no_positive}) | |")
    else:
        print(
            f"| mean wait, truly positive studies | {mean('fifo_tp_mean'):.1f} | {mean('ai_tp_mean'):.1f} "
            f"({_shown(change, '+.0%', no_change)}) |"
        )
    longest = max((r["ai_missed_max"] for r in rows if not math.isnan(r["ai_missed_max"])), default=math.nan)
    if math.isnan(longest):
        print("| mean wait, positives the model missed | n/a (no missed positives) | |")
    else:
        print(
            f"| mean wait, positives the model missed | {mean('fifo_missed_mean'):.1f} | {mean('ai_missed_mean'):.1f} "
            f"(longest {longest:.0f}) |"
        )
    print(f"| mean wait, all routine studies | {mean('fifo_all_mean'):.1f} | {mean('ai_all_mean'):.1f} |")
    print(
        f"| p99 wait: FIFO all studies / policy model-negative studies | {_shown(mean('fifo_p99_all'), '.0f')} | "
        f"{_shown(mean('ai_p99_neg'), '.0f')} |"
    )
    print(f"| p99 wait, model-negative studies | {_shown(mean('fifo_p99_neg'), '.0f')} | {_shown(mean('ai_p99_neg'), '.0f')} |")
    print()
    if math.isnan(change):
        print(f"goal 1, positives' mean wait down >= 30%: n/a ({no_positive if math.isnan(mean('fifo_tp_mean')) else no_change})")
    else:
        print(f"goal 1, positives' mean wait down >= 30%: {'met' if change <= -0.30 else 'NOT met'} ({change:+.1%})")
    if math.isnan(p99_diff):
        verdict = "n/a"
    elif p99_diff <= 0:
        verdict = "met"
    else:
        verdict = "within noise" if p99_error is not None and p99_diff <= 2 * p99_error else "NOT met"
    if math.isnan(p99_diff):
        detail = "no model-negative study counted"
    elif p99_error is None:
        detail = f"policy - FIFO = {p99_diff:+.1f} min; one seed: no interval"
    else:
        detail = f"policy - FIFO = {p99_diff:+.1f} ± {p99_error:.1f} min, paired over seeds"
    print(f"goal 2, model-negative p99 no worse than FIFO p99: {verdict} ({detail})")
    if args.sweep:
        print()
        print("| aging cap (min) | positives' mean wait | p99 model-negative - FIFO p99 (min) |")
        print("|---|---|---|")
        for sweep_cap in (1, 15, 30, 45, 60, 90, 120, 240):
            sweep_policy = policy_from_settings(Settings(worklist_aging_cap_minutes=sweep_cap))
            sweep_rows = [simulate(sweep_policy, mix, args.days, args.per_day, seed) for seed in range(args.seeds)]
            sweep_change, diff, error = summarise(sweep_rows)
            print(f"| {sweep_cap} | {_shown(sweep_change, '+.0%')} | {_difference(diff, error)} |")


if __name__ == "__main__":
    main()

"""Routing: map a complete study to a model task with declarative rules (``default_routes.yaml``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from inference.errors import RoutingRulesError
from inference.records import RoutedStudy
from service.lifecycle import TASKS

__all__ = ["RouteRule", "RoutingRules", "load_rules", "DEFAULT_RULES_FILE", "KNOWN_TASKS"]

DEFAULT_RULES_FILE = Path(__file__).with_name("default_routes.yaml")
KNOWN_TASKS = TASKS
_ROUTABLE_HEADERS = {
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ViewPosition",
    "Laterality",
    "SOPClassUID",
    "Manufacturer",
    "StationName",
}


@dataclass(frozen=True)
class RouteRule:
    name: str
    task: str
    modalities: frozenset[str]
    any_header_matches: Mapping[str, re.Pattern[str]] = field(default_factory=dict)

    def match(self, headers: Mapping[str, str]) -> str | None:
        """None when the series matches; otherwise why not."""
        modality = headers.get("Modality", "")
        if modality not in self.modalities:
            return f"modality {modality or '(none)'} is not {'/'.join(sorted(self.modalities))}"
        if not self.any_header_matches:
            return None
        for keyword, pattern in self.any_header_matches.items():
            if pattern.search(headers.get(keyword, "") or ""):
                return None
        shown = ", ".join(f"{k}={headers.get(k, '')!r}" for k in self.any_header_matches)
        return f"none of {shown} matches"


@dataclass(frozen=True)
class RoutingRules:
    rules: tuple[RouteRule, ...]

    def route(self, study_instance_uid: str, revision: int, series_headers: Iterable[Mapping[str, str]]) -> RoutedStudy:
        series = list(series_headers)
        if not series:
            return RoutedStudy(study_instance_uid, revision, None, None, ["the study has no series"])
        reasons: list[str] = []
        for rule in self.rules:
            misses = []
            for headers in series:
                why_not = rule.match(headers)
                if why_not is None:
                    return RoutedStudy(study_instance_uid, revision, rule.task, rule.name)
                misses.append(why_not)
            reasons.append(f"{rule.name}: {'; '.join(sorted(set(misses)))}")
        return RoutedStudy(study_instance_uid, revision, None, None, reasons)


def _compile_rule(index: int, raw: object) -> RouteRule:
    if not isinstance(raw, dict):
        raise RoutingRulesError(f"rule {index + 1} is not a mapping")
    name = str(raw.get("name") or f"rule-{index + 1}")
    task = raw.get("task")
    if task not in KNOWN_TASKS:
        raise RoutingRulesError(f"rule {name!r}: task {task!r} is not one of {', '.join(KNOWN_TASKS)}")
    modalities = raw.get("modality")
    if isinstance(modalities, str):
        modalities = [modalities]
    if not modalities or not all(isinstance(m, str) for m in modalities):
        raise RoutingRulesError(f"rule {name!r}: `modality` must list at least one modality")
    patterns: dict[str, re.Pattern[str]] = {}
    for keyword, pattern in (raw.get("any_header_matches") or {}).items():
        if keyword not in _ROUTABLE_HEADERS:
            raise RoutingRulesError(
                f"rule {name!r}: {keyword} is not a routable header ({', '.join(sorted(_ROUTABLE_HEADERS))})"
            )
        try:
            patterns[keyword] = re.compile(str(pattern), re.IGNORECASE)
        except re.error as exc:
            raise RoutingRulesError(f"rule {name!r}: bad regular expression for {keyword}: {exc}") from exc
    unknown = set(raw) - {"name", "task", "modality", "any_header_matches"}
    if unknown:
        raise RoutingRulesError(f"rule {name!r}: unknown keys {', '.join(sorted(unknown))}")
    return RouteRule(name, task, frozenset(m.upper() for m in modalities), patterns)


def load_rules(path: Path | None = None) -> RoutingRules:
    path = path or DEFAULT_RULES_FILE
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RoutingRulesError(f"cannot read routing rules {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list) or not document["rules"]:
        raise RoutingRulesError(f"{path}: expected a mapping with a non-empty `rules` list")
    return RoutingRules(tuple(_compile_rule(i, raw) for i, raw in enumerate(document["rules"])))

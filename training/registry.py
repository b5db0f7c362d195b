"""Moving the aliases of a model's versions from the training side (the registry itself is
``service.model_registry``).

A champion is promoted through quality review's gate only (``quality.gate.promote_through_gate``: this site's
confirmed studies, audited, ``previous-champion`` kept for rollback, the challenger alias cleared), whichever command
asks. A model with no version at all gets the shipped bundle first (:func:`register_shipped_first`), as start-up would
register it; only a first version of a model with no shipped bundle and no champion becomes champion without the gate.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from inference.shipped_models import RegisteredBundle, register_shipped_bundles
from service.errors import SteeringRefused
from service.lifecycle import ModelRole
from service.model_registry import (
    RegisteredVersion,
    alias_version,
    list_versions,
    move_champion,
    set_alias,
    version_of,
)
from service.steering import DeferRules
from training.errors import PromotionRefused, RegistryError

__all__ = [
    "RegisteredVersion", "list_versions", "make_first_champion", "register_shipped_first", "set_challenger", "GATED_PROMOTION",
    "SHIPPED_FIRST",
]

log = logging.getLogger(__name__)

# Said when a training run has registered the shipped bundle first.
SHIPPED_FIRST = ("{name} had no version: the shipped bundle is registered as version {version}, champion (as `medscreen "
                 "serve` does on first start)")
# Where a champion is promoted: the audited gate of quality review.
GATED_PROMOTION = "medscreen quality promote --task {name} --version {version} --actor NAME [--force]"


def register_shipped_first(
    tracking_uri: str, task: str, *, rules: DeferRules, scored: Mapping[str, Collection[str]] | None = None,
) -> RegisteredBundle | None:
    """Register the shipped bundle of ``task`` as version 1, champion, when the registry holds no version of its model
    (start-up's :func:`~inference.shipped_models.register_shipped_bundles` for one task); the bundle registered, or None
    when the model has a version or nothing is shipped for it. Called before a training run registers its version: the
    first trained version had become champion without the gate (a 1-epoch run on 4 films, AUROC 0.5) or, from an
    export, a challenger with no champion, and start-up, seeing a version, never registered the validated bundle.

    ``scored``: the site database's {model name: versions} with results (``inference.shipped_models.scored_models``):
    a registry with no version of a model the site has results of is not the site's, and RegistryLost is raised before
    anything is registered, as at start-up (a run had registered the shipped bundle and its own version into it)."""
    for item in register_shipped_bundles(tracking_uri, rules=rules, tasks=(task,), scored=scored):
        if item.newly_registered:
            log.info("%s had no version: the shipped bundle is v%s, champion", item.name, item.version)
            return item
    return None


def make_first_champion(tracking_uri: str, name: str, version: str, *, rules: DeferRules) -> None:
    """Make ``version`` champion of a model that has none (a registry without a champion scores nothing).

    Refused (PromotionRefused) when the model has a champion: that is a promotion, through the gate; and for a
    version recorded ``defer`` without evidence meeting ``rules``."""
    if version_of(tracking_uri, name, version) is None:
        raise RegistryError(f"{name} version {version} is not registered")
    current = alias_version(tracking_uri, name, ModelRole.champion)
    if current is not None:
        raise PromotionRefused(
            f"{name} has champion v{current.version}; a promotion goes through the gate: "
            + GATED_PROMOTION.format(name=name, version=version)
        )
    try:
        move_champion(tracking_uri, name, version, rules=rules)
    except SteeringRefused as exc:
        raise PromotionRefused(str(exc)) from exc
    log.info("%s had no champion: v%s is champion", name, version)


def set_challenger(tracking_uri: str, name: str, version: str) -> str | None:
    """Point ``challenger`` (scored in shadow, never shown) at ``version``; returns the version it pointed at before."""
    if version_of(tracking_uri, name, version) is None:
        raise RegistryError(f"{name} version {version} is not registered")
    champion = alias_version(tracking_uri, name, ModelRole.champion)
    if champion is not None and champion.version == str(version):
        raise PromotionRefused(f"{name} v{version} is the champion")
    current = alias_version(tracking_uri, name, ModelRole.challenger)
    set_alias(tracking_uri, name, ModelRole.challenger, str(version))
    log.info("%s alias challenger: v%s -> v%s", name, current.version if current else None, version)
    return current.version if current is not None else None

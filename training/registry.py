"""Promoting a version to ``champion`` under the training-time AUROC rule (the registry itself is
``service.model_registry``)."""

from __future__ import annotations

import logging

from service.errors import SteeringRefused
from service.lifecycle import ModelRole
from service.model_registry import (
    RegisteredVersion,
    alias_version,
    check_steering_earned,
    list_versions,
    set_alias,
    version_of,
)
from service.steering import DeferRules
from training.errors import PromotionRefused, RegistryError

__all__ = ["RegisteredVersion", "list_versions", "promote", "PROMOTION_METRIC"]

log = logging.getLogger(__name__)

PROMOTION_METRIC = "val_auroc"


def promote(
    tracking_uri: str, name: str, version: str, *, alias: ModelRole = ModelRole.champion, force: bool = False,
    rules: DeferRules | None = None,
) -> str | None:
    """Point ``alias`` at ``version``; returns the version it pointed at before (or None).

    For ``champion``, a version whose validation AUROC (version tag ``val_auroc``) is below the
    current champion's is refused unless ``force``; a forced demotion is logged at WARNING so the
    audit trail shows who overrode the rule. ``rules``: the site's defer thresholds (the defaults when None).
    """
    alias = ModelRole(alias)
    candidate = version_of(tracking_uri, name, version)
    if candidate is None:
        raise RegistryError(f"{name} version {version} is not registered")
    current = alias_version(tracking_uri, name, alias)
    if alias == ModelRole.champion:
        try:
            check_steering_earned(candidate, rules or DeferRules())
        except SteeringRefused as exc:
            raise PromotionRefused(str(exc)) from exc
    if alias == ModelRole.champion and current is not None and current.version != str(version):
        new_auroc = candidate.float_tag(PROMOTION_METRIC)
        old_auroc = current.float_tag(PROMOTION_METRIC)
        if new_auroc is None:
            if not force:
                raise PromotionRefused(f"{name} v{version} has no {PROMOTION_METRIC} tag; use --force to promote anyway")
        elif old_auroc is not None and new_auroc < old_auroc:
            if not force:
                raise PromotionRefused(
                    f"{name} v{version} validation AUROC {new_auroc:.4f} is below champion v{current.version} "
                    f"({old_auroc:.4f}); use --force to promote anyway"
                )
            log.warning(
                "forced promotion of %s v%s (AUROC %.4f) over champion v%s (AUROC %.4f)",
                name, version, new_auroc, current.version, old_auroc,
            )
    set_alias(tracking_uri, name, alias, str(version))
    previous = current.version if current is not None else None
    log.info("%s alias %s: v%s -> v%s%s", name, alias.value, previous, version, " (forced)" if force else "")
    return previous

"""Listing registered models and promoting a version to ``champion`` under the AUROC rule."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from training.errors import PromotionRefused, RegistryError

__all__ = ["VersionRow", "list_versions", "promote"]

log = logging.getLogger(__name__)

PROMOTION_METRIC = "val_auroc"


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    aliases: tuple[str, ...]
    task: str
    val_auroc: float | None
    threshold: float | None
    source: str
    run_id: str


def _float_tag(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def list_versions(tracking_uri: str) -> list[VersionRow]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    rows = []
    for model in client.search_registered_models():
        aliases_by_version: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases_by_version.setdefault(str(version), []).append(alias)
        for version in client.search_model_versions(filter_string=f"name = '{model.name}'"):
            tags = dict(version.tags or {})
            rows.append(
                VersionRow(
                    model.name,
                    str(version.version),
                    tuple(sorted(aliases_by_version.get(str(version.version), []))),
                    tags.get("task", (model.tags or {}).get("task", "")),
                    _float_tag(tags, PROMOTION_METRIC),
                    _float_tag(tags, "threshold"),
                    tags.get("source", ""),
                    version.run_id or "",
                )
            )
    rows.sort(key=lambda r: (r.name, int(r.version)))
    return rows


def promote(tracking_uri: str, name: str, version: str, *, alias: str = "champion", force: bool = False) -> str | None:
    """Point ``alias`` at ``version``; returns the version it pointed at before (or None).

    For ``champion``, a version whose validation AUROC (version tag ``val_auroc``) is below the
    current champion's is refused unless ``force``; a forced demotion is logged at WARNING so the
    audit trail shows who overrode the rule.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    try:
        candidate = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} version {version} is not registered") from exc
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if alias == "champion" and current is not None and str(current.version) != str(version):
        new_auroc = _float_tag(dict(candidate.tags or {}), PROMOTION_METRIC)
        old_auroc = _float_tag(dict(current.tags or {}), PROMOTION_METRIC)
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
    client.set_registered_model_alias(name, alias, str(version))
    previous = str(current.version) if current is not None else None
    log.info("%s alias %s: v%s -> v%s%s", name, alias, previous, version, " (forced)" if force else "")
    return previous

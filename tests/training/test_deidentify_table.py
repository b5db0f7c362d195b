"""The de-identified export against PS3.15 table E.1-1 itself: every attribute of the current table, written out
below as the standard names it (attribute name, tag, Basic Profile action), is put into one instance with a value
that names the patient, in the Japanese ISO 2022 character set where the VR allows it; the copy must show each
attribute's action. The table is not read from training/deidentify.py: that module's own list had been an older
edition, and the test that checked the export against it could not see the gap."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_description, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from training.deidentify import Deidentifier
from training.export_training import deidentify_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "inference" / "images" / "dx_chest_highdicom.dcm"

# PS3.15 (current edition) table E.1-1, Basic Profile column: attribute name | tag | action. Curve Data (50xx,xxxx),
# Overlay Data and Comments (60xx,3000 and 60xx,4000) and private attributes are X too and are checked below.
STANDARD_E_1_1 = """
Accession Number|0008,0050|Z
Acquisition Comments|0018,4000|X
Acquisition Context Sequence|0040,0555|X/Z
Acquisition Date|0008,0022|X/Z
Acquisition DateTime|0008,002A|X/Z/D
Acquisition Device Processing Description|0018,1400|X/D
Acquisition Field Of View Label|0018,11BB|D
Acquisition Protocol Description|0018,9424|X
Acquisition Time|0008,0032|X/Z
Actual Human Performers Sequence|0040,4035|X
Additional Patient History|0010,21B0|X
Address (Trial)|0040,A353|X
Admission ID|0038,0010|X
Admitting Date|0038,0020|X
Admitting Diagnoses Code Sequence|0008,1084|X
Admitting Diagnoses Description|0008,1080|X
Admitting Time|0038,0021|X
Affected SOP Instance UID|0000,1000|X
Allergies|0010,2110|X
Arbitrary|4000,0010|X
Author Observer Sequence|0040,A078|X
Barcode Value|2200,0005|X/Z
Beam Description|300A,00C3|X
Bolus Description|300A,00DD|X
Branch of Service|0010,1081|X
Camera Owner Name|0016,004D|X
Cassette ID|0018,1007|X
Clinical Trial Coordinating Center Name|0012,0060|Z
Clinical Trial Protocol Ethics Committee Approval Number|0012,0082|X
Clinical Trial Protocol Ethics Committee Name|0012,0081|D
Clinical Trial Protocol ID|0012,0020|D
Clinical Trial Protocol Name|0012,0021|Z
Clinical Trial Series Description|0012,0072|X
Clinical Trial Series ID|0012,0071|X
Clinical Trial Site ID|0012,0030|Z
Clinical Trial Site Name|0012,0031|Z
Clinical Trial Sponsor Name|0012,0010|D
Clinical Trial Subject ID|0012,0040|D
Clinical Trial Subject Reading ID|0012,0042|D
Clinical Trial Time Point Description|0012,0051|X
Clinical Trial Time Point ID|0012,0050|Z
Comments on Radiation Dose|0040,0310|X
Comments on the Performed Procedure Step|0040,0280|X
Compensator Description|300A,02EB|X
Concatenation UID|0020,9161|U
Conceptual Volume Combination Description|3010,000F|Z
Conceptual Volume Description|3010,0017|Z
Conceptual Volume UID|3010,0006|U
Confidentiality Constraint on Patient Data Description|0040,3001|X
Constituent Conceptual Volume UID|3010,0013|U
Consulting Physician's Name|0008,009C|Z
Consulting Physician Identification Sequence|0008,009D|X
Container Component ID|0050,001B|X
Container Description|0040,051A|X
Container Identifier|0040,0512|D
Content Creator's Identification Code Sequence|0070,0086|X
Content Creator's Name|0070,0084|Z/D
Content Date|0008,0023|Z/D
Content Sequence|0040,A730|D
Content Time|0008,0033|Z/D
Contrast/Bolus Agent|0018,0010|Z/D
Contribution Description|0018,A003|X
Country of Residence|0010,2150|X
Current Observer (Trial)|0040,A307|X
Current Patient Location|0038,0300|X
Curve Date|0008,0025|X
Curve Time|0008,0035|X
Custodial Organization Sequence|0040,A07C|X
Data Set Trailing Padding|FFFC,FFFC|X
Decomposition Description|0018,937F|X
Derivation Description|0008,2111|X
Detector ID|0018,700A|X/D
Device Alternate Identifier|3010,001B|Z
Device Description|0050,0020|X
Device Label|3010,002D|D
Device Serial Number|0018,1000|X/Z/D
Device Setting Description|0016,004B|X
Device UID|0018,1002|U
Digital Signatures Sequence|FFFA,FFFA|X
Digital Signature UID|0400,0100|U
Dimension Organization UID|0020,9164|U
Discharge Diagnosis Description|0038,0040|X
Distribution Address|4008,011A|X
Distribution Name|4008,0119|X
Dose Reference Description|300A,0016|X
Dose Reference UID|300A,0013|U
Dosimetric Objective UID|3010,006E|U
End Acquisition DateTime|0018,9517|X/D
Entity Description|3010,0037|X
Entity Label|3010,0035|D
Entity Long Label|3010,0038|D
Entity Name|3010,0036|X
Equipment Frame of Reference Description|300A,0676|X
Ethnic Group|0010,2160|X
Expected Completion DateTime|0040,4011|X
Failed SOP Instance UID List|0008,0058|U
Fiducial UID|0070,031A|U
Filler Order Number / Imaging Service Request|0040,2017|Z
First Treatment Date|3008,0054|X/D
Fixation Device Description|300A,0196|X
Flow Identifier|0034,0002|D
Flow Identifier Sequence|0034,0001|D
Fractionation Notes|3010,007F|Z
Fraction Group Description|300A,0072|X
Frame Comments|0020,9158|X
Frame of Reference UID|0020,0052|U
Frame Origin Timestamp|0034,0007|D
Gantry ID|0018,1008|X
Generator ID|0018,1005|X
GPS Altitude|0016,0076|X
GPS Altitude Ref|0016,0075|X
GPS Area Information|0016,008C|X
GPS Date Stamp|0016,008D|X
GPS Dest Bearing|0016,0088|X
GPS Dest Bearing Ref|0016,0087|X
GPS Dest Distance|0016,008A|X
GPS Dest Distance Ref|0016,0089|X
GPS Dest Latitude|0016,0084|X
GPS Dest Latitude Ref|0016,0083|X
GPS Dest Longitude|0016,0086|X
GPS Dest Longitude Ref|0016,0085|X
GPS Differential|0016,008E|X
GPS DOP|0016,007B|X
GPS Img Direction|0016,0081|X
GPS Img Direction Ref|0016,0080|X
GPS Latitude|0016,0072|X
GPS Latitude Ref|0016,0071|X
GPS Longitude|0016,0074|X
GPS Longitude Ref|0016,0073|X
GPS Map Datum|0016,0082|X
GPS Measure Mode|0016,007A|X
GPS Processing Method|0016,008B|X
GPS Satellites|0016,0078|X
GPS Speed|0016,007D|X
GPS Speed Ref|0016,007C|X
GPS Status|0016,0079|X
GPS Time Stamp|0016,0077|X
GPS Track|0016,007F|X
GPS Track Ref|0016,007E|X
GPS Version ID|0016,0070|X
Graphic Annotation Sequence|0070,0001|D
Human Performer's Name|0040,4037|X
Human Performer's Organization|0040,4036|X
Icon Image Sequence|0088,0200|X
Identifying Comments|0008,4000|X
Image Comments|0020,4000|X
Image Presentation Comments|0028,4000|X
Imaging Service Request Comments|0040,2400|X
Impedance Measurement DateTime|003A,0314|D
Impressions|4008,0300|X
Instance Coercion DateTime|0008,0015|X
Instance Creator UID|0008,0014|U
Instance Origin Status|0400,0600|X
Institution Address|0008,0081|X
Institutional Department Name|0008,1040|X
Institutional Department Type Code Sequence|0008,1041|X
Institution Code Sequence|0008,0082|X/Z/D
Institution Name|0008,0080|X/Z/D
Insurance Plan Identification|0010,1050|X
Intended Phase End Date|3010,004D|X/D
Intended Phase Start Date|3010,004C|X/D
Intended Recipients of Results Identification Sequence|0040,1011|X
Interlock DateTime|300A,0741|D
Interlock Description|300A,0742|D
Interlock Origin Description|300A,0783|D
Interpretation Approver Sequence|4008,0111|X
Interpretation Author|4008,010C|X
Interpretation Diagnosis Description|4008,0115|X
Interpretation ID Issuer|4008,0202|X
Interpretation Recorder|4008,0102|X
Interpretation Text|4008,010B|X
Interpretation Transcriber|4008,010A|X
Irradiation Event UID|0008,3010|U
Issuer of Admission ID|0038,0011|X
Issuer of Admission ID Sequence|0038,0014|X
Issuer of Patient ID|0010,0021|X
Issuer of Service Episode ID|0038,0061|X
Issuer of Service Episode ID Sequence|0038,0064|X
Issuer of the Container Identifier Sequence|0040,0513|Z
Issuer of the Specimen Identifier Sequence|0040,0562|Z
Label Text|2200,0002|X/Z
Large Palette Color Lookup Table UID|0028,1214|U
Last Menstrual Date|0010,21D0|X
Lens Make|0016,004F|X
Lens Model|0016,0050|X
Lens Serial Number|0016,0051|X
Lens Specification|0016,004E|X
Long Device Description|0050,0021|X
MAC|0400,0404|X
Maker Note|0016,002B|X
Manufacturer's Device Class UID|0018,100B|U
Manufacturer's Device Identifier|3010,0043|Z
Media Storage SOP Instance UID|0002,0003|U
Medical Alerts|0010,2000|X
Medical Record Locator|0010,1090|X
Military Rank|0010,1080|X
Modified Attributes Sequence|0400,0550|X
Modified Image Description|0020,3406|X
Modifying Device ID|0020,3401|X
Most Recent Treatment Date|3008,0056|X/D
Multi-energy Acquisition Description|0018,937B|X
Multiplex Group UID|003A,0310|U
Name of Physician(s) Reading Study|0008,1060|X
Names of Intended Recipients of Results|0040,1010|X
Nonconforming Modified Attributes Sequence|0400,0551|X
Nonconforming Data Element Value|0400,0552|X
Observation Date (Trial)|0040,A192|X
Observation Subject UID (Trial)|0040,A402|U
Observation Time (Trial)|0040,A193|X
Observation UID|0040,A171|U
Occupation|0010,2180|X
Operator Identification Sequence|0008,1072|X/D
Operators' Name|0008,1070|X/Z/D
Order Callback Phone Number|0040,2010|X
Order Callback Telecom Information|0040,2011|X
Order Entered By|0040,2008|X
Order Enterer's Location|0040,2009|X
Original Attributes Sequence|0400,0561|X
Other Patient IDs|0010,1000|X
Other Patient IDs Sequence|0010,1002|X
Other Patient Names|0010,1001|X
Overlay Date|0008,0024|X
Overlay Time|0008,0034|X
Override DateTime|300A,0760|D
Palette Color Lookup Table UID|0028,1199|U
Participant Sequence|0040,A07A|X
Patient's Address|0010,1040|X
Patient's Age|0010,1010|X
Patient's Birth Date|0010,0030|Z
Patient's Birth Name|0010,1005|X
Patient's Birth Time|0010,0032|X
Patient's Institution Residence|0038,0400|X
Patient's Insurance Plan Code Sequence|0010,0050|X
Patient's Mother's Birth Name|0010,1060|X
Patient's Name|0010,0010|Z
Patient's Primary Language Code Sequence|0010,0101|X
Patient's Primary Language Modifier Code Sequence|0010,0102|X
Patient's Religious Preference|0010,21F0|X
Patient's Sex|0010,0040|Z
Patient's Sex Neutered|0010,2203|X/Z
Patient's Size|0010,1020|X
Patient's Telecom Information|0010,2155|X
Patient's Telephone Numbers|0010,2154|X
Patient's Weight|0010,1030|X
Patient Comments|0010,4000|X
Patient ID|0010,0020|Z
Patient Setup UID|300A,0650|U
Patient State|0038,0500|X
Patient Transport Arrangements|0040,1004|X
Performed Location|0040,0243|X
Performed Procedure Step Description|0040,0254|X
Performed Procedure Step End Date|0040,0250|X
Performed Procedure Step End DateTime|0040,4051|X
Performed Procedure Step End Time|0040,0251|X
Performed Procedure Step ID|0040,0253|X
Performed Procedure Step Start Date|0040,0244|X
Performed Procedure Step Start DateTime|0040,4050|X
Performed Procedure Step Start Time|0040,0245|X
Performed Station AE Title|0040,0241|X
Performed Station Geographic Location Code Sequence|0040,4030|X
Performed Station Name|0040,0242|X
Performed Station Name Code Sequence|0040,4028|X
Performing Physician's Name|0008,1050|X
Performing Physician Identification Sequence|0008,1052|X
Person's Address|0040,1102|X
Person's Telecom Information|0040,1104|X
Person's Telephone Numbers|0040,1103|X
Person Identification Code Sequence|0040,1101|D
Person Name|0040,A123|D
Physician(s) of Record|0008,1048|X
Physician(s) of Record Identification Sequence|0008,1049|X
Physician(s) Reading Study Identification Sequence|0008,1062|X
Physician Approving Interpretation|4008,0114|X
Placer Order Number / Imaging Service Request|0040,2016|Z
Plate ID|0018,1004|X
Pregnancy Status|0010,21C0|X
Pre-Medication|0040,0012|X
Prescription Description|300A,000E|X
Prescription Notes|3010,007B|Z
Prescription Notes Sequence|3010,0081|Z
Presentation Display Collection UID|0070,1101|U
Presentation Sequence Collection UID|0070,1102|U
Prior Treatment Dose Description|3010,0061|X
Procedure Step Cancellation DateTime|0040,4052|X
Protocol Name|0018,1030|X/D
Radiation Dose Identification Label|300A,0619|D
Radiation Dose In-Vivo Measurement Label|300A,0623|D
Radiation Generation Mode Description|300A,067D|Z
Radiation Generation Mode Label|300A,067C|D
Reason for Omission Description|300C,0113|X
Reason for Requested Procedure Code Sequence|0040,100A|X
Reason for Study|0032,1030|X
Reason for Superseding|3010,005C|Z
Reason for the Imaging Service Request|0040,2001|X
Reason for the Requested Procedure|0040,1002|X
Reason for Visit|0032,1066|X
Reason for Visit Code Sequence|0032,1067|X
Recorded RT Control Point DateTime|300A,073A|D
Referenced Conceptual Volume UID|3010,000B|U
Referenced Digital Signature Sequence|0400,0402|X
Referenced Dose Reference UID|300A,0083|U
Referenced Dosimetric Objective UID|3010,006F|U
Referenced Fiducials UID|3010,0031|U
Referenced Frame of Reference UID|3006,0024|U
Referenced General Purpose Scheduled Procedure Step Transaction UID|0040,4023|U
Referenced Image Sequence|0008,1140|X/Z/U*
Referenced Observation UID (Trial)|0040,A172|U
Referenced Patient Alias Sequence|0038,0004|X
Referenced Patient Photo Sequence|0010,1100|X
Referenced Patient Sequence|0008,1120|X
Referenced Performed Procedure Step Sequence|0008,1111|X/Z/D
Referenced SOP Instance MAC Sequence|0400,0403|X
Referenced SOP Instance UID|0008,1155|U
Referenced SOP Instance UID in File|0004,1511|U
Referenced Study Sequence|0008,1110|X/Z
Referring Physician's Address|0008,0092|X
Referring Physician's Name|0008,0090|Z
Referring Physician's Telephone Numbers|0008,0094|X
Referring Physician Identification Sequence|0008,0096|X
Region of Residence|0010,2152|X
Related Frame of Reference UID|3006,00C2|U
Request Attributes Sequence|0040,0275|X
Requested Contrast Agent|0032,1070|X
Requested Procedure Comments|0040,1400|X
Requested Procedure Description|0032,1060|X/Z
Requested Procedure ID|0040,1001|X
Requested Procedure Location|0040,1005|X
Requested Series Description|0018,9937|X
Requested SOP Instance UID|0000,1001|U
Requesting Physician|0032,1032|X
Requesting Service|0032,1033|X
Respiratory Motion Compensation Technique Description|0018,9185|X
Responsible Organization|0010,2299|X
Responsible Person|0010,2297|X
Results Comments|4008,4000|X
Results Distribution List Sequence|4008,0118|X
Results ID Issuer|4008,0042|X
Reviewer Name|300E,0008|X/Z
ROI Description|3006,0028|X
ROI Generation Description|3006,0038|X
ROI Interpreter|3006,00A6|Z
ROI Name|3006,0026|Z
ROI Observation Description|3006,0088|X
ROI Observation Label|3006,0085|X
RT Accessory Device Slot ID|300A,0615|Z
RT Accessory Holder Slot ID|300A,0611|Z
RT Physician Intent Narrative|3010,005A|Z
RT Plan Date|300A,0006|X/D
RT Plan Description|300A,0004|X
RT Plan Label|300A,0002|D
RT Plan Name|300A,0003|X
RT Plan Time|300A,0007|X/D
RT Prescription Label|3010,0054|D
RT Tolerance Set Label|300A,062A|D
RT Treatment Approach Label|3010,0056|X/D
RT Treatment Phase UID|3010,003B|U
Scheduled Human Performers Sequence|0040,4034|X
Scheduled Patient Institution Residence|0038,001E|X
Scheduled Performing Physician's Name|0040,0006|X
Scheduled Performing Physician Identification Sequence|0040,000B|X
Scheduled Procedure Step Description|0040,0007|X
Scheduled Procedure Step End Date|0040,0004|X
Scheduled Procedure Step End Time|0040,0005|X
Scheduled Procedure Step Expiration DateTime|0040,4008|X
Scheduled Procedure Step ID|0040,0009|X
Scheduled Procedure Step Location|0040,0011|X
Scheduled Procedure Step Modification DateTime|0040,4010|X
Scheduled Procedure Step Start Date|0040,0002|X
Scheduled Procedure Step Start DateTime|0040,4005|X
Scheduled Procedure Step Start Time|0040,0003|X
Scheduled Station AE Title|0040,0001|X
Scheduled Station Geographic Location Code Sequence|0040,4027|X
Scheduled Station Name|0040,0010|X
Scheduled Station Name Code Sequence|0040,4025|X
Scheduled Study Location|0032,1020|X
Scheduled Study Location AE Title|0032,1021|X
Series Date|0008,0021|X/D
Series Description|0008,103E|X
Series Instance UID|0020,000E|U
Series Time|0008,0031|X/D
Service Episode Description|0038,0062|X
Service Episode ID|0038,0060|X
Setup Technique Description|300A,01B2|X
Shielding Device Description|300A,01A6|X
Slide Identifier|0040,06FA|X
Smoking Status|0010,21A0|X
SOP Instance UID|0008,0018|U
Source Conceptual Volume UID|3010,0015|U
Source End DateTime|0018,936A|D
Source Identifier|0034,0005|D
Source Image Sequence|0008,2112|X/Z/U*
Source Manufacturer|300A,0216|X
Source Serial Number|3008,0105|X/Z
Source Start DateTime|0018,9369|D
Special Needs|0038,0050|X
Specimen Accession Number|0040,050A|X
Specimen Detailed Description|0040,0602|X
Specimen Identifier|0040,0551|D
Specimen Preparation Sequence|0040,0610|Z
Specimen Short Description|0040,0600|X
Specimen UID|0040,0554|U
Start Acquisition DateTime|0018,9516|X/D
Station Name|0008,1010|X/Z/D
Storage Media File-set UID|0088,0140|U
Structure Set Date|3006,0008|Z
Structure Set Description|3006,0006|X
Structure Set Label|3006,0002|D
Structure Set Name|3006,0004|X
Structure Set Time|3006,0009|X/D
Study Comments|0032,4000|X
Study Date|0008,0020|Z
Study Description|0008,1030|X
Study ID|0020,0010|Z
Study ID Issuer|0032,0012|X
Study Instance UID|0020,000D|U
Study Time|0008,0030|Z
Synchronization Frame of Reference UID|0020,0200|U
Target UID|0018,2042|U
Telephone Number (Trial)|0040,A354|X
Template Extension Creator UID|0040,DB0D|U
Template Extension Organization UID|0040,DB0C|U
Text Comments|4000,4000|X
Text String|2030,0020|X
Timezone Offset From UTC|0008,0201|X
Topic Author|0088,0910|X
Topic Keywords|0088,0912|X
Topic Subject|0088,0906|X
Topic Title|0088,0904|X
Tracking UID|0062,0021|U
Transaction UID|0008,1195|U
Transducer Identification Sequence|0018,5011|X
Treatment Date|3008,0250|X/D
Treatment Machine Name|300A,00B2|X
Treatment Position Group Label|300A,0608|D
Treatment Position Group UID|300A,0609|U
Treatment Session UID|300A,0700|U
Treatment Site|3010,0077|D
Treatment Technique Notes|3010,007A|Z
Treatment Time|3008,0251|X/D
Treatment Tolerance Violation DateTime|300A,0736|D
Treatment Tolerance Violation Description|300A,0734|D
UDI Sequence|0018,100A|X
UID|0040,A124|U
Unique Device Identifier|0018,1009|X
User Content Label|3010,0033|D
User Content Long Label|3010,0034|D
Verbal Source (Trial)|0040,A352|X
Verbal Source Identifier Code Sequence (Trial)|0040,A358|X
Verifying Observer Identification Code Sequence|0040,A088|Z
Verifying Observer Name|0040,A075|D
Verifying Observer Sequence|0040,A073|D
Verifying Organization|0040,A027|D
Visit Comments|0038,4000|X
X-Ray Detector ID|0018,9371|D
X-Ray Detector Label|0018,9373|X
X-Ray Source ID|0018,9367|D
"""
TABLE: dict[int, tuple[str, str]] = {
    int(tag.replace(",", ""), 16): (name, action)
    for name, tag, action in (line.split("|") for line in STANDARD_E_1_1.strip().splitlines())
}

NAME = "山田^太郎"
TEXT = "山田太郎 yamada.tarou@example.jp"
MARKERS = ("山田", "YAMADA", "yamada", "19790304", "101500", "062Y", "62.5")


def identifying_value(vr: str) -> Any:
    """A value of ``vr`` that names (or dates) the patient."""
    if vr == "PN":
        return NAME
    if vr in ("LO", "LT", "ST", "UT", "UC"):
        return TEXT
    if vr == "SH":
        return "山田太郎"
    values = {
        "AE": "YAMADA",
        "AS": "062Y",
        "CS": "YAMADA",
        "DA": "19790304",
        "DT": "19790304101500",
        "TM": "101500",
        "DS": "62.5",
        "IS": "62",
        "US": 62,
        "OB": b"YAMADA",
        "UI": generate_uid(),
    }
    if vr == "SQ":
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "YAMADA", "99MS", TEXT
        item.ReferencedSOPInstanceUID = generate_uid()
        return Sequence([item])
    return values[vr]


def names_the_patient(value: Any) -> bool:
    if isinstance(value, Sequence):
        return any(names_the_patient(element.value) for item in value for element in item.iterall())
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return any(marker in text for marker in MARKERS)


def instance_with_every_attribute() -> tuple[Dataset, dict[int, Any]]:
    ds = pydicom.dcmread(FIXTURE)
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]  # the standard Japanese declaration: ISO 2022 escapes
    originals: dict[int, Any] = {}
    for tag in TABLE:
        if Tag(tag).group in (0x0000, 0x0002):  # command and file meta elements: not in a stored data set
            continue
        vr = dictionary_VR(tag)
        originals[tag] = identifying_value(vr)
        ds.add_new(tag, vr, originals[tag])
    return ds, originals


def test_the_table_written_here_is_the_standards_by_pydicoms_dictionary() -> None:
    # A check on the copying: each name and tag above is the pair in pydicom's data dictionary (DICOM PS3.6).
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    assert len(TABLE) == 456
    assert {tag: norm(name) for tag, (name, _) in TABLE.items()} == {
        tag: norm(dictionary_description(tag)) for tag in TABLE
    }


def test_every_attribute_of_table_e_1_1_gets_its_action(tmp_path: Path) -> None:
    ds, originals = instance_with_every_attribute()
    source = tmp_path / "source.dcm"
    ds.save_as(source, enforce_file_format=True)
    target = deidentify_file(source, tmp_path / "out", Deidentifier())
    assert target is not None
    copy = pydicom.dcmread(target)
    wrong = []
    for tag, original in originals.items():
        name, action = TABLE[tag]
        allowed = set(action.replace("*", "").split("/"))  # X/Z: X unless the IOD needs Z, and so on
        if tag not in copy:
            if "X" not in allowed:
                wrong.append(f"{name}: removed, the table says {action}")
            continue
        value = copy[tag].value
        if dictionary_VR(tag) == "UI":
            if "U" not in allowed or not str(value).startswith("2.25.") or value == original:
                wrong.append(f"{name}: UID {value!r} under {action}")
        elif names_the_patient(value):
            wrong.append(f"{name}: still names the patient ({action}): {value!r}")
        elif not value:
            # An emptied sequence stands for D's dummy: an invented item could not be valid for every IOD.
            if "Z" not in allowed and not ("D" in allowed and dictionary_VR(tag) == "SQ"):
                wrong.append(f"{name}: emptied, the table says {action}")
        elif not allowed & {"Z", "D"}:  # Z: zero length, or a dummy value (PS3.15 E.3.1); D: a dummy value
            wrong.append(f"{name}: given a dummy value {value!r}, the table says {action}")
    assert not wrong, "\n".join(wrong)
    # The file meta group's instance UID (U) is replaced like the data set's.
    assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID != ds.SOPInstanceUID


def test_no_free_text_survives_in_any_character_set(tmp_path: Path) -> None:
    # The attributes the review found kept (contact details, reasons, a dose comment naming the patient), a
    # clinical-trial subject ID (D) and free text the table does not list, in ISO 2022 IR 87: not one byte of the
    # name or the e-mail is left in the file.
    ds = pydicom.dcmread(FIXTURE)
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.add_new(0x00102155, "LT", "yamada.tarou@example.jp, +81 3 1234 5678")  # Patient's Telecom Information
    ds.add_new(0x00401002, "LO", "山田太郎 転倒後 r/o fracture")  # Reason for the Requested Procedure
    ds.add_new(0x00321066, "UT", "山田太郎さん 咳が続く")  # Reason for Visit
    ds.add_new(0x00400009, "SH", "SPS-YAMADA01")  # Scheduled Procedure Step ID
    ds.add_new(0x00400310, "ST", "Dose note for 山田 太郎")  # Comments on Radiation Dose
    ds.add_new(0x00500020, "LO", "Portable unit, ward of Dr 佐藤")  # Device Description
    ds.add_new(0x00120040, "LO", "SUBJ-YAMADA-TAROU")  # Clinical Trial Subject ID: D
    ds.add_new(0x00400400, "LT", "山田太郎さんは車椅子")  # Comments on the Scheduled Procedure Step: not in the table
    source = tmp_path / "source.dcm"
    ds.save_as(source, enforce_file_format=True)
    assert "山田".encode("iso2022_jp")[3:-3] in source.read_bytes()
    target = deidentify_file(source, tmp_path / "out", Deidentifier())
    assert target is not None
    raw = target.read_bytes()
    for text in ("山田", "佐藤", "やまだ"):
        assert text.encode("iso2022_jp")[3:-3] not in raw and text.encode() not in raw, text
    for text in (b"yamada", b"YAMADA", b"1234 5678", b"fracture"):
        assert text not in raw, text
    copy = pydicom.dcmread(target)
    assert copy.ClinicalTrialSubjectID == "ANONYMIZED" and copy.PatientIdentityRemoved == "YES"
    for keyword in (
        "PatientTelecomInformation",
        "ReasonForTheRequestedProcedure",
        "ReasonForVisit",
        "ScheduledProcedureStepID",
        "CommentsOnRadiationDose",
        "DeviceDescription",
        "CommentsOnTheScheduledProcedureStep",
    ):
        assert keyword not in copy, keyword


@pytest.mark.parametrize("group", [0x5000, 0x6002])
def test_curves_overlays_and_private_attributes_are_removed(tmp_path: Path, group: int) -> None:
    ds = pydicom.dcmread(FIXTURE)
    ds.add_new((group << 16) | 0x4000, "LT", "yamada.tarou@example.jp")  # Overlay Comments (60xx,4000); a curve's text in 50xx
    block = ds.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "Yamada Tarou")
    source = tmp_path / "source.dcm"
    ds.save_as(source, enforce_file_format=True)
    copy = pydicom.dcmread(deidentify_file(source, tmp_path / "out", Deidentifier()))
    assert not any(element.tag.is_private or element.tag.group == group for element in copy)

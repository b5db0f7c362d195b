"""De-identification of DICOM instances under the PS3.15 Annex E Basic Application Level Confidentiality
Profile: the actions of table E.1-1 (X remove, Z empty or dummy, U replace UID), private attributes removed,
every person name, date and time that the table does not keep removed, and the fact recorded in the dataset.

UIDs are replaced consistently (the same original gives the same new UID within one :class:`Deidentifier`),
so studies stay grouped; the mapping and the patient pseudonyms go to a crosswalk kept apart from the data.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID_dictionary

__all__ = ["Deidentifier", "BASIC_PROFILE", "KEEP_DATES", "PROFILE_CODE", "Crosswalk"]

log = logging.getLogger(__name__)

# (DCM, 113100) "Basic Application Confidentiality Profile" in DeidentificationMethodCodeSequence (PS3.16 CID 7050).
PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
# A root under the 2.25 (UUID-derived) arc: new UIDs are 2.25.<integer of an HMAC>, valid and collision-safe.
_UID_ROOT = "2.25."

# PS3.15 table E.1-1, by keyword: X remove, Z zero-length or dummy, D dummy value, U replace UID (consistently).
_X = """
AccessionNumber:Z AcquisitionComments AcquisitionContextSequence AcquisitionDate AcquisitionDateTime
AcquisitionDeviceProcessingDescription AcquisitionProtocolDescription AcquisitionTime ActualHumanPerformersSequence
AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence
AdmittingDiagnosesDescription AdmittingTime Allergies Arbitrary AuthorObserverSequence BranchOfService CassetteID
CommentsOnThePerformedProcedureStep ConfidentialityConstraintOnPatientDataDescription ContentCreatorName:Z
ContentCreatorIdentificationCodeSequence ContentDate:Z ContentSequence ContentTime:Z ContributionDescription
CountryOfResidence CurrentPatientLocation CustodialOrganizationSequence DataSetTrailingPadding DateOfLastCalibration
DateOfSecondaryCapture DerivationDescription DetectorID DeviceSerialNumber DeviceUID:U DigitalSignaturesSequence
DischargeDiagnosisDescription DistributionAddress DistributionName DoseReferenceUID:U EthnicGroup
FailedSOPInstanceUIDList:U FiducialUID:U FillerOrderNumberImagingServiceRequest:Z FrameComments
FrameOfReferenceUID:U GantryID GeneratorID GraphicAnnotationSequence HumanPerformerName HumanPerformerOrganization
IconImageSequence IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments
Impressions InstanceCreationDate InstanceCreationTime InstanceCreatorUID:U InstitutionAddress InstitutionCodeSequence
InstitutionName InstitutionalDepartmentName InsurancePlanIdentification
IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence InterpretationAuthor
InterpretationDiagnosisDescription InterpretationIDIssuer InterpretationRecorder InterpretationText
InterpretationTranscriber IrradiationEventUID:U IssuerOfAdmissionID IssuerOfPatientID IssuerOfServiceEpisodeID
LargePaletteColorLookupTableUID:U MAC MediaStorageSOPInstanceUID:U MedicalAlerts MedicalRecordLocator MilitaryRank
ModifiedAttributesSequence ModifiedImageDescription ModifyingDeviceID ModifyingDeviceManufacturer
NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence
OperatorsName OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation OriginalAttributesSequence OtherPatientIDs
OtherPatientIDsSequence OtherPatientNames ParticipantSequence PatientAddress PatientAge PatientBirthDate:Z
PatientBirthName PatientBirthTime PatientComments PatientID:Z PatientInstitutionResidence
PatientInsurancePlanCodeSequence PatientMotherBirthName PatientName:Z PatientPrimaryLanguageCodeSequence
PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSex:Z PatientSexNeutered PatientSize
PatientState PatientTelephoneNumbers PatientTransportArrangements PatientWeight PerformedLocation
PerformedProcedureStepDescription PerformedProcedureStepEndDate PerformedProcedureStepEndTime
PerformedProcedureStepID PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedStationAETitle
PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence
PersonName PersonTelephoneNumbers PhysicianApprovingInterpretation PhysiciansOfRecord
PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
PlacerOrderNumberImagingServiceRequest:Z PlateID PreMedication PregnancyStatus ProtocolName
ReasonForTheImagingServiceRequest ReasonForStudy ReferencedDigitalSignatureSequence ReferencedFrameOfReferenceUID:U
ReferencedImageSequence ReferencedPatientAliasSequence ReferencedPatientPhotoSequence ReferencedPatientSequence
ReferencedPerformedProcedureStepSequence ReferencedSOPInstanceUID:U ReferencedStudySequence
ReferringPhysicianAddress ReferringPhysicianIdentificationSequence ReferringPhysicianName:Z
ReferringPhysicianTelephoneNumbers RegionOfResidence RelatedFrameOfReferenceUID:U RequestAttributesSequence
RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription RequestedProcedureID
RequestedProcedureLocation RequestedSOPInstanceUID:U RequestingPhysician RequestingPhysicianIdentificationSequence
RequestingService ResponsibleOrganization ResponsiblePerson ResultsComments ResultsDistributionListSequence
ResultsIDIssuer ReviewerName ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
ScheduledProcedureStepDescription ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
ScheduledProcedureStepLocation ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime
ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence ScheduledStationName
ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle SeriesDate SeriesDescription
SeriesInstanceUID:U SeriesTime ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SOPInstanceUID:U
SoftwareVersions SourceImageSequence SpecialNeeds StationName StorageMediaFileSetUID:U StudyComments StudyDate:Z
StudyDescription StudyID:Z StudyIDIssuer StudyInstanceUID:U StudyTime:Z SynchronizationFrameOfReferenceUID:U
TemplateExtensionCreatorUID:U TemplateExtensionOrganizationUID:U TextComments TextString TimeOfLastCalibration
TimeOfSecondaryCapture TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle TransactionUID:U UID:U
VerifyingObserverIdentificationCodeSequence VerifyingObserverName VerifyingObserverSequence VerifyingOrganization
VisitComments ContainerIdentifier:D SpecimenIdentifier:D SpecimenUID:U ContainerDescription
ContainerComponentID AlternateContainerIdentifierSequence IssuerOfTheContainerIdentifierSequence
IssuerOfTheSpecimenIdentifierSequence SpecimenShortDescription SpecimenDetailedDescription SlideIdentifier
SpecimenAccessionNumber TextValue ContainerComments
"""
BASIC_PROFILE: dict[str, str] = {
    item.split(":")[0]: (item.split(":")[1] if ":" in item else "X") for item in _X.split()
}
# The only dates and times the profile keeps (as empty, type 2 in most IODs); every other DA/DT/TM goes.
KEEP_DATES = frozenset({"StudyDate", "StudyTime", "ContentDate", "ContentTime"})
# Curves (50xx, retired) and overlays (60xx) can carry burned-in text and comments: whole groups go.
_REPEATING_GROUPS = (0x5000, 0x6000)


@dataclass
class Crosswalk:
    """Original to new identifiers; kept apart from the de-identified data (it re-identifies)."""

    uids: dict[str, str] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)


class Deidentifier:
    """Applies the Basic Profile to datasets; one instance per export so that UIDs map consistently."""

    def __init__(self, key: bytes | None = None, *, method: str = "medscreen export-training") -> None:
        # A random key per export: new UIDs and pseudonyms cannot be recomputed from the originals.
        self._key = key or secrets.token_bytes(32)
        self.method = method
        self.crosswalk = Crosswalk()

    def new_uid(self, uid: str) -> str:
        uid = str(uid)
        if not uid or uid in UID_dictionary:  # well-known class and transfer syntax UIDs are not identifiers
            return uid
        if uid not in self.crosswalk.uids:
            digest = hmac.new(self._key, uid.encode(), hashlib.sha256).digest()[:16]
            self.crosswalk.uids[uid] = _UID_ROOT + str(int.from_bytes(digest, "big"))
        return self.crosswalk.uids[uid]

    def pseudonym(self, patient_id: str) -> str:
        if patient_id not in self.crosswalk.patients:
            self.crosswalk.patients[patient_id] = f"ANON{len(self.crosswalk.patients) + 1:06d}"
        return self.crosswalk.patients[patient_id]

    def apply(self, ds: Dataset) -> Dataset:
        """De-identify ``ds`` in place (and its file meta); returns it."""
        patient = self.pseudonym(str(ds.get("PatientID", "") or ""))
        self._clean(ds)
        ds.PatientID = patient
        ds.PatientName = patient
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = f"PS3.15 Basic Application Level Confidentiality Profile ({self.method})"
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = PROFILE_CODE
        ds.DeidentificationMethodCodeSequence = DicomSequence([code])
        ds.LongitudinalTemporalInformationModified = "REMOVED"
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.new_uid(meta.MediaStorageSOPInstanceUID)
        return ds

    def _clean(self, ds: Dataset) -> None:
        for element in list(ds):
            tag = element.tag
            keyword = element.keyword
            if tag.is_private or (tag.group & 0xFF00) in _REPEATING_GROUPS:
                del ds[tag]
                continue
            action = BASIC_PROFILE.get(keyword)
            if action == "X":
                del ds[tag]
            elif action == "Z":
                element.value = "" if element.VR != "SQ" else DicomSequence([])
            elif action == "D":
                # Type 1 identifiers (slide microscopy containers, specimens): present, but meaningless.
                element.value = "ANONYMIZED" if element.VR != "SQ" else DicomSequence([])
            elif action == "U" or element.VR == "UI":
                element.value = self._uids(element.value)
            elif element.VR == "PN" or (element.VR in ("DA", "DT", "TM") and keyword not in KEEP_DATES):
                # Names and dates the table does not list (newer attributes, vendor-defined public ones).
                del ds[tag]
            elif element.VR == "SQ":
                for item in element.value:
                    self._clean(item)

    def _uids(self, value: Any) -> Any:
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [self.new_uid(v) for v in value]
        return self.new_uid(value) if value else value

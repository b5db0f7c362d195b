"""De-identification of DICOM instances under the PS3.15 Annex E Basic Application Level Confidentiality
Profile: the actions of the current table E.1-1 (X remove, Z empty, D dummy, U replace UID), private attributes
removed, every person name, free text (LT, ST, UT), date and time that the table does not keep removed, and the fact
recorded in the dataset.

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

# PS3.15 table E.1-1 (current edition: 456 attributes), by keyword, with the table's Basic Profile action: X remove,
# Z zero-length, D dummy value, U replace UID; no suffix means X. A compound action ("X/Z", "X/D", "X/Z/D", "Z/D",
# "X/Z/U*") means the first unless the IOD needs the next (Type 3 vs 2 vs 1); the IOD is not known here, so the
# first, least revealing, one is taken. tests/training/test_deidentify_table.py checks this against the standard.
_TABLE_E_1_1 = """
AccessionNumber:Z AcquisitionComments AcquisitionContextSequence:X/Z AcquisitionDate:X/Z AcquisitionDateTime:X/Z/D
AcquisitionDeviceProcessingDescription:X/D AcquisitionFieldOfViewLabel:D AcquisitionProtocolDescription
AcquisitionTime:X/Z ActualHumanPerformersSequence AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate
AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime AffectedSOPInstanceUID Allergies Arbitrary
AuthorObserverSequence BarcodeValue:X/Z BeamDescription BolusDescription BranchOfService CameraOwnerName CassetteID
ClinicalTrialCoordinatingCenterName:Z ClinicalTrialProtocolEthicsCommitteeApprovalNumber
ClinicalTrialProtocolEthicsCommitteeName:D ClinicalTrialProtocolID:D ClinicalTrialProtocolName:Z
ClinicalTrialSeriesDescription ClinicalTrialSeriesID ClinicalTrialSiteID:Z ClinicalTrialSiteName:Z
ClinicalTrialSponsorName:D ClinicalTrialSubjectID:D ClinicalTrialSubjectReadingID:D ClinicalTrialTimePointDescription
ClinicalTrialTimePointID:Z CommentsOnRadiationDose CommentsOnThePerformedProcedureStep CompensatorDescription
ConcatenationUID:U ConceptualVolumeCombinationDescription:Z ConceptualVolumeDescription:Z ConceptualVolumeUID:U
ConfidentialityConstraintOnPatientDataDescription ConstituentConceptualVolumeUID:U ConsultingPhysicianName:Z
ConsultingPhysicianIdentificationSequence ContainerComponentID ContainerDescription ContainerIdentifier:D
ContentCreatorIdentificationCodeSequence ContentCreatorName:Z/D ContentDate:Z/D ContentSequence:D ContentTime:Z/D
ContrastBolusAgent:Z/D ContributionDescription CountryOfResidence CurrentObserverTrial CurrentPatientLocation
CurveDate CurveTime CustodialOrganizationSequence DataSetTrailingPadding DecompositionDescription
DerivationDescription DetectorID:X/D DeviceAlternateIdentifier:Z DeviceDescription DeviceLabel:D
DeviceSerialNumber:X/Z/D DeviceSettingDescription DeviceUID:U DigitalSignaturesSequence DigitalSignatureUID:U
DimensionOrganizationUID:U DischargeDiagnosisDescription DistributionAddress DistributionName DoseReferenceDescription
DoseReferenceUID:U DosimetricObjectiveUID:U EndAcquisitionDateTime:X/D EntityDescription EntityLabel:D
EntityLongLabel:D EntityName EquipmentFrameOfReferenceDescription EthnicGroup ExpectedCompletionDateTime
FailedSOPInstanceUIDList:U FiducialUID:U FillerOrderNumberImagingServiceRequest:Z FirstTreatmentDate:X/D
FixationDeviceDescription FlowIdentifier:D FlowIdentifierSequence:D FractionationNotes:Z FractionGroupDescription
FrameComments FrameOfReferenceUID:U FrameOriginTimestamp:D GantryID GeneratorID GPSAltitude GPSAltitudeRef
GPSAreaInformation GPSDateStamp GPSDestBearing GPSDestBearingRef GPSDestDistance GPSDestDistanceRef GPSDestLatitude
GPSDestLatitudeRef GPSDestLongitude GPSDestLongitudeRef GPSDifferential GPSDOP GPSImgDirection GPSImgDirectionRef
GPSLatitude GPSLatitudeRef GPSLongitude GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites
GPSSpeed GPSSpeedRef GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GraphicAnnotationSequence:D
HumanPerformerName HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
ImagePresentationComments ImagingServiceRequestComments ImpedanceMeasurementDateTime:D Impressions
InstanceCoercionDateTime InstanceCreatorUID:U InstanceOriginStatus InstitutionAddress InstitutionalDepartmentName
InstitutionalDepartmentTypeCodeSequence InstitutionCodeSequence:X/Z/D InstitutionName:X/Z/D
InsurancePlanIdentification IntendedPhaseEndDate:X/D IntendedPhaseStartDate:X/D
IntendedRecipientsOfResultsIdentificationSequence InterlockDateTime:D InterlockDescription:D
InterlockOriginDescription:D InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
InterpretationIDIssuer InterpretationRecorder InterpretationText InterpretationTranscriber IrradiationEventUID:U
IssuerOfAdmissionID IssuerOfAdmissionIDSequence IssuerOfPatientID IssuerOfServiceEpisodeID
IssuerOfServiceEpisodeIDSequence IssuerOfTheContainerIdentifierSequence:Z IssuerOfTheSpecimenIdentifierSequence:Z
LabelText:X/Z LargePaletteColorLookupTableUID:U LastMenstrualDate LensMake LensModel LensSerialNumber
LensSpecification LongDeviceDescription MAC MakerNote ManufacturerDeviceClassUID:U ManufacturerDeviceIdentifier:Z
MediaStorageSOPInstanceUID:U MedicalAlerts MedicalRecordLocator MilitaryRank ModifiedAttributesSequence
ModifiedImageDescription ModifyingDeviceID MostRecentTreatmentDate:X/D MultienergyAcquisitionDescription
MultiplexGroupUID:U NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults
NonconformingModifiedAttributesSequence NonconformingDataElementValue ObservationDateTrial
ObservationSubjectUIDTrial:U ObservationTimeTrial ObservationUID:U Occupation OperatorIdentificationSequence:X/D
OperatorsName:X/Z/D OrderCallbackPhoneNumber OrderCallbackTelecomInformation OrderEnteredBy OrderEntererLocation
OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames OverlayDate OverlayTime
OverrideDateTime:D PaletteColorLookupTableUID:U ParticipantSequence PatientAddress PatientAge PatientBirthDate:Z
PatientBirthName PatientBirthTime PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName
PatientName:Z PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference
PatientSex:Z PatientSexNeutered:X/Z PatientSize PatientTelecomInformation PatientTelephoneNumbers PatientWeight
PatientComments PatientID:Z PatientSetupUID:U PatientState PatientTransportArrangements PerformedLocation
PerformedProcedureStepDescription PerformedProcedureStepEndDate PerformedProcedureStepEndDateTime
PerformedProcedureStepEndTime PerformedProcedureStepID PerformedProcedureStepStartDate
PerformedProcedureStepStartDateTime PerformedProcedureStepStartTime PerformedStationAETitle
PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
PerformingPhysicianName PerformingPhysicianIdentificationSequence PersonAddress PersonTelecomInformation
PersonTelephoneNumbers PersonIdentificationCodeSequence:D PersonName:D PhysiciansOfRecord
PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence PhysicianApprovingInterpretation
PlacerOrderNumberImagingServiceRequest:Z PlateID PregnancyStatus PreMedication PrescriptionDescription
PrescriptionNotes:Z PrescriptionNotesSequence:Z PresentationDisplayCollectionUID:U PresentationSequenceCollectionUID:U
PriorTreatmentDoseDescription ProcedureStepCancellationDateTime ProtocolName:X/D RadiationDoseIdentificationLabel:D
RadiationDoseInVivoMeasurementLabel:D RadiationGenerationModeDescription:Z RadiationGenerationModeLabel:D
ReasonForOmissionDescription ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForSuperseding:Z
ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure ReasonForVisit ReasonForVisitCodeSequence
RecordedRTControlPointDateTime:D ReferencedConceptualVolumeUID:U ReferencedDigitalSignatureSequence
ReferencedDoseReferenceUID:U ReferencedDosimetricObjectiveUID:U ReferencedFiducialsUID:U
ReferencedFrameOfReferenceUID:U ReferencedGeneralPurposeScheduledProcedureStepTransactionUID:U
ReferencedImageSequence:X/Z/U* ReferencedObservationUIDTrial:U ReferencedPatientAliasSequence
ReferencedPatientPhotoSequence ReferencedPatientSequence ReferencedPerformedProcedureStepSequence:X/Z/D
ReferencedSOPInstanceMACSequence ReferencedSOPInstanceUID:U ReferencedSOPInstanceUIDInFile:U
ReferencedStudySequence:X/Z ReferringPhysicianAddress ReferringPhysicianName:Z ReferringPhysicianTelephoneNumbers
ReferringPhysicianIdentificationSequence RegionOfResidence RelatedFrameOfReferenceUID:U RequestAttributesSequence
RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription:X/Z RequestedProcedureID
RequestedProcedureLocation RequestedSeriesDescription RequestedSOPInstanceUID:U RequestingPhysician RequestingService
RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization ResponsiblePerson ResultsComments
ResultsDistributionListSequence ResultsIDIssuer ReviewerName:X/Z ROIDescription ROIGenerationDescription
ROIInterpreter:Z ROIName:Z ROIObservationDescription ROIObservationLabel RTAccessoryDeviceSlotID:Z
RTAccessoryHolderSlotID:Z RTPhysicianIntentNarrative:Z RTPlanDate:X/D RTPlanDescription RTPlanLabel:D RTPlanName
RTPlanTime:X/D RTPrescriptionLabel:D RTToleranceSetLabel:D RTTreatmentApproachLabel:X/D RTTreatmentPhaseUID:U
ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianName
ScheduledPerformingPhysicianIdentificationSequence ScheduledProcedureStepDescription ScheduledProcedureStepEndDate
ScheduledProcedureStepEndTime ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID
ScheduledProcedureStepLocation ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime ScheduledStationAETitle
ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
ScheduledStudyLocation ScheduledStudyLocationAETitle SeriesDate:X/D SeriesDescription SeriesInstanceUID:U
SeriesTime:X/D ServiceEpisodeDescription ServiceEpisodeID SetupTechniqueDescription ShieldingDeviceDescription
SlideIdentifier SmokingStatus SOPInstanceUID:U SourceConceptualVolumeUID:U SourceEndDateTime:D SourceIdentifier:D
SourceImageSequence:X/Z/U* SourceManufacturer SourceSerialNumber:X/Z SourceStartDateTime:D SpecialNeeds
SpecimenAccessionNumber SpecimenDetailedDescription SpecimenIdentifier:D SpecimenPreparationSequence:Z
SpecimenShortDescription SpecimenUID:U StartAcquisitionDateTime:X/D StationName:X/Z/D StorageMediaFileSetUID:U
StructureSetDate:Z StructureSetDescription StructureSetLabel:D StructureSetName StructureSetTime:X/D StudyComments
StudyDate:Z StudyDescription StudyID:Z StudyIDIssuer StudyInstanceUID:U StudyTime:Z
SynchronizationFrameOfReferenceUID:U TargetUID:U TelephoneNumberTrial TemplateExtensionCreatorUID:U
TemplateExtensionOrganizationUID:U TextComments TextString TimezoneOffsetFromUTC TopicAuthor TopicKeywords
TopicSubject TopicTitle TrackingUID:U TransactionUID:U TransducerIdentificationSequence TreatmentDate:X/D
TreatmentMachineName TreatmentPositionGroupLabel:D TreatmentPositionGroupUID:U TreatmentSessionUID:U TreatmentSite:D
TreatmentTechniqueNotes:Z TreatmentTime:X/D TreatmentToleranceViolationDateTime:D
TreatmentToleranceViolationDescription:D UDISequence UID:U UniqueDeviceIdentifier UserContentLabel:D
UserContentLongLabel:D VerbalSourceTrial VerbalSourceIdentifierCodeSequenceTrial
VerifyingObserverIdentificationCodeSequence:Z VerifyingObserverName:D VerifyingObserverSequence:D
VerifyingOrganization:D VisitComments XRayDetectorID:D XRayDetectorLabel XRaySourceID:D
"""
# Attributes that earlier editions of the table listed and that can still carry identifying text: kept removed.
_EARLIER_EDITIONS = """
ModifyingDeviceManufacturer RequestingPhysicianIdentificationSequence SoftwareVersions
AlternateContainerIdentifierSequence TextValue ContainerComments
"""
BASIC_PROFILE: dict[str, str] = {
    item.split(":")[0]: (item.split(":")[1] if ":" in item else "X")
    for item in (_EARLIER_EDITIONS + _TABLE_E_1_1).split()
}
# The only dates and times the profile keeps (as empty, type 2 in most IODs); every other DA/DT/TM goes.
KEEP_DATES = frozenset({"StudyDate", "StudyTime", "ContentDate", "ContentTime"})
# Free text that the table does not list (vendors' public comments, newer attributes) is removed too: it is where a
# name or a history is typed, in whatever character set the file declares.
_FREE_TEXT = frozenset({"LT", "ST", "UT"})
# URLs the table does not list (Retrieve URL, Retrieve URI, Storage URL, File Access URI, Pixel Data Provider URL):
# a PACS fed over DICOMweb writes the study's address into the instance, the original Study Instance UID and the
# hospital's host in it, which the UID remapping does not reach. A code's URN and its scheme's URL name no one.
_CODE_URLS = frozenset({"URNCodeValue", "CodingSchemeURL"})
# The file meta group's optional attributes that name the sender: its AE titles, network addresses and private
# information. The table covers the data set only; these were written out as received.
_SENDER_META = (0x00020016, 0x00020017, 0x00020018, 0x00020026, 0x00020027, 0x00020028, 0x00020100, 0x00020102)
# D: a value of the attribute's VR that says nothing. A sequence is emptied rather than given an invented item.
_DUMMY_BY_VR: dict[str, Any] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "IS": "0",
    "DS": "0",
    "OB": b"\x00\x00",
}
_DUMMY_TEXT = "ANONYMIZED"
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
        # LO: at most 64 characters (the long form of the profile's name had made an invalid value).
        ds.DeidentificationMethod = f"PS3.15 E.1-1 Basic Profile ({self.method})"[:64]
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = PROFILE_CODE
        ds.DeidentificationMethodCodeSequence = DicomSequence([code])
        ds.LongitudinalTemporalInformationModified = "REMOVED"
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.new_uid(meta.MediaStorageSOPInstanceUID)
        if meta is not None:
            for tag in _SENDER_META:
                if tag in meta:
                    del meta[tag]
        return ds

    def _clean(self, ds: Dataset) -> None:
        for element in list(ds):
            tag = element.tag
            keyword = element.keyword
            if tag.is_private or (tag.group & 0xFF00) in _REPEATING_GROUPS:
                del ds[tag]
                continue
            action = BASIC_PROFILE.get(keyword, "")[:1]  # a compound action: its first, least revealing, part
            if action == "X":
                del ds[tag]
            elif action == "Z":
                element.value = "" if element.VR != "SQ" else DicomSequence([])
            elif action == "D":
                # Type 1 identifiers (clinical-trial subject and protocol, containers, specimens): present, meaningless.
                element.value = DicomSequence([]) if element.VR == "SQ" else _DUMMY_BY_VR.get(element.VR, _DUMMY_TEXT)
            elif action == "U" or element.VR == "UI":
                element.value = self._uids(element.value)
            elif (
                element.VR == "PN"
                or element.VR in _FREE_TEXT
                or (element.VR in ("DA", "DT", "TM") and keyword not in KEEP_DATES)
                or (element.VR == "UR" and keyword not in _CODE_URLS)
            ):
                # Names, free text, dates and URLs the table does not list (newer attributes, vendor-defined public ones).
                del ds[tag]
            elif element.VR == "SQ":
                for item in element.value:
                    self._clean(item)

    def _uids(self, value: Any) -> Any:
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [self.new_uid(v) for v in value]
        return self.new_uid(value) if value else value

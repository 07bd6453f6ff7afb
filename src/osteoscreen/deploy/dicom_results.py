"""Results for a PACS (IHE AI Results): for each DICOM radiograph, a Comprehensive 3D SR holding the TID 1500
Measurement Report and a Secondary Capture key image of the screening figure, as two new series in the
radiograph's own study (`predict --dicom-out`; the DicomResults writer).

The SR (title DCM 126000 "Imaging Measurement Report") holds
- one image-level group (TID 1501): p(osteoporosis) and the decision threshold as measurements, the decision as
  a qualitative evaluation (SCT 64859006 "Osteoporosis" = SCT 10828004 Positive / 260385009 Negative), the task,
  and, with a novelty reference, the distance from the training data and "unlike training data" (SCT Yes/No);
- one planar-ROI group (TID 1410) per landmark, each with its own tracking UID: the landmark as a POINT in
  highdicom's image coordinates ((column, row), 0 at the pixel's corner: our pixel-centre coordinates + 0.5), its
  finding site (mandible or maxilla, with laterality) and its group's attention weight;
- the algorithm (name, version, the model's weights digest and decision rule) in every group's algorithm
  identification and in the Contributing Equipment sequence, a device observer, and an Image Library entry
  for the radiograph. VerificationFlag is UNVERIFIED; the series description says research use.

Concepts without a standard code use one private coding scheme, PRIVATE_SCHEME (docs/pacs.md lists its codes).

Identity: a PACS files results by patient and study, so these files carry the input's patient and study
attributes (IDENTITY_KEYWORDS) and nothing else of its header: the SR and key image are built from a copy
holding only those and the attributes that reference the image. No other output of osteoscreen carries them.
UIDs are derived from the radiograph's SOP Instance UID and the model's digest (Model.digest: its weights file's,
or an exported graph's), so writing the results again gives the same instances (a PACS keeps one copy), and an
ONNX export's results are instances of their own.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import GROUP_OF_LANDMARK, LANDMARKS
from osteoscreen.core.version import __version__
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.prediction_writers import PredictionRun, Screened, Writer

DICOM_FOLDER, DICOM_INDEX = "dicom", "dicom/index.csv"
SR_SUFFIX, KEY_IMAGE_SUFFIX = ".sr.dcm", ".key.dcm"
SR_SERIES_NUMBER, KEY_IMAGE_SERIES_NUMBER = 9901, 9902
SERIES_DESCRIPTION = "osteoscreen RESEARCH USE ONLY - not for diagnosis"
MANUFACTURER = "osteoscreen project"
#: The one private coding scheme (designator, name) of the concepts that have no standard code.
PRIVATE_SCHEME = ("99OSTEOSCREEN", "osteoscreen private codes")
#: The only attributes copied from the input: who and which study the results belong to ...
IDENTITY_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                     "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "AccessionNumber",
                     "ReferringPhysicianName")
#: ... and which image they describe (the Image Library entry and the regions' references).
REFERENCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
                      "PatientOrientation", "ImagerPixelSpacing", "FrameOfReferenceUID")
#: Where a panoramic radiograph is displayed as facing the patient (the patient's right on the image's left):
#: rows run to the patient's left, columns to the feet. Used when the input does not say.
PANORAMIC_ORIENTATION = ("L", "F")


def _codes() -> dict:
    """The coded concepts of the report (highdicom and pydicom imported only when DICOM output is asked for)."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    def private(value: str, meaning: str) -> Code:
        return Code(value, PRIVATE_SCHEME[0], meaning)

    sct = {"osteoporosis": Code("64859006", "SCT", "Osteoporosis"), "positive": Code("10828004", "SCT", "Positive"),
           "negative": Code("260385009", "SCT", "Negative"), "yes": Code("373066001", "SCT", "Yes"),
           "no": Code("373067005", "SCT", "No"), "mandible": Code("91609006", "SCT", "Mandible"),
           "maxilla": Code("70925003", "SCT", "Maxilla"), "right": Code("24028007", "SCT", "Right"),
           "left": Code("7771000", "SCT", "Left"), "panoramic": Code("241188000", "SCT", "Panoramic radiography")}
    ours = {"probability": private("P-OSTEO", "Probability of osteoporosis"),
            "threshold": private("THRESHOLD", "Decision threshold on the probability of osteoporosis"),
            "attention": private("ATTENTION", "Attention weight of the landmark group"),
            "distance": private("NOVELTY", "Distance from the training data"),
            "unlike": private("UNLIKE", "Unlike the training data"),
            "task": private("TASK", "Screening task"),
            **{f"task:{task}": private(task.upper(), task.replace("-", " "))
               for task in ("osteoporosis-vs-normal", "osteoporosis-vs-rest", "low-bmd-vs-normal")},
            **{name: private(name.upper(), f"{name.replace('_', ' ')} landmark") for name in LANDMARKS}}
    return {**sct, **ours, "unitless": Code("1", "UCUM", "no units"), "dcm": codes.DCM}


def identity_and_reference(path: Path) -> object:
    """A pydicom Dataset holding only the input's IDENTITY_KEYWORDS and REFERENCE_KEYWORDS (read without its
    pixels); InputError naming the file when it lacks what a result needs (its UIDs, a pixel spacing for a
    projection radiograph)."""
    import pydicom
    from pydicom.dataset import Dataset

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as error:
        raise InputError(f"{path}: DICOM output needs a readable DICOM header ({error})") from None
    kept = Dataset()
    for keyword in IDENTITY_KEYWORDS + REFERENCE_KEYWORDS:
        if keyword in header and header[keyword].value not in (None, ""):
            setattr(kept, keyword, header[keyword].value)
        elif keyword in IDENTITY_KEYWORDS and keyword not in ("IssuerOfPatientID", "StudyInstanceUID"):
            setattr(kept, keyword, "")  # type 2: present, empty when unknown
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Rows", "Columns") if k not in kept]
    if missing:
        raise InputError(f"{path}: DICOM output needs the input's {', '.join(missing)}, which its header lacks")
    kept.Modality = str(kept.get("Modality") or "PX")
    if "ImagerPixelSpacing" not in kept:
        spacing = header.get("PixelSpacing")
        if spacing is None:
            raise InputError(f"{path}: DICOM output needs ImagerPixelSpacing or PixelSpacing, which its header lacks")
        kept.ImagerPixelSpacing = spacing
    if "PatientOrientation" not in kept or len(list(kept.PatientOrientation)) != 2:
        kept.PatientOrientation = list(PANORAMIC_ORIENTATION)
    return kept


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["osteoscreen-results", *parts])


def _algorithm(model: Model):
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(name=f"osteoscreen {model.method}", version=__version__,
                                         parameters=[f"model sha256 {model.digest}",
                                                     f"decision rule: {model.rule.rule}"])


def _equipment(model: Model):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.ContributingEquipment(manufacturer=MANUFACTURER, purpose_of_reference=codes.DCM.ProcessingEquipment,
                                    manufacturer_model_name=f"osteoscreen {model.method}",
                                    software_versions=__version__, device_serial_number=model.digest[:16])


def _image_group(reference, item: Screened, model: Model, code: dict):
    import highdicom as hd

    result, algorithm = item.result, _algorithm(model)
    measurements = [hd.sr.Measurement(name=code["probability"], value=result.probability, unit=code["unitless"],
                                      algorithm_id=algorithm),
                    hd.sr.Measurement(name=code["threshold"], value=model.threshold, unit=code["unitless"])]
    evaluations = [hd.sr.QualitativeEvaluation(code["osteoporosis"],
                                               code["positive" if result.decision == "osteoporosis" else "negative"]),
                   hd.sr.QualitativeEvaluation(code["task"], code[f"task:{model.task}"])]
    if result.distance is not None:
        measurements.append(hd.sr.Measurement(name=code["distance"], value=result.distance, unit=code["unitless"]))
        evaluations.append(hd.sr.QualitativeEvaluation(code["unlike"], code["yes" if result.unlike_training
                                                                            else "no"]))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(reference.SOPInstanceUID, model.digest, "image"),
                                                     identifier="osteoscreen screening"),
        finding_type=code["osteoporosis"], algorithm_id=algorithm, measurements=measurements,
        qualitative_evaluations=evaluations)


def _landmark_groups(reference, item: Screened, model: Model, code: dict) -> list:
    import highdicom as hd

    source = hd.sr.SourceImageForRegion(referenced_sop_class_uid=reference.SOPClassUID,
                                        referenced_sop_instance_uid=reference.SOPInstanceUID)
    attention = item.result.attention
    groups = []
    for index, (name, (x, y)) in enumerate(zip(LANDMARKS, item.subject.landmarks, strict=True)):
        group, side = name.split("_")
        site = hd.sr.FindingSite(code["maxilla" if group == "tuberosity" else "mandible"], laterality=code[side])
        weight = [] if attention is None else [hd.sr.Measurement(
            name=code["attention"], value=float(attention[GROUP_OF_LANDMARK[index]]), unit=code["unitless"])]
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=_uid(reference.SOPInstanceUID, model.digest, name), identifier=f"landmark {name}"),
            referenced_region=hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT,
                                                graphic_data=np.array([[x + 0.5, y + 0.5]]), source_image=source),
            finding_type=code[name], finding_sites=[site], algorithm_id=_algorithm(model), measurements=weight))
    return groups


def structured_report(reference, item: Screened, model: Model):
    """The Comprehensive 3D SR of one screened radiograph (reference: identity_and_reference's dataset)."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    code = _codes()
    digest = model.digest
    observer = hd.sr.ObserverContext(
        observer_type=code["dcm"].Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", digest), name=f"osteoscreen {model.method}", manufacturer_name=MANUFACTURER,
            model_name=f"osteoscreen {__version__}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=code["panoramic"],
        imaging_measurements=[_image_group(reference, item, model, code),
                              *_landmark_groups(reference, item, model, code)],
        title=code["dcm"].ImagingMeasurementReport, referenced_images=[reference])
    sr = hd.sr.Comprehensive3DSR(
        evidence=[reference], content=report, series_instance_uid=_uid(reference.StudyInstanceUID, digest, "sr"),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=_uid(reference.SOPInstanceUID, digest, "sr"),
        instance_number=1, manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SERIES_DESCRIPTION, contributing_equipment=[_equipment(model)])
    scheme = Dataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeName = PRIVATE_SCHEME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [*sr.get("CodingSchemeIdentificationSequence", []), scheme]
    return sr


def key_image(reference, item: Screened, model: Model):
    """The Secondary Capture key image: the screening figure (visualise.screening_rgb), burned-in annotation."""
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian

    from osteoscreen.reporting.visualise import screening_rgb

    result, digest = item.result, model.digest
    pixels = screening_rgb(item.radiograph.pixels, item.subject, result.patches, model.config.patch.context,
                           result.probability, result.attention, result.decision, model.threshold,
                           result.unlike_training)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", patient_orientation=tuple(reference.PatientOrientation),
        series_instance_uid=_uid(reference.StudyInstanceUID, digest, "key"), series_number=KEY_IMAGE_SERIES_NUMBER,
        sop_instance_uid=_uid(reference.SOPInstanceUID, digest, "key"), instance_number=1,
        manufacturer=MANUFACTURER, transfer_syntax_uid=ExplicitVRLittleEndian, series_description=SERIES_DESCRIPTION,
        contributing_equipment=[_equipment(model)])
    image.BurnedInAnnotation = "YES"
    image.Laterality = ""  # both sides of the jaw: a paired structure, no single side (type 2C, empty)
    return image


class DicomResults(Writer):
    """dicom/<name>.sr.dcm and dicom/<name>.key.dcm per radiograph, and dicom/index.csv (subject_id, sr,
    key_image). Every input must be DICOM: start() says which are not before any work."""

    def start(self, folder: Path, run: PredictionRun) -> None:
        from osteoscreen.io.imageio import image_kind

        raster = []
        for subject in run.subjects:
            with open(subject.image_path, "rb") as handle:
                if image_kind(handle.read(132)) != "dicom":
                    raster.append(subject.image_path.name)
        if raster:
            raise InputError(f"--dicom-out needs DICOM inputs (a result is filed in the radiograph's DICOM study): "
                             f"{len(raster)} of {len(run.subjects)} are not ({', '.join(raster[:5])}"
                             f"{', ...' if len(raster) > 5 else ''})")
        for subject in run.subjects:
            identity_and_reference(subject.image_path)
        (folder / DICOM_FOLDER).mkdir()

    def radiograph(self, folder: Path, item: Screened, model: Model) -> list[str]:
        from osteoscreen.io.outputs import atomic_path

        reference = identity_and_reference(item.subject.image_path)
        files = [f"{item.name}{SR_SUFFIX}", f"{item.name}{KEY_IMAGE_SUFFIX}"]
        for name, dataset in zip(files, (structured_report(reference, item, model),
                                         key_image(reference, item, model)), strict=True):
            with atomic_path(folder / DICOM_FOLDER / name) as partial:
                dataset.save_as(partial, enforce_file_format=True)
        return [item.subject.subject_id, *files]

    def finish(self, folder: Path, run: PredictionRun, records: list) -> None:
        with open(folder / DICOM_INDEX, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["subject_id", "sr", "key_image"])
            writer.writerows(records)

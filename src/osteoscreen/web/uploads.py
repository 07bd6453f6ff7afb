"""Uploaded radiographs: the type is read from the file's first bytes (not its name), the size is capped, and
the image is decoded from a temporary file that is deleted before the response; nothing of the upload is kept
or logged, and only pixels leave this module (no DICOM header field). Decoding is bounded twice: each image by
the decoded-size limits of `imageio`, and the number decoded at once by `DecodeSlots`."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from osteoscreen.core.errors import InputError
from osteoscreen.data.dataset import MAX_AGE, parse_age, parse_sex
from osteoscreen.io.imageio import STRIP_ROWS, Radiograph, image_kind, read_radiograph
from osteoscreen.io.png import png_bytes

SUFFIXES = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "dicom": ".dcm"}


class UploadError(Exception):
    """A bad upload: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class DecodeSlots:
    """At most `count` radiographs decoded and processed at once; a request beyond that is answered 503 at once
    (it does not queue, so memory stays bounded by count x one image's decode, whatever the load)."""

    def __init__(self, count: int):
        self.count = count
        self._free = threading.BoundedSemaphore(count)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise UploadError(503, f"busy: {self.count} radiograph(s) are being processed; try again in a moment")
        try:
            yield
        finally:
            self._free.release()


@contextmanager
def _upload_file(data: bytes) -> Iterator[tuple[str, Path]]:
    """(kind, a temporary file holding the upload), deleted after the block; an InputError inside the block
    becomes UploadError 422 naming "the upload", never the temporary path. UploadError 415 for an upload that is
    not a DICOM, PNG, JPEG or TIFF file."""
    kind = image_kind(data[:132])
    if kind is None:
        raise UploadError(415, "not a DICOM, PNG, JPEG or TIFF image (checked by content, not by name)")
    with tempfile.TemporaryDirectory(prefix="osteoscreen-upload-") as folder:
        path = Path(folder) / f"upload{SUFFIXES[kind]}"
        path.write_bytes(data)
        try:
            yield kind, path
        except InputError as error:
            reason = str(error).removeprefix(f"{path}: ").replace(str(path), "the upload")
            raise UploadError(422, f"the uploaded {kind.upper()} file cannot be read: {reason}") from None


def decode_upload(data: bytes) -> Radiograph:
    """Decode an uploaded radiograph (bytes of a DICOM, PNG, JPEG or TIFF file); UploadError if it is none of
    them (415) or cannot be read (422)."""
    with _upload_file(data) as (_, path):
        return read_radiograph(path)


def decode_dicom_upload(data: bytes) -> tuple[Radiograph, object]:
    """A DICOM upload's radiograph and the part of its header DICOM results copy (deploy.dicom_results.
    identity_and_reference: its patient, study and image references, nothing else); UploadError 422 for any other
    kind of file or a header without what a result needs."""
    from osteoscreen.deploy.dicom_results import identity_and_reference

    with _upload_file(data) as (kind, path):
        if kind != "dicom":
            raise UploadError(422, f"DICOM results need a DICOM radiograph: a {kind.upper()} file has no patient or "
                                   "study to file them in")
        return read_radiograph(path), identity_and_reference(path)


def display_png(pixels: np.ndarray) -> bytes:
    """[H, W] float in [0, 1] (or [H, W] uint8) -> an 8-bit grey PNG for the page (converted in strips of rows: no
    full-size temporary beyond the 8-bit copy; encoded by io.png, a tenth of Pillow's time for a radiograph)."""
    if pixels.dtype != np.uint8:
        grey = np.empty(pixels.shape, np.uint8)
        for start in range(0, pixels.shape[0], STRIP_ROWS):
            grey[start:start + STRIP_ROWS] = np.clip(np.rint(pixels[start:start + STRIP_ROWS] * 255), 0, 255)
        pixels = grey
    return png_bytes(pixels)


def parse_covariates(age: str, sex: str, needed: bool) -> tuple[float | None, str | None]:
    """The age and sex fields of a screening request -> (years, "F"/"M"); empty fields give None. UploadError
    (422) for a value that is not an age or a sex, and for a missing one when the model needs them (+clinical)."""
    age, sex = age.strip(), sex.strip()
    if needed and not (age and sex):
        raise UploadError(422, "this model needs the patient's age and sex: fill both fields")
    years = parse_age(age) if age else None
    if age and years is None:
        raise UploadError(422, f"age: expected years between 0 and {MAX_AGE}, got {age[:20]!r}")
    code = parse_sex(sex) if sex else None
    if sex and code is None:
        raise UploadError(422, f"sex: expected F or M, got {sex[:20]!r}")
    return years, code

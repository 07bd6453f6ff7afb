"""Uploaded radiographs: the type is read from the file's first bytes (not its name), the size is capped, and
the image is decoded from a temporary file that is deleted before the response; nothing of the upload is kept
or logged, and only pixels leave this module (no DICOM header field)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from osteoscreen.data.imageio import Radiograph, read_radiograph
from osteoscreen.errors import InputError

#: Leading bytes of each image type we read (DICOM: "DICM" after the 128-byte preamble).
SIGNATURES = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "tiff": (b"II*\x00", b"MM\x00*")}
SUFFIXES = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "dicom": ".dcm"}


class UploadError(Exception):
    """A bad upload: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def image_type(head: bytes) -> str | None:
    """'png', 'jpeg', 'tiff' or 'dicom' from a file's first 132 bytes; None for anything else."""
    for kind, signatures in SIGNATURES.items():
        if head.startswith(signatures):
            return kind
    return "dicom" if head[128:132] == b"DICM" else None


def decode_upload(data: bytes) -> Radiograph:
    """Decode an uploaded radiograph (bytes of a DICOM, PNG, JPEG or TIFF file); UploadError if it is none of
    them (415) or cannot be read (422)."""
    kind = image_type(data[:132])
    if kind is None:
        raise UploadError(415, "not a DICOM, PNG, JPEG or TIFF image (checked by content, not by name)")
    with tempfile.TemporaryDirectory(prefix="osteoscreen-upload-") as folder:
        path = Path(folder) / f"upload{SUFFIXES[kind]}"
        path.write_bytes(data)
        try:
            return read_radiograph(path)
        except InputError as error:
            reason = str(error).removeprefix(f"{path}: ")
            raise UploadError(422, f"the uploaded {kind.upper()} file cannot be read: {reason}") from None


def png_bytes(pixels: np.ndarray) -> bytes:
    """[H, W] float in [0, 1] (or [H, W] uint8) -> an 8-bit grey PNG."""
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()

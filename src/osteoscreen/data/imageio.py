"""Read a radiograph (DICOM, PNG, JPEG, TIFF) into a float32 grey image in [0, 1] with bone bright.

The scale is the file's storage range: 8-bit files are divided by 255, 16-bit files by 65535, DICOM by the
range of its stored values after the modality and VOI LUTs. So a 16-bit PNG and a DICOM file holding the
same stored values give the same image.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from osteoscreen.errors import InputError

#: Largest image we decode, in pixels (a panoramic radiograph has about 3-9 million).
MAX_PIXELS = 60_000_000
DICOM_SUFFIXES = {".dcm", ".dicom"}
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
SUPPORTED_SUFFIXES = DICOM_SUFFIXES | RASTER_SUFFIXES
_RGB_TO_GREY = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Radiograph:
    """pixels: [H, W] float32 in [0, 1], bone bright. spacing_mm: pixel size in mm (mean of row and column
    spacing), or None when the file does not say."""

    pixels: np.ndarray
    spacing_mm: float | None


def read_radiograph(path: str | Path) -> Radiograph:
    """Read one radiograph; raise InputError naming the file for anything we cannot read faithfully."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    if suffix in DICOM_SUFFIXES:
        return _read_dicom(path)
    if suffix in RASTER_SUFFIXES:
        return Radiograph(_read_raster(path), None)
    raise InputError(f"{path}: unsupported image type {suffix or '(none)'}; expected one of "
                     f"{', '.join(sorted(SUPPORTED_SUFFIXES))}")


def _check_size(path: Path, rows: int, cols: int) -> None:
    if rows * cols > MAX_PIXELS:
        raise InputError(f"{path}: image of {cols}x{rows} pixels exceeds the limit of {MAX_PIXELS} pixels")


def _to_grey(array: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, 3|4] -> [H, W] float64 luminance (alpha dropped)."""
    if array.ndim == 3:
        return array[..., :3].astype(np.float64) @ _RGB_TO_GREY
    return array.astype(np.float64)


def _read_raster(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(path, image.height, image.width)
                image.load()
                mode = image.mode
                if mode in ("P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                    image = image.convert("RGB")
                    mode = "RGB"
                array = np.asarray(image)
    except InputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise InputError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except Exception as error:  # Pillow raises many types for corrupt or truncated files
        raise InputError(f"{path}: cannot read image ({error})") from None
    grey = _to_grey(array)
    if mode.startswith("I;16") or (mode == "I" and grey.max() <= 65535 and grey.min() >= 0):
        scale = 65535.0
    elif mode in ("L", "RGB", "RGBA"):
        scale = 255.0
    elif mode == "F" and grey.min() >= 0 and grey.max() <= 1:
        scale = 1.0
    else:
        low, high = float(grey.min()), float(grey.max())
        grey, scale = grey - low, max(high - low, 1e-12)
    return (grey / scale).astype(np.float32)


def _read_dicom(path: Path) -> Radiograph:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:
        raise InputError(f"{path}: not a readable DICOM file ({error})") from None
    if "PixelData" not in dataset:
        raise InputError(f"{path}: DICOM file has no pixel data")
    _check_size(path, int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0)))
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422"):
        raise InputError(f"{path}: unsupported photometric interpretation {photometric or '(missing)'}")
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{path}: multi-frame DICOM is not a single radiograph")
    try:
        stored = dataset.pixel_array  # pydicom converts YBR colour to RGB here
    except Exception as error:
        raise InputError(f"{path}: cannot decode DICOM pixel data ({error})") from None

    if stored.ndim == 3:
        values = _to_grey(stored)
        low, high = 0.0, float(2 ** int(dataset.get("BitsStored", 8)) - 1)
    else:
        bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 16)))
        signed = int(dataset.get("PixelRepresentation", 0)) == 1
        stored_range = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1],
                                dtype=np.float64)
        values = apply_modality_lut(stored.astype(np.float64), dataset)
        value_range = apply_modality_lut(stored_range, dataset)
        if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
            values = apply_voi_lut(values, dataset, index=0)
            value_range = apply_voi_lut(np.asarray(value_range, dtype=np.float64), dataset, index=0)
        low, high = float(np.min(value_range)), float(np.max(value_range))
    scaled = np.clip((np.asarray(values, dtype=np.float64) - low) / max(high - low, 1e-12), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Radiograph(scaled.astype(np.float32), _dicom_spacing(dataset))


def _dicom_spacing(dataset) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(np.mean([float(v) for v in value]))
    return None

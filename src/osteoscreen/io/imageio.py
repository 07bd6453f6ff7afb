"""Read a radiograph (DICOM, PNG, JPEG, TIFF) into a float32 grey image in [0, 1] with bone bright.

The type comes from the file's content, not its name: a DICOM file without its 128-byte preamble or without
an extension is read (pydicom's `force`, with a check that pixel data exists). Compressed DICOM transfer
syntaxes that PACS exports use (JPEG Lossless, JPEG-LS, JPEG 2000, RLE) decode through pydicom's pylibjpeg
plugins.

The scale is the file's storage range: 8-bit files are divided by 255, 16-bit files by 65535, DICOM by the
range of its stored values after the modality and VOI LUTs. So a 16-bit PNG and a DICOM file holding the
same stored values give the same image.

Memory is bounded before decoding: an image of more than MAX_PIXELS pixels, or whose decoded samples (width x
height x channels x bytes per sample, as its header declares them) exceed MAX_DECODED_BYTES, is refused; the
grey conversion then works in strips of rows, so a decode needs about the decoded samples plus 4 bytes per
pixel for the result.

Optional headers are untrusted: a DICOM window, rescale or pixel spacing that cannot be used is ignored with an
InputWarning naming the file and tag (spacing then comes from the other tag or the CSV). EXIF orientation is
applied, so the pixels are as a viewer shows them; a file holding several images (multipage TIFF) gives its
first, with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from osteoscreen.core.errors import InputError, InputWarning

#: Largest image we decode, in pixels (a panoramic radiograph has about 3-9 million).
MAX_PIXELS = 60_000_000
#: Largest decoded image, in bytes of its samples as declared by its header (a 60-megapixel 16-bit grey image
#: is 120 MB; an RGBA picture of 7745 x 7745 pixels, 240 MB, is refused).
MAX_DECODED_BYTES = 128 * 2**20
DICOM_SUFFIXES = {".dcm", ".dicom"}
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
SUPPORTED_SUFFIXES = DICOM_SUFFIXES | RASTER_SUFFIXES
#: Leading bytes of each raster type we read.
SIGNATURES = {"png": (b"\x89PNG\r\n\x1a\n",), "jpeg": (b"\xff\xd8\xff",), "tiff": (b"II*\x00", b"MM\x00*")}
#: DICOM element groups a file without preamble starts with (file meta, or identifying data), little endian.
_BARE_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00")
_RGB_TO_GREY = np.array([0.299, 0.587, 0.114])
STRIP_ROWS = 256
#: Pixel spacings (mm) outside this range are used with a warning: panoramic detectors have about 0.07-0.15 mm.
PLAUSIBLE_SPACING_MM = (0.02, 1.0)
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I": 4, "F": 4}


@dataclass(frozen=True)
class Radiograph:
    """pixels: [H, W] float32 in [0, 1], bone bright. spacing_mm: pixel size in mm (mean of row and column
    spacing), or None when the file does not say."""

    pixels: np.ndarray
    spacing_mm: float | None


def image_kind(head: bytes) -> str | None:
    """'png', 'jpeg', 'tiff' or 'dicom' from a file's first 132 bytes; None for anything else. "DICM" after the
    preamble wins: a DICOM preamble may itself hold a TIFF header (dual-format files)."""
    if head[128:132] == b"DICM":
        return "dicom"
    for kind, signatures in SIGNATURES.items():
        if head.startswith(signatures):
            return kind
    return "dicom" if head[:2] in _BARE_DICOM_GROUPS else None


def read_radiograph(path: str | Path) -> Radiograph:
    """Read one radiograph; raise InputError naming the file for anything we cannot read faithfully."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with open(path, "rb") as handle:
            kind = image_kind(handle.read(132))
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    suffix = path.suffix.lower()
    if kind == "dicom" or (kind is None and (suffix in DICOM_SUFFIXES or not suffix)):
        return _read_dicom(path)
    if kind is not None:
        return Radiograph(_read_raster(path), None)  # _read_raster refuses non-finite samples
    if suffix in RASTER_SUFFIXES:
        raise InputError(f"{path}: cannot read image (its content is not {suffix[1:].upper()}, nor any type "
                         "we read)")
    raise InputError(f"{path}: unsupported image type {suffix}; expected one of "
                     f"{', '.join(sorted(SUPPORTED_SUFFIXES))}")


def radiograph_from_array(pixels: object, spacing_mm: float | None = None, what: str = "image") -> Radiograph:
    """A Radiograph from a caller's [H, W] array of grey values in [0, 1] (bone bright); InputError naming `what`
    for any other shape, a value that is not a finite number or one outside [0, 1]."""
    array = np.asarray(pixels)
    if array.ndim != 2 or min(array.shape) < 2 or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{what}: expected an [H, W] array of grey values in [0, 1], got shape {array.shape} of "
                         f"{array.dtype} (convert colour to grey first)")
    array = _finite(what, array.astype(np.float32))
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise InputError(f"{what}: grey values must lie in [0, 1], got {low:g} to {high:g} (divide 8-bit values by "
                         "255, 16-bit ones by 65535)")
    return Radiograph(array, spacing_mm)


def _finite(what: str | Path, pixels: np.ndarray, after: str = "") -> np.ndarray:
    """pixels, if every one is a finite number; InputError naming `what` otherwise (a NaN pixel would make
    p(osteoporosis) NaN). after: what produced them, for the message."""
    bad = int(np.count_nonzero(~np.isfinite(pixels)))
    if bad:
        raise InputError(f"{what}: {bad} pixel(s) are not finite numbers (NaN or infinity){after}")
    return pixels


def _check_size(path: Path, rows: int, cols: int, samples: int, bytes_per_sample: float) -> None:
    if rows * cols > MAX_PIXELS:
        raise InputError(f"{path}: image of {cols}x{rows} pixels exceeds the limit of {MAX_PIXELS} pixels")
    decoded = rows * cols * samples * bytes_per_sample
    if decoded > MAX_DECODED_BYTES:
        raise InputError(f"{path}: image of {cols}x{rows} pixels x {samples} channel(s) x {bytes_per_sample:g} "
                         f"byte(s) would decode to {decoded / 2**20:.3g} MiB, over the limit of "
                         f"{MAX_DECODED_BYTES / 2**20:.3g} MiB")


def _to_grey(array: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, 3|4] -> [H, W] float64 luminance (alpha dropped)."""
    if array.ndim == 3:
        return array[..., :3].astype(np.float64) @ _RGB_TO_GREY
    return array.astype(np.float64)


def _grey_in_strips(array: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """[H, W(, C)] -> [H, W] float32: `transform` of the float64 luminance, computed STRIP_ROWS rows at a time
    so that no full-size float64 copy exists."""
    out = np.empty(array.shape[:2], np.float32)
    for start in range(0, array.shape[0], STRIP_ROWS):
        out[start:start + STRIP_ROWS] = transform(_to_grey(array[start:start + STRIP_ROWS]))
    return out


def _read_raster(path: Path) -> np.ndarray:
    try:
        array, mode = _decode_raster(path)
    except InputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise InputError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except Exception as error:  # Pillow raises many types for corrupt or truncated files
        raise InputError(f"{path}: cannot read image ({error})") from None
    low = high = 0.0
    if array.ndim == 2:
        low, high = float(array.min()), float(array.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InputError(f"{path}: image holds values that are not finite numbers (NaN or infinity)")
    if mode.startswith("I;16") or (mode == "I" and high <= 65535 and low >= 0):
        offset, scale = 0.0, 65535.0
    elif mode in ("L", "RGB", "RGBA"):
        offset, scale = 0.0, 255.0
    elif mode == "F" and low >= 0 and high <= 1:
        offset, scale = 0.0, 1.0
    else:
        offset, scale = low, max(high - low, 1e-12)
    return _grey_in_strips(array, lambda grey: (grey - offset) / scale)


def _decode_raster(path: Path) -> tuple[np.ndarray, str]:
    """The stored samples ([H, W] or [H, W, C]) and Pillow mode of a raster file, size-checked before decoding,
    EXIF orientation applied; each Pillow image is closed as soon as the next step holds its pixels."""
    with Image.open(path) as opened:
        bands = len(opened.getbands())
        _check_size(path, opened.height, opened.width, bands,
                    2 if opened.mode.startswith("I;16") else _PILLOW_BYTES.get(opened.mode, 1))
        frames = getattr(opened, "n_frames", 1)
        if frames > 1:
            warnings.warn(f"{path}: holds {frames} images (pages); the first is used", InputWarning, stacklevel=4)
        opened.load()
        image = opened
        if image.getexif().get(0x0112, 1) != 1:
            image = ImageOps.exif_transpose(image)
            opened.close()
        if image.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            converted = image.convert("RGB")
            image.close()
            image = converted
        try:
            return np.asarray(image), image.mode
        finally:
            image.close()


def _number(value: object) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not finite")
    return number


def _header_int(path: Path, dataset, keyword: str, default: int | None = None) -> int:
    """A required integer DICOM attribute; InputError naming the file and tag when absent or malformed."""
    try:
        value = dataset.get(keyword, default)
        if value is None:
            raise ValueError("missing")
        return int(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: DICOM tag {keyword} is unusable ({error})") from None


def _ignored(path: Path, what: str, error: Exception, fallback: str) -> None:
    warnings.warn(f"{path}: DICOM {what} is unusable ({error}); {fallback}", InputWarning, stacklevel=4)


def _read_dicom(path: Path) -> Radiograph:
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # we check what we use, and say so
    try:
        dataset = pydicom.dcmread(path, force=True)
    except Exception as error:
        raise InputError(f"{path}: not a readable DICOM file ({error})") from None
    if "PixelData" not in dataset:
        raise InputError(f"{path}: not a readable DICOM file (no pixel data)")
    if "TransferSyntaxUID" not in dataset.file_meta:  # no file meta (no preamble): the encoding pydicom found
        implicit, little = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                               ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    rows, cols = _header_int(path, dataset, "Rows"), _header_int(path, dataset, "Columns")
    samples = _header_int(path, dataset, "SamplesPerPixel", 1)
    bits_allocated = _header_int(path, dataset, "BitsAllocated", 16)
    _check_size(path, rows, cols, samples, math.ceil(bits_allocated / 8))
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422"):
        raise InputError(f"{path}: unsupported photometric interpretation {photometric or '(missing)'}")
    if _header_int(path, dataset, "NumberOfFrames", 1) > 1:
        raise InputError(f"{path}: multi-frame DICOM is not a single radiograph")
    try:
        stored = dataset.pixel_array  # pydicom converts YBR colour to RGB here
    except Exception as error:
        syntax = dataset.file_meta.TransferSyntaxUID
        raise InputError(f"{path}: cannot decode DICOM pixel data ({getattr(syntax, 'name', syntax)}: "
                         f"{str(error).splitlines()[0]})") from None
    bits = _header_int(path, dataset, "BitsStored", bits_allocated)
    if stored.ndim == 3:
        low, high = 0.0, float(2 ** bits - 1)
        transform = _identity
    else:
        signed = _header_int(path, dataset, "PixelRepresentation", 0) == 1
        stored_range = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1],
                                dtype=np.float64)
        transform = _value_transform(path, dataset)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
            value_range = transform(stored_range)
        low, high = float(np.min(value_range)), float(np.max(value_range))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InputError(f"{path}: the DICOM modality or VOI LUT (RescaleSlope "
                             f"{dataset.get('RescaleSlope', '(none)')}, RescaleIntercept "
                             f"{dataset.get('RescaleIntercept', '(none)')}) maps the stored values to non-finite "
                             "numbers")
    invert = photometric == "MONOCHROME1"

    def scaled(grey: np.ndarray) -> np.ndarray:
        unit = np.clip((np.asarray(transform(grey), dtype=np.float64) - low) / max(high - low, 1e-12), 0.0, 1.0)
        return 1.0 - unit if invert else unit

    pixels = _finite(path, _grey_in_strips(stored, scaled), " after the file's value transforms (rescale, window)")
    return Radiograph(pixels, _dicom_spacing(path, dataset))


def _identity(values: np.ndarray) -> np.ndarray:
    return values


def _value_transform(path: Path, dataset) -> Callable[[np.ndarray], np.ndarray]:
    """Stored values -> displayed values: the modality LUT, then the first VOI LUT or window. A rescale or window
    that cannot be used (non-numeric, slope or width 0, a broken LUT) is left out with a warning."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    probe = np.array([0.0, 1.0, 4095.0])
    modality = _identity
    try:
        if "RescaleSlope" in dataset and _number(dataset.RescaleSlope) == 0:
            raise ValueError("RescaleSlope is 0")
        if "RescaleIntercept" in dataset:
            _number(dataset.RescaleIntercept)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused once the range is known
            apply_modality_lut(probe, dataset)
        modality = lambda values: apply_modality_lut(values, dataset)  # noqa: E731
    except Exception as error:
        _ignored(path, "rescale (RescaleSlope/RescaleIntercept or Modality LUT)", error, "stored values used")
    if "WindowCenter" not in dataset and "VOILUTSequence" not in dataset:
        return modality
    try:
        if "VOILUTSequence" not in dataset:
            centre, width = (_number(_values(dataset[k].value)[0]) for k in ("WindowCenter", "WindowWidth"))
            if width < 1:
                raise ValueError(f"WindowWidth {width:g} is below 1")
        np.asarray(apply_voi_lut(modality(probe), dataset, index=0), dtype=np.float64)
    except Exception as error:
        _ignored(path, "VOI window (WindowCenter/WindowWidth or VOI LUT)", error, "the full value range used")
        return modality
    return lambda values: apply_voi_lut(modality(values), dataset, index=0)


def _values(value: object) -> list:
    """A DICOM attribute's values as a list (one value, or each of a multi-valued one)."""
    from pydicom.multival import MultiValue

    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _dicom_spacing(path: Path, dataset) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword not in dataset:
            continue
        try:
            value = dataset[keyword].value
            values = [_number(v) for v in _values(value)]
            if len(values) != 2 or min(values) <= 0:
                raise ValueError(f"needs two positive numbers, has {len(values)} value(s) {values}")
            spacing = float(np.mean(values))
            if not PLAUSIBLE_SPACING_MM[0] <= spacing <= PLAUSIBLE_SPACING_MM[1]:
                warnings.warn(f"{path}: DICOM tag {keyword} {spacing:g} mm is outside the plausible "
                              f"{PLAUSIBLE_SPACING_MM[0]:g} to {PLAUSIBLE_SPACING_MM[1]:g} mm; used as given (check "
                              "it)", InputWarning, stacklevel=4)
            return spacing
        except Exception as error:
            _ignored(path, f"tag {keyword}", error, "pixel spacing taken from another tag or the CSV, if any")
    return None

import re
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from osteoscreen.core.errors import InputError
from osteoscreen.io import imageio
from osteoscreen.io.imageio import read_radiograph

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def write_dicom(path, stored, photometric="MONOCHROME2", bits_stored=16, **extra):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, photometric
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_reads_pydicom_bundled_ct_with_modality_lut_and_spacing():
    radiograph = read_radiograph(PYDICOM_FILES / "CT_small.dcm")
    dataset = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    assert radiograph.pixels.shape == (128, 128) and radiograph.pixels.dtype == np.float32
    assert radiograph.spacing_mm == pytest.approx(float(dataset.PixelSpacing[0]))
    # higher stored value -> brighter pixel (monotonic, MONOCHROME2)
    stored = dataset.pixel_array.astype(float)
    order = np.argsort(stored.ravel())
    assert np.all(np.diff(radiograph.pixels.ravel()[order]) >= -1e-7)


def test_reads_pydicom_bundled_compressed_mr():
    plain = read_radiograph(PYDICOM_FILES / "MR_small.dcm")
    rle = read_radiograph(PYDICOM_FILES / "MR_small_RLE.dcm")
    np.testing.assert_array_equal(plain.pixels, rle.pixels)
    assert 0.0 <= plain.pixels.min() < plain.pixels.max() <= 1.0


@pytest.mark.parametrize("name, message", [("MR_truncated.dcm", "cannot decode"),
                                           ("examples_palette.dcm", "unsupported photometric")])
def test_bundled_bad_dicom_files_are_refused(name, message):
    with pytest.raises(InputError, match=message):
        read_radiograph(PYDICOM_FILES / name)


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    values = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    mono2 = read_radiograph(write_dicom(tmp_path / "m2.dcm", values, PixelSpacing=["0.1", "0.1"]))
    mono1 = read_radiograph(write_dicom(tmp_path / "m1.dcm", 65535 - values, "MONOCHROME1"))
    np.testing.assert_allclose(mono1.pixels, mono2.pixels, atol=1e-6)
    np.testing.assert_allclose(mono2.pixels, values / 65535, atol=1e-6)
    assert mono2.spacing_mm == pytest.approx(0.1) and mono1.spacing_mm is None


def test_bits_stored_sets_the_range(tmp_path):
    values = np.array([[0, 2048, 4095]], dtype=np.uint16)
    radiograph = read_radiograph(write_dicom(tmp_path / "b12.dcm", values, bits_stored=12))
    np.testing.assert_allclose(radiograph.pixels, [[0, 2048 / 4095, 1]], atol=1e-6)


def test_monochrome1_12_bit_inverts_with_bits_stored_maximum(tmp_path):
    values = np.array([[0, 4095]], dtype=np.uint16)
    radiograph = read_radiograph(write_dicom(tmp_path / "m1_12.dcm", values, "MONOCHROME1", bits_stored=12))
    np.testing.assert_allclose(radiograph.pixels, [[1, 0]], atol=1e-6)


def test_voi_window_is_applied(tmp_path):
    values = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16)
    radiograph = read_radiograph(write_dicom(tmp_path / "voi.dcm", values, bits_stored=12,
                                             WindowCenter="2000", WindowWidth="2000"))
    pixels = radiograph.pixels[0]
    assert pixels[0] == pytest.approx(0) and pixels[1] == pytest.approx(0, abs=1e-3)
    assert pixels[3] == pytest.approx(1, abs=1e-3) and pixels[4] == pytest.approx(1)
    assert 0.4 < pixels[2] < 0.6


def test_imager_pixel_spacing_is_the_fallback(tmp_path):
    path = write_dicom(tmp_path / "ips.dcm", np.zeros((2, 2), np.uint16), ImagerPixelSpacing=["0.12", "0.12"])
    assert read_radiograph(path).spacing_mm == pytest.approx(0.12)


def test_png_8_and_16_bit_and_rgb(tmp_path):
    grey16 = np.array([[0, 65535], [32768, 1]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_radiograph(tmp_path / "g16.png").pixels, grey16 / 65535, atol=1e-6)
    grey8 = np.array([[0, 255], [128, 1]], dtype=np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    np.testing.assert_allclose(read_radiograph(tmp_path / "g8.png").pixels, grey8 / 255, atol=1e-6)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = [255, 0, 0]
    rgb[1, 1] = [255, 255, 255]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    pixels = read_radiograph(tmp_path / "rgb.png").pixels
    assert pixels.shape == (2, 2) and pixels[0, 0] == pytest.approx(0.299, abs=1e-3)
    assert pixels[1, 1] == pytest.approx(1.0, abs=1e-3)


def test_jpeg_and_tiff(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.jpg", quality=95)
    Image.fromarray(ramp.astype(np.uint16) * 257).save(tmp_path / "ramp.tif")
    jpeg, tiff = read_radiograph(tmp_path / "ramp.jpg"), read_radiograph(tmp_path / "ramp.tif")
    np.testing.assert_allclose(jpeg.pixels, ramp / 255, atol=0.03)
    np.testing.assert_allclose(tiff.pixels, ramp / 255, atol=1e-6)


def test_truncated_png_is_refused(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png: cannot read image"):
        read_radiograph(tmp_path / "cut.png")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(imageio, "MAX_PIXELS", 5000)
    with pytest.raises(InputError, match="exceeds the limit"):
        read_radiograph(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 10**9)
    with pytest.raises(InputError, match="decompression bomb"):
        read_radiograph(tmp_path / "big.png")


def test_oversized_dicom_is_refused_before_decoding(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "big.dcm", np.zeros((100, 100), np.uint16))
    monkeypatch.setattr(imageio, "MAX_PIXELS", 5000)
    with pytest.raises(InputError, match="exceeds the limit"):
        read_radiograph(path)


@pytest.mark.parametrize("name, content, message", [
    ("scan.bmp", b"BM", "unsupported image type"),
    ("fake.dcm", b"not dicom at all", "not a readable DICOM"),
    ("fake.png", b"not a png", "cannot read image"),
])
def test_ill_args(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_radiograph(tmp_path / name)
    with pytest.raises(InputError, match="not found"):
        read_radiograph(tmp_path / "missing.png")


# Memory is bounded before decoding (hardening class 3)

def test_images_over_the_decoded_size_budget_are_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGBA", (20, 20)).save(tmp_path / "rgba.png")
    Image.new("L", (20, 20)).save(tmp_path / "grey.png")
    Image.new("I;16", (20, 20)).save(tmp_path / "grey16.png")
    write_dicom(tmp_path / "big.dcm", np.zeros((20, 20), np.uint16))
    monkeypatch.setattr(imageio, "MAX_DECODED_BYTES", 700)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded before the size check"))
    for name, declared in (("rgba.png", "4 channel(s) x 1 byte(s)"), ("grey16.png", "1 channel(s) x 2 byte(s)"),
                           ("big.dcm", "1 channel(s) x 2 byte(s)")):
        with pytest.raises(InputError, match=rf"{name}: image of 20x20 pixels x {re.escape(declared)}.*over the limit"):
            read_radiograph(tmp_path / name)
    monkeypatch.undo()
    monkeypatch.setattr(imageio, "MAX_DECODED_BYTES", 700)
    assert read_radiograph(tmp_path / "grey.png").pixels.shape == (20, 20)  # 400 bytes: under the budget


def test_grey_conversion_in_strips_equals_the_whole_image_computation(tmp_path, monkeypatch):
    rgb = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    monkeypatch.setattr(imageio, "STRIP_ROWS", 5)
    pixels = read_radiograph(tmp_path / "rgb.png").pixels
    np.testing.assert_array_equal(pixels, ((rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255).astype(np.float32))


# DICOM headers as vendors write them, and the syntaxes PACS exports use (hardening class 4)

def patched_bytes(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))
    return path


RAMP = (np.arange(48 * 64).reshape(48, 64) * 7 % 4096).astype(np.uint16)


@pytest.mark.parametrize("extra, patch, warning", [
    ({"WindowCenter": "2000", "WindowWidth": "0"}, None, r"VOI window .* unusable \(WindowWidth 0 is below 1\)"),
    ({"WindowCenter": "2000", "WindowWidth": "-5"}, None, r"VOI window .* unusable"),
    ({"WindowCenter": "2000", "WindowWidth": "1999"}, (b"1999", b"abcd"), r"VOI window .* unusable"),
    ({"RescaleSlope": "0", "RescaleIntercept": "0"}, None, r"rescale .* unusable \(RescaleSlope is 0\)"),
    ({"RescaleSlope": "1", "RescaleIntercept": "0"}, (b"1 ", b"x "), r"rescale .* unusable"),
])
def test_unusable_dicom_lut_headers_are_ignored_with_a_warning(tmp_path, extra, patch, warning):
    from osteoscreen.core.errors import InputWarning

    path = write_dicom(tmp_path / "vendor.dcm", RAMP, bits_stored=12, **extra)
    if patch:
        patched_bytes(path, *patch)
    with pytest.warns(InputWarning, match=rf"vendor.dcm: DICOM {warning}"):
        pixels = read_radiograph(path).pixels
    np.testing.assert_allclose(pixels, RAMP / 4095, atol=1e-6)  # the stored values over the full range


@pytest.mark.parametrize("spacing, imager, expected, warned", [
    ("0.1", ["0.12", "0.12"], 0.12, "tag PixelSpacing is unusable .*has 1 value"),
    (["0.1", "0.1"], None, 0.1, None),
    ("ab\\cd", None, None, "tag PixelSpacing is unusable"),
    (["0", "0.1"], None, None, "tag PixelSpacing is unusable"),
])
def test_unusable_pixel_spacing_falls_back_with_a_warning(tmp_path, recwarn, spacing, imager, expected, warned):
    extra = {"ImagerPixelSpacing": imager} if imager else {}
    if spacing == "ab\\cd":
        path = patched_bytes(write_dicom(tmp_path / "s.dcm", RAMP, PixelSpacing=["0.1", "0.2"], **extra),
                             b"0.1\\0.2", b"ab\\cd  ")
    else:
        path = write_dicom(tmp_path / "s.dcm", RAMP, PixelSpacing=spacing, **extra)
    assert read_radiograph(path).spacing_mm == (pytest.approx(expected) if expected else None)
    messages = [str(w.message) for w in recwarn]
    assert (not messages) if warned is None else any(re.search(warned, m) for m in messages)


def test_the_csv_spacing_fills_in_for_an_unusable_dicom_spacing(small_dicom_cohort, tmp_path):
    import shutil

    from osteoscreen.core.errors import InputWarning
    from osteoscreen.data.dataset import load_dataset

    data = shutil.copytree(small_dicom_cohort, tmp_path / "data")
    image = data / "images" / "P001.dcm"
    dataset = pydicom.dcmread(image)
    dataset.PixelSpacing = dataset.ImagerPixelSpacing = "0.5"
    dataset.save_as(image)
    with pytest.warns(InputWarning) as caught:
        subject = load_dataset(data).subjects[0]
    assert {str(w.message).split(" is unusable")[0].split(": ")[-1] for w in caught} == {
        "DICOM tag PixelSpacing", "DICOM tag ImagerPixelSpacing"}
    assert subject.spacing_mm == pytest.approx(float(next(
        line for line in (data / "subjects.csv").read_text().splitlines() if line.startswith("P001")).split(",")[-1]))


def lossless_jpeg_sv1(values: np.ndarray, precision: int) -> bytes:
    """values [H, W] as a JPEG Lossless, Non-Hierarchical, First-Order Prediction (process 14, selection value 1)
    codestream: one Huffman table giving each difference category a 5-bit code."""
    rows, cols = values.shape
    codes = {category: category for category in range(17)}  # 5-bit codes 00000 ... 10000
    bits: list[int] = []
    image = values.astype(np.int64)
    for y in range(rows):
        for x in range(cols):
            prediction = (1 << (precision - 1)) if x == y == 0 else image[y, x - 1] if x else image[y - 1, x]
            difference = (int(image[y, x]) - int(prediction)) % 65536
            difference = difference - 65536 if difference >= 32768 else difference
            category = abs(difference).bit_length()
            bits += [(codes[category] >> (4 - i)) & 1 for i in range(5)]
            if 0 < category < 16:
                extra = difference if difference > 0 else difference + (1 << category) - 1
                bits += [(extra >> (category - 1 - i)) & 1 for i in range(category)]
    bits += [1] * (-len(bits) % 8)
    scan = bytearray()
    for start in range(0, len(bits), 8):
        byte = int("".join(map(str, bits[start:start + 8])), 2)
        scan += bytes([byte, 0]) if byte == 0xFF else bytes([byte])
    counts = bytes([0, 0, 0, 0, 17] + [0] * 11)
    huffman = bytes([0x00]) + counts + bytes(range(17))
    frame = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    scan_header = bytes([1, 1, 0x00, 1, 0, 0])

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    return (b"\xff\xd8" + segment(0xC3, frame) + segment(0xC4, huffman) + segment(0xDA, scan_header) + bytes(scan)
            + b"\xff\xd9")


def _packed(tmp_path, syntax: str):
    """(a 12-bit DICOM of RAMP, the same compressed in the named transfer syntax)."""
    import pydicom.uid
    from pydicom.encaps import encapsulate

    plain = write_dicom(tmp_path / "plain.dcm", RAMP, bits_stored=12, PixelSpacing=["0.1", "0.1"])
    dataset = pydicom.dcmread(plain)
    uid = getattr(pydicom.uid, syntax)
    if syntax == "JPEGLosslessSV1":
        dataset.PixelData = encapsulate([lossless_jpeg_sv1(RAMP, 12)])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = uid
    else:
        dataset.compress(uid)
    dataset.save_as(tmp_path / "packed.dcm")
    assert pydicom.dcmread(tmp_path / "packed.dcm").file_meta.TransferSyntaxUID == uid
    return plain, tmp_path / "packed.dcm"


@pytest.mark.parametrize("syntax", ["JPEGLosslessSV1", "JPEGLSLossless", "JPEG2000Lossless", "RLELossless"])
def test_compressed_transfer_syntaxes_of_pacs_exports_decode_exactly(tmp_path, syntax):
    plain, packed_path = _packed(tmp_path, syntax)
    packed = read_radiograph(packed_path)
    np.testing.assert_array_equal(packed.pixels, read_radiograph(plain).pixels)
    assert packed.spacing_mm == pytest.approx(0.1)


@pytest.mark.parametrize("syntax, plugin", [("JPEGLosslessSV1", "gdcm"), ("JPEGLSLossless", "gdcm"),
                                            ("JPEG2000Lossless", "pylibjpeg"), ("RLELossless", "pydicom")])
def test_every_promised_syntax_decodes_with_the_permissive_plugin_of_the_default_install(tmp_path, syntax, plugin):
    """The default install (no dev extras, nothing GPL) decodes each compressed syntax the README lists: GDCM (BSD)
    JPEG Lossless and JPEG-LS, pylibjpeg-openjpeg (MIT) JPEG 2000, pydicom itself RLE."""
    from pydicom.pixels import pixel_array

    _, packed = _packed(tmp_path, syntax)
    np.testing.assert_array_equal(pixel_array(packed, decoding_plugin=plugin), RAMP)


def test_a_dicom_file_without_preamble_or_extension_is_read(tmp_path):
    plain = write_dicom(tmp_path / "plain.dcm", RAMP, bits_stored=12)
    dataset = pydicom.dcmread(plain)
    del dataset.file_meta
    dataset.preamble = None
    pydicom.dcmwrite(tmp_path / "IM0001", dataset, enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert (tmp_path / "IM0001").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_radiograph(tmp_path / "IM0001").pixels, read_radiograph(plain).pixels)
    (tmp_path / "IM0002").write_bytes(b"\x08\x00" + b"\x00" * 200)  # looks like DICOM, holds no pixels
    with pytest.raises(InputError, match="IM0002: not a readable DICOM file"):
        read_radiograph(tmp_path / "IM0002")


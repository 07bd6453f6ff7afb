from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from osteoscreen.data import imageio
from osteoscreen.data.imageio import read_radiograph
from osteoscreen.errors import InputError

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

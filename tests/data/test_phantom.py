import hashlib

import numpy as np
import pydicom
import pytest

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.dataset import load_dataset
from osteoscreen.data.patches import PatchConfig
from osteoscreen.data.phantom.bone import bone_parameters, erode_cortex, mci_class, trabecular_field
from osteoscreen.data.phantom.grids import upsample
from osteoscreen.data.phantom.imaging_chain import Acquisition, form_radiograph
from osteoscreen.data.phantom.synthesis import PhantomConfig, cohort_labels, render_subject, synthesise
from osteoscreen.data.subject_patches import load_subject_patches


def test_default_cohort_labels():
    labels = cohort_labels(PhantomConfig())
    assert len(labels) == 70 and (labels == 2).sum() == 49 and (labels == 0).sum() == 21
    with_osteopenia = cohort_labels(PhantomConfig(n=20, positives=6, osteopenia=5))
    assert np.bincount(with_osteopenia, minlength=3).tolist() == [9, 5, 6]


def test_subject_is_deterministic_and_realistic_size():
    a, b = render_subject(PhantomConfig(seed=5), 0, 2), render_subject(PhantomConfig(seed=5), 0, 2)
    assert hashlib.sha256(a.pixels.tobytes()).digest() == hashlib.sha256(b.pixels.tobytes()).digest()
    height, width = a.pixels.shape
    assert 2000 <= width <= 3000 and 1000 <= height <= 1500 and a.pixels.dtype == np.uint16
    assert a.pixels.max() <= 4095 and a.pixels.max() - a.pixels.min() > 3000  # 12 bits, well used
    assert a.t_score <= -2.5  # WHO: osteoporosis
    assert render_subject(PhantomConfig(seed=5), 0, 0).t_score >= -1.0
    assert -2.5 < render_subject(PhantomConfig(seed=5), 0, 1).t_score < -1.0  # osteopenia


def test_cohort_files_are_byte_for_byte_reproducible(tmp_path, small_png_cohort):
    again = synthesise(tmp_path / "again", PhantomConfig(n=4, positives=2, seed=3))
    for name in ["subjects.csv", "landmarks.csv", "images/P001.png", "images/P004.png"]:
        assert (again / name).read_bytes() == (small_png_cohort / name).read_bytes(), name


def test_bone_parameters_follow_the_t_score():
    healthy, osteoporotic = bone_parameters(0.5), bone_parameters(-3.5)
    assert healthy.bone_volume_fraction > osteoporotic.bone_volume_fraction
    assert healthy.trabecular_thickness_mm > osteoporotic.trabecular_thickness_mm
    assert healthy.trabecular_separation_mm < osteoporotic.trabecular_separation_mm


def test_trabecular_field_area_fraction_matches_bone_volume_fraction():
    params = bone_parameters(0.0)
    field = trabecular_field((256, 256), params, 0.1, np.random.default_rng(0))
    assert abs(field.mean() - params.bone_volume_fraction) < 0.05


def test_dicom_and_png_give_the_same_patches(small_png_cohort, small_dicom_cohort):
    png, dicom = load_dataset(small_png_cohort), load_dataset(small_dicom_cohort)
    photometrics = {pydicom.dcmread(s.image_path, stop_before_pixels=True).PhotometricInterpretation
                    for s in dicom.subjects}
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    for config in (PatchConfig(), PatchConfig(patch_mm=8.0)):
        for a, b in zip(png.subjects, dicom.subjects, strict=True):
            pa, pb = load_subject_patches(a, config), load_subject_patches(b, config)
            assert pa.side == pb.side
            np.testing.assert_allclose(pa.crops, pb.crops, atol=1e-5)


def test_files_say_they_are_synthetic(small_png_cohort, small_dicom_cohort):
    from PIL import Image

    with Image.open(small_png_cohort / "images" / "P001.png") as image:
        assert "Synthetic phantom" in image.info["Description"]
    ds = pydicom.dcmread(small_dicom_cohort / "images" / "P001.dcm", stop_before_pixels=True)
    assert "Synthetic phantom" in ds.ImageComments and ds.PixelSpacing is not None


@pytest.mark.parametrize("kwargs", [{"n": 1}, {"positives": 9, "n": 4}, {"image_format": "gif"},
                                    {"signal": {"condyle": 2.0}}])
def test_ill_args(kwargs):
    with pytest.raises(InputError):
        PhantomConfig(**kwargs)


def test_refuses_to_overwrite(small_png_cohort):
    with pytest.raises(InputError, match="already holds a dataset"):
        synthesise(small_png_cohort, PhantomConfig(n=2, positives=1))


def test_acquisition_and_anatomy_do_not_depend_on_the_label():
    config = PhantomConfig(seed=2)
    for index in range(2):
        normal, osteoporotic = render_subject(config, index, 0), render_subject(config, index, 2)
        assert normal.acquisition == osteoporotic.acquisition
        np.testing.assert_array_equal(normal.landmarks, osteoporotic.landmarks)
        assert normal.t_score >= -1.0 and osteoporotic.t_score <= -2.5


def test_a_null_cohort_carries_nothing_of_the_label():
    config = PhantomConfig(seed=2, effect=0.0)
    normal, osteoporotic = render_subject(config, 0, 0), render_subject(config, 0, 2)
    np.testing.assert_array_equal(normal.pixels, osteoporotic.pixels)  # the label changed only the T-score


def test_the_signal_lives_only_in_the_groups_named():
    config = PhantomConfig.carrying(["premolar"], seed=2)
    normal, osteoporotic = render_subject(config, 0, 0), render_subject(config, 0, 2)
    difference = np.abs(normal.pixels.astype(np.int64) - osteoporotic.pixels)
    rows, cols = np.indices(difference.shape)
    premolar = normal.landmarks[4:6]  # premolar_right, premolar_left (x, y)
    distance = np.min([np.hypot(cols - x, rows - y) for x, y in premolar], axis=0)
    near = distance < 300  # the site's own bone reaches 240 px from the landmark (annotation noise aside)
    assert difference[near].max() > 100  # the premolar bone differs ...
    assert difference[~near].max() <= 2  # ... and elsewhere only the device's auto-window moves, by a level or two
    with pytest.raises(InputError, match="^groups: expected landmark groups among"):
        PhantomConfig.carrying(["chin"])


def test_klemetti_classes_follow_the_t_score_in_published_proportions():
    rng = np.random.default_rng(0)
    for t_score, expected in ((0.25, (0.60, 0.35, 0.05)), (-3.25, (0.21, 0.52, 0.27))):
        classes = np.array([mci_class(t_score, rng) for _ in range(4000)])
        np.testing.assert_allclose([(classes == c).mean() for c in (1, 2, 3)], expected, atol=0.03)


def test_cortical_erosion_grows_with_the_klemetti_class():
    depth = np.tile(np.arange(-5, 60, dtype=np.float32)[:, None], (1, 400))  # px below the bone surface
    width = np.full_like(depth, 40.0)
    cortex = ((depth > 0) & (depth < 40)).astype(np.float32)
    remaining = [erode_cortex(cortex, depth, width, mci, np.random.default_rng(1)).sum() / cortex.sum()
                 for mci in (1, 2, 3)]
    assert remaining[0] == 1.0 and remaining[0] > remaining[1] > remaining[2] > 0.3


def test_the_imaging_chain_blurs_to_its_stated_mtf():
    acquisition = Acquisition(width=512, height=512, spacing_mm=0.1, mtf10_lp_mm=2.5, motion_ratio=1.3,
                              detector_share=0.5, scatter_fraction=0.0, photons=1e12, electronic_noise=0.0,
                              window_low=0.0, window_high=1.0, gamma=1.0)
    rows = np.arange(512, dtype=np.float32)[:, None]
    low, high = 0.25, 2.5  # lp/mm; vertical sinusoids (the vertical blur is the stated one), side by side
    wave = lambda cycles_per_mm: np.sin(2 * np.pi * cycles_per_mm * 0.1 * rows)  # noqa: E731
    pattern = 1.0 + 0.01 * np.concatenate([np.tile(wave(low), (1, 256)), np.tile(wave(high), (1, 256))], axis=1)
    image = form_radiograph(pattern.astype(np.float32), acquisition, np.random.default_rng(0)).astype(np.float64)
    amplitude = {f: np.ptp(image[80:-80, column]) / 2 for f, column in ((low, 128), (high, 384))}
    expected = 0.1 / np.exp(-2 * np.pi**2 * acquisition.blur_mm**2 * low**2)
    assert amplitude[high] / amplitude[low] == pytest.approx(expected, abs=0.015)


@pytest.mark.parametrize("image_format, tolerance", [("png8", 0.01), ("jpeg", 0.03), ("dicom", 1e-6)])
def test_every_export_format_gives_the_same_patches(tmp_path, small_png_cohort, image_format, tolerance):
    other = synthesise(tmp_path / image_format, PhantomConfig(n=4, positives=2, seed=3, image_format=image_format))
    png, exported = load_dataset(small_png_cohort), load_dataset(other)
    for a, b in zip(png.subjects[:2], exported.subjects[:2], strict=True):
        pa, pb = load_subject_patches(a, PatchConfig()), load_subject_patches(b, PatchConfig())
        assert np.abs(pa.crops - pb.crops).mean() < tolerance


def test_worker_threads_do_not_change_a_byte(tmp_path, small_png_cohort):
    serial = synthesise(tmp_path / "serial", PhantomConfig(n=4, positives=2, seed=3), workers=1)
    for name in ["subjects.csv", "landmarks.csv", "images/P002.png", "images/P003.png"]:
        assert (serial / name).read_bytes() == (small_png_cohort / name).read_bytes(), name


#: Medians per landmark group of 40 real adult PRs' 100-px patches, landmarks placed by eye in the trabecular bone
#: of each site (shared/realism/real_pr_patch_stats.json of 2026-12-01, measured as `osteoscreen patches` cuts
#: them): intensity spread, mean gradient, share of power above 1/8 Nyquist, the lowest octave and the octave of
#: 8-16 px periods (band_3).
REAL_PATCHES = {
    "condyle": {"std": 0.0749, "grad": 0.0092, "hf_power": 0.103, "band_0": 0.5068, "band_3": 0.0598},
    "angle": {"std": 0.0468, "grad": 0.0068, "hf_power": 0.1259, "band_0": 0.5275, "band_3": 0.0685},
    "premolar": {"std": 0.047, "grad": 0.0082, "hf_power": 0.1669, "band_0": 0.5071, "band_3": 0.1023},
    "tuberosity": {"std": 0.0622, "grad": 0.0077, "hf_power": 0.0914, "band_0": 0.6305, "band_3": 0.0492},
}


def patch_texture(patch: np.ndarray) -> dict[str, float]:
    """The statistics of REAL_PATCHES for one [H, W] patch in [0, 1] (as ../shared/realism/patch_stats.py)."""
    power = np.abs(np.fft.fftshift(np.fft.fft2(patch - patch.mean()))) ** 2
    height, width = patch.shape
    rows, cols = np.indices(power.shape)
    radius = np.hypot(rows - height / 2, cols - width / 2) / (width / 2)
    total = power.sum()
    return {"std": float(patch.std()), "grad": float(np.hypot(*np.gradient(patch)).mean()),
            "hf_power": float(power[radius > 1 / 8].sum() / total),
            "band_0": float(power[radius < 1 / 32].sum() / total),
            "band_3": float(power[(radius >= 1 / 8) & (radius < 1 / 4)].sum() / total)}


def test_patches_have_the_texture_statistics_of_real_radiographs(small_png_cohort):
    """Each landmark group's patches have the spread, fine detail and octave balance of real trabecular bone
    (before the recalibration of 2026-12-03: premolar std x1.5, band_3 x0.6 at three groups); a regression guard
    over the 8 patches per group of 4 subjects, looser than the realism table of docs/phantom.md."""
    from osteoscreen.data.patches import to_uint8

    dataset = load_dataset(small_png_cohort)
    views = [to_uint8(load_subject_patches(s, PatchConfig()).plain_views(PatchConfig().context)) / 255.0
             for s in dataset.subjects]
    for group, real in REAL_PATCHES.items():
        stats = [patch_texture(subject[i]) for subject in views for i in range(8) if LANDMARKS[i].startswith(group)]
        assert len(stats) == 8
        for key, value in real.items():
            assert 1 / 1.5 < np.median([s[key] for s in stats]) / value < 1.5, f"{group}.{key}"


@pytest.mark.parametrize("low_shape, shape", [((160, 320), (1283, 2561)), ((7, 5), (7, 5)), ((1, 3), (70, 9))])
def test_upsampling_is_linear_interpolation_with_aligned_centres_to_the_bit(low_shape, shape):
    low = np.random.default_rng(0).random(low_shape, dtype=np.float32)

    def axis(n_in, n_out):  # pixel centres aligned, edges clamped
        position = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lower = position.astype(np.int64)
        return lower, np.minimum(lower + 1, n_in - 1), (position - lower).astype(np.float32)

    left, right, across = axis(low_shape[1], shape[1])
    columns = low[:, left] + (low[:, right] - low[:, left]) * across
    top, bottom, down = axis(low_shape[0], shape[0])
    expected = columns[top] + (columns[bottom] - columns[top]) * down[:, None]
    result = upsample(low, shape)
    assert result.dtype == np.float32 and result.shape == shape
    np.testing.assert_array_equal(result, expected)


def test_the_bone_window_gives_the_values_of_the_whole_image():
    """The phantom draws bone only on the box around the jaws (covering_box): each windowed computation equals the
    same window of the whole-image one, to the bit, so the cohort is the file it was before the window."""
    from osteoscreen.data.phantom.grids import covering_box

    shape, window = (300, 420), (slice(37, 251), slice(5, 399))
    low = np.random.default_rng(0).random((75, 105), dtype=np.float32)
    np.testing.assert_array_equal(upsample(low, shape, window), upsample(low, shape)[window])
    params = bone_parameters(-2.0)
    whole = trabecular_field(shape, params, 0.1, np.random.default_rng(3))
    np.testing.assert_array_equal(trabecular_field(shape, params, 0.1, np.random.default_rng(3), within=window),
                                  whole[window])
    depth = np.tile(np.linspace(-5, 60, shape[0], dtype=np.float32)[:, None], (1, shape[1]))
    width, cortex = np.full_like(depth, 40.0), ((depth > 0) & (depth < 40)).astype(np.float32)
    eroded = erode_cortex(cortex, depth, width, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(erode_cortex(cortex[window], depth[window], width[window], 3,
                                               np.random.default_rng(1), shape, window), eroded[window])
    mask = np.zeros((75, 105), bool)
    mask[20:30, 40:41] = True  # coarse rows 20-29, column 40, of a grid 4x coarser: a cell to spare each side
    assert covering_box(mask, shape) == (slice(76, 124), slice(156, 168))
    assert covering_box(np.zeros_like(mask), shape) == (slice(0, 300), slice(0, 420))

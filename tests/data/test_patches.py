import numpy as np
import pytest
import torch

from osteoscreen.core.errors import InputError
from osteoscreen.data.patches import (
    PatchConfig,
    crop_contexts,
    normalise_intensity,
    random_augmentation,
    render_views,
    to_uint8,
)


def ramp_image(height=60, width=80):
    return (np.arange(height)[:, None] * 1000 + np.arange(width)[None, :]).astype(np.float32)


def test_crop_is_centred_on_the_landmark():
    image = ramp_image()
    landmarks = np.array([[40.0, 30.0]] * 8)
    crops, padded = crop_contexts(image, landmarks, side=10, context=1.0)
    assert crops.shape == (8, 10, 10) and padded == 0
    assert crops[0, 5, 5] == image[30, 40]  # the landmark pixel sits at index side // 2
    np.testing.assert_array_equal(crops[0], image[25:35, 35:45])


def test_border_patches_are_reflect_padded_and_counted():
    image = ramp_image()
    landmarks = np.array([[1.0, 2.0]] + [[40.0, 30.0]] * 7)
    crops, padded = crop_contexts(image, landmarks, side=10, context=1.0)
    assert padded == 1 and crops.shape == (8, 10, 10)
    np.testing.assert_array_equal(crops[0], np.pad(image, 10, mode="reflect")[7:17, 6:16])


def test_landmark_outside_the_image_is_an_error():
    with pytest.raises(InputError, match="condyle_right at \\(90, 5\\) lies outside the 80x60 image"):
        crop_contexts(ramp_image(), np.array([[90.0, 5.0]] * 8), side=10, context=1.0)


def test_plain_view_reproduces_the_crop_and_flip_mirrors_it():
    crops, _ = crop_contexts(ramp_image(), np.array([[40.0, 30.0]] * 8), side=10, context=1.2)
    tensor = torch.from_numpy(crops)
    plain = render_views(tensor, context=1.2, out_size=10).numpy()
    np.testing.assert_allclose(plain[0], crops[0, 1:11, 1:11], atol=1e-3)
    flipped = render_views(tensor, 1.2, 10, flip=torch.ones(8, dtype=torch.bool)).numpy()
    np.testing.assert_allclose(flipped[0], plain[0][:, ::-1], atol=1e-3)
    assert render_views(tensor, 1.2, 224).shape == (8, 224, 224)


def test_stretch_widens_the_sampled_window():
    crops, _ = crop_contexts(ramp_image(), np.array([[40.0, 30.0]] * 8), side=10, context=1.25)
    tensor = torch.from_numpy(crops)
    plain = render_views(tensor, 1.25, 10)[0].numpy()
    wide = render_views(tensor, 1.25, 10, stretch=torch.tensor([[1.2, 1.0]] * 8))[0].numpy()
    assert np.ptp(wide[5]) > np.ptp(plain[5])  # more columns covered along x
    np.testing.assert_allclose(wide[:, 5], plain[:, 5], atol=1.0)  # y unchanged


def test_augmentation_is_seeded():
    config = PatchConfig()
    a = random_augmentation(8, config, torch.Generator().manual_seed(1))
    b = random_augmentation(8, config, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[0] >= 0.9).all() and (a[0] <= 1.1).all()


def test_physical_patch_size_uses_spacing():
    assert PatchConfig(patch_mm=10.0).side_px(0.1) == 100
    assert PatchConfig().side_px(None) == 100
    with pytest.raises(InputError, match="needs the pixel spacing"):
        PatchConfig(patch_mm=10.0).side_px(None)


def test_normalise_and_uint8():
    values = normalise_intensity(np.linspace(0, 5, 1000).reshape(10, 100))
    assert values.min() == 0 and values.max() == 1
    assert to_uint8(np.array([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]


@pytest.mark.parametrize("kwargs", [{"patch_px": 2}, {"patch_mm": -1.0}, {"stretch": 0.3}])
def test_ill_args(kwargs):
    with pytest.raises(InputError):
        PatchConfig(**kwargs)


def test_dataset_with_patches_decodes_each_radiograph_once_and_cuts_the_usual_crops(small_png_cohort,
                                                                                   monkeypatch):
    from osteoscreen.data import dataset as dataset_module
    from osteoscreen.data.dataset import load_dataset
    from osteoscreen.data.subject_patches import load_dataset_with_patches, load_subject_patches

    config = PatchConfig()
    expected = [load_subject_patches(s, config) for s in load_dataset(small_png_cohort).subjects]
    reads = []
    original = dataset_module.read_radiograph
    monkeypatch.setattr(dataset_module, "read_radiograph", lambda path: reads.append(path) or original(path))
    dataset, patches = load_dataset_with_patches(small_png_cohort, config)
    assert sorted(reads) == sorted(s.image_path for s in dataset.subjects)  # once each
    assert [p.subject_id for p in patches] == [s.subject_id for s in dataset.subjects]
    for got, want in zip(patches, expected, strict=True):
        assert np.array_equal(got.crops, want.crops) and (got.side, got.padded, got.label) == (
            want.side, want.padded, want.label)

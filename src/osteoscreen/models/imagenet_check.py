"""Prove that backbone weights are real ImageNet weights: top-5 classes of a natural image."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from osteoscreen.models.backbones import Backbone


def imagenet_class_names() -> list[str]:
    return resources.files("osteoscreen.resources").joinpath("imagenet_classes.txt").read_text().split()


def imagenet_top5(backbone: Backbone, rgb: np.ndarray) -> list[tuple[int, str, float]]:
    """rgb: [H, W, 3] uint8 -> the 5 most probable ImageNet classes as (index, name, probability)."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    image = F.interpolate(image, size=(backbone.input_size, backbone.input_size), mode="bilinear",
                          antialias=True, align_corners=False)
    with torch.inference_mode():
        probabilities = backbone.eval().net.logits((image - backbone.mean) / backbone.std).softmax(dim=1)[0]
    values, indices = probabilities.topk(5)
    names = imagenet_class_names()
    return [(int(i), names[int(i)], float(v)) for v, i in zip(values, indices, strict=True)]

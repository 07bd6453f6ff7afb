"""`osteoscreen export`: a trained model as an ONNX graph plus a JSON contract, to screen without PyTorch.

EXPORT/ holds
- `model.onnx`: the network from one radiograph's 8 rendered patches to its answers (`ScreeningNetwork`), with a
  dynamic batch axis and plain tensor inputs and outputs:
  inputs  `patches` [B, 8, 1, S, S] float32 in [0, 1] (LANDMARKS order; S = the model's input size) and, for a
          `+clinical` model, `covariates` [B, 3] float32 (age in years, female 0/1, male 0/1; raw);
  outputs `p_osteoporosis` [B] float64 (after the model's calibration), `attention` [B, 4] float32 over GROUPS
          (heads with attention only) and `novelty_distance` [B] float64 (models with a novelty reference only).
  The graph's metadata holds `screening_json_sha256`, the canonical digest of screening.json: the two files are
  bound, as a model's weights and model.json are (io.bound_files).
- `screening.json`: the contract: inputs and outputs, how patches are cut and rendered, the landmarks' order,
  the decision (p_osteoporosis >= threshold -> osteoporosis), the novelty threshold, the model's whole record
  (its model.json) and `weights_sha256`, the ONNX file's SHA-256 (the graph holds the weights), so an exported
  model screens with the same rule and writes the same files (`predict EXPORT --runtime onnx`:
  deploy.onnx_model).

The graph runs in fp32 whatever the model's training precision; the frozen backbone is exported fused
(`Backbone.for_inference`), as frozen features are computed.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from osteoscreen.core.errors import InputError
from osteoscreen.core.landmarks import CLASSES, GROUPS, LANDMARKS
from osteoscreen.core.version import __version__
from osteoscreen.deploy.model import Model
from osteoscreen.evaluation.calibration import CLIP
from osteoscreen.features.frozen import frozen_backbone
from osteoscreen.io.bound_files import canonical_digest, file_sha256
from osteoscreen.io.outputs import output_folder, strict_json

ONNX_FILE, CONTRACT_FILE = "model.onnx", "screening.json"
EXPORT_FORMAT = 1
BINDING_KEY = "screening_json_sha256"
OPSET = 18


def onnx_missing() -> InputError:
    return InputError("ONNX needs the optional packages onnx, onnxscript and onnxruntime: "
                      "pip install 'osteoscreen[onnx]'")


class ScreeningNetwork(nn.Module):
    """A model's network as one graph: patches [B, 8, 1, S, S] in [0, 1] (+ covariates [B, 3] raw for +clinical
    models) -> (p_osteoporosis [B] float64 after calibration, attention [B, 4] if the head has it, novelty
    distance [B] float64 if the model has a novelty reference). Equals Model.outputs up to float rounding."""

    def __init__(self, model: Model):
        super().__init__()
        fitted = model.fitted
        self.clinical = model.config.clinical
        self.net = fitted.net
        if fitted.net is None:  # frozen: fused backbone, feature scaler, head (and the covariates' scaler)
            config = model.config
            backbone = fitted.backbone or frozen_backbone(config.backbone, config.weights, config.taps)
            self.backbone = backbone.for_inference()
            self.head = fitted.head
            self.register_buffer("feature_mean", fitted.feature_mean.float())
            self.register_buffer("feature_std", fitted.feature_std.float())
            if self.clinical:
                self.register_buffer("covariate_mean", fitted.covariate_mean.float())
                self.register_buffer("covariate_std", fitted.covariate_std.float())
        self.calibration = model.rule.calibration
        self.novelty = model.novelty is not None
        if self.novelty:
            self.register_buffer("novelty_mean", torch.as_tensor(model.novelty["mean"], dtype=torch.float64))
            self.register_buffer("novelty_precision", torch.as_tensor(model.novelty["precision"],
                                                                      dtype=torch.float64))

    def forward(self, patches: torch.Tensor, covariates: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(self.answers(patches, covariates).values())

    def answers(self, patches: torch.Tensor, covariates: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The graph's outputs by name, in order: what the model's head and novelty reference give (a head
        without attention, `concat`, gives none), so the names follow the network, not a list of heads."""
        batch = patches.shape[0]
        if self.net is not None:
            features = self.net.patch_features(patches)  # [B, 8, D]
            output = self.net.head_output(features, covariates)
        else:
            raw = self.backbone.texture_features(patches.flatten(0, 1)).view(batch, len(LANDMARKS), -1)
            features = (raw - self.feature_mean) / self.feature_std
            inputs = [features] if not self.clinical else [
                features, (covariates - self.covariate_mean) / self.covariate_std]
            output = self.head(*inputs)
        answers = {"p_osteoporosis": self._calibrated(output.logits.float().softmax(dim=1)[:, 1].double())}
        if output.attention is not None:
            answers["attention"] = output.attention.float()
        if self.novelty:  # Mahalanobis distance of the subject's mean patch feature (deploy.novelty)
            centred = features.float().mean(dim=1).double() - self.novelty_mean
            answers["novelty_distance"] = ((centred @ self.novelty_precision) * centred).sum(dim=1).clamp(min=0).sqrt()
        return answers

    def _calibrated(self, p: torch.Tensor) -> torch.Tensor:
        """evaluation.operating_point.apply_calibration, in the graph (float64)."""
        method = self.calibration["method"]
        if method == "none":
            return p
        z = torch.logit(p.clamp(CLIP, 1 - CLIP))
        if method == "platt":
            return torch.sigmoid(self.calibration["intercept"] + self.calibration["slope"] * z)
        return torch.sigmoid(z / self.calibration["temperature"])


def export_model(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write EXPORT/ (model.onnx and screening.json) for the model in MODEL/; whole or not at all."""
    try:
        import onnx  # noqa: F401  (the exporter's dependencies, checked before any work)
        import onnxscript  # noqa: F401
    except ImportError:
        raise onnx_missing() from None
    model = Model.load(model_dir)
    with output_folder(out_dir) as folder:
        size = model.info["preprocessing"]["input_size"]
        network, example = ScreeningNetwork(model).eval(), example_inputs(model, size)
        with torch.no_grad():
            names = list(network.answers(*example))
        contract = screening_contract(model, Path(model_dir), size, names)
        program = _export(network, example, names)
        program.model.metadata_props[BINDING_KEY] = canonical_digest(contract)
        program.save(str(folder / ONNX_FILE))
        contract["weights_sha256"] = file_sha256(folder / ONNX_FILE)
        (folder / CONTRACT_FILE).write_text(strict_json(contract))
    return Path(out_dir)


def example_inputs(model: Model, size: int) -> tuple[torch.Tensor, ...]:
    """A batch of 2 (so the exported batch axis stays dynamic): patches, and covariates for a +clinical model."""
    patches = torch.rand(2, len(LANDMARKS), 1, size, size, generator=torch.Generator().manual_seed(0))
    return (patches, torch.tensor([[60.0, 1, 0], [70.0, 0, 1]])) if model.config.clinical else (patches,)


def _export(network: ScreeningNetwork, example: tuple[torch.Tensor, ...], output_names: list[str]):
    """torch.onnx's exporter (torch.export) on the example inputs, the batch axis dynamic."""
    input_names = ["patches", "covariates"][:len(example)]
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # it warns that torchvision's ops are not installed
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, nothing of ours
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")  # "axis name batch not used"
        return torch.onnx.export(network, example, input_names=input_names, output_names=output_names,
                                 dynamic_shapes=tuple({0: batch} for _ in example), dynamo=True, opset_version=OPSET,
                                 optimize=True, verbose=False)


def screening_contract(model: Model, model_dir: Path, size: int, output_names: list[str]) -> dict:
    """screening.json's content for the graph's outputs (ScreeningNetwork.answers' names), without the ONNX
    file's SHA-256 (added once the file is written)."""
    patch = model.config.patch
    inputs = [{"name": "patches", "shape": ["batch", len(LANDMARKS), 1, size, size], "dtype": "float32",
               "meaning": "the 8 landmark patches of each radiograph, in `landmarks` order, rendered as `patches` "
                          "says, grey values in [0, 1]"}]
    if model.config.clinical:
        inputs.append({"name": "covariates", "shape": ["batch", 3], "dtype": "float32",
                       "meaning": "age in years, female (1 or 0), male (1 or 0)"})
    meanings = {"p_osteoporosis": ("float64", ["batch"], "p(osteoporosis) after the model's calibration"),
                "attention": ("float32", ["batch", len(GROUPS)], f"group attention over {', '.join(GROUPS)}"),
                "novelty_distance": ("float64", ["batch"], "distance from the training data (Mahalanobis)")}
    outputs = [{"name": name, "dtype": meanings[name][0], "shape": meanings[name][1], "meaning": meanings[name][2]}
               for name in output_names]
    return {
        "format": EXPORT_FORMAT, "osteoscreen": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exported_from": str(model_dir), "onnx_file": ONNX_FILE, "opset": OPSET,
        "inputs": inputs, "outputs": outputs, "landmarks": list(LANDMARKS),
        "patches": {
            "intensity": "the whole radiograph scaled so its 0.5th and 99.5th percentiles map to 0 and 1, clipped",
            "patch_px": patch.patch_px, "patch_mm": patch.patch_mm, "context": patch.context,
            "crop": "a square of ceil(context x the patch side) pixels (the side: patch_px, or patch_mm over the "
                    "pixel spacing) whose centre pixel is the landmark's (x, y) rounded, (0, 0) the centre of the "
                    "top-left pixel; rows and columns past the border reflected (numpy 'reflect')",
            "render": f"the crop's central patch resampled bilinearly (grid_sample, align_corners false, "
                      f"reflection padding) to {size} x {size}"},
        "decision": {"threshold": model.threshold, "positive_class": CLASSES[1], "negative_class": CLASSES[0],
                     "rule": "p_osteoporosis >= threshold: positive_class, else negative_class",
                     "how_chosen": model.rule.rule, "calibration": model.rule.calibration,
                     "calibration_in_graph": True},
        "novelty": None if model.novelty is None else {
            "threshold": model.novelty["threshold"],
            "rule": "novelty_distance > threshold: the radiograph is unlike the training data (look at it)"},
        "model": model.info,
    }


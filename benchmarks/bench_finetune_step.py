"""Fine-tune step throughput: our training step against a naive reference, side by side.

Both train the same OctupletNet (AlexNet backbone, the paper's, randomly initialised: weights do not change
the arithmetic; group-attention head) on one batch of 32 subjects = 256 patches at 224 px, all layers trained.
- reference (written here): fp32, NCHW, one forward/backward over the whole batch;
- ours: osteoscreen.training.finetune.finetune_step at the default fp32: channels-last, and the first convolution
  computed exactly on the one grey channel instead of three identical ones (Backbone.stem); where bf16 is native
  (and the kernels are not pinned to AVX2) also at --precision bf16, a row of its own.
FLOPs of one step are counted by torch's FlopCounterMode (forward + backward), so GFLOP/s are achieved rates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common import REPEATS, Row, median_seconds
from hardware import peak
from osteoscreen.core.precision import bf16_native
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.heads import build_head
from osteoscreen.models.octuplet import OctupletNet
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.finetune import build_finetune_net, finetune_step

SUBJECTS, PATCHES, SIZE = 32, 8, 224


def naive_step(net: OctupletNet, optimizer: torch.optim.Optimizer, patches: torch.Tensor, labels: torch.Tensor):
    """The plain way: fp32, NCHW, the whole batch at once."""
    backbone = net.backbone
    grey = patches.flatten(0, 1)
    rgb = (grey.expand(-1, 3, -1, -1) - backbone.mean) / backbone.std  # contiguous NCHW
    features = backbone.net.pooled_after_stem(backbone.net.stem(rgb)).view(len(patches), PATCHES, -1)
    loss = F.cross_entropy(net.head(features).logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def naive_net(config: TrainConfig) -> tuple[OctupletNet, torch.optim.Optimizer]:
    backbone = Backbone(config.backbone, "none")
    net = OctupletNet(backbone, build_head(config.head, backbone.feature_dim, config.hidden)).to(config.device).train()
    optimizer = torch.optim.SGD(net.parameter_groups(config.lr_backbone, config.lr_head, config.weight_decay),
                                momentum=config.momentum)
    return net, optimizer


def synchronised(device: str, step):
    """step, then wait for the device to finish it (CUDA kernels run asynchronously)."""
    def timed():
        step()
        if device == "cuda":
            torch.cuda.synchronize()
    return timed


def run(device: str = "cpu") -> list[Row]:
    torch.manual_seed(0)
    config = TrainConfig(mode="finetune", backbone="alexnet", weights="none", device=device)
    patches = torch.rand(SUBJECTS, PATCHES, 1, SIZE, SIZE, device=device)
    labels = torch.randint(0, 2, (SUBJECTS,), device=device)
    reference, reference_optimizer = naive_net(config)
    ours, ours_optimizer = build_finetune_net(config)
    ours.train()
    with FlopCounterMode(display=False) as counter:
        naive_step(reference, reference_optimizer, patches, labels)
    flop = counter.get_total_flops()
    naive_s = median_seconds(synchronised(device, lambda: naive_step(reference, reference_optimizer, patches,
                                                                     labels)))
    ours_s = median_seconds(synchronised(device, lambda: finetune_step(ours, ours_optimizer, patches, labels, None,
                                                                       config.precision)))
    patches_per_step = SUBJECTS * PATCHES
    if device == "cuda":
        return [Row(f"fine-tune step, AlexNet, 256 patches @224, {torch.cuda.get_device_name()} (patches/s; median "
                    f"of {REPEATS})",
                    f"{patches_per_step / ours_s:.0f} ({ours_s * 1e3:.1f} ms, {config.precision}, channels-last; "
                    f"{flop / ours_s / 1e12:.1f} TFLOP/s)",
                    f"{patches_per_step / naive_s:.0f} ({naive_s * 1e3:.1f} ms, fp32 NCHW; "
                    f"{flop / naive_s / 1e12:.1f} TFLOP/s)", f"{naive_s / ours_s:.2f}x", "", None)]
    hardware = peak()
    print(f"fine-tune step: {flop / 1e9:.0f} GFLOP per step ({flop / patches_per_step / 1e9:.2f} GFLOP per patch, "
          f"forward + backward, FlopCounterMode); {hardware.explain()}")
    rows = [
        Row(f"fine-tune step, AlexNet, 256 patches @224, fp32 (patches/s; median of {REPEATS})",
            f"{patches_per_step / ours_s:.1f} ({ours_s:.2f} s, fp32, channels-last, grey stem)",
            f"{patches_per_step / naive_s:.1f} ({naive_s:.2f} s, fp32 NCHW)", f"{naive_s / ours_s:.2f}x", ">= 1.2x",
            naive_s / ours_s >= 1.2),
        Row("fine-tune step achieved GFLOP/s, fp32 (fraction of peak)",
            f"{flop / ours_s / 1e9:.0f} ({flop / ours_s / 1e9 / hardware.fp32_gflops:.0%} of fp32 peak "
            f"{hardware.fp32_gflops:.0f})",
            f"{flop / naive_s / 1e9:.0f} ({flop / naive_s / 1e9 / hardware.fp32_gflops:.0%} of fp32 peak "
            f"{hardware.fp32_gflops:.0f})", "", "", None),
    ]
    if not bf16_native():
        return rows + [Row("fine-tune step, bf16 (--precision bf16)", "not measured: bf16 is not native with the "
                           "kernels in use (OSTEOSCREEN_KERNELS=native on a CPU with AVX512-BF16 or AMX)", "", "", "",
                           None)]
    bf16_s = median_seconds(lambda: finetune_step(ours, ours_optimizer, patches, labels, None, "bf16"))
    return rows + [
        Row("fine-tune step, bf16 (--precision bf16) against the fp32 reference",
            f"{patches_per_step / bf16_s:.1f} ({bf16_s:.2f} s; {flop / bf16_s / 1e9 / hardware.bf16_gflops:.0%} of "
            f"bf16 peak {hardware.bf16_gflops:.0f})", f"{patches_per_step / naive_s:.1f} ({naive_s:.2f} s, fp32 NCHW)",
            f"{naive_s / bf16_s:.2f}x", ">= 2x", naive_s / bf16_s >= 2)]

if __name__ == "__main__":
    import sys

    from common import format_table

    print(format_table(run(sys.argv[1] if len(sys.argv) > 1 else "cpu")))

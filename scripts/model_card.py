"""Write docs/model_card.md: size and compute of every zoo model at its paper front end.

    python scripts/model_card.py [--out docs/model_card.md] [--seconds 10]

Every model is built with ``FRONTEND_DEFAULTS[name]`` and 527 classes on the ``meta`` device (no
memory, no arithmetic), so the whole zoo takes seconds. Counted:

* parameters: trainable ones, and all of them including torchlibrosa's frozen STFT kernels and
  mel filter bank (registered as parameters, as upstream; BatchNorm running statistics, which
  are buffers, are in neither count);
* FLOPs for one clip of ``--seconds`` at batch 1, from ``torch.utils.flop_counter.FlopCounterMode``
  (2 per multiply-accumulate; convolutions, matmuls and linear layers, STFT included; pooling,
  BatchNorm and activations are not counted). The paper's "multi-adds" (Cnn14: 42.2 G) is this
  same figure.

The AudioSet mAP column is what the authors published; blank where they published none.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from panns_lightning.models import FRONTEND_DEFAULTS, build_model, list_models

CLASSES = 527
REPO_ROOT = Path(__file__).resolve().parents[1]

# AudioSet evaluation mAP. "table": the paper's Table (arXiv 1912.10211; upstream README image
# resources/mAP_table.png), whose names differ for the 1-D CNNs: DaiNet = DaiNet19,
# LeeNet = LeeNet11, LeeNet18 = LeeNet24, Res1dNet30 = Res1dNet31, Res1dNet44 = Res1dNet51,
# Wavegram-CNN = Wavegram_Cnn14. "release": the mAP in the published checkpoint's file name
# (zenodo record 3987831, trained by a later code version).
PUBLISHED_MAP: dict[str, tuple[float, str]] = {
    "Cnn6": (0.343, "table"),
    "Cnn10": (0.380, "table"),
    "Cnn14": (0.431, "table"),
    "ResNet22": (0.430, "table"),
    "ResNet38": (0.434, "table"),
    "ResNet54": (0.429, "table"),
    "MobileNetV1": (0.389, "table"),
    "MobileNetV2": (0.383, "table"),
    "DaiNet19": (0.295, "table"),
    "LeeNet11": (0.266, "table"),
    "LeeNet24": (0.336, "table"),
    "Res1dNet31": (0.365, "table"),
    "Res1dNet51": (0.355, "table"),
    "Wavegram_Cnn14": (0.389, "table"),
    "Wavegram_Logmel_Cnn14": (0.439, "table"),
    "Cnn14_16k": (0.438, "release"),
    "Cnn14_8k": (0.416, "release"),
    "Cnn14_DecisionLevelMax": (0.385, "release"),
}

# The paper's multi-adds (G) for a 10 s clip, from upstream's utils/plot_for_paper.py
# (plot_complexity_map), for comparison with what is computed here.
PAPER_GIGA_MULTI_ADDS: dict[str, float] = {
    "Cnn6": 21.986,
    "Cnn10": 28.166,
    "Cnn14": 42.220,
    "ResNet22": 30.081,
    "ResNet38": 48.962,
    "ResNet54": 54.563,
    "MobileNetV1": 3.614,
    "MobileNetV2": 2.810,
    "DaiNet19": 30.395,
    "LeeNet11": 4.741,
    "LeeNet24": 26.369,
    "Res1dNet31": 32.688,
    "Res1dNet51": 61.833,
    "Wavegram_Cnn14": 44.234,
    "Wavegram_Logmel_Cnn14": 53.510,
}


# Rows in the paper's order: CNNs, ResNets, MobileNets, 1-D CNNs, Wavegrams; then the variants.
ORDER = (
    "Cnn6",
    "Cnn10",
    "Cnn14",
    "ResNet22",
    "ResNet38",
    "ResNet54",
    "MobileNetV1",
    "MobileNetV2",
    "DaiNet19",
    "LeeNet11",
    "LeeNet24",
    "Res1dNet31",
    "Res1dNet51",
    "Wavegram_Cnn14",
    "Wavegram_Logmel_Cnn14",
    "Cnn14_16k",
    "Cnn14_8k",
    "Cnn14_mel32",
    "Cnn14_mel128",
    "Cnn14_emb512",
    "Cnn14_emb128",
    "Cnn14_emb32",
    "Cnn14_DecisionLevelMax",
    "Cnn14_DecisionLevelAvg",
    "Cnn14_DecisionLevelAtt",
    "Wavegram_Logmel128_Cnn14",
)


def zoo_in_order() -> list[str]:
    """Every zoo model, paper order first; names added to the zoo later go at the end."""
    zoo = list_models()
    return [name for name in ORDER if name in zoo] + [name for name in zoo if name not in ORDER]


@dataclass(frozen=True)
class ModelFigures:
    name: str
    sample_rate: int
    trainable_params: int
    all_params: int
    flops: int


def measure(name: str, seconds: float = 10.0) -> ModelFigures:
    """Parameter counts and FLOPs of one zoo model, computed on the meta device."""
    frontend = FRONTEND_DEFAULTS[name]
    with torch.device("meta"):
        model = build_model(name, **frontend, classes_num=CLASSES)
    model = model.to("meta").eval()  # the front end's kernels are built on CPU; move them too
    waveform = torch.zeros(1, int(round(seconds * frontend["sample_rate"])), device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(waveform)
    parameters = list(model.parameters())
    return ModelFigures(
        name=name,
        sample_rate=int(frontend["sample_rate"]),
        trainable_params=sum(p.numel() for p in parameters if p.requires_grad),
        all_params=sum(p.numel() for p in parameters),
        flops=int(counter.get_total_flops()),
    )


def render(figures: list[ModelFigures], seconds: float) -> str:
    """The markdown model card."""
    lines = [
        "# Model card: the PANNs zoo",
        "",
        f"Every model at its paper front end (`FRONTEND_DEFAULTS`) with {CLASSES} AudioSet classes, "
        f"measured by `scripts/model_card.py` (regenerate with `python scripts/model_card.py`).",
        "",
        "- **Params (M)**: trainable parameters. **+ frozen (M)**: all parameters, including the",
        "  STFT kernels and mel filter bank that torchlibrosa registers as frozen parameters (as",
        "  upstream does, so `sum(p.numel())` over an upstream model gives this figure).",
        f"- **GFLOPs / {seconds:g} s**: `torch.utils.flop_counter.FlopCounterMode` on one {seconds:g} s clip",
        "  (batch 1), 2 FLOPs per multiply-accumulate; convolutions (STFT included), matmuls and linear",
        '  layers only. This is the unit of the paper\'s "multi-adds" (Cnn14: 42.2); MACs are half.',
        "- **Paper G multi-adds**: the authors' figure (upstream `utils/plot_for_paper.py`).",
        "- **AudioSet mAP**: published by the authors, never measured here. Unmarked: the paper's",
        "  table; † the mAP in the name of the released checkpoint (a later code version). Blank:",
        "  none published.",
        "",
        f"| Model | Sample rate (Hz) | Params (M) | + frozen (M) | GFLOPs / {seconds:g} s | Paper G multi-adds | AudioSet mAP |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in figures:
        published = PUBLISHED_MAP.get(entry.name)
        mAP = "" if published is None else f"{published[0]:.3f}" + (" †" if published[1] == "release" else "")
        paper_flops = PAPER_GIGA_MULTI_ADDS.get(entry.name)
        lines.append(
            f"| {entry.name} | {entry.sample_rate} | {entry.trainable_params / 1e6:.1f} | "
            f"{entry.all_params / 1e6:.1f} | {entry.flops / 1e9:.1f} | "
            f"{'' if paper_flops is None else f'{paper_flops:.1f}'} | {mAP} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "model_card.md")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length for FLOPs (default 10)")
    parser.add_argument("--models", nargs="*", default=None, help="subset of zoo names (default: all)")
    args = parser.parse_args(argv)
    names = args.models or zoo_in_order()
    figures = []
    for name in names:
        figures.append(measure(name, args.seconds))
        print(
            f"{name:<26} {figures[-1].trainable_params / 1e6:7.2f} M  {figures[-1].flops / 1e9:7.2f} GFLOPs",
            file=sys.stderr,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(figures, args.seconds), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

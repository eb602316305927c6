"""What speed figures are divided by: work per clip (FLOPs) and the device's peak.

MFU = 3 x forward FLOPs per trained example x examples/s / peak. The forward FLOPs are the model
card's (``scripts/model_card.py``: ``FlopCounterMode`` on the meta device, upstream's STFT as a
convolution included), so every variant of a model is divided by the same work, whatever it
computes to get there; a training step costs about 3 forwards (forward, then gradients of
activations and of weights).
"""

from __future__ import annotations

import functools
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense peaks in TFLOP/s by (GPU name fragment, precision); the first matching fragment wins.
# Vendor datasheets, no sparsity. fp32 runs of cuDNN convolutions use TF32 (PyTorch's default
# for convolutions), so "32" is divided by the TF32 peak.
GPU_PEAKS = (
    ("H100 PCIe", {"bf16": 756.0, "32": 378.0}),
    ("H100", {"bf16": 989.0, "32": 495.0}),
    ("H200", {"bf16": 989.0, "32": 495.0}),
    ("A100", {"bf16": 312.0, "32": 156.0}),
    ("V100", {"bf16": 125.0, "32": 15.7}),  # V100: fp16 tensor cores, no bf16 and no TF32
)


@functools.lru_cache(maxsize=None)
def forward_gflops(name: str, seconds: float, **frontend: int) -> float:
    """Forward GFLOP of zoo model ``name`` for one clip of ``seconds`` (the model card's count)."""
    from panns_lightning.models import build_model

    model = build_model(name, classes_num=527, **frontend).to("meta").eval()
    waveform = torch.zeros(1, int(round(seconds * frontend["sample_rate"])), device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(waveform)
    return counter.get_total_flops() / 1e9


def peak_tflops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak TFLOP/s, where it comes from) for ``device`` at ``precision`` ("32" or "bf16").

    GPUs: the datasheet table above by device name. CPUs: no datasheet peak on file (NaN, so no
    MFU is printed); the source string gives a measured matrix product instead, to compare the
    achieved TFLOP/s with. (A conv net on oneDNN reaches about that rate: what the CPU can do.)
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peaks in GPU_PEAKS:
            if fragment in name:
                return peaks[precision], f"{name} datasheet {'bf16' if precision == 'bf16' else 'TF32'} dense"
        return float("nan"), f"{name}: no peak on file"
    gemm = measured_gemm_tflops(precision)
    return float("nan"), (
        f"CPU: no datasheet peak, so no MFU; a {precision} 2048^3 matrix product runs at "
        f"{gemm:.3f} TFLOP/s here ({torch.get_num_threads()} threads)"
    )


@functools.lru_cache(maxsize=None)
def measured_gemm_tflops(precision: str, size: int = 2048, repeats: int = 5) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def mfu(examples_per_second: float, gflops_forward: float, peak: float) -> float:
    """Model FLOP utilisation: 3 x forward FLOPs x examples/s over the peak (TFLOP/s)."""
    return 3 * gflops_forward * examples_per_second / (peak * 1e3)

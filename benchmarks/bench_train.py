"""Train-step throughput: our Cnn14 / Wavegram_Logmel_Cnn14 against the reference PANNs Cnn14.

One step = forward + BCE + backward + Adam step, on a fixed random batch (default 4 × 10 s at
32 kHz), timed after warm-up steps. The reference is ``panns-inference``'s ``models.py`` (a dev
dependency), loaded by file path so its package ``__init__`` (which downloads labels) never runs;
it gets our Cnn14's exact weights, so the ratio compares the same computation. Options measured
on and off: channels_last memory format and ``torch.compile`` (``--compile``: slow to compile on a
CPU). Prints a table; asserts nothing.

    python benchmarks/bench_train.py                       # CPU, fp32
    python benchmarks/bench_train.py --device cuda --precision bf16 --batch 32 --steps 20 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

FRONTEND = {"sample_rate": 32000, "window_size": 1024, "hop_size": 320, "mel_bins": 64, "fmin": 50, "fmax": 14000}
CLASSES = 527
REFERENCE_PACKAGE = "_panns_inference_reference"


def load_reference_models() -> types.ModuleType | None:
    """panns-inference's ``models.py`` by file path (its ``__init__`` would download at import)."""
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(list(spec.submodule_search_locations)[0])
    package = types.ModuleType(REFERENCE_PACKAGE)
    package.__path__ = [str(package_dir)]
    sys.modules[REFERENCE_PACKAGE] = package
    for name in ("pytorch_utils", "models"):  # models.py imports .pytorch_utils
        module_spec = importlib.util.spec_from_file_location(f"{REFERENCE_PACKAGE}.{name}", package_dir / f"{name}.py")
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
    return sys.modules[f"{REFERENCE_PACKAGE}.models"]


def train_step_rate(
    model: torch.nn.Module, waveform: torch.Tensor, target: torch.Tensor, steps: int, warmup: int,
    precision: str, channels_last: bool, compile_model: bool,
) -> float:
    """Clips per second of forward + BCE + backward + Adam over ``steps`` timed steps."""
    device = waveform.device
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model: Callable = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)

    def step() -> None:
        with autocast(device, precision):
            probs = step_model(waveform)["clipwise_output"].float()
        loss = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):  # compilation, cuDNN autotuning, allocator warm-up
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return waveform.shape[0] * steps / (time.perf_counter() - start)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile on CPU)")
    parser.add_argument("--models", nargs="+", default=["Cnn14", "Wavegram_Logmel_Cnn14"])
    args = parser.parse_args()

    from panns_lightning.models import build_model

    device = torch.device(args.device)
    torch.manual_seed(0)
    waveform = torch.randn(args.batch, int(FRONTEND["sample_rate"] * args.seconds), device=device) * 0.1
    target = (torch.rand(args.batch, CLASSES, device=device) > 0.98).float()
    reference = load_reference_models()
    variants = [("eager", False, False), ("channels_last", True, False)]
    if args.compile:
        variants += [("compile", False, True), ("compile + channels_last", True, True)]

    rows: list[tuple[str, str, float, str]] = []
    for name in args.models:
        for variant, channels_last, compile_model in variants:
            torch.manual_seed(0)
            ours = build_model(name, classes_num=CLASSES, **FRONTEND)
            rate = train_step_rate(ours, waveform, target, args.steps, args.warmup, args.precision,
                                   channels_last, compile_model)
            ratio = "-"
            if name == "Cnn14" and reference is not None:
                upstream = reference.Cnn14(**FRONTEND, classes_num=CLASSES)
                torch.manual_seed(0)
                upstream.load_state_dict(build_model(name, classes_num=CLASSES, **FRONTEND).state_dict())
                reference_rate = train_step_rate(upstream, waveform, target, args.steps, args.warmup,
                                                 args.precision, channels_last, compile_model)
                rows.append(("reference Cnn14 (panns-inference)", variant, reference_rate, "1.00"))
                ratio = f"{rate / reference_rate:.2f}"
            rows.append((name, variant, rate, ratio))

    print(f"\ntrain step (forward + BCE + backward + Adam), batch {args.batch} x {args.seconds:g} s @ "
          f"{FRONTEND['sample_rate']} Hz, device {device}, precision {args.precision}, "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps after {args.warmup} warm-up")
    if reference is None:
        print("(panns-inference not installed: no reference rows; pip install --no-deps panns-inference)")
    header = f"{'model':<36} {'variant':<24} {'clips/s':>9} {'vs reference':>13}"
    print(header + "\n" + "-" * len(header))
    for name, variant, rate, ratio in rows:
        print(f"{name:<36} {variant:<24} {rate:9.2f} {ratio:>13}")


if __name__ == "__main__":
    main()

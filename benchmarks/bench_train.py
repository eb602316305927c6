"""Train-step throughput: each speed lever on and off, against the reference PANNs Cnn14.

One step = host batch → device, forward + loss + backward + Adam step (and, for ours, the
non-finite guard), on a fixed random batch (default 4 × 10 s at 32 kHz), timed after warm-up.

Rows, per model:
- ``reference fp32 eager``: panns-inference's ``Cnn14`` (a dev dependency, loaded by file path so
  its package ``__init__``, which downloads labels, never runs) with our Cnn14's exact weights,
  trained the way upstream trains (fp32, NCHW, ``F.binary_cross_entropy`` on the sigmoid, Adam).
- ``reference at shipped settings``: the same at the shipped precision and memory format.
- ``speed=reference``: our module with every lever off (``conf/speed/reference.yaml``).
- ``+ <lever>``: that one lever on (the others off); ``shipped``: the preset
  (``conf/speed/cpu.yaml`` or ``gpu.yaml``); with ``--ablate``, ``shipped - <lever>`` too; with
  ``--compile``, ``shipped + compile`` (compile time and recompilations after warm-up printed).

Configurations are visited ``--repeats`` times in alternating order (forward, backward, ...);
ratios are paired per visit against the reference row measured in the same sweep, and the table
prints their median and range, so a ratio whose whole range lies above 1.0 is above the noise.
Prints a table; asserts nothing.

    python benchmarks/bench_train.py                                   # CPU: Cnn14, batch 4 x 10 s
    python benchmarks/bench_train.py --device cuda --batch 32 --steps 20 --warmup 5 --ablate
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import math
import statistics
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_facts import forward_gflops, mfu, peak_tflops  # noqa: E402
from timing import module_step, synchronize, time_steps  # noqa: E402

FRONTEND = {"sample_rate": 32000, "window_size": 1024, "hop_size": 320, "mel_bins": 64, "fmin": 50, "fmax": 14000}
CLASSES = 527
REFERENCE_PACKAGE = "_panns_inference_reference"
SPEED_DIR = Path(__file__).resolve().parents[1] / "conf" / "speed"
MODULE_LEVERS = ("channels_last", "compile", "fused_adam", "sync_free")
WAVEGRAM_MODELS = ("Wavegram_Logmel_Cnn14", "Wavegram_Logmel128_Cnn14", "Wavegram_Cnn14")
# sync_free needs fused_adam (the skip happens in the fused kernel): measured as the pair.
LEVERS: dict[str, dict[str, Any]] = {
    "stft=fft": {"stft": "fft"},
    "channels_last": {"channels_last": True},
    "wave_conv2d": {"wave_conv2d": True},
    "fused_adam": {"fused_adam": True},
    "fused_adam+sync_free": {"fused_adam": True, "sync_free": True},
    "int16+pinned": {"int16_batches": True, "pin_memory": True},
}


@dataclass
class Config:
    label: str
    kind: str  # "reference" | "ours"
    precision: str  # "32" | "bf16"
    speed: dict[str, Any] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    compile_seconds: float | None = None
    recompiles: int | None = None


def load_speed_preset(name: str) -> dict[str, Any]:
    """``conf/speed/<name>.yaml`` merged onto its ``defaults`` (the reference preset)."""
    preset = OmegaConf.load(SPEED_DIR / f"{name}.yaml")
    merged = OmegaConf.create()
    for base in preset.pop("defaults", []) or []:
        merged = OmegaConf.merge(merged, load_speed_preset(str(base)))
    container = OmegaConf.to_container(OmegaConf.merge(merged, preset), resolve=True)
    assert isinstance(container, dict)
    return container


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


# ----------------------------------------------------------------------------- one visit


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def reference_step_fn(
    reference: types.ModuleType,
    name: str,
    config: Config,
    waveform: torch.Tensor,
    target: torch.Tensor,
    device: torch.device,
) -> Callable[[int], None]:
    """Upstream's training step: fp32 sigmoid output → F.binary_cross_entropy, Adam (amsgrad)."""
    from panns_lightning.models import build_model

    model = getattr(reference, name)(**FRONTEND, classes_num=CLASSES)
    torch.manual_seed(0)
    model.load_state_dict(build_model(name, classes_num=CLASSES, **FRONTEND).state_dict())
    model = model.to(device).train()
    if config.speed.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    target = target.to(device)

    def step(index: int) -> None:
        batch = waveform.to(device)
        with autocast(device, config.precision):
            probs = model(batch)["clipwise_output"]
        loss = F.binary_cross_entropy(probs.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def our_step_fn(
    name: str, config: Config, waveform: torch.Tensor, target: torch.Tensor, device: torch.device, review_every: int
) -> Callable[[int], None]:
    """Our TaggingModule's step as Lightning runs it (``timing.module_step``), with this row's levers."""
    from panns_lightning.training.module import TaggingModule
    from panns_lightning.training.speed import SpeedOptions

    speed = config.speed
    labels = [{"index": i, "mid": f"/m/{i}", "name": str(i)} for i in range(CLASSES)]
    model_config = {
        "name": name,
        **FRONTEND,
        "stft": speed.get("stft", "conv"),
        "wave_conv2d": bool(speed.get("wave_conv2d")),
    }
    torch.manual_seed(0)
    module = TaggingModule(
        model_config,
        labels,
        augment={"mixup": {"enabled": False}},
        speed=SpeedOptions(**{key: speed[key] for key in (*MODULE_LEVERS, "compile_mode") if key in speed}),
    )
    host_batch = waveform
    if speed.get("int16_batches"):
        host_batch = (waveform * 32767.0).round().clamp(-32768, 32767).to(torch.int16)
    if speed.get("pin_memory") and device.type == "cuda":
        host_batch = host_batch.pin_memory()
    batch = {"waveform": host_batch, "target": target.to(device), "key": None}
    return module_step(module, batch, device=device, precision=config.precision, review_every=review_every)


def visit(
    config: Config,
    make_step: Callable[[], Callable[[int], None]],
    batch: int,
    steps: int,
    warmup: int,
    device: torch.device,
) -> float:
    """Build, warm up, time ``steps`` steps; clips/s. Records compile time and recompiles once."""
    from torch._dynamo.utils import counters

    compiling = bool(config.speed.get("compile"))
    if compiling:
        counters.clear()
    step = make_step()
    timing = time_steps(step, batch, device=device, steps=steps, warmup=warmup)
    if compiling and config.compile_seconds is None:
        graphs = counters["stats"]["unique_graphs"]
        step(warmup + steps)  # one more: does it compile again?
        synchronize(device)
        config.compile_seconds = timing.first_step_s - batch / timing.clips_per_s
        config.recompiles = counters["stats"]["unique_graphs"] - graphs + sum(counters["recompiles"].values())
    del step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return timing.clips_per_s


# ----------------------------------------------------------------------------- the sweep


def configurations(
    name: str, shipped: dict[str, Any], precision: str, reference_available: bool, ablate: bool, with_compile: bool
) -> list[Config]:
    base = load_speed_preset("reference")
    configs = []
    if reference_available and name == "Cnn14":
        configs.append(Config("reference fp32 eager (upstream)", "reference", "32"))
        if precision != "32" or shipped.get("channels_last"):
            configs.append(
                Config(
                    "reference at shipped settings",
                    "reference",
                    precision,
                    {"channels_last": bool(shipped.get("channels_last"))},
                )
            )
    configs.append(Config("ours speed=reference", "ours", precision, dict(base)))
    for lever, values in LEVERS.items():
        if lever == "wave_conv2d" and name not in WAVEGRAM_MODELS:
            continue
        configs.append(Config(f"ours + {lever}", "ours", precision, {**base, **values}))
    configs.append(Config("ours shipped", "ours", precision, dict(shipped)))
    if with_compile and not shipped.get("compile"):
        configs.append(Config("ours shipped + compile", "ours", precision, {**shipped, "compile": True}))
    if ablate:
        for lever, values in LEVERS.items():
            if all(shipped.get(key) == value for key, value in values.items()) and any(
                base[k] != v for k, v in values.items()
            ):
                if lever == "fused_adam" and shipped.get("sync_free"):
                    continue  # sync_free needs it: measured as the pair
                configs.append(
                    Config(
                        f"ours shipped - {lever}", "ours", precision, {**shipped, **{key: base[key] for key in values}}
                    )
                )
    return configs


def run_model(
    name: str,
    args: argparse.Namespace,
    device: torch.device,
    shipped: dict[str, Any],
    precision: str,
    reference: types.ModuleType | None,
) -> list[Config]:
    torch.manual_seed(0)
    waveform = torch.randn(args.batch, int(FRONTEND["sample_rate"] * args.seconds)) * 0.1
    target = (torch.rand(args.batch, CLASSES) > 0.98).float()
    configs = configurations(name, shipped, precision, reference is not None, args.ablate, args.compile)
    if args.only:  # a subset of rows, e.g. for many repeats of the two that matter
        configs = [c for c in configs if c.label in args.only or c.label == "ours speed=reference"]

    def maker(config: Config) -> Callable[[], Callable[[int], None]]:
        if config.kind == "reference":
            assert reference is not None
            return lambda: reference_step_fn(reference, name, config, waveform, target, device)
        return lambda: our_step_fn(name, config, waveform, target, device, args.review_every)

    for repeat in range(args.repeats):
        order = configs if repeat % 2 == 0 else list(reversed(configs))
        for config in order:
            config.rates.append(visit(config, maker(config), args.batch, args.steps, args.warmup, device))
            print(
                f"  [{name} repeat {repeat + 1}/{args.repeats}] {config.label:<34} {config.rates[-1]:9.2f} clips/s",
                flush=True,
            )
    return configs


def paired_ratios(rates: list[float], baseline: list[float]) -> tuple[float, float, float]:
    ratios = [a / b for a, b in zip(rates, baseline)]
    return statistics.median(ratios), min(ratios), max(ratios)


def print_table(
    name: str, configs: list[Config], args: argparse.Namespace, device: torch.device, precision: str
) -> None:
    gflops = forward_gflops(name, args.seconds, **FRONTEND)
    reference = next((c for c in configs if c.label.startswith("reference fp32")), None)
    ours_base = next(c for c in configs if c.label == "ours speed=reference")
    peaks = {p: peak_tflops(device, p) for p in {c.precision for c in configs}}
    print(
        f"\n{name}: forward {gflops:.2f} GFLOP per {args.seconds:g} s clip (model card count); TFLOP/s = 3 x that "
        f"x clips/s; MFU = that / peak; peaks: "
        + "; ".join(f"{p}: {v:.3g} TFLOP/s ({src})" for p, (v, src) in peaks.items())
    )
    header = (
        f"{'configuration':<36} {'prec':>4} {'clips/s':>9} {'range':>17} {'vs upstream':>18} "
        f"{'vs speed=ref':>18} {'TFLOP/s':>8} {'MFU':>6}"
    )
    print(header + "\n" + "-" * len(header))
    for config in configs:
        rate = statistics.median(config.rates)
        spread = f"{min(config.rates):.1f}-{max(config.rates):.1f}"
        up = (
            "-" if reference is None else "{:.2f} ({:.2f}-{:.2f})".format(*paired_ratios(config.rates, reference.rates))
        )
        base = "{:.2f} ({:.2f}-{:.2f})".format(*paired_ratios(config.rates, ours_base.rates))
        utilisation = mfu(rate, gflops, peaks[config.precision][0])
        shown = "-" if math.isnan(utilisation) else f"{utilisation:.1%}"
        print(
            f"{config.label:<36} {config.precision:>4} {rate:9.2f} {spread:>17} {up:>18} {base:>18} "
            f"{3 * gflops * rate / 1e3:8.3f} {shown:>6}"
        )
    for config in configs:
        if config.compile_seconds is not None:
            print(
                f"{config.label}: torch.compile mode {config.speed.get('compile_mode', 'default')!r}, first step "
                f"{config.compile_seconds:.1f} s longer than a compiled one; {config.recompiles} recompilations "
                "after warm-up"
            )
    shipped = next(c for c in configs if c.label == "ours shipped")
    days = 600_000 * 32 / statistics.median(shipped.rates) / 86_400
    print(f"600 k PANNs steps of 32 examples at the shipped rate: {days:.1f} days")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision",
        choices=["auto", "32", "bf16"],
        default="auto",
        help="auto: bf16 on CUDA (the GPU presets), 32 on CPU",
    )
    parser.add_argument(
        "--preset", default="auto", help="speed preset for the 'shipped' rows (auto: gpu on CUDA, cpu on CPU)"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per visit")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per visit (>= 1; compile: >= 2)")
    parser.add_argument("--repeats", type=int, default=2, help="visits per configuration, alternating the order")
    parser.add_argument(
        "--review-every",
        type=int,
        default=50,
        help="sync_free: host reads every N steps (Lightning's log_every_n_steps)",
    )
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile on CPU)")
    parser.add_argument(
        "--ablate", action="store_true", help="also measure the shipped preset minus each of its levers"
    )
    parser.add_argument("--models", nargs="+", default=["Cnn14", "Wavegram_Logmel_Cnn14"])
    parser.add_argument(
        "--only",
        nargs="+",
        help="row labels to keep (plus 'ours speed=reference'), e.g. 'reference fp32 eager (upstream)' 'ours shipped'",
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "32")
    preset = args.preset if args.preset != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    shipped = load_speed_preset(preset)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    reference = load_reference_models()
    print(
        f"train step (host batch -> device, forward, loss, backward, Adam), batch {args.batch} x {args.seconds:g} s "
        f"@ {FRONTEND['sample_rate']} Hz, device {device}"
        f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"{torch.get_num_threads()} threads, {args.steps} timed steps after {args.warmup} warm-up, "
        f"{args.repeats} visits per row in alternating order; shipped = speed={preset} at precision {precision}"
    )
    if reference is None:
        print("(panns-inference not installed: no reference rows; pip install --no-deps panns-inference)")
    results = {name: run_model(name, args, device, shipped, precision, reference) for name in args.models}
    for name, configs in results.items():
        print_table(name, configs, args, device, precision)


if __name__ == "__main__":
    main()

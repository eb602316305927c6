"""Model-only speed of panns-tag's backends on this machine, and bf16's agreement with fp32.

    python benchmarks/bench_tag_backends.py --checkpoint Cnn14.pth [--seconds 10] [--repeats 3]

For one model file (``make bench-tag`` makes a random Cnn14 under outputs/bench_tag), clips/s of
random windows at batch 1, 8 and 16 for: PyTorch eager fp32, PyTorch bf16 autocast, and ONNX
Runtime at optimisation levels basic and all with 1 and all intra-op threads. Rows alternate within each
repeat. bf16 and ONNX Runtime outputs are compared with fp32 on the same windows: the largest
absolute difference and how often the top-5 classes (in order) agree. These figures chose
panns-tag's defaults (docs/speed.md). Prints markdown; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--onnx-cache", type=Path, default=None)
    parser.add_argument("--agreement-windows", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cuda: PyTorch rows only (ONNX Runtime runs on the CPU here)")
    args = parser.parse_args()
    import torch

    from panns_lightning.tagging.backends import autocast_model, onnx_model, open_tagger
    from panns_lightning.tagging.onnx_cache import cached_onnx

    fp32 = open_tagger(args.checkpoint, backend="torch", device=args.device)
    bf16 = open_tagger(args.checkpoint, backend="torch", device=args.device)
    bf16.loaded = autocast_model(bf16.loaded, bf16.device)
    runners = {"torch fp32": fp32.run_batch, "torch bf16 autocast": bf16.run_batch}
    versions = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    cores = os.cpu_count() or 1
    for threads in sorted({1, cores}) if args.device == "cpu" else []:
        import onnxruntime

        graph = cached_onnx(args.checkpoint, cache_dir=args.onnx_cache)
        levels = {
            "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        versions = (
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}"
        )
        for name, level in levels.items():
            loaded = onnx_model(graph, threads, level)
            tagger = open_tagger(graph, backend="onnxruntime")
            tagger.loaded = loaded
            runners[f"onnxruntime {name}, {threads} thread{'s' if threads > 1 else ''}"] = tagger.run_batch
    samples = int(round(args.seconds * fp32.sample_rate))
    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    rates: dict[tuple[str, int], list[float]] = {}
    print(versions)
    for repeat in range(args.repeats):
        names = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for batch_size in batches:
            windows = (0.1 * rng.standard_normal((batch_size, samples))).astype(np.float32)
            for name in names:
                runners[name](windows[:1])  # warm
                start = time.perf_counter()
                runners[name](windows)
                rates.setdefault((name, batch_size), []).append(batch_size / (time.perf_counter() - start))
    print("\n| backend | " + " | ".join(f"batch {b}, clips/s (min–max)" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for name in runners:
        cells = [_spread(rates[(name, b)]) for b in batches]
        print(f"| {name} | " + " | ".join(cells) + " |")
    windows = (0.1 * rng.standard_normal((args.agreement_windows, samples))).astype(np.float32)
    reference = np.concatenate(
        [fp32.run_batch(windows[i : i + 8])["clipwise_output"] for i in range(0, len(windows), 8)]
    )
    print(f"\nagreement with torch fp32 over {len(windows)} random windows:\n")
    print("| backend | max abs difference | top-5 identical (in order) | top-1 identical |")
    print("|---|---|---|---|")
    for name in ["torch bf16 autocast", *[n for n in runners if n.startswith("onnxruntime all")][:1]]:
        output = np.concatenate(
            [runners[name](windows[i : i + 8])["clipwise_output"] for i in range(0, len(windows), 8)]
        )
        top5 = np.mean([np.array_equal(_top(a, 5), _top(b, 5)) for a, b in zip(reference, output)])
        top1 = np.mean([_top(a, 1)[0] == _top(b, 1)[0] for a, b in zip(reference, output)])
        print(f"| {name} | {np.abs(reference - output).max():.2e} | {top5:.0%} | {top1:.0%} |")


def _top(row: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-row, kind="stable")[:k]


def _spread(values: list[float]) -> str:
    return f"{np.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


if __name__ == "__main__":
    main()

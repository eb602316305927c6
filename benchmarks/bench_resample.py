"""Resampling cost for a common and a coprime rate: time and peak memory, clip and stream.

    python benchmarks/bench_resample.py [--src OTHER_CHECKOUT/src] [--memory-limit-mb 6000] [--repeats 3]

Four cases, each in a fresh Python process (so peak memory is the case's own): a 10 s clip
resampled whole (:func:`panns_lightning.audio.resample`, as the converters and ``panns-tag FILE``
do) and the same 10 s pushed through :class:`panns_lightning.live.resample.StreamResampler`
in 0.5 s chunks (as ``panns-tag --stream`` does), each for 44 100 → 32 000 Hz and the coprime
44 101 → 32 000 Hz. Printed per case: the first call (it builds the filter), the median of the
next ``--repeats`` calls, and the peak resident memory the case added on top of the imports
(``VmHWM`` minus ``VmRSS`` before it). ``--src`` measures another checkout (e.g. main's, to
compare before/after); ``--memory-limit-mb`` caps each process's address space (``RLIMIT_AS``) so
a case that would take the machine's memory fails with ``MemoryError`` instead (the imports
alone take about 3.2 GB of address space). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CASES = [("clip", 44100), ("clip", 44101), ("stream", 44100), ("stream", 44101)]
TARGET_RATE = 32000
SECONDS = 10.0
CHUNK_SECONDS = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=SRC, help="the src/ folder to measure (default: this checkout's)")
    parser.add_argument("--memory-limit-mb", type=int, default=None, help="address-space cap per case (RLIMIT_AS)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", nargs=2, metavar=("KIND", "RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.repeats, args.memory_limit_mb)))
        return
    print(f"resampling to {TARGET_RATE} Hz, {SECONDS:g} s of noise; code from {args.src}")
    print("| case | source Hz | first call s | again s (median) | x real time | peak RSS added MB |")
    print("|---|---|---|---|---|---|")
    for kind, rate in CASES:
        command = [sys.executable, __file__, "--case", kind, str(rate), "--repeats", str(args.repeats)]
        if args.memory_limit_mb:
            command += ["--memory-limit-mb", str(args.memory_limit_mb)]
        env = {**os.environ, "PYTHONPATH": str(args.src), "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            failure = (done.stderr.strip().splitlines() or ["?"])[-1][:100]
            print(f"| {kind} | {rate} | failed: {failure} | | | |")
            continue
        result = json.loads(lines[-1])
        if "error" in result:
            print(f"| {kind} | {rate} | {result['error']} | | | {result['peak_mb']:.0f} |")
            continue
        speed = SECONDS / result["again_s"] if result["again_s"] else float("inf")
        print(
            f"| {kind} | {rate} | {result['first_s']:.3f} | {result['again_s']:.3f} | {speed:.0f} | {result['peak_mb']:.0f} |"
        )


def run_case(kind: str, rate: int, repeats: int, limit_mb: int | None) -> dict[str, object]:
    """One case in this process; peak memory from /proc (Linux)."""
    import numpy as np

    from panns_lightning import audio
    from panns_lightning.live.resample import StreamResampler

    if limit_mb:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    signal = np.random.default_rng(0).standard_normal(int(SECONDS * rate)).astype(np.float32) * 0.1
    chunk = int(CHUNK_SECONDS * rate)

    def once() -> int:
        if kind == "clip":
            return audio.resample(signal, rate, TARGET_RATE).shape[0]
        resampler = StreamResampler(rate, TARGET_RATE)
        total = sum(resampler.push(signal[i : i + chunk]).shape[0] for i in range(0, signal.shape[0], chunk))
        return total + resampler.finish().shape[0]

    before = _status_kb("VmRSS")
    try:
        started = time.perf_counter()
        once()
        first = time.perf_counter() - started
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            once()
            times.append(time.perf_counter() - started)
    except (MemoryError, RuntimeError) as error:
        message = f"{type(error).__name__}: {str(error).splitlines()[0][:60] if str(error) else ''}"
        return {"error": message, "peak_mb": (_status_kb("VmHWM") - before) / 1024}
    return {
        "first_s": first,
        "again_s": sorted(times)[len(times) // 2] if times else first,
        "peak_mb": (_status_kb("VmHWM") - before) / 1024,
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()

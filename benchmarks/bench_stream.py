"""Live tagging speed: latency per hop and real-time factor of ``panns-tag --stream``.

    python benchmarks/bench_stream.py [--models Cnn14 MobileNetV1] [--seconds 20] [--window 2] [--hop 1]
                                      [--input-rate 44100] [--no-cli]

For each model (random weights at its paper front end, 527 classes, saved as a published
``{"model": ...}`` file) a generated signal (silence, tones and noise bursts) encoded as raw s16le
at ``--input-rate`` goes through the real path twice:

1. library: bytes → ``open_pcm_stream`` → ``StreamTagger.push`` one hop of bytes at a time (decode,
   resample to the model's rate, ring, model, events). Latency per hop = the time of the push that
   completes a hop, i.e. from the hop's last sample arriving to its result; the first hop (warm-up)
   is left out. Real-time factor = processing time / audio time (below 1: keeps up live). Also
   printed: process CPU seconds per audio second (steadier than wall time on a busy host) and the
   share of a hop spent resampling.
2. CLI: ``cat signal.raw | python -m panns_lightning.cli.tag --stream - ... --jsonl`` in a shell;
   its ``end`` record gives the processing time and real-time factor; the wall time of the command
   adds Python start-up and model loading (paid once per stream).

Prints a table; asserts nothing (speed belongs here, not in tests). CPU unless ``--device``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"


def make_signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Two-second segments in turn: silence, a tone, noise, a tone plus noise (float32 mono)."""
    rng = np.random.default_rng(seed)
    segment = 2 * rate
    signal = np.zeros(int(seconds * rate), dtype=np.float32)
    for index, start in enumerate(range(0, signal.shape[0], segment)):
        stop = min(start + segment, signal.shape[0])
        t = np.arange(stop - start) / rate
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        noise = 0.1 * rng.standard_normal(stop - start)
        signal[start:stop] = (0.0, tone, noise, tone + noise)[index % 4]
    return signal


def published_checkpoint(name: str, folder: Path) -> Path:
    from panns_lightning.models import FRONTEND_DEFAULTS, build_model, save_panns_checkpoint

    torch.manual_seed(0)
    model = build_model(name, **FRONTEND_DEFAULTS[name], classes_num=527)
    return save_panns_checkpoint(model, folder / f"{name}.pth")


def bench_library(
    checkpoint: Path, name: str, raw: bytes, input_rate: int, window: float, hop: float, device: str
) -> dict[str, float]:
    from panns_lightning.inference import AudioTagger
    from panns_lightning.live.events import EventTracker
    from panns_lightning.live.pcm import open_pcm_stream
    from panns_lightning.live.tagger import StreamTagger

    tagger = AudioTagger(checkpoint, model_name=name, device=device)
    pcm = open_pcm_stream(io.BytesIO(raw), sample_format="s16le", sample_rate=input_rate)
    streamer = StreamTagger.from_tagger(
        tagger,
        input_rate=input_rate,
        window_seconds=window,
        hop_seconds=hop,
        tracker=EventTracker(len(tagger.labels)),
    )
    latencies: list[float] = []
    busy = 0.0
    cpu_started = time.process_time()
    for chunk in pcm.chunks(max(1, round(hop * input_rate))):
        started = time.perf_counter()
        hops = streamer.push(chunk)
        elapsed = time.perf_counter() - started
        busy += elapsed
        if hops:
            latencies.append(elapsed / len(hops))
    started = time.perf_counter()
    streamer.finish()
    busy += time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    timed = np.array(latencies[1:] or latencies) * 1000
    return {
        "cpu_per_audio_s": cpu / streamer.time,
        "resample_ms": resample_cost(raw, input_rate, tagger.sample_rate, hop) * 1000,
        "hops": float(streamer.hops),
        "latency_mean_ms": float(timed.mean()),
        "latency_p95_ms": float(np.percentile(timed, 95)),
        "rtf": busy / streamer.time,
        "model_sample_rate": float(tagger.sample_rate),
    }


def resample_cost(raw: bytes, input_rate: int, model_rate: int, hop: float) -> float:
    """Seconds per hop spent resampling (the same chunks through a StreamResampler alone)."""
    from panns_lightning.live.pcm import open_pcm_stream
    from panns_lightning.live.resample import StreamResampler

    resampler = StreamResampler(input_rate, model_rate)
    chunks = list(
        open_pcm_stream(io.BytesIO(raw), sample_format="s16le", sample_rate=input_rate).chunks(round(hop * input_rate))
    )
    resampler.push(chunks[0])  # the filter is built on first use
    started = time.perf_counter()
    for chunk in chunks[1:]:
        resampler.push(chunk)
    return (time.perf_counter() - started) / max(len(chunks) - 1, 1)


def bench_cli(
    checkpoint: Path, name: str, raw_path: Path, input_rate: int, window: float, hop: float, device: str
) -> dict[str, float]:
    command = (
        f"cat {shlex.quote(str(raw_path))} | {shlex.quote(sys.executable)} -m panns_lightning.cli.tag --stream - "
        f"--checkpoint {shlex.quote(str(checkpoint))} --model {name} --stdin-format s16le --stdin-rate {input_rate} "
        f"--window {window} --hop {hop} --device {device} --jsonl"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    result = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    end = json.loads(result.stdout.strip().splitlines()[-1])
    return {"rtf": end["rtf"], "processing_s": end["processing_s"], "wall_s": wall, "command": command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["Cnn14", "MobileNetV1"])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per model")
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--hop", type=float, default=1.0)
    parser.add_argument("--input-rate", type=int, default=44100, help="stdin rate (resampled to the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-cli", action="store_true", help="skip the panns-tag subprocess")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # published files without a labels CSV warn about class names

    signal = make_signal(args.seconds, args.input_rate)
    raw = (np.clip(signal, -1, 1) * 32767).round().astype("<i2").tobytes()
    print(
        f"stream: {args.seconds:g} s of s16le mono at {args.input_rate} Hz; window {args.window:g} s, hop "
        f"{args.hop:g} s; device {args.device}; torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'model':<14} {'rate':>6} {'hops':>5} {'hop ms mean':>12} {'hop ms p95':>11} {'RTF lib':>8} "
        f"{'CPU s/s':>8} {'resample ms':>11} {'RTF CLI':>8} {'CLI wall s':>11}"
    )
    print(header + "\n" + "-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raw_path = folder / "signal.raw"
        raw_path.write_bytes(raw)
        commands = []
        for name in args.models:
            checkpoint = published_checkpoint(name, folder)
            lib = bench_library(checkpoint, name, raw, args.input_rate, args.window, args.hop, args.device)
            cli = (
                None
                if args.no_cli
                else bench_cli(checkpoint, name, raw_path, args.input_rate, args.window, args.hop, args.device)
            )
            if cli is not None:
                commands.append(cli["command"])
            rtf_cli = "-" if cli is None else f"{cli['rtf']:.3f}"
            wall = "-" if cli is None else f"{cli['wall_s']:.1f}"
            print(
                f"{name:<14} {lib['model_sample_rate']:>6.0f} {lib['hops']:>5.0f} {lib['latency_mean_ms']:>12.1f} "
                f"{lib['latency_p95_ms']:>11.1f} {lib['rtf']:>8.3f} {lib['cpu_per_audio_s']:>8.3f} "
                f"{lib['resample_ms']:>11.1f} {rtf_cli:>8} {wall:>11}"
            )
    print(
        "RTF = processing (wall) time / audio time, < 1 keeps up with a live source; hop ms = one hop's latency; "
        "CPU s/s = process CPU seconds (all threads) per audio second, what the load costs on a shared host; "
        "resample ms = per hop, included in the latency."
    )
    for command in commands:
        print(f"CLI: {command}")


if __name__ == "__main__":
    main()

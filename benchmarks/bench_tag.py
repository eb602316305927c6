"""``make bench-tag``: ``panns-tag`` over a folder against upstream's model class driven as panns_inference users do.

    python benchmarks/bench_tag.py [--work DIR] [--files 40] [--seconds 10] [--rounds 3] [--ours-args ...]

The fixtures are made once under ``--work`` (default ``outputs/bench_tag``): one random Cnn14 (seed
0) saved in upstream's format ``{"model": state_dict}`` as ``Cnn14_random.pth`` (both sides load
these weights), and ``--files`` clips of ``--seconds`` of noise and tones, three in four at 32 kHz
and one in four at 44.1 kHz (so resampling is exercised). Figures:

* **whole process, files/s**: ``python -m panns_lightning.cli.tag FILES --checkpoint CKPT --top-k 5
  --json`` (plus ``--ours-args``) against a script that uses ``panns_inference.AudioTagging`` with
  its ``Cnn14`` at 1 and at 8 clips per forward (``librosa.load(path, sr=32000)``, as its README
  shows). Each run is a fresh process; the order alternates round by round; min-max is the spread.
  A first untimed run of each warms the page cache; before it, a checkout with ``--backend`` makes
  its cached ONNX export once (``--backend onnxruntime`` on one file; the time is printed).
* **first result for one file**: seconds from process start to the first result line (``{``).
* **peak memory**: the largest proportional set size (PSS) summed over the process tree (decode
  workers included), sampled every 0.1 s from ``/proc``.
* **model only, clips/s**: forward passes over random 10 s windows at batch 1 and 8, in a fresh
  process per side; ours through the backend panns-tag picks (``open_tagger``; ``--model-args
  backend=torch`` for another).
* **fraction of the fp32 matrix-product rate**: model clips/s x FLOPs per clip (counted by
  ``torch.utils.flop_counter``) / the rate of a 2048^3 fp32 ``torch.mm`` measured in the same run.

Top-5 agreement between the two sides is checked file by file. ``PYTHONPATH=/path/to/other/src``
measures another checkout's code as "ours". Prints markdown; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

UPSTREAM = textwrap.dedent(
    """
    import json, sys
    import librosa, numpy as np, torch
    from panns_inference import AudioTagging
    from panns_inference.models import Cnn14
    checkpoint, batch, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    model = Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527)
    tagger = AudioTagging(model=model, checkpoint_path=checkpoint, device="cpu")
    for start in range(0, len(files), batch):
        names = files[start:start + batch]
        audios = [librosa.load(name, sr=32000, mono=True)[0] for name in names]
        length = max(len(audio) for audio in audios)
        clips = np.stack([np.pad(audio, (0, length - len(audio))) for audio in audios])
        clipwise, _ = tagger.inference(clips)
        for name, row in zip(names, clipwise):
            print(json.dumps({"file": name, "top": np.argsort(-row, kind="stable")[:5].tolist()}), flush=True)
    """
)

MODEL_ONLY = textwrap.dedent(
    """
    import json, sys, time
    import torch
    side, checkpoint, seconds, repeats, extra = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
    samples = int(32000 * seconds)
    if side == "upstream":
        from panns_inference.models import Cnn14
        model = Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000, classes_num=527)
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
        model.eval()
        def run(x):
            with torch.no_grad():
                return model(x, None)["clipwise_output"]
    else:
        from pathlib import Path
        options = dict(item.split("=", 1) for item in extra)
        try:
            from panns_lightning.tagging.backends import open_tagger
            tagger = open_tagger(Path(checkpoint), **options)  # what panns-tag would run
        except ImportError:  # a checkout without backends
            from panns_lightning.inference import AudioTagger
            tagger = AudioTagger(checkpoint)
        print("backend:", tagger.loaded.kind, file=sys.stderr)
        run = lambda x: tagger.window_probabilities(x.numpy())
    figures = {}
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 8):
        x = torch.randn(batch, samples, generator=generator) * 0.1
        run(x)
        start = time.perf_counter()
        for _ in range(repeats):
            run(x)
        figures[batch] = batch * repeats / (time.perf_counter() - start)
    if side == "upstream":
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, samples), None)
        figures["flops"] = counter.get_total_flops()
        a = torch.randn(2048, 2048)
        torch.mm(a, a)
        start = time.perf_counter()
        for _ in range(20):
            torch.mm(a, a)
        figures["matmul"] = 20 * 2 * 2048**3 / (time.perf_counter() - start)
    print(json.dumps(figures))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/bench_tag"))
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="forward passes per batch size (model only)")
    parser.add_argument("--ours-args", default="", help="extra panns-tag arguments, e.g. '--backend torch'")
    parser.add_argument("--model-args", default="", help="AudioTagger keyword=value pairs for the model-only row")
    parser.add_argument("--skip-model-only", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint, files = make_fixtures(args.work, args.files, args.seconds)
    env = {**os.environ, "PANNS_ONNX_CACHE": str(args.work / "onnx_cache"), "PYTHONUNBUFFERED": "1"}
    upstream_script = args.work / "upstream_tag.py"
    upstream_script.write_text(UPSTREAM)
    ours = [sys.executable, "-m", "panns_lightning.cli.tag", "--checkpoint", str(checkpoint), "--top-k", "5", "--json"]
    ours += args.ours_args.split()
    sides = {
        "ours": lambda chosen: [*ours, *chosen],
        "upstream, 8 per forward": lambda chosen: [sys.executable, str(upstream_script), str(checkpoint), "8", *chosen],
        "upstream, 1 per forward": lambda chosen: [sys.executable, str(upstream_script), str(checkpoint), "1", *chosen],
    }
    names = [str(path) for path in files]
    print(f"# bench-tag: {len(files)} x {args.seconds:g} s files, {args.rounds} rounds, python {sys.executable}")
    print(f"PYTHONPATH={os.environ.get('PYTHONPATH', '')!r}; ours-args={args.ours_args!r}\n", flush=True)
    help_text = subprocess.run([*ours[:3], "--help"], capture_output=True, text=True, env=env).stdout
    if "--backend" in help_text and "--backend" not in args.ours_args:
        # The ONNX export is made once per model file and cached; its cost is reported, not timed per run.
        prime = run([*ours, "--backend", "onnxruntime", names[0]], env)
        print(f"ONNX export of the model file (once, then cached): {prime['seconds']:.1f} s, rc {prime['rc']}")
    warm = {side: run(command(names), env) for side, command in sides.items()}
    for side, result in warm.items():
        print(f"warm-up {side}: {result['seconds']:.1f} s, rc {result['rc']}", flush=True)
    whole: dict[str, list[dict]] = {side: [] for side in sides}
    first: dict[str, list[dict]] = {side: [] for side in ("ours", "upstream, 1 per forward")}
    for round_index in range(args.rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for side in order:
            whole[side].append(run(sides[side](names), env))
            print(f"round {round_index + 1} {side}: {whole[side][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        for side in first if round_index % 2 == 0 else reversed(list(first)):
            first[side].append(run(sides[side](names[:1]), env))
    print_whole(whole, first, len(files))
    print_agreement(warm["ours"]["stdout"], warm["upstream, 8 per forward"]["stdout"])
    if not args.skip_model_only:
        print_model_only(checkpoint, args, env)


def make_fixtures(work: Path, count: int, seconds: float) -> tuple[Path, list[Path]]:
    """A random upstream-format Cnn14 and ``count`` clips (made once; reused when present)."""
    import numpy as np
    import soundfile as sf

    checkpoint = work / "Cnn14_random.pth"
    if not checkpoint.exists():
        import torch

        frontend = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000)
        torch.manual_seed(0)
        try:
            from panns_inference.models import Cnn14
        except ImportError:  # a GPU machine without the dev extra: the zoo's Cnn14 has upstream's keys
            from panns_lightning.models import build_model

            model = build_model("Cnn14", **frontend, classes_num=527)
        else:
            model = Cnn14(**frontend, classes_num=527)
        temporary = checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict()}, temporary)
        os.replace(temporary, checkpoint)
    folder = work / f"clips_{count}x{seconds:g}s"
    folder.mkdir(exist_ok=True)
    files = []
    rng = np.random.default_rng(0)
    for index in range(count):
        rate = 44100 if index % 4 == 3 else 32000
        path = folder / f"clip_{index:03d}.wav"
        files.append(path)
        if path.exists():
            continue
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * index) * t)
        noise = 0.05 * rng.standard_normal(t.shape)
        sf.write(path, (tone + noise).astype(np.float32), rate, subtype="PCM_16")
    return checkpoint, files


def run(command: list[str], env: dict[str, str]) -> dict:
    """One fresh process: wall seconds, seconds to its first result line, peak PSS of its tree, stdout."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss_kib(process.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True)
    reader.start()
    first_line = None
    lines = []
    for line in process.stdout:
        if first_line is None and line.startswith("{"):
            first_line = time.perf_counter() - start
        lines.append(line)
    rc = process.wait()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    reader.join()
    if rc != 0:
        print(f"  (rc {rc}: {' '.join(command[:4])} ...: {''.join(stderr_lines)[-600:]})", file=sys.stderr)
    return {"seconds": seconds, "first": first_line, "peak_mib": peak[0] / 1024, "rc": rc, "stdout": "".join(lines)}


def tree_pss_kib(root: int) -> int:
    """Proportional set size of ``root`` and its descendants (forked workers share pages: PSS splits them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def print_whole(whole: dict[str, list[dict]], first: dict[str, list[dict]], count: int) -> None:
    rates = {side: [count / r["seconds"] for r in runs if r["rc"] == 0] for side, runs in whole.items()}
    ours = rates["ours"]
    print("\n| figure | ours | upstream, 8 per forward | upstream, 1 per forward |")
    print("|---|---|---|---|")
    print(
        "| whole process, files/s (median, min–max) | "
        + " | ".join(spread(v) if v else "failed" for v in rates.values())
        + " |"
    )
    for side in ("upstream, 8 per forward", "upstream, 1 per forward"):
        theirs = rates[side]
        if ours and theirs:
            ratios = [a / b for a, b in zip(ours, theirs)]
            print(f"| ours / {side}, round by round | {spread(ratios)} | | |")
    latency = {side: [r["first"] for r in runs if r["first"] is not None] for side, runs in first.items()}
    print(
        f"| first result for one file, s | {spread(latency['ours']) if latency['ours'] else 'n/a'} | "
        f"| {spread(latency['upstream, 1 per forward']) if latency['upstream, 1 per forward'] else 'n/a'} |"
    )
    peaks = {side: [r["peak_mib"] for r in runs] for side, runs in whole.items()}
    print(
        "| peak memory (PSS of the process tree), MiB | " + " | ".join(f"{max(v):.0f}" for v in peaks.values()) + " |"
    )


def print_agreement(ours_stdout: str, upstream_stdout: str) -> None:
    try:
        ours = {Path(r["file"]).name: [t["index"] for t in r["top"]] for r in json.loads(ours_stdout)["results"]}
    except (ValueError, KeyError):
        print("\ntop-5 agreement: ours' output could not be read")
        return
    theirs = {}
    for line in upstream_stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            theirs[Path(record["file"]).name] = record["top"]
    same = sum(1 for name, top in theirs.items() if ours.get(name) == top)
    print(f"\ntop-5 (same order) identical for {same} of {len(theirs)} files")


def print_model_only(checkpoint: Path, args: argparse.Namespace, env: dict[str, str]) -> None:
    script = args.work / "model_only.py"
    script.write_text(MODEL_ONLY)
    results = {}
    for side, extra in (("upstream", []), ("ours", args.model_args.split())):
        command = [sys.executable, str(script), side, str(checkpoint), str(args.seconds), str(args.repeats), *extra]
        output = subprocess.run(command, capture_output=True, text=True, env=env)
        if output.returncode != 0:
            print(f"model only, {side}: failed: {output.stderr[-600:]}")
            return
        results[side] = json.loads(output.stdout.strip().splitlines()[-1])
        results[side]["backend"] = next(
            (line for line in output.stderr.splitlines() if line.startswith("backend:")), ""
        )
    flops, matmul = results["upstream"]["flops"], results["upstream"]["matmul"]
    print(
        f"\nmodel only ({args.seconds:g} s windows; Cnn14 {flops / 1e9:.1f} GFLOP per clip; fp32 mm {matmul / 1e9:.0f} GFLOP/s)"
    )
    print(f"ours: {args.model_args or 'default backend'} ({results['ours']['backend'] or 'AudioTagger'})\n")
    print(
        "| batch | ours clips/s | upstream clips/s | ours / upstream | ours, fraction of mm rate | upstream, fraction |"
    )
    print("|---|---|---|---|---|---|")
    for batch in ("1", "8"):
        a, b = results["ours"][batch], results["upstream"][batch]
        print(f"| {batch} | {a:.2f} | {b:.2f} | {a / b:.2f} | {a * flops / matmul:.2f} | {b * flops / matmul:.2f} |")


if __name__ == "__main__":
    main()

"""Start-up cost of the tagging path: import time, modules loaded, time to ``panns-tag``'s first line.

    python benchmarks/bench_startup.py [--src SRC] [--rounds 3] [--work DIR]

``--src`` points at another checkout's ``src/`` (e.g. a worktree of main) to measure the code
before a change with the same interpreter and packages; the artifacts are then made once with
that code (a 16 kHz / 32-mel Cnn6 Lightning checkpoint, a Cnn14 in upstream's ``{"model": ...}``
format named without a zoo name) and reused. For each ``--rounds`` (alternating what is measured):

* ``python -X importtime -c "import M"`` for the modules panns-tag, HEAR, panns-export and ``--stream`` load:
  the cumulative import time of ``M`` and the number of modules it leaves in ``sys.modules``;
  whether Lightning, torchmetrics, Hydra or ``panns_lightning.training`` are among them;
* ``panns-tag CLIP --checkpoint CKPT`` in a fresh process: seconds from start to its first line
  on stdout, and the whole run.

Prints medians with the range; asserts nothing. Timings on a shared machine are noisy: compare
only figures measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("lightning", "torchmetrics", "hydra", "omegaconf", "panns_lightning.training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="where the artifacts go (default: a temp dir)")
    parser.add_argument("--checkpoints", nargs="*", type=Path, default=None, help="extra checkpoints to time")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    artifacts = make_artifacts(work, env)
    artifacts += [(path.name, path) for path in args.checkpoints or []]
    print(f"code: {args.src}  python: {sys.executable}  rounds: {args.rounds}")

    modules = (
        "panns_lightning.inference",
        "panns_lightning.hear",
        "panns_lightning.export",
        "panns_lightning.streaming.tagger",
    )
    imports: dict[str, list[tuple[float, int, list[str]]]] = {module: [] for module in modules}
    first_lines: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in artifacts}
    for _ in range(args.rounds):
        for module in imports:
            imports[module].append(import_cost(module, env))
        for name, checkpoint in artifacts:
            first_lines[name].append(first_line(checkpoint, work / "clip.wav", env))

    print("\n| module | import time (s) | modules loaded | heavy modules |")
    print("|---|---:|---:|---|")
    for module, runs in imports.items():
        seconds = [run[0] for run in runs]
        print(f"| {module} | {spread(seconds)} | {runs[0][1]} | {', '.join(runs[0][2]) or 'none'} |")
    print("\n| panns-tag clip.wav --checkpoint | first line (s) | whole run (s) |")
    print("|---|---:|---:|")
    for name, runs in first_lines.items():
        print(f"| {name} | {spread([r[0] for r in runs])} | {spread([r[1] for r in runs])} |")


def make_artifacts(work: Path, env: dict[str, str]) -> list[tuple[str, Path]]:
    """A 16 kHz Cnn6 Lightning checkpoint, a published-format Cnn14 and a 3 s clip (made once)."""
    script = f"""
import numpy as np, soundfile as sf, torch
from pathlib import Path
from panns_lightning.models import FRONTEND_DEFAULTS, build_model, save_panns_checkpoint
from panns_lightning.training.module import TaggingModule
work = Path({str(work)!r})
torch.manual_seed(0)
if not (work / "cnn6_16k_32mel.ckpt").exists():
    frontend = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
    labels = [dict(index=i, mid=f"/t/{{i}}", name=f"class {{i}}") for i in range(12)]
    module = TaggingModule(dict(name="Cnn6", **frontend), labels, multilabel=False)
    torch.save(dict(hyper_parameters=dict(module.hparams), state_dict=module.state_dict()), work / "cnn6_16k_32mel.ckpt")
if not (work / "Cnn14.pth").exists():
    save_panns_checkpoint(build_model("Cnn14", **FRONTEND_DEFAULTS["Cnn14"], classes_num=527), work / "Cnn14.pth")
if not (work / "clip.wav").exists():
    sf.write(work / "clip.wav", (np.random.default_rng(0).standard_normal(3 * 32000) * 0.1).astype("float32"), 32000)
"""
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    return [
        ("Cnn6 .ckpt (16 kHz, 32 mels)", work / "cnn6_16k_32mel.ckpt"),
        ("Cnn14.pth (named, no card)", work / "Cnn14.pth"),
    ]


def import_cost(module: str, env: dict[str, str]) -> tuple[float, int, list[str]]:
    """Cumulative import seconds of ``module`` (python -X importtime), modules loaded, heavy ones among them."""
    code = f"import sys, {module}; print(len(sys.modules)); print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env, check=True
    )
    cumulative = 0.0
    for line in done.stderr.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            cumulative = int(parts[1]) / 1e6
    count, names = done.stdout.splitlines()[:2]
    loaded = set(names.split())
    heavy = [name for name in HEAVY if name in loaded]
    return cumulative, int(count), heavy


def first_line(checkpoint: Path, clip: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds to the first stdout line of ``panns-tag clip --checkpoint checkpoint``, and to its end."""
    command = [sys.executable, "-m", "panns_lightning.cli.tag", str(clip), "--checkpoint", str(checkpoint)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    first = time.perf_counter() - started
    _, err = process.communicate()
    whole = time.perf_counter() - started
    if process.returncode != 0 or not line:
        raise SystemExit(f"panns-tag failed on {checkpoint} ({process.returncode}): {err[-2000:]}")
    return first, whole


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


if __name__ == "__main__":
    main()

"""Start-up cost of the tagging path: import time, modules loaded, time to ``panns-tag``'s first line.

    python benchmarks/bench_startup.py [--src SRC ...] [--rounds 3] [--work DIR] [--checkpoints FILE ...]

Each ``--src`` is a checkout's ``src/`` (default: this one); give two (e.g. a worktree of main and
this one) to compare them with the same interpreter and packages, measured alternately round by
round. The artifacts are made once, with the first ``--src``: a 16 kHz / 32-mel Cnn6 Lightning
checkpoint and a Cnn14 in upstream's ``{"model": ...}`` format named ``Cnn14.pth`` (the name is all
that tells which network it is); ``--checkpoints`` adds files of your own (e.g. exports with a
model card). Per round and code version:

* ``python -X importtime -c "import M"`` for the modules panns-tag, HEAR, panns-export and
  ``--stream`` load: the cumulative import time of ``M``, the modules it leaves in ``sys.modules``
  and whether Lightning, torchmetrics, Hydra or ``panns_lightning.training`` are among them;
* ``panns-tag CLIP --checkpoint CKPT`` (a 3 s clip) in a fresh process: seconds from start to its
  first line on stdout, and the whole run; a run that fails is reported as such.

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
MODULES = (
    "panns_lightning.inference",
    "panns_lightning.hear",
    "panns_lightning.export",
    "panns_lightning.live.tagger",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1] / "src"
    parser.add_argument("--src", type=Path, action="append", default=None, help=f"a src/ to measure (default {here})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="where the artifacts go (default: a temp dir)")
    parser.add_argument("--checkpoints", nargs="*", type=Path, default=None, help="extra model files to time")
    args = parser.parse_args()
    sources = [path.resolve() for path in args.src or [here]]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    artifacts = make_artifacts(work, environment(sources[0]))
    artifacts += [(path.name, path) for path in args.checkpoints or []]
    print(f"python: {sys.executable}  rounds: {args.rounds}  clip: {work / 'clip.wav'}")

    imports = {(src, module): [] for src in sources for module in MODULES}
    first_lines = {(src, name): [] for src in sources for name, _ in artifacts}
    for _ in range(args.rounds):
        for src in sources:  # alternate the code versions within each round
            env = environment(src)
            for module in MODULES:
                imports[src, module].append(import_cost(module, env))
            for name, checkpoint in artifacts:
                first_lines[src, name].append(first_line(checkpoint, work / "clip.wav", env))

    print("\n| code | module | import time (s) | modules loaded | heavy modules loaded |")
    print("|---|---|---:|---:|---|")
    for (src, module), runs in imports.items():
        print(
            f"| {label(src)} | {module} | {spread([r[0] for r in runs])} | {runs[0][1]} | {', '.join(runs[0][2]) or 'none'} |"
        )
    print("\n| code | panns-tag clip.wav --checkpoint | first line (s) | whole run (s) |")
    print("|---|---|---:|---:|")
    for (src, name), runs in first_lines.items():
        if any(run is None for run in runs):
            print(f"| {label(src)} | {name} | fails | fails |")
            continue
        print(f"| {label(src)} | {name} | {spread([r[0] for r in runs])} | {spread([r[1] for r in runs])} |")


def environment(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def label(src: Path) -> str:
    return str(src.parent.name)


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
    return [("Cnn6 .ckpt (16 kHz, 32 mels)", work / "cnn6_16k_32mel.ckpt"), ("Cnn14.pth (no card)", work / "Cnn14.pth")]


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
    return cumulative, int(count), [name for name in HEAVY if name in loaded]


def first_line(checkpoint: Path, clip: Path, env: dict[str, str]) -> tuple[float, float] | None:
    """Seconds to the first stdout line of ``panns-tag clip --checkpoint checkpoint`` and to its end; None if it fails."""
    command = [sys.executable, "-m", "panns_lightning.cli.tag", str(clip), "--checkpoint", str(checkpoint)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    first = time.perf_counter() - started
    _, err = process.communicate()
    whole = time.perf_counter() - started
    if process.returncode != 0 or not line:
        print(
            f"panns-tag failed on {checkpoint} ({process.returncode}): {err.strip().splitlines()[-1:]}", file=sys.stderr
        )
        return None
    return first, whole


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


if __name__ == "__main__":
    main()

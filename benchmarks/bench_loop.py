"""make bench-train: the whole training loop (`panns-train` itself) against the bare step.

For each row (a speed/precision setting) this measures, on synthetic int16 shards:

- bare: clips/s of the bare training step on one fixed batch (``benchmarks/timing.py``: host →
  device copy, training_step under autocast, backward, non-finite guard, Adam), in this process,
  with the module built from the same composed config as the loop;
- loop: clips/s of ``panns-train`` run as a subprocess (its console script, the default
  callbacks: checkpointing, CSV logging, LR monitor, ...; validation and test off) over the steps
  after ``--warmup-steps``, timed by ``panns_lightning.training.callbacks.StepTimer``;
- per worker: clips/s of the train DataLoader alone with 1 worker (same options), so that
  workers needed = ceil(bare ÷ per worker) (measured with nothing else running: an upper bound
  of what one worker gives while the trainer also uses the CPU);
- GPU utilisation: ``nvidia-smi`` sampled during the loop, mean over the timed window;
- MFU: 3 × the model card's forward FLOPs per trained example × examples/s ÷ the device's peak
  (``benchmarks/speed_facts.py``; the peak is printed). With mixup (``augment=paper``, as in
  pretraining) a batch of B clips trains B/2 mixed examples after the front end, so examples/s =
  clips/s ÷ 2 (the front end's STFT on all B clips is not counted).

Rows: ``ours`` (the trainer preset's speed group and precision: trainer=gpu → speed=gpu,
bf16-mixed; trainer=cpu → speed=cpu, 32-true), ``reference-fp32`` (speed=reference,
trainer.precision=32-true: how upstream PANNs trains) and ``reference-ours`` (speed=reference at
our precision; the same as reference-fp32 on a CPU, where it is skipped).

Target on a GPU: loop ≥ 0.9 × bare with ≤ 8 loader workers per GPU.

    python benchmarks/bench_loop.py                                   # GPU sizes on a GPU, small on CPU
    python benchmarks/bench_loop.py --model Wavegram_Logmel_Cnn14 --rows ours
    python benchmarks/bench_loop.py --device cpu --model Cnn6 --seconds 1 --rate 8000 --batch 8 --steps 5 --warmup-steps 2

Shards are cached under ``--work`` (default outputs/bench_loop) per (seconds, rate, clips); each
run's panns-train output goes to ``<work>/runs/<stamp>/<row>/``, the table's figures to
``<work>/runs/<stamp>/results.json``. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_facts import forward_gflops, mfu, peak_tflops  # noqa: E402
from timing import bare_step_rate  # noqa: E402

ROWS = ("ours", "reference-fp32", "reference-ours")
# Sizes per device: GPU = pretraining's (Cnn14, 10 s at 32 kHz, 64 clips = 32 mixed examples,
# 8 workers); CPU = small enough for a few minutes on a 2-core host.
DEFAULTS = {
    "cuda": {
        "model": "Cnn14",
        "seconds": 10.0,
        "rate": 32000,
        "batch": 64,
        "workers": 8,
        "warmup_steps": 20,
        "steps": 100,
        "clips": 512,
    },
    "cpu": {
        "model": "Cnn6",
        "seconds": 2.0,
        "rate": 16000,
        "batch": 16,
        "workers": 1,
        "warmup_steps": 3,
        "steps": 10,
        "clips": 128,
    },
}
EVAL_CLIPS = 16
MIN_SHARDS = 32  # ≥ ranks × workers, so that every loader worker reads shards of its own
PAPER_RATE = 32000  # the model configs' front ends are at 32 kHz; other rates scale them


@dataclasses.dataclass
class RowResult:
    row: str
    speed: str
    precision: str
    bare: float | None = None
    loop: float | None = None
    per_worker: float | None = None
    workers: int = 0
    gpu_util: float | None = None
    loop_steps: int | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.loop / self.bare if self.loop and self.bare else None

    @property
    def workers_needed(self) -> int | None:
        return math.ceil(self.bare / self.per_worker) if self.bare and self.per_worker else None


# ---- data ------------------------------------------------------------------------------------


def make_shards(work: Path, *, clips: int, seconds: float, rate: int) -> tuple[Path, Path]:
    """int16 shards of ``clips`` synthetic train clips (+ a tiny eval set), made once per size."""
    from panns_lightning.datasets.audioset import read_audioset
    from panns_lightning.datasets.synthetic import generate_synthetic_audioset
    from panns_lightning.labels import read_label_csv
    from panns_lightning.shardset.writer import write_shards

    out = work / f"shards-{seconds:g}s-{rate}hz-{clips}"
    train, evaluation = out / "train", out / "eval"
    if (train / "manifest.json").is_file() and (evaluation / "manifest.json").is_file():
        return train, evaluation
    raw = work / f"raw-{seconds:g}s-{clips}"
    if not (raw / "eval_segments.csv").is_file():  # written last by the generator
        print(f"bench_loop: generating {clips} + {EVAL_CLIPS} synthetic {seconds:g} s clips in {raw}", flush=True)
        generate_synthetic_audioset(
            raw, num_train=clips, num_eval=EVAL_CLIPS, clip_seconds=seconds, overwrite=True, progress=False
        )
    labels = read_label_csv(raw / "class_labels_indices.csv")
    print(f"bench_loop: converting to int16 shards at {rate} Hz in {out}", flush=True)
    for split, segments, directory, count in (
        ("balanced_train", "balanced_train_segments.csv", train, clips),
        ("eval", "eval_segments.csv", evaluation, EVAL_CLIPS),
    ):
        result = read_audioset(raw / segments, raw / "audio", labels)
        write_shards(
            result.records,
            directory,
            sample_rate=rate,
            clip_samples=int(round(seconds * rate)),
            labels=labels.to_manifest(),
            dataset="audioset",
            split=split,
            storage="int16",
            clips_per_shard=max(1, math.ceil(count / MIN_SHARDS)),
            min_shards=MIN_SHARDS,
            progress=False,
            overwrite=True,
        )
    return train, evaluation


# ---- config ----------------------------------------------------------------------------------


def frontend_overrides(model: str, rate: int) -> list[str]:
    """The model's front end at ``rate``: the paper's 32 kHz window/hop scaled, fmax ≤ Nyquist."""
    if rate == PAPER_RATE:
        return []
    scale = rate / PAPER_RATE
    return [
        f"model.sample_rate={rate}",
        f"model.window_size={round(1024 * scale)}",
        f"model.hop_size={round(320 * scale)}",
        f"model.fmax={min(14000, rate // 2)}",
    ]


def common_overrides(args: argparse.Namespace, train: Path, evaluation: Path, workers: int) -> list[str]:
    return [
        f"model={args.model}",
        *frontend_overrides(args.model, args.rate),
        "augment=paper",
        f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"data.train_dir={train}",
        f"data.val_dir={evaluation}",
        f"data.test_dir={evaluation}",
        f"data.batch_size={args.batch}",
        f"data.num_workers={workers}",
    ]


def row_overrides(row: str, our_precision: str) -> list[str]:
    if row == "ours":
        return []
    precision = "32-true" if row == "reference-fp32" else our_precision
    return ["speed=reference", f"trainer.precision={precision}"]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from panns_lightning.cli.config_schema import validate_train_config
    from panns_lightning.cli.hydra_app import find_config_dir

    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        return validate_train_config(hydra_compose("train", overrides=overrides))


def speed_name(cfg: Any, row: str) -> str:
    return "speed=reference" if row != "ours" else f"speed={'gpu' if cfg.trainer.accelerator == 'gpu' else 'cpu'}"


# ---- measurements ----------------------------------------------------------------------------


def loader_rate(cfg: Any, min_seconds: float, max_batches: int = 200) -> tuple[float, dict[str, Any]]:
    """(clips/s of the train DataLoader with 1 worker after its first batch, that first batch)."""
    from omegaconf import open_dict

    from panns_lightning.cli.build import build_datamodule

    data = cfg.data.copy()
    with open_dict(data):
        data.num_workers = 1
    datamodule = build_datamodule(data, cfg.speed)
    datamodule.setup("fit")
    iterator = iter(datamodule.train_dataloader())
    first = next(iterator)  # worker start-up and shuffle-buffer filling: not timed
    start, clips, batches = time.perf_counter(), 0, 0
    for batch in iterator:
        clips += int(batch["waveform"].shape[0])
        batches += 1
        if batches >= max_batches or (batches >= 3 and time.perf_counter() - start >= min_seconds):
            break
    seconds = time.perf_counter() - start
    del iterator  # shuts the worker down
    return clips / seconds, first


def bare_rate(cfg: Any, batch: dict[str, Any], device: torch.device, steps: int, warmup: int) -> float:
    import lightning as L

    from panns_lightning.cli.build import build_datamodule, build_module

    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = build_datamodule(cfg.data, cfg.speed)
    module = build_module(cfg, datamodule)
    try:
        return bare_step_rate(
            module,
            batch,
            device=device,
            precision=str(cfg.trainer.precision),
            steps=steps,
            warmup=warmup,
            review_every=int(cfg.trainer.log_every_n_steps),
        )
    finally:
        del module
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


class GpuSampler:
    """``nvidia-smi`` utilization.gpu of one device every ``interval`` s, with wall-clock times."""

    def __init__(self, device: torch.device, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        try:
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            self.command.append(f"--id={uuid if uuid.startswith('GPU-') else 'GPU-' + uuid}")
        except Exception:  # older torch: no uuid; the first GPU's line is taken
            pass

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                done = subprocess.run(self.command, capture_output=True, text=True, timeout=5)
                if done.returncode != 0 and self.command[-1].startswith("--id="):
                    self.command.pop()  # an id nvidia-smi does not know: take the first GPU's line
                    continue
                self.samples.append((time.time(), float(done.stdout.strip().splitlines()[0])))
            except (subprocess.SubprocessError, ValueError, IndexError, OSError):
                pass
            self._stop.wait(self.interval)

    def mean(self, start: float | None, end: float | None) -> float | None:
        if start is None or end is None:
            return None
        inside = [value for when, value in self.samples if start <= when <= end]
        return sum(inside) / len(inside) if inside else None


def panns_train() -> list[str]:
    """The panns-train console script; ``python -m panns_lightning.cli.train`` (the same entry point)
    where the package is on PYTHONPATH without being installed (benchmarks/gpu_check.sh)."""
    beside = Path(sys.executable).parent / "panns-train"
    found = str(beside) if beside.is_file() else shutil.which("panns-train")
    return [found] if found is not None else [sys.executable, "-m", "panns_lightning.cli.train"]


def run_loop(
    overrides: list[str], run_dir: Path, warmup: int, device: torch.device
) -> tuple[dict[str, Any] | None, float | None, str]:
    """panns-train in steady state: (StepTimer's JSON or None, mean GPU utilisation, note)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    timer = run_dir / "step_timer.json"
    command = [
        *panns_train(),
        *overrides,
        "task_name=bench_loop",
        "test=false",
        "trainer.limit_val_batches=0",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        "+callbacks.step_timer._target_=panns_lightning.training.callbacks.StepTimer",
        f"+callbacks.step_timer.path={timer}",
        f"+callbacks.step_timer.warmup_steps={warmup}",
    ]
    (run_dir / "command.txt").write_text(" ".join(command) + "\n")
    log_path = run_dir / "panns-train.out"
    with open(log_path, "w") as log, GpuSampler(device) if device.type == "cuda" else _NoSampler() as sampler:
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not timer.is_file():
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        print(f"bench_loop: panns-train failed (exit {rc}); last lines of {log_path}:\n{tail}", flush=True)
        return None, None, f"panns-train exit {rc}"
    timing = json.loads(timer.read_text())
    return timing, sampler.mean(timing.get("window_start_unix"), timing.get("window_end_unix")), ""


class _NoSampler:
    def __enter__(self) -> _NoSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def mean(self, start: float | None, end: float | None) -> float | None:
        return None


# ---- report ----------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def report(
    results: list[RowResult], *, device: torch.device, gflops: float, mixup: bool, workers_cap: int
) -> list[dict[str, Any]]:
    peaks: dict[str, tuple[float, str]] = {}
    rows, out = [], []
    for result in results:
        short = "bf16" if result.precision.startswith("bf16") else "32"
        if short not in peaks:
            peaks[short] = peak_tflops(device, short)
        peak = peaks[short][0]
        per_example = 0.5 if mixup else 1.0
        mfu_bare = mfu(result.bare * per_example, gflops, peak) if result.bare else None
        mfu_loop = mfu(result.loop * per_example, gflops, peak) if result.loop else None
        ratio, needed = result.ratio, result.workers_needed
        rows.append(
            [
                f"{result.row} ({result.speed}, {result.precision})",
                fmt(result.bare, ".1f"),
                fmt(result.loop, ".1f"),
                fmt(ratio, ".2f"),
                str(result.workers),
                fmt(needed, "d"),
                fmt(result.gpu_util, ".0f") + ("%" if result.gpu_util is not None else ""),
                fmt(None if mfu_bare is None else 100 * mfu_bare, ".1f") + ("%" if mfu_bare is not None else ""),
                fmt(None if mfu_loop is None else 100 * mfu_loop, ".1f") + ("%" if mfu_loop is not None else ""),
                result.note,
            ]
        )
        out.append(
            {
                **dataclasses.asdict(result),
                "ratio": ratio,
                "workers_needed": needed,
                "mfu_bare": mfu_bare,
                "mfu_loop": mfu_loop,
                "peak_tflops": peak,
                "peak_source": peaks[short][1],
            }
        )
    header = [
        "row",
        "bare clips/s",
        "loop clips/s",
        "loop/bare",
        "workers",
        "needed",
        "GPU util",
        "MFU bare",
        "MFU loop",
        "note",
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))).rstrip())
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        print(
            "  ".join(
                str(c).ljust(w) if i in (0, len(r) - 1) else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
        )
    print()
    print(
        f"MFU = 3 x {gflops:.2f} GFLOP (model card forward per clip) x trained examples/s / peak;"
        + (" mixup on: trained examples = clips / 2 (front end on all clips not counted)." if mixup else "")
    )
    for short, (peak, source) in peaks.items():
        print(f"peak {short}: {fmt(peak, '.4g')} TFLOP/s ({source})")
    print(
        "needed = ceil(bare clips/s / clips/s of one loader worker alone); GPU util: nvidia-smi mean over the "
        "timed window" + ("" if device.type == "cuda" else " (n/a on CPU)")
    )
    ours = next((r for r in results if r.row == "ours"), None)
    if device.type == "cuda" and ours is not None and ours.ratio is not None:
        met = ours.ratio >= 0.9 and (ours.workers_needed or 0) <= workers_cap
        print(
            f"target (GPU): loop >= 0.9 x bare with <= {workers_cap} workers: "
            f"{'met' if met else 'NOT met'} (ours: {ours.ratio:.2f} x, needs {fmt(ours.workers_needed, 'd')} workers)"
        )
    return out


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--model", help="conf/model name (GPU default Cnn14, CPU Cnn6)")
    parser.add_argument("--batch", type=int, help="clips per step (mixup: half as many examples); GPU 64, CPU 16")
    parser.add_argument("--seconds", type=float, help="clip length (GPU 10, CPU 2)")
    parser.add_argument("--rate", type=int, help="sample rate, Hz (GPU 32000, CPU 16000)")
    parser.add_argument("--workers", type=int, help="data.num_workers of the loop (GPU 8, CPU 1)")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (GPU 20, CPU 3)")
    parser.add_argument("--steps", type=int, help="timed steps, loop and bare (GPU 100, CPU 10)")
    parser.add_argument("--clips", type=int, help="synthetic train clips (GPU 512, CPU 128)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--work", default="outputs/bench_loop", help="shard cache and run directories")
    parser.add_argument("--loader-seconds", type=float, default=3.0, help="time the 1-worker loader at least this long")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    explicit = {k for k in DEFAULTS["cpu"] if getattr(args, k) is not None}
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.defaulted = set(DEFAULTS["cpu"]) - explicit
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        parser.error(f"--rows: unknown {unknown}; choose from {list(ROWS)}")
    args.rows = rows
    if args.warmup_steps < 1 or args.steps < 1 or args.batch < 2 or args.workers < 0:
        parser.error("need --warmup-steps >= 1, --steps >= 1, --batch >= 2, --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = torch.device(args.device)
    work = Path(args.work).resolve()
    train, evaluation = make_shards(work, clips=args.clips, seconds=args.seconds, rate=args.rate)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = work / "runs" / stamp

    base = common_overrides(args, train, evaluation, args.workers)
    our_cfg = compose(base)
    our_precision = str(our_cfg.trainer.precision)
    mixup = bool(our_cfg.augment.mixup.enabled)
    frontend = {k: our_cfg.model[k] for k in ("sample_rate", "window_size", "hop_size", "mel_bins", "fmin", "fmax")}
    gflops = forward_gflops(str(our_cfg.model.name), float(args.seconds), **frontend)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"bench_loop: {device_name}, torch threads {torch.get_num_threads()}, host cores {os.cpu_count()}")
    print(
        f"  {args.model}, {args.seconds:g} s clips at {args.rate} Hz (int16 shards), batch {args.batch} clips"
        + (f" = {args.batch // 2} mixed examples" if mixup else "")
        + f", {args.workers} loader workers, {args.warmup_steps} warm-up + {args.steps} timed steps"
    )
    if device.type == "cpu" and args.defaulted & {"model", "seconds", "rate", "batch"}:
        print("  (CPU sizes; the GPU figures are for: --model Cnn14 --seconds 10 --rate 32000 --batch 64 --workers 8)")

    results: list[RowResult] = []
    for row in args.rows:
        if row == "reference-ours" and our_precision == "32-true" and "reference-fp32" in args.rows:
            print(f"bench_loop: skipping reference-ours: our precision is {our_precision}, the same as reference-fp32")
            continue
        overrides = base + row_overrides(row, our_precision)
        cfg = compose(overrides)
        result = RowResult(
            row=row, speed=speed_name(cfg, row), precision=str(cfg.trainer.precision), workers=args.workers
        )
        print(f"bench_loop: [{row}] loader (1 worker) ...", flush=True)
        result.per_worker, batch = loader_rate(cfg, args.loader_seconds)
        print(f"bench_loop: [{row}] bare step ...", flush=True)
        result.bare = bare_rate(cfg, batch, device, args.steps, args.warmup_steps)
        del batch
        print(f"bench_loop: [{row}] panns-train loop ...", flush=True)
        loop_overrides = overrides + [f"trainer.max_steps={args.warmup_steps + args.steps}"]
        timing, util, note = run_loop(loop_overrides, runs / row, args.warmup_steps, device)
        if timing is not None:
            result.loop, result.loop_steps = timing.get("clips_per_s"), timing.get("steps_timed")
        result.gpu_util, result.note = util, note
        results.append(result)

    table = report(results, device=device, gflops=gflops, mixup=mixup, workers_cap=8)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "results.json").write_text(
        json.dumps(
            {
                "device": device_name,
                "model": args.model,
                "seconds": args.seconds,
                "rate": args.rate,
                "batch": args.batch,
                "workers": args.workers,
                "warmup_steps": args.warmup_steps,
                "steps": args.steps,
                "clips": args.clips,
                "gflops_forward_per_clip": gflops,
                "mixup": mixup,
                "rows": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"runs and results.json: {runs}")
    return table


if __name__ == "__main__":
    main()

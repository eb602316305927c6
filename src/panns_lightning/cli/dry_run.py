"""``panns-train dry_run=true`` (``make pretrain DRY_RUN=1``): what a run would do, without training.

What a user checks before spending cluster hours: the composed config, the world size the
trainer settings ask for, the shards each rank's DataLoader workers open first, and the time an
epoch should take from ``make bench-train``'s last figure. ``benchmarks/bench_loop.py`` keeps its
figures in ``<paths.log_dir>/bench_loop/runs/<stamp>/results.json``; the newest one is used, with
the settings it was measured at, and what differs from this run is named. The shard
directories and the checkpoint are checked as for training; GPUs are not (a login node has none).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from panns_lightning.cli.build import build_datamodule
from panns_lightning.redact import redact

# Ranks listed one by one; beyond that, the count of the others.
MAX_RANKS_SHOWN = 16
BENCH_ROW = "ours"


def dry_run(cfg: DictConfig) -> list[str]:
    """The dry run's report, one line per entry (printed by panns-train)."""
    lines = ["panns-train dry run (dry_run=true): nothing is trained", "", "config:"]
    lines += ["  " + line for line in redact(OmegaConf.to_yaml(cfg, resolve=True)).splitlines()]
    world, how = expected_world_size(cfg.trainer)
    lines += ["", f"world size: {how}"]
    datamodule = build_datamodule(cfg.data, cfg.speed)
    manifest = datamodule.manifest("train")
    clip_seconds = manifest.clip_samples / manifest.sample_rate
    lines.append(
        f"train set: {cfg.data.train_dir}: {manifest.num_clips} clips of {clip_seconds:g} s at "
        f"{manifest.sample_rate} Hz in {len(manifest.shards)} shards"
    )
    if int(cfg.model.sample_rate) != manifest.sample_rate:
        lines.append(
            f"  WARNING: model.sample_rate={cfg.model.sample_rate} but the shards are at {manifest.sample_rate} Hz: "
            "training would stop at start-up"
        )
    batch = int(cfg.data.batch_size)
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    if world is not None:
        clips = batch * world * accumulate
        mixup = bool(cfg.augment.mixup.enabled)
        lines.append(
            f"per optimizer step: {batch} clips per rank x {world} ranks x {accumulate} accumulated = {clips} clips"
            + (f" ({clips // 2} mixed examples)" if mixup else "")
        )
        lines += shard_lines(datamodule, world, int(cfg.data.num_workers))
    lines.append("")
    lines += epoch_time_lines(cfg, clip_seconds, manifest.sample_rate)
    return lines


def expected_world_size(trainer: Any) -> tuple[int | None, str]:
    """(ranks, how they were counted) from ``trainer.devices`` × ``trainer.num_nodes``; None when this machine cannot tell."""
    import torch

    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1) or 1)
    accelerator = str(trainer.get("accelerator", "auto"))
    gpus_here = torch.cuda.device_count()
    if isinstance(devices, int) and devices > 0:
        per_node, what = devices, f"trainer.devices={devices}"
    elif OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        per_node, what = len(devices), f"trainer.devices={list(devices)}"
    elif accelerator == "cpu":
        per_node, what = 1, f"trainer.devices={devices} on CPU"
    elif gpus_here:
        per_node, what = gpus_here, f"trainer.devices={devices}: every GPU, {gpus_here} on this machine"
    else:
        return None, (
            f"unknown here: trainer.devices={devices} means every GPU of each node and this machine sees none; "
            f"pass trainer.devices=N (make pretrain GPUS=N) to see the shards per rank"
        )
    return (
        per_node * nodes,
        f"{per_node * nodes} = {what} per node x trainer.num_nodes={nodes} (accelerator {accelerator})",
    )


def shard_lines(datamodule: Any, world: int, num_workers: int) -> list[str]:
    """The shard every rank × DataLoader worker opens first in epoch 0 (the stream's own schedule)."""
    from panns_lightning.data.spec import ReaderSlot

    workers = max(1, num_workers)
    num_shards = len(datamodule.manifest("train").shards)
    lines = [f"first train shard of each DataLoader worker (epoch 0; {workers} per rank, worker 0 first):"]
    for rank in range(min(world, MAX_RANKS_SHOWN)):
        stream = datamodule.train_stream(rank, world)
        names = [
            Path(stream.first_shards(ReaderSlot(rank, world, worker, workers))[0]).name for worker in range(workers)
        ]
        lines.append(f"  rank {rank}: {' '.join(names)}")
    if world > MAX_RANKS_SHOWN:
        lines.append(f"  ... and {world - MAX_RANKS_SHOWN} more ranks")
    if num_shards < world * workers:
        lines.append(
            f"  WARNING: {num_shards} shards for {world * workers} readers ({world} ranks x {workers} workers): readers "
            "share shards within a pass; convert with more shards (panns-prepare --min-shards) or use fewer workers"
        )
    return lines


def epoch_time_lines(cfg: DictConfig, clip_seconds: float, sample_rate: int) -> list[str]:
    """The estimate from the newest make bench-train figure, or why there is none."""
    runs = Path(str(cfg.paths.log_dir)) / "bench_loop" / "runs"
    figure = latest_bench_figure(runs)
    steps, batch = int(cfg.data.steps_per_epoch), int(cfg.data.batch_size)
    if figure is None:
        return [
            f"time per epoch: no estimate: no make bench-train figure under {runs}/*/results.json; run "
            "`make bench-train` on a training node first (the GPU defaults measure Cnn14 on 10 s clips at 32 kHz)"
        ]
    path, bench, rate = figure
    seconds = steps * batch / rate
    lines = [
        f"time per epoch: ~{format_duration(seconds)} = {steps} steps x {batch} clips per rank / {rate:.1f} clips/s "
        f"(make bench-train, {path})",
        f"  measured on: {bench.get('device')}, {bench.get('model')}, {bench.get('seconds')} s clips at "
        f"{bench.get('rate')} Hz, batch {bench.get('batch')}, {bench.get('workers')} workers",
    ]
    ours = {"model": cfg.model.name, "seconds": clip_seconds, "rate": sample_rate, "batch": batch}
    differ = [
        f"{key} {bench.get(key)} there, {value} here" for key, value in ours.items() if not _same(bench.get(key), value)
    ]
    if differ:
        lines.append("  WARNING: measured for another setting (" + "; ".join(differ) + "): a rough guide only")
    return lines


def latest_bench_figure(runs: Path) -> tuple[Path, dict[str, Any], float] | None:
    """(results.json, its content, the loop's clips/s of row "ours") of the newest run that has one."""
    for path in sorted(runs.glob("*/results.json"), reverse=True):
        try:
            bench = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        row = next((r for r in bench.get("rows", []) if r.get("row") == BENCH_ROW), None)
        rate = row.get("loop") if row else None
        if isinstance(rate, (int, float)) and rate > 0:
            return path, bench, float(rate)
    return None


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = math.floor(seconds / 60)
    if minutes < 60:
        return f"{minutes} min {seconds - 60 * minutes:.0f} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    return a == b

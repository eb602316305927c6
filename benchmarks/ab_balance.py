"""Training A/B: our balanced stream against PANNs' BalancedTrainSampler on the same clips.

Does it cost accuracy that our stream draws a rare clip's copies close together (one batch of its
worker apart, docs/balanced_streaming.md) where PANNs' round robin spreads them over the pass?
Same model, data, steps, optimizer and augmentation; only the batch source differs:

- ``stream-stratified``: ``AudioShardDataModule(balanced=True)`` over the int16 train shards (the
  production path with its defaults: ``TrainClipStream``, in-process, ``num_workers=0``), whose
  buffer draws class by class from a shuffled queue of classes (``stratify_batches=True``);
- ``stream``: the same with ``stratify_batches=False``: drawable copies in order of due position
  plus jitter (the design before; its first A/B, docs/balanced_streaming.md, used this arm);
- ``panns``: the same clips decoded once from those shards into memory, a map-style dataset, and
  ``PannsBalancedSampler`` (``data/reference.py``) as the batch sampler.

Data: the project's synthetic AudioSet look-alike (``panns-prepare synthetic``: 25 classes, Zipf
class frequencies, so the rarest classes have 7–10 training clips; 1 s clips; a roughly balanced
eval split) converted with ``panns-prepare audioset`` at 16 kHz into int16 shards. Model: Cnn6 with
the demo's front end but 32 mel bins (16 kHz, window 512, hop 320), mixup α = 1 on the log-mel, no
SpecAugment, Adam 1e-3 amsgrad (the demo's recipe), batch 32. Our stream: ``shuffle_buffer`` 128
(also its repeat spread), which puts a rare clip's copies one batch apart as the defaults do on
AudioSet, and 100 steps per epoch. Each seed sets the model's initial weights (identical in every
arm), the mixup draws and the sampler's seed.

Diagnostic arms (``--arms``), to tell why one arm trails, all through the map-style path with a
fixed sequence of clip indices (``FixedBatches``):

- ``stream-spread``: the very draws of ``stream`` (unstratified; same seed, the stream run
  labels-only, which draws the same keys), shuffled within windows of ``--spread-window`` batches (default 32, about
  one pass of the 1 000 clips): per-window counts of every clip unchanged, copies no longer together;
- ``panns-shuffled``: PANNs' draws shuffled within the same windows: copies still spread, but
  PANNs' order is lost (its round robin puts nearly every class in every batch here, C = 25 < B = 32);
- ``stream-replay``: the stream's draws unshuffled (checks that the map path reproduces ``stream``).

Scores (``training.metrics.score_tagging`` on the eval split, after the last step): mAP and the
mean AP of the rarest decile of classes by training clip count (``balance.rarest_decile``), with
mean ± std (sample std) over seeds, and the paired difference. The drawn keys of every run are
kept, and their gap statistics (``balance.gap_stats``, in draws = clips) show how far apart each
arm drew a clip's copies; ``batch_presence`` is, per class, the fraction of batches holding it
(the report gives it for the rarest-decile classes; for results files without it, it is redrawn
labels-only from the seed when ``--work`` holds the data).

    python benchmarks/ab_balance.py --work /tmp/ab_balance --seeds 0 1 2 --eval-every 100
    python benchmarks/ab_balance.py --work /tmp/ab_balance --seeds 0 1 2 --arms stream --results ab_unstratified.json
    python benchmarks/ab_balance.py --work /tmp/ab_balance --seeds 0 1 2 --arms stream-spread panns-shuffled \
        --results ab_diagnostic.json
    python benchmarks/ab_balance.py --work /tmp/ab_balance --report /tmp/ab_balance/ab_results.json \
        /tmp/ab_balance/ab_unstratified.json /tmp/ab_balance/ab_diagnostic.json

The data is built once under ``--work`` (reused when its manifests exist; ~10 s). A run of 300
steps takes 30–60 s on an idle 2-core CPU (2 threads), several times that on a shared one. Results
go to ``--work``/``--results`` (JSON, one entry per run) and the drawn clip indices of each run to
``draws_ARM_seedS.npy``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

NUM_CLASSES = 25
NUM_TRAIN = 1000
NUM_EVAL = 750
CLIP_SECONDS = 1.0
SAMPLE_RATE = 16000
TRAIN_CLIPS_PER_SHARD = 64
EVAL_CLIPS_PER_SHARD = 250
MODEL = {
    "name": "Cnn6",
    "sample_rate": SAMPLE_RATE,
    "window_size": 512,
    "hop_size": 320,
    "mel_bins": 32,  # half the demo's 64: ~2x cheaper steps on a CPU, and enough for these classes
    "fmin": 50,
    "fmax": 8000,
    # augment: SpecAugment off (as in experiment=demo: its masks erase whole short events)
    "time_drop_width": 64,
    "time_stripes_num": 0,
    "freq_drop_width": 8,
    "freq_stripes_num": 0,
    "stft": "fft",
}


ARM_NAMES = {
    "panns": "PANNs BalancedTrainSampler (map-style)",
    "exact": "data.sampler=panns (PANNs' sampler over the shards, random access)",
    "stream-stratified": "ours, stratified (AudioShardDataModule, balanced; the default)",
    "stream": "ours, unstratified (stratify_batches=false; the design before)",
    "stream-replay": "ours' draws replayed (map-style)",
    "stream-spread": "ours' draws shuffled within ~1 pass",
    "panns-shuffled": "PANNs' draws shuffled within ~1 pass",
}
DIAGNOSTIC_ARMS = ("stream-replay", "stream-spread", "panns-shuffled")
STREAM_ARMS = {"stream-stratified": True, "stream": False}  # arm → stratify_batches
SHARD_ARMS = ("exact", *STREAM_ARMS)  # arms that train through AudioShardDataModule
# --shape audioset (ab_shape.py): 8 kHz, 1 s clips, 527 classes; a tiny CNN (--model tiny) so that
# 3 arms x 5 seeds fit in ~40 min of a shared 2-core CPU.
AUDIOSET_SHAPE_MODEL = {
    **MODEL,
    "sample_rate": 8000,
    "window_size": 512,
    "hop_size": 320,
    "mel_bins": 64,
    "fmax": 4000,
}
TINY_CHANNELS = (16, 32, 64)


# --------------------------------------------------------------------------- data


def build_data(work: Path, *, data_seed: int, workers: int) -> dict[str, Path]:
    """Synthetic AudioSet layout → int16 shard sets ``train`` and ``eval`` under ``work`` (once)."""
    from panns_lightning.cli.prepare import main as prepare

    raw, shards = work / "raw", work / "shards"
    dirs = {"train": shards / "train", "eval": shards / "eval"}
    if all((directory / "manifest.json").is_file() for directory in dirs.values()):
        return dirs
    started = time.perf_counter()
    code = prepare(
        [
            "synthetic",
            "--out",
            str(raw),
            "--num-classes",
            str(NUM_CLASSES),
            "--num-train",
            str(NUM_TRAIN),
            "--num-eval",
            str(NUM_EVAL),
            "--clip-seconds",
            str(CLIP_SECONDS),
            "--seed",
            str(data_seed),
            "--overwrite",
            "--quiet",
        ]
    )
    if code:
        raise SystemExit(f"panns-prepare synthetic failed ({code})")
    for split, csv_name, per_shard in (
        ("train", "balanced_train_segments.csv", TRAIN_CLIPS_PER_SHARD),
        ("eval", "eval_segments.csv", EVAL_CLIPS_PER_SHARD),
    ):
        code = prepare(
            [
                "audioset",
                "--segments",
                str(raw / csv_name),
                "--audio-dir",
                str(raw / "audio"),
                "--labels",
                str(raw / "class_labels_indices.csv"),
                "--out",
                str(dirs[split]),
                "--sample-rate",
                str(SAMPLE_RATE),
                "--clip-seconds",
                str(CLIP_SECONDS),
                "--clips-per-shard",
                str(per_shard),
                "--workers",
                str(workers),
                "--overwrite",
                "--quiet",
            ]
        )
        if code:
            raise SystemExit(f"panns-prepare audioset ({split}) failed ({code})")
    print(f"data built in {time.perf_counter() - started:.0f} s under {work}")
    return dirs


class DecodedClips:
    """Every clip of a shard set decoded into memory, in shard-then-clip order."""

    def __init__(self, shard_dir: Path) -> None:
        from panns_lightning.data.error_log import ErrorLog
        from panns_lightning.data.shard_urls import shard_urls
        from panns_lightning.data.tar_reader import read_shard
        from panns_lightning.labels import multi_hot
        from panns_lightning.shardset.codec import decode_waveform
        from panns_lightning.shardset.manifest import read_manifest

        manifest = read_manifest(shard_dir)
        self.manifest = manifest
        self.num_classes = len(manifest.labels)
        errors = ErrorLog(str(shard_dir))
        keys, waveforms, labels = [], [], []
        for url in shard_urls(shard_dir, manifest):
            for clip in read_shard(url, storage=manifest.storage, with_audio=True, errors=errors):
                keys.append(clip.key)
                labels.append(tuple(clip.labels))
                waveforms.append(
                    decode_waveform(
                        clip.audio,
                        storage=manifest.storage,
                        sample_rate=manifest.sample_rate,
                        clip_samples=manifest.clip_samples,
                    )
                )
        if errors.counts()["bad_samples"] or len(keys) != manifest.num_clips:
            raise RuntimeError(f"{shard_dir}: read {len(keys)} of {manifest.num_clips} clips, errors {errors.counts()}")
        self.keys = keys
        self.labels = labels
        self.waveforms = torch.from_numpy(np.stack(waveforms))
        self.targets = torch.from_numpy(np.stack([multi_hot(label, self.num_classes) for label in labels]))

    def __len__(self) -> int:
        return len(self.keys)

    def class_counts(self) -> np.ndarray:
        return self.targets.sum(0).numpy().astype(np.int64)


class MapStyleClips(torch.utils.data.Dataset):
    """Map-style view of :class:`DecodedClips` (what PANNs' HDF5 dataset is to its sampler)."""

    def __init__(self, clips: DecodedClips) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self.clips.keys[index], self.clips.waveforms[index], self.clips.targets[index]


def collate(items: Sequence[tuple[str, torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    return {
        "waveform": torch.stack([waveform for _, waveform, _ in items]),
        "target": torch.stack([target for _, _, target in items]),
        "key": [key for key, _, _ in items],
    }


class FixedBatches:
    """A fixed sequence of clip indices as a DataLoader ``batch_sampler`` (diagnostic arms)."""

    def __init__(self, indices: np.ndarray, batch_size: int) -> None:
        self.rows = np.asarray(indices, dtype=np.int64).reshape(-1, batch_size).tolist()

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.rows)


def stream_draws(
    shard_dir: Path,
    train_clips: Any,
    seed: int,
    args: argparse.Namespace,
    *,
    stratify: bool = False,
    steps: int | None = None,
) -> np.ndarray:
    """The clip indices (into ``train_clips``, which has ``keys``) that a stream arm draws for ``seed``, labels-only.

    ``stratify``: as ``stream-stratified`` draws (else as ``stream``); ``steps`` (default ``args.steps``) batches.
    """
    from panns_lightning.data.diagnostics.balance import draw_stream, read_label_set
    from panns_lightning.data.spec import StreamSpec
    from panns_lightning.data.tar_reader import read_shard
    from panns_lightning.shardset.manifest import read_manifest

    spec = StreamSpec.from_manifest(read_manifest(shard_dir))
    label_set = read_label_set(shard_dir)
    index = {key: i for i, key in enumerate(train_clips.keys)}
    keys = label_set.keys
    assert keys is not None
    steps = args.steps if steps is None else steps
    epochs = math.ceil(steps / args.steps_per_epoch)
    drawn = np.concatenate(
        [
            draw_stream(
                label_set,
                args.steps_per_epoch * args.batch_size,
                batch_size=args.batch_size,
                seed=seed,
                epoch=epoch,
                spec=spec,
                reader=read_shard,
                shuffle_buffer=args.shuffle_buffer,
                stratify_batches=stratify,
            )
            for epoch in range(epochs)
        ]
    )[: steps * args.batch_size]
    return np.array([index[keys[i]] for i in drawn], dtype=np.int64)


def arm_draws(arm: str, seed: int, shard_dir: Path, clips: Any, args: argparse.Namespace, steps: int) -> np.ndarray:
    """The clip indices (into ``clips``: ``keys``, ``labels``, ``num_classes``) an arm draws in ``steps`` steps.

    Every arm's draws are fixed by its seed: the stream arms' as their labels-only stream draws
    them, PANNs' as its sampler does; the diagnostic arms train on these, the report redraws them.
    """
    count = steps * args.batch_size
    window = args.spread_window * args.batch_size
    if arm in ("panns", "exact", "panns-shuffled"):
        draws = PannsBatches(clips.labels, clips.num_classes, args.batch_size, seed).sampler.draw(count)
        return shuffled_within(draws, window, seed) if arm == "panns-shuffled" else draws
    draws = stream_draws(shard_dir, clips, seed, args, stratify=arm == "stream-stratified", steps=steps)
    return shuffled_within(draws, window, seed) if arm == "stream-spread" else draws


class ClipLabelIndex:
    """The keys and labels of a shard set's clips, in :class:`DecodedClips`' order, without the audio."""

    def __init__(self, shard_dir: Path) -> None:
        from panns_lightning.data.diagnostics.balance import read_label_set
        from panns_lightning.shardset.manifest import read_manifest

        label_set = read_label_set(shard_dir)
        assert label_set.keys is not None
        self.manifest = read_manifest(shard_dir)
        self.keys = list(label_set.keys)
        self.labels = [tuple(labels) for labels in label_set.label_lists()]
        self.num_classes = label_set.num_classes

    def __len__(self) -> int:
        return len(self.keys)

    def class_counts(self) -> np.ndarray:
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for labels in self.labels:
            counts[list(set(labels))] += 1
        return counts


def batch_presence(
    drawn: np.ndarray, label_lists: Sequence[Sequence[int]], num_classes: int, batch_size: int
) -> np.ndarray:
    """Per class, the fraction of the full batches (consecutive ``batch_size`` draws) that hold it."""
    batches = len(drawn) // batch_size
    held = np.zeros((batches, num_classes), dtype=bool)
    for row, start in enumerate(range(0, batches * batch_size, batch_size)):
        for index in drawn[start : start + batch_size]:
            held[row, list(label_lists[int(index)])] = True
    return held.mean(axis=0)


def shuffled_within(indices: np.ndarray, window: int, seed: int) -> np.ndarray:
    """``indices`` permuted within consecutive windows of ``window`` entries."""
    rng = np.random.default_rng([seed, 0xAB])
    out = np.asarray(indices).copy()
    for start in range(0, len(out), window):
        out[start : start + window] = rng.permutation(out[start : start + window])
    return out


class PannsBatches:
    """``PannsBalancedSampler`` as an endless DataLoader ``batch_sampler``."""

    def __init__(self, label_lists: Sequence[Sequence[int]], num_classes: int, batch_size: int, seed: int) -> None:
        from panns_lightning.data.diagnostics.reference import PannsBalancedSampler

        self.sampler = PannsBalancedSampler(label_lists, num_classes, seed=seed)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        return self.sampler.batches(self.batch_size)


def tiny_model(config: dict[str, Any], num_classes: int) -> torch.nn.Module:
    """``--model tiny``: the zoo's log-mel CNN with 3 blocks of 16/32/64 channels and a 128-wide embedding.

    ~0.1 s per step of 32 one-second 8 kHz clips on one core, ~20x less than Cnn6: the A/B
    compares samplers, and a model this small still learns the 527 synthetic classes.
    """
    from panns_lightning.models.cnn import Cnn

    front = {k: config[k] for k in ("sample_rate", "window_size", "hop_size", "mel_bins", "fmin", "fmax")}
    extra = {
        k: config[k] for k in ("time_drop_width", "time_stripes_num", "freq_drop_width", "freq_stripes_num", "stft")
    }
    return Cnn(
        **front,
        classes_num=num_classes,
        channels=TINY_CHANNELS,
        pool_sizes=((2, 2),) * len(TINY_CHANNELS),
        embedding_size=128,
        **extra,
    )


# --------------------------------------------------------------------------- training


def train_one(
    arm: str,
    seed: int,
    *,
    dirs: dict[str, Path],
    train_clips: DecodedClips,
    args: argparse.Namespace,
    eval_clips: DecodedClips | None = None,
    rare: np.ndarray | None = None,
) -> tuple[Any, list[str], float]:
    """Train one arm for ``args.steps`` steps; returns the module, the drawn keys and seconds."""
    import lightning as L

    from panns_lightning.data import AudioShardDataModule
    from panns_lightning.data.datamodule import StreamEpochCallback
    from panns_lightning.training.module import TaggingModule
    from panns_lightning.training.speed import SpeedOptions

    class EvalEvery(L.Callback):
        """Scores on the eval clips every ``every`` steps (``--eval-every``: learning curves, e.g. to pick ``--steps``)."""

        def __init__(self, every: int, clips: DecodedClips, name: str, rare: np.ndarray | None) -> None:
            self.every, self.clips, self.name, self.rare = every, clips, name, rare
            self.curve: list[tuple[int, float, float]] = []

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step % self.every:
                return
            scores = evaluate(pl_module, self.clips)
            pl_module.train()
            ap = np.asarray(scores.per_class_ap, dtype=float)
            rare_ap = float(np.nanmean(ap[self.rare])) if self.rare is not None else math.nan
            self.curve.append((int(trainer.global_step), float(scores.mAP), rare_ap))
            print(
                f"  {self.name} step {trainer.global_step}: mAP {scores.mAP:.3f}, rarest-decile AP {rare_ap:.3f}",
                flush=True,
            )

    class KeyRecorder(L.Callback):
        def __init__(self) -> None:
            self.keys: list[str] = []

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self.keys.extend(batch["key"])

    L.seed_everything(seed, workers=True, verbose=False)
    labels = list(train_clips.manifest.labels)
    model_config = dict(AUDIOSET_SHAPE_MODEL if args.shape == "audioset" else MODEL)
    module = TaggingModule(
        model_config=model_config,
        labels=labels,
        multilabel=True,
        lr=args.lr,
        augment={"mixup": {"enabled": not args.no_mixup, "alpha": 1.0, "at": "logmel"}},
        speed=SpeedOptions(fused_adam=True, sync_free=True),
    )
    if args.model == "tiny":
        module.model = tiny_model(model_config, train_clips.num_classes)
    recorder = KeyRecorder()
    # Complete before the Trainer is built: it copies the list (a callback appended later is never called).
    callbacks: list[Any] = [recorder, StreamEpochCallback()] if arm in SHARD_ARMS else [recorder]
    curve = (
        EvalEvery(args.eval_every, eval_clips, f"{arm} seed {seed}", rare) if args.eval_every and eval_clips else None
    )
    if curve is not None:
        callbacks.append(curve)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=50,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    if arm in SHARD_ARMS:
        datamodule = AudioShardDataModule(
            train_dir=str(dirs["train"]),
            batch_size=args.batch_size,
            num_workers=0,
            balanced=True,
            sampler="panns" if arm == "exact" else "stream",
            # --exact-one-epoch: the exact draws do not depend on epochs; one epoch creates one
            # loader iterator, as PANNs' arm does, so both take the same draws from torch's
            # generator (dropout, mixup) and the two arms can be compared bit for bit.
            steps_per_epoch=args.steps if arm == "exact" and args.exact_one_epoch else args.steps_per_epoch,
            shuffle_buffer=args.shuffle_buffer,
            stratify_batches=STREAM_ARMS.get(arm, True),
            seed=seed,
        )
        trainer.fit(module, datamodule=datamodule)
    elif arm == "panns":
        loader = torch.utils.data.DataLoader(
            MapStyleClips(train_clips),
            batch_sampler=PannsBatches(train_clips.labels, train_clips.num_classes, args.batch_size, seed),
            num_workers=0,
            collate_fn=collate,
        )
        trainer.fit(module, train_dataloaders=loader)
    elif arm in DIAGNOSTIC_ARMS:
        draws = arm_draws(arm, seed, dirs["train"], train_clips, args, args.steps)
        loader = torch.utils.data.DataLoader(
            MapStyleClips(train_clips),
            batch_sampler=FixedBatches(draws, args.batch_size),
            num_workers=0,
            collate_fn=collate,
        )
        trainer.fit(module, train_dataloaders=loader)
    else:
        raise ValueError(arm)
    seconds = time.perf_counter() - started
    if trainer.global_step != args.steps:
        raise RuntimeError(f"{arm} seed {seed}: trained {trainer.global_step} steps, not {args.steps}")
    module.curve = curve.curve if curve is not None else []  # type: ignore[attr-defined]
    return module, recorder.keys, seconds


@torch.no_grad()
def evaluate(module: Any, clips: DecodedClips, batch_size: int = 125) -> Any:
    from panns_lightning.training.metrics import score_tagging

    module.eval()
    probs = [
        module.model(clips.waveforms[start : start + batch_size])["clipwise_output"].float()
        for start in range(0, len(clips), batch_size)
    ]
    return score_tagging(torch.cat(probs), clips.targets, multilabel=True)


# --------------------------------------------------------------------------- report


def mean_std(values: Sequence[float]) -> str:
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {std:.3f}"


def pairs(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Paired differences the report prints, (arm, baseline) seed by seed: against PANNs' map-style arm when
    the results have it, else against the exact sampler (the AudioSet-shape A/B), and stratified − unstratified."""
    arms = {r["arm"] for r in results}
    baseline = "panns" if "panns" in arms else "exact"
    found = [(arm, baseline) for arm in ARM_NAMES if arm != baseline and arm in arms]
    return found + [("stream-stratified", "stream")]


def rare_presence(result: dict[str, Any]) -> list[float]:
    """Per rarest-decile class, the fraction of the run's batches that held it."""
    return [result["batch_presence"][klass] for klass in result["rare_classes"]]


def report(results: list[dict[str, Any]], seeds: Sequence[int]) -> str:
    lines = [
        "| sampler | mAP | rarest-decile AP | rarest-quintile AP | gap median / p5 (draws) | rare clips' gap median / p5 "
        "| rarest-decile classes: batches holding each | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, name in ARM_NAMES.items():
        rows = [r for r in results if r["arm"] == arm]
        if not rows:
            continue
        with_presence = [rare_presence(r) for r in rows if "batch_presence" in r]
        presence = " / ".join(f"{value:.2f}" for value in np.mean(with_presence, axis=0)) if with_presence else "n/a"
        lines.append(
            f"| {name} | {mean_std([r['mAP'] for r in rows])} | {mean_std([r['rare_decile_ap'] for r in rows])} | "
            f"{mean_std([r['rare_quintile_ap'] for r in rows])} | "
            f"{np.mean([r['gaps']['median'] for r in rows]):.0f} / {np.mean([r['gaps']['p5'] for r in rows]):.0f} | "
            f"{np.mean([r['rare_gaps']['median'] for r in rows]):.0f} / {np.mean([r['rare_gaps']['p5'] for r in rows]):.0f} | "
            f"{presence} | {np.mean([r['seconds'] for r in rows]):.0f} |"
        )
    by_seed = {(r["arm"], r["seed"]): r for r in results}
    for arm, baseline in pairs(results):
        paired = [s for s in seeds if (baseline, s) in by_seed and (arm, s) in by_seed]
        for field, title in (
            ("mAP", "mAP"),
            ("rare_decile_ap", "rarest-decile AP"),
            ("rare_quintile_ap", "rarest-quintile AP"),
        ):
            if not paired:
                break
            diffs = [by_seed[(arm, s)][field] - by_seed[(baseline, s)][field] for s in paired]
            below = sum(d < 0 for d in diffs)
            lines.append(
                f"{arm} − {baseline}, paired by seed, {title}: {mean_std(diffs)}, {below} of {len(diffs)} below "
                f"(per seed {', '.join(f'{d:+.3f}' for d in diffs)})"
            )
    curves = {arm: [r["curve"] for r in results if r["arm"] == arm and r.get("curve")] for arm in ARM_NAMES}
    for arm, runs in curves.items():
        if runs and all(len(run) == len(runs[0]) for run in runs):
            points = ", ".join(
                f"step {int(step)} {np.mean([run[i][1] for run in runs]):.3f}" for i, (step, _, _) in enumerate(runs[0])
            )
            lines.append(f"{arm} mean mAP over {len(runs)} seeds: {points}")
    lines.append("\nper run:")
    for r in results:
        presence = (
            f", rare classes in {', '.join(f'{p:.2f}' for p in rare_presence(r))} of batches"
            if "batch_presence" in r
            else ""
        )
        lines.append(
            f"  {r['arm']:<17} seed {r['seed']}: mAP {r['mAP']:.3f}, rarest-decile AP {r['rare_decile_ap']:.3f} "
            f"(per class {', '.join(f'{ap:.3f}' for ap in r['rare_decile_per_class'])}), "
            f"rarest-quintile AP {r['rare_quintile_ap']:.3f}{presence}, {r['seconds']:.0f} s"
        )
    return "\n".join(lines)


def with_presence(results: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """``results``, each with ``batch_presence``: redrawn (labels only, from the seed) where a file lacks it.

    Results files written before the field existed lack it; every arm's draws are fixed by its
    seed (:func:`arm_draws`), so they are drawn again from ``--work``'s train shards.
    """
    missing = [r for r in results if "batch_presence" not in r]
    shard_dir = args.work / "shards" / "train"
    if not missing or not (shard_dir / "manifest.json").is_file():
        return results
    from panns_lightning.data.diagnostics.balance import rarest_decile

    clips = ClipLabelIndex(shard_dir)
    counts = np.zeros(clips.num_classes, dtype=np.int64)
    for labels in clips.labels:
        counts[list(labels)] += 1
    rare = rarest_decile(counts).tolist()
    for result in missing:
        drawn = arm_draws(result["arm"], result["seed"], shard_dir, clips, args, result["steps"])
        if "draws" in result and len(drawn) != result["draws"]:
            raise RuntimeError(
                f"{result['arm']} seed {result['seed']}: redrew {len(drawn)} draws, not {result['draws']}"
            )
        saved = args.work / f"draws_{result['arm']}_seed{result['seed']}.npy"
        if saved.is_file() and not np.array_equal(np.load(saved), drawn):
            raise RuntimeError(f"{result['arm']} seed {result['seed']}: redrawn draws differ from {saved}")
        result["rare_classes"] = rare
        result["batch_presence"] = batch_presence(drawn, clips.labels, clips.num_classes, args.batch_size).tolist()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("outputs/ab_balance"), help="data and results folder")
    parser.add_argument(
        "--shape",
        choices=["small", "audioset"],
        default="small",
        help="small: the 25-class synthetic set; audioset: 527 classes at AudioSet's long tail (ab_shape.py)",
    )
    parser.add_argument("--model", choices=["Cnn6", "tiny"], default="Cnn6", help="tiny: tiny_model()")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--steps-per-epoch", type=int, default=100, help="stream epochs (the sampler is endless)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=list(ARM_NAMES), default=["panns", "stream-stratified"])
    parser.add_argument(
        "--spread-window", type=int, default=32, help="batches per shuffle window of the diagnostic arms"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--shuffle-buffer",
        type=int,
        default=128,
        help="ours: also the repeat spread; 128 puts a rare clip's copies one batch apart, as on AudioSet",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-mixup", action="store_true", help="train without mixup (every arm alike)")
    parser.add_argument(
        "--exact-one-epoch", action="store_true", help="the exact arm trains one epoch of --steps (as PANNs' arm)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--convert-workers", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=0, help="also score every N steps (0: only at the end)")
    parser.add_argument("--results", default="ab_results.json", help="results file name under --work")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="only print the report of these results files (merged; a later file's run replaces an earlier one's "
        "of the same arm and seed), train nothing; batch presence missing from a file is redrawn from --work's data",
    )
    args = parser.parse_args(argv)

    if args.report:
        runs = {(r["arm"], r["seed"]): r for path in args.report for r in json.loads(path.read_text())["results"]}
        merged = with_presence(list(runs.values()), args)
        print(report(merged, sorted({r["seed"] for r in merged})))
        return
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Trainer.fit.*stopped.*")
    from panns_lightning.data.diagnostics.balance import gap_stats, rarest_decile

    started = time.perf_counter()
    if args.shape == "audioset":
        from ab_shape import build as build_audioset_shape

        dirs = build_audioset_shape(args.work, seed=args.data_seed, workers=args.convert_workers)
    else:
        dirs = build_data(args.work, data_seed=args.data_seed, workers=args.convert_workers)
    # Arms that read the shards need only the train set's keys and labels, not its audio in memory.
    shard_only = all(arm in SHARD_ARMS for arm in args.arms)
    train_clips = ClipLabelIndex(dirs["train"]) if shard_only else DecodedClips(dirs["train"])
    eval_clips = DecodedClips(dirs["eval"])
    counts = train_clips.class_counts()
    rare = rarest_decile(counts)
    present = np.flatnonzero(counts > 0)
    quintile = present[np.argsort(counts[present], kind="stable")][: max(1, math.ceil(0.2 * len(present)))]
    rare_clip_keys = {
        key for key, labels in zip(train_clips.keys, train_clips.labels) if set(labels) & set(rare.tolist())
    }
    print(
        f"train {len(train_clips)} clips, eval {len(eval_clips)} clips, {train_clips.num_classes} classes; "
        f"train counts per class {counts.tolist()}; rarest decile {rare.tolist()} "
        f"({counts[rare].tolist()} clips), rarest quintile {quintile.tolist()}; "
        f"eval positives of the rarest decile {eval_clips.class_counts()[rare].tolist()}"
    )
    results: list[dict[str, Any]] = []
    results_path = args.work / args.results
    for seed in args.seeds:
        for arm in args.arms:
            module, keys, seconds = train_one(
                arm, seed, dirs=dirs, train_clips=train_clips, args=args, eval_clips=eval_clips, rare=rare
            )
            scores = evaluate(module, eval_clips)
            ap = np.asarray(scores.per_class_ap, dtype=float)
            index = {key: i for i, key in enumerate(train_clips.keys)}
            drawn = np.array([index[key] for key in keys], dtype=np.int64)
            rare_clips = np.array(sorted(index[key] for key in rare_clip_keys), dtype=np.int64)
            result = {
                "arm": arm,
                "seed": seed,
                "steps": args.steps,
                "seconds": seconds,
                "mAP": scores.mAP,
                "rare_decile_ap": float(np.nanmean(ap[rare])),
                "rare_decile_per_class": ap[rare].tolist(),
                "rare_quintile_ap": float(np.nanmean(ap[quintile])),
                "per_class_ap": ap.tolist(),
                "AUC": scores.AUC,
                "gaps": gap_stats(drawn),
                "rare_gaps": gap_stats(drawn, rare_clips),
                "draws": int(len(drawn)),
                "distinct_clips": int(len(np.unique(drawn))),
                "rare_draws": int(np.isin(drawn, rare_clips).sum()),
                "rare_classes": rare.tolist(),
                "batch_presence": batch_presence(
                    drawn, train_clips.labels, train_clips.num_classes, args.batch_size
                ).tolist(),
                "curve": module.curve,
            }
            results.append(result)
            np.save(args.work / f"draws_{arm}_seed{seed}.npy", drawn)  # clip indices in draw order
            print(
                f"{arm:<6} seed {seed}: mAP {scores.mAP:.3f}, rarest-decile AP {result['rare_decile_ap']:.3f}, "
                f"gap median {result['gaps']['median']:.0f} (rare clips {result['rare_gaps']['median']:.0f}), "
                f"rare-clip draws {result['rare_draws']}, {seconds:.0f} s",
                flush=True,
            )
            results_path.write_text(
                json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1)
            )
    print()
    print(
        f"{args.steps} steps × batch {args.batch_size} per run, seeds {args.seeds}, {torch.get_num_threads()} threads, "
        f"total {time.perf_counter() - started:.0f} s; results in {results_path}"
    )
    print(report(results, args.seeds))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()

"""``panns-prepare inspect``: what a shard set holds and what the train stream actually draws from it.

The draw statistics run the real train sampling code (``TrainClipStream``) on a labels-only stream,
so they measure the sampler rather than a model of it, without decoding audio. With ``balanced``
the same number of draws is also taken from PANNs' BalancedTrainSampler (``reference.py``) on the
same clips' labels and both are printed side by side (``balance.py`` figures); ``plot`` writes a
PNG of per-class counts: raw, ours, PANNs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from panns_lightning.data.diagnostics.balance import (
    ClipLabels,
    balance_figures,
    draw_panns,
    format_figures,
    read_label_set,
)
from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.spec import StreamSpec
from panns_lightning.data.train_stream import TrainClipStream
from panns_lightning.shardset import Manifest, read_manifest

_TOP = 5  # classes shown at each end of the per-class tables


def run_inspect(
    shard_dir: str | Path,
    balanced: bool = False,
    draws: int = 0,
    seed: int = 0,
    batch_size: int = 32,
    plot: str | Path | None = None,
) -> dict[str, Any]:
    """Print a summary of ``shard_dir`` and, with ``draws > 0``, the train stream's per-class draws.

    Returns the same facts as a dict: ``num_clips, num_shards, storage, sample_rate, clip_samples,
    clip_seconds, class_counts, num_skipped`` and, with draws, ``stream`` holding ``balanced, draws,
    batches, share`` (per class: clips drawn containing it ÷ draws/C), ``min_share``,
    ``max_min_ratio``, ``coverage`` (per class: fraction of its clips drawn at least once),
    ``min_coverage``, ``batches_with_repeat``, ``bad_samples``, ``bad_shards``. C counts only classes
    that have clips; classes without clips are listed as ``empty_classes``.

    With ``balanced`` (or ``plot``) and draws, ``comparison`` maps ``"panns"`` and ``"ours"`` to
    :func:`balance.balance_figures` of the same number of draws; ``plot`` (a path) writes a PNG.
    """
    manifest = read_manifest(shard_dir, check_files=False)
    names = manifest.label_names
    counts = list(manifest.class_counts)
    report: dict[str, Any] = {
        "shard_dir": str(shard_dir),
        "num_clips": manifest.num_clips,
        "num_shards": len(manifest.shards),
        "storage": manifest.storage,
        "sample_rate": manifest.sample_rate,
        "clip_samples": manifest.clip_samples,
        "clip_seconds": manifest.clip_samples / manifest.sample_rate,
        "num_classes": len(names),
        "class_counts": counts,
        "empty_classes": [names[index] for index, count in enumerate(counts) if count == 0],
        "num_skipped": manifest.num_skipped,
    }
    _print_summary(report, names)
    if draws > 0:
        drawn_keys: list[str] = []
        report["stream"] = measure_stream(
            shard_dir, manifest, balanced=balanced, draws=draws, seed=seed, batch_size=batch_size, keys_out=drawn_keys
        )
        _print_stream(report["stream"], names)
        if balanced or plot is not None:
            label_set = read_label_set(shard_dir)
            report["comparison"] = compare_with_panns(label_set, drawn_keys, seed=seed, batch_size=batch_size)
            ours_name = "ours (stream)" if balanced else "ours (plain)"
            print()
            print(f"side by side   {len(drawn_keys)} draws each, same clips' labels, batch size {batch_size}")
            print(
                format_figures(
                    {
                        "PANNs BalancedTrainSampler": report["comparison"]["panns"],
                        ours_name: report["comparison"]["ours"],
                    }
                )
            )
            if plot is not None:
                plot_class_counts(
                    plot,
                    label_set.class_counts(),
                    report["comparison"],
                    names,
                    title=f"{shard_dir}: {len(drawn_keys)} draws, {label_set.num_clips} clips",
                    ours_name=ours_name,
                )
                report["plot"] = str(plot)
                print(f"plot           {plot}")
    return report


def compare_with_panns(
    label_set: ClipLabels, keys: list[str], *, seed: int, batch_size: int
) -> dict[str, dict[str, Any]]:
    """Figures of our drawn ``keys`` and of as many draws from PANNs' sampler on the same label set."""
    index = label_set.key_index()
    ours = np.array([index[key] for key in keys], dtype=np.int64)
    panns = draw_panns(label_set, len(ours), seed=seed)
    return {
        "panns": balance_figures(label_set, panns, batch_size),
        "ours": balance_figures(label_set, ours, batch_size),
    }


def plot_class_counts(
    path: str | Path,
    raw_counts: np.ndarray,
    comparison: dict[str, dict[str, Any]],
    names: list[str],
    *,
    title: str,
    ours_name: str = "ours",
) -> Path:
    """PNG: per-class clips in the set and draws per class (ours, PANNs), log y, classes by raw count."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    present = np.flatnonzero(np.asarray(raw_counts) > 0)
    order = present[np.argsort(-np.asarray(raw_counts)[present], kind="stable")]
    x = np.arange(len(order))
    draws = comparison["ours"]["draws"]
    fair = draws / max(len(present), 1)
    few = len(order) <= 40  # name the classes only while the labels stay legible
    figure, axes = plt.subplots(figsize=(max(8.0, min(0.45 * len(order), 16.0)) if few else 12.0, 6.0))
    # PANNs dashed and drawn last: where the two samplers agree, ours still shows underneath.
    series = (
        ("raw: clips in the set", np.asarray(raw_counts), "#7f7f7f", "s", "-"),
        (f"{ours_name}: draws with the class", comparison["ours"]["per_class"], "#1f77b4", "o", "-"),
        ("PANNs BalancedTrainSampler: draws with the class", comparison["panns"]["per_class"], "#d62728", "^", "--"),
    )
    for label, values, colour, marker, style in series:
        values = np.maximum(np.asarray(values, dtype=float)[order], 0.5)  # a 0 stays visible on a log axis
        axes.plot(
            x,
            values,
            label=label,
            color=colour,
            marker=marker if few else None,
            markersize=4,
            linewidth=1.4,
            linestyle=style,
        )
    axes.axhline(fair, color="black", linestyle=":", linewidth=1, label=f"fair share draws/C = {fair:.0f}")
    axes.set_yscale("log")
    axes.set_xlim(-0.5, len(order) - 0.5)
    axes.set_ylabel("count (log scale)")
    if few:
        axes.set_xticks(x)
        axes.set_xticklabels([_short(names[index]) for index in order], rotation=60, ha="right", fontsize=8)
        axes.set_xlabel("class, most clips first")
    else:
        axes.set_xlabel(f"class rank by clips in the set ({len(order)} classes, most clips first)")
    axes.grid(True, which="major", axis="y", alpha=0.3)
    axes.set_title(title + "\nper-class counts: raw vs sampled (ours, PANNs)")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, format="png")
    plt.close(figure)
    return out


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def measure_stream(
    shard_dir: str | Path,
    manifest: Manifest,
    *,
    balanced: bool,
    draws: int,
    seed: int,
    batch_size: int,
    keys_out: list[str] | None = None,
) -> dict[str, Any]:
    """Draw ``draws`` clips from one labels-only train stream (rank 0 of 1, in-process) and tally them.

    ``keys_out``, when given, receives the drawn keys in draw order (for :func:`compare_with_panns`).
    """
    num_classes = manifest.num_classes
    counts = np.array(manifest.class_counts, dtype=np.int64)
    errors = ErrorLog("inspect")
    spec = StreamSpec.from_manifest(manifest)
    stream = TrainClipStream(
        spec,
        rank=0,
        world_size=1,
        options=StreamOptions(
            batch_size=batch_size, steps_per_epoch=math.ceil(draws / batch_size), balanced=balanced, seed=seed
        ),
        errors=errors,
        labels_only=True,
    )
    drawn_with_class = np.zeros(num_classes, dtype=np.int64)
    seen_keys_by_class: list[set[str]] = [set() for _ in range(num_classes)]
    batches_with_repeat = 0
    drawn = 0
    batches = 0
    for batch in stream:
        batches += 1
        if len(set(batch["key"])) < len(batch["key"]):
            batches_with_repeat += 1
        for key, labels in zip(batch["key"], batch["labels"]):
            if drawn == draws:
                break
            drawn += 1
            if keys_out is not None:
                keys_out.append(key)
            for index in set(labels):
                if 0 <= index < num_classes:
                    drawn_with_class[index] += 1
                    seen_keys_by_class[index].add(key)
    present = counts > 0
    fair_share = drawn / max(int(present.sum()), 1)
    share = drawn_with_class / fair_share
    coverage = np.array([len(seen) for seen in seen_keys_by_class]) / np.maximum(counts, 1)
    present_share = share[present]
    min_share = float(present_share.min()) if present_share.size else 0.0
    max_share = float(present_share.max()) if present_share.size else 0.0
    return {
        "balanced": balanced,
        "draws": drawn,
        "batches": batches,
        "share": [float(value) if has else None for value, has in zip(share, present)],
        "min_share": min_share,
        "max_min_ratio": max_share / min_share if min_share > 0 else math.inf,
        "coverage": [float(value) if has else None for value, has in zip(coverage, present)],
        "min_coverage": float(coverage[present].min()) if present.any() else 0.0,
        "batches_with_repeat": batches_with_repeat,
        "copy_window": stream.copy_window,
        **errors.counts(),
    }


def _print_summary(report: dict[str, Any], names: list[str]) -> None:
    print(f"shard set      {report['shard_dir']}")
    print(f"clips          {report['num_clips']} in {report['num_shards']} shards ({report['storage']})")
    print(
        f"audio          {report['sample_rate']} Hz, {report['clip_samples']} samples "
        f"({report['clip_seconds']:.2f} s) per clip"
    )
    print(f"classes        {report['num_classes']} ({len(report['empty_classes'])} without clips)")
    print(f"skipped        {report['num_skipped']} clips at conversion")
    order = sorted(range(len(names)), key=lambda index: report["class_counts"][index], reverse=True)
    print("most clips     " + ", ".join(f"{names[i]}={report['class_counts'][i]}" for i in order[:_TOP]))
    print("fewest clips   " + ", ".join(f"{names[i]}={report['class_counts'][i]}" for i in order[-_TOP:][::-1]))


def _print_stream(stream: dict[str, Any], names: list[str]) -> None:
    mode = "balanced" if stream["balanced"] else "plain shuffled"
    print(f"train stream   {mode}: {stream['draws']} draws in {stream['batches']} batches")
    print(
        f"draw share     min {stream['min_share']:.2f} of fair share, max/min {stream['max_min_ratio']:.1f}"
        f"  (1.00 = each class in draws/C clips)"
    )
    print(f"coverage       min {stream['min_coverage']:.2f} of a class's clips drawn at least once")
    print(f"repeats        {stream['batches_with_repeat']} batches hold a clip twice")
    if stream["copy_window"]:
        print(
            f"copy window    {stream['copy_window']:.0f} draws at this batch size: a rare clip's copies"
            " fall due a batch apart; each epoch re-reads this much of the previous one"
        )
    print(f"read errors    {stream['bad_samples']} clips, {stream['bad_shards']} shards")
    present = [index for index, value in enumerate(stream["share"]) if value is not None]
    order = sorted(present, key=lambda index: stream["share"][index])
    print("lowest share   " + ", ".join(f"{names[i]}={stream['share'][i]:.2f}" for i in order[:_TOP]))
    print("highest share  " + ", ".join(f"{names[i]}={stream['share'][i]:.2f}" for i in order[-_TOP:][::-1]))

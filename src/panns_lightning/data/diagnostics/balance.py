"""Measuring class balance: one set of figures for any sampler, so PANNs' and ours compare like for like.

A :class:`ClipLabels` holds every clip's labels (CSR arrays, shard by shard); samplers are run for the
same number of draws and :func:`balance_figures` turns the drawn clip indices into:

- ``share[c]``: draws containing class c ÷ the fair share draws/C (C = classes with clips);
- ``min_share`` and ``max_min_ratio`` of those shares, ``min_count`` (smallest per-class count);
- ``kl_uniform``: KL(per-class draw distribution ‖ uniform over the C classes), in nats;
- ``coverage[c]``: fraction of class c's clips drawn at least once, summarised over the rarest
  decile of classes (``rare_coverage`` pooled over their clips, ``rare_coverage_min`` per class);
- ``batches_with_repeat``: fraction of batches holding one clip twice; ``repeat_within_1k``:
  fraction of draws whose clip was also among the previous 1000 draws.

Apart from those, :func:`gap_stats` summarises how a clip's draws are spread in time: the gaps (in
draws) between consecutive draws of the same clip (:func:`draw_gaps`), as count, median and
percentiles; ``simulate.py`` prints them for both samplers.

Our sampler runs through its production code (``TrainClipStream.iter_slot``) on a labels-only
reader (:class:`ClipLabelsReader`), all ranks × workers in this process with their real seeds.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panns_lightning.data.diagnostics.reference import PannsBalancedSampler
from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.shared_count import SharedCount
from panns_lightning.data.spec import ReaderSlot, StreamSpec
from panns_lightning.data.tar_reader import RawClip, read_shard
from panns_lightning.data.train_stream import ShardReader, TrainClipStream
from panns_lightning.shardset import read_manifest

LABELS_URL_PREFIX = "labels:"
REPEAT_WINDOW = 1000


@dataclass(frozen=True)
class ClipLabels:
    """Every clip's labels in CSR form, clips stored shard after shard.

    Clip i has classes ``values[offsets[i]:offsets[i+1]]`` and lives in shard s when
    ``shard_bounds[s] <= i < shard_bounds[s+1]``; its key is ``keys[i]``, or ``str(i)`` when
    ``keys`` is None (the simulation, where 1.9 M key strings would only cost memory).
    """

    offsets: np.ndarray
    values: np.ndarray
    num_classes: int
    shard_bounds: np.ndarray
    keys: tuple[str, ...] | None = None

    @property
    def num_clips(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_shards(self) -> int:
        return len(self.shard_bounds) - 1

    def class_counts(self) -> np.ndarray:
        """Clips per class (a clip counts once per distinct label)."""
        return np.bincount(self.values, minlength=self.num_classes).astype(np.int64)

    def label_lists(self) -> list[list[int]]:
        values = self.values.tolist()
        return [values[a:b] for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())]

    def key_index(self) -> Mapping[str, int]:
        """key → clip index, for mapping a stream's keys back to clips."""
        if self.keys is None:
            return _IntKeys()
        return {key: index for index, key in enumerate(self.keys)}

    def stream_spec(self) -> StreamSpec:
        """A spec whose URLs ``labels:S`` the :class:`ClipLabelsReader` serves; no audio behind it."""
        return StreamSpec(
            urls=tuple(f"{LABELS_URL_PREFIX}{shard}" for shard in range(self.num_shards)),
            storage="int16",
            sample_rate=1,
            clip_samples=1,
            num_classes=self.num_classes,
            class_counts=tuple(int(count) for count in self.class_counts()),
            num_clips=self.num_clips,
            shard_clips=tuple(int(size) for size in np.diff(self.shard_bounds)),
            shard_class_counts=tuple(tuple(row) for row in self.shard_class_counts().tolist()),
        )

    def shard_class_counts(self) -> np.ndarray:
        """[num_shards, num_classes] clips per class in each shard (what a manifest's shard list holds)."""
        shard_of_clip = np.searchsorted(self.shard_bounds, np.arange(self.num_clips), side="right") - 1
        shard_of_value = np.repeat(shard_of_clip, np.diff(self.offsets))
        flat = np.bincount(
            shard_of_value * self.num_classes + self.values, minlength=self.num_shards * self.num_classes
        )
        return flat.reshape(self.num_shards, self.num_classes)

    @classmethod
    def from_lists(
        cls,
        label_lists: Sequence[Sequence[int]],
        num_classes: int,
        shard_sizes: Sequence[int],
        keys: Sequence[str] | None = None,
    ) -> "ClipLabels":
        lengths = np.array([len(set(labels)) for labels in label_lists], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = np.array([label for labels in label_lists for label in sorted(set(labels))], dtype=np.int32)
        bounds = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
        if bounds[-1] != len(label_lists):
            raise ValueError(f"shard sizes add up to {bounds[-1]}, not to the {len(label_lists)} clips")
        return cls(offsets, values, num_classes, bounds, tuple(keys) if keys is not None else None)


class _IntKeys(Mapping[str, int]):
    """The identity key map of a key-less label set: key ``"17"`` is clip 17."""

    def __getitem__(self, key: str) -> int:
        return int(key)

    def __iter__(self) -> Iterator[str]:
        raise TypeError("the integer key map is not enumerable")

    def __len__(self) -> int:
        raise TypeError("the integer key map has no length")


class ClipLabelsReader:
    """A :data:`train_stream.ShardReader` serving ``labels:S`` URLs from a :class:`ClipLabels` (no audio)."""

    def __init__(self, label_set: ClipLabels) -> None:
        self.label_set = label_set

    def __call__(self, url: str, *, storage: str, with_audio: bool, errors: ErrorLog) -> Iterator[RawClip]:
        if with_audio:
            raise ValueError(f"{url}: a label set has no audio; use labels_only=True")
        if not url.startswith(LABELS_URL_PREFIX):
            raise ValueError(f"{url}: expected a {LABELS_URL_PREFIX}SHARD URL")
        shard = int(url[len(LABELS_URL_PREFIX) :])
        labels = self.label_set
        start, stop = int(labels.shard_bounds[shard]), int(labels.shard_bounds[shard + 1])
        offsets = labels.offsets[start : stop + 1].tolist()
        values = labels.values[offsets[0] : offsets[-1]].tolist()
        base = offsets[0]
        keys = labels.keys
        for position, index in enumerate(range(start, stop)):
            key = keys[index] if keys is not None else str(index)
            yield RawClip(key, url, tuple(values[offsets[position] - base : offsets[position + 1] - base]), None)


def read_label_set(shard_dir: str | Path) -> ClipLabels:
    """Read every clip's labels of a shard set (labels-only: audio members are stepped over)."""
    manifest = read_manifest(shard_dir, check_files=False)
    urls = [str(path) for path in manifest.shard_paths()]
    errors = ErrorLog("inspect")
    label_lists: list[tuple[int, ...]] = []
    keys: list[str] = []
    sizes = []
    for url in urls:
        before = len(keys)
        for clip in read_shard(url, storage=manifest.storage, with_audio=False, errors=errors):
            keys.append(clip.key)
            label_lists.append(clip.labels)
        sizes.append(len(keys) - before)
    return ClipLabels.from_lists(label_lists, manifest.num_classes, sizes, keys)


# --------------------------------------------------------------------------- drawing


def draw_panns(label_set: ClipLabels, draws: int, *, seed: int = 0) -> np.ndarray:
    """``draws`` clip indices from the reference PANNs sampler."""
    return PannsBalancedSampler.from_label_set(label_set, seed=seed).draw(draws)


def draw_stream(
    label_set: ClipLabels,
    draws: int,
    *,
    ranks: int = 1,
    workers: int = 1,
    batch_size: int = 32,
    balanced: bool = True,
    seed: int = 0,
    epoch: int = 0,
    spec: StreamSpec | None = None,
    reader: ShardReader | None = None,
    **stream_options: Any,
) -> np.ndarray:
    """``draws`` clip indices from our train stream, every rank × worker slot run in this process.

    Slots are interleaved batch by batch, as DataLoader workers are. By default the label set is
    served labels-only by :class:`ClipLabelsReader`; pass ``spec`` and ``reader`` to read real shards.
    """
    steps_per_epoch = max(1, math.ceil(draws / (ranks * batch_size)))
    shared_epoch = SharedCount(epoch)
    key_index = label_set.key_index()
    iterators = []
    for rank in range(ranks):
        stream = TrainClipStream(
            spec if spec is not None else label_set.stream_spec(),
            rank=rank,
            world_size=ranks,
            options=StreamOptions(
                batch_size=batch_size, steps_per_epoch=steps_per_epoch, balanced=balanced, seed=seed, **stream_options
            ),
            epoch=shared_epoch,
            labels_only=True,
            reader=reader if reader is not None else ClipLabelsReader(label_set),
        )
        iterators += [stream.iter_slot(ReaderSlot(rank, ranks, worker, workers)) for worker in range(workers)]
    drawn: list[int] = []
    while len(drawn) < draws and iterators:
        alive = []
        for iterator in iterators:
            batch = next(iterator, None)
            if batch is None:
                continue
            alive.append(iterator)
            drawn += [key_index[key] for key in batch["key"]]
        iterators = alive
    return np.array(drawn[:draws], dtype=np.int64)


# --------------------------------------------------------------------------- figures


def balance_figures(label_set: ClipLabels, drawn: np.ndarray, batch_size: int) -> dict[str, Any]:
    """The figures of the module docstring for clip indices ``drawn`` (in draw order)."""
    drawn = np.asarray(drawn, dtype=np.int64)
    counts = label_set.class_counts()
    present = counts > 0
    num_present = int(present.sum())
    per_class = np.bincount(_labels_of(label_set, drawn), minlength=label_set.num_classes)
    fair = len(drawn) / max(num_present, 1)
    share = per_class / fair
    distribution = per_class[present] / max(per_class[present].sum(), 1)
    nonzero = distribution > 0
    kl = float(np.sum(distribution[nonzero] * np.log(distribution[nonzero] * num_present)))
    seen = np.zeros(label_set.num_clips, dtype=bool)
    seen[drawn] = True
    covered = np.bincount(_labels_of(label_set, np.flatnonzero(seen)), minlength=label_set.num_classes)
    coverage = covered / np.maximum(counts, 1)
    rare = rarest_decile(counts)
    present_share = share[present]
    min_share = float(present_share.min()) if num_present else 0.0
    return {
        "draws": int(len(drawn)),
        "share": share,
        "per_class": per_class,
        "min_share": min_share,
        "max_min_ratio": float(present_share.max() / min_share) if min_share > 0 else math.inf,
        "kl_uniform": kl,
        "min_count": int(per_class[present].min()) if num_present else 0,
        "coverage": coverage,
        "rare_classes": rare,
        "rare_coverage": float(covered[rare].sum() / max(counts[rare].sum(), 1)),
        "rare_coverage_min": float(coverage[rare].min()) if rare.size else 0.0,
        "batches_with_repeat": batches_with_repeat(drawn, batch_size),
        "repeat_within_1k": repeat_within(drawn, REPEAT_WINDOW),
    }


def rarest_decile(counts: np.ndarray) -> np.ndarray:
    """Indices of the rarest tenth (at least one) of the classes that have clips."""
    present = np.flatnonzero(counts > 0)
    order = present[np.argsort(counts[present], kind="stable")]
    return order[: max(1, math.ceil(0.1 * len(present)))]


def batches_with_repeat(drawn: np.ndarray, batch_size: int) -> float:
    """Fraction of full batches (consecutive ``batch_size`` draws) that hold some clip twice."""
    full = len(drawn) // batch_size
    if full == 0:
        return 0.0
    rows = np.sort(np.asarray(drawn[: full * batch_size]).reshape(full, batch_size), axis=1)
    return float(np.mean(np.any(rows[:, 1:] == rows[:, :-1], axis=1)))


def repeat_within(drawn: np.ndarray, window: int) -> float:
    """Fraction of draws whose clip was also drawn among the previous ``window`` draws."""
    if len(drawn) < 2:
        return 0.0
    order = np.argsort(drawn, kind="stable")
    same = drawn[order][1:] == drawn[order][:-1]
    gaps = order[1:] - order[:-1]
    return float(np.sum(same & (gaps <= window)) / len(drawn))


def draw_gaps(drawn: Sequence[int] | np.ndarray, clips: np.ndarray | None = None) -> np.ndarray:
    """Gaps, in draws, between consecutive draws of the same clip (int64, grouped by clip).

    ``drawn`` holds clip indices (or any integer ids) in draw order; a clip drawn k times adds
    k - 1 gaps, e.g. ``[7, 3, 7, 7]`` gives ``[2, 1]``. ``clips``, when given, keeps only the gaps
    of those clip indices (e.g. the clips of the rarest classes).
    """
    drawn = np.asarray(drawn, dtype=np.int64)
    if len(drawn) < 2:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(drawn, kind="stable")  # positions grouped by clip, ascending within a clip
    ids = drawn[order]
    same = ids[1:] == ids[:-1]
    gaps = (order[1:] - order[:-1])[same]
    if clips is not None:
        gaps = gaps[np.isin(ids[1:][same], np.asarray(clips, dtype=np.int64))]
    return gaps.astype(np.int64)


GAP_PERCENTILES = (5, 25, 50)


def gap_stats(drawn: Sequence[int] | np.ndarray, clips: np.ndarray | None = None) -> dict[str, float]:
    """Summary of :func:`draw_gaps`: how far apart the draws of one clip fall.

    ``count`` (gaps, i.e. draws that repeat an earlier clip), ``clips`` (clips drawn at least
    twice), ``p5`` / ``p25`` / ``median`` (numpy's linear percentiles), ``mean`` and ``min``;
    the statistics are NaN when no clip was drawn twice.
    """
    drawn = np.asarray(drawn, dtype=np.int64)
    gaps = draw_gaps(drawn, clips)
    repeated = drawn if clips is None else drawn[np.isin(drawn, np.asarray(clips, dtype=np.int64))]
    _, draws_per_clip = np.unique(repeated, return_counts=True)
    figures: dict[str, float] = {"count": int(gaps.size), "clips": int(np.sum(draws_per_clip >= 2))}
    if gaps.size == 0:
        figures.update({f"p{q}": math.nan for q in GAP_PERCENTILES if q != 50})
        figures.update({"median": math.nan, "mean": math.nan, "min": math.nan})
        return figures
    for q, value in zip(GAP_PERCENTILES, np.percentile(gaps, GAP_PERCENTILES)):
        figures["median" if q == 50 else f"p{q}"] = float(value)
    figures["mean"] = float(gaps.mean())
    figures["min"] = int(gaps.min())
    return figures


def clips_of_classes(label_set: ClipLabels, classes: np.ndarray) -> np.ndarray:
    """Indices of the clips that carry at least one of ``classes`` (e.g. :func:`rarest_decile`)."""
    clip_of_value = np.repeat(np.arange(label_set.num_clips), np.diff(label_set.offsets))
    return np.unique(clip_of_value[np.isin(label_set.values, np.asarray(classes))])


def _labels_of(label_set: ClipLabels, clips: np.ndarray) -> np.ndarray:
    """All labels of the given clips, concatenated (vectorised CSR gather)."""
    starts = label_set.offsets[clips]
    lengths = label_set.offsets[clips + 1] - starts
    out_starts = np.cumsum(lengths) - lengths
    positions = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - out_starts, lengths)
    return label_set.values[positions]


# --------------------------------------------------------------------------- memory and printing


def rss_mb() -> float:
    """Current resident set size in MB (from /proc; 0 where unavailable)."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (since start or the last :func:`reset_peak_rss`)."""
    value = _proc_status_mb("VmHWM")
    return value if value else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs``), so a later peak belongs to what ran since."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _proc_status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


FIGURE_COLUMNS = (
    ("max/min", "max_min_ratio", "{:.0f}"),
    ("KL to uniform", "kl_uniform", "{:.3f}"),
    ("min count", "min_count", "{:d}"),
    ("min share", "min_share", "{:.2f}"),
    ("rare coverage", "rare_coverage", "{:.2f}"),
    ("rare cov. min", "rare_coverage_min", "{:.2f}"),
    ("batches w/ repeat", "batches_with_repeat", "{:.4f}"),
    ("repeat in 1k", "repeat_within_1k", "{:.3f}"),
)


GAP_COLUMNS = (
    ("repeats", "count", "{:d}"),
    ("clips", "clips", "{:d}"),
    ("min", "min", "{:.0f}"),
    ("p5", "p5", "{:.0f}"),
    ("p25", "p25", "{:.0f}"),
    ("median", "median", "{:.0f}"),
    ("mean", "mean", "{:.0f}"),
)


def format_gaps(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed-width table of :func:`gap_stats` results, one row per name."""
    return _format_table(rows, GAP_COLUMNS)


def format_figures(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed-width table, one row per sampler (name → :func:`balance_figures` result)."""
    return _format_table(rows, FIGURE_COLUMNS)


def _format_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    name_width = max(len("sampler"), *(len(name) for name in rows))
    header = f"{'sampler':<{name_width}}  " + "  ".join(f"{title:>{max(len(title), 7)}}" for title, _, _ in columns)
    lines = [header, "-" * len(header)]
    for name, figures in rows.items():
        cells = []
        for title, field, fmt in columns:
            value = figures[field]
            text = "inf" if isinstance(value, float) and math.isinf(value) else fmt.format(value)
            cells.append(f"{text:>{max(len(title), 7)}}")
        lines.append(f"{name:<{name_width}}  " + "  ".join(cells))
    return "\n".join(lines)

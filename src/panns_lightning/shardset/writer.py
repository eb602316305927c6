"""One shard writer for every dataset: records → stratified tar shards + ``manifest.json``.

Layout and member formats are fixed in :mod:`.format` and ``docs/architecture.md``. The writer
is stratified (each class spread evenly over shards, so a streamed prefix of any shard already
sees rare classes), atomic (``NAME.tar.tmp`` → rename, manifest last) and parallel (a process
pool decodes and encodes; the main process only writes tar members in a fixed order, so output
is reproducible for a given seed).

Hostile input never ends or stalls a conversion: a file that cannot be used is listed in the
manifest's ``skipped`` with its reason (see ``docs/fault_tolerance.md``), and a decoder that kills
its worker process, or hangs past ``decode_timeout``, only costs the clip it was decoding
(:mod:`.decode_pool`). An output directory that already holds
shards is never resumed or added to (see :func:`_prepare_output_dir`).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tarfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
from tqdm.auto import tqdm

from panns_lightning import audio
from panns_lightning.atomic import atomic_open
from panns_lightning.shardset import codec
from panns_lightning.shardset.clip_index import CLIP_INDEX_NAME, ClipIndexBuilder, data_offset_after, write_clip_index
from panns_lightning.shardset.decode_pool import convert_all
from panns_lightning.shardset.format import (
    AUDIO_MEMBER_EXTENSION,
    MANIFEST_NAME,
    RESAMPLE_MANIFEST_KEY,
    SHARD_NAME_FORMAT,
    SHARD_PREFIX,
    SILENT_MANIFEST_KEY,
    STORAGES,
    TEMP_SUFFIX,
    shard_key,
)
from panns_lightning.shardset.manifest import CORE_KEYS, Manifest, ShardInfo, checked_labels, write_manifest
from panns_lightning.shardset.records import ClipRecord, SkippedClip

DEFAULT_DECODE_TIMEOUT = 60.0
"""Seconds one file may take to decode in a worker before it is skipped (``decode_timeout``).

Only the clip's window is read (a 5-hour file costs what a 10 s one does), so a healthy file
takes well under a second; a minute is only reached by a decoder that hangs.
"""

MIN_CLIP_SECONDS = 0.05
"""Source audio shorter than this (50 ms) is skipped as "too short", not padded.

Padding a 1-sample file to 10 s would store 10 s of silence under the clip's labels, teaching
the model that silence is "Dog". 50 ms is under two 32 ms analysis windows of the PANNs front
end: too little to hold a labelled event, so in practice such files are failed downloads or
cuts. Real clips (AudioSet 10 s, ESC-50 5 s, GTZAN 30 s, RAVDESS ~4 s) are far above it, and a
window shorter than the minimum (a tiny ``clip_samples``) lowers the bar to that window.
"""


class OutputNotEmptyError(FileExistsError):
    """The output directory already holds files and ``overwrite`` was not requested."""


class DuplicateKeyError(ValueError):
    """Two records of one conversion carry the same clip key: a reader bug or a source that names one clip twice."""


class NoUsableClipsError(RuntimeError):
    """Every clip failed or was skipped: there is nothing to write."""

    def __init__(self, message: str, skipped: Sequence[SkippedClip]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


def write_shards(
    records: Iterable[ClipRecord],
    out_dir: str | os.PathLike,
    *,
    sample_rate: int,
    clip_samples: int,
    labels: Sequence[Mapping[str, Any]],
    dataset: str,
    split: str,
    storage: str = "int16",
    clips_per_shard: int = 1000,
    min_shards: int = 1,
    num_workers: int | None = None,
    multilabel: bool = True,
    seed: int = 0,
    skipped: Iterable[SkippedClip] = (),
    extra_manifest: Mapping[str, Any] | None = None,
    created_by: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    min_seconds: float = MIN_CLIP_SECONDS,
    finalize: Callable[[Manifest], Mapping[str, Any]] | None = None,
    resample: str = "sinc",
    load_clip: ClipLoader | None = None,
    decode_timeout: float | None = DEFAULT_DECODE_TIMEOUT,
) -> Manifest:
    """Decode ``records`` and write a stratified shard set plus ``manifest.json`` into ``out_dir``.

    ``labels`` is the manifest's label list (``[{"index", "mid", "name"}]``); ``skipped`` carries
    the reader's own skips into the manifest. ``num_shards = max(ceil(n / clips_per_shard),
    min(min_shards, n))``. ``num_workers=0`` decodes in this process; ``None`` uses every core.
    Clips that fail to decode (or are shorter than ``min_seconds``) are skipped and reported;
    silent clips are converted and listed under ``silent_clips``. ``finalize`` may add entries
    computed from the written shards (e.g. a fold index) before the manifest is written, so the
    manifest appears once, complete. ``resample`` (``sinc`` or ``decimate``, see
    :func:`panns_lightning.audio.load_audio`) is recorded as the manifest's ``resample``.
    ``load_clip`` replaces :func:`panns_lightning.audio.load_audio` for clips that are not files
    (rows of an HDF5 file: ``datasets/hdf5_rows.py``); it takes the same arguments, must be
    picklable (a module-level function) and may return int16 samples, stored as they are.
    ``decode_timeout``: a file still decoding after that many seconds has its worker killed and
    is skipped (``decode timed out after N s``); None or 0: no limit. It needs worker processes
    (``num_workers`` >= 1): decoding in this process cannot be interrupted.
    Raises :class:`NoUsableClipsError` (and leaves no manifest) if not a single clip could be
    written, :class:`OutputNotEmptyError` if ``out_dir`` holds files and ``overwrite`` is false.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if sample_rate <= 0 or clip_samples <= 0 or clips_per_shard <= 0:
        raise ValueError(
            f"sample_rate, clip_samples and clips_per_shard must be positive, got {sample_rate}, {clip_samples}, {clips_per_shard}"
        )
    if extra_manifest and set(extra_manifest) & CORE_KEYS:
        raise ValueError(
            f"extra_manifest may not override core manifest keys: {sorted(set(extra_manifest) & CORE_KEYS)}"
        )
    if resample not in audio.RESAMPLE_METHODS:
        raise ValueError(f"resample must be one of {audio.RESAMPLE_METHODS}, got {resample!r}")
    if resample == "decimate":
        audio.decimation_step(sample_rate)
    labels = checked_labels(labels)
    num_classes = len(labels)
    skipped_clips = list(skipped)
    records = _unique_records(records, num_classes, multilabel)
    if not records:
        raise NoUsableClipsError(
            f"no records to convert for {dataset}/{split} ({len(skipped_clips)} skipped by the reader)", skipped_clips
        )

    out_dir = Path(out_dir)
    _prepare_output_dir(out_dir, overwrite)
    num_shards = max(math.ceil(len(records) / clips_per_shard), min(max(min_shards, 1), len(records)))
    plan = plan_shards([r.labels for r in records], num_shards, seed=seed)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers

    tasks = [
        ClipTask(
            position,
            str(records[position].audio_path),
            sample_rate,
            clip_samples,
            storage,
            min_seconds,
            resample,
            load_clip,
            *(records[position].segment or (0.0, None)),
        )
        for shard in plan
        for position in shard
    ]
    shard_infos: list[ShardInfo] = []
    silent: list[str] = []
    index = ClipIndexBuilder()  # where each audio member lies, for random access (clip_index.py)
    bar = tqdm(total=len(tasks), unit="clip", desc=f"{dataset}/{split}", disable=not progress, dynamic_ncols=True)
    try:
        results = convert_all(tasks, convert_clip, _failed_clip, workers=workers, timeout=decode_timeout)
        for shard_positions in plan:
            info = _write_one_shard(
                out_dir,
                len(shard_infos),
                shard_positions,
                results,
                records,
                num_classes,
                skipped_clips,
                silent,
                storage,
                bar,
                index,
            )
            if info is not None:
                shard_infos.append(info)
                index.end_shard((out_dir / info.name).stat().st_size)
    finally:
        bar.close()

    num_clips = sum(info.num_clips for info in shard_infos)
    if num_clips == 0:
        for info in shard_infos:
            (out_dir / info.name).unlink(missing_ok=True)
        raise NoUsableClipsError(f"none of {len(records)} clips of {dataset}/{split} could be decoded", skipped_clips)

    extra = {**(extra_manifest or {}), RESAMPLE_MANIFEST_KEY: resample}
    if silent:
        extra[SILENT_MANIFEST_KEY] = silent
    manifest = Manifest(
        dataset=dataset,
        split=split,
        sample_rate=sample_rate,
        clip_samples=clip_samples,
        storage=storage,
        multilabel=multilabel,
        labels=labels,
        num_clips=num_clips,
        class_counts=[sum(info.class_counts[c] for info in shard_infos) for c in range(num_classes)],
        shards=shard_infos,
        skipped=skipped_clips,
        num_skipped=len(skipped_clips),
        created_by=created_by if created_by is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra=extra,
        root=out_dir,
    )
    if finalize is not None:
        added = dict(finalize(manifest))
        if set(added) & CORE_KEYS:
            raise ValueError(f"finalize may not override core manifest keys: {sorted(set(added) & CORE_KEYS)}")
        manifest.extra.update(added)
    write_clip_index(index.finish(), out_dir)  # before the manifest, which marks the set complete
    write_manifest(manifest)
    return manifest


def plan_shards(label_lists: Sequence[Sequence[int]], num_shards: int, *, seed: int = 0) -> list[list[int]]:
    """Assign clip positions to shards so every class is spread evenly (a greedy stratification).

    Clips are placed rarest label first (random order within a class); each goes to the open
    shard where its labels are least represented, each class weighted by ``1 / its clip count``
    so rare classes dominate the choice, ties broken round-robin. A class with ``n`` clips then
    lands about ``n / S`` times in each of the ``S`` shards, co-occurring head classes included.
    Each shard is shuffled afterwards so streaming it does not see rare classes first.
    """
    rng = np.random.default_rng(seed)
    totals = Counter(c for labels in label_lists for c in set(labels))
    dense = {c: i for i, c in enumerate(sorted(totals))}
    weight = np.array([1.0 / totals[c] for c in sorted(totals)])
    tiebreak = rng.permutation(len(label_lists))

    def rarity(position: int) -> tuple[float, int, int]:
        labels = label_lists[position]
        if not labels:
            return (math.inf, -1, int(tiebreak[position]))
        rarest = min(labels, key=lambda c: (totals[c], c))
        return (totals[rarest], rarest, int(tiebreak[position]))

    capacity = math.ceil(len(label_lists) / num_shards)
    counts = np.zeros((num_shards, len(dense)))
    sizes = np.zeros(num_shards, dtype=np.int64)
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    next_shard = 0
    for position in sorted(range(len(label_lists)), key=rarity):
        columns = sorted({dense[c] for c in label_lists[position]})
        score = counts[:, columns] @ weight[columns] if columns else np.zeros(num_shards)
        score = np.where(sizes < capacity, score, np.inf)
        best = np.flatnonzero(score <= score.min() + 1e-12)
        best = best[sizes[best] == sizes[best].min()]
        chosen = int(best[np.argmin((best - next_shard) % num_shards)])
        next_shard = (chosen + 1) % num_shards
        shards[chosen].append(position)
        sizes[chosen] += 1
        counts[chosen, columns] += 1
    for shard in shards:
        rng.shuffle(shard)
    return [list(map(int, shard)) for shard in shards]


# ---------------------------------------------------------------------------------------------
# helpers


def _unique_records(records: Iterable[ClipRecord], num_classes: int, multilabel: bool) -> list[ClipRecord]:
    """Check label indices and keys before any work; a problem is a reader bug or a source's contradiction: raise.

    Member names are :func:`~.format.shard_key` of the keys, which is injective, so two records
    share a member only when they share a key. Readers give every clip a key of its own (derived
    from its full relative path, extension included, or the dataset's own id) and report
    duplicates of one clip themselves, so a collision here would drop a distinct recording:
    :class:`DuplicateKeyError` names both sources.
    """
    kept: list[ClipRecord] = []
    seen: dict[str, str] = {}
    for record in records:
        bad = [c for c in record.labels if not (isinstance(c, (int, np.integer)) and 0 <= c < num_classes)]
        if bad:
            raise ValueError(f"record {record.key!r}: label indices {bad} outside 0..{num_classes - 1}")
        if not multilabel and len(record.labels) != 1:
            raise ValueError(
                f"record {record.key!r}: single-label dataset needs exactly one label, found {list(record.labels)}"
            )
        member = shard_key(record.key)
        if not member:
            raise ValueError(f"record with source {record.source_text!r} has an empty key")
        if member in seen:
            raise DuplicateKeyError(
                f"two clips have the key {record.key!r}: {seen[member]} and {record.source_text}; "
                "each clip needs a key of its own (nothing was converted)"
            )
        seen[member] = record.source_text
        kept.append(record)
    return kept


def _prepare_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``; then delete the earlier run's files.

    Policy: never resume, never add to an existing shard set. Resuming would need proof that
    the earlier run used the same records, options and code; a wrong guess silently mixes two
    runs' shards, and converting again costs less than a corrupted training set. With
    ``overwrite`` the old manifest goes first (from then on the directory reads as incomplete),
    then every ``shard-*`` and ``*.tmp`` file; other files are left alone.
    """
    check_output_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not any(out_dir.iterdir()):
        return
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for path in out_dir.iterdir():
        if path.is_file() and _is_conversion_file(path.name):
            path.unlink()


def check_output_dir(out_dir: str | os.PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputNotEmptyError` where :func:`write_shards` would refuse ``out_dir``; changes nothing.

    Lets a command that writes several shard sets (``--val-fraction``) refuse before the first.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputNotEmptyError(f"{out_dir} exists and is not a directory; choose another --out")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if entries and not overwrite:
        raise OutputNotEmptyError(_refusal(out_dir, entries))


def _refusal(out_dir: Path, entries: Sequence[str]) -> str:
    """One line saying what ``out_dir`` holds and what to do, for the CLI to print as is."""
    ours = [name for name in entries if _is_conversion_file(name) and name != MANIFEST_NAME]
    if MANIFEST_NAME in entries:
        state = f"already holds a shard set ({MANIFEST_NAME} and {len(ours)} shard files)"
    elif ours:
        state = f"holds an interrupted conversion ({len(ours)} shard/temp files, no {MANIFEST_NAME})"
    else:
        state = f"is not empty ({len(entries)} entries, e.g. {', '.join(entries[:3])})"
    return (
        f"{out_dir} {state}; conversions never resume or add to a directory: "
        "pass --overwrite (overwrite=True) to replace its shards, or choose another --out"
    )


def _is_conversion_file(name: str) -> bool:
    return name.startswith(SHARD_PREFIX) or name.endswith(TEMP_SUFFIX) or name in (MANIFEST_NAME, CLIP_INDEX_NAME)


def _write_one_shard(
    out_dir: Path,
    shard_index: int,
    positions: Sequence[int],
    results: Iterator[ClipResult],
    records: Sequence[ClipRecord],
    num_classes: int,
    skipped: list[SkippedClip],
    silent: list[str],
    storage: str,
    bar: tqdm,
    index: ClipIndexBuilder,
) -> ShardInfo | None:
    """Write one shard from the ordered result stream; ``None`` if every clip in it failed.

    The tar is written as ``NAME.tar.tmp``, fsynced and renamed, so ``NAME.tar`` is always
    complete; pax format so any key (non-ASCII, over 100 bytes) fits (ASCII keys under 100
    bytes get plain ustar headers, byte-identical to ustar).
    """
    name = SHARD_NAME_FORMAT.format(shard_index)
    extension = AUDIO_MEMBER_EXTENSION[storage]
    class_counts = [0] * num_classes
    written = 0
    try:
        with atomic_open(out_dir / name, temp_path=out_dir / (name + TEMP_SUFFIX)) as handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
                for expected in positions:
                    position, payload, error, is_silent = next(results)
                    assert position == expected, "result stream out of order"
                    record = records[position]
                    bar.update(1)
                    if payload is None:
                        skipped.append(SkippedClip(record.key, record.source_text, error or "unknown error"))
                        bar.set_postfix(skipped=len(skipped), refresh=False)
                        continue
                    member = shard_key(record.key)
                    if is_silent:
                        silent.append(member)
                    info = {"labels": [int(c) for c in record.labels], "source": record.source_text, **record.meta}
                    _add_member(tar, f"{member}.{extension}", payload)
                    index.add(shard_index, data_offset_after(tar, len(payload)), len(payload), record.labels, member)
                    _add_member(tar, f"{member}.json", json.dumps(info, sort_keys=False).encode())
                    for c in set(record.labels):
                        class_counts[c] += 1
                    written += 1
            if written == 0:
                raise _EmptyShard  # leaves no file behind: the temporary one is removed
    except _EmptyShard:
        return None
    return ShardInfo(name, written, class_counts)


class _EmptyShard(Exception):
    """Every clip of a shard failed: nothing to rename into place."""


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    # Fixed metadata (mtime 0, no owner) keeps shards byte-identical across runs with one seed.
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(payload))


ClipLoader = Callable[..., np.ndarray]
"""``load(path, target_sr, clip_samples, *, min_seconds, resample_method)``, as :func:`panns_lightning.audio.load_audio`."""


class ClipTask(NamedTuple):
    """One clip for a pool worker (plain values and a module-level function: it is pickled)."""

    position: int
    path: str
    sample_rate: int
    clip_samples: int
    storage: str
    min_seconds: float = MIN_CLIP_SECONDS
    resample: str = "sinc"
    loader: ClipLoader | None = None  # None: audio.load_audio
    start_seconds: float = 0.0
    end_seconds: float | None = None  # None: clip_samples from start_seconds


class ClipResult(NamedTuple):
    """The encoded clip, or ``None`` and the reason it was skipped; ``silent``: all samples round to 0."""

    position: int
    payload: bytes | None
    error: str | None
    silent: bool = False


def _failed_clip(task: ClipTask, reason: str) -> ClipResult:
    """The result of a clip whose worker died or timed out (:mod:`.decode_pool`)."""
    return ClipResult(task.position, None, reason)


def convert_clip(task: ClipTask | tuple) -> ClipResult:
    """Decode one clip and encode it for storage; failures come back as a reason, not an exception."""
    task = ClipTask(*task)
    try:
        window = task.clip_samples
        if task.end_seconds is not None:  # a segment shorter than the clip is read alone, then padded
            segment = (task.end_seconds - task.start_seconds) * task.sample_rate
            window = window if segment >= window else max(1, round(segment))
        if task.loader is not None:  # a row of a packed file (datasets/hdf5_rows.py): whole clips only
            waveform = task.loader(
                task.path, task.sample_rate, window, min_seconds=task.min_seconds, resample_method=task.resample
            )
        else:
            waveform = audio.load_audio(
                task.path,
                task.sample_rate,
                window,
                offset_seconds=task.start_seconds,
                min_seconds=task.min_seconds,
                resample_method=task.resample,
            )
        if window != task.clip_samples:
            waveform = audio.fit_length(waveform, task.clip_samples)
        payload = codec.encode_member(waveform, storage=task.storage, sample_rate=task.sample_rate)
        return ClipResult(task.position, payload, None, is_silent(waveform))
    except audio.AudioDecodeError as error:
        return ClipResult(task.position, None, error.reason)
    except Exception as error:  # a decoder bug on one odd file (or row) must not end a day-long conversion
        return ClipResult(task.position, None, f"{type(error).__name__}: {error}")


def is_silent(waveform: np.ndarray) -> bool:
    """Digital silence: every sample rounds to 0 in int16 storage (peak below about -96 dBFS).

    Silent clips are valid audio (AudioSet has some) and are converted; the manifest lists
    them under ``silent_clips`` so a surprising number of them is visible.
    """
    if waveform.dtype == np.int16:
        return not waveform.any()
    return waveform.size == 0 or float(np.max(np.abs(waveform))) < 0.5 / codec.INT16_SCALE

"""Readers for AudioSet as other projects pack it into HDF5: upstream PANNs and PaSST / EfficientAT.

Layouts (facts from the packing scripts of qiuqiangkong/audioset_tagging_cnn, kkoutini/PaSST
and fschmid56/EfficientAT):

- **Packed waveforms** (upstream ``pack_waveforms_to_hdf5``): ``audio_name`` (``S20``,
  ``b"Y{ytid}.wav"``), ``waveform`` int16 ``[N, clip_samples]`` (``x * 32767``, 320000 at
  32 kHz), ``target`` bool ``[N, 527]``, attribute ``sample_rate``. A row is allocated for
  every CSV row; a clip that was not downloaded leaves its row empty (``audio_name`` ``b""``,
  target all zero).
- **Index files** (upstream ``create_indexes`` / ``combine_full_indexes``, e.g.
  ``indexes/full_train.h5``): ``audio_name``, ``target``, ``hdf5_path`` (``S200``, the packed
  file's path as given to the packing script, often relative to where it ran) and
  ``index_in_hdf5`` (int32 row). Paths that no longer exist are looked up under the search
  folders by their trailing components (``waveforms/unbalanced_train/x.h5``, then shorter).
- **mp3 packing** (PaSST ``create_h5pymp3_dataset``, also read by EfficientAT):
  ``audio_name`` (``S20``, ``b"Y{ytid}.mp3"``, ``b"NN/Y{ytid}.mp3"`` for unbalanced parts),
  ``mp3`` (variable-length uint8: the file's bytes, 32 kHz mp3) and ``target`` as
  ``np.packbits`` of the 527 flags (uint8 ``[N, 66]``); bool/float ``[N, 527]`` targets are
  accepted too.

The readers only read names and targets (in chunks, so a 2 M-row index costs little memory)
and return records whose ``audio_path`` is a row location; the shard writer loads the audio row
by row (``hdf5_rows``). Unusable rows are skipped with their reason, as in ``audioset.py``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from panns_lightning.datasets import hdf5_rows
from panns_lightning.labels import LabelSet
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip

CHUNK_ROWS = 4096
"""Rows of names and targets read at a time."""
MIN_ROW_SECONDS = 0.05
"""A packed file whose rows are shorter holds no clip (``shardset.writer.MIN_CLIP_SECONDS``, 50 ms)."""

Classes = tuple[int, ...] | str
"""A row's class indices, or why its target row is not a label set."""

_YOUTUBE_NAME = re.compile(r"^Y([A-Za-z0-9_-]{11})$")
EMPTY_NAME_REASON = "empty audio_name (the packer leaves the row of a clip it could not load empty)"
NO_LABEL_REASON = "no label (all-zero target row)"
NO_NAME_KEY = "(no name)"  # the skip entry's key for a row without audio_name


@dataclass
class Hdf5Import:
    """What a reader found: records (``audio_path`` = row location), the loader the writer calls on them."""

    result: ReaderResult
    load_clip: Callable[..., np.ndarray]
    clip_seconds: float | None = None
    """The packed rows' own length in seconds when every file agrees (``None``: mp3, or mixed)."""
    packed_files: list[str] = field(default_factory=list)


def clip_key(audio_name: str) -> str:
    """``Y--PJHxphWEs.wav`` or ``03/Y--PJHxphWEs.mp3`` → ``--PJHxphWEs`` (the YTID, as ``panns-prepare audioset`` keys clips).

    Upstream's downloader prefixes every YTID with ``Y``; a name not of that shape is its own key,
    whole (``a.b.wav`` and ``a.b.flac`` stay two clips; ``.`` is a key too). Two rows of one YTID
    are one clip: the reader keeps the first and reports the others.
    """
    stem = audio_name.rsplit("/", 1)[-1]
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    match = _YOUTUBE_NAME.match(stem)
    return match.group(1) if match else audio_name


def read_packed_hdf5(
    paths: Sequence[str | os.PathLike],
    labels: LabelSet,
    *,
    waveform_dir: Sequence[str | os.PathLike] | None = None,
    progress: bool = False,
) -> Hdf5Import:
    """Records of upstream's packed waveform files and index files (each file's kind is detected).

    ``waveform_dir``: folders searched for the packed files an index names (``--waveform-dir``).
    """
    waveform_dirs = list(waveform_dir or ())
    h5py = hdf5_rows.require_h5py()
    result = ReaderResult()
    packed: dict[Path, _PackedFile | str] = {}  # a file that cannot be used maps to the reason
    resolved_of: dict[str, Path | None] = {}  # hdf5_path as written → the file found (one lookup each)
    first_of: dict[str, str] = {}  # clip key → where it was first seen
    for path in map(Path, paths):
        with _open(h5py, path) as handle:
            kind = _layout(handle, path, expected="packed")
            if kind == "packed":
                info = _packed_or_reason(handle, path)
                packed[path.resolve()] = info
                for row, name, classes in _scan(handle, path, labels, progress):
                    source = f"{path.name}:{row}"
                    if _usable(name, classes, source, result, first_of):
                        if isinstance(info, str):
                            result.skipped.append(SkippedClip(clip_key(name), source, info))
                            continue
                        result.records.append(_record(name, classes, info.path, row, source))
                continue
            for row, name, classes, target_path, index in _scan_index(handle, path, labels, progress):
                where = f"{path.name}:{row}"
                if not _usable(name, classes, where, result, first_of):
                    continue
                try:
                    if target_path not in resolved_of:
                        resolved_of[target_path] = _resolve_packed(target_path, path, waveform_dirs)
                    resolved = resolved_of[target_path]
                    if resolved is not None and resolved not in packed:
                        packed[resolved] = _referenced_file(h5py, resolved)
                    problem = _index_problem(packed.get(resolved), target_path, index, name, waveform_dirs, path)
                except Exception as error:  # an odd hdf5_path (a NUL byte, 10 kB long): this row only
                    problem = f"unreadable index row: {type(error).__name__}: {error}"
                if problem:
                    result.skipped.append(SkippedClip(clip_key(name), where, problem))
                    continue
                assert resolved is not None
                result.records.append(_record(name, classes, resolved, index, f"{resolved.name}:{index}"))
    files = [info for info in packed.values() if isinstance(info, _PackedFile)]
    lengths = {info.width / info.sample_rate for info in files}
    return Hdf5Import(
        result,
        hdf5_rows.load_waveform_row,
        clip_seconds=lengths.pop() if len(lengths) == 1 else None,
        packed_files=[str(info.path) for info in files],
    )


def read_mp3_hdf5(paths: Sequence[str | os.PathLike], labels: LabelSet, *, progress: bool = False) -> Hdf5Import:
    """Records of PaSST / EfficientAT mp3 HDF5 files; the mp3 bytes are decoded by the shard writer."""
    h5py = hdf5_rows.require_h5py()
    result = ReaderResult()
    first_of: dict[str, str] = {}
    for path in map(Path, paths):
        with _open(h5py, path) as handle:
            _layout(handle, path, expected="mp3")
            _check_rows(handle, path, ("audio_name", "target", "mp3"))
            mp3 = handle["mp3"]
            if mp3.ndim != 1 or h5py.check_vlen_dtype(mp3.dtype) != np.dtype(np.uint8):
                raise ValueError(
                    f"{path}: dataset 'mp3' must hold variable-length uint8 arrays (the mp3 files' bytes), "
                    f"found dtype {mp3.dtype} with shape {mp3.shape}"
                )
            for row, name, classes in _scan(handle, path, labels, progress):
                source = f"{path.name}:{row}"
                if _usable(name, classes, source, result, first_of):
                    result.records.append(_record(name, classes, path.resolve(), row, source))
    return Hdf5Import(result, hdf5_rows.load_mp3_row)


def split_name(paths: Sequence[str | os.PathLike]) -> str:
    """The manifest's split from the file names: ``balanced_train.h5`` → ``balanced_train``,
    ``balanced_train_segments_mp3.hdf`` → ``balanced_train``, ``unbalanced_train_part{00..40}.h5`` → ``unbalanced_train``.
    """
    stems = [re.sub(r"(_segments)?(_mp3)?$", "", Path(p).stem) for p in paths]
    common = os.path.commonprefix(stems) if len(set(stems)) > 1 else stems[0]
    return re.sub(r"(_part)?[_0-9]*$", "", common) or "train"


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _PackedFile:
    path: Path
    names: np.ndarray  # the file's audio_name column, to check index rows against
    width: int
    sample_rate: int


def _open(h5py: Any, path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: HDF5 file not found")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error})") from error


def _layout(handle: Any, path: Path, *, expected: str) -> str:
    """``packed`` (waveform rows) or ``index`` (rows pointing into packed files); ``ValueError`` for anything else."""
    keys = set(handle.keys())
    if "waveform" in keys and expected in ("packed", "waveforms"):
        _check_rows(handle, path, ("audio_name", "target", "waveform"))
        return "packed"
    if {"hdf5_path", "index_in_hdf5"} <= keys and expected == "packed":
        _check_rows(handle, path, ("audio_name", "target", "hdf5_path", "index_in_hdf5"))
        return "index"
    if "mp3" in keys and expected == "mp3":
        return "mp3"
    wanted = {
        "packed": "'audio_name', 'target' and 'waveform' (upstream's packed waveforms) or 'hdf5_path' and "
        "'index_in_hdf5' (an index file)",
        "waveforms": "'audio_name', 'target' and 'waveform' (an index file's hdf5_path must name packed waveforms)",
        "mp3": "'audio_name', 'target' and 'mp3' (PaSST / EfficientAT's mp3 packing)",
    }[expected]
    hint = ""
    if "mp3" in keys and expected != "mp3":
        hint = "; this is an mp3 packing: use panns-prepare audioset-mp3-hdf5"
    elif "waveform" in keys and expected == "mp3":
        hint = "; this is upstream's packed waveforms: use panns-prepare audioset-hdf5"
    raise ValueError(f"{path}: expected datasets {wanted}, found {sorted(keys)}{hint}")


def _check_rows(handle: Any, path: Path, names: Sequence[str]) -> None:
    missing = [name for name in names if name not in handle]
    if missing:
        raise ValueError(f"{path}: missing dataset(s) {missing}; found {sorted(handle.keys())}")
    groups = [name for name in names if not hasattr(handle[name], "shape")]
    if groups:
        raise ValueError(f"{path}: {', '.join(repr(n) for n in groups)} must be dataset(s), found group(s)")
    rows = {name: handle[name].shape[0] if handle[name].ndim else None for name in names}
    if len(set(rows.values())) != 1:
        raise ValueError(f"{path}: datasets must have one row per clip, found rows {rows}")
    if handle["target"].ndim != 2:
        raise ValueError(f"{path}: dataset 'target' must be [clips, classes], found shape {handle['target'].shape}")
    waveform = handle.get("waveform")
    if waveform is not None and (waveform.ndim != 2 or waveform.dtype != np.int16):
        raise ValueError(
            f"{path}: dataset 'waveform' must be int16 [clips, samples] (upstream's x * 32767), "
            f"found {waveform.dtype} {waveform.shape}"
        )


def _packed_file(handle: Any, path: Path) -> _PackedFile:
    """The file's names, row length and rate; ``ValueError`` if its rows cannot be clips (a bad rate, 0 samples)."""
    rate = hdf5_rows.file_sample_rate(handle)
    width = int(handle["waveform"].shape[1])
    if width < math.ceil(MIN_ROW_SECONDS * rate):
        raise ValueError(
            f"{path}: its waveform rows hold {width} samples ({1000 * width / rate:g} ms at {rate} Hz), "
            f"less than {1000 * MIN_ROW_SECONDS:g} ms: no clip to convert (padding would store labelled silence)"
        )
    names = np.asarray(handle["audio_name"][:])
    return _PackedFile(path.resolve(), names, width, rate)


def _packed_or_reason(handle: Any, path: Path) -> _PackedFile | str:
    """A packed file given directly: its info, or why its rows are skipped (the other files still convert)."""
    try:
        return _packed_file(handle, path)
    except ValueError as error:
        return f"packed file unusable: {error}"


def _referenced_file(h5py: Any, path: Path) -> _PackedFile | str:
    """A packed file an index points into, or why it cannot be read (its rows are skipped, the rest goes on)."""
    try:
        with _open(h5py, path) as handle:
            _layout(handle, path, expected="waveforms")
            return _packed_file(handle, path)
    except (OSError, ValueError) as error:
        return f"packed file unusable: {error}"


def _scan(handle: Any, path: Path, labels: LabelSet, progress: bool) -> Iterator[tuple[int, str, Classes]]:
    """``(row, audio_name, class indices or why not)`` for every row, reading ``CHUNK_ROWS`` at a time."""
    for start, names, classes in _chunks(handle, path, labels, progress):
        for offset, (name, row_classes) in enumerate(zip(names, classes)):
            yield start + offset, name, row_classes


def _scan_index(
    handle: Any, path: Path, labels: LabelSet, progress: bool
) -> Iterator[tuple[int, str, Classes, str, int]]:
    """Index rows: ``(row, audio_name, class indices or why not, hdf5_path, index_in_hdf5)``."""
    for start, names, classes in _chunks(handle, path, labels, progress):
        stop = start + len(names)
        try:
            targets = [_text(value) for value in handle["hdf5_path"][start:stop]]
            indices = [int(i) for i in np.asarray(handle["index_in_hdf5"][start:stop]).astype(np.int64)]
        except Exception:  # a damaged chunk: row by row, so only the bad rows are lost
            targets, indices = [], []
            for row in range(start, stop):
                try:
                    targets.append(_text(handle["hdf5_path"][row]))
                    indices.append(int(np.asarray(handle["index_in_hdf5"][row]).astype(np.int64)))
                except Exception as error:
                    targets.append("")
                    indices.append(-1)
                    classes[row - start] = f"unreadable index row: {type(error).__name__}: {error}"
        for offset in range(len(names)):
            yield start + offset, names[offset], classes[offset], targets[offset], indices[offset]


def _chunks(
    handle: Any, path: Path, labels: LabelSet, progress: bool
) -> Iterator[tuple[int, list[str], list[Classes]]]:
    total = handle["audio_name"].shape[0]
    _check_target_width(handle["target"], len(labels), path)
    with tqdm(total=total, unit="row", desc=f"reading {path.name}", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, total, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, total)
            try:
                names = [_text(value) for value in handle["audio_name"][start:stop]]
                classes = _classes(np.asarray(handle["target"][start:stop]), len(labels))
            except Exception:  # a damaged chunk: read its rows one by one, so only the bad ones are lost
                names, classes = _rows_one_by_one(handle, start, stop, len(labels))
            yield start, names, classes
            bar.update(stop - start)


def _rows_one_by_one(handle: Any, start: int, stop: int, num_classes: int) -> tuple[list[str], list[Classes]]:
    names: list[str] = []
    classes: list[Classes] = []
    for row in range(start, stop):
        try:
            name = _text(handle["audio_name"][row])
        except Exception as error:
            name = ""
            classes.append(f"unreadable audio_name: {type(error).__name__}: {error}")
        else:
            try:
                classes.append(_classes(np.asarray(handle["target"][row : row + 1]), num_classes)[0])
            except Exception as error:
                classes.append(f"unreadable target row: {type(error).__name__}: {error}")
        names.append(name)
    return names, classes


def _check_target_width(target: Any, num_classes: int, path: Path) -> None:
    packed_width = math.ceil(num_classes / 8)
    width = target.shape[1]
    if width == num_classes or (width == packed_width and target.dtype == np.uint8):
        return
    raise ValueError(
        f"{path}: dataset 'target' has {width} columns, but the label CSV has {num_classes} classes "
        f"(expected [clips, {num_classes}] flags, or [clips, {packed_width}] uint8 from np.packbits)"
    )


def _classes(target: np.ndarray, num_classes: int) -> list[Classes]:
    """Class indices per row of a target chunk (multi-hot ``[rows, C]`` or packed bits ``[rows, ceil(C / 8)]``).

    A multi-hot row holding anything but 0 and 1 (``-1``, ``2``, NaN, 0.5) is not a label set:
    it gets a reason instead of indices, and is skipped (reading -1 as "present" would invent labels).
    """
    if target.shape[1] != num_classes:  # _check_target_width let only packed bits through
        target = np.unpackbits(target, axis=1, count=num_classes)
        bad = np.zeros(target.shape[0], dtype=bool)
    elif target.dtype == np.bool_:
        bad = np.zeros(target.shape[0], dtype=bool)
    else:
        bad = ~((target == 0) | (target == 1)).all(axis=1)
    rows, columns = np.nonzero(np.where(bad[:, None], 0, target))
    bounds = np.searchsorted(rows, np.arange(target.shape[0] + 1))
    return [
        _bad_target(target[i]) if bad[i] else tuple(int(c) for c in columns[bounds[i] : bounds[i + 1]])
        for i in range(target.shape[0])
    ]


def _bad_target(row: np.ndarray) -> str:
    column = int(np.flatnonzero(~((row == 0) | (row == 1)))[0])
    return f"target row holds {row[column].item()!r} at column {column}; expected multi-hot flags (0 or 1)"


def _text(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value).rstrip("\x00").strip()


def _usable(name: str, classes: Classes, source: str, result: ReaderResult, first_of: dict[str, str]) -> bool:
    """Whether a row can be a clip; if not, it is reported. The first row of a clip key wins."""
    key = clip_key(name) if name else NO_NAME_KEY
    if isinstance(classes, str):
        reason: str | None = classes
    elif not name:
        reason = EMPTY_NAME_REASON
    elif not classes:
        reason = NO_LABEL_REASON
    elif key in first_of:
        reason = f"duplicate of {first_of[key]} (the same clip key {key!r})"
    else:
        first_of[key], reason = source, None
    if reason:
        result.skipped.append(SkippedClip(key, source, reason))
    return reason is None


def _record(name: str, classes: tuple[int, ...], path: Path, row: int, source: str) -> ClipRecord:
    return ClipRecord(
        key=clip_key(name),
        audio_path=hdf5_rows.row_location(path, row),
        labels=classes,
        meta={"audio_name": name},
        source=source,
    )


def _resolve_packed(text: str, index_file: Path, waveform_dirs: Sequence[str | os.PathLike]) -> Path | None:
    """The packed file an index row names: as written, beside the index, or by its trailing path components."""
    written = Path(text)
    candidates = [written, index_file.parent / written] if not written.is_absolute() else [written]
    roots = [Path(d) for d in waveform_dirs] + list(index_file.resolve().parents)[:3]
    parts = [p for p in written.parts if p not in (".", "/", written.anchor)]
    for depth in range(len(parts), 0, -1):
        candidates += [root / Path(*parts[-depth:]) for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


def _index_problem(
    packed: _PackedFile | str | None,
    written: str,
    index: int,
    name: str,
    waveform_dirs: Sequence[str | os.PathLike],
    index_file: Path,
) -> str | None:
    """Why an index row cannot be read from its packed file (``None`` if it can)."""
    if packed is None:
        searched = ", ".join(str(d) for d in [*waveform_dirs, index_file.parent]) or "."
        return f"packed file not found: {written} (looked there, beside the index and by its trailing path under {searched}; see --waveform-dir)"
    if isinstance(packed, str):
        return packed
    if not 0 <= index < len(packed.names):
        return f"index_in_hdf5 {index} outside the {len(packed.names)} rows of {packed.path.name}"
    stored = _text(packed.names[index])
    if stored != name:
        return f"audio_name differs: the index says {name!r}, row {index} of {packed.path.name} holds {stored!r}"
    return None

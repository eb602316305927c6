"""``panns-prepare csv``: a CSV listing audio files and their labels → records for ONE shard set.

One row per clip with its file and label(s); the header names the columns. Several labels in one
cell (``"dog,bark"``, split on ``label_separator``) make the set multi-label. Optional columns:
``fold`` (integers 1..k: cross-validation), ``split`` (train / val / test), ``start`` / ``end``
(seconds: only that part of the file is the clip).

Two kinds of bad row, two answers:

- **A wrong value** (unknown split, non-integer fold, ``end <= start``, an empty label) is an
  error naming the CSV, line and column, all such rows listed: converting around it would
  silently change the dataset's split or labels. So is a header naming one column twice
  (``csv.DictReader`` would silently keep the last).
- **A row that cannot be a clip** costs that row only, reported in the manifest's ``skipped``:
  a file that does not exist, a segment shorter than ``min_segment_seconds`` (padding 10 µs to
  a 10 s clip would store labelled silence), a time beyond :data:`MAX_TIME_SECONDS`, a cell over
  the CSV module's 128 KiB field limit, or anything else that fails while reading that row.
  Files that do not decode are skipped by the shard writer, with their reason.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from panns_lightning.datasets.csv_lines import BoundedLines, holds_too_long
from panns_lightning.datasets.custom import CustomDataset, clip_key_of
from panns_lightning.shardset.folds import FOLD_FIELD, label_entries
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip
from panns_lightning.shardset.splits import SPLIT_FIELD, SPLIT_NAMES, SPLIT_SYNONYMS, normalise_split

FILE_COLUMNS = ("filename", "file", "path", "audio", "fname")
LABEL_COLUMNS = ("labels", "label", "class", "category", "tags")
DEFAULT_MIN_SEGMENT_SECONDS = 0.05
"""A ``start``/``end`` segment shorter than this (50 ms) is skipped: the shard writer's minimum clip length."""
MAX_TIME_SECONDS = 1e7
"""``start``/``end`` above this (about 116 days) is no time in a recording: the row is skipped."""
UNREADABLE_ROW_KEY = "(unreadable row)"
_MAX_ROW_ERRORS = 20


@dataclass
class _Row:
    line: int
    path: Path
    relative: str
    labels: list[str]
    fold: int | None
    split: str | None
    segment: tuple[float, float | None] | None


def read_csv_table(
    csv_path: str | os.PathLike,
    *,
    audio_dir: str | os.PathLike | None = None,
    file_column: str | None = None,
    label_column: str | None = None,
    label_separator: str = ",",
    fold_column: str | None = None,
    split_column: str | None = None,
    start_column: str | None = None,
    end_column: str | None = None,
    min_segment_seconds: float = DEFAULT_MIN_SEGMENT_SECONDS,
    name: str | None = None,
) -> CustomDataset:
    """Records for the rows of ``csv_path`` (files relative to ``audio_dir``, default: the CSV's folder).

    ``file_column`` / ``label_column`` default to the first header among :data:`FILE_COLUMNS` /
    :data:`LABEL_COLUMNS`; the optional columns default to ``fold``, ``split``, ``start`` and
    ``end``, used when the header has them (a column named explicitly must exist).
    ``label_separator`` splits a cell into several labels (``""``: never split).
    ``min_segment_seconds``: shorter ``start``/``end`` segments are skipped (0: none are).
    Raises ``ValueError`` naming the CSV (and line, column) for a missing or repeated column, a
    header with both a fold and a split column, or bad values (all of them listed, up to 20).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"--csv {csv_path} not found")
    audio_dir = Path(audio_dir) if audio_dir is not None else csv_path.parent
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"--audio-dir {audio_dir} is not a directory")
    if not (math.isfinite(min_segment_seconds) and min_segment_seconds >= 0):
        raise ValueError(f"--min-segment-seconds must be >= 0, got {min_segment_seconds}")
    result = ReaderResult()
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(BoundedLines(handle), dialect=dialect)
        try:
            header = [h.strip() for h in reader.fieldnames or []]
        except csv.Error as error:
            raise ValueError(f"{csv_path}: unreadable header ({error})") from None
        _check_header(csv_path, header)
        reader.fieldnames = header
        file_col, label_col = _columns(csv_path, header, file_column, label_column)
        fold_col, split_col, start_col, end_col = (
            _optional_column(csv_path, header, given, default)
            for given, default in (
                (fold_column, "fold"),
                (split_column, "split"),
                (start_column, "start"),
                (end_column, "end"),
            )
        )
        if fold_col and split_col:
            raise ValueError(
                f"{csv_path}: has both a {fold_col!r} and a {split_col!r} column; a set is cross-validated (folds) "
                "or split into train / val / test, not both: drop one of the columns"
            )
        columns = (file_col, label_col, label_separator, fold_col, split_col, start_col, end_col)
        rows, errors = _read_rows(reader, csv_path, audio_dir, columns, result)
    if errors:
        shown = "\n  ".join(errors[:_MAX_ROW_ERRORS])
        more = f"\n  ... and {len(errors) - _MAX_ROW_ERRORS} more" if len(errors) > _MAX_ROW_ERRORS else ""
        raise ValueError(f"{csv_path}: {len(errors)} bad value(s); fix them and convert again:\n  {shown}{more}")
    if not rows and not result.skipped:
        raise ValueError(f"{csv_path}: no rows below the header")
    if fold_col:
        _check_folds(csv_path, fold_col, [row.fold for row in rows if row.fold is not None])

    names = sorted({label for row in rows for label in row.labels})
    index_of = {label: i for i, label in enumerate(names)}
    first_line: dict[tuple[str, tuple[float, float | None] | None], int] = {}
    for row in rows:
        source = f"{csv_path.name}:{row.line}"
        key = clip_key_of(row.relative, row.segment)
        try:
            reason = _segment_problem(row.segment, min_segment_seconds)
            identity = (str(row.path.resolve()), row.segment)
            if reason is None and identity in first_line:
                reason = f"duplicate of line {first_line[identity]} (same file and segment)"
            if reason is None:
                first_line[identity] = row.line
                if not row.path.is_file():
                    reason = f"audio file not found: {row.path}"
        except Exception as error:  # a path the OS refuses (a NUL byte, too long, a symlink loop): this row only
            reason = f"unusable file name: {type(error).__name__}: {error}"
        if reason is not None:
            result.skipped.append(SkippedClip(key, source, reason))
            continue
        result.records.append(_record(row, key, index_of))
    return _dataset(csv_path, audio_dir, name, result, names, rows, columns)


def _read_rows(
    reader: csv.DictReader, csv_path: Path, audio_dir: Path, columns: tuple, result: ReaderResult
) -> tuple[list[_Row], list[str]]:
    """Parsed rows and the bad values found; a row the csv module cannot read is skipped (in ``result``)."""
    rows: list[_Row] = []
    errors: list[str] = []
    iterator = iter(reader)
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            break
        except csv.Error as error:  # e.g. a cell over the 128 KiB field limit: that row only
            where = f"{csv_path.name}:{reader.line_num + 1}"  # the line that failed is not counted yet
            result.skipped.append(SkippedClip(UNREADABLE_ROW_KEY, where, f"unreadable CSV row: {error}"))
            continue
        line = reader.line_num
        if holds_too_long(raw):
            result.skipped.append(SkippedClip(UNREADABLE_ROW_KEY, f"{csv_path.name}:{line}", "line over 1 MiB"))
            continue
        try:
            row, problems = _parse_row(raw, line, audio_dir, *columns)
        except Exception as error:  # whatever else a hostile row holds costs that row only
            where = f"{csv_path.name}:{line}"
            result.skipped.append(
                SkippedClip(UNREADABLE_ROW_KEY, where, f"unreadable row: {type(error).__name__}: {error}")
            )
            continue
        errors += [f"line {line}, {problem}" for problem in problems]
        if row is not None and not problems:
            rows.append(row)
    return rows, errors


def _check_header(csv_path: Path, header: list[str]) -> None:
    """A column named twice would be read as the last one only (``csv.DictReader``): refuse it."""
    repeated = [name for name, count in Counter(h for h in header if h).items() if count > 1]
    if repeated:
        where = ", ".join(str(i + 1) for i, h in enumerate(header) if h == repeated[0])
        raise ValueError(
            f"{csv_path}: the header names column {repeated[0]!r} more than once (columns {where}); "
            "rename or drop the extra one"
        )


def _segment_problem(segment: tuple[float, float | None] | None, min_seconds: float) -> str | None:
    if segment is None:
        return None
    start, end = segment
    for label, value in (("start", start), ("end", end)):
        if value is not None and value > MAX_TIME_SECONDS:
            return f"{label} {value:g} s is beyond any recording (at most {MAX_TIME_SECONDS:g} s)"
    if end is not None and end - start < min_seconds:
        return (
            f"segment of {1000 * (end - start):g} ms is shorter than {1000 * min_seconds:g} ms "
            "(--min-segment-seconds): padding it would store silence under its labels"
        )
    return None


def _record(row: _Row, key: str, index_of: dict[str, int]) -> ClipRecord:
    meta: dict[str, Any] = {}
    if row.fold is not None:
        meta[FOLD_FIELD] = row.fold
    if row.split is not None:
        meta[SPLIT_FIELD] = row.split
    if row.segment is not None:
        meta["start"], meta["end"] = row.segment
    labels = tuple(sorted({index_of[label] for label in row.labels}))
    return ClipRecord(key, row.path, labels, meta=meta, source=row.relative, segment=row.segment)


def _dataset(
    csv_path: Path,
    audio_dir: Path,
    name: str | None,
    result: ReaderResult,
    names: list[str],
    rows: list[_Row],
    columns: tuple,
) -> CustomDataset:
    file_col, label_col, label_separator, fold_col, split_col, start_col, end_col = columns
    used_columns = {
        "file": file_col,
        "labels": label_col,
        "label_separator": label_separator,
        **{k: v for k, v in (("fold", fold_col), ("split", split_col), ("start", start_col), ("end", end_col)) if v},
    }
    partition = "folds" if fold_col else "splits" if split_col else None
    return CustomDataset(
        dataset=name or csv_path.stem,
        result=result,
        labels=label_entries(names),
        multilabel=any(len(row.labels) > 1 for row in rows),
        partition=partition,
        layout={"layout": "csv", "csv": str(csv_path), "audio_dir": str(audio_dir), "columns": used_columns},
        num_folds=max((row.fold or 0 for row in rows), default=0) or None,
        description=f"folds from the CSV column {fold_col!r}"
        if fold_col
        else f"splits from the CSV column {split_col!r}"
        if split_col
        else "",
    )


def _columns(csv_path: Path, header: list[str], file_column: str | None, label_column: str | None) -> tuple[str, str]:
    chosen = []
    for flag, given, defaults in (
        ("--file-column", file_column, FILE_COLUMNS),
        ("--label-column", label_column, LABEL_COLUMNS),
    ):
        if given is not None and given not in header:
            raise ValueError(f"{csv_path}: no column {given!r} ({flag}); the header has {', '.join(header)}")
        column = given if given is not None else next((c for c in defaults if c in header), None)
        if column is None:
            raise ValueError(
                f"{csv_path}: no {flag[2:].replace('-column', '')} column; the header has {', '.join(header) or 'nothing'}: "
                f"name one of {', '.join(defaults)} or pass {flag}"
            )
        chosen.append(column)
    return chosen[0], chosen[1]


def _optional_column(csv_path: Path, header: list[str], given: str | None, default: str) -> str | None:
    if given is None:
        return default if default in header else None
    if given not in header:
        raise ValueError(f"{csv_path}: no column {given!r} (--{default}-column); the header has {', '.join(header)}")
    return given


def _parse_row(
    raw: dict[str, Any],
    line: int,
    audio_dir: Path,
    file_col: str,
    label_col: str,
    separator: str,
    fold_col: str | None,
    split_col: str | None,
    start_col: str | None,
    end_col: str | None,
) -> tuple[_Row | None, list[str]]:
    """One row checked: the row, or the problems found, each naming the column."""

    def cell(column: str | None) -> str:
        value = raw.get(column) if column else None
        return value.strip() if isinstance(value, str) else ""

    problems: list[str] = []
    filename = cell(file_col)
    if not filename:
        problems.append(f"column {file_col!r}: empty (every row needs an audio file)")
    text = cell(label_col)
    labels = [part.strip() for part in (text.split(separator) if separator else [text])]
    labels = list(dict.fromkeys(label for label in labels if label))
    if not labels:
        problems.append(f"column {label_col!r}: no label")
    fold = None
    if fold_col:
        try:
            fold = int(cell(fold_col))
            if fold < 1:
                raise ValueError
        except ValueError:
            problems.append(f"column {fold_col!r}: {cell(fold_col)!r} is not a fold number (an integer 1, 2, ...)")
    split = None
    if split_col:
        split = normalise_split(cell(split_col))
        if split is None:
            problems.append(
                f"column {split_col!r}: {cell(split_col)!r} is not a split (train, val or test; also accepted: "
                f"{', '.join(k for k in SPLIT_SYNONYMS if k not in SPLIT_NAMES)})"
            )
    segment = None
    start, end = _seconds(cell(start_col), start_col, problems), _seconds(cell(end_col), end_col, problems)
    if start is not None or end is not None:
        if start is not None and end is not None and end <= start:
            problems.append(f"columns {start_col!r}/{end_col!r}: end {end:g} s is not after start {start:g} s")
        segment = (start or 0.0, end)
    if problems:
        return None, problems
    path = Path(filename)
    if not path.is_absolute():
        path = audio_dir / path
    try:
        relative = path.relative_to(audio_dir).as_posix()
    except ValueError:
        relative = path.as_posix()
    return _Row(line, path, relative, labels, fold, split, segment), []


def _seconds(text: str, column: str | None, problems: list[str]) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        problems.append(f"column {column!r}: {text!r} is not a time in seconds (a number >= 0)")
        return None
    return value


def _check_folds(csv_path: Path, column: str, folds: Sequence[int]) -> None:
    present = sorted(set(folds))
    if present != list(range(1, len(present) + 1)) or len(present) < 2:
        raise ValueError(
            f"{csv_path}: column {column!r} holds folds {present}; cross-validation needs folds numbered 1..k "
            "with k >= 2 and none empty (renumber them)"
        )

"""Your own data: a folder per class, or a CSV listing files and labels → records for ONE shard set.

Two readers, for ``panns-prepare folder`` and ``panns-prepare csv``:

- :func:`read_folder`: ``ROOT/<class>/**/<file>`` (any depth below a class folder), or, when
  ROOT's folders are split names, ``ROOT/<train|val|test>/<class>/**/<file>``. Single-label.
- :func:`read_csv_table`: one row per clip with its file and label(s); the header names the
  columns. Several labels in one cell (``"dog,bark"``, split on ``label_separator``) make the
  set multi-label. Optional columns: ``fold`` (integers 1..k: cross-validation), ``split``
  (train / val / test), ``start`` / ``end`` (seconds: only that part of the file is the clip).

A row whose values are wrong (unknown split, non-integer fold, ``end <= start``, an empty label)
is an error naming the CSV, line and column: converting around it would silently change the
dataset. A file that does not exist is reported as skipped (with the row), as the official
converters do; a file that does not decode is skipped by the shard writer, with its reason.

What the set is partitioned by is decided here (:func:`partition`): the folds or splits the source
gives; else, at conversion, ``num_folds`` stratified folds or a stratified train / val / test
hold-out (``val_fraction`` / ``test_fraction``, iterative stratification for multi-label clips,
seeded), so every training run reads the same split from the manifest.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from panns_lightning.datasets.holdout import METHOD as HOLDOUT_METHOD
from panns_lightning.datasets.holdout import check_fraction, split_records
from panns_lightning.shardset.folds import (
    FOLD_FIELD,
    fold_index,
    label_entries,
    stratified_folds,
)
from panns_lightning.shardset.folds import (
    MANIFEST_KEY as FOLDS_KEY,
)
from panns_lightning.shardset.manifest import Manifest
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip
from panns_lightning.shardset.splits import (
    MANIFEST_KEY as SPLITS_KEY,
)
from panns_lightning.shardset.splits import (
    SPLIT_FIELD,
    SPLIT_NAMES,
    SPLIT_SYNONYMS,
    normalise_split,
    split_index,
)

AUDIO_EXTENSIONS = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64 .wv .mat .voc .sd2".split()
)
"""File name extensions of the containers libsndfile (soundfile) decodes; other files are not audio."""
FILE_COLUMNS = ("filename", "file", "path", "audio", "fname")
LABEL_COLUMNS = ("labels", "label", "class", "category", "tags")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
_MAX_ROW_ERRORS = 20


@dataclass
class CustomDataset:
    """A reader's output: records, labels, whether any clip has several labels, what partitions it."""

    dataset: str
    result: ReaderResult
    labels: list[dict[str, Any]]
    multilabel: bool
    # "folds" (meta["fold"] set), "splits" (meta["split"] set) or None: decided at conversion.
    partition: str | None
    layout: dict[str, Any]
    num_folds: int | None = None
    held_out: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    seed: int | None = None  # of folds drawn at conversion


# ---------------------------------------------------------------------------------------------
# a folder per class


def read_folder(root: str | os.PathLike, *, name: str | None = None) -> CustomDataset:
    """Records for every audio file below ``ROOT/<class>/`` (or ``ROOT/<split>/<class>/``).

    Raises ``FileNotFoundError`` / ``ValueError`` naming ``root`` when it holds no class folder
    with audio. Audio files outside any class folder are reported as skipped; other files are
    ignored (counted in a warning).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a directory (expected {root}/<class>/<file>.wav, ...)")
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_layout = bool(top) and all(p.name.lower() in SPLIT_SYNONYMS for p in top)
    result = ReaderResult()
    found: list[tuple[Path, str, str | None]] = []  # (file, class, split)
    ignored: list[str] = []
    for folder in [root, *(top if split_layout else [])]:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            if path.suffix.lower() in AUDIO_EXTENSIONS:
                relative = path.relative_to(root).as_posix()
                result.skipped.append(SkippedClip(_key(relative), relative, "not inside a class folder"))
    for split_dir in top if split_layout else [root]:
        split = normalise_split(split_dir.name) if split_layout else None
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(class_dir.rglob("*")):
                if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
                    continue
                if path.suffix.lower() in AUDIO_EXTENSIONS:
                    found.append((path, class_dir.name, split))
                else:
                    ignored.append(path.relative_to(root).as_posix())
    if not found:
        layout = f"{root}/<train|val|test>/<class>/<file>" if split_layout else f"{root}/<class>/<file>"
        raise ValueError(f"--root {root}: no audio files found in class folders (expected {layout}.wav, ...)")
    if ignored:
        result.warnings.append(
            f"ignored {len(ignored)} file(s) without an audio extension, e.g. {', '.join(ignored[:3])}"
        )
    names = sorted({cls for _, cls, _ in found})
    index_of = {cls: i for i, cls in enumerate(names)}
    for path, cls, split in found:
        relative = path.relative_to(root).as_posix()
        meta = {SPLIT_FIELD: split} if split is not None else {}
        result.records.append(ClipRecord(_key(relative), path, (index_of[cls],), meta=meta, source=relative))
    if split_layout:
        present = {split for _, _, split in found}
        for split in SPLIT_NAMES:
            per_class = Counter(cls for _, cls, s in found if s == split)
            missing = [cls for cls in names if split in present and not per_class[cls]]
            if missing:
                result.warnings.append(f"{split}/ has no clip of: {', '.join(missing[:8])}")
    layout = "<split>/<class>/**/<file>" if split_layout else "<class>/**/<file>"
    return CustomDataset(
        dataset=name or root.resolve().name,
        result=result,
        labels=label_entries(names),
        multilabel=False,
        partition="splits" if split_layout else None,
        layout={"layout": f"folder: {layout}", "root": str(root)},
        description="splits from the folders train/ val/ test/" if split_layout else "",
    )


# ---------------------------------------------------------------------------------------------
# a CSV of files and labels


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
    name: str | None = None,
) -> CustomDataset:
    """Records for the rows of ``csv_path`` (files relative to ``audio_dir``, default: the CSV's folder).

    ``file_column`` / ``label_column`` default to the first header among :data:`FILE_COLUMNS` /
    :data:`LABEL_COLUMNS`; the optional columns default to ``fold``, ``split``, ``start`` and
    ``end``, used when the header has them (a column named explicitly must exist).
    ``label_separator`` splits a cell into several labels (``""``: never split).
    Raises ``ValueError`` naming the CSV (and line, column) for a missing column, a header with
    both a fold and a split column, or bad rows (all of them listed, up to 20).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"--csv {csv_path} not found")
    audio_dir = Path(audio_dir) if audio_dir is not None else csv_path.parent
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"--audio-dir {audio_dir} is not a directory")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        try:
            dialect: Any = csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(handle, dialect=dialect)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        columns = _columns(csv_path, header, file_column, label_column)
        file_col, label_col = columns
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
        rows: list[_Row] = []
        errors: list[str] = []
        for raw in reader:
            line = reader.line_num
            row, problems = _parse_row(
                raw, line, audio_dir, file_col, label_col, label_separator, fold_col, split_col, start_col, end_col
            )
            errors += [f"line {line}, {problem}" for problem in problems]
            if row is not None and not problems:
                rows.append(row)
    if errors:
        shown = "\n  ".join(errors[:_MAX_ROW_ERRORS])
        more = f"\n  ... and {len(errors) - _MAX_ROW_ERRORS} more" if len(errors) > _MAX_ROW_ERRORS else ""
        raise ValueError(f"{csv_path}: {len(errors)} bad value(s); fix them and convert again:\n  {shown}{more}")
    if not rows:
        raise ValueError(f"{csv_path}: no rows below the header")
    if fold_col:
        _check_folds(csv_path, fold_col, [row.fold for row in rows if row.fold is not None])

    result = ReaderResult()
    names = sorted({label for row in rows for label in row.labels})
    index_of = {label: i for i, label in enumerate(names)}
    first_line: dict[tuple[str, tuple[float, float | None] | None], int] = {}
    for row in rows:
        source = f"{csv_path.name}:{row.line}"
        key = _key(row.relative, row.segment)
        identity = (str(row.path.resolve()), row.segment)
        if identity in first_line:
            result.skipped.append(
                SkippedClip(key, source, f"duplicate of line {first_line[identity]} (same file and segment)")
            )
            continue
        first_line[identity] = row.line
        if not row.path.is_file():
            result.skipped.append(SkippedClip(key, source, f"audio file not found: {row.path}"))
            continue
        meta: dict[str, Any] = {}
        if row.fold is not None:
            meta[FOLD_FIELD] = row.fold
        if row.split is not None:
            meta[SPLIT_FIELD] = row.split
        if row.segment is not None:
            meta["start"], meta["end"] = row.segment
        result.records.append(
            ClipRecord(
                key,
                row.path,
                tuple(sorted({index_of[label] for label in row.labels})),
                meta=meta,
                source=row.relative,
                segment=row.segment,
            )
        )
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


def _key(relative: str, segment: tuple[float, float | None] | None = None) -> str:
    """The clip id: its path below the root without the extension (and the segment, if any)."""
    stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
    if segment is None:
        return stem
    start, end = segment
    return f"{stem}@{start:g}-{'end' if end is None else f'{end:g}'}s"


# ---------------------------------------------------------------------------------------------
# what the set is partitioned by


def partition(
    dataset: CustomDataset,
    *,
    num_folds: int | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
) -> CustomDataset:
    """The dataset with every record's fold or split set: the source's, else drawn here (stratified).

    - Folds from the source: kept; asking for folds or fractions as well is a ``ValueError``.
    - Splits from the source: kept; a split the source lacks (val, test) is held out from its
      training clips with ``val_fraction`` / ``test_fraction`` (default 0.1 each; 0: none).
    - Neither: ``num_folds`` stratified folds, else train / val / test held out from all clips.
    """
    records = dataset.result.records
    if dataset.partition == "folds":
        if num_folds is not None or val_fraction is not None or test_fraction is not None:
            raise ValueError(
                f"{dataset.dataset} has folds of its own ({dataset.description}): --num-folds / --val-fraction / "
                "--test-fraction do not apply"
            )
        return dataset
    if num_folds is not None:
        if dataset.partition == "splits":
            raise ValueError(
                f"{dataset.dataset} has splits of its own ({dataset.description}): --num-folds does not apply"
            )
        if val_fraction is not None or test_fraction is not None:
            raise ValueError(
                "--num-folds draws folds for cross-validation: --val-fraction / --test-fraction do not apply"
            )
        if num_folds < 2:
            raise ValueError(f"--num-folds must be >= 2, got {num_folds}")
        folds = _stratified_folds(records, num_folds, seed=seed, multilabel=dataset.multilabel)
        method = "stratified by class" if not dataset.multilabel else f"stratified by label ({HOLDOUT_METHOD})"
        return dataclasses.replace(
            dataset,
            result=_with_meta(dataset.result, {key: {FOLD_FIELD: fold} for key, fold in folds.items()}),
            partition="folds",
            num_folds=num_folds,
            seed=seed,
            description=f"{num_folds} folds drawn at conversion, {method}, seed {seed}",
        )
    fractions = {}
    for split, given, default in (
        ("test", test_fraction, DEFAULT_TEST_FRACTION),
        ("val", val_fraction, DEFAULT_VAL_FRACTION),
    ):
        has_it = dataset.partition == "splits" and any(r.meta.get(SPLIT_FIELD) == split for r in records)
        if has_it and given:
            raise ValueError(f"{dataset.dataset} has a {split} split of its own: --{split}-fraction does not apply")
        value = default if given is None else float(given)
        if value and not has_it:
            fractions[split] = check_fraction(value)
    if sum(fractions.values()) >= 1:
        raise ValueError(f"--val-fraction + --test-fraction must be below 1, got {sum(fractions.values()):g}")
    pool = [r for r in records if r.meta.get(SPLIT_FIELD, "train") == "train"]
    if not pool:
        raise ValueError(f"{dataset.dataset}: no clip is in the train split ({dataset.description})")
    warnings = list(dataset.result.warnings)
    assigned: dict[str, str] = {r.key: r.meta.get(SPLIT_FIELD, "train") for r in records}
    held_out: dict[str, Any] = {}
    remaining = 1.0
    for split, fraction in fractions.items():  # test first, then val from what is left
        size = len(pool)
        pool, taken = split_records(pool, min(fraction / remaining, 0.999), seed=seed)
        remaining -= fraction
        if not taken:
            warnings.append(f"--{split}-fraction {fraction:g} of {size} clips held out none: no {split} split")
        for record in taken:
            assigned[record.key] = split
        held_out[split] = {
            "fraction": fraction,
            "from": "train" if dataset.partition == "splits" else "all",
            "seed": seed,
            "method": HOLDOUT_METHOD,
        }
    source = dataset.description or "all clips"
    result = _with_meta(dataset.result, {key: {SPLIT_FIELD: split} for key, split in assigned.items()})
    result.warnings = warnings
    return dataclasses.replace(
        dataset,
        result=result,
        partition="splits",
        held_out=held_out,
        description=source
        + (f"; {' and '.join(held_out)} held out at conversion, stratified by label" if held_out else ""),
    )


def _stratified_folds(records: Sequence[ClipRecord], num_folds: int, *, seed: int, multilabel: bool) -> dict[str, int]:
    """Fold 1..k per record key: dealt per class (single-label), or peeled off one fold at a time (multi-label)."""
    if not multilabel:
        return stratified_folds({r.key: r.labels[0] for r in records}, num_folds, seed=seed)
    folds: dict[str, int] = {}
    rest = list(records)
    for fold in range(1, num_folds):
        rest, taken = split_records(rest, 1.0 / (num_folds - fold + 1), seed=seed + fold)
        folds.update({r.key: fold for r in taken})
    folds.update({r.key: num_folds for r in rest})
    return folds


def _with_meta(result: ReaderResult, meta: dict[str, dict[str, Any]]) -> ReaderResult:
    records = [dataclasses.replace(r, meta={**r.meta, **meta.get(r.key, {})}) for r in result.records]
    return ReaderResult(records=records, skipped=list(result.skipped), warnings=list(result.warnings))


# ---------------------------------------------------------------------------------------------
# converting


def write_custom_shards(dataset: CustomDataset, out_dir: str | os.PathLike, **write_options: Any) -> Manifest:
    """``write_shards`` + the manifest's ``folds`` or ``splits`` index (call :func:`partition` first).

    ``write_options`` go to :func:`panns_lightning.shardset.writer.write_shards` (sample_rate,
    clip_samples, storage, clips_per_shard, min_shards, num_workers, seed, created_by, overwrite,
    progress, resample). ``multilabel`` is the dataset's (True when any clip has several labels).
    """
    from panns_lightning.shardset.writer import write_shards  # the writer pulls in audio decoding

    if dataset.partition not in ("folds", "splits"):
        raise ValueError(f"{dataset.dataset}: no folds or splits assigned; call partition() first")
    extra: dict[str, Any] = {"source_layout": dataset.layout}
    if dataset.result.warnings:
        extra["warnings"] = list(dataset.result.warnings)

    def index(manifest: Manifest) -> dict[str, Any]:
        if dataset.partition == "folds":
            assert dataset.num_folds is not None
            entry = fold_index(
                manifest,
                scheme="stratified" if dataset.seed is not None else "given",
                num_folds=dataset.num_folds,
                seed=dataset.seed,
                description=dataset.description,
            )
            return {FOLDS_KEY: entry}
        return {SPLITS_KEY: split_index(manifest, description=dataset.description, held_out=dataset.held_out)}

    return write_shards(
        dataset.result.records,
        out_dir,
        labels=dataset.labels,
        dataset=dataset.dataset,
        split="all",
        multilabel=dataset.multilabel,
        skipped=dataset.result.skipped,
        extra_manifest=extra,
        finalize=index,
        **write_options,
    )

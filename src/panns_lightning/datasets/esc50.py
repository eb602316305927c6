"""Reader for ESC-50's official layout (Piczak 2015): ``audio/*.wav`` + ``meta/esc50.csv``.

``esc50.csv`` columns: ``filename,fold,target,category,esc10,src_file,take``. Clips are 5 s,
44.1 kHz mono. The five official folds are kept as they are: clips cut from one Freesound
recording (``src_file``) share a fold, so a fold split never tests on a recording it trained on.
Classes are named by ``category`` and ordered by ``target``; ``esc10=True`` keeps the ESC-10 subset
(10 classes re-indexed 0..9 in ``target`` order).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from panns_lightning.datasets.csv_lines import BoundedLines, holds_too_long
from panns_lightning.shardset.folds import FoldedDataset, label_entries
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip

CSV_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
NUM_FOLDS = 5
CLIP_SECONDS = 5.0
NATIVE_SAMPLE_RATE = 44100


def read_esc50(root: str | os.PathLike, *, esc10: bool = False) -> FoldedDataset:
    """Records for every CSV row whose wav exists; bad rows and missing files are reported as skipped.

    A filename listed twice keeps its first row; later rows are skipped ("duplicate filename,
    first seen on line N"), as two rows for one clip would store it twice, maybe in two folds.
    Raises ``FileNotFoundError`` / ``ValueError`` (naming the file) when the layout itself is wrong:
    no ``meta/esc50.csv``, missing columns, or one ``target`` with two category names.
    """
    root = Path(root)
    csv_path = root / "meta" / "esc50.csv"
    audio_dir = root / "audio"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found: --root must be the ESC-50 folder holding meta/ and audio/")
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"{audio_dir} not found: --root must be the ESC-50 folder holding meta/ and audio/")

    result = ReaderResult()
    with csv_path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(BoundedLines(handle))
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{csv_path}: missing columns {missing}; expected {','.join(CSV_COLUMNS)}, found {reader.fieldnames}"
            )
        rows = _rows(reader, csv_path.name, result)

    category_of: dict[int, str] = {}
    first_line_of: dict[str, tuple[str, int]] = {}  # clip id (the stem) → its filename and line
    parsed: list[tuple[int, dict[str, str], int, int, bool]] = []
    for line, row in rows:
        name = (row.get("filename") or "").strip()
        source = f"{csv_path.name}:{line}"
        if name and (Path(name).name != name or name in (".", "..")):
            result.skipped.append(SkippedClip(name, source, "filename is not a file name in audio/ (a path)"))
            continue
        if name and Path(name).stem in first_line_of:
            earlier, earlier_line = first_line_of[Path(name).stem]
            what = "filename" if earlier == name else f"clip {Path(name).stem!r} ({earlier} and {name})"
            result.skipped.append(
                SkippedClip(Path(name).stem, source, f"duplicate {what}, first seen on line {earlier_line}")
            )
            continue
        first_line_of[Path(name).stem] = (name, line)
        short = [column for column in CSV_COLUMNS if row.get(column) is None]
        if short:
            result.skipped.append(SkippedClip(Path(name).stem, source, f"short row: no {', '.join(short)}"))
            continue
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except (TypeError, ValueError):
            result.skipped.append(
                SkippedClip(
                    name or f"line {line}",
                    source,
                    f"fold/target are not integers: {row.get('fold')!r}, {row.get('target')!r}",
                )
            )
            continue
        if not 1 <= fold <= NUM_FOLDS:
            result.skipped.append(SkippedClip(name, source, f"fold {fold} outside 1..{NUM_FOLDS}"))
            continue
        category = (row.get("category") or "").strip()
        if category_of.setdefault(target, category) != category:
            raise ValueError(
                f"{csv_path}:{line}: target {target} is {category!r} here but {category_of[target]!r} earlier"
            )
        is_esc10 = (row.get("esc10") or "").strip().lower() == "true"
        parsed.append((line, row, fold, target, is_esc10))

    if esc10:
        parsed = [p for p in parsed if p[4]]
    targets = sorted({p[3] for p in parsed})
    if not targets:
        raise ValueError(f"{csv_path}: no usable rows{' with esc10=True' if esc10 else ''}")
    index_of = {target: index for index, target in enumerate(targets)}
    names = [category_of[t] for t in targets]

    for line, row, fold, target, is_esc10 in parsed:
        filename = row["filename"].strip()
        path = audio_dir / filename
        if not path.is_file():
            result.skipped.append(
                SkippedClip(Path(filename).stem, f"{csv_path.name}:{line}", f"audio file not found: audio/{filename}")
            )
            continue
        result.records.append(
            ClipRecord(
                key=Path(filename).stem,
                audio_path=path,
                labels=(index_of[target],),
                meta={
                    "fold": fold,
                    "target": target,
                    "category": category_of[target],
                    "esc10": is_esc10,
                    "src_file": (row.get("src_file") or "").strip(),
                    "take": (row.get("take") or "").strip(),
                },
                source=f"audio/{filename}",
            )
        )
    subset = "ESC-10" if esc10 else "ESC-50"
    return FoldedDataset(
        dataset="esc10" if esc10 else "esc50",
        result=result,
        labels=label_entries(names),
        scheme="official",
        num_folds=NUM_FOLDS,
        seed=None,
        description=f"{subset}'s official 5 folds (meta/esc50.csv); clips of one src_file share a fold",
        extra={"source_layout": "ESC-50 (audio/*.wav + meta/esc50.csv)"},
    )


def write_synthetic_esc50(
    out_dir: str | os.PathLike,
    *,
    num_classes: int = 10,
    clips_per_class: int = 20,
    clip_seconds: float = 2.0,
    sample_rate: int = 16000,
    first_class: int = 12,
    seed: int = 0,
) -> Path:
    """A small dataset in ESC-50's layout (``audio/*.wav`` + ``meta/esc50.csv``), 5 folds, for the demo.

    Classes are events of ``synthetic.event_catalog()`` starting at ``first_class``: by default
    the 10 the demo's pretraining never saw (it uses the first 12), so the demo shows transfer, not
    recall. Each "recording" (``src_file``) yields two takes (A, B) in one fold, as in ESC-50.
    """
    import numpy as np
    import soundfile as sf

    from panns_lightning.datasets.synthetic import event_catalog

    catalog = event_catalog()
    if first_class + num_classes > len(catalog):
        raise ValueError(
            f"the catalog has {len(catalog)} classes; first_class + num_classes = {first_class + num_classes}"
        )
    if clips_per_class % (2 * NUM_FOLDS):
        raise ValueError(
            f"clips_per_class must be a multiple of {2 * NUM_FOLDS} (two takes per recording in each of 5 folds)"
        )
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    length = int(round(clip_seconds * sample_rate))
    rows = [",".join(CSV_COLUMNS)]
    rng = np.random.default_rng(seed)
    recording = 100000
    for target in range(num_classes):
        event = catalog[first_class + target]
        category = "_".join("".join(c if c.isalnum() else " " for c in event.name.lower()).split())
        for clip in range(clips_per_class):
            if clip % 2 == 0:
                recording += int(rng.integers(1, 5000))
            fold = clip // 2 % NUM_FOLDS + 1
            take = "AB"[clip % 2]
            filename = f"{fold}-{recording}-{take}-{target}.wav"
            background = rng.standard_normal(length) * 10 ** (rng.uniform(-42, -30) / 20)
            event_length = min(length, int(rng.uniform(0.3, 1.0) * sample_rate))
            onset = int(rng.integers(0, length - event_length + 1))
            signal = event.render(rng, sample_rate, event_length) * np.hanning(event_length) ** 0.25
            background[onset : onset + event_length] += (
                signal * np.sqrt(np.mean(background**2)) * 10 ** (rng.uniform(3, 20) / 20)
            )
            background *= min(1.0, 0.95 / max(np.abs(background).max(), 1e-9))
            sf.write(out / "audio" / filename, background.astype(np.float32), sample_rate)
            rows.append(f"{filename},{fold},{target},{category},{target < 4},{recording}.wav,{take}")
    (out / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def _rows(reader: csv.DictReader, csv_name: str, result: ReaderResult) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` for every row the csv module can read; the others are skipped with their line."""
    rows: list[tuple[int, dict[str, str]]] = []
    iterator = iter(reader)
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return rows
        except csv.Error as error:  # e.g. a cell over 128 KiB: that row only
            result.skipped.append(
                SkippedClip("(unreadable row)", f"{csv_name}:{reader.line_num + 1}", f"unreadable CSV row: {error}")
            )
            continue
        if holds_too_long(row):
            result.skipped.append(SkippedClip("(unreadable row)", f"{csv_name}:{reader.line_num}", "line over 1 MiB"))
            continue
        rows.append((reader.line_num, row))

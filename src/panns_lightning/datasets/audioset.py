"""Reader for AudioSet's official layout: segment CSVs + a folder of downloaded clips.

Segment CSVs (``balanced_train_segments.csv``, ``eval_segments.csv``,
``unbalanced_train_segments.csv``) start with three ``#`` lines, then rows
``YTID, start_seconds, end_seconds, "mid1,mid2,..."``. Bad rows are reported, never fatal:
AudioSet downloads are always incomplete, so the conversion must go on around gaps.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from panns_lightning.datasets.csv_lines import TOO_LONG, BoundedLines
from panns_lightning.labels import LabelSet
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip

DEFAULT_AUDIO_PATTERNS: tuple[str, ...] = ("Y{ytid}.*", "{ytid}_{start}_{end}.*")
"""``Y{ytid}.wav`` is upstream PANNs' downloader naming; ``{ytid}_{start}_{end}`` the other common one.
A trailing ``.*`` matches any audio extension, preferring wav, flac, ogg, mp3 in that order."""

PREFERRED_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
UNREADABLE_ROW_KEY = "(unreadable row)"
# Files a downloader leaves beside the audio; never a match for ``.*``.
_NOT_AUDIO_EXTENSIONS = frozenset(
    {".txt", ".json", ".csv", ".part", ".tmp", ".ytdl", ".log", ".md", ".jpg", ".png", ".webp"}
)


@dataclass(frozen=True)
class SegmentRow:
    """One parsed CSV row; ``start_text``/``end_text`` keep the CSV's spelling for file lookup."""

    ytid: str
    start_seconds: float
    end_seconds: float
    start_text: str
    end_text: str
    mids: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class RowProblem:
    """A row the parser could not use (``skipped``) or used only in part."""

    line: int
    ytid: str
    reason: str
    skipped: bool


def split_name(segments_csv: str | os.PathLike) -> str:
    """``balanced_train_segments.csv`` → ``balanced_train``; other names → their stem."""
    stem = Path(segments_csv).stem
    return stem[: -len("_segments")] if stem.endswith("_segments") else stem


def parse_segments_csv(path: str | os.PathLike) -> tuple[list[SegmentRow], list[RowProblem]]:
    """Parse a segment CSV into rows and per-line problems (malformed rows, duplicate YTIDs)."""
    path = Path(path)
    rows: list[SegmentRow] = []
    problems: list[RowProblem] = []
    first_line_of: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        for line, text in _without_comments(BoundedLines(handle)):
            # One row per line in AudioSet's files, so parsing line by line keeps exact line numbers.
            if TOO_LONG in text:
                problems.append(RowProblem(line, UNREADABLE_ROW_KEY, "line over 1 MiB", True))
                continue
            try:
                fields = next(csv.reader([text], skipinitialspace=True), [])
            except csv.Error as error:  # e.g. a field over the csv module's 128 KiB limit
                problems.append(RowProblem(line, UNREADABLE_ROW_KEY, f"unreadable CSV row: {error}", True))
                continue
            if not fields or all(not f.strip() for f in fields):
                continue
            ytid = fields[0].strip()
            if len(fields) != 4:
                problems.append(
                    RowProblem(line, ytid, f"expected 4 fields (YTID, start, end, labels), found {len(fields)}", True)
                )
                continue
            start_text, end_text, label_text = (f.strip() for f in fields[1:])
            try:
                start, end = float(start_text), float(end_text)
            except ValueError:
                problems.append(
                    RowProblem(line, ytid, f"start/end are not numbers: {start_text!r}, {end_text!r}", True)
                )
                continue
            mids = tuple(m.strip() for m in label_text.split(",") if m.strip())
            reason = _row_error(ytid, start, end, mids)
            if reason:
                problems.append(RowProblem(line, ytid, reason, True))
                continue
            if ytid in first_line_of:
                problems.append(
                    RowProblem(line, ytid, f"duplicate YTID, first seen on line {first_line_of[ytid]}", True)
                )
                continue
            first_line_of[ytid] = line
            rows.append(SegmentRow(ytid, start, end, start_text, end_text, mids, line))
    return rows, problems


class AudioIndex:
    """Every file under a folder, scanned once, so finding a clip is a dict lookup, not a stat."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.by_relative: dict[str, Path] = {}
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for path in sorted(_walk_files(self.root)):
            relative = path.relative_to(self.root).as_posix()
            self.by_relative[relative] = path
            self.by_name.setdefault(path.name, path)
            if path.suffix.lower() not in _NOT_AUDIO_EXTENSIONS:
                self.by_stem.setdefault(path.stem, []).append(path)
        for candidates in self.by_stem.values():
            candidates.sort(key=_extension_rank)

    def __len__(self) -> int:
        return len(self.by_relative)

    def find(self, name: str) -> Path | None:
        """Look up a pattern result: ``a/b.wav`` by relative path, ``b.wav`` anywhere, ``b.*`` any extension."""
        if name.endswith(".*"):
            stem = name[:-2]
            if "/" in stem:
                folder, _, base = stem.rpartition("/")
                matches = [p for p in self.by_stem.get(base, []) if p.parent == self.root / folder]
            else:
                matches = self.by_stem.get(stem, [])
            return matches[0] if matches else None
        if "/" in name:
            return self.by_relative.get(name)
        return self.by_name.get(name)


def find_clip_audio(row: SegmentRow, index: AudioIndex, patterns: Sequence[str]) -> Path | None:
    """First file matching any pattern, trying start/end as in the CSV, then as integers."""
    for pattern in patterns:
        for start, end in _time_spellings(row):
            try:
                name = pattern.format(ytid=row.ytid, start=start, end=end)
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"audio pattern {pattern!r} is not a format string over {{ytid}}, {{start}}, {{end}}: {error}"
                ) from error
            found = index.find(name)
            if found is not None:
                return found
    return None


def read_audioset(
    segments_csv: str | os.PathLike,
    audio_dir: str | os.PathLike,
    labels: LabelSet,
    *,
    audio_patterns: Sequence[str] | None = None,
) -> ReaderResult:
    """Records for every CSV row whose audio exists; everything else reported with its line."""
    segments_csv = Path(segments_csv)
    patterns = tuple(audio_patterns) if audio_patterns else DEFAULT_AUDIO_PATTERNS
    _check_patterns(patterns)
    rows, problems = parse_segments_csv(segments_csv)
    index = AudioIndex(audio_dir)
    result = ReaderResult()
    where = segments_csv.name
    for problem in problems:
        result.skipped.append(SkippedClip(problem.ytid, f"{where}:{problem.line}", problem.reason))
    for row in rows:
        source = f"{where}:{row.line}"
        known = [labels.index_of[m] for m in row.mids if m in labels.index_of]
        unknown = [m for m in row.mids if m not in labels.index_of]
        if not known:
            result.skipped.append(SkippedClip(row.ytid, source, f"no label in the label CSV: {', '.join(unknown)}"))
            continue
        if unknown:
            result.warnings.append(f"{source}: {row.ytid}: dropped labels not in the label CSV: {', '.join(unknown)}")
        try:
            audio = find_clip_audio(row, index, patterns)
        except Exception as error:  # whatever an odd row does to the lookup costs that row only
            result.skipped.append(SkippedClip(row.ytid, source, f"unreadable row: {type(error).__name__}: {error}"))
            continue
        if audio is None:
            result.skipped.append(
                SkippedClip(row.ytid, source, "audio file not found (patterns: " + ", ".join(patterns) + ")")
            )
            continue
        result.records.append(
            ClipRecord(
                key=row.ytid,
                audio_path=audio,
                labels=tuple(sorted(set(known))),
                meta={"start_seconds": row.start_seconds, "end_seconds": row.end_seconds},
                source=audio.relative_to(index.root).as_posix(),
            )
        )
    return result


def _check_patterns(patterns: Sequence[str]) -> None:
    """A pattern that is not a format string over ytid/start/end is the user's error: raise before any row."""
    for pattern in patterns:
        try:
            pattern.format(ytid="x", start="0", end="10")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"audio pattern {pattern!r} is not a format string over {{ytid}}, {{start}}, {{end}}: {error}"
            ) from error


def _without_comments(lines: Iterable[str]) -> Iterable[tuple[int, str]]:
    """Drop ``#`` header lines but keep real line numbers for error messages."""
    for number, text in enumerate(lines, start=1):
        if not text.lstrip().startswith("#"):
            yield number, text


def _row_error(ytid: str, start: float, end: float, mids: tuple[str, ...]) -> str | None:
    if not ytid:
        return "empty YTID"
    if not (math.isfinite(end) and end > start >= 0):
        return f"expected 0 <= start < end (finite), found start={start}, end={end}"
    if not mids:
        return "empty label list"
    return None


def _time_spellings(row: SegmentRow) -> list[tuple[str, str]]:
    spellings = [(row.start_text, row.end_text)]
    as_int = (str(int(row.start_seconds)), str(int(row.end_seconds)))
    if as_int not in spellings:
        spellings.append(as_int)
    return spellings


def _walk_files(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"audio directory not found: {root}")
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    yield Path(entry.path)


def _extension_rank(path: Path) -> tuple[int, str]:
    suffix = path.suffix.lower()
    rank = PREFERRED_EXTENSIONS.index(suffix) if suffix in PREFERRED_EXTENSIONS else len(PREFERRED_EXTENSIONS)
    return rank, path.as_posix()

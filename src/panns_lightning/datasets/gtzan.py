"""Reader for GTZAN (Tzanetakis & Cook 2002): 10 genres × 100 clips of 30 s.

Two layouts are in circulation and both are read:

- the original release: ``genres/<genre>/<genre>.000NN.au`` (22.05 kHz, 16-bit AU);
- the re-release (e.g. on Kaggle): ``genres_original/<genre>/<genre>.000NN.wav``, which contains a
  file no decoder reads (``jazz.00054.wav``); it is reported as skipped in the manifest.

``--root`` may be the folder holding ``genres*/`` or that folder itself. GTZAN has no official
folds: a k-fold (default 10) split stratified by genre is drawn with ``seed`` and written into the
manifest, so every run of a cross-validation uses the same folds. ``split_file`` restricts the set
to the files it lists (one per line; ``genre/genre.000NN.au``, ``genre.000NN.wav`` or a bare stem;
``#`` starts a comment), e.g. a fault-filtered split.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from panns_lightning.shardset.folds import FoldedDataset, label_entries, stratified_folds
from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
LAYOUT_FOLDERS = ("genres_original", "genres")  # preferred first: the re-release's wav
AUDIO_EXTENSIONS = (".wav", ".au")
DEFAULT_NUM_FOLDS = 10
CLIP_SECONDS = 30.0
_NAME = re.compile(r"^(?P<genre>[a-z]+)\.(?P<number>\d{5})$")


def find_genres_dir(root: str | os.PathLike) -> Path:
    """The folder whose sub-folders are the genres: ``root/genres_original``, ``root/genres`` or ``root``."""
    root = Path(root)
    for name in LAYOUT_FOLDERS:
        if (root / name).is_dir():
            return root / name
    if root.is_dir() and any((root / genre).is_dir() for genre in GENRES):
        return root
    raise FileNotFoundError(
        f"{root}: no GTZAN layout found; expected {root}/genres/<genre>/<genre>.000NN.au, "
        f"{root}/genres_original/<genre>/<genre>.000NN.wav, or genre folders directly in {root}"
    )


def read_gtzan(
    root: str | os.PathLike,
    *,
    num_folds: int = DEFAULT_NUM_FOLDS,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
) -> FoldedDataset:
    """Records for every genre file (fold in ``meta``); oddly named files and split-file misses are skipped."""
    genres_dir = find_genres_dir(root)
    result = ReaderResult()
    candidates: dict[str, tuple[Path, str]] = {}  # stem → (path, genre)
    for genre_dir in sorted(p for p in genres_dir.iterdir() if p.is_dir()):
        for path in sorted(genre_dir.iterdir()):
            if not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            relative = path.relative_to(genres_dir).as_posix()
            match = _NAME.match(path.stem)
            if match is None or match["genre"] != genre_dir.name:
                result.skipped.append(
                    SkippedClip(path.stem, relative, f"name is not {genre_dir.name}.000NN{path.suffix}")
                )
                continue
            if path.stem in candidates:
                result.skipped.append(
                    SkippedClip(
                        path.stem,
                        relative,
                        f"duplicate of {candidates[path.stem][0].relative_to(genres_dir).as_posix()}",
                    )
                )
                continue
            candidates[path.stem] = (path, genre_dir.name)
    genres = sorted({genre for _, genre in candidates.values()}, key=_genre_order)
    if not genres:
        raise ValueError(f"{genres_dir}: no <genre>/<genre>.000NN.au|wav files found")
    unknown = [g for g in genres if g not in GENRES]
    if unknown:
        result.warnings.append(f"genre folders not in GTZAN's ten: {', '.join(unknown)} (kept as classes)")

    extra: dict[str, object] = {"source_layout": f"GTZAN ({genres_dir.name}/<genre>/<genre>.000NN.*)"}
    if split_file is not None:
        wanted = _read_split_file(split_file)
        for stem, line in sorted(wanted.items()):
            if stem not in candidates:
                result.skipped.append(
                    SkippedClip(stem, f"{Path(split_file).name}:{line}", "listed in the split file but not found")
                )
        excluded = sorted(set(candidates) - set(wanted))
        candidates = {stem: value for stem, value in candidates.items() if stem in wanted}
        extra["split_file"] = str(split_file)
        extra["excluded_by_split_file"] = len(excluded)

    index_of = {genre: i for i, genre in enumerate(genres)}
    folds = stratified_folds({stem: index_of[genre] for stem, (_, genre) in candidates.items()}, num_folds, seed=seed)
    for stem, (path, genre) in sorted(candidates.items()):
        result.records.append(
            ClipRecord(
                key=stem,
                audio_path=path,
                labels=(index_of[genre],),
                meta={"fold": folds[stem], "genre": genre},
                source=path.relative_to(genres_dir.parent).as_posix(),
            )
        )
    return FoldedDataset(
        dataset="gtzan",
        result=result,
        labels=label_entries(genres),
        scheme="stratified",
        num_folds=num_folds,
        seed=seed,
        description=f"{num_folds}-fold split stratified by genre, drawn with seed {seed} (GTZAN has no official folds)",
        extra=extra,
    )


def _genre_order(genre: str) -> tuple[int, str]:
    return (GENRES.index(genre) if genre in GENRES else len(GENRES), genre)


def _read_split_file(path: str | os.PathLike) -> dict[str, int]:
    """Stems listed in a split file → their line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--split-file {path} not found")
    stems: dict[str, int] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = text.split("#", 1)[0].strip()
        if not entry:
            continue
        name = Path(entry).name
        stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in AUDIO_EXTENSIONS else name
        stems.setdefault(stem, line)
    if not stems:
        raise ValueError(f"--split-file {path} lists no files")
    return stems

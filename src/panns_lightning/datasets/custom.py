"""Your own data: a folder per class, or a CSV listing files and labels → records for ONE shard set.

Two readers, for ``panns-prepare folder`` and ``panns-prepare csv``:

- :func:`read_folder`: ``ROOT/<class>/**/<file>`` (any depth below a class folder), or, when
  ROOT's folders are split names, ``ROOT/<train|val|test>/<class>/**/<file>``. Single-label.
- :func:`panns_lightning.datasets.custom_csv.read_csv_table`: one row per clip with its file and
  label(s), optional fold / split / start / end columns (its module says which rows are errors
  and which are skipped).

A clip's key is its path below the root with its extension (:func:`clip_key_of`), so no two files
share one. What the set is partitioned by is decided here (:func:`partition`): the folds or
splits the source gives; else, at conversion, ``num_folds`` stratified folds or a stratified
train / val / test hold-out (``val_fraction`` / ``test_fraction``, iterative stratification for
multi-label clips, seeded), so every training run reads the same split from the manifest.
"""

from __future__ import annotations

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
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1


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
                result.skipped.append(SkippedClip(clip_key_of(relative), relative, "not inside a class folder"))
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
        result.records.append(ClipRecord(clip_key_of(relative), path, (index_of[cls],), meta=meta, source=relative))
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


def clip_key_of(relative: str, segment: tuple[float, float | None] | None = None) -> str:
    """The clip key: the file's path below the root WITH its extension, and the segment if any.

    ``dogs/a.wav``, ``dogs/a.flac``, ``a.b.wav``, ``a_b.wav`` and ``a/b.wav`` are five keys (the
    shard writer's member names escape them injectively: ``shardset.format.shard_key``). A
    segment adds ``@START-ENDs`` with the times written exactly (``clips/a.wav@1.5-3s``,
    ``@0.1-0.30000000000000004s``: two distinct times never print alike).
    """
    if segment is None:
        return relative
    start, end = segment
    return f"{relative}@{_exact_seconds(start)}-{'end' if end is None else _exact_seconds(end)}s"


def _exact_seconds(seconds: float) -> str:
    short = f"{seconds:g}"
    return short if float(short) == seconds else repr(float(seconds))


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

"""Cross-validation folds: how the small datasets assign them, and how a shard set records them.

Fine-tuning benchmarks (ESC-50, GTZAN, RAVDESS) are reported as k-fold cross-validation over ONE
shard set: every clip's json carries its ``fold`` (1-based) and the manifest carries a ``folds``
entry, computed by :func:`fold_index` from the written shards as the manifest is written::

    "folds": {
      "field": "fold", "scheme": "official" | "stratified" | "by_actor", "num_folds": 5,
      "seed": 0 | null, "description": "...",
      "num_clips": {"1": 400, ...},            # clips actually written, per fold
      "class_counts": {"1": [8, 8, ...], ...}, # per fold, one int per label
      "shards": {"shard-000000.tar": {"1": 80, ...}, ...},
      "keys": {"1": ["1-100032-A-0_wav", ...], ...}  # tar member keys per fold
    }

``keys`` lets a reader select train = all folds but k and test = fold k from the manifest alone
(:func:`fold_selection`), without a second pass over the data. The index is read back from the
written shards, so clips that failed to decode are never counted.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from panns_lightning.shardset.manifest import Manifest
from panns_lightning.shardset.records import ReaderResult

FOLD_FIELD = "fold"
MANIFEST_KEY = "folds"


@dataclass(frozen=True)
class FoldSelection:
    """The clips of one side of a fold split: member keys, per-class counts and the total."""

    keys: frozenset[str]
    class_counts: tuple[int, ...]
    num_clips: int


def stratified_folds(labels: Mapping[str, int], num_folds: int, *, seed: int) -> dict[str, int]:
    """Assign each key a fold 1..k so every class is spread as evenly as possible (±1 clip per fold).

    Keys are shuffled within each class by ``seed`` and dealt round-robin; each class starts dealing
    where the previous one stopped, so fold sizes also differ by at most one clip overall.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[str]] = defaultdict(list)
    for key in sorted(labels):
        by_class[labels[key]].append(key)
    folds: dict[str, int] = {}
    position = 0
    for label in sorted(by_class):
        keys = by_class[label]
        for index in rng.permutation(len(keys)):
            folds[keys[int(index)]] = position % num_folds + 1
            position += 1
    return folds


def group_folds(groups: Mapping[str, Hashable], group_fold: Mapping[Hashable, int]) -> dict[str, int]:
    """Each key gets its group's fold (e.g. its actor's), so a group never straddles train and test."""
    missing = sorted({str(g) for g in groups.values() if g not in group_fold})
    if missing:
        raise ValueError(f"no fold assigned to group(s) {', '.join(missing[:10])}")
    return {key: int(group_fold[group]) for key, group in groups.items()}


def read_clip_folds(
    shard_dir: str | os.PathLike, shard_names: Sequence[str]
) -> dict[str, dict[str, tuple[int, list[int]]]]:
    """``{shard name: {member key: (fold, labels)}}`` from the clips' json members (audio is not read).

    Raises ``ValueError`` naming the shard and member when a clip lacks an integer ``fold``.
    """
    return read_clip_field(
        shard_dir,
        shard_names,
        FOLD_FIELD,
        lambda fold: isinstance(fold, int) and not isinstance(fold, bool),
        "integer",
    )


def read_clip_field(
    shard_dir: str | os.PathLike,
    shard_names: Sequence[str],
    name: str,
    valid: Callable[[Any], bool],
    expected: str,
) -> dict[str, dict[str, tuple[Any, list[int]]]]:
    """``{shard name: {member key: (json[name], labels)}}``; ``ValueError`` where ``valid`` refuses a value."""
    result: dict[str, dict[str, tuple[Any, list[int]]]] = {}
    for shard_name in shard_names:
        path = Path(shard_dir) / shard_name
        clips: dict[str, tuple[Any, list[int]]] = {}
        # Random-access mode: audio members are skipped by seeking, only json members are read.
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".json"):
                    continue
                handle = tar.extractfile(member)
                info = json.loads(handle.read() if handle is not None else b"{}")
                value = info.get(name) if isinstance(info, dict) else None
                if not valid(value):
                    raise ValueError(f"{path}: member {member.name} has no {expected} {name!r} (found {value!r})")
                clips[member.name[: -len(".json")]] = (value, [int(c) for c in info.get("labels", [])])
        result[shard_name] = clips
    return result


def fold_index(
    manifest: Manifest,
    *,
    scheme: str,
    num_folds: int,
    seed: int | None,
    description: str,
) -> dict[str, Any]:
    """The manifest's ``folds`` entry, read back from the written shards (so skipped clips never count)."""
    if manifest.root is None:
        raise ValueError("manifest has no root directory")
    root = Path(manifest.root)
    per_shard = read_clip_folds(root, [shard.name for shard in manifest.shards])
    num_classes = manifest.num_classes
    fold_ids = [str(f) for f in range(1, num_folds + 1)]
    keys: dict[str, list[str]] = {f: [] for f in fold_ids}
    class_counts = {f: [0] * num_classes for f in fold_ids}
    shards: dict[str, dict[str, int]] = {}
    for shard_name, clips in per_shard.items():
        counts = Counter(str(fold) for fold, _ in clips.values())
        shards[shard_name] = {f: counts.get(f, 0) for f in fold_ids}
        for key, (fold, labels) in clips.items():
            fold_id = str(fold)
            if fold_id not in keys:
                raise ValueError(f"{root / shard_name}: clip {key} has fold {fold}, expected 1..{num_folds}")
            keys[fold_id].append(key)
            for label in labels:
                class_counts[fold_id][label] += 1
    entry = {
        "field": FOLD_FIELD,
        "scheme": scheme,
        "num_folds": num_folds,
        "seed": seed,
        "description": description,
        "num_clips": {f: len(keys[f]) for f in fold_ids},
        "class_counts": class_counts,
        "shards": shards,
        "keys": {f: sorted(keys[f]) for f in fold_ids},
    }
    return entry


def fold_selection(
    manifest: Manifest | Mapping[str, Any], fold: int, *, held_out: bool, where: str = "manifest"
) -> FoldSelection:
    """Train side (``held_out=False``: every fold but ``fold``) or test side (only ``fold``) of a split.

    ``manifest`` is a :class:`Manifest` or the parsed manifest.json; ``where`` names it in errors.
    """
    if isinstance(manifest, Manifest):
        manifest = manifest.to_json()
    entry = manifest.get(MANIFEST_KEY)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("keys"), Mapping):
        raise ValueError(
            f"{where} has no '{MANIFEST_KEY}' index (clip keys per fold); data.fold needs a shard set "
            "made by a converter that writes folds (panns-prepare esc50 / gtzan / ravdess, or folder / csv "
            "with folds)"
        )
    available = sorted(int(f) for f in entry["keys"])
    if fold not in available:
        raise ValueError(f"data.fold={fold} but {where} has folds {available}")
    chosen = [str(fold)] if held_out else [str(f) for f in available if f != fold]
    keys = frozenset(k for f in chosen for k in entry["keys"][f])
    num_classes = len(manifest["labels"])
    counts = [0] * num_classes
    for f in chosen:
        for c, n in enumerate(entry["class_counts"][f]):
            counts[c] += int(n)
    return FoldSelection(keys=keys, class_counts=tuple(counts), num_clips=len(keys))


def fold_table(entry: Mapping[str, Any], label_names: Sequence[str]) -> str:
    """A plain-text table of clips per fold (and the smallest class count), for converter output."""
    lines = [
        f"{entry['num_folds']} folds ({entry['scheme']}): "
        + ", ".join(f"{f}: {n}" for f, n in entry["num_clips"].items())
    ]
    for f, counts in entry["class_counts"].items():
        empty = [label_names[c] for c, n in enumerate(counts) if n == 0]
        if empty:
            lines.append(f"  fold {f} has no clip of: {', '.join(empty[:8])}{' ...' if len(empty) > 8 else ''}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# converting a folded dataset (ESC-50, GTZAN, RAVDESS share this)


@dataclass
class FoldedDataset:
    """What a fold-aware reader returns: records (``meta["fold"]`` set), skips, labels and the scheme."""

    dataset: str
    result: ReaderResult
    labels: list[dict[str, Any]]
    scheme: str
    num_folds: int
    seed: int | None
    description: str
    extra: dict[str, Any]


def label_entries(names: Sequence[str], mids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The manifest's label list from class names (``mid`` defaults to the name)."""
    return [{"index": i, "mid": (mids[i] if mids is not None else name), "name": name} for i, name in enumerate(names)]


def write_folded_shards(
    folded: FoldedDataset, out_dir: str | os.PathLike, **write_options: Any
) -> tuple[Manifest, dict[str, Any]]:
    """``write_shards`` (single-label) + the manifest's ``folds`` index; returns (manifest, folds entry).

    ``write_options`` go to :func:`panns_lightning.shardset.writer.write_shards` (sample_rate, clip_samples,
    storage, clips_per_shard, min_shards, num_workers, seed, created_by, overwrite, progress, split).
    """
    from panns_lightning.shardset.writer import write_shards  # the writer pulls in audio decoding

    unfolded = [r.key for r in folded.result.records if not isinstance(r.meta.get(FOLD_FIELD), int)]
    if unfolded:
        raise ValueError(f"{folded.dataset}: records without an integer 'fold' in meta: {unfolded[:5]}")
    extra = dict(folded.extra)
    if folded.result.warnings:
        extra["warnings"] = list(folded.result.warnings)

    def folds_entry(manifest: Manifest) -> dict[str, Any]:
        return {
            MANIFEST_KEY: fold_index(
                manifest,
                scheme=folded.scheme,
                num_folds=folded.num_folds,
                seed=folded.seed,
                description=folded.description,
            )
        }

    # The fold index goes into the one manifest write: a kill can never leave a fold-less manifest.
    manifest = write_shards(
        folded.result.records,
        out_dir,
        labels=folded.labels,
        dataset=folded.dataset,
        multilabel=False,
        skipped=folded.result.skipped,
        extra_manifest=extra or None,
        finalize=folds_entry,
        **write_options,
    )
    return manifest, manifest.extra[MANIFEST_KEY]


def fold_numbers(manifest: Manifest) -> list[int]:
    """The folds a shard set holds (1..k from its ``folds`` entry); ``ValueError`` if it has none."""
    entry = manifest.extra.get(MANIFEST_KEY)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("num_folds"), int):
        raise ValueError(
            f"{manifest.root} has no '{MANIFEST_KEY}' entry: it was not made by a converter that writes folds"
        )
    return list(range(1, entry["num_folds"] + 1))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m panns_lightning.shardset.folds SHARD_DIR``: print its folds as ``1,2,...,k`` (for sweeps)."""
    import sys

    from panns_lightning.shardset.manifest import read_manifest

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m panns_lightning.shardset.folds SHARD_DIR", file=sys.stderr)
        return 2
    try:
        print(",".join(str(fold) for fold in fold_numbers(read_manifest(args[0], check_files=False))))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

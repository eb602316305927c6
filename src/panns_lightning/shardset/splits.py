"""Train / val / test splits inside ONE shard set: clips carry ``split``, the manifest a ``splits`` index.

Your own data (``panns-prepare folder`` / ``csv``) is converted into one shard set, like the
cross-validation datasets; instead of folds it may carry a train / val / test split, either given
by the source (a ``split`` column, ``ROOT/train|val|test/`` folders) or held out, stratified, at
conversion. Every clip's json carries ``"split": "train" | "val" | "test"`` and the manifest a
``splits`` entry read back from the written shards (so clips that failed to decode never count)::

    "splits": {
      "field": "split", "names": ["train", "val", "test"], "description": "...",
      "num_clips": {"train": 80, "val": 10, "test": 10},
      "class_counts": {"train": [..one int per label..], ...},
      "keys": {"train": ["dog_a1", ...], ...},      # tar member keys per split
      "held_out": {"val": {"fraction": 0.1, "from": "train", ...}}   # only splits made at conversion
    }

:func:`split_selection` picks one split from the manifest alone, as :func:`.folds.fold_selection`
picks a fold; the DataModule reads ``train_dir`` / ``val_dir`` / ``test_dir`` through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from panns_lightning.shardset.folds import FoldSelection, read_clip_field
from panns_lightning.shardset.manifest import Manifest

SPLIT_FIELD = "split"
MANIFEST_KEY = "splits"
SPLIT_NAMES = ("train", "val", "test")
SPLIT_SYNONYMS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
}
"""Accepted spellings (case-insensitive) of a split name in a CSV cell or a folder name."""


def normalise_split(value: str) -> str | None:
    """``train`` / ``val`` / ``test`` for an accepted spelling, else None."""
    return SPLIT_SYNONYMS.get(value.strip().lower())


def has_splits(manifest: Manifest) -> bool:
    """Whether the shard set records a train / val / test split."""
    entry = manifest.extra.get(MANIFEST_KEY)
    return isinstance(entry, Mapping) and isinstance(entry.get("keys"), Mapping)


def split_index(manifest: Manifest, *, description: str, held_out: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's ``splits`` entry, read back from the written shards."""
    if manifest.root is None:
        raise ValueError("manifest has no root directory")
    per_shard = read_clip_field(
        Path(manifest.root),
        [shard.name for shard in manifest.shards],
        SPLIT_FIELD,
        lambda value: value in SPLIT_NAMES,
        "'train' / 'val' / 'test'",
    )
    keys: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    class_counts = {name: [0] * manifest.num_classes for name in SPLIT_NAMES}
    for clips in per_shard.values():
        for key, (split, labels) in clips.items():
            keys[split].append(key)
            for label in labels:
                class_counts[split][label] += 1
    names = [name for name in SPLIT_NAMES if keys[name]]
    entry: dict[str, Any] = {
        "field": SPLIT_FIELD,
        "names": names,
        "description": description,
        "num_clips": {name: len(keys[name]) for name in names},
        "class_counts": {name: class_counts[name] for name in names},
        "keys": {name: sorted(keys[name]) for name in names},
    }
    if held_out:
        entry["held_out"] = dict(held_out)
    return entry


def split_selection(manifest: Manifest | Mapping[str, Any], split: str, *, where: str = "manifest") -> FoldSelection:
    """The clips of ``split`` ("train", "val" or "test"); ``ValueError`` naming ``where`` if it has none."""
    if isinstance(manifest, Manifest):
        manifest = manifest.to_json()
    entry = manifest.get(MANIFEST_KEY)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("keys"), Mapping):
        raise ValueError(
            f"{where} has no '{MANIFEST_KEY}' index (clip keys per train / val / test split); data.use_splits=true "
            "needs a shard set made by panns-prepare folder / csv with splits"
        )
    available = [name for name in SPLIT_NAMES if name in entry["keys"]]
    if split not in available:
        role = {"val": "data.val_dir", "test": "data.test_dir"}.get(split, "data.train_dir")
        raise ValueError(
            f"{where} has no '{split}' split (it has {', '.join(available)}): set {role}=null, or convert again "
            f"with a {split} split (--{split}-fraction)"
        )
    keys = frozenset(entry["keys"][split])
    counts = tuple(int(n) for n in entry["class_counts"][split])
    return FoldSelection(keys=keys, class_counts=counts, num_clips=len(keys))


def split_table(entry: Mapping[str, Any], label_names: list[str]) -> str:
    """A plain-text summary of the split for converter output (and classes a split lacks)."""
    lines = ["splits: " + ", ".join(f"{name} {n}" for name, n in entry["num_clips"].items())]
    for name, how in (entry.get("held_out") or {}).items():
        pool = "all clips" if how["from"] == "all" else f"the {how['from']} clips"
        lines.append(f"  {name}: {how['fraction']:g} of {pool} held out, stratified by label")
    for name, counts in entry["class_counts"].items():
        empty = [label_names[c] for c, n in enumerate(counts) if n == 0]
        if empty:
            lines.append(f"  {name} has no clip of: {', '.join(empty[:8])}{' ...' if len(empty) > 8 else ''}")
    return "\n".join(lines)

"""The class list: AudioSet's ``class_labels_indices.csv`` and the manifest's ``labels`` entries.

One :class:`LabelSet` is the single source of truth for index ↔ mid ↔ display name; it travels
into the shard manifest (and from there into checkpoints).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

LABEL_CSV_HEADER = ("index", "mid", "display_name")


class LabelFileError(ValueError):
    """A label CSV (or manifest label list) that does not have the expected shape."""


@dataclass(frozen=True)
class LabelSet:
    """Ordered classes: position ``i`` is class index ``i``."""

    mids: tuple[str, ...]
    names: tuple[str, ...]
    index_of: Mapping[str, int] = field(repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.mids) != len(self.names):
            raise ValueError(f"{len(self.mids)} mids but {len(self.names)} names")
        if not self.index_of:
            object.__setattr__(self, "index_of", {mid: i for i, mid in enumerate(self.mids)})

    def __len__(self) -> int:
        return len(self.mids)

    def to_manifest(self) -> list[dict]:
        """The manifest's ``labels`` list: ``[{"index", "mid", "name"}, ...]``."""
        return [{"index": i, "mid": m, "name": n} for i, (m, n) in enumerate(zip(self.mids, self.names))]

    @classmethod
    def from_manifest(cls, labels: Sequence[Mapping]) -> "LabelSet":
        """Rebuild from a manifest ``labels`` list, checking indices run 0..n-1."""
        for position, entry in enumerate(labels):
            if entry.get("index") != position:
                raise LabelFileError(f"labels[{position}] has index {entry.get('index')!r}, expected {position}")
        return cls(tuple(str(e["mid"]) for e in labels), tuple(str(e["name"]) for e in labels))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> "LabelSet":
        """Build from ``(mid, display_name)`` pairs in index order."""
        pairs = list(pairs)
        return cls(tuple(m for m, _ in pairs), tuple(n for _, n in pairs))


def read_label_csv(path: str | os.PathLike) -> LabelSet:
    """Parse ``index,mid,display_name`` (display names quoted, may hold commas)."""
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"{path}: label file not found")
    mids: list[str] = []
    names: list[str] = []
    seen: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(cell.strip() for cell in header) != LABEL_CSV_HEADER:
            raise LabelFileError(f"{path}:1: expected header {','.join(LABEL_CSV_HEADER)!r}, found {header!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise LabelFileError(
                    f"{path}:{line}: expected 3 fields (index,mid,display_name), found {len(row)}: {row!r}"
                )
            index_text, mid, name = (cell.strip() for cell in row)
            if index_text != str(len(mids)):
                raise LabelFileError(f"{path}:{line}: expected index {len(mids)}, found {index_text!r}")
            if not mid:
                raise LabelFileError(f"{path}:{line}: empty mid")
            if mid in seen:
                raise LabelFileError(f"{path}:{line}: mid {mid!r} already defined on line {seen[mid]}")
            seen[mid] = line
            mids.append(mid)
            names.append(name)
    if not mids:
        raise LabelFileError(f"{path}: no classes after the header")
    return LabelSet(tuple(mids), tuple(names))


def write_label_csv(labels: LabelSet, path: str | os.PathLike) -> None:
    """Write AudioSet's layout: display names always quoted, as in the official file."""
    lines = [",".join(LABEL_CSV_HEADER)]
    for index, (mid, name) in enumerate(zip(labels.mids, labels.names)):
        lines.append(f'{index},{mid},"{name.replace(chr(34), chr(34) * 2)}"')
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def multi_hot(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Class indices → float32 multi-hot of length ``num_classes`` (a batch's target); ``ValueError`` on an index out of range.

    The indices come from a shard's ``.json`` member, so they are checked, not trusted.
    """
    target = np.zeros(num_classes, dtype=np.float32)
    for index in labels:
        if not 0 <= index < num_classes:
            raise ValueError(f"label index {index} outside 0..{num_classes - 1}")
        target[index] = 1.0
    return target

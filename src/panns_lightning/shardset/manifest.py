"""``manifest.json``: the typed :class:`Manifest`, its one reader and its writer.

Every part of the project that needs to know what a shard set holds reads it here: the
converters (:mod:`.writer`, :mod:`.folds`), the stream (``data/``), the preflight checks and
inference. :func:`read_manifest` validates the whole file (keys, types, counts that add up), so a
damaged or hand-edited manifest fails with one message naming the file and the entry;
:func:`parse_manifest` is the same check for a manifest fetched from a URL (``data/remote.py``).

A manifest is data from whoever made the set, so this is also the set's trust boundary: a shard
name must be a plain file name inside the set (:func:`~.format.shard_name_problem`: no ``pipe:``
command, no scheme, no separator, no ``..``), sizes that become allocations (``sample_rate``,
``clip_samples``) are bounded, and a manifest larger than ``max_bytes`` is not read. Whatever the
text holds, the reader raises :class:`ManifestError` or returns a checked :class:`Manifest`
(tests/test_manifest_fuzz.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from panns_lightning.atomic import atomic_write
from panns_lightning.shardset.format import (
    AUDIO_MEMBER_EXTENSION,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_CLIP_SECONDS,
    MAX_MANIFEST_BYTES,
    MAX_SAMPLE_RATE,
    RESAMPLE_MANIFEST_KEY,
    STORAGES,
    shard_name_problem,
)
from panns_lightning.shardset.records import SkippedClip


class ShardSetError(ValueError):
    """A shard set directory or manifest is missing or does not follow docs/architecture.md."""


class ManifestError(ShardSetError):
    """A manifest.json that is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ShardInfo:
    """One entry of the manifest's ``shards``; ``class_counts`` is None where a manifest omits it."""

    name: str
    num_clips: int
    class_counts: list[int] | None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "num_clips": self.num_clips}
        if self.class_counts is not None:
            entry["class_counts"] = list(self.class_counts)
        return entry


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` as a dataclass; ``root`` is the directory it was read from or written to."""

    dataset: str
    split: str
    sample_rate: int
    clip_samples: int
    storage: str
    multilabel: bool
    labels: list[dict[str, Any]]
    num_clips: int
    class_counts: list[int]
    shards: list[ShardInfo]
    skipped: list[SkippedClip]
    num_skipped: int
    created_by: str
    created_at: str
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    root: Path | None = field(default=None, compare=False)

    @property
    def label_names(self) -> list[str]:
        return [entry["name"] for entry in self.labels]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def resample_method(self) -> str:
        """``sinc`` or ``decimate`` (see :data:`RESAMPLE_MANIFEST_KEY`)."""
        return str(self.extra.get(RESAMPLE_MANIFEST_KEY, "sinc"))

    @property
    def audio_extension(self) -> str:
        """The tar member extension holding audio: ``npy`` (int16) or ``flac``."""
        return AUDIO_MEMBER_EXTENSION[self.storage]

    def shard_paths(self) -> list[Path]:
        """Absolute shard paths (requires ``root``)."""
        if self.root is None:
            raise ManifestError("manifest has no root directory; read it with read_manifest()")
        return [self.root / shard.name for shard in self.shards]

    def to_json(self) -> dict[str, Any]:
        core = {
            "format_version": self.format_version,
            "dataset": self.dataset,
            "split": self.split,
            "sample_rate": self.sample_rate,
            "clip_samples": self.clip_samples,
            "storage": self.storage,
            "multilabel": self.multilabel,
            "labels": self.labels,
            "num_clips": self.num_clips,
            "class_counts": self.class_counts,
            "shards": [shard.to_json() for shard in self.shards],
            "skipped": [entry.to_json() for entry in self.skipped],
            "num_skipped": self.num_skipped,
            "created_by": self.created_by,
            "created_at": self.created_at,
        }
        return {**core, **self.extra}


def read_manifest(
    dir_or_path: str | os.PathLike, *, check_files: bool = True, max_bytes: int = MAX_MANIFEST_BYTES
) -> Manifest:
    """Load and validate ``manifest.json`` (a shard directory or the file itself).

    ``check_files=False`` skips checking that the listed shards exist: the stream reads shards
    from URL overrides, and counts a missing shard against the error budget instead. A file
    larger than ``max_bytes`` is refused unread (``data.max_manifest_bytes``).
    """
    path = Path(dir_or_path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    elif path.name != MANIFEST_NAME and not path.exists():
        raise ManifestError(f"shard set directory {path} does not exist")
    if not path.is_file():
        raise ManifestError(
            f"{path} not found: a shard set directory must hold {MANIFEST_NAME} "
            "(it is written last, so its absence means an incomplete conversion)"
        )
    try:
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except OSError as error:
        raise ManifestError(f"{path}: cannot read JSON ({error})") from error
    if len(data) > max_bytes:
        raise ManifestError(f"{path}: larger than max_manifest_bytes={max_bytes}; not read")
    manifest = parse_manifest(data, str(path), root=path.parent)
    if check_files:
        missing = [p.name for p in manifest.shard_paths() if not p.is_file()]
        if missing:
            raise ManifestError(
                f"{path}: {len(missing)} listed shard(s) missing from {path.parent}: {', '.join(missing[:5])}"
            )
    return manifest


def parse_manifest(text: str | bytes, where: str, *, root: Path | None = None) -> Manifest:
    """Validate the content of a ``manifest.json`` read elsewhere (e.g. fetched over HTTP).

    ``where`` names it in error messages; ``root`` is the directory it describes, if local.
    :func:`read_manifest` reads a file through this, so both check alike.
    """
    try:
        data = json.loads(text)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise ManifestError(f"{where}: cannot read JSON ({' '.join(str(error).split())[:200]})") from None
    except RecursionError:
        raise ManifestError(f"{where}: cannot read JSON (nested too deeply)") from None
    try:
        return _manifest_from_json(data, where, root)
    except RecursionError:  # a deeply nested value quoted in a message
        raise ManifestError(f"{where}: an entry is nested too deeply") from None


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest`` into its ``root`` as ``manifest.json``, atomically; returns the path."""
    if manifest.root is None:
        raise ManifestError("manifest has no root directory to be written into")
    path = manifest.root / MANIFEST_NAME
    atomic_write(path, json.dumps(manifest.to_json(), indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# helpers

DATA_KEYS = frozenset(
    "format_version sample_rate clip_samples storage multilabel labels num_clips class_counts shards".split()
)
"""What a reader needs to use the data: required in every manifest."""
PROVENANCE_KEYS = frozenset("dataset split skipped num_skipped created_by created_at".split())
"""Where the data came from: the writer always writes them; a reader accepts a manifest without them."""
CORE_KEYS = DATA_KEYS | PROVENANCE_KEYS


def checked_labels(labels: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's label list, checked: ``[{"index": i, "mid": ..., "name": ...}]`` in index order."""
    checked = []
    for position, entry in enumerate(labels):
        if entry.get("index") != position or "mid" not in entry or "name" not in entry:
            raise ValueError(
                f"labels[{position}] must be {{'index': {position}, 'mid': ..., 'name': ...}}, got {_quote(entry)}"
            )
        checked.append({"index": position, "mid": str(entry["mid"]), "name": str(entry["name"])})
    if not checked:
        raise ValueError("labels is empty: a shard set needs at least one class")
    return checked


def _manifest_from_json(data: Any, where: str, root: Path | None) -> Manifest:
    def fail(message: str) -> ManifestError:
        return ManifestError(f"{where}: {message}")

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object, found {type(data).__name__}")
    missing = sorted(DATA_KEYS - set(data))
    if missing:
        raise fail(f"lacks required fields, missing keys: {', '.join(missing)}")
    data = {"dataset": "", "split": "", "skipped": [], "created_by": "", "created_at": "", **data}
    data.setdefault("num_skipped", len(data["skipped"]) if isinstance(data["skipped"], list) else 0)
    if not _is_count(data["format_version"]) or data["format_version"] != FORMAT_VERSION:
        raise fail(f"format_version {_quote(data['format_version'])} is not supported (expected {FORMAT_VERSION})")
    for key in ("sample_rate", "clip_samples", "num_clips", "num_skipped"):
        if not _is_count(data[key]):
            raise fail(f"{key!r} must be a non-negative integer, found {_quote(data[key])}")
    if not 0 < data["sample_rate"] <= MAX_SAMPLE_RATE:
        raise fail(f"'sample_rate' must be in 1..{MAX_SAMPLE_RATE} Hz, found {data['sample_rate']}")
    if not 0 < data["clip_samples"] <= MAX_CLIP_SECONDS * data["sample_rate"]:
        raise fail(
            f"'clip_samples' must be in 1..{MAX_CLIP_SECONDS} s x sample_rate "
            f"= {MAX_CLIP_SECONDS * data['sample_rate']}, found {data['clip_samples']}"
        )
    if data["storage"] not in STORAGES:
        raise fail(f"storage must be one of {STORAGES}, found {_quote(data['storage'])}")
    if not isinstance(data["multilabel"], bool):
        raise fail(f"'multilabel' must be true or false, found {_quote(data['multilabel'])}")
    try:
        labels = checked_labels(data["labels"])
    except (ValueError, AttributeError, TypeError) as error:
        raise fail(f"bad 'labels': {error}") from None
    num_classes = len(labels)

    def counts(value: Any, where: str) -> list[int]:
        """One non-negative count per label."""
        if not isinstance(value, list) or len(value) != num_classes or not all(_is_count(v) for v in value):
            raise fail(f"{where} must be {num_classes} non-negative integers (one per label), found {_quote(value)}")
        return value

    class_counts = counts(data["class_counts"], "class_counts")
    shards = []
    if not isinstance(data["shards"], list) or not data["shards"]:
        raise fail("'shards' must be a non-empty list")
    first_index: dict[str, int] = {}
    for i, entry in enumerate(data["shards"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not _is_count(entry.get("num_clips"))
        ):
            raise fail(
                f"shards[{i}] must have 'name' (str), 'num_clips' (int >= 0) and 'class_counts', found {_quote(entry)}"
            )
        problem = shard_name_problem(entry["name"])
        if problem is not None:
            raise fail(f"shards[{i}].name {problem}")
        if entry["name"] in first_index:
            raise fail(f"shards[{i}].name {entry['name']!r} repeats shards[{first_index[entry['name']]}].name")
        first_index[entry["name"]] = i
        shard_counts = entry.get("class_counts")
        shard_counts = None if shard_counts is None else counts(shard_counts, f"shards[{i}].class_counts")
        shards.append(ShardInfo(entry["name"], entry["num_clips"], shard_counts))
    if sum(s.num_clips for s in shards) != data["num_clips"]:
        raise fail(f"num_clips is {data['num_clips']} but the shards hold {sum(s.num_clips for s in shards)}")
    if all(s.class_counts is not None for s in shards):
        summed = [sum(s.class_counts[c] for s in shards) for c in range(num_classes)]  # type: ignore[index]
        if summed != class_counts:
            raise fail("class_counts differ from the sum of the shards' class_counts")
    skipped = []
    for i, entry in enumerate(data["skipped"] if isinstance(data["skipped"], list) else [None]):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("key", "source", "reason")):
            raise fail(f"skipped[{i}] must have string 'key', 'source' and 'reason', found {_quote(entry)}")
        skipped.append(SkippedClip(entry["key"], entry["source"], entry["reason"]))
    if data["num_skipped"] != len(skipped):
        raise fail(f"num_skipped is {data['num_skipped']} but 'skipped' lists {len(skipped)}")
    return Manifest(
        dataset=str(data["dataset"]),
        split=str(data["split"]),
        sample_rate=data["sample_rate"],
        clip_samples=data["clip_samples"],
        storage=data["storage"],
        multilabel=data["multilabel"],
        labels=labels,
        num_clips=data["num_clips"],
        class_counts=class_counts,
        shards=shards,
        skipped=skipped,
        num_skipped=data["num_skipped"],
        created_by=str(data["created_by"]),
        created_at=str(data["created_at"]),
        format_version=data["format_version"],
        extra={k: v for k, v in data.items() if k not in CORE_KEYS},
        root=root,
    )


def _is_count(value: Any) -> bool:
    """A non-negative ``int`` (JSON ``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _quote(value: Any, width: int = 80) -> str:
    """The start of ``value``'s repr, on one line: what a message quotes from untrusted input."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."

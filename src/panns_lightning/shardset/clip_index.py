"""Where each clip's audio lies inside its shard: the clip index that lets a shard set be read at random.

A tar shard is a stream format, but a member's bytes sit at a fixed offset in the file. The
writer records, for every clip, its shard, the byte offset and size of its audio member, its
key and its labels, in ``clip_index.npz`` beside ``manifest.json`` (written before the manifest,
atomically). With it one drawn clip costs one ``pread`` of a local file, or one HTTP ``Range``
request, instead of a walk through the shard. A set converted before the index existed gets it
built once by :func:`build_clip_index`, one pass over the tar headers (audio bytes are stepped
over, not read).

The index comes with the data, so it is untrusted like the manifest (``docs/security.md``):
:func:`load_clip_index` refuses a file that is not a plain, uncompressed ``.npz`` of the expected
arrays, whose size exceeds what the manifest's clip and label counts allow, whose per-shard and
per-class counts disagree with the manifest, or whose offsets and sizes fall outside the shard
sizes it records or over ``max_member_bytes``. The recorded shard sizes are checked again against
the files when they are opened, so an index left behind by another conversion is caught.
Labels are int32 in CSR form, keys one UTF-8 blob: AudioSet's 2 M clips cost ~100 MB, not the
~1 GB of Python lists.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panns_lightning.atomic import atomic_open
from panns_lightning.shardset.format import (
    AUDIO_MEMBER_EXTENSION,
    LABELS_MEMBER_EXTENSION,
    MAX_MEMBER_BYTES,
    parse_labels,
)
from panns_lightning.shardset.manifest import Manifest, ShardSetError

log = logging.getLogger(__name__)

CLIP_INDEX_NAME = "clip_index.npz"
CLIP_INDEX_VERSION = 1
TAR_BLOCK = 512
# Bytes an index may hold beyond its arrays' payload (npz/zip headers), and per clip for its key.
_INDEX_OVERHEAD = 1 << 20
_MAX_KEY_BYTES = 1024
_ARRAYS = ("version", "shard_bytes", "shard", "offset", "size", "label_offsets", "label_values", "key_offsets", "keys")
# A pax header or GNU long name is read whole by tarfile: refuse one over this before it is.
_MAX_TAR_HEADER_BYTES = 1 << 20


class ClipIndexError(ShardSetError):
    """A clip index that cannot be used: unreadable, inconsistent with its manifest, or stale."""


@dataclass(frozen=True)
class ClipIndex:
    """Per clip (in shard order): shard number, audio member offset and size, labels (CSR), key."""

    shard_bytes: np.ndarray  # int64[S]: each shard's file size when indexed
    shard: np.ndarray  # int32[N]
    offset: np.ndarray  # int64[N]: first byte of the audio member's data
    size: np.ndarray  # int64[N]
    label_offsets: np.ndarray  # int64[N + 1]
    label_values: np.ndarray  # int32[M]
    key_offsets: np.ndarray  # int64[N + 1]
    keys: np.ndarray  # uint8[K]: UTF-8 member stems, concatenated

    @property
    def num_clips(self) -> int:
        return int(self.shard.shape[0])

    def key(self, clip: int) -> str:
        return bytes(self.keys[self.key_offsets[clip] : self.key_offsets[clip + 1]]).decode("utf-8")

    def labels(self, clip: int) -> tuple[int, ...]:
        return tuple(int(c) for c in self.label_values[self.label_offsets[clip] : self.label_offsets[clip + 1]])

    def class_members(self, num_classes: int, keep: np.ndarray | None = None) -> list[np.ndarray]:
        """Per class, the clips holding it (int32, ascending): what PANNs' sampler draws from.

        ``keep`` (bool[N]) restricts them to a subset of clips (a fold or split).
        """
        clip_of_value = np.repeat(np.arange(self.num_clips, dtype=np.int32), np.diff(self.label_offsets))
        values = self.label_values
        if keep is not None:
            chosen = keep[clip_of_value]
            clip_of_value, values = clip_of_value[chosen], values[chosen]
        order = np.argsort(values, kind="stable")
        bounds = np.searchsorted(values[order], np.arange(num_classes + 1))
        return [clip_of_value[order[bounds[c] : bounds[c + 1]]].copy() for c in range(num_classes)]

    def all_keys(self) -> list[str]:
        return [self.key(clip) for clip in range(self.num_clips)]


class ClipIndexBuilder:
    """Collects (shard, offset, size, labels, key) while shards are written or walked; :meth:`finish` makes the index."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, int, int, tuple[int, ...], bytes]] = []
        self._shard_bytes: list[int] = []

    def add(self, shard: int, offset: int, size: int, labels: Any, key: str) -> None:
        self._rows.append((shard, offset, size, tuple(int(c) for c in labels), key.encode("utf-8")))

    def end_shard(self, file_bytes: int) -> None:
        """The shard just added is complete and ``file_bytes`` long (shards are numbered in order)."""
        self._shard_bytes.append(int(file_bytes))

    def finish(self) -> ClipIndex:
        rows = self._rows
        labels = [row[3] for row in rows]
        keys = [row[4] for row in rows]
        return ClipIndex(
            shard_bytes=np.asarray(self._shard_bytes, dtype=np.int64),
            shard=np.asarray([row[0] for row in rows], dtype=np.int32),
            offset=np.asarray([row[1] for row in rows], dtype=np.int64),
            size=np.asarray([row[2] for row in rows], dtype=np.int64),
            label_offsets=np.concatenate([[0], np.cumsum([len(x) for x in labels], dtype=np.int64)]).astype(np.int64),
            label_values=np.asarray([c for x in labels for c in x], dtype=np.int32),
            key_offsets=np.concatenate([[0], np.cumsum([len(k) for k in keys], dtype=np.int64)]).astype(np.int64),
            keys=np.frombuffer(b"".join(keys), dtype=np.uint8).copy(),
        )


def data_offset_after(tar: tarfile.TarFile, size: int) -> int:
    """Where the data of the member ``tar`` just wrote (``size`` bytes) starts: its end minus the padded size."""
    return int(tar.offset) - -(-size // TAR_BLOCK) * TAR_BLOCK


def write_clip_index(index: ClipIndex, directory: str | os.PathLike[str]) -> Path:
    """Write ``DIR/clip_index.npz`` atomically (uncompressed: its size is what its arrays hold)."""
    path = Path(directory) / CLIP_INDEX_NAME
    arrays = {name: getattr(index, name) for name in _ARRAYS if name != "version"}
    with atomic_open(path) as handle:
        np.savez(handle, version=np.asarray([CLIP_INDEX_VERSION], dtype=np.int64), **arrays)
    return path


def max_index_bytes(manifest: Manifest) -> int:
    """The largest index ``manifest``'s set can need: fixed-size arrays per clip and label, keys up to 1 KB."""
    labels = sum(int(count) for count in manifest.class_counts)
    per_clip = 4 + 8 + 8 + 8 + 8 + _MAX_KEY_BYTES
    return _INDEX_OVERHEAD + manifest.num_clips * per_clip + labels * 4 + len(manifest.shards) * 8


def parse_clip_index(
    data: bytes, manifest: Manifest, where: str, *, max_member_bytes: int = MAX_MEMBER_BYTES
) -> ClipIndex:
    """Read and check an index's bytes against its manifest; :class:`ClipIndexError` names ``where`` and the problem."""
    limit = max_index_bytes(manifest)
    if len(data) > limit:
        raise ClipIndexError(f"{where}: {len(data)} bytes, over the {limit} its manifest's clips can need")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data):
                    raise ClipIndexError(f"{where}: member {info.filename[:60]!r} is compressed or oversized")
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            missing = [name for name in _ARRAYS if name not in loaded.files]
            if missing:
                raise ClipIndexError(f"{where}: not a clip index (missing arrays {missing})")
            arrays = {name: loaded[name] for name in _ARRAYS}
    except ClipIndexError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure of untrusted bytes is "unreadable"
        raise ClipIndexError(f"{where}: unreadable ({type(error).__name__}: {error})") from None
    if arrays["version"].tolist() != [CLIP_INDEX_VERSION]:
        raise ClipIndexError(f"{where}: version {arrays['version'].tolist()[:3]}, expected [{CLIP_INDEX_VERSION}]")
    index = ClipIndex(**{name: arrays[name] for name in _ARRAYS if name != "version"})
    _check_index(index, manifest, where, max_member_bytes)
    return index


def _check_index(index: ClipIndex, manifest: Manifest, where: str, max_member_bytes: int) -> None:
    """Every shape, dtype, bound and count a reader relies on; the first problem found is raised."""

    def fail(problem: str) -> None:
        raise ClipIndexError(f"{where}: {problem}; delete it to have it rebuilt from the shards")

    expected = {
        "shard_bytes": np.int64,
        "shard": np.int32,
        "offset": np.int64,
        "size": np.int64,
        "label_offsets": np.int64,
        "label_values": np.int32,
        "key_offsets": np.int64,
        "keys": np.uint8,
    }
    for name, dtype in expected.items():
        array = getattr(index, name)
        if array.dtype != dtype or array.ndim != 1:
            fail(f"array {name} is {array.dtype}{list(array.shape)}, expected a 1-d {np.dtype(dtype)}")
    n, shards = manifest.num_clips, len(manifest.shards)
    if index.num_clips != n or index.offset.shape[0] != n or index.size.shape[0] != n:
        fail(f"{index.num_clips} clips, the manifest lists {n}")
    if index.shard_bytes.shape[0] != shards:
        fail(f"{index.shard_bytes.shape[0]} shards, the manifest lists {shards}")
    if index.label_offsets.shape[0] != n + 1 or index.key_offsets.shape[0] != n + 1:
        fail("label or key offsets do not have one entry per clip plus one")
    if n and (index.shard.min() < 0 or index.shard.max() >= shards):
        fail("a clip names a shard outside the manifest's list")
    per_shard = np.bincount(index.shard, minlength=shards).tolist()
    listed = [shard.num_clips for shard in manifest.shards]
    if per_shard != listed:
        bad = next(i for i, (a, b) in enumerate(zip(per_shard, listed)) if a != b)
        fail(
            f"shard {manifest.shards[bad].name} has {per_shard[bad]} clips in the index, {listed[bad]} in the manifest"
        )
    for name, offsets, total in (
        ("label", index.label_offsets, index.label_values.shape[0]),
        ("key", index.key_offsets, index.keys.shape[0]),
    ):
        if offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
            fail(f"{name} offsets are not a non-decreasing list from 0 to {total}")
    if np.any(np.diff(index.key_offsets) > _MAX_KEY_BYTES) or np.any(np.diff(index.key_offsets) == 0):
        fail(f"a key is empty or over {_MAX_KEY_BYTES} bytes")
    try:
        index.all_keys()  # every key decodes on its own (offsets do not split a character)
    except UnicodeDecodeError:
        fail("a key is not UTF-8")
    values = index.label_values
    if values.size and (values.min() < 0 or values.max() >= manifest.num_classes):
        fail(f"a label index lies outside 0..{manifest.num_classes - 1}")
    # Clips per class, a clip counted once per class even if it lists it twice (as the manifest counts).
    clip_of_value = np.repeat(np.arange(n, dtype=np.int64), np.diff(index.label_offsets))
    pairs = np.unique(clip_of_value * manifest.num_classes + values)
    counts = np.bincount(pairs % manifest.num_classes, minlength=manifest.num_classes)
    if counts.tolist() != [int(c) for c in manifest.class_counts]:
        fail("its per-class clip counts differ from the manifest's class_counts")
    size, offset = index.size, index.offset
    if np.any(size < 1) or np.any(size > max_member_bytes):
        fail(f"a member size lies outside 1..max_member_bytes={max_member_bytes}")
    if np.any(index.shard_bytes < 0) or np.any(offset < TAR_BLOCK) or np.any(offset % TAR_BLOCK):
        fail("an offset is not a tar data block or a shard size is negative")
    if n and np.any(offset + size > index.shard_bytes[index.shard]):
        fail("a member reaches past the end of its shard")


def load_clip_index(
    directory: str | os.PathLike[str], manifest: Manifest, *, max_member_bytes: int = MAX_MEMBER_BYTES
) -> ClipIndex | None:
    """``DIR/clip_index.npz`` checked against ``manifest``; None when the set has none (converted before it existed)."""
    path = Path(directory) / CLIP_INDEX_NAME
    if not path.is_file():
        return None
    limit = max_index_bytes(manifest)
    if path.stat().st_size > limit:
        raise ClipIndexError(f"{path}: {path.stat().st_size} bytes, over the {limit} its manifest's clips can need")
    return parse_clip_index(path.read_bytes(), manifest, str(path), max_member_bytes=max_member_bytes)


def build_clip_index(
    directory: str | os.PathLike[str], manifest: Manifest, *, max_member_bytes: int = MAX_MEMBER_BYTES
) -> ClipIndex:
    """The index of a local shard set that has none: one pass over its tar headers (audio is stepped over).

    Reads each ``.json`` member (labels) and records each audio member's data offset; a clip
    missing either member is left out, so the counts check against the manifest then fails
    with a message naming the shard. Does not write it (:func:`write_clip_index` does).
    """
    directory = Path(directory)
    audio_ext = AUDIO_MEMBER_EXTENSION[manifest.storage]
    builder = ClipIndexBuilder()
    for number, shard in enumerate(manifest.shards):
        path = directory / shard.name
        found: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        try:
            with tarfile.open(path, mode="r:", tarinfo=_BoundedTarInfo) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    stem, _, ext = member.name.rpartition("/")[2].partition(".")
                    key = f"{member.name.rpartition('/')[0]}/{stem}" if "/" in member.name else stem
                    if key not in found:
                        found[key] = {}
                        order.append(key)
                    if ext == audio_ext:
                        found[key]["audio"] = (member.offset_data, member.size)
                    elif ext == LABELS_MEMBER_EXTENSION and member.size <= max_member_bytes:
                        handle = tar.extractfile(member)
                        found[key]["labels"] = parse_labels(handle.read() if handle is not None else b"")
        except (OSError, tarfile.TarError, ValueError) as error:
            raise ClipIndexError(f"cannot index {path}: {type(error).__name__}: {error}") from None
        for key in order:
            parts = found[key]
            if "audio" in parts and "labels" in parts:
                builder.add(number, parts["audio"][0], parts["audio"][1], parts["labels"], key)
        builder.end_shard(path.stat().st_size)
    index = builder.finish()
    _check_index(index, manifest, f"index built from {directory}", max_member_bytes)
    return index


def ensure_clip_index(
    directory: str | os.PathLike[str], manifest: Manifest, *, max_member_bytes: int = MAX_MEMBER_BYTES
) -> ClipIndex:
    """The set's index; for a set converted before indexes existed, built once (one pass) and saved beside its manifest."""
    index = load_clip_index(directory, manifest, max_member_bytes=max_member_bytes)
    if index is not None:
        return index
    log.warning(
        "%s has no %s (converted before clip indexes existed): building it once, one pass over %d shards' "
        "tar headers; later runs read it",
        directory,
        CLIP_INDEX_NAME,
        len(manifest.shards),
    )
    index = build_clip_index(directory, manifest, max_member_bytes=max_member_bytes)
    try:
        write_clip_index(index, directory)
    except OSError as error:  # a read-only set still trains; the pass is repeated next run
        log.warning("could not save the clip index in %s (%s): it will be rebuilt next time", directory, error)
    return index


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses extended headers (pax, GNU long names) over 1 MiB before tarfile reads them whole."""

    _EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME)

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in self._EXTENDED and self.size > _MAX_TAR_HEADER_BYTES:
            raise tarfile.ReadError(f"an extended tar header of {self.size} bytes before {self.name[:100]!r}")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    """``python -m panns_lightning.shardset.clip_index DIR...``: write the index of sets converted before it existed.

    For a set served over http(s), run it where the files are, before serving them.
    """
    import argparse

    from panns_lightning.shardset.manifest import read_manifest

    parser = argparse.ArgumentParser(description="Write clip_index.npz for shard sets that have none.")
    parser.add_argument("directories", nargs="+", type=Path)
    parser.add_argument("--max-member-bytes", type=int, default=MAX_MEMBER_BYTES)
    args = parser.parse_args(argv)
    for directory in args.directories:
        manifest = read_manifest(directory, check_files=False)
        index = build_clip_index(directory, manifest, max_member_bytes=args.max_member_bytes)
        print(f"{write_clip_index(index, directory)}: {index.num_clips} clips in {len(manifest.shards)} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

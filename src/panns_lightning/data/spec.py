"""What a stream reads and who reads it: a shard set's :class:`StreamSpec` and a reader's :class:`ReaderSlot`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch.utils.data import get_worker_info

from panns_lightning.data.remote import DEFAULT_HTTP, HttpOptions
from panns_lightning.shardset import Manifest
from panns_lightning.shardset.format import MAX_MEMBER_BYTES


@dataclass(frozen=True)
class StreamSpec:
    """What a stream needs to know about its shard set: where shards are and how clips are stored."""

    urls: tuple[str, ...]
    storage: str
    sample_rate: int
    clip_samples: int
    num_classes: int
    class_counts: tuple[int, ...]
    num_clips: int
    # Per shard (same order as ``urls``), from the manifest: lets slots split passes by expected
    # draws rather than by shard count. None when unknown (e.g. URL overrides of another length).
    shard_clips: tuple[int, ...] | None = None
    shard_class_counts: tuple[tuple[int, ...], ...] | None = None
    # Only clips with these member keys are used (a cross-validation fold); None: all clips.
    # class_counts / num_clips then describe the kept clips.
    keep_keys: frozenset[str] | None = None
    # How http(s):// shards are read (timeout, retries, deadline, size caps).
    http: HttpOptions = DEFAULT_HTTP
    # A tar member over this many bytes is not read (its clip is reported and skipped).
    max_member_bytes: int = MAX_MEMBER_BYTES

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        urls: Sequence[str] | None = None,
        http: HttpOptions = DEFAULT_HTTP,
        max_member_bytes: int = MAX_MEMBER_BYTES,
    ) -> StreamSpec:
        """The spec of a whole shard set: its manifest's shards (or ``urls`` read in their place) and counts.

        Per-shard counts describe the manifest's shards; the train stream uses them (to split
        passes by expected draws) only while ``urls`` lists as many shards.
        """
        # Per-shard counts only when the manifest gives them for every shard (our writer always does).
        complete = all(shard.class_counts is not None for shard in manifest.shards)
        return cls(
            urls=tuple(str(path) for path in manifest.shard_paths()) if urls is None else tuple(urls),
            storage=manifest.storage,
            sample_rate=manifest.sample_rate,
            clip_samples=manifest.clip_samples,
            num_classes=manifest.num_classes,
            class_counts=tuple(manifest.class_counts),
            num_clips=manifest.num_clips,
            shard_clips=tuple(shard.num_clips for shard in manifest.shards) if complete else None,
            shard_class_counts=tuple(tuple(shard.class_counts or ()) for shard in manifest.shards)
            if complete
            else None,
            http=http,
            max_member_bytes=max_member_bytes,
        )


@dataclass(frozen=True)
class ReaderSlot:
    """Which of the ``rank × worker`` readers this is: ``index`` in ``range(count)``."""

    rank: int
    world_size: int
    worker: int
    num_workers: int

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


def current_slot(rank: int, world_size: int) -> ReaderSlot:
    """This process's slot: the given rank, and the DataLoader worker we run in (0 of 1 in-process)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    info = get_worker_info()
    if info is None:
        return ReaderSlot(rank, world_size, 0, 1)
    return ReaderSlot(rank, world_size, info.id, info.num_workers)

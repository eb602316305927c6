"""The val/test stream: every readable clip exactly once over all ranks × workers, in shard order.

Shards in manifest order, split so that all ranks × workers together see every readable clip
exactly once (``shard_schedule.eval_shares_for_slot``); no shuffle, no repeats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.shard_schedule import EvalShardShare, eval_shares_for_slot
from panns_lightning.data.spec import StreamSpec, current_slot
from panns_lightning.data.tar_reader import RawClip, read_shard
from panns_lightning.labels import multi_hot
from panns_lightning.shardset.codec import decode_waveform


class EvalClipStream(IterableDataset):
    """Val/test stream: every readable clip exactly once over all ranks × workers, in shard order.

    Yields ready batches (``batch_size=None`` in the DataLoader); each worker's last batch may be short.
    """

    def __init__(
        self,
        spec: StreamSpec,
        *,
        rank: int,
        world_size: int,
        batch_size: int,
        errors: ErrorLog | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.errors = errors if errors is not None else ErrorLog("eval")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batch: list[tuple[str, np.ndarray, np.ndarray]] = []
        for clip in self._my_clips():
            try:
                waveform, target = decode_clip(clip, self.spec)
            except ValueError as exc:
                self.errors.sample(clip.shard, clip.key, str(exc))
                continue
            batch.append((clip.key, waveform, target))
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
        if batch:
            yield collate(batch)

    def _my_clips(self) -> Iterator[RawClip]:
        slot = current_slot(self.rank, self.world_size)
        for share in eval_shares_for_slot(len(self.spec.urls), slot.index, slot.count):
            url = self.spec.urls[share.shard_index]
            clips = read_shard(
                url,
                storage=self.spec.storage,
                with_audio=True,
                errors=self.errors,
                http=self.spec.http,
                max_member_bytes=self.spec.max_member_bytes,
            )
            keep = self.spec.keep_keys
            mine = 0
            for position, clip in enumerate(clips):
                # Position counts every clip, kept or not, so the exactly-once split is unchanged.
                if position % share.stride == share.offset:
                    mine += 1
                    if keep is None or clip.key in keep:
                        self.errors.read_samples.add()
                        yield clip
            self._count_lost(share, url, mine)

    def _count_lost(self, share: EvalShardShare, url: str, read: int) -> None:
        """A broken or missing shard: count the clips of this share it should have held (error budget).

        Known from the manifest's per-shard counts; not with a fold selection (the manifest does not
        say how many of a shard's clips belong to the fold).
        """
        shard_clips = self.spec.shard_clips
        if url not in self.errors.failed_urls or self.spec.keep_keys is not None:
            return
        if shard_clips is None or len(shard_clips) != len(self.spec.urls):  # URL overrides of another length
            return
        expected = len(range(share.offset, shard_clips[share.shard_index], share.stride))
        if expected > read:
            self.errors.lost_samples.add(expected - read)


def decode_clip(clip: RawClip, spec: StreamSpec) -> tuple[np.ndarray, np.ndarray]:
    """Undecoded clip → (float32 waveform [clip_samples], float32 multi-hot [num_classes])."""
    if clip.audio is None:
        raise ValueError("clip was read without audio (labels-only stream)")
    waveform = decode_waveform(
        clip.audio, storage=spec.storage, sample_rate=spec.sample_rate, clip_samples=spec.clip_samples
    )
    return waveform, multi_hot(clip.labels, spec.num_classes)


def collate(items: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """(key, waveform, target) triples → the batch dict of docs/architecture.md."""
    return {
        "waveform": torch.from_numpy(np.stack([waveform for _, waveform, _ in items])),
        "target": torch.from_numpy(np.stack([target for _, _, target in items])),
        "key": [key for key, _, _ in items],
    }

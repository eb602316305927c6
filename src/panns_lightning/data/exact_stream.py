"""The train set of ``data.sampler=panns``: PANNs' balanced draws, read by random access, as ready batches.

:class:`ExactClipStream` is the counterpart of :class:`~.train_stream.TrainClipStream` and yields
the same batches (``waveform``, ``target``, ``key``; int16 batches, crops, the same crop seeds),
so mixup pairing, augmentation and the error budget downstream are the stream's. What differs is
which clips: the draws of one global :class:`~.exact_sampler.BalancedSequence` (upstream's
sampler, clip for clip), each read with one ``pread`` or ``Range`` request
(:class:`~.random_access.ClipReader`).

Who reads what: rank batch i of epoch e starts at global draw
``draw_position(origin, e, i) + rank × batch_size`` (every step takes ``batch_size × world_size``
draws), and DataLoader worker w makes rank batches ``done + w, done + w + W, ...`` (``done``: the
batches a resumed epoch already trained on), the order in which the DataLoader asks its workers.
Each worker keeps its own copy of the sequence and moves it forward over the other workers' and
ranks' draws without reading them (:meth:`BalancedSequence.skip`). The ``origin`` is (0, 0, 0) on
a fresh run and the checkpoint's sampler state on a resumed one (``AudioShardDataModule.state_dict``).

A drawn clip that cannot be read or decoded is reported (``ErrorLog``) and replaced by another
clip of the same anchor class, picked by a generator seeded by (seed, draw position, attempt):
the replacement depends only on the position, so the global sequence of every other rank and
step is unchanged, and the clip's later draws are skipped quietly as the stream does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from panns_lightning.data.error_log import ErrorLog, NoReadableClipsError
from panns_lightning.data.exact_sampler import BalancedSequence, draw_position
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.random_access import ClipReader
from panns_lightning.data.shared_count import SharedCount
from panns_lightning.data.spec import ReaderSlot, StreamSpec, current_slot
from panns_lightning.data.train_stream import TrainStreamBase, batch_tensor
from panns_lightning.shardset.clip_index import ClipIndex, ClipIndexError
from panns_lightning.shardset.codec import decode_member

log = logging.getLogger(__name__)

# The crop generator's stream id, as in train_stream (crops do not depend on which sampler drew).
_CROP_STREAM = 0x0C
_SUBSTITUTE_STREAM = 0x5B
_MAX_FAILURES_IN_A_ROW = 1000


class ExactClipStream(TrainStreamBase):
    """Endless PANNs-balanced train batches of one rank, ``steps_per_epoch`` per epoch (use ``batch_size=None``)."""

    def __init__(
        self,
        spec: StreamSpec,
        index: ClipIndex,
        *,
        rank: int,
        world_size: int,
        options: StreamOptions | None = None,
        crop_samples: int | None = None,
        epoch: SharedCount | None = None,
        resume_batches: SharedCount | None = None,
        errors: ErrorLog | None = None,
        int16_batches: bool = False,
        origin: tuple[int, int, int] = (0, 0, 0),
        seed: int | None = None,
    ) -> None:
        """``origin``: (epoch, batch, draw position) of a known point of the run; ``seed`` overrides ``options.seed``."""
        super().__init__(
            spec,
            rank=rank,
            world_size=world_size,
            options=options,
            crop_samples=crop_samples,
            epoch=epoch,
            resume_batches=resume_batches,
            errors=errors,
            int16_batches=int16_batches,
        )
        self.index = index
        self.origin = origin
        self.seed = self.options.seed if seed is None else int(seed)
        keep = None
        if spec.keep_keys is not None:
            keep = np.fromiter((key in spec.keep_keys for key in index.all_keys()), dtype=bool, count=index.num_clips)
        self.class_members = index.class_members(spec.num_classes, keep)
        self.reader: ClipReader | None = None  # opened in the worker that reads

    batch_size = property(lambda self: self.options.batch_size)
    steps_per_epoch = property(lambda self: self.options.steps_per_epoch)

    @property
    def draws_per_step(self) -> int:
        """Draws one optimizer step takes from the global sequence: every rank's batch."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch.value = epoch

    def batch_position(self, epoch: int, batch: int) -> int:
        """Global draw position of this rank's ``batch`` of ``epoch``."""
        start = draw_position(
            self.origin, epoch, batch, steps_per_epoch=self.steps_per_epoch, draws_per_step=self.draws_per_step
        )
        return start + self.rank * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_slot(current_slot(self.rank, self.world_size))

    def iter_slot(self, slot: ReaderSlot) -> Iterator[dict[str, Any]]:
        """The batches one DataLoader worker makes this epoch (public so that tests can play every worker)."""
        epoch = self.epoch.value
        done = min(self.resume_batches.value, self.steps_per_epoch)
        if self.reader is None:
            self.reader = ClipReader(self.spec.urls, self.index, self.spec.http)
        sequence = BalancedSequence(self.class_members, seed=self.seed)
        unreadable: set[int] = set()
        for batch in range(done + slot.worker, self.steps_per_epoch, slot.num_workers):
            position = self.batch_position(epoch, batch)
            sequence.skip(position - sequence.position)
            clips, anchors = sequence.draw(self.batch_size)
            crop_rng = np.random.default_rng([self.seed, epoch, slot.index, slot.count, batch, _CROP_STREAM])
            yield self._batch(clips, anchors, position, sequence, crop_rng, unreadable)

    def first_shards(self, slot: ReaderSlot, count: int = 1, epoch: int = 0) -> list[str]:
        """The shards (URLs) of the first ``count`` clips ``slot`` reads in ``epoch``: what ``dry_run=true`` prints."""
        sequence = BalancedSequence(self.class_members, seed=self.seed)
        sequence.skip(self.batch_position(epoch, min(slot.worker, self.steps_per_epoch - 1)))
        clips = sequence.draw(min(count, self.batch_size))[0]
        return [self.spec.urls[int(self.index.shard[clip])] for clip in clips]

    def _batch(
        self,
        clips: np.ndarray,
        anchors: np.ndarray,
        position: int,
        sequence: BalancedSequence,
        rng: np.random.Generator,
        unreadable: set[int],
    ) -> dict[str, Any]:
        spec = self.spec
        length = self.crop_samples or spec.clip_samples
        waveform_tensor = batch_tensor(self.batch_size, length, self.waveform_dtype)
        waveforms = waveform_tensor.numpy()
        targets = np.zeros((self.batch_size, spec.num_classes), dtype=np.float32)
        keys: list[str] = []
        for row, (clip, anchor) in enumerate(zip(clips.tolist(), anchors.tolist())):
            for attempt in range(_MAX_FAILURES_IN_A_ROW + 1):
                if self._decode_into(clip, unreadable, waveforms[row], targets[row], rng):
                    break
                clip = self._substitute(sequence, anchor, position + row, attempt)
            else:
                raise NoReadableClipsError(
                    f"train (data.sampler=panns): {_MAX_FAILURES_IN_A_ROW} draws in a row for class {anchor} could "
                    "not be read or decoded (the warnings above say why)"
                )
            keys.append(self.index.key(clip))
        return {"waveform": waveform_tensor, "target": torch.from_numpy(targets), "key": keys}

    def _substitute(self, sequence: BalancedSequence, anchor: int, position: int, attempt: int) -> int:
        """Another clip of ``anchor`` in place of one that failed: a function of the draw's position only."""
        members = sequence.members(anchor)
        rng = np.random.default_rng([self.seed, position, attempt, _SUBSTITUTE_STREAM])
        return int(members[int(rng.integers(members.shape[0]))])

    def _decode_into(
        self, clip: int, unreadable: set[int], waveform: np.ndarray, target: np.ndarray, rng: np.random.Generator
    ) -> bool:
        """Read and decode ``clip`` (cropped) into its batch row; False (reported once) when it cannot be."""
        if clip in unreadable:
            return False
        assert self.reader is not None
        spec = self.spec
        self.errors.read_samples.add()
        target[:] = 0.0
        try:
            data = self.reader.read(clip)
            samples = decode_member(
                data, storage=spec.storage, sample_rate=spec.sample_rate, clip_samples=spec.clip_samples
            )
        except ClipIndexError:
            raise  # a stale or wrong index is the set's problem, not one clip's
        except (OSError, ValueError) as exc:
            unreadable.add(clip)
            shard = self.spec.urls[int(self.index.shard[clip])]
            self.errors.sample(shard, self.index.key(clip), f"{type(exc).__name__}: {exc}")
            return False
        target[list(self.index.labels(clip))] = 1.0
        self._write_row(samples, waveform, rng)
        return True


def sampler_checkpoint_state(
    origin: tuple[int, int, int], seed: int, epoch: int, processed: int, *, steps_per_epoch: int, draws_per_step: int
) -> dict[str, Any]:
    """What a checkpoint keeps of the sampler: seed, and the epoch, batch and draw position of the next batch.

    ``processed``: batches of ``epoch`` trained on (Lightning's progress); a finished epoch
    means batch 0 of the next.
    """
    if processed >= steps_per_epoch:
        epoch, processed = epoch + 1, 0
    position = draw_position(origin, epoch, processed, steps_per_epoch=steps_per_epoch, draws_per_step=draws_per_step)
    return {"panns_sampler": {"seed": int(seed), "epoch": epoch, "batch": processed, "position": position}}


def restored_sampler_state(state: Any, configured_seed: int) -> tuple[int, tuple[int, int, int]] | None:
    """(seed, origin) from a checkpoint's :func:`sampler_checkpoint_state`; None when it has none."""
    saved = state.get("panns_sampler") if isinstance(state, dict) else None
    if saved is None:
        return None
    values = [saved.get(name) if isinstance(saved, dict) else None for name in ("seed", "epoch", "batch", "position")]
    if not all(isinstance(value, int) and value >= 0 for value in values):
        raise ValueError(f"checkpoint: panns_sampler state {saved!r} is not four non-negative integers")
    seed, epoch, batch, position = values
    if seed != configured_seed:
        log.warning("resuming PANNs' sampler with the checkpoint's seed %d, not data.seed=%d", seed, configured_seed)
    return seed, (epoch, batch, position)

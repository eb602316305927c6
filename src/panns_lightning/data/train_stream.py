"""The train stream: shards → class-balanced, endless batches (``TrainClipStream``).

The pieces it puts together each have a module: the repeat factors and due positions
(``repeats.py``), the shuffle buffer (``buffer.py``), the shard schedule (``shard_schedule.py``); the
val/test stream is ``eval_stream.py``.

Train (``TrainClipStream``), balanced: a clip read from a shard is emitted ``k`` times, ``k`` an
integer rounding of ``ρ·E_i`` with ``E_i = (N/C)·Σ_{c∈labels(i)} 1/n_c`` (global class counts
``n_c`` from the manifest, C = classes with clips, so E has mean 1 and ρ = ``repeat_scale`` is
the mean number of copies per clip read). A clip's draw probability is then ∝ Σ_c 1/n_c, as in
PANNs' BalancedTrainSampler: every class is present in ≥ 1/C of draws in expectation. The fraction
of ρ·E_i is rounded by rotation, not by coin flips: pass p adds one copy iff
``floor(u_i + (p+1)·f_i) > floor(u_i + p·f_i)`` (u_i a per-clip hash), so a clip with f = 0.2
gets its extra copy in exactly one pass of every five: a class's clips are cycled through, as in
PANNs, instead of some being drawn repeatedly and others never. Copies are not emitted together:
copy j of a clip read at stream position x (cumulative E) falls due at x + j·gap, gap ≥ one batch
of draws, so a rare clip reaches one batch after another (a batch holds a clip only once). Due
copies are drawn in order of due position plus a random jitter of about ``shuffle_buffer`` draws
(a bounded-delay shuffle), skipping keys already in the batch; with ``stratify_batches`` (the
default) each draw instead takes the next class of a shuffled queue of classes and the earliest
due copy anchored to it (``buffer.ClassStrata``), as PANNs' round robin does, so a batch holds as
many classes as the buffer allows; the copies drawn are the same. Audio is decoded only after a
clip is drawn.

Shards: pass p reads one permutation of all shards seeded by (seed, p), sliced by rank × worker
(``shard_schedule.train_shard_schedule``); passes follow each other endlessly and each epoch starts where
the previous one is expected to have stopped, so every shard is read once per pass across epochs
(re-permuting every epoch would read some shards each epoch and others rarely when an epoch is
shorter than a pass). The epoch comes from a :class:`SharedCount` the DataModule sets, so it
reaches workers whether they are re-created each epoch or persistent.

Epoch ranges (when the manifest gives per-shard class counts): each shard's weight is Σ E over its
clips, computable from the manifest alone; a pass is split into slot slices of equal weight
(``shard_schedule.weighted_slices``). A copy belongs to the epoch whose position range [e·M, (e+1)·M)
holds its due position (M = the slot's draws per epoch / ρ, ranges offset by one lookback), and
epoch e starts reading ``copy_window`` draws before its range for the copies still owed by clips
read at the end of epoch e-1. So copies of a rare clip read late in an epoch are drawn early in
the next instead of being lost, every epoch is balanced alike (epoch 0 included), and the draws
of an epoch depend only on (seed, epoch, slot): a resumed run draws what an uninterrupted one
would have. Without per-shard counts (URL overrides, folds) epochs start at the expected shard
count and clips bring all their copies.

Memory (what the sampler keeps, per worker): the shuffle buffer and the held-back copies
(≤ ``shuffle_buffer`` drawable copies plus those due within ``copy_window`` draws, as references
to undecoded clips, not copies; stratified, a drawable copy is also referenced from its class's
heap and drawn ones are compacted away: ≤ 3 references per drawable copy, plus 64), one float
per shard (weights) and the class counts. Nothing grows with the number of clips, which is why a
labels-only run over 1.9 M clips adds ~20 MB (``diagnostics/simulate.py``), against ~175 MB for
PANNs' per-class index lists. With audio: 2000 int16 10 s clips ≈ 1.3 GB per worker at the
defaults (FLAC ≈ 0.7 GB); lower ``shuffle_buffer`` for many workers.

Guarantees, per DataLoader worker:
- memory: at most ``shuffle_buffer`` drawable copies plus those held back (due within
  ``copy_window`` draws), all references to undecoded clips;
- balance: each clip's copies per pass are ρ·E rounded by rotation, each drawn in the epoch its
  due position falls in (none lost at an epoch's end, up to the shuffle buffer's last draws);
- no clip twice in one batch while the buffer holds another clip not yet in the batch;
- exactly its share of ``steps_per_epoch`` batches, so every rank yields ``steps_per_epoch``;
- within a pass, slots read disjoint shards (when shards ≥ ranks × workers); an epoch reads a
  shard twice only if its draws plus ``copy_window`` exceed the slot's share of a pass;
- reproducible: the key sequence depends only on (seed, epoch, rank, world, worker, num_workers).
Not guaranteed (unlike PANNs): per-batch stratification beyond what the buffer holds (at a
class's turn with no drawable copy anchored to it the earliest copy of any class is drawn; on the
A/B set of docs/balanced_streaming.md, 25 classes and batch 32, a class is in 96 % of batches
stratified, as with PANNs, and 90 % unstratified); exact per-class frequencies (they hold
in expectation); coverage of a class's clips within less than a pass (a stream reads a clip only
once per pass, so over half a pass it has read about half of each class's clips; PANNs' random
access cycles through every class list at any length). Each slot's shards are ordered so that
every class's clips arrive at an even rate (``shard_schedule.even_class_order``), which keeps per-class
counts over part of a pass close to PANNs'.
``balanced=False`` emits every clip once (a plain shuffled stream).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from panns_lightning.data.buffer import ClassStrata, RepeatShuffleBuffer
from panns_lightning.data.error_log import ErrorLog, NoReadableClipsError
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.repeats import ClassBalanceFactor, clip_phase, copy_window, due_positions, rotating_round
from panns_lightning.data.shard_schedule import train_shard_schedule, weighted_train_schedule
from panns_lightning.data.shared_count import SharedCount
from panns_lightning.data.spec import ReaderSlot, StreamSpec, current_slot
from panns_lightning.data.tar_reader import RawClip, read_shard
from panns_lightning.labels import multi_hot
from panns_lightning.shardset.codec import decode_member, samples_to_float

# Reads one shard URL into clips: ``tar_reader.read_shard`` for tar shards; the labels-only simulation
# (``diagnostics/simulate.py``) passes an in-memory reader so that the same sampling code runs at AudioSet scale.
ShardReader = Callable[..., Iterator[RawClip]]

# Crop offsets come from a generator per (seed, epoch, slot, batch), apart from the draws, so a
# resumed epoch that skips batches without decoding them crops the later ones as before.
_CROP_STREAM = 0x0C
# Stratified draws: a drawable copy that fell this many jitters behind the read head is drawn
# before its class's turn comes (the unstratified order draws about half a jitter behind it).
STRATA_DELAY = 2.0
# A shard set where nothing decodes would otherwise spin forever.
_MAX_DECODE_FAILURES_IN_A_ROW = 1000


class TrainStreamBase(IterableDataset):
    """What both train samplers (the balanced stream and ``sampler=panns``) hold for one rank: its slot in
    the world, the options, the crop, the counters shared across workers and the batch dtype."""

    def __init__(
        self,
        spec: StreamSpec,
        *,
        rank: int,
        world_size: int,
        options: StreamOptions | None = None,
        crop_samples: int | None = None,
        epoch: SharedCount | None = None,
        resume_batches: SharedCount | None = None,
        errors: ErrorLog | None = None,
        int16_batches: bool = False,
    ) -> None:
        super().__init__()
        options = options if options is not None else StreamOptions()
        if crop_samples is not None and not 0 < crop_samples <= spec.clip_samples:
            raise ValueError(f"train_crop_samples={crop_samples} must be in 1..clip_samples={spec.clip_samples}")
        self.spec = spec
        self.rank = rank
        self.world_size = world_size
        self.options = options
        self.crop_samples = crop_samples
        self.epoch = epoch if epoch is not None else SharedCount()
        # Batches of this epoch the rank already trained on before a resume: skipped, not yielded.
        self.resume_batches = resume_batches if resume_batches is not None else SharedCount()
        self.errors = errors if errors is not None else ErrorLog("train")
        self.waveform_dtype = np.int16 if int16_batches and spec.storage == "int16" else np.float32

    def _write_row(self, samples: np.ndarray, waveform: np.ndarray, rng: np.random.Generator) -> None:
        """A decoded clip's int16 samples into its batch row: a random crop (drawn only when cropping)
        kept as int16 or scaled to float32, whichever the row is."""
        start = 0
        if self.crop_samples is not None and self.crop_samples != samples.shape[0]:
            start = int(rng.integers(samples.shape[0] - self.crop_samples + 1))
        if waveform.dtype == np.int16:
            waveform[...] = samples[start : start + waveform.shape[0]]
        else:
            samples_to_float(samples[start : start + waveform.shape[0]], out=waveform)


class TrainClipStream(TrainStreamBase):
    """Endless, optionally class-balanced train stream; yields ready batches (use ``batch_size=None``).

    Each batch is ``{"waveform": float32[B, T], "target": float32[B, C], "key": list[str]}`` with
    ``T = crop_samples or clip_samples``; with ``labels_only=True`` it is ``{"key", "labels"}`` and
    no audio is read (used by ``inspect``; same sampling code). With ``int16_batches`` and int16
    shards the waveform is the stored int16 samples (half the bytes through shared and pinned
    memory and the host-to-device copy); the consumer scales them by 1 / 32767 (on the device).
    """

    def __init__(
        self,
        spec: StreamSpec,
        *,
        rank: int,
        world_size: int,
        options: StreamOptions | None = None,
        crop_samples: int | None = None,
        epoch: SharedCount | None = None,
        resume_batches: SharedCount | None = None,
        errors: ErrorLog | None = None,
        labels_only: bool = False,
        reader: ShardReader | None = None,
        int16_batches: bool = False,
    ) -> None:
        """``options``: batch size, steps, balance, buffer and seed (default :class:`StreamOptions`)."""
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
        self.labels_only = labels_only
        self.reader = (
            reader
            if reader is not None
            else functools.partial(read_shard, http=spec.http, max_member_bytes=spec.max_member_bytes)
        )
        self._factor = ClassBalanceFactor(spec.class_counts, spec.num_clips) if options.balanced else None
        self._expected_clips = dict(zip(spec.urls, spec.shard_clips)) if spec.shard_clips is not None else {}
        self._shard_weights = self._expected_copies_per_shard()
        # Per-shard class counts order each slot's shards so that classes arrive evenly (balanced only).
        self._shard_class_matrix = (
            np.asarray(spec.shard_class_counts, dtype=np.int32)
            if options.balanced and self._shard_weights is not None and spec.shard_class_counts is not None
            else None
        )

    def __len__(self) -> int:
        """Batches this rank yields per epoch (all its workers together)."""
        return self.options.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch.value = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_slot(current_slot(self.rank, self.world_size))

    def iter_slot(self, slot: ReaderSlot) -> Iterator[dict[str, Any]]:
        """The batches of one reader slot this epoch; ``__iter__`` picks the slot from the DataLoader worker.

        Public so that a simulation can run all ranks × workers in one process through this same code.
        After a resume ``resume_batches`` into the epoch, worker w plays the part of worker
        (w + resume_batches) mod W: the DataLoader always asks worker 0 first, while the next batch
        of the uninterrupted run was that worker's.
        """
        epoch = self.epoch.value
        done = min(self.resume_batches.value, self.options.steps_per_epoch)
        if done:
            slot = dataclasses.replace(slot, worker=(slot.worker + done) % slot.num_workers)
        rng = np.random.default_rng(
            [self.options.seed, epoch, slot.rank, slot.world_size, slot.worker, slot.num_workers]
        )
        jitter = self.options.shuffle_buffer / self._mean_copies
        buffer = RepeatShuffleBuffer(
            self._clips_with_copies(slot, epoch),
            capacity=self.options.shuffle_buffer,
            jitter=jitter,
            rng=rng,
            strata=self._strata(jitter),
            distinct_keys=len(self.spec.keep_keys) if self.spec.keep_keys is not None else self.spec.num_clips,
        )
        unreadable: set[str] = set()  # keys that failed to decode: skip their other copies quietly
        skip = self._batches_skipped_by_worker(slot)
        for index in range(self._batches_for_worker(slot)):
            if index < skip:
                self._skip_batch(buffer)
                continue
            crop_rng = np.random.default_rng([self.options.seed, epoch, slot.index, slot.count, index, _CROP_STREAM])
            yield self._next_batch(buffer, crop_rng, unreadable)

    def _strata(self, jitter: float) -> ClassStrata | None:
        """How the buffer stratifies draws by class (``stratify_batches``, balanced only): PANNs' queue of classes."""
        if self._factor is None or not self.options.stratify_batches:
            return None
        counts = self.spec.class_counts
        return ClassStrata(
            classes=tuple(index for index, count in enumerate(counts) if count > 0),
            anchor_weights=tuple(1.0 / max(count, 1) for count in counts),
            max_delay=STRATA_DELAY * jitter,
        )

    def _batches_skipped_by_worker(self, slot: ReaderSlot) -> int:
        """This slot's share of ``resume_batches``: rank batch i came from worker i mod W."""
        done = min(self.resume_batches.value, self.options.steps_per_epoch)
        return max(0, -(-(done - slot.worker) // slot.num_workers))

    def _skip_batch(self, buffer: RepeatShuffleBuffer) -> None:
        """Draw a batch's keys as ``_next_batch`` would, without decoding: the buffer ends in the same state.

        Exact unless a skipped draw would have failed to decode (the uninterrupted run drew one
        more clip in its place).
        """
        in_batch: set[str] = set()
        for _ in range(self.options.batch_size):
            clip = buffer.next(in_batch)
            if clip is None:
                raise NoReadableClipsError("train stream ended, but it is endless by design: no shard yielded clips")
            in_batch.add(clip.key)

    def _batches_for_worker(self, slot: ReaderSlot) -> int:
        share, extra = divmod(self.options.steps_per_epoch, slot.num_workers)
        return share + int(slot.worker < extra)

    def _expected_copies_per_shard(self) -> list[float] | None:
        """Copies each shard emits per pass at repeat_scale 1 (Σ E over its clips; its clip count unbalanced)."""
        spec = self.spec
        if spec.keep_keys is not None:  # a subset (fold): per-shard manifest counts do not describe it
            return None
        if spec.shard_clips is None or len(spec.shard_clips) != len(spec.urls):
            return None
        if self._factor is None:
            return [float(count) for count in spec.shard_clips]
        if spec.shard_class_counts is None or len(spec.shard_class_counts) != len(spec.urls):
            return None
        return [self._factor.total(counts) for counts in spec.shard_class_counts]

    def _clips_with_copies(self, slot: ReaderSlot, epoch: int) -> Iterator[tuple[RawClip, list[float], float] | None]:
        """(clip, due positions of its copies this epoch, its position) in schedule order.

        Positions are cumulative E along the slot's schedule (1 per clip unbalanced), the quantity
        the manifest gives per shard. Copy j of a clip at position x falls due at x + j·gap (gap ≥
        one batch), and a copy belongs to the epoch whose range [e·M, (e+1)·M) holds its due
        position, M the expected reads of an epoch. So epoch e re-reads the last ``lookback`` of
        epoch e-1's range for the copies it still owes: copies of a rare clip read late in an epoch
        are drawn early in the next one instead of being lost, and every epoch is balanced alike.
        Ranges are offset by one lookback so that epoch 0 has a stretch to look back on too (its
        clips' first copies are drawn one pass later, when that stretch comes round again).
        ``None`` is yielded once the range is read; later clips (read only if the buffer runs dry)
        bring their first copy only.
        """
        if self._shard_weights is None:
            yield from self._clips_by_shard_count(slot, epoch)
            return
        first, start, stop = self._epoch_range(slot, epoch)
        schedule = self._weighted_schedule(slot, first)
        signalled = False
        tally = [0]
        for pass_index, shard_index, position in self._guard_empty(schedule, tally):
            for clip in self._read(self.spec.urls[shard_index], tally):
                weight = self._factor(clip.labels) if self._factor is not None else 1.0
                clip_position, position = position, position + weight
                if clip_position < first:
                    continue
                if clip_position >= stop and not signalled:
                    signalled = True
                    yield None
                dues = self._due_positions(clip, pass_index, clip_position)
                if signalled:
                    dues = dues[:1]  # read past the range because the buffer ran dry
                else:
                    dues = [due for due in dues if start <= due < stop]
                if dues or clip_position >= start:
                    yield clip, dues, clip_position

    def _clips_by_shard_count(self, slot: ReaderSlot, epoch: int) -> Iterator[tuple[RawClip, list[float], float]]:
        """Fallback without per-shard counts (URL overrides, folds): epochs start at expected shard counts."""
        schedule = self._count_schedule(slot, epoch)
        tally = [0]
        position = 0.0
        for pass_index, shard_index in self._guard_empty(schedule, tally):
            for clip in self._read(self.spec.urls[shard_index], tally):
                yield clip, self._due_positions(clip, pass_index, position), position
                position += self._factor(clip.labels) if self._factor is not None else 1.0

    def first_shards(self, slot: ReaderSlot, count: int = 1, epoch: int = 0) -> list[str]:
        """The first ``count`` shards (URLs) ``slot`` opens in ``epoch``: what ``panns-train dry_run=true`` prints."""
        if self._shard_weights is None:
            schedule: Iterator[tuple[Any, ...]] = self._count_schedule(slot, epoch)
        else:
            schedule = self._weighted_schedule(slot, self._epoch_range(slot, epoch)[0])
        urls: list[str] = []
        for entry in schedule:
            if len(urls) == count or len(urls) == len(self.spec.urls):
                break
            urls.append(self.spec.urls[entry[1]])
        return urls

    def _epoch_range(self, slot: ReaderSlot, epoch: int) -> tuple[float, float, float]:
        """(first position read, start, stop) of the epoch's range along the slot's weighted schedule."""
        span = self._batches_for_worker(slot) * self.options.batch_size / self._mean_copies
        lookback = self.copy_window / self._mean_copies
        # Epoch ranges start one lookback in, so that epoch 0 also finds the copies it owes.
        start, stop = lookback + epoch * span, lookback + (epoch + 1) * span
        return start - lookback, start, stop

    def _weighted_schedule(self, slot: ReaderSlot, first: float) -> Iterator[tuple[int, int, float]]:
        assert self._shard_weights is not None
        return weighted_train_schedule(
            len(self.spec.urls),
            slot.index,
            slot.count,
            seed=self.options.seed,
            weights=self._shard_weights,
            start=first,
            class_counts=self._shard_class_matrix,
        )

    def _count_schedule(self, slot: ReaderSlot, epoch: int) -> Iterator[tuple[int, int]]:
        """Without per-shard counts: the epoch starts at the expected number of shards read before it."""
        clips_read = self._batches_for_worker(slot) * self.options.batch_size / self._mean_copies
        clips_per_shard = max(self.spec.num_clips, 1) / len(self.spec.urls)
        start = epoch * max(1, math.ceil(clips_read / clips_per_shard))
        return train_shard_schedule(len(self.spec.urls), slot.index, slot.count, seed=self.options.seed, start=start)

    @property
    def _mean_copies(self) -> float:
        return self.options.repeat_scale if self.options.balanced else 1.0

    @functools.cached_property
    def copy_window(self) -> float:
        """Draws over which one clip's copies are spread at most (:func:`repeats.copy_window`)."""
        return copy_window(self._factor, self.options.repeat_scale, self.options.copy_spread, self.options.batch_size)

    def _due_positions(self, clip: RawClip, pass_index: int, position: float) -> list[float]:
        return due_positions(
            position,
            self._copies(clip, pass_index),
            batch_size=self.options.batch_size,
            spread=self.options.copy_spread,
            window=self.copy_window,
            mean_copies=self._mean_copies,
        )

    def _read(self, url: str, tally: list[int]) -> Iterator[RawClip]:
        keep = self.spec.keep_keys
        errors = self.errors
        read = 0
        for clip in self.reader(url, storage=self.spec.storage, with_audio=not self.labels_only, errors=errors):
            tally[0] += 1
            read += 1
            errors.read_samples.add()
            if keep is None or clip.key in keep:
                yield clip
        expected = self._expected_clips.get(url)
        if url in errors.failed_urls and expected is not None and expected > read:
            errors.lost_samples.add(expected - read)  # what a truncated or missing shard cost

    def _guard_empty(self, schedule: Iterator[tuple[Any, ...]], tally: list[int]) -> Iterator[tuple[Any, ...]]:
        """Pass the schedule through, failing once every shard in a row held no readable clip (``tally`` counts them)."""
        empty_in_a_row = 0
        limit = max(len(self.spec.urls), 2)
        for entry in schedule:
            tally[0] = 0
            yield entry
            empty_in_a_row = 0 if tally[0] else empty_in_a_row + 1
            if empty_in_a_row >= limit:
                url = self.spec.urls[entry[1]]
                raise NoReadableClipsError(
                    f"train stream: {empty_in_a_row} shards in a row held no readable clip, last {url} "
                    "(the warnings above say why each failed)"
                )

    def _copies(self, clip: RawClip, pass_index: int) -> int:
        if self._factor is None:
            return 1
        value = self.options.repeat_scale * self._factor(clip.labels)
        return rotating_round(value, clip_phase(self.options.seed, clip.key), pass_index)

    def _next_batch(
        self, buffer: RepeatShuffleBuffer, rng: np.random.Generator, unreadable: set[str]
    ) -> dict[str, Any]:
        keys: list[str] = []
        labels: list[tuple[int, ...]] = []
        in_batch: set[str] = set()
        failures_in_a_row = 0
        if not self.labels_only:
            # Decoded straight into the batch: one write per sample, no per-clip copies to stack.
            length = self.crop_samples or self.spec.clip_samples
            waveform_tensor = batch_tensor(self.options.batch_size, length, self.waveform_dtype)
            waveforms = waveform_tensor.numpy()
            targets = np.zeros((self.options.batch_size, self.spec.num_classes), dtype=np.float32)
        while len(keys) < self.options.batch_size:
            clip = buffer.next(in_batch)
            if clip is None:
                raise NoReadableClipsError("train stream ended, but it is endless by design: no shard yielded clips")
            if not self.labels_only:
                row = len(keys)
                if not self._decode_into(clip, unreadable, waveforms[row], targets[row], rng):
                    failures_in_a_row += 1
                    if failures_in_a_row > _MAX_DECODE_FAILURES_IN_A_ROW:
                        raise NoReadableClipsError(
                            f"train stream: {failures_in_a_row} draws in a row could not be decoded; "
                            f"last {clip.key!r} in {clip.shard}"
                        )
                    continue
                failures_in_a_row = 0
            keys.append(clip.key)
            labels.append(clip.labels)
            in_batch.add(clip.key)
        if self.labels_only:
            return {"key": keys, "labels": labels}
        return {"waveform": waveform_tensor, "target": torch.from_numpy(targets), "key": keys}

    def _decode_into(
        self, clip: RawClip, unreadable: set[str], waveform: np.ndarray, target: np.ndarray, rng: np.random.Generator
    ) -> bool:
        """Decode ``clip`` (cropped) into the batch rows; False if it cannot be.

        A clip that fails is reported once and its later copies are skipped quietly. The crop start
        is drawn only for a clip that decoded, as before decoding went straight into the batch, so
        the sequence of crops for a seed is unchanged.
        """
        if clip.key in unreadable:
            return False
        spec = self.spec
        try:
            if clip.audio is None:
                raise ValueError("clip was read without audio (labels-only stream)")
            samples = decode_member(
                clip.audio, storage=spec.storage, sample_rate=spec.sample_rate, clip_samples=spec.clip_samples
            )
            target[:] = multi_hot(clip.labels, spec.num_classes)
        except ValueError as exc:
            unreadable.add(clip.key)
            target[:] = 0.0
            self.errors.sample(clip.shard, clip.key, str(exc))
            return False
        self._write_row(samples, waveform, rng)
        return True


def batch_tensor(rows: int, columns: int, dtype: type = np.float32) -> torch.Tensor:
    """An uninitialised [rows, columns] tensor (float32 or int16); in shared memory inside a DataLoader worker.

    A worker's batch travels to the main process through shared memory; one allocated there from
    the start is sent as is, instead of being copied into a new segment (~16 ms per 41 MB batch of
    32 ten-second 32 kHz clips on the reference CPU).
    """
    if get_worker_info() is None:
        # NumPy's allocation is the cheaper one here (torch.empty of 41 MB costs ~2.5x as much).
        return torch.from_numpy(np.empty((rows, columns), dtype=dtype))
    torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    storage = torch.UntypedStorage._new_shared(rows * columns * np.dtype(dtype).itemsize)
    return torch.empty(0, dtype=torch_dtype).set_(storage).view(rows, columns)

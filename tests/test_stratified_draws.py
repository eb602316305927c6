"""Stratified draws of the balanced stream (``data.stratify_batches``, buffer.py's ``ClassStrata``).

Stratifying changes only the order in which the buffer hands out its drawable copies: the same
copies are drawn, batches hold more classes (PANNs' per-batch round robin when classes < batch
size), and the buffer's extra per-class references stay bounded. All labels-only and in-process.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from panns_lightning.data.buffer import ClassStrata, RepeatShuffleBuffer
from panns_lightning.data.diagnostics.balance import ClipLabels, draw_panns, draw_stream
from panns_lightning.data.tar_reader import RawClip

NUM_CLASSES = 24  # fewer than a batch holds, as in the training A/B (25 classes, batch 32)
BATCH = 32
SHUFFLE_BUFFER = 128


@pytest.fixture(scope="module")
def single_label_set() -> ClipLabels:
    """~1000 clips with one label each, 24 classes from 120 down to 6 clips, 12 shards."""
    counts = np.geomspace(120, 6, NUM_CLASSES).astype(int)
    labels = [[klass] for klass in range(NUM_CLASSES) for _ in range(counts[klass])]
    order = np.random.default_rng(0).permutation(len(labels))
    labels = [labels[index] for index in order]
    sizes = [len(labels) // 12] * 11
    sizes.append(len(labels) - sum(sizes))
    return ClipLabels.from_lists(labels, NUM_CLASSES, sizes)


def batch_presence(drawn: np.ndarray, label_set: ClipLabels) -> np.ndarray:
    """Per class, the fraction of full batches that hold it."""
    label_lists = label_set.label_lists()
    batches = len(drawn) // BATCH
    held = np.zeros((batches, label_set.num_classes), dtype=bool)
    for row in range(batches):
        for index in drawn[row * BATCH : (row + 1) * BATCH]:
            held[row, label_lists[index]] = True
    return held.mean(axis=0)


def strata_for(labels: Sequence[Sequence[int]], num_classes: int, max_delay: float) -> ClassStrata:
    counts = np.bincount([label for clip in labels for label in clip], minlength=num_classes)
    return ClassStrata(
        classes=tuple(int(klass) for klass in np.flatnonzero(counts)),
        anchor_weights=tuple(1.0 / max(int(count), 1) for count in counts),
        max_delay=max_delay,
    )


def one_pass(
    labels: Sequence[tuple[int, ...]], copies: Sequence[int], gap: float, share_ends_at: int
) -> Iterator[tuple[RawClip, list[float], float] | None]:
    """Clip i read at position i with ``copies[i]`` copies due ``gap`` apart; the epoch's share ends at ``share_ends_at``."""
    for position, (clip_labels, count) in enumerate(zip(labels, copies)):
        if position == share_ends_at:
            yield None
        clip = RawClip(f"k{position}", "s", clip_labels, None)
        yield clip, [position + copy * gap for copy in range(count)], float(position)


def drain(buffer: RepeatShuffleBuffer, batch_size: int) -> list[str]:
    """Every copy the buffer hands out, batch by batch (no key twice in a batch when it can), until it is empty."""
    keys: list[str] = []
    while True:
        in_batch: set[str] = set()
        for _ in range(batch_size):
            clip = buffer.next(in_batch)
            if clip is None:
                return keys
            keys.append(clip.key)
            in_batch.add(clip.key)


def test_stratified_buffer_hands_out_exactly_the_copies_of_the_unstratified_one() -> None:
    # A pass of multi-label clips with PANNs-like copy counts (rare classes' clips many times), a
    # small buffer, copies held back until due, the epoch's share ending before the source does.
    rng = np.random.default_rng(3)
    num_classes = 12
    weights = 1.0 / np.arange(1, num_classes + 1)
    labels = [
        tuple(sorted(set(rng.choice(num_classes, size=rng.integers(1, 3), p=weights / weights.sum()).tolist())))
        for _ in range(400)
    ]
    counts = np.bincount([label for clip in labels for label in clip], minlength=num_classes)
    copies = [max(1, round(sum(400 / num_classes / counts[label] for label in clip))) for clip in labels]
    expected = Counter({f"k{index}": count for index, count in enumerate(copies)})
    drawn = {}
    for stratify in (False, True):
        buffer = RepeatShuffleBuffer(
            one_pass(labels, copies, gap=16.0, share_ends_at=300),
            capacity=40,
            jitter=40.0,
            rng=np.random.default_rng(7),
            strata=strata_for(labels, num_classes, max_delay=80.0) if stratify else None,
        )
        drawn[stratify] = drain(buffer, batch_size=16)
    assert Counter(drawn[False]) == expected
    assert Counter(drawn[True]) == expected, "stratifying lost or duplicated copies"
    assert drawn[True] != drawn[False], "stratifying changed nothing"


@pytest.mark.parametrize("epoch", [0, 1])
def test_stratified_epoch_draws_the_unstratified_counts_up_to_the_buffer_left_over(
    single_label_set: ClipLabels, epoch: int
) -> None:
    # Same seed and epoch: the same copies become drawable in both; they may differ only in the
    # copies still buffered when the epoch's draws are done (at most a buffer's worth each side).
    draws = 1024
    counts = {}
    for stratify in (False, True):
        drawn = draw_stream(
            single_label_set,
            draws,
            batch_size=BATCH,
            seed=5,
            epoch=epoch,
            shuffle_buffer=SHUFFLE_BUFFER,
            stratify_batches=stratify,
        )
        counts[stratify] = np.bincount(drawn, minlength=single_label_set.num_clips)
    assert counts[True].sum() == counts[False].sum() == draws
    difference = int(np.abs(counts[True] - counts[False]).sum())
    assert difference <= 2 * SHUFFLE_BUFFER, f"per-clip counts differ by {difference} draws"
    # One label per clip: clip i's class is values[i].
    per_class = {
        stratify: np.bincount(single_label_set.values, weights=clip_counts) for stratify, clip_counts in counts.items()
    }
    assert np.abs(per_class[True] - per_class[False]).max() <= 0.25 * draws / NUM_CLASSES, per_class


def test_stratified_batches_hold_nearly_every_class_when_classes_are_fewer_than_the_batch(
    single_label_set: ClipLabels,
) -> None:
    draws = 64 * BATCH
    presence = {
        stratify: batch_presence(
            draw_stream(
                single_label_set,
                draws,
                batch_size=BATCH,
                seed=1,
                shuffle_buffer=SHUFFLE_BUFFER,
                stratify_batches=stratify,
            ),
            single_label_set,
        )
        for stratify in (False, True)
    }
    panns = batch_presence(draw_panns(single_label_set, draws, seed=1), single_label_set)
    table = f"unstratified {np.round(presence[False], 2)}\nstratified {np.round(presence[True], 2)}"
    # Unstratified, a batch of 32 balanced draws misses a class with probability (23/24)^32 ≈ 0.26.
    assert presence[False].mean() < 0.85, table
    # Stratified ≈ 0.95 (PANNs ≈ 0.96: 32 consecutive draws of its round robin of 24 classes need
    # not hold a whole cycle); unstratified ≈ 0.78.
    assert presence[True].mean() >= 0.92, table
    assert presence[True].min() > presence[False].mean(), table
    assert presence[True].mean() >= panns.mean() - 0.04, f"{table}\nPANNs {np.round(panns, 2)}"


def cycling_source(
    labels: Sequence[tuple[int, ...]], copies: Sequence[int], gap: float
) -> Iterator[tuple[RawClip, list[float], float]]:
    """The clips read over and over (endless), clip i with ``copies[i]`` copies due ``gap`` apart."""
    clips = [RawClip(f"k{index}", "s", clip_labels, None) for index, clip_labels in enumerate(labels)]
    for position, (clip, count) in enumerate(zip(itertools.cycle(clips), itertools.cycle(copies))):
        yield clip, [position + copy * gap for copy in range(count)], float(position)


@pytest.mark.parametrize(
    ("max_delay", "batch_size"), [(40.0, 16), (-np.inf, 1)], ids=["production", "class-turns-never-come"]
)
def test_stratified_buffer_memory_stays_bounded(max_delay: float, batch_size: int) -> None:
    # Each drawable copy sits in the shuffle heap and its anchor class's heap; a copy drawn through
    # one lingers in the other until it is popped or the heaps are compacted. With max_delay = -inf
    # and no batch to avoid, every draw is "overdue" and taken from the shuffle heap, so the class
    # heaps are never popped: only compaction frees them (without it they grow by one per draw).
    rng = np.random.default_rng(5)
    num_classes = 30
    labels = [tuple(sorted(set(rng.integers(0, num_classes, size=rng.integers(1, 4)).tolist()))) for _ in range(300)]
    copies = [int(rng.integers(1, 4)) for _ in labels]
    capacity = 50
    buffer = RepeatShuffleBuffer(
        cycling_source(labels, copies, gap=10.0),
        capacity=capacity,
        jitter=20.0,
        rng=np.random.default_rng(0),
        strata=strata_for(labels, num_classes, max_delay=max_delay),
    )
    most = 0
    for _ in range(4800 // batch_size):  # 4800 draws, far more than the buffer holds
        in_batch: set[str] = set()
        for _ in range(batch_size):
            clip = buffer.next(in_batch)
            assert clip is not None
            in_batch.add(clip.key)
            assert buffer.references() <= 3 * len(buffer) + 2 * 64, (buffer.references(), len(buffer))
            most = max(most, buffer.references())
    assert len(buffer) <= capacity + max(copies)
    assert most <= 3 * (capacity + max(copies)) + 2 * 64


def test_unstratified_buffer_holds_one_reference_per_drawable_copy() -> None:
    labels = [(index % 5,) for index in range(100)]
    buffer = RepeatShuffleBuffer(
        cycling_source(labels, [2] * 100, gap=8.0), capacity=20, jitter=20.0, rng=np.random.default_rng(0)
    )
    for _ in range(500):
        assert buffer.next() is not None
        assert buffer.references() == len(buffer)

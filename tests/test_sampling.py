"""The train stream (train_stream.py, repeats.py, buffer.py): balanced repeat-factor stream, its buffer, per-rank step counts, reproducibility."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from panns_lightning.data.buffer import RepeatShuffleBuffer
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.repeats import ClassBalanceFactor, rotating_round
from panns_lightning.data.shard_schedule import train_shards_for_slot
from panns_lightning.data.shard_urls import shard_urls
from panns_lightning.data.shared_count import SharedCount
from panns_lightning.data.spec import StreamSpec
from panns_lightning.data.tar_reader import RawClip
from panns_lightning.data.train_stream import TrainClipStream
from panns_lightning.shardset import read_manifest
from shard_fixtures import FixtureClip, long_tailed_clips, simple_clips, write_shard_set

NUM_CLASSES = 12


def spec_of(directory: Path) -> StreamSpec:
    manifest = read_manifest(directory)
    return StreamSpec(
        urls=tuple(shard_urls(directory, manifest)),
        storage=manifest.storage,
        sample_rate=manifest.sample_rate,
        clip_samples=manifest.clip_samples,
        num_classes=manifest.num_classes,
        class_counts=tuple(manifest.class_counts),
        num_clips=manifest.num_clips,
    )


@pytest.fixture(scope="module")
def long_tail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~3400 clips, 12 classes, largest class > 100× the rarest, 7 uneven shards."""
    clips = long_tailed_clips(NUM_CLASSES, largest=1200, smallest=10)
    sizes = [300, 700, 250, 600, 450, 500]
    sizes.append(len(clips) - sum(sizes))
    return write_shard_set(tmp_path_factory.mktemp("long_tail"), clips, sizes, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 clips, 4 classes, 5 shards of uneven size."""
    return write_shard_set(tmp_path_factory.mktemp("uneven"), simple_clips(60, 4), [20, 5, 15, 3, 17], num_classes=4)


def class_shares(directory: Path, *, balanced: bool, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-class draw share relative to draws/C, per-class clip counts) from the labels-only stream."""
    spec = spec_of(directory)
    stream = TrainClipStream(
        spec,
        rank=0,
        world_size=1,
        options=StreamOptions(
            batch_size=50, steps_per_epoch=draws // 50, balanced=balanced, shuffle_buffer=500, seed=3
        ),
        labels_only=True,
    )
    drawn = np.zeros(spec.num_classes)
    total = 0
    for batch in stream:
        for labels in batch["labels"]:
            drawn[list(set(labels))] += 1
            total += 1
    assert total == draws
    return drawn / (draws / spec.num_classes), np.array(spec.class_counts)


def test_balanced_stream_gives_every_class_its_fair_share(long_tail: Path) -> None:
    shares, counts = class_shares(long_tail, balanced=True, draws=20_000)
    assert counts.max() >= 100 * counts.min()
    assert shares.min() >= 0.7, f"per-class shares {np.round(shares, 2)}"


def test_plain_stream_starves_the_rare_classes(long_tail: Path) -> None:
    shares, counts = class_shares(long_tail, balanced=False, draws=20_000)
    assert shares[np.argmin(counts)] < 0.3, f"per-class shares {np.round(shares, 2)}"


def test_repeat_factor_has_mean_one_and_favours_rare_classes() -> None:
    labels = [[0]] * 90 + [[1]] * 9 + [[2, 0]]
    counts = [91, 9, 1]
    factor = ClassBalanceFactor(counts, len(labels))
    values = [factor(clip) for clip in labels]
    assert np.mean(values) == pytest.approx(1.0)
    assert factor([2]) == pytest.approx(100 / 3)


def test_rotating_round_spreads_extra_copies_evenly() -> None:
    copies = [rotating_round(2.25, 0.6, pass_index) for pass_index in range(8)]
    assert set(copies) == {2, 3}
    assert sum(copies) == 18  # exactly 2.25 per pass over 8 passes
    extra_passes = [index for index, count in enumerate(copies) if count == 3]
    assert extra_passes[1] - extra_passes[0] == 4


def cycling_source(copies_of_k0: int, gap: float) -> Iterator[tuple[RawClip, list[float], float]]:
    """200 clips read over and over; k0 brings ``copies_of_k0`` copies due ``gap`` positions apart."""
    clips = [RawClip(f"k{index}", "s", (0,), None) for index in range(200)]
    for position, clip in enumerate(itertools.cycle(clips)):
        copies = copies_of_k0 if clip.key == "k0" else 1
        yield clip, [position + copy * gap for copy in range(copies)], float(position)


def test_buffer_avoids_repeats_within_a_batch_and_spreads_copies() -> None:
    buffer = RepeatShuffleBuffer(cycling_source(20, gap=10.0), capacity=50, jitter=50.0, rng=np.random.default_rng(0))
    batches = []
    for _ in range(40):
        chosen: set[str] = set()
        for _ in range(16):
            clip = buffer.next(chosen)
            assert clip is not None
            chosen.add(clip.key)
        batches.append(chosen)
    assert all(len(batch) == 16 for batch in batches)
    batches_with_k0 = sum("k0" in batch for batch in batches)
    assert batches_with_k0 >= 10, "20 copies per 200 clips read must reach many different batches"


def test_buffer_holds_copies_back_until_they_fall_due() -> None:
    buffer = RepeatShuffleBuffer(cycling_source(5, gap=30.0), capacity=4, jitter=4.0, rng=np.random.default_rng(0))
    drawn = [buffer.next().key for _ in range(100)]
    first = drawn.index("k0")
    # With 4 buffered clips a copy is drawn within a few draws of falling due: never 5 close together.
    assert drawn[first : first + 20].count("k0") <= 1
    assert drawn[:150].count("k0") >= 3


def test_buffer_repeats_only_when_nothing_else_is_buffered() -> None:
    source = iter([(RawClip("only", "s", (0,), None), [0.0] * 5, 0.0)])
    buffer = RepeatShuffleBuffer(source, capacity=10, jitter=10.0, rng=np.random.default_rng(0))
    keys = [buffer.next({"only"}) for _ in range(5)]
    assert all(clip is not None and clip.key == "only" for clip in keys)
    assert buffer.next() is None


def make_train_stream(
    directory: Path,
    *,
    rank: int,
    world_size: int,
    crop_samples: int | None = None,
    labels_only: bool = False,
    **option_fields: Any,
) -> TrainClipStream:
    """A stream with small test options; ``option_fields`` replace :class:`StreamOptions` fields."""
    options = dataclasses.replace(
        StreamOptions(batch_size=4, steps_per_epoch=7, shuffle_buffer=16, seed=11), **option_fields
    )
    return TrainClipStream(
        spec_of(directory),
        rank=rank,
        world_size=world_size,
        options=options,
        crop_samples=crop_samples,
        labels_only=labels_only,
    )


def loader_keys(stream: TrainClipStream, num_workers: int = 2) -> list[list[str]]:
    return [batch["key"] for batch in DataLoader(stream, batch_size=None, num_workers=num_workers)]


@pytest.mark.slow
def test_every_rank_yields_exactly_steps_per_epoch_batches(uneven: Path) -> None:
    for rank in range(2):
        stream = make_train_stream(uneven, rank=rank, world_size=2, steps_per_epoch=7)
        batches = list(DataLoader(stream, batch_size=None, num_workers=2))
        assert len(batches) == len(stream) == 7
        assert all(batch["waveform"].shape == (4, 800) and batch["target"].shape == (4, 4) for batch in batches)


@pytest.mark.slow
def test_same_seed_same_keys_other_epoch_other_keys(uneven: Path) -> None:
    first = loader_keys(make_train_stream(uneven, rank=1, world_size=2))
    again = loader_keys(make_train_stream(uneven, rank=1, world_size=2))
    assert first == again
    next_epoch = make_train_stream(uneven, rank=1, world_size=2)
    next_epoch.set_epoch(1)
    assert loader_keys(next_epoch) != first
    other_seed = loader_keys(make_train_stream(uneven, rank=1, world_size=2, seed=12))
    assert other_seed != first


def test_ranks_read_disjoint_shards_within_a_pass(uneven: Path) -> None:
    # Buffer of 1 and no balancing: each rank yields its pass-0 clips in read order.
    manifest = read_manifest(uneven)
    sizes = [shard.num_clips for shard in manifest.shards]
    drawn = []
    for rank in range(2):
        shards = train_shards_for_slot(len(sizes), rank, 2, seed=11, pass_index=0)
        expected_count = sum(sizes[index] for index in shards)
        stream = make_train_stream(
            uneven,
            rank=rank,
            world_size=2,
            balanced=False,
            shuffle_buffer=1,
            batch_size=1,
            steps_per_epoch=expected_count,
            labels_only=True,
        )
        keys = [key for batch in stream for key in batch["key"]]
        assert len(set(keys)) == expected_count
        drawn.append(set(keys))
    assert not drawn[0] & drawn[1]
    assert len(drawn[0] | drawn[1]) == 60


def test_crop_gives_the_requested_length_from_inside_the_clip(uneven: Path) -> None:
    stream = make_train_stream(uneven, rank=0, world_size=1, crop_samples=300, steps_per_epoch=2)
    batch = next(iter(stream))
    assert batch["waveform"].shape == (4, 300)
    with pytest.raises(ValueError, match="train_crop_samples=900"):
        make_train_stream(uneven, rank=0, world_size=1, crop_samples=900)


def test_corrupt_audio_is_skipped_in_training(tmp_path: Path) -> None:
    clips = simple_clips(12, 3)
    clips[4] = FixtureClip("corrupt", [1], override={"npy": b"\x93NUMPY garbage"})
    write_shard_set(tmp_path, clips, [6, 6], num_classes=3)
    stream = make_train_stream(tmp_path, rank=0, world_size=1, batch_size=4, steps_per_epoch=10)
    keys = Counter(key for batch in stream for key in batch["key"])
    assert "corrupt" not in keys
    assert stream.errors.counts()["bad_samples"] == 1, "a clip is reported once however many copies are drawn"


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2, 3])
def test_a_resumed_epoch_continues_with_the_batches_of_the_uninterrupted_one(long_tail: Path, num_workers: int) -> None:
    """resume_batches=b: the loader yields exactly batches b.. of the epoch, whichever worker they came from."""

    def epoch_keys(resume_batches: int) -> list[list[str]]:
        stream = TrainClipStream(
            spec_of(long_tail),
            rank=1,
            world_size=2,
            options=StreamOptions(batch_size=8, steps_per_epoch=11, shuffle_buffer=32, seed=3),
            labels_only=True,
            resume_batches=SharedCount(resume_batches),
        )
        stream.set_epoch(1)
        return [batch["key"] for batch in DataLoader(stream, batch_size=None, num_workers=num_workers)]

    uninterrupted = epoch_keys(0)
    assert len(uninterrupted) == 11
    for done in (1, 4, 5, 10):
        assert epoch_keys(done) == uninterrupted[done:], f"resumed after {done} batches"

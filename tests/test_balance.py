"""Acceptance: our production train stream vs PANNs' BalancedTrainSampler on one long-tailed label set.

Our side runs the real code path: tar shards read by DataLoader workers (2 ranks × 2 workers, their
real seeds), labels-only. Both samplers draw the same number of clips: one pass over the set.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from panns_lightning.data.diagnostics.balance import (
    ClipLabels,
    balance_figures,
    batches_with_repeat,
    draw_panns,
    format_figures,
    read_label_set,
    repeat_within,
)
from panns_lightning.data.diagnostics.reference import PannsBalancedSampler
from panns_lightning.data.diagnostics.simulate import run_simulation, simulated_label_set
from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.spec import StreamSpec
from panns_lightning.data.tar_reader import RawClip, read_shard
from panns_lightning.data.train_stream import TrainClipStream
from panns_lightning.shardset import read_manifest
from shard_fixtures import long_tailed_clips, write_shard_set

NUM_CLASSES = 16
RANKS, WORKERS, BATCH = 2, 2, 32
EPOCHS = 1


@pytest.fixture(scope="module")
def long_tail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~4400 clips, 16 classes from 1500 down to 8 clips (head > 100× tail), 24 uneven shards."""
    clips = long_tailed_clips(NUM_CLASSES, largest=1500, smallest=8, seed=4)
    sizes = [75, 350, 125, 200, 160, 250, 130, 190, 150, 210, 165] * 2
    sizes += [(len(clips) - sum(sizes)) // 2, len(clips) - sum(sizes) - (len(clips) - sum(sizes)) // 2]
    return write_shard_set(tmp_path_factory.mktemp("balance"), clips, sizes, num_classes=NUM_CLASSES)


def spec_of(directory: Path) -> StreamSpec:
    return StreamSpec.from_manifest(read_manifest(directory))


class RecordingReader:
    """The real tar reader, noting each shard URL it opens in a per-process file (workers are processes)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def __call__(self, url: str, *, storage: str, with_audio: bool, errors: ErrorLog) -> Iterator[RawClip]:
        with open(self.log_dir / f"{os.getpid()}.txt", "a") as handle:
            handle.write(url + "\n")
        yield from read_shard(url, storage=storage, with_audio=with_audio, errors=errors)


def production_draws(
    directory: Path,
    draws: int,
    *,
    epochs: int = 1,
    first_epoch: int = 0,
    balanced: bool = True,
    log_dir: Path | None = None,
    shuffle_buffer: int = 128,
    batch: int = BATCH,
) -> tuple[list[str], list[int]]:
    """Keys drawn by 2 ranks × 2 DataLoader workers over ``epochs`` epochs of ``draws`` each, and each rank's batch count."""
    keys: list[str] = []
    batches_per_rank = [0] * RANKS
    steps = -(-draws // (RANKS * batch))
    for epoch in range(first_epoch, first_epoch + epochs):
        for rank in range(RANKS):
            stream = TrainClipStream(
                spec_of(directory),
                rank=rank,
                world_size=RANKS,
                options=StreamOptions(
                    batch_size=batch,
                    steps_per_epoch=steps,
                    balanced=balanced,
                    shuffle_buffer=shuffle_buffer,
                    seed=7,
                ),
                labels_only=True,
                reader=RecordingReader(log_dir) if log_dir is not None else None,
            )
            stream.set_epoch(epoch)
            batches = list(DataLoader(stream, batch_size=None, num_workers=WORKERS))
            assert all(len(drawn["key"]) == batch for drawn in batches)
            batches_per_rank[rank] += len(batches)
            keys += [key for drawn in batches for key in drawn["key"]]
    return keys, batches_per_rank


@pytest.fixture(scope="module")
def one_pass(long_tail: Path) -> dict:
    label_set = read_label_set(long_tail)
    keys, batches_per_rank = production_draws(long_tail, label_set.num_clips, epochs=EPOCHS)
    index = label_set.key_index()
    ours = np.array([index[key] for key in keys])
    panns = draw_panns(label_set, len(ours), seed=7)
    return {
        "label_set": label_set,
        "batches_per_rank": batches_per_rank,
        "ours": balance_figures(label_set, ours, BATCH),
        "panns": balance_figures(label_set, panns, BATCH),
    }


@pytest.mark.slow
def test_label_set_is_long_tailed(one_pass: dict) -> None:
    counts = one_pass["label_set"].class_counts()
    assert counts.max() >= 100 * counts.min()


@pytest.mark.slow
def test_ours_is_as_balanced_as_panns(one_pass: dict) -> None:
    ours, panns = one_pass["ours"], one_pass["panns"]
    table = format_figures({"panns": panns, "ours": ours})
    assert ours["kl_uniform"] <= panns["kl_uniform"] + 0.05, table
    assert ours["min_count"] >= 0.8 * panns["min_count"], table


@pytest.mark.slow
def test_rarest_decile_is_covered_in_every_pass(one_pass: dict) -> None:
    assert one_pass["ours"]["rare_coverage"] >= 0.95, format_figures({"ours": one_pass["ours"]})


@pytest.mark.slow
def test_batches_rarely_hold_a_clip_twice(one_pass: dict) -> None:
    assert one_pass["ours"]["batches_with_repeat"] < 0.01


@pytest.mark.slow
def test_every_rank_takes_the_same_number_of_steps(one_pass: dict) -> None:
    batches = one_pass["batches_per_rank"]
    assert batches[0] == batches[1] == EPOCHS * -(-one_pass["label_set"].num_clips // (RANKS * BATCH))


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 1])
def test_no_shard_is_read_twice_in_an_epoch_across_ranks(long_tail: Path, tmp_path: Path, epoch: int) -> None:
    # A third of a pass per epoch, batch 8: the epoch plus the stretch it re-reads of the previous
    # epoch for owed copies (copy_window) fit in each slot's slice of a pass.
    label_set = read_label_set(long_tail)
    production_draws(
        long_tail, label_set.num_clips // 3, first_epoch=epoch, log_dir=tmp_path, shuffle_buffer=64, batch=8
    )
    opened = [line for path in tmp_path.glob("*.txt") for line in path.read_text().split()]
    assert len({path.name for path in tmp_path.glob("*.txt")}) == RANKS * WORKERS, "every worker read"
    assert opened and len(opened) == len(set(opened)), Counter(opened).most_common(3)


@pytest.mark.slow
def test_unbalanced_stream_shows_the_raw_long_tail(long_tail: Path) -> None:
    label_set = read_label_set(long_tail)
    keys, _ = production_draws(long_tail, label_set.num_clips // 2, balanced=False)
    index = label_set.key_index()
    figures = balance_figures(label_set, np.array([index[key] for key in keys]), BATCH)
    counts = label_set.class_counts()
    raw_ratio = counts.max() / counts.min()
    assert figures["max_min_ratio"] > 0.3 * raw_ratio > 30
    correlation = np.corrcoef(np.log(counts), np.log(np.maximum(figures["per_class"], 1)))[0, 1]
    assert correlation > 0.95, "draws follow the raw class counts"


# --------------------------------------------------------------------------- reference and figures


def test_reference_anchors_every_class_once_per_cycle_and_cycles_through_a_class() -> None:
    # Single-label: class c has c + 1 clips; every window of C draws aligned to the queue holds each class once.
    label_lists = [[c] for c in range(5) for _ in range(c + 1)]
    sampler = PannsBalancedSampler(label_lists, 5, seed=1)
    drawn = sampler.draw(5 * 60)
    classes = np.array([label_lists[index][0] for index in drawn]).reshape(60, 5)
    assert all(sorted(row) == list(range(5)) for row in classes)
    rare = [index for index in drawn if label_lists[index][0] == 4]
    for cycle in range(len(rare) // 5):
        assert len(set(rare[cycle * 5 : cycle * 5 + 5])) == 5, "no repeat before all clips of the class were drawn"


def test_figures_on_a_hand_made_draw() -> None:
    label_set = ClipLabels.from_lists([[0], [1, 2], [2], [2]], 4, [2, 2])  # class 3 has no clips
    figures = balance_figures(label_set, np.array([1, 3, 3, 0]), batch_size=2)
    np.testing.assert_array_equal(figures["per_class"], [1, 1, 3, 0])
    assert figures["min_count"] == 1 and figures["max_min_ratio"] == pytest.approx(3.0)
    p = np.array([1, 1, 3]) / 5
    assert figures["kl_uniform"] == pytest.approx(float(np.sum(p * np.log(p * 3))))
    assert figures["coverage"][2] == pytest.approx(2 / 3)
    assert figures["batches_with_repeat"] == 0.0  # [1, 3] and [3, 0]
    assert batches_with_repeat(np.array([1, 1, 2, 3]), 2) == 0.5
    assert repeat_within(np.array([5, 6, 5, 7, 5]), 1) == 0.0
    assert repeat_within(np.array([5, 6, 5, 7, 5]), 2) == pytest.approx(2 / 5)


def test_simulated_label_set_keeps_the_class_counts() -> None:
    counts = np.array([400, 300, 200, 80, 20, 9])
    label_set = simulated_label_set(counts, num_clips=800, num_shards=10, seed=2)
    np.testing.assert_array_equal(label_set.class_counts(), counts)
    lengths = np.diff(label_set.offsets)
    assert lengths.min() >= 1 and lengths.mean() == pytest.approx(counts.sum() / 800)
    for start, stop in zip(label_set.offsets[:-1], label_set.offsets[1:]):
        assert len(set(label_set.values[start:stop].tolist())) == stop - start, "no class twice in a clip"
    assert label_set.num_shards == 10


def test_simulation_runs_both_samplers_through_the_stream(capsys: pytest.CaptureFixture[str]) -> None:
    counts = np.geomspace(4000, 30, 20).astype(int)
    result = run_simulation(counts, clips=10_000, draws=10_000, shards=40, ranks=2, workers=2, batch_size=32, seed=0)
    printed = capsys.readouterr().out
    panns, ours = result["figures"].values()
    assert ours["draws"] == panns["draws"] == 10_000
    assert ours["kl_uniform"] <= panns["kl_uniform"] + 0.05
    assert "PANNs BalancedTrainSampler" in printed and "peak memory" in printed


@pytest.mark.slow
def test_later_epochs_are_as_balanced_as_panns(long_tail: Path) -> None:
    # Epochs 1 and 2 (one pass each): copies owed at an epoch's end are drawn early in the next one,
    # and epoch 1 starts by re-reading the end of epoch 0 for them.
    label_set = read_label_set(long_tail)
    keys, _ = production_draws(long_tail, label_set.num_clips, epochs=2, first_epoch=1)
    index = label_set.key_index()
    ours = balance_figures(label_set, np.array([index[key] for key in keys]), BATCH)
    panns = balance_figures(label_set, draw_panns(label_set, len(keys), seed=7), BATCH)
    table = format_figures({"panns": panns, "ours": ours})
    assert ours["kl_uniform"] <= panns["kl_uniform"] + 0.05, table
    assert ours["min_count"] >= 0.8 * panns["min_count"], table
    assert ours["rare_coverage"] >= 0.95, table


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 1])
def test_half_pass_epochs_are_as_balanced_as_panns(long_tail: Path, epoch: int) -> None:
    # Within a pass a stream can only draw what it has read: shards are ordered so that every
    # class's clips arrive at an even rate, else a rare class's count swings with the shards read.
    label_set = read_label_set(long_tail)
    keys, _ = production_draws(long_tail, label_set.num_clips // 2, first_epoch=epoch)
    index = label_set.key_index()
    ours = balance_figures(label_set, np.array([index[key] for key in keys]), BATCH)
    panns = balance_figures(label_set, draw_panns(label_set, len(keys), seed=7), BATCH)
    table = format_figures({"panns": panns, "ours": ours})
    assert ours["kl_uniform"] <= panns["kl_uniform"] + 0.05, table
    assert ours["min_count"] >= 0.8 * panns["min_count"], table

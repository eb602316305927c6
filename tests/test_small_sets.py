"""Acceptance (issue 19, case 4): a shard set with fewer clips than a batch does not spin the sampler.

``panns-prepare inspect`` on an 8-clip set with the default batch of 32 spun forever in the shuffle
buffer: ``inspect`` sizes its epoch to the draws asked for, so the epoch's share of the stream was
read before a batch was full, and the buffer then read on, one clip at a time and without bound,
for a key not yet in the batch, of which an 8-clip set has none. Training did not hang only
because its epochs (``steps_per_epoch=1000``) were long enough never to pause there; one step
per epoch hung the same way. Now the buffer reads on only while a new key can exist and it has
room, and repeats a key otherwise.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from panns_lightning.data import run_inspect
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.spec import StreamSpec
from panns_lightning.data.train_stream import TrainClipStream
from panns_lightning.shardset import read_manifest
from shard_fixtures import simple_clips, write_shard_set

pytestmark = pytest.mark.timeout(120)  # a spin fails the test instead of hanging the suite


@pytest.fixture(scope="module")
def eight_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shard_set(tmp_path_factory.mktemp("eight") / "set", simple_clips(8, 3), [4, 4], num_classes=3)


@pytest.mark.parametrize("balanced", [False, True], ids=["plain", "balanced"])
def test_inspect_draws_from_a_set_smaller_than_its_batch(eight_clips: Path, balanced: bool, capsys) -> None:
    report = run_inspect(eight_clips, balanced=balanced, draws=100, batch_size=32)
    stream = report["stream"]
    assert stream["draws"] == 100 and stream["batches"] == 4
    assert stream["batches_with_repeat"] == 4  # 8 clips cannot fill a batch of 32 without repeats
    assert stream["min_coverage"] == 1.0
    assert "side by side" in capsys.readouterr().out or not balanced


@pytest.mark.parametrize("balanced", [False, True], ids=["plain", "balanced"])
@pytest.mark.parametrize("labels_only", [True, False], ids=["labels", "audio"])
def test_training_with_one_step_per_epoch_fills_batches_from_eight_clips(
    eight_clips: Path, balanced: bool, labels_only: bool
) -> None:
    manifest = read_manifest(eight_clips)
    stream = TrainClipStream(
        StreamSpec.from_manifest(manifest),
        rank=0,
        world_size=1,
        # shuffle_buffer: the spin did not depend on it; a small buffer keeps the test quick
        options=StreamOptions(batch_size=32, steps_per_epoch=1, balanced=balanced, shuffle_buffer=64),
        labels_only=labels_only,
    )
    for epoch in range(2):
        stream.set_epoch(epoch)
        (batch,) = list(itertools.islice(iter(stream), 2))
        assert len(batch["key"]) == 32 and set(batch["key"]) == {f"clip{i:05d}" for i in range(8)}

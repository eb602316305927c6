"""data.sampler=panns: PANNs' balanced draws, clip for clip, read by random access through the clip index."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.data import AudioShardDataModule
from panns_lightning.data.diagnostics.reference import PannsBalancedSampler
from panns_lightning.data.exact_sampler import BalancedSequence
from panns_lightning.data.exact_stream import ExactClipStream, restored_sampler_state, sampler_checkpoint_state
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.spec import ReaderSlot
from panns_lightning.shardset import ClipRecord, read_manifest
from panns_lightning.shardset.clip_index import (
    CLIP_INDEX_NAME,
    ClipIndexError,
    load_clip_index,
    write_clip_index,
)
from panns_lightning.shardset.clip_index import main as clip_index_main
from panns_lightning.shardset.writer import write_shards
from shard_fixtures import CLIP_SAMPLES, FixtureClip, clip_waveform, write_shard_set

NUM_CLASSES = 7
SEED = 11


def label_lists(count: int, rng: np.random.Generator) -> list[list[int]]:
    """A long tail over NUM_CLASSES - 1 classes (the last has no clip), 1-3 labels per clip."""
    weights = 1.0 / np.arange(1, NUM_CLASSES)
    weights /= weights.sum()
    return [sorted(set(rng.choice(NUM_CLASSES - 1, rng.integers(1, 4), p=weights).tolist())) for _ in range(count)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 clips (two with a non-ASCII key: pax headers) converted by the real writer into 4 shards."""
    root = tmp_path_factory.mktemp("exact")
    rng = np.random.default_rng(0)
    records = []
    for index, labels in enumerate(label_lists(48, rng)):
        key = f"clip{index:03d}" if index % 20 else f"klàng/{index:03d}.wav"
        path = root / "audio" / f"{index:03d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, clip_waveform(key), 8000, subtype="FLOAT")
        records.append(ClipRecord(key, path, tuple(labels)))
    labels = [{"index": c, "mid": f"/m/{c}", "name": f"c{c}"} for c in range(NUM_CLASSES)]
    write_shards(
        records, root / "train", sample_rate=8000, clip_samples=CLIP_SAMPLES, labels=labels, dataset="t",
        split="train", clips_per_shard=12, num_workers=0, progress=False,
    )  # fmt: skip
    return root / "train"


def datamodule(train_dir: Path, **options) -> AudioShardDataModule:
    values = {"sampler": "panns", "batch_size": 4, "steps_per_epoch": 6, "num_workers": 0, "seed": SEED, **options}
    return AudioShardDataModule(train_dir=str(train_dir), **values)


def reference_keys(train_dir: Path, count: int) -> list[str]:
    """What upstream's sampler draws from the index's clips for SEED, as member keys."""
    index = load_clip_index(train_dir, read_manifest(train_dir))
    assert index is not None
    labels = [list(index.labels(clip)) for clip in range(index.num_clips)]
    return [index.key(int(clip)) for clip in PannsBalancedSampler(labels, NUM_CLASSES, seed=SEED).draw(count)]


def epoch_keys(stream: ExactClipStream, epoch: int, num_workers: int = 1) -> list[list[str]]:
    """The rank's batches of an epoch in the order the DataLoader yields them (worker round robin)."""
    stream.set_epoch(epoch)
    iterators = [
        stream.iter_slot(ReaderSlot(stream.rank, stream.world_size, worker, num_workers))
        for worker in range(num_workers)
    ]
    done = min(stream.resume_batches.value, stream.steps_per_epoch)
    return [next(iterators[(i - done) % num_workers])["key"] for i in range(done, stream.steps_per_epoch)]


def test_sequence_equals_the_reference_and_skips_exactly() -> None:
    rng = np.random.default_rng(3)
    labels = label_lists(300, rng)
    members = [np.array([i for i, x in enumerate(labels) if c in x], dtype=np.int32) for c in range(NUM_CLASSES)]
    expected = PannsBalancedSampler(labels, NUM_CLASSES, seed=SEED).draw(5000)
    assert np.array_equal(BalancedSequence(members, seed=SEED).draw(5000)[0], expected)
    for skip in (0, 1, 5, 6, 7, 611, 4000):  # inside a round, on round bounds, many rounds (lists reshuffled)
        sequence = BalancedSequence(members, seed=SEED)
        sequence.draw(2)
        sequence.skip(skip)
        assert np.array_equal(sequence.draw(300)[0], expected[2 + skip : 302 + skip]), skip


def test_one_and_two_ranks_draw_the_reference_sequence_per_step(converted: Path) -> None:
    steps = 6
    expected = reference_keys(converted, 2 * steps * 8)
    single = datamodule(converted, batch_size=8).train_stream(0, 1)
    ranks = [datamodule(converted).train_stream(rank, 2) for rank in range(2)]
    for epoch in (0, 1):
        one = epoch_keys(single, epoch)
        two = [epoch_keys(stream, epoch, num_workers=2) for stream in ranks]  # 2 workers per rank
        for step in range(steps):
            start = (epoch * steps + step) * 8
            assert one[step] == expected[start : start + 8]
            assert two[0][step] + two[1][step] == expected[start : start + 8]


def test_batches_hold_the_drawn_clips_audio_and_labels_with_one_read_each(
    converted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = datamodule(converted).train_stream(0, 1)
    index = stream.index
    preads: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, size, offset: preads.append(size) or real_pread(fd, size, offset))
    monkeypatch.setattr("tarfile.open", lambda *a, **k: pytest.fail("a drawn clip must not open its shard as a tar"))
    batches = list(stream.iter_slot(ReaderSlot(0, 1, 0, 1)))
    keys = [key for batch in batches for key in batch["key"]]
    assert len(preads) == stream.reader.reads == len(keys) == 24  # one read per drawn clip
    by_key = {index.key(clip): clip for clip in range(index.num_clips)}
    assert sum(preads) == stream.reader.bytes_read == sum(int(index.size[by_key[key]]) for key in keys)
    for batch in batches:
        for row, key in enumerate(batch["key"]):
            stored = np.round(clip_waveform(key.replace("%2F", "/").replace("%2E", ".")) * 32767) / 32767
            np.testing.assert_allclose(batch["waveform"][row].numpy(), stored, atol=1.01 / 32767)
            assert np.flatnonzero(batch["target"][row].numpy()).tolist() == list(index.labels(by_key[key]))


def test_resume_from_the_checkpoint_state_draws_what_the_uninterrupted_run_draws(converted: Path) -> None:
    uninterrupted = datamodule(converted).train_stream(0, 2)
    expected = [epoch_keys(uninterrupted, epoch, num_workers=2) for epoch in (0, 1)]
    # Killed after 4 batches of epoch 1: the checkpoint holds the sampler's state.
    state = sampler_checkpoint_state((0, 0, 0), SEED, 1, 4, steps_per_epoch=6, draws_per_step=8)
    assert state["panns_sampler"] == {"seed": SEED, "epoch": 1, "batch": 4, "position": (6 + 4) * 8}
    resumed_module = datamodule(converted, seed=999)  # the checkpoint's seed wins
    resumed_module.load_state_dict(state)
    resumed_module.set_resume_batches(4)
    resumed = resumed_module.train_stream(0, 2)
    assert epoch_keys(resumed, 1, num_workers=2) == expected[1][4:]
    # An epoch-end checkpoint resumes at the next epoch's first batch.
    assert restored_sampler_state(
        sampler_checkpoint_state((0, 0, 0), SEED, 0, 6, steps_per_epoch=6, draws_per_step=8), SEED
    ) == (SEED, (1, 0, 48))
    with pytest.raises(ValueError, match="panns_sampler state"):
        restored_sampler_state({"panns_sampler": {"seed": -1}}, SEED)


def test_a_set_converted_before_the_index_gets_it_built_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    clips = [FixtureClip(f"old{i:03d}", labels) for i, labels in enumerate(label_lists(30, rng))]
    train = write_shard_set(tmp_path / "old", clips, [10, 10, 10], num_classes=NUM_CLASSES)
    assert not (train / CLIP_INDEX_NAME).exists()
    with caplog.at_level(logging.WARNING):
        stream = datamodule(train).train_stream(0, 1)
    assert "has no clip_index.npz" in caplog.text and "building it once" in caplog.text
    assert (train / CLIP_INDEX_NAME).is_file()
    batch = next(stream.iter_slot(ReaderSlot(0, 1, 0, 1)))
    labels = [list(stream.index.labels(clip)) for clip in range(stream.index.num_clips)]
    drawn = PannsBalancedSampler(labels, NUM_CLASSES, seed=SEED).draw(4)
    assert batch["key"] == [stream.index.key(int(clip)) for clip in drawn]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        datamodule(train).train_stream(0, 1)
    assert "building" not in caplog.text  # read, not rebuilt
    (train / CLIP_INDEX_NAME).unlink()  # the command that indexes a set before it is served over http(s)
    assert clip_index_main([str(train)]) == 0
    assert load_clip_index(train, read_manifest(train)).offset.tolist() == stream.index.offset.tolist()


def test_a_damaged_or_stale_index_is_refused_with_its_reason(converted: Path, tmp_path: Path) -> None:
    manifest = read_manifest(converted)
    index = load_clip_index(converted, manifest)
    assert index is not None

    def copy_set(name: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        for path in converted.iterdir():
            (target / path.name).write_bytes(path.read_bytes())
        return target

    garbage = copy_set("garbage")
    (garbage / CLIP_INDEX_NAME).write_bytes(b"PK\x03\x04 not an index")
    with pytest.raises(ClipIndexError, match=r"clip_index\.npz: unreadable"):
        datamodule(garbage).train_stream(0, 1)

    beyond = copy_set("beyond")
    offsets = index.offset.copy()
    offsets[3] = index.shard_bytes[index.shard[3]]  # past the end of its shard
    write_clip_index(type(index)(**{**index.__dict__, "offset": offsets}), beyond)
    with pytest.raises(ClipIndexError, match="reaches past the end of its shard"):
        datamodule(beyond).train_stream(0, 1)

    not_utf8 = copy_set("not_utf8")
    keys = index.keys.copy()
    keys[0] = 0xFF
    write_clip_index(type(index)(**{**index.__dict__, "keys": keys}), not_utf8)
    with pytest.raises(ClipIndexError, match="a key is not UTF-8"):
        datamodule(not_utf8).train_stream(0, 1)

    oversized = copy_set("oversized")
    with pytest.raises(ClipIndexError, match="max_member_bytes=100"):
        datamodule(oversized, max_member_bytes=100).train_stream(0, 1)

    stale = copy_set("stale")
    shard = stale / manifest.shards[0].name
    shard.write_bytes(shard.read_bytes() + b"\0" * 512)  # rewritten after indexing
    stream = datamodule(stale).train_stream(0, 1)
    with pytest.raises(ClipIndexError, match="the index is stale"):
        for _ in stream.iter_slot(ReaderSlot(0, 1, 0, 1)):
            pass


def test_an_unreadable_clip_is_skipped_counted_and_replaced_from_its_class(tmp_path: Path) -> None:
    clips = [FixtureClip(f"c{i:02d}", [i % 3]) for i in range(12)]
    clips[4].override = {"npy": b"not audio"}  # class 1
    train = write_shard_set(tmp_path / "bad", clips, [6, 6], num_classes=3)
    module = datamodule(train, batch_size=3, steps_per_epoch=8)
    stream = module.train_stream(0, 1)
    keys = [key for batch in stream.iter_slot(ReaderSlot(0, 1, 0, 1)) for key in batch["key"]]
    assert len(keys) == 24 and "c04" not in keys
    assert module.error_counts()["train"]["bad_samples"] == 1  # reported once, later draws skipped quietly
    classes = [int(key[1:]) % 3 for key in keys]
    assert sorted(classes[:3]) == [0, 1, 2]  # still one clip per class in each round of 3 draws


def test_pipe_shards_are_refused_for_the_exact_sampler(converted: Path) -> None:
    with pytest.raises(ValueError, match="pipe: command .* cannot do"):
        datamodule(converted, train_urls=f"pipe:cat {converted}/shard-{{000000..000003}}.tar")
    with pytest.raises(ValueError, match="sampler must be one of"):
        StreamOptions(sampler="exact")
    with pytest.raises(ValueError, match="needs balanced=true"):
        StreamOptions(sampler="panns", balanced=False)


def test_http_shard_sets_are_read_with_one_range_request_per_clip(converted: Path) -> None:
    from http_shard_server import Faults, start_in_thread

    faults = Faults()
    server = start_in_thread(converted.parent, faults)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{converted.name}"
        remote = datamodule(url).train_stream(0, 1)
        local = datamodule(converted).train_stream(0, 1)
        faults.requests.clear()
        got = list(remote.iter_slot(ReaderSlot(0, 1, 0, 1)))
        want = list(local.iter_slot(ReaderSlot(0, 1, 0, 1)))
        assert [b["key"] for b in got] == [b["key"] for b in want]
        for a, b in zip(got, want):
            assert np.array_equal(a["waveform"].numpy(), b["waveform"].numpy())
        ranges = [header for _, header in faults.requests]
        assert len(ranges) == 24 and all(
            header and header.startswith("bytes=") and "-" in header[6:-1] for header in ranges
        )
        faults.ranges = False  # a server that ignores Range is refused, not read whole
        stream = datamodule(url, error_budget=1.0).train_stream(0, 1)
        with pytest.raises(Exception, match="draws in a row"):
            next(stream.iter_slot(ReaderSlot(0, 1, 0, 1)))
    finally:
        server.shutdown()


def test_dry_run_names_the_shard_of_each_workers_first_clip(converted: Path) -> None:
    stream = datamodule(converted).train_stream(1, 2)
    index = stream.index
    by_key = {index.key(clip): clip for clip in range(index.num_clips)}
    for worker in range(2):
        slot = ReaderSlot(1, 2, worker, 2)
        first_key = next(stream.iter_slot(slot))["key"][0]
        assert stream.first_shards(slot) == [stream.spec.urls[int(index.shard[by_key[first_key]])]]


def test_a_run_resumed_on_another_world_size_goes_on_from_the_saved_position(converted: Path) -> None:
    # Saved by 2 ranks of 4 clips after 5 steps of epoch 0; resumed by 1 rank of 8 clips.
    state = sampler_checkpoint_state((0, 0, 0), SEED, 0, 5, steps_per_epoch=6, draws_per_step=8)
    module = datamodule(converted, batch_size=8)
    module.load_state_dict(state)
    module.set_resume_batches(5)
    stream = module.train_stream(0, 1)
    expected = reference_keys(converted, 8 * 8)
    assert epoch_keys(stream, 0) == [expected[40:48]]  # the last batch of epoch 0
    module.set_resume_batches(0)  # as StreamEpochCallback does at an epoch's end
    assert epoch_keys(stream, 1)[:2] == [expected[48:56], expected[56:64]]

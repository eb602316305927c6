"""The stream's parts: shard_urls.py, shard_schedule.py (splitting by rank × worker), tar_reader.py, error_log.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from panns_lightning.data.error_log import BadSampleError, ErrorLog
from panns_lightning.data.shard_schedule import (
    eval_shares_for_slot,
    even_class_order,
    train_shard_schedule,
    train_shards_for_slot,
)
from panns_lightning.data.shard_urls import shard_urls
from panns_lightning.data.tar_reader import read_shard
from panns_lightning.labels import multi_hot
from panns_lightning.shardset import ShardSetError, read_manifest
from panns_lightning.shardset.codec import decode_waveform
from shard_fixtures import FixtureClip, clip_waveform, simple_clips, truncate_file, write_shard_set


def test_manifest_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ShardSetError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(ShardSetError, match=r"manifest\.json not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ShardSetError, match="lacks required fields"):
        read_manifest(tmp_path)


def test_shard_urls_default_to_manifest_files_and_expand_overrides(tmp_path: Path) -> None:
    write_shard_set(tmp_path, simple_clips(6, 2), [4, 2], num_classes=2)
    manifest = read_manifest(tmp_path)
    assert shard_urls(tmp_path, manifest) == [str(tmp_path / "shard-000000.tar"), str(tmp_path / "shard-000001.tar")]
    override = shard_urls(tmp_path, manifest, "pipe:cat /data/shard-{000000..000002}.tar")
    assert override == [f"pipe:cat /data/shard-00000{index}.tar" for index in range(3)]


@pytest.mark.parametrize(("num_shards", "num_slots"), [(7, 4), (8, 4), (3, 4), (1, 6), (10, 3)])
def test_train_pass_gives_every_slot_a_shard_and_disjoint_slices(num_shards: int, num_slots: int) -> None:
    for pass_index in range(3):
        slices = [
            train_shards_for_slot(num_shards, slot, num_slots, seed=5, pass_index=pass_index)
            for slot in range(num_slots)
        ]
        assert all(len(part) >= 1 for part in slices)
        flat = [shard for part in slices for shard in part]
        if num_shards >= num_slots:
            assert sorted(flat) == list(range(num_shards)), "a pass reads every shard exactly once"
        else:
            assert set(flat) == set(range(num_shards)), "wrap-around still covers every shard"


def test_train_schedule_changes_order_between_passes_and_resumes_at_start() -> None:
    schedule = train_shard_schedule(12, 1, 3, seed=0)
    first_two_passes = [next(schedule) for _ in range(8)]
    assert [entry[0] for entry in first_two_passes] == [0] * 4 + [1] * 4
    assert [s for _, s in first_two_passes[:4]] != [s for _, s in first_two_passes[4:]]
    resumed = train_shard_schedule(12, 1, 3, seed=0, start=3)
    assert [next(resumed) for _ in range(5)] == first_two_passes[3:8]


@pytest.mark.parametrize(("num_shards", "num_slots"), [(7, 4), (8, 4), (3, 4), (1, 4), (2, 5), (5, 5)])
def test_eval_shares_cover_each_clip_exactly_once(num_shards: int, num_slots: int) -> None:
    shard_sizes = [5 + 3 * index for index in range(num_shards)]
    seen = []
    for slot in range(num_slots):
        for share in eval_shares_for_slot(num_shards, slot, num_slots):
            seen += [
                (share.shard_index, position)
                for position in range(shard_sizes[share.shard_index])
                if position % share.stride == share.offset
            ]
    expected = [(shard, position) for shard in range(num_shards) for position in range(shard_sizes[shard])]
    assert sorted(seen) == expected


def test_read_shard_returns_clips_in_order_and_labels_only_skips_audio(tmp_path: Path) -> None:
    write_shard_set(tmp_path, simple_clips(5, 3), [5], num_classes=3)
    url = str(tmp_path / "shard-000000.tar")
    clips = list(read_shard(url, storage="int16", with_audio=True, errors=ErrorLog("t")))
    assert [clip.key for clip in clips] == [f"clip{index:05d}" for index in range(5)]
    assert [clip.labels for clip in clips] == [(0,), (1,), (2,), (0,), (1,)]
    assert all(clip.audio for clip in clips)
    labels_only = list(read_shard(url, storage="int16", with_audio=False, errors=ErrorLog("t")))
    assert [clip.audio for clip in labels_only] == [None] * 5


def test_read_shard_through_a_pipe_command(tmp_path: Path) -> None:
    write_shard_set(tmp_path, simple_clips(4, 2), [4], num_classes=2)
    url = f"pipe:cat {tmp_path / 'shard-000000.tar'}"
    assert len(list(read_shard(url, storage="int16", with_audio=True, errors=ErrorLog("t")))) == 4


def test_bad_members_are_skipped_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clips = simple_clips(4, 2)
    clips[1] = FixtureClip("nolabels", [0], override={"json": None})
    clips[2] = FixtureClip("badjson", [0], override={"json": b"{not json"})
    write_shard_set(tmp_path, clips, [4], num_classes=2)
    errors = ErrorLog("train")
    with caplog.at_level(logging.WARNING):
        clips = read_shard(str(tmp_path / "shard-000000.tar"), storage="int16", with_audio=True, errors=errors)
        keys = [clip.key for clip in clips]
    assert keys == ["clip00000", "clip00003"]
    assert errors.counts() == {"bad_samples": 2, "bad_shards": 0}
    assert "nolabels" in caplog.text and "badjson" in caplog.text and "shard-000000.tar" in caplog.text


def test_truncated_shard_keeps_clips_before_the_cut(tmp_path: Path) -> None:
    write_shard_set(tmp_path, simple_clips(20, 2), [20], num_classes=2)
    shard = tmp_path / "shard-000000.tar"
    truncate_file(shard, 0.5)
    errors = ErrorLog("val")
    clips = list(read_shard(str(shard), storage="int16", with_audio=True, errors=errors))
    assert 0 < len(clips) < 20
    assert errors.counts()["bad_shards"] == 1


def test_fail_fast_raises_with_shard_and_key(tmp_path: Path) -> None:
    clips = simple_clips(3, 2)
    clips[1] = FixtureClip("broken", [0], override={"json": b"[]"})
    write_shard_set(tmp_path, clips, [3], num_classes=2)
    with pytest.raises(BadSampleError, match=r"broken.*shard-000000\.tar"):
        errors = ErrorLog("t", fail_fast=True)
        list(read_shard(str(tmp_path / "shard-000000.tar"), storage="int16", with_audio=True, errors=errors))


@pytest.mark.parametrize("storage", ["int16", "flac"])
def test_decode_restores_the_stored_waveform(tmp_path: Path, storage: str) -> None:
    write_shard_set(tmp_path, simple_clips(2, 2), [2], num_classes=2, storage=storage)
    clip = next(read_shard(str(tmp_path / "shard-000000.tar"), storage=storage, with_audio=True, errors=ErrorLog("t")))
    assert clip.audio is not None
    waveform = decode_waveform(clip.audio, storage=storage, sample_rate=8000, clip_samples=800)
    assert waveform.dtype == np.float32 and waveform.shape == (800,)
    np.testing.assert_allclose(waveform, clip_waveform(clip.key), atol=0.5 / 32767 + 1e-7)
    with pytest.raises(ValueError, match="expected 400 samples"):
        decode_waveform(clip.audio, storage=storage, sample_rate=8000, clip_samples=400)


def test_multi_hot_rejects_out_of_range_labels() -> None:
    np.testing.assert_array_equal(multi_hot([0, 2], 3), np.array([1, 0, 1], dtype=np.float32))
    with pytest.raises(ValueError, match="label index 3"):
        multi_hot([3], 3)


def test_even_class_order_reads_every_class_at_an_even_rate() -> None:
    """At a quarter, half and three quarters of the ordered shards every class has had about that share read."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.uniform(0.05, 3.0, size=40), size=(120, 40))  # 120 shards, 40 classes
    weights = counts.sum(axis=1).astype(float) + 1.0
    shards = list(rng.permutation(120))

    def mean_error(order: list[int]) -> float:
        errors = []
        for read_shards in (30, 60, 90):
            first = np.asarray(order[:read_shards])
            read = counts[first].sum(axis=0) / np.maximum(counts.sum(axis=0), 1)
            progress = weights[first].sum() / weights.sum()
            errors.append(np.sqrt(((read - progress) ** 2).mean()))
        return float(np.mean(errors))

    ordered = even_class_order(shards, weights, counts)
    assert sorted(ordered) == sorted(shards), "a reordering: every shard once"
    assert mean_error(ordered) < 0.5 * mean_error(shards)

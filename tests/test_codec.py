"""shardset/codec.py: one encoder and one decoder for both storages; multi-channel members are rejected."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.data.eval_stream import EvalClipStream
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.spec import StreamSpec
from panns_lightning.data.train_stream import TrainClipStream
from panns_lightning.shardset import read_manifest
from panns_lightning.shardset.codec import (
    decode_member,
    decode_waveform,
    encode_int16,
    encode_member,
    samples_to_float,
)
from shard_fixtures import CLIP_SAMPLES, SAMPLE_RATE, FixtureClip, simple_clips, write_shard_set

STORAGES = ("int16", "flac")
MEMBER = {"int16": "npy", "flac": "flac"}


def stereo_member(storage: str, frames: int = CLIP_SAMPLES) -> bytes:
    """A two-channel member of the right length and rate: what another tool might have written."""
    samples = encode_int16(np.random.default_rng(1).uniform(-0.5, 0.5, (frames, 2)))
    buffer = io.BytesIO()
    if storage == "int16":
        np.save(buffer, samples)
    else:
        sf.write(buffer, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def test_int16_quantisation_rounds_and_clips() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -1.7, 1e-5], dtype=np.float32)
    encoded = encode_int16(x)
    assert encoded.dtype == np.int16
    assert encoded.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32768, 0]
    np.testing.assert_allclose(samples_to_float(encoded)[:5], x[:5], atol=1 / 32767)
    assert encode_int16(encoded) is encoded  # int16 (upstream's packed rows) is stored as it is


def test_both_storages_decode_to_the_same_waveform() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 4000).astype(np.float32)
    decoded = {
        storage: decode_waveform(
            encode_member(x, storage=storage, sample_rate=8000), storage=storage, sample_rate=8000, clip_samples=4000
        )
        for storage in STORAGES
    }
    np.testing.assert_array_equal(decoded["int16"], decoded["flac"])
    assert decoded["flac"].dtype == np.float32
    np.testing.assert_allclose(decoded["int16"], x, atol=0.5 / 32767 + 1e-7)
    stored, rate = sf.read(io.BytesIO(encode_member(x, storage="flac", sample_rate=8000)), dtype="int16")
    np.testing.assert_array_equal(stored, encode_int16(x))  # the FLAC holds the int16 member's samples
    assert rate == 8000
    samples = decode_member(
        encode_member(x, storage="int16", sample_rate=8000), storage="int16", sample_rate=8000, clip_samples=4000
    )
    out = np.empty(4000, dtype=np.float32)
    samples_to_float(samples, out=out)
    np.testing.assert_array_equal(out, samples.astype(np.float32) / 32767.0)


def test_encoder_refuses_what_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError, match="unknown storage 'wav'"):
        encode_member(np.zeros(10), storage="wav", sample_rate=8000)
    with pytest.raises(ValueError, match="mono"):
        encode_member(np.zeros((10, 2)), storage="int16", sample_rate=8000)


@pytest.mark.parametrize("storage", STORAGES)
def test_a_multi_channel_member_is_rejected_not_downmixed(storage: str) -> None:
    with pytest.raises(ValueError, match="mono") as caught:
        decode_member(stereo_member(storage), storage=storage, sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES)
    assert ("2 channels" if storage == "flac" else f"shape ({CLIP_SAMPLES}, 2)") in str(caught.value)


@pytest.mark.parametrize("storage", STORAGES)
def test_members_that_do_not_match_the_manifest_say_what_differs(storage: str) -> None:
    member = encode_member(np.zeros(CLIP_SAMPLES + 100), storage=storage, sample_rate=SAMPLE_RATE)
    with pytest.raises(
        ValueError, match=f"expected {CLIP_SAMPLES} samples .*found {CLIP_SAMPLES + (100 if storage == 'int16' else 1)}"
    ):
        # FLAC: at most one frame past the clip is decoded, whatever the member claims
        decode_member(member, storage=storage, sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES)
    with pytest.raises(ValueError, match="unknown storage"):
        decode_member(member, storage="wav", sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES)
    with pytest.raises(ValueError, match="not a .npy array|not a readable FLAC"):
        decode_member(b"garbage" * 10, storage=storage, sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES)


def test_flac_at_another_rate_and_npy_of_another_dtype_are_rejected() -> None:
    flac = encode_member(np.zeros(CLIP_SAMPLES), storage="flac", sample_rate=16000)
    with pytest.raises(ValueError, match="FLAC sample rate 16000 differs from the manifest's 8000"):
        decode_member(flac, storage="flac", sample_rate=8000, clip_samples=CLIP_SAMPLES)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(CLIP_SAMPLES, dtype=np.float32))
    with pytest.raises(ValueError, match="expected an int16 .npy member, found float32"):
        decode_member(buffer.getvalue(), storage="int16", sample_rate=8000, clip_samples=CLIP_SAMPLES)


@pytest.mark.parametrize("storage", STORAGES)
def test_streams_report_a_stereo_member_by_key_and_shard_and_go_on(
    tmp_path: Path, storage: str, caplog: pytest.LogCaptureFixture
) -> None:
    clips = simple_clips(4, 2)
    clips[1] = FixtureClip("stereo", [1], override={MEMBER[storage]: stereo_member(storage)})
    write_shard_set(tmp_path, clips, [4], num_classes=2, storage=storage)
    spec = StreamSpec.from_manifest(read_manifest(tmp_path))
    with caplog.at_level(logging.WARNING):
        batches = list(EvalClipStream(spec, rank=0, world_size=1, batch_size=8))
    assert batches[0]["key"] == ["clip00000", "clip00002", "clip00003"]
    assert "skipped clip 'stereo' in" in caplog.text and "shard-000000.tar" in caplog.text and "mono" in caplog.text

    options = StreamOptions(batch_size=3, steps_per_epoch=2, balanced=False, shuffle_buffer=4)
    train = TrainClipStream(spec, rank=0, world_size=1, options=options)
    keys = [key for batch in train for key in batch["key"]]
    assert len(keys) == 6 and "stereo" not in keys
    assert train.errors.counts()["bad_samples"] == 1  # reported once; its later copies are skipped quietly

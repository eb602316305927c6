"""The HEAR 2021 API contract of ``panns_lightning.hear``, on a small Cnn6 (8 kHz, 20 ms frames).

The official validator (``make hear-check``) runs in its own venv, as it needs TensorFlow; these
tests check what it checks and what it does not: timestamps centred on frames and regular across
analysis windows, batch independence, the resampling to a HEAR rate, the refusals.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from panns_lightning import hear
from panns_lightning.training.module import TaggingModule
from test_inference_support import LABELS, SMALL_FRONTEND, cnn6_checkpoint, lightning_checkpoint_content, workdir

pytestmark = pytest.mark.usefixtures("two_torch_threads")

NETWORK_RATE = SMALL_FRONTEND["sample_rate"]  # 8000 Hz: not a HEAR rate, so input comes at 16 kHz
FRAME_MS = 1000 * SMALL_FRONTEND["hop_size"] / NETWORK_RATE  # 20 ms


@functools.lru_cache(maxsize=None)
def model(**options) -> hear.HearModel:
    return hear.load_model(str(cnn6_checkpoint()), **options)


def noise(sounds: int, seconds: float, sample_rate: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(sounds, int(seconds * sample_rate), generator=generator) * 2 - 1


def test_the_model_exposes_what_the_api_reads() -> None:
    loaded = model()
    assert isinstance(loaded, torch.nn.Module)
    assert loaded.sample_rate == 16000 and isinstance(loaded.sample_rate, int)  # 8 kHz network, HEAR rate above
    assert loaded.scene_embedding_size == loaded.timestamp_embedding_size == 512  # Cnn6's fc1
    assert isinstance(loaded.scene_embedding_size, int) and isinstance(loaded.timestamp_embedding_size, int)
    assert not loaded.training and not loaded.network.training
    loaded.train()  # a harness that asks for training mode still gets embeddings without dropout
    assert not loaded.network.training


@pytest.mark.parametrize("rate, expected", [(32000, 48000), (8000, 16000), (16000, 16000), (22050, 22050)])
def test_input_rate_is_a_hear_rate_with_the_simplest_ratio(rate: int, expected: int) -> None:
    assert hear.hear_sample_rate(rate) == expected


def test_scene_embeddings_shape_dtype_and_value() -> None:
    loaded = model()
    audio = noise(3, 1.5, loaded.sample_rate)
    embeddings = hear.get_scene_embeddings(audio, loaded)
    assert embeddings.shape == (3, 512) and embeddings.dtype == torch.float32
    assert embeddings.std() > 0
    # Under one window: the network's own embedding of the audio resampled to its rate.
    with torch.no_grad():
        expected = loaded.network(AF.resample(audio, 16000, NETWORK_RATE))["embedding"]
    torch.testing.assert_close(embeddings, expected, atol=1e-6, rtol=1e-5)


def test_timestamps_are_regular_centred_and_in_milliseconds() -> None:
    loaded = model()
    seconds = 2.0
    embeddings, timestamps = hear.get_timestamp_embeddings(noise(2, seconds, loaded.sample_rate), loaded)
    step_ms = 2 * FRAME_MS  # the most whole 20 ms frames within 50 ms
    frames = int(seconds * NETWORK_RATE) // SMALL_FRONTEND["hop_size"] + 1  # centred STFT: 101 frames
    count = -(-frames // 2)
    assert embeddings.shape == (2, count, 512) and embeddings.dtype == torch.float32
    assert timestamps.shape == (2, count) and timestamps.dtype == torch.float32
    expected = torch.arange(count, dtype=torch.float32) * step_ms  # frame i is centred at i * hop / sr
    assert torch.equal(timestamps[0], expected) and torch.equal(timestamps[1], expected)
    assert loaded.timestamp_hop_ms == step_ms <= 50.0
    assert timestamps[0, -1] == seconds * 1000  # the last frame is centred on the end of the sound


def test_a_segment_embedding_sits_at_its_segments_centre() -> None:
    loaded = model()
    ratio = loaded.time_downsampling  # Cnn6: 16 frames per segment
    segments = torch.randn(1, 4, 3)
    centres = torch.arange(4) * ratio + (ratio - 1) / 2
    torch.testing.assert_close(loaded.at_frames(segments, centres), segments)
    halfway = loaded.at_frames(segments, centres[:1] + ratio / 2)
    torch.testing.assert_close(halfway[:, 0], (segments[:, 0] + segments[:, 1]) / 2)
    # Before the first centre and after the last: the nearest segment.
    torch.testing.assert_close(loaded.at_frames(segments, torch.tensor([0, 4 * ratio - 1])), segments[:, [0, 3]])


def test_the_timestamp_hop_rounds_down_to_whole_frames() -> None:
    fine = model(timestamp_hop_ms=30.0)
    _, timestamps = hear.get_timestamp_embeddings(noise(1, 1.0, fine.sample_rate), fine)
    assert torch.equal(torch.diff(timestamps[0]), torch.full((timestamps.shape[1] - 1,), FRAME_MS))


def test_long_sounds_are_cut_into_windows_without_breaking_the_timestamps() -> None:
    windowed = model(window_seconds=1.0)  # 2.5 s of audio: windows of 1, 1 and 0.5 s
    whole = model()
    audio = noise(2, 2.5, windowed.sample_rate, seed=3)
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, windowed)
    reference, reference_times = hear.get_timestamp_embeddings(audio, whole)
    assert torch.equal(timestamps, reference_times)  # same regular grid across window boundaries
    assert embeddings.shape == reference.shape
    # The scene embedding: windows weighted by duration (1 s, 1 s, 0.5 s); the last one is
    # zero-padded to 1 s, the shortest input run through the network.
    scene = hear.get_scene_embeddings(audio, windowed)
    resampled = AF.resample(audio, 16000, NETWORK_RATE)
    windows = [resampled[:, :8000], resampled[:, 8000:16000], F.pad(resampled[:, 16000:], (0, 4000))]
    with torch.no_grad():
        parts = [windowed.network(window)["embedding"] for window in windows]
    torch.testing.assert_close(scene, (parts[0] + parts[1] + 0.5 * parts[2]) / 2.5, atol=1e-6, rtol=1e-5)


def test_an_embedding_does_not_depend_on_the_rest_of_the_batch() -> None:
    loaded = model()
    batch = noise(5, 1.2, loaded.sample_rate, seed=7)
    scene = hear.get_scene_embeddings(batch, loaded)
    stamped, _ = hear.get_timestamp_embeddings(batch, loaded)
    alone_scene = hear.get_scene_embeddings(batch[3:4], loaded)
    alone_stamped, _ = hear.get_timestamp_embeddings(batch[3:4], loaded)
    torch.testing.assert_close(alone_scene[0], scene[3], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone_stamped[0], stamped[3], atol=1e-5, rtol=1e-4)
    reversed_scene = hear.get_scene_embeddings(batch.flip(0), loaded)
    torch.testing.assert_close(reversed_scene.flip(0), scene, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(hear.get_scene_embeddings(batch, loaded), scene, atol=0, rtol=0)  # deterministic


def test_a_short_sound_is_padded_to_what_the_network_accepts() -> None:
    loaded = model()
    audio = noise(2, 0.1, loaded.sample_rate)  # 100 ms: fewer frames than Cnn6's poolings need
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, loaded)
    assert embeddings.shape == (2, 3, 512) and timestamps[0].tolist() == [0.0, 40.0, 80.0]
    assert hear.get_scene_embeddings(audio, loaded).shape == (2, 512)


def test_the_input_rate_can_be_the_networks_own() -> None:
    native = model(sample_rate=NETWORK_RATE)
    audio = noise(2, 1.0, NETWORK_RATE)
    with torch.no_grad():
        expected = native.network(audio)["embedding"]
    torch.testing.assert_close(hear.get_scene_embeddings(audio, native), expected, atol=1e-6, rtol=1e-5)


def test_a_16k_network_takes_hear_audio_as_it_is(tmp_path) -> None:
    torch.manual_seed(0)
    frontend = dict(SMALL_FRONTEND, sample_rate=16000, window_size=512, fmax=8000)
    module = TaggingModule({"name": "Cnn6", **frontend}, LABELS)
    path = tmp_path / "cnn6_16k.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    loaded = hear.load_model(path)
    assert loaded.sample_rate == loaded.network_rate == 16000 and loaded.timestamp_hop_ms == 50.0
    _, timestamps = hear.get_timestamp_embeddings(noise(1, 1.0, 16000), loaded)
    assert timestamps[0, :3].tolist() == [0.0, 50.0, 100.0]


def test_bad_input_and_unsupported_models_are_refused() -> None:
    loaded = model()
    with pytest.raises(ValueError, match=r"\[n_sounds, n_samples\]"):
        hear.get_scene_embeddings(torch.zeros(16000), loaded)
    with pytest.raises(ValueError, match="floating point"):
        hear.get_timestamp_embeddings(torch.zeros(1, 16000, dtype=torch.int16), loaded)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        hear.load_model()
    path = workdir() / "leenet.ckpt"
    torch.save(lightning_checkpoint_content("LeeNet11"), path)
    with pytest.raises(ValueError, match="holds LeeNet11.*Cnn6, Cnn10, Cnn14"):
        hear.load_model(path)

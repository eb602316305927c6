"""The HEAR 2021 API (Holistic Evaluation of Audio Representations) over this package's models.

``hear-validator panns_lightning.hear --model CKPT`` and heareval call three functions:

* :func:`load_model` reads any checkpoint the one reader (:mod:`panns_lightning.models.reader`)
  reads (a Lightning ``.ckpt`` from panns-train / panns-finetune, a ``panns-export --format panns``
  file, a published ``{"model": ...}`` file; a file with a model card needs no model name) and
  returns a :class:`HearModel` (an ``nn.Module``, always in eval mode) with ``sample_rate``,
  ``scene_embedding_size`` and ``timestamp_embedding_size``. A checkpoint is required: the
  embeddings of random weights mean nothing, so an empty path is an error, not a silent default.
* :func:`get_scene_embeddings`: ``[n_sounds, D]``, the network's own ``embedding`` output (Cnn14:
  the 2048-d ``fc1`` activations). Sounds longer than the analysis window (the checkpoint's
  training clip length, else 10 s) are cut into consecutive windows whose embeddings are averaged,
  weighted by duration, as :class:`panns_lightning.inference.AudioTagger` does; memory stays
  bounded for the 20-minute sounds the rules allow.
* :func:`get_timestamp_embeddings`: ``[n_sounds, n_timestamps, D]`` and the timestamps in
  **milliseconds**. The CNN's last feature map, averaged over frequency, is smoothed over three
  neighbouring segments (max + mean, as the ``Cnn14_DecisionLevel*`` models do) and ``fc1`` is
  applied to each segment: the same ``D``-dim space as the scene embedding, one vector per segment
  of ``prod(time pools)`` STFT frames (Cnn14: 32 frames, 320 ms at 32 kHz). Those are linearly
  interpolated between segment centres onto STFT frames ``0, k, 2k, ...`` (frame ``i`` of the
  centred STFT is centred at ``i * hop / sr``), ``k`` the most frames that fit in
  ``timestamp_hop_ms`` (50 ms by default, the HEAR suggestion; 10 ms frames give exactly 50 ms).
  The timestamps are regular and centred, but the content changes at the segment rate: the
  network's time resolution is what it is.

Supported networks: the log-mel CNNs (Cnn6, Cnn10, Cnn14 and its variants, the
``Cnn14_DecisionLevel*`` models); others are refused at load time, by name.

Sample rate: HEAR 2021 audio comes at 16000, 22050, 44100 or 48000 Hz and the validator accepts
only those. A network trained at one of them takes its input as is; otherwise ``sample_rate`` is
the HEAR rate at or above the network's with the simplest ratio to it (32 kHz → 48 kHz, 8 kHz →
16 kHz) and the audio is resampled on the model's device (torchaudio's band-limited sinc, as
:mod:`panns_lightning.audio`). ``load_model(path, sample_rate=32000)`` takes another rate (the
later HEAR benchmark also ships 32 kHz audio).

Every sound in a batch has the same length (a ``[n_sounds, n_samples]`` tensor), so every sound
is cut into the same windows, and in eval mode each row is computed on its own: an embedding does
not depend on what else is in the batch (up to float rounding of batched kernels).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from panns_lightning.inference import MIN_WINDOW_SECONDS, PathLike, plan_windows, window_length
from panns_lightning.inference import load_model as load_checkpoint
from panns_lightning.models.cnn import Cnn, CnnDecisionLevel
from panns_lightning.models.reader import file_kind

logger = logging.getLogger(__name__)

HEAR_2021_SAMPLE_RATES = (16000, 22050, 44100, 48000)
"""The rates HEAR 2021 distributes its audio at (and hearvalidator 2021.0.2 accepts)."""
DEFAULT_TIMESTAMP_HOP_MS = 50.0
"""HEAR's suggested upper bound: onsets are scored with a 50 ms tolerance."""
DEFAULT_WINDOW_SECONDS = 10.0
SUPPORTED_NETWORKS = (Cnn, CnnDecisionLevel)


class HearModel(nn.Module):
    """A zoo network plus what the HEAR API reads from a model; eval mode whatever ``train()`` is asked.

    heareval never calls ``eval()`` and the validator calls neither, so :meth:`train` keeps the
    network in eval mode: dropout and SpecAugment never touch an embedding.
    """

    def __init__(
        self,
        network: nn.Module,
        model_name: str,
        network_rate: int,
        hop_size: int,
        sample_rate: int,
        window_samples: int,
        timestamp_hop_frames: int,
    ) -> None:
        super().__init__()
        self.network = network
        self.model_name = model_name
        self.network_rate = int(network_rate)
        self.hop_size = int(hop_size)
        self.sample_rate = int(sample_rate)
        self.window_samples = int(window_samples)
        self.min_samples = max(int(math.ceil(MIN_WINDOW_SECONDS * network_rate)), hop_size)
        self.timestamp_hop_frames = int(timestamp_hop_frames)
        self.time_downsampling = math.prod(time for time, _ in network.pool_sizes)
        self.scene_embedding_size = int(network.fc1.out_features)
        self.timestamp_embedding_size = int(network.fc1.out_features)
        self.train(False)

    def train(self, mode: bool = True) -> HearModel:
        return super().train(False)

    @property
    def timestamp_hop_ms(self) -> float:
        return 1000.0 * self.timestamp_hop_frames * self.hop_size / self.network_rate

    def prepare(self, audio: torch.Tensor) -> torch.Tensor:
        """``[n_sounds, n_samples]`` at :attr:`sample_rate` → float32 at the network's rate."""
        if not isinstance(audio, torch.Tensor):
            raise TypeError(f"audio must be a torch.Tensor [n_sounds, n_samples], got {type(audio).__name__}")
        if audio.dim() != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
            raise ValueError(f"audio must be [n_sounds, n_samples] with both > 0, got shape {tuple(audio.shape)}")
        if not audio.is_floating_point():
            raise ValueError(f"audio must be floating point (float32 in [-1, 1]), got {audio.dtype}")
        audio = audio.float()
        if self.sample_rate != self.network_rate:
            audio = AF.resample(audio, self.sample_rate, self.network_rate)
        return audio

    def padded(self, chunk: torch.Tensor) -> torch.Tensor:
        """Zero-pad a window to the shortest input the network's poolings accept."""
        return F.pad(chunk, (0, self.min_samples - chunk.shape[1])) if chunk.shape[1] < self.min_samples else chunk

    def segment_embeddings(self, chunk: torch.Tensor) -> torch.Tensor:
        """``[n, samples]`` → ``[n, segments, D]``: ``fc1`` on each segment of the last feature map."""
        network = self.network
        x = network.run_blocks(network.logmel(chunk), 1, network.num_blocks).mean(dim=3)
        x = F.max_pool1d(x, kernel_size=3, stride=1, padding=1) + F.avg_pool1d(x, kernel_size=3, stride=1, padding=1)
        return F.relu(network.fc1(x.transpose(1, 2)))

    def at_frames(self, segments: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of ``[n, S, D]`` segment embeddings at local STFT frame indices.

        Segment ``s`` pools frames ``s*r .. s*r + r - 1`` (``r`` = the time downsampling), so its
        centre is frame ``s*r + (r - 1) / 2``; frames outside the first and last centres take the
        nearest segment's value.
        """
        count = segments.shape[1]
        position = ((frames.double() - (self.time_downsampling - 1) / 2) / self.time_downsampling).clamp(0, count - 1)
        lower = position.floor().long()
        upper = (lower + 1).clamp(max=count - 1)
        weight = (position - lower).to(segments.dtype)[None, :, None]
        return segments[:, lower] * (1 - weight) + segments[:, upper] * weight


def load_model(
    model_file_path: PathLike = "",
    *,
    model_name: str | None = None,
    sample_rate: int | None = None,
    timestamp_hop_ms: float = DEFAULT_TIMESTAMP_HOP_MS,
    window_seconds: float | None = None,
) -> HearModel:
    """Load a checkpoint for the HEAR API.

    Args:
        model_file_path: a panns_lightning Lightning ``.ckpt`` or a published PANNs ``.pth``.
        model_name: zoo name for published files (no model card) whose layout fits several models.
        sample_rate: the input rate; default the network's when HEAR 2021 has it, else the HEAR
            rate with the simplest ratio to it (see the module docstring).
        timestamp_hop_ms: largest spacing of timestamp embeddings (rounded down to whole frames).
        window_seconds: analysis window; default the checkpoint's training clip length, else 10 s.
    """
    if not str(model_file_path):
        raise ValueError(
            "panns_lightning.hear.load_model needs a checkpoint (hear-validator panns_lightning.hear --model "
            "CKPT): a panns-train / panns-finetune .ckpt or a published PANNs .pth; random weights are not "
            "offered because their embeddings mean nothing"
        )
    kind = file_kind(model_file_path)
    if kind != "torch":
        raise ValueError(
            f"{model_file_path} is an exported {kind} graph; panns_lightning.hear computes timestamp "
            "embeddings from the network's feature maps: give the .ckpt or the panns-export --format panns .pth"
        )
    loaded = load_checkpoint(Path(model_file_path), model_name=model_name)
    assert loaded.network is not None  # a torch file holds weights
    network = loaded.network.float().eval()
    if type(network) not in SUPPORTED_NETWORKS:
        raise ValueError(
            f"{model_file_path} holds {loaded.model_name}; panns_lightning.hear computes timestamp embeddings "
            "from the log-mel CNNs' feature maps: Cnn6, Cnn10, Cnn14 and its variants, Cnn14_DecisionLevel*"
        )
    network_rate = int(loaded.frontend["sample_rate"])
    hop_size = int(loaded.frontend["hop_size"])
    rate = hear_sample_rate(network_rate) if sample_rate is None else int(sample_rate)
    if rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if timestamp_hop_ms <= 0:
        raise ValueError(f"timestamp_hop_ms must be positive, got {timestamp_hop_ms}")
    if window_seconds is None:
        clip = loaded.clip_samples
        window_seconds = clip / network_rate if clip else DEFAULT_WINDOW_SECONDS
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    frame_ms = 1000.0 * hop_size / network_rate
    hop_frames = max(int(math.floor(timestamp_hop_ms / frame_ms + 1e-9)), 1)
    model = HearModel(
        network,
        loaded.model_name,
        network_rate,
        hop_size,
        rate,
        window_length(window_seconds, network_rate, hop_size),
        hop_frames,
    )
    if rate != network_rate:
        logger.info("%s runs at %d Hz; HEAR input at %d Hz is resampled to it", loaded.model_name, network_rate, rate)
    return model


def hear_sample_rate(network_rate: int) -> int:
    """The HEAR 2021 rate to take audio at: the network's own, else the simplest ratio above it."""
    if network_rate in HEAR_2021_SAMPLE_RATES:
        return network_rate
    higher = [rate for rate in HEAR_2021_SAMPLE_RATES if rate >= network_rate] or [max(HEAR_2021_SAMPLE_RATES)]
    return max(higher, key=lambda rate: (math.gcd(rate, network_rate), -rate))


@torch.no_grad()
def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``[n_sounds, n_samples]`` → ``[n_sounds, scene_embedding_size]`` float32, on the audio's device."""
    waveform = model.prepare(audio)
    total = waveform.shape[1]
    embedding = torch.zeros(waveform.shape[0], model.scene_embedding_size, device=waveform.device)
    for start, stop in plan_windows(total, model.window_samples):
        output = model.network(model.padded(waveform[:, start:stop]))["embedding"]
        embedding += output.float() * ((stop - start) / total)
    return embedding


@torch.no_grad()
def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n_sounds, n_samples]`` → (``[n_sounds, n_timestamps, D]`` float32, ``[n_sounds, n_timestamps]`` ms).

    Timestamp ``i`` is the centre of STFT frame ``i * k`` (``k`` = ``model.timestamp_hop_frames``):
    ``i * k * hop / sr`` seconds, for every such frame of the sound (``n_samples // hop + 1`` frames).
    """
    waveform = model.prepare(audio)
    total = waveform.shape[1]
    hop, step = model.hop_size, model.timestamp_hop_frames
    total_frames = total // hop + 1
    pieces = []
    for start, stop in plan_windows(total, model.window_samples):
        first = start // hop
        last = total_frames if stop == total else stop // hop  # frames this window answers for
        wanted = torch.arange(-(-first // step) * step, last, step, device=waveform.device)
        if wanted.numel():
            segments = model.segment_embeddings(model.padded(waveform[:, start:stop]))
            pieces.append(model.at_frames(segments.float(), wanted - first))
    embeddings = torch.cat(pieces, dim=1)
    frames = torch.arange(embeddings.shape[1], device=waveform.device, dtype=torch.float64) * step
    timestamps = (frames * (1000.0 * hop / model.network_rate)).float().expand(waveform.shape[0], -1)
    return embeddings, timestamps.contiguous()


__all__ = [
    "HEAR_2021_SAMPLE_RATES",
    "HearModel",
    "get_scene_embeddings",
    "get_timestamp_embeddings",
    "hear_sample_rate",
    "load_model",
]

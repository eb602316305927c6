"""Tag, detect (SED) and embed audio with a trained, exported or published PANNs model.

:class:`AudioTagger` reads any model file through the one reader,
:func:`panns_lightning.models.reader.load_model`: this project's Lightning checkpoints, its exports
(``panns-export``: upstream's format with a model card, ONNX, TorchScript) and published PANNs
files (``{"model": state_dict}`` or a bare state_dict, whose model name is given or inferred and
whose labels come from AudioSet's ``class_labels_indices.csv``). A file's model card gives the
network, front end, labels, task and clip length; what users see as probabilities is the card's
activation of the logits (sigmoid for multi-label, softmax for single-label). Nothing here
imports Lightning or the training stack.

Long inputs are cut into consecutive, non-overlapping windows of the length the model was trained
on (the card's clip length; 10 s when the file does not say), so memory stays bounded and each window looks like
a training clip:

* ``clipwise`` probabilities are the **maximum over windows**: a sound present in any window is
  present in the recording (a mean would dilute a short event in a long file);
* the ``embedding`` is the **mean over windows, weighted by each window's duration**, so a short
  tail does not count as much as a full window;
* ``framewise`` probabilities (SED models) are **concatenated**; windows start on multiples of the
  STFT hop, so frame ``i`` is centred at ``i * hop / sr`` seconds exactly as in one pass over the
  whole signal, and there are ``num_samples // hop + 1`` frames.

The last window keeps its own (shorter) length rather than being padded to a full window, as
upstream inference runs a clip at its own length; only windows under
:data:`MIN_WINDOW_SECONDS` are zero-padded to it (the CNNs' poolings need that many frames), and
framewise output of the padding is dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panns_lightning.audio import load_audio, resample
from panns_lightning.models.card import MIN_WINDOW_SECONDS, ModelCard
from panns_lightning.models.finite import require_finite
from panns_lightning.models.frontend import LogmelFeatures
from panns_lightning.models.reader import (
    CheckpointLoadError,
    LoadedModel,
    clip_probabilities,
    infer_model_name,
)
from panns_lightning.models.reader import load_model as read_model
from panns_lightning.models.registry import WAVEFORM_ONLY, list_models

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 10.0
"""PANNs are trained on 10 s AudioSet clips."""
DEFAULT_TOP_K = 10
DEFAULT_BATCH_SIZE = 8
AUDIOSET_CLASSES = 527
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class InferenceOutput:
    """Everything one pass over a recording yields (numpy, float32)."""

    clipwise: np.ndarray
    """``[classes]``: max over windows."""
    embedding: np.ndarray
    """``[D]``: duration-weighted mean over windows."""
    framewise: np.ndarray | None
    """``[frames, classes]`` for SED models, else ``None``."""
    frame_times: np.ndarray | None
    """``[frames]`` frame centres in seconds."""
    window_starts: np.ndarray
    """``[windows]`` start of each window in seconds."""
    duration: float
    """Seconds of audio analysed (at the model's sample rate)."""
    sample_rate: int


@dataclass(frozen=True)
class TagResult:
    """Top-k ``(label, probability)`` pairs, best first, plus every class's probability."""

    top: list[tuple[str, float]]
    probabilities: np.ndarray
    labels: list[str]


@dataclass(frozen=True)
class SedResult:
    """Framewise probabilities ``[frames, classes]`` and each frame's centre time in seconds."""

    framewise: np.ndarray
    frame_times: np.ndarray
    labels: list[str]


class AudioTagger:
    """Tag, detect and embed audio of any sample rate and channel count.

    Args:
        checkpoint: any model file :func:`panns_lightning.models.reader.load_model` reads: a
            panns_lightning ``.ckpt``, an export (``.pth`` with a card, ``.onnx``,
            ``.torchscript.pt``), a published PANNs file (``{"model": state_dict}``) / bare state_dict.
        model_name: zoo name for files without a card (inferred from the file name or the key
            layout when omitted); with a card it must agree with it.
        labels_csv: a ``class_labels_indices.csv`` naming the classes of a file without a card;
            with a card its names must be the card's.
        device: where the network runs (``"cpu"``, ``"cuda"``, ...; ONNX runs on the CPU).
        window_seconds: analysis window; default the card's training clip length when it is
            recorded, else :data:`DEFAULT_WINDOW_SECONDS`. An exported graph with a fixed time
            axis takes windows of its own length only.
        frontend: front-end settings for a file without a card (default ``FRONTEND_DEFAULTS[name]``);
            with a card each must agree with it.
        batch_size: windows run through the network at once.
        loaded: the model already read (:mod:`panns_lightning.tagging.backends` opens ONNX
            sessions with its own settings); ``checkpoint`` then only names it.
    """

    def __init__(
        self,
        checkpoint: PathLike,
        *,
        model_name: str | None = None,
        labels_csv: PathLike | None = None,
        device: str | torch.device = "cpu",
        window_seconds: float | None = None,
        frontend: Mapping[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        loaded: LoadedModel | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.checkpoint = Path(checkpoint)
        self.device = torch.device(device)
        if loaded is None:
            loaded = load_model(
                checkpoint, model_name=model_name, labels_csv=labels_csv, frontend=frontend, device=self.device
            )
        self.loaded = loaded
        self.card: ModelCard = self.loaded.card
        self.model = self.loaded.network
        self.batch_size = batch_size
        self.sample_rate = self.card.sample_rate
        self.hop_size = self.card.hop_size
        self.min_samples = self.card.min_samples
        fixed = self.loaded.fixed_samples
        if fixed is not None:
            if window_seconds is not None and window_length(window_seconds, self.sample_rate, self.hop_size) != fixed:
                raise ValueError(
                    f"{checkpoint} takes inputs of exactly {fixed} samples (its time axis is fixed), but "
                    f"window_seconds={window_seconds:g} was given"
                )
            self.window_samples = self.min_samples = fixed
            return
        if window_seconds is None:
            clip = self.card.clip_samples
            window_seconds = clip / self.sample_rate if clip else DEFAULT_WINDOW_SECONDS
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_samples = window_length(window_seconds, self.sample_rate, self.hop_size)

    # ---- what the model is ------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.loaded.model_name

    @property
    def labels(self) -> list[str]:
        return list(self.loaded.label_names)

    @property
    def is_sed(self) -> bool:
        """Whether the model returns ``framewise_output`` (the ``Cnn14_DecisionLevel*`` family)."""
        return is_sed_model(self.model_name)

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    # ---- public API -------------------------------------------------------------------------
    def load_audio(self, path: PathLike) -> np.ndarray:
        """Decode ``path`` to mono float32 at the model's rate (raises ``AudioDecodeError``)."""
        return load_audio(path, self.sample_rate)

    def infer(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> InferenceOutput:
        """Run the model over ``waveform`` in windows and aggregate (see the module docstring)."""
        audio = self.prepare(waveform, sample_rate)
        windows = plan_windows(audio.shape[0], self.window_samples)
        per_window: list[dict[str, np.ndarray]] = []
        for batch in _batches_of_equal_length(windows, self.batch_size):
            outputs = self._run_windows(audio, batch)
            per_window.extend({key: value[row] for key, value in outputs.items()} for row in range(len(batch)))
        return self.combine(windows, per_window, audio.shape[0])

    def combine(
        self, windows: list[tuple[int, int]], per_window: list[dict[str, np.ndarray]], total: int
    ) -> InferenceOutput:
        """One recording's output from its windows' outputs (in window order; see the module docstring).

        Shared by :meth:`infer` and the batched collection path (:mod:`panns_lightning.tagging`),
        so both give the same numbers however the windows were batched.
        """
        clipwise = np.stack([outputs["clipwise_output"] for outputs in per_window])
        embeddings = np.stack([outputs["embedding"] for outputs in per_window]).astype(np.float64)
        weights = np.array([stop - start for start, stop in windows], dtype=np.float64)
        embedding = (embeddings * (weights / weights.sum())[:, None]).sum(axis=0)
        frames = None
        if "framewise_output" in per_window[0]:
            counts = self._keep_counts(windows, total)
            frames = np.concatenate([out["framewise_output"][:n] for out, n in zip(per_window, counts)])
        return InferenceOutput(
            clipwise=clipwise.max(axis=0).astype(np.float32),
            embedding=embedding.astype(np.float32),
            framewise=frames,
            frame_times=None if frames is None else frame_times(frames.shape[0], self.hop_size, self.sample_rate),
            window_starts=np.array([start for start, _ in windows], dtype=np.float64) / self.sample_rate,
            duration=total / self.sample_rate,
            sample_rate=self.sample_rate,
        )

    def tag(self, waveform: np.ndarray | torch.Tensor, sample_rate: int, top_k: int = DEFAULT_TOP_K) -> TagResult:
        """The ``top_k`` most probable labels (best first) and all clip probabilities."""
        return self.top_labels(self.infer(waveform, sample_rate).clipwise, top_k)

    def sed(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> SedResult:
        """Framewise probabilities ``[frames, classes]`` with frame times (SED models only)."""
        self._require_sed()
        output = self.infer(waveform, sample_rate)
        assert output.framewise is not None and output.frame_times is not None
        return SedResult(output.framewise, output.frame_times, self.labels)

    def embed(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """The clip embedding ``[D]`` (``fc1`` activations; mean over windows)."""
        return self.infer(waveform, sample_rate).embedding

    def top_labels(self, clipwise: np.ndarray, top_k: int = DEFAULT_TOP_K) -> TagResult:
        """Rank ``clipwise`` probabilities; ties keep class order."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        order = np.argsort(-clipwise, kind="stable")[:top_k]
        names = self.labels
        return TagResult([(names[i], float(clipwise[i])) for i in order], clipwise, names)

    def prepare(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        """Down-mix to mono and resample to the model's rate (float32, 1-D).

        2-D input is ``[channels, samples]`` or ``[samples, channels]``: the shorter axis is taken
        as channels (soundfile returns the latter, torchaudio the former).
        """
        if isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().cpu().numpy()
        audio = np.asarray(waveform, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=0 if audio.shape[0] <= audio.shape[1] else 1)
        elif audio.ndim != 1:
            raise ValueError(f"waveform must be [samples] or 2-D with a channel axis, got shape {audio.shape}")
        if audio.shape[0] == 0:
            raise ValueError("waveform is empty")
        if not np.isfinite(audio).all():
            raise ValueError("waveform contains NaN or inf")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        return np.ascontiguousarray(resample(audio, int(sample_rate), self.sample_rate), dtype=np.float32)

    @torch.inference_mode()
    def logmel(self, waveform: np.ndarray) -> np.ndarray:
        """``[frames, mel_bins]`` log-mel (dB) of a mono waveform at the model's rate, for plots.

        The model's own STFT and mel filter bank (before ``bn0``; for an exported graph, the same
        ones built from its card), window by window so memory stays bounded; frames line up with
        :meth:`infer`'s framewise output.
        """
        features = self._logmel_features()
        windows = plan_windows(waveform.shape[0], self.window_samples)
        pieces = []
        for (start, stop), rows in zip(windows, self._keep_counts(windows, waveform.shape[0])):
            chunk = np.zeros(max(stop - start, self.min_samples), dtype=np.float32)
            chunk[: stop - start] = waveform[start:stop]
            mel = features(torch.from_numpy(chunk)[None])[0, 0]
            pieces.append(mel[:rows].float().cpu().numpy())
        return np.concatenate(pieces)

    @torch.inference_mode()
    def window_probabilities(self, windows: np.ndarray) -> np.ndarray:
        """``[B, samples]`` windows at the model's rate → ``[B, classes]`` probabilities (the card's activation)."""
        batch = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        probabilities = self.loaded.probabilities(self.loaded.runner(to_device(batch, self.device)))
        require_finite(probabilities, f"{self.model_name}'s clipwise_output")  # never print nan
        return probabilities.float().cpu().numpy()

    # ---- helpers ----------------------------------------------------------------------------
    def _require_sed(self) -> None:
        if not self.is_sed:
            sed_models = ", ".join(name for name in list_models() if is_sed_model(name))
            raise ValueError(
                f"{self.model_name} has no framewise output; sound event detection needs one of {sed_models}"
            )

    def _logmel_features(self) -> Any:
        model = self.model
        if model is not None and hasattr(model, "logmel_extractor"):
            return lambda batch: model.logmel_extractor(model.spectrogram_extractor(batch.to(self.device)))
        if self.model_name in WAVEFORM_ONLY:
            raise ValueError(f"{self.model_name} has no log-mel front end")
        frontend = self.card.frontend
        return LogmelFeatures(**frontend)

    @torch.inference_mode()
    def _run_windows(self, audio: np.ndarray, windows: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        length = max(windows[0][1] - windows[0][0], self.min_samples)
        batch = np.zeros((len(windows), length), dtype=np.float32)
        for row, (start, stop) in enumerate(windows):
            batch[row, : stop - start] = audio[start:stop]
        return self.run_batch(batch)

    @torch.inference_mode()
    def run_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, samples]`` equal-length windows (at least ``min_samples``) → every output, numpy float32,
        ``clipwise_output`` holding the probabilities users see. On CUDA the batch goes through pinned
        memory with a non-blocking copy, so the host can prepare the next batch meanwhile."""
        outputs = dict(self.loaded.runner(to_device(torch.from_numpy(batch), self.device)))
        outputs["clipwise_output"] = self.loaded.probabilities(outputs)
        require_finite(outputs["clipwise_output"], f"{self.model_name}'s clipwise_output")  # never print nan
        return {key: value.float().cpu().numpy() for key, value in outputs.items()}

    def _keep_counts(self, windows: list[tuple[int, int]], total: int) -> list[int]:
        """Frames each window contributes so the concatenation equals one pass: ``total // hop + 1``."""
        total_frames = total // self.hop_size + 1
        return [
            (total_frames if stop == total else stop // self.hop_size) - start // self.hop_size
            for start, stop in windows
        ]


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` on ``device``: on CUDA through pinned (page-locked) memory with a non-blocking copy."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def class_probabilities(outputs: Mapping[str, torch.Tensor], multilabel: bool) -> torch.Tensor:
    """What a user reads as class probabilities from a zoo network's outputs: its sigmoids when it
    is multi-label, the softmax of its logits when it was trained single-label (cross-entropy).
    (:func:`panns_lightning.models.reader.clip_probabilities` with a card says it once for every file.)"""
    if multilabel:
        return outputs["clipwise_output"]
    logits = outputs.get("logits")
    if logits is None:
        logits = torch.logit(outputs["clipwise_output"].float().clamp(1e-7, 1 - 1e-7))
    return torch.softmax(logits.float(), dim=-1)


def load_model(
    checkpoint: PathLike,
    *,
    model_name: str | None = None,
    labels_csv: PathLike | None = None,
    frontend: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """The runnable model a file holds, with its card (:func:`panns_lightning.models.reader.load_model`).

    A published file without a card and without ``labels_csv`` has its classes named
    ``class_0 .. class_{N-1}``; that is said once on the log.
    """
    loaded = read_model(checkpoint, model_name=model_name, labels_csv=labels_csv, frontend=frontend, device=device)
    if loaded.card_origin == "none" and labels_csv is None:
        count = len(loaded.label_names)
        logger.warning(
            "%s: no labels CSV given, so the %d classes are named class_0 .. class_%d%s",
            loaded.path,
            count,
            count - 1,
            " (pass AudioSet's class_labels_indices.csv for names)" if count == AUDIOSET_CLASSES else "",
        )
    return loaded


def plan_windows(num_samples: int, window_samples: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` sample ranges of ``window_samples``; the last may be shorter."""
    if num_samples <= 0 or window_samples <= 0:
        raise ValueError(f"need positive lengths, got num_samples={num_samples}, window_samples={window_samples}")
    return [(start, min(start + window_samples, num_samples)) for start in range(0, num_samples, window_samples)]


def window_length(seconds: float, sample_rate: int, hop_size: int) -> int:
    """``seconds`` in samples, rounded down to a whole number of STFT hops (at least one hop)."""
    return max(int(round(seconds * sample_rate)) // hop_size, 1) * hop_size


def frame_times(num_frames: int, hop_size: int, sample_rate: int) -> np.ndarray:
    """Centre time (s) of each frame of a centred STFT: frame ``i`` at ``i * hop / sr``."""
    return np.arange(num_frames, dtype=np.float64) * hop_size / sample_rate


def is_sed_model(name: str) -> bool:
    return name.startswith("Cnn14_DecisionLevel")


def _batches_of_equal_length(windows: list[tuple[int, int]], batch_size: int) -> list[list[tuple[int, int]]]:
    """Group consecutive windows of one length (only the last window can differ)."""
    batches: list[list[tuple[int, int]]] = []
    for window in windows:
        if batches and len(batches[-1]) < batch_size and _length(batches[-1][0]) == _length(window):
            batches[-1].append(window)
        else:
            batches.append([window])
    return batches


def _length(window: tuple[int, int]) -> int:
    return window[1] - window[0]


__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "MIN_WINDOW_SECONDS",
    "AudioTagger",
    "CheckpointLoadError",
    "InferenceOutput",
    "LoadedModel",
    "PathLike",
    "SedResult",
    "TagResult",
    "class_probabilities",
    "clip_probabilities",
    "frame_times",
    "infer_model_name",
    "is_sed_model",
    "load_model",
    "plan_windows",
    "to_device",
    "window_length",
]

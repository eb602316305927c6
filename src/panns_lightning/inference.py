"""Tag, detect (SED) and embed audio with a trained or published PANNs model.

:class:`AudioTagger` accepts this project's Lightning checkpoints (model config and labels come
from the file) and published PANNs files (``{"model": state_dict}`` or a bare state_dict; the
model name is given or inferred from the key layout, labels come from AudioSet's
``class_labels_indices.csv``). Every file is read with ``weights_only=True``.

Long inputs are cut into consecutive, non-overlapping windows of the length the model was trained
on (10 s unless the checkpoint says otherwise), so memory stays bounded and each window looks like
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

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from panns_lightning.audio import load_audio, resample
from panns_lightning.labels import read_label_csv
from panns_lightning.models import FRONTEND_DEFAULTS, FRONTEND_KEYS, build_model, load_panns_checkpoint, require_finite
from panns_lightning.models.checkpoint import (
    CLASSIFIER_BIAS_KEYS,
    best_matching_models,
    load_weights_only,
    read_state_dict,
    require_checkpoint_file,
)
from panns_lightning.models.registry import list_models, unknown_model_message
from panns_lightning.shardset import ShardSetError, read_manifest
from panns_lightning.training.checkpoints import checkpoint_kind, load_tagging_module

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 10.0
"""PANNs are trained on 10 s AudioSet clips."""
MIN_WINDOW_SECONDS = 1.0
"""Shortest window run through a model: every zoo model accepts 1 s at its paper front end
(Cnn14's five 2x2 poolings need >= 32 frames, Res1dNet more than 0.5 s of samples)."""
DEFAULT_TOP_K = 10
DEFAULT_BATCH_SIZE = 8
AUDIOSET_CLASSES = 527
PathLike = str | os.PathLike[str]


class CheckpointLoadError(ValueError):
    """A checkpoint that cannot be turned into a tagger (wrong layout, ambiguous model, labels)."""


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode plus what is needed to feed it and to name its outputs."""

    model: nn.Module
    model_name: str
    frontend: dict[str, Any]
    label_names: list[str]
    clip_samples: int | None
    """Training clip length in samples when the checkpoint records it."""
    source: str
    """``"lightning"`` or ``"panns"`` (published / bare state_dict)."""
    multilabel: bool = True
    """False for a model trained single-label (cross-entropy): its probabilities are a softmax."""


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
        checkpoint: a panns_lightning Lightning ``.ckpt``, or a published PANNs file
            (``{"model": state_dict}``) / bare state_dict.
        model_name: zoo name for published files (inferred from the key layout when omitted;
            must agree with a Lightning checkpoint's own config when given).
        labels_csv: AudioSet ``class_labels_indices.csv`` for published files; without it the
            labels are ``class_0 .. class_{N-1}``. Overrides a Lightning checkpoint's names.
        device: where the network runs (``"cpu"``, ``"cuda"``, ...).
        window_seconds: analysis window; default the checkpoint's training clip length when it is
            recorded, else :data:`DEFAULT_WINDOW_SECONDS`.
        frontend: front-end overrides for published files (default ``FRONTEND_DEFAULTS[name]``).
        batch_size: windows run through the network at once.
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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.checkpoint = Path(checkpoint)
        self.loaded = load_model(checkpoint, model_name=model_name, labels_csv=labels_csv, frontend=frontend)
        self.device = torch.device(device)
        self.model = self.loaded.model.to(self.device).eval()
        self.batch_size = batch_size
        self.sample_rate = int(self.loaded.frontend["sample_rate"])
        self.hop_size = int(self.loaded.frontend["hop_size"])
        if window_seconds is None:
            clip = self.loaded.clip_samples
            window_seconds = clip / self.sample_rate if clip else DEFAULT_WINDOW_SECONDS
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_samples = window_length(window_seconds, self.sample_rate, self.hop_size)
        self.min_samples = max(int(math.ceil(MIN_WINDOW_SECONDS * self.sample_rate)), self.hop_size)

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
        clipwise, embeddings, framewise = [], [], []
        for batch in _batches_of_equal_length(windows, self.batch_size):
            outputs = self._run_windows(audio, batch)
            clipwise.append(outputs["clipwise_output"])
            embeddings.append(outputs["embedding"])
            if "framewise_output" in outputs:
                framewise.extend(self._keep_frames(outputs["framewise_output"], batch, audio.shape[0]))
        weights = np.array([stop - start for start, stop in windows], dtype=np.float64)
        embedding = (np.concatenate(embeddings) * (weights / weights.sum())[:, None]).sum(axis=0)
        frames = np.concatenate(framewise) if framewise else None
        return InferenceOutput(
            clipwise=np.concatenate(clipwise).max(axis=0).astype(np.float32),
            embedding=embedding.astype(np.float32),
            framewise=frames,
            frame_times=None if frames is None else frame_times(frames.shape[0], self.hop_size, self.sample_rate),
            window_starts=np.array([start for start, _ in windows], dtype=np.float64) / self.sample_rate,
            duration=audio.shape[0] / self.sample_rate,
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

        Uses the model's own STFT and mel filter bank (before ``bn0``), window by window so
        memory stays bounded; frames line up with :meth:`infer`'s framewise output.
        """
        if not hasattr(self.model, "logmel_extractor"):
            raise ValueError(f"{self.model_name} has no log-mel front end")
        windows = plan_windows(waveform.shape[0], self.window_samples)
        pieces = []
        for (start, stop), rows in zip(windows, self._keep_counts(windows, waveform.shape[0])):
            chunk = np.zeros(max(stop - start, self.min_samples), dtype=np.float32)
            chunk[: stop - start] = waveform[start:stop]
            tensor = torch.from_numpy(chunk).to(self.device)[None]
            mel = self.model.logmel_extractor(self.model.spectrogram_extractor(tensor))[0, 0]
            pieces.append(mel[:rows].float().cpu().numpy())
        return np.concatenate(pieces)

    # ---- helpers ----------------------------------------------------------------------------
    def _require_sed(self) -> None:
        if not self.is_sed:
            sed_models = ", ".join(name for name in list_models() if is_sed_model(name))
            raise ValueError(
                f"{self.model_name} has no framewise output; sound event detection needs one of {sed_models}"
            )

    @torch.inference_mode()
    def _run_windows(self, audio: np.ndarray, windows: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        length = max(windows[0][1] - windows[0][0], self.min_samples)
        batch = np.zeros((len(windows), length), dtype=np.float32)
        for row, (start, stop) in enumerate(windows):
            batch[row, : stop - start] = audio[start:stop]
        outputs = dict(self.model(torch.from_numpy(batch).to(self.device)))
        outputs["clipwise_output"] = class_probabilities(outputs, self.loaded.multilabel)
        require_finite(outputs["clipwise_output"], f"{self.model_name}'s clipwise_output")  # never print nan
        return {key: value.float().cpu().numpy() for key, value in outputs.items()}

    def _keep_frames(self, framewise: np.ndarray, windows: list[tuple[int, int]], total: int) -> list[np.ndarray]:
        """Per window, the frames not covered by the next window (and none of the padding)."""
        return [rows[:count] for rows, count in zip(framewise, self._keep_counts(windows, total))]

    def _keep_counts(self, windows: list[tuple[int, int]], total: int) -> list[int]:
        """Frames each window contributes so the concatenation equals one pass: ``total // hop + 1``."""
        total_frames = total // self.hop_size + 1
        return [
            (total_frames if stop == total else stop // self.hop_size) - start // self.hop_size
            for start, stop in windows
        ]


def class_probabilities(outputs: Mapping[str, torch.Tensor], multilabel: bool) -> torch.Tensor:
    """What a user reads as class probabilities: the sigmoids of a multi-label model, and for one
    trained single-label (cross-entropy) the softmax of its logits, which is what it was trained
    to output (its sigmoids rank the same but do not sum to one)."""
    if multilabel or "logits" not in outputs:
        return outputs["clipwise_output"]
    return torch.softmax(outputs["logits"].float(), dim=-1)


def load_model(
    checkpoint: PathLike,
    *,
    model_name: str | None = None,
    labels_csv: PathLike | None = None,
    frontend: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Build the eval-mode network a checkpoint holds, with its front end and label names."""
    path = require_checkpoint_file(checkpoint)
    content = _peek(path)
    if isinstance(content, Mapping) and checkpoint_kind(content) != "weights":
        loaded = _load_lightning(path, content, model_name)
    else:
        loaded = _load_published(path, model_name, frontend)
    if labels_csv is not None:
        names = list(read_label_csv(labels_csv).names)
        if len(names) != len(loaded.label_names):
            raise CheckpointLoadError(
                f"{labels_csv} lists {len(names)} classes but {path} has {len(loaded.label_names)}"
            )
        loaded = dataclasses.replace(loaded, label_names=names)
    elif loaded.source == "panns":
        logger.warning(
            "%s: no labels CSV given, so the %d classes are named class_0 .. class_%d%s",
            path,
            len(loaded.label_names),
            len(loaded.label_names) - 1,
            " (pass AudioSet's class_labels_indices.csv for names)"
            if len(loaded.label_names) == AUDIOSET_CLASSES
            else "",
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


def infer_model_name(state_dict: Mapping[str, torch.Tensor], path: PathLike) -> str:
    """The zoo model whose key/shape layout ``state_dict`` matches exactly.

    Cnn14 and Cnn14_DecisionLevelMax/Avg share one layout; then the file name decides when it
    names one of them (upstream files are called ``<Model>_mAP=<x>.pth``), else the caller must.
    """
    names, score = best_matching_models(state_dict)
    if score < 1.0:
        raise CheckpointLoadError(
            f"{path}: no zoo model matches the file's keys and shapes exactly (best: "
            f"{' / '.join(names)} with {score:.0%}); pass the model name"
        )
    if len(names) == 1:
        return names[0]
    mentioned = [name for name in names if name.lower() in Path(path).name.lower()]
    if mentioned:
        chosen = max(mentioned, key=len)
        logger.info("%s: layout fits %s; chose %s from the file name", path, " / ".join(names), chosen)
        return chosen
    raise CheckpointLoadError(
        f"{path}: the file's layout fits {' / '.join(names)} equally (same weights, different "
        f"heads); pass the model name (e.g. --model {names[0]})"
    )


# ---- loading helpers ----------------------------------------------------------------------------
def _peek(path: Path) -> Any:
    """Read the file weights-only; memory-mapped when the format allows, so peeking is cheap.

    A file that would run code when unpickled raises UnsafeCheckpointError naming it.
    """
    return load_weights_only(path, mmap=True)


def _load_lightning(path: Path, content: Mapping[str, Any], model_name: str | None) -> LoadedModel:
    config = dict(content["hyper_parameters"].get("model_config") or {})
    if model_name is not None and model_name != config.get("name"):
        raise CheckpointLoadError(
            f"{path} holds a {config.get('name')!r} model, but model name {model_name!r} was given"
        )
    module = load_tagging_module(path, content)
    return LoadedModel(
        model=module.model.eval(),
        model_name=str(config["name"]),
        frontend={key: config[key] for key in FRONTEND_KEYS if key in config},
        label_names=list(module.label_names),
        clip_samples=_training_clip_samples(content),
        source="lightning",
        multilabel=bool(getattr(module, "multilabel", True)),
    )


def _training_clip_samples(content: Mapping[str, Any]) -> int | None:
    """The training clip length: the train crop if one was set, else the train manifest's."""
    hyper = content.get("hyper_parameters") or {}
    if hyper.get("clip_samples"):
        return int(hyper["clip_samples"])
    data = content.get("datamodule_hyper_parameters") or {}
    if data.get("train_crop_samples"):
        return int(data["train_crop_samples"])
    if data.get("train_dir"):
        try:
            return read_manifest(str(data["train_dir"]), check_files=False).clip_samples
        except ShardSetError:  # moved, deleted or damaged since training: use the default window
            return None
    return None


def _load_published(path: Path, model_name: str | None, frontend: Mapping[str, Any] | None) -> LoadedModel:
    state_dict = read_state_dict(path)
    if model_name is None:
        model_name = infer_model_name(state_dict, path)
    elif model_name not in FRONTEND_DEFAULTS:
        raise CheckpointLoadError(unknown_model_message(model_name))
    classes = next((int(state_dict[key].shape[0]) for key in CLASSIFIER_BIAS_KEYS if key in state_dict), None)
    if classes is None:
        raise CheckpointLoadError(f"{path}: no classifier found (expected one of {', '.join(CLASSIFIER_BIAS_KEYS)})")
    unknown = sorted(set(frontend or {}) - set(FRONTEND_KEYS))
    if unknown:
        raise ValueError(f"unknown front-end settings {unknown}; expected some of {list(FRONTEND_KEYS)}")
    settings = {**FRONTEND_DEFAULTS[model_name], **(frontend or {})}
    model = build_model(model_name, **settings, classes_num=classes)
    expected_mel = _mel_filters(model)
    load_panns_checkpoint(model, path)
    _warn_if_other_frontend(path, model_name, expected_mel, _mel_filters(model))
    return LoadedModel(
        model=model.eval(),
        model_name=model_name,
        frontend=settings,
        label_names=[f"class_{index}" for index in range(classes)],
        clip_samples=None,
        source="panns",
    )


def _mel_filters(model: nn.Module) -> torch.Tensor | None:
    extractor = getattr(model, "logmel_extractor", None)
    return None if extractor is None else extractor.melW.detach().clone()


def _warn_if_other_frontend(
    path: Path, model_name: str, expected: torch.Tensor | None, loaded: torch.Tensor | None
) -> None:
    """The file carries its mel filter bank: a mismatch means another sample rate / fmin / fmax."""
    if expected is None or loaded is None or expected.shape != loaded.shape:
        return
    if not torch.allclose(expected, loaded, atol=1e-5):
        logger.warning(
            "%s: the file's mel filter bank differs from the one %s's front end %s builds; the "
            "model was probably trained at another sample rate or fmin/fmax (pass frontend=...)",
            path,
            model_name,
            FRONTEND_DEFAULTS[model_name],
        )


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

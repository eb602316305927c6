"""The model card: the facts that define a model, written into every file that holds one.

A card is plain data (JSON-ready dicts, lists, strings and numbers, so ``torch.load(weights_only=True)``
reads it) and says:

* ``model``: the zoo name (``Cnn14``, ``Cnn6``, ...), i.e. which network the weights belong to;
* ``frontend``: ``sample_rate``, ``window_size``, ``hop_size``, ``mel_bins``, ``fmin``, ``fmax``;
  ``options``: how the network computes without changing its weights (``stft``, ``wave_conv2d``);
* ``clip_samples``: the training clip length at ``sample_rate`` (null when unknown) and
  ``min_samples``: the shortest input the network runs on (shorter windows are zero-padded);
* ``labels``: the class names, in output order;
* ``task`` (``multi-label`` / ``single-label``) and ``activation``, what turns the logits into
  the probabilities users see: ``sigmoid`` for multi-label, ``softmax`` for single-label;
* ``provenance``: the training data (name, split, clip counts from its manifest, resample method),
  the parent checkpoint when fine-tuned, and what wrote the file;
* ``artifact``: what this file's own outputs are (``format``; ``clipwise_output``: the activation
  its ``clipwise_output`` already has; for exported graphs, ``dynamic_time`` and ``input_samples``).

Every value read from a file is checked here before a network is built: a card (or an older
checkpoint's config) that says ``hop_size=0`` or ``mel_bins=10000000`` is a :class:`CardError`
naming the key, what was expected and what was found. Documented in docs/model_card.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .frontend import frontend_problems
from .registry import FRONTEND_KEYS, list_models

CARD_KEY = "model_card"
"""Key of the card in a Lightning checkpoint and beside ``"model"`` in an upstream-format file;
also the ONNX metadata key."""
CARD_FILE = "model_card.json"
"""Name of the card among a TorchScript archive's extra files."""
CARD_VERSION = 1
ACTIVATIONS = {"multi-label": "sigmoid", "single-label": "softmax"}
FORMATS = ("lightning", "panns", "onnx", "torchscript")
OPTION_VALUES: dict[str, tuple[Any, ...]] = {"stft": ("conv", "fft"), "wave_conv2d": (True, False)}
MIN_WINDOW_SECONDS = 1.0
"""Shortest window run through a model: every zoo model accepts 1 s at its paper front end
(Cnn14's five 2x2 poolings need >= 32 frames, Res1dNet more than 0.5 s of samples)."""

# Bounds on what a file may ask for beyond the front end (whose bounds are frontend_problems'):
# generous for real models, small enough that a hostile or corrupt card cannot make a reader
# allocate without limit.
MAX_CLASSES = 100_000
MAX_LABEL_CHARS = 1_000
MAX_CLIP_SECONDS = 3_600
MAX_CARD_BYTES = 16 * 1024 * 1024


class CardError(ValueError):
    """A model card (or a checkpoint's model config) that is missing, malformed or out of bounds."""


@dataclass(frozen=True)
class ModelCard:
    """What a model file says about itself; see the module docstring for each field."""

    model: str
    frontend: dict[str, Any]
    labels: list[str]
    task: str = "multi-label"
    clip_samples: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    version: int = CARD_VERSION

    # ---- what readers ask ------------------------------------------------------------------
    @property
    def activation(self) -> str:
        """``sigmoid`` (multi-label) or ``softmax`` (single-label): logits → the probabilities shown."""
        return ACTIVATIONS[self.task]

    @property
    def multilabel(self) -> bool:
        return self.task == "multi-label"

    @property
    def sample_rate(self) -> int:
        return int(self.frontend["sample_rate"])

    @property
    def hop_size(self) -> int:
        return int(self.frontend["hop_size"])

    @property
    def min_samples(self) -> int:
        """Shortest input the network is run on: :data:`MIN_WINDOW_SECONDS`, at least one hop."""
        return max(int(math.ceil(MIN_WINDOW_SECONDS * self.sample_rate)), self.hop_size)

    @property
    def clipwise_activation(self) -> str:
        """The activation this file's ``clipwise_output`` already has (the zoo networks: sigmoid)."""
        return str(self.artifact.get("clipwise_output", "sigmoid"))

    def build_options(self) -> dict[str, Any]:
        """Keyword arguments of ``build_model`` for this card (front end, options, class count)."""
        return {**self.frontend, **self.options, "classes_num": len(self.labels)}

    def describe(self) -> str:
        """One line for logs: name, rate, mel bins, classes, task, clip length."""
        clip = f"{self.clip_samples / self.sample_rate:g} s clips" if self.clip_samples else "clip length unknown"
        return (
            f"{self.model}, {self.sample_rate} Hz, {self.frontend['mel_bins']} mel bins, "
            f"{len(self.labels)} classes, {self.task} ({self.activation}), {clip}"
        )

    # ---- reading and writing ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (what goes into a file), keys in a stable order."""
        payload = {
            "version": self.version,
            "model": self.model,
            "frontend": dict(self.frontend),
            "options": dict(self.options),
            "clip_samples": self.clip_samples,
            "min_samples": self.min_samples,
            "labels": list(self.labels),
            "task": self.task,
            "activation": self.activation,
            "provenance": dict(self.provenance),
            "artifact": dict(self.artifact),
        }
        return payload

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ModelCard:
        """Check every field of a card read from ``source`` (a file name, for messages) and build it."""
        if not isinstance(data, Mapping):
            raise CardError(f"{source}: the model card must be a mapping, found {type(data).__name__}")
        version = data.get("version")
        if version != CARD_VERSION:
            raise CardError(
                f"{source}: model card key 'version': expected {CARD_VERSION} (what this panns_lightning reads), "
                f"found {version!r}"
            )
        require_plain(data, source)
        model = _require(data, "model", source)
        if model not in list_models():
            raise CardError(f"{source}: model card key 'model': expected a zoo model name, found {model!r}")
        frontend = check_frontend(_require(data, "frontend", source), source, "frontend.")
        options = check_options(data.get("options") or {}, source)
        labels = check_labels(_require(data, "labels", source), source)
        task = _require(data, "task", source)
        if task not in ACTIVATIONS:
            raise CardError(f"{source}: model card key 'task': expected one of {sorted(ACTIVATIONS)}, found {task!r}")
        activation = data.get("activation", ACTIVATIONS[task])
        if activation != ACTIVATIONS[task]:
            raise CardError(
                f"{source}: model card key 'activation': expected {ACTIVATIONS[task]!r} for a {task} model, "
                f"found {activation!r}"
            )
        clip_samples = check_clip_samples(data.get("clip_samples"), frontend["sample_rate"], source)
        provenance = _mapping(data.get("provenance") or {}, "provenance", source)
        artifact = check_artifact(_mapping(data.get("artifact") or {}, "artifact", source), source)
        return cls(model, frontend, labels, task, clip_samples, options, provenance, artifact)

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> ModelCard:
        if len(text) > MAX_CARD_BYTES:
            raise CardError(f"{source}: the model card is {len(text)} bytes, more than {MAX_CARD_BYTES}")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise CardError(f"{source}: the model card is not valid JSON ({error})") from None
        return cls.from_dict(data, source)

    def with_artifact(self, format: str, **facts: Any) -> ModelCard:
        """This card for one file of ``format``, with that file's own output facts."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        clipwise = facts.pop("clipwise_output", "sigmoid")
        return dataclasses.replace(self, artifact={"format": format, "clipwise_output": clipwise, **facts})


def card_from_model_config(
    model_config: Mapping[str, Any],
    labels: Sequence[str],
    *,
    multilabel: bool,
    clip_samples: int | None,
    source: str,
    provenance: Mapping[str, Any] | None = None,
) -> ModelCard:
    """A card from a training run's model config (``name`` + front end + options): validated like a file's."""
    config = _mapping(model_config, "model_config", source)
    name = config.get("name")
    if name not in list_models():
        raise CardError(f"{source}: model config key 'name': expected a zoo model name, found {name!r}")
    frontend = check_frontend({key: config.get(key) for key in FRONTEND_KEYS}, source, "model_config.")
    options = check_options({key: config[key] for key in OPTION_VALUES if key in config}, source)
    return ModelCard(
        model=str(name),
        frontend=frontend,
        labels=check_labels(list(labels), source),
        task="multi-label" if multilabel else "single-label",
        clip_samples=check_clip_samples(clip_samples, frontend["sample_rate"], source),
        options=options,
        provenance=dict(provenance or {}),
    )


def check_frontend(frontend: Any, source: str, prefix: str = "frontend.") -> dict[str, Any]:
    """The six front-end settings, checked by the bounds every config is checked by
    (:func:`~panns_lightning.models.frontend.frontend_problems`); one line naming the first bad one."""
    frontend = _mapping(frontend, prefix.rstrip("."), source)
    for key in FRONTEND_KEYS:
        if frontend.get(key) is None:
            raise CardError(f"{source}: key '{prefix}{key}': expected a number, found nothing")
    values = {key: frontend[key] for key in FRONTEND_KEYS}
    for key in ("sample_rate", "window_size", "hop_size", "mel_bins"):  # JSON may hold 16000.0
        if isinstance(values[key], float) and values[key].is_integer():
            values[key] = int(values[key])
    problems = frontend_problems(**values)
    if problems:
        raise CardError(f"{source}: {prefix}{problems[0]}")
    return values


def check_options(options: Any, source: str) -> dict[str, Any]:
    options = _mapping(options, "options", source)
    for key, value in options.items():
        allowed = OPTION_VALUES.get(key)
        if allowed is None:
            raise CardError(f"{source}: model card key 'options.{key}': expected one of {sorted(OPTION_VALUES)}")
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise CardError(f"{source}: model card key 'options.{key}': expected one of {allowed}, found {value!r}")
    return dict(options)


def check_labels(labels: Any, source: str) -> list[str]:
    if not isinstance(labels, list) or not labels:
        raise CardError(f"{source}: model card key 'labels': expected a non-empty list of names, found {labels!r:.80}")
    if len(labels) > MAX_CLASSES:
        raise CardError(f"{source}: model card key 'labels': expected at most {MAX_CLASSES} names, found {len(labels)}")
    for index, name in enumerate(labels):
        if not isinstance(name, str) or len(name) > MAX_LABEL_CHARS:
            raise CardError(
                f"{source}: model card key 'labels[{index}]': expected a name of at most {MAX_LABEL_CHARS} "
                f"characters, found {name!r:.80}"
            )
    return list(labels)


def check_clip_samples(value: Any, sample_rate: int, source: str) -> int | None:
    if value is None:
        return None
    limit = MAX_CLIP_SECONDS * sample_rate
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise CardError(
            f"{source}: model card key 'clip_samples': expected an integer in 1..{limit} "
            f"({MAX_CLIP_SECONDS} s at {sample_rate} Hz), found {value!r}"
        )
    return int(value)


def check_artifact(artifact: dict[str, Any], source: str) -> dict[str, Any]:
    if not artifact:
        return {}
    if artifact.get("format") not in FORMATS:
        raise CardError(
            f"{source}: model card key 'artifact.format': expected one of {FORMATS}, found {artifact.get('format')!r}"
        )
    if artifact.get("clipwise_output") not in set(ACTIVATIONS.values()):
        raise CardError(
            f"{source}: model card key 'artifact.clipwise_output': expected 'sigmoid' or 'softmax', "
            f"found {artifact.get('clipwise_output')!r}"
        )
    return artifact


def require_plain(value: Any, source: str, depth: int = 0) -> None:
    """Only JSON types (str, int, float, bool, None, lists, string-keyed dicts), nested at most 8 deep."""
    if depth > 8:
        raise CardError(f"{source}: the model card is nested more than 8 levels deep")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CardError(f"{source}: model card keys must be strings, found {key!r:.40}")
            require_plain(item, source, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            require_plain(item, source, depth + 1)
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise CardError(f"{source}: the model card holds a {type(value).__name__}; only plain JSON values belong there")


# ---- helpers -----------------------------------------------------------------------------------
def _require(data: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in data:
        raise CardError(f"{source}: model card key '{key}' is missing")
    return data[key]


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise CardError(f"{source}: key '{key}': expected a mapping, found {type(value).__name__}")
    return dict(value)

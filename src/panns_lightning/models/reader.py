"""The one reader of model files: every consumer (panns-tag, ``AudioTagger``, panns-eval, panns-export,
the HEAR API, fine-tuning) comes through here.

It reads a file **once** and returns its weights and its model card (:mod:`.card`):

* a Lightning checkpoint (panns-train / panns-finetune): the card under ``"model_card"``; older
  checkpoints without one get it from their hyper-parameters (model config, labels, task);
* upstream's format ``{"model": state_dict}`` (a published file, or ``panns-export --format panns``,
  which adds ``"model_card"`` beside ``"model"``) or a bare state_dict;
* ONNX (the card in the metadata) and TorchScript (the card among the extra files), through
  :mod:`.runtimes`.

Which network: the card's, else ``model_name`` when given, else the zoo model the file name
starts with (upstream's files are ``<Model>_mAP=<x>.pth``) when the weights fit it, and only
then a guess from the key layout. A file with a card loads with no flags; an override that
contradicts its card (or an older checkpoint's recorded config) is an error naming both values.
Every card is validated before a network is built; every torch file is read with
``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from panns_lightning.labels import read_label_csv

from .card import CARD_KEY, CardError, ModelCard, card_from_model_config, check_frontend
from .checkpoint import (
    CLASSIFIER_BIAS_KEYS,
    ZIP_MAGIC,
    CheckpointMismatchError,
    StateDictMismatch,
    best_matching_models,
    extract_state_dict,
    fits_layout,
    load_weights_only,
    require_checkpoint_file,
)
from .registry import FRONTEND_DEFAULTS, FRONTEND_KEYS, build_model, list_models, unknown_model_message
from .runtimes import Runner, read_graph, runnable_graph

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
ONNX_SUFFIX = ".onnx"
# What an ONNX file (a protobuf ModelProto) starts with: field 1, ir_version, as a varint.
ONNX_FIRST_BYTE = b"\x08"


class CheckpointLoadError(ValueError):
    """A model file that cannot be turned into a network (layout, ambiguous model, labels, overrides)."""


@dataclass
class ModelFile:
    """What one read of a model file gives: its kind, weights (torch files) and card."""

    path: Path
    kind: str
    """``lightning``, ``panns`` (``{"model": ...}``), ``state_dict``, ``onnx`` or ``torchscript``."""
    card: ModelCard | None
    """The file's own card, or one made from an older Lightning checkpoint's hyper-parameters."""
    card_origin: str
    """``card`` (written into the file), ``hyper_parameters`` (older checkpoint) or ``none``."""
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    runtime: Any = None
    """For ONNX / TorchScript: the loaded graph (see :mod:`.runtimes`)."""


@dataclass(frozen=True)
class LoadedModel:
    """A runnable model and its card (the card says how to feed it and what its outputs mean)."""

    card: ModelCard
    runner: Runner
    network: nn.Module | None
    """The zoo network in eval mode (torch files); ``None`` for ONNX / TorchScript."""
    path: Path
    kind: str
    card_origin: str
    fixed_samples: int | None = None
    """Input length an exported graph requires (its time axis is fixed), else ``None``."""

    # ---- what older callers read ------------------------------------------------------------
    @property
    def model(self) -> nn.Module | None:
        return self.network

    @property
    def model_name(self) -> str:
        return self.card.model

    @property
    def frontend(self) -> dict[str, Any]:
        return dict(self.card.frontend)

    @property
    def label_names(self) -> list[str]:
        return list(self.card.labels)

    @property
    def clip_samples(self) -> int | None:
        return self.card.clip_samples

    @property
    def multilabel(self) -> bool:
        return self.card.multilabel

    @property
    def source(self) -> str:
        """``lightning`` or ``panns`` (published file / bare state_dict), ``onnx``, ``torchscript``."""
        return "panns" if self.kind == "state_dict" else self.kind

    def probabilities(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The class probabilities users see, from this file's outputs (see :func:`clip_probabilities`)."""
        return clip_probabilities(outputs, self.card)


def load_model(
    path: PathLike,
    *,
    model_name: str | None = None,
    labels_csv: PathLike | None = None,
    frontend: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Read ``path`` once and return the runnable model with its card.

    ``model_name``, ``frontend`` and ``labels_csv`` are for files without a card (published
    PANNs files); given with a file that has one, each must agree with it.
    """
    file = read_model_file(path)
    labels = list(read_label_csv(labels_csv).names) if labels_csv is not None else None
    if file.kind in ("onnx", "torchscript"):
        if file.card is None:
            raise CheckpointLoadError(
                f"{file.path}: this {file.kind} file has no model card (exported before cards, or not by "
                "panns-export), so its sample rate and labels are unknown; export it again with panns-export"
            )
        check_overrides(file.card, file.path, model_name=model_name, frontend=frontend, labels=labels)
        runner, fixed = runnable_graph(file.kind, file.card, file.runtime, file.path, device)
        return LoadedModel(file.card, runner, None, file.path, file.kind, file.card_origin, fixed)
    card, network = build_network(file, model_name=model_name, frontend=frontend, labels=labels)
    network = network.to(device).eval()
    return LoadedModel(card, network, network, file.path, file.kind, file.card_origin)


def read_model_file(path: PathLike) -> ModelFile:
    """Read ``path`` once: its kind, weights and card (validated). Raises one-line errors naming the file."""
    path = require_checkpoint_file(path)
    if _is_onnx(path) or _is_torchscript(path):
        kind, card, graph = read_graph(path)
        return ModelFile(path, kind, card, "card" if card else "none", runtime=graph)
    content = load_weights_only(path, mmap=True)
    state = extract_state_dict(content, path)
    if not isinstance(content, Mapping):  # extract_state_dict refused anything else
        raise CheckpointLoadError(f"{path}: not a checkpoint dict")
    if isinstance(content.get("hyper_parameters"), Mapping) and isinstance(content.get("state_dict"), Mapping):
        card, origin = lightning_card(content, path)
        return ModelFile(path, "lightning", card, origin, state)
    kind = "panns" if isinstance(content.get("model"), Mapping) else "state_dict"
    card = ModelCard.from_dict(content[CARD_KEY], str(path)) if CARD_KEY in content else None
    return ModelFile(path, kind, card, "card" if card else "none", state)


def file_kind(path: PathLike) -> str:
    """``onnx``, ``torchscript`` or ``torch`` (a checkpoint) from the file's first bytes, without reading it."""
    path = require_checkpoint_file(path)
    if _is_onnx(path):
        return "onnx"
    return "torchscript" if _is_torchscript(path) else "torch"


def read_card(path: PathLike) -> ModelCard | None:
    """The card a model file carries (or its older checkpoint's config says), ``None`` for published files."""
    return read_model_file(path).card


def lightning_card(content: Mapping[str, Any], path: Path) -> tuple[ModelCard, str]:
    """The card of a Lightning checkpoint: its own, or (older checkpoints) one from its hyper-parameters.

    An older checkpoint's clip length is its training crop when it recorded one; the training
    manifest is not read (the receiver of a file rarely has the data it was trained on).
    """
    if CARD_KEY in content:
        return ModelCard.from_dict(content[CARD_KEY], str(path)), "card"
    hyper = content["hyper_parameters"]
    for key in ("model_config", "labels"):
        if key not in hyper:
            raise CardError(
                f"{path} was not written by a panns_lightning TaggingModule: its hyper_parameters lack '{key}' "
                f"(found {sorted(map(str, hyper))[:8]})"
            )
    labels = hyper["labels"]
    if not isinstance(labels, list):
        raise CardError(f"{path}: key 'hyper_parameters.labels': expected a list, found {type(labels).__name__}")
    names = [
        str(label.get("name", label.get("mid", i))) if isinstance(label, Mapping) else label
        for i, label in enumerate(labels)
    ]
    data = content.get("datamodule_hyper_parameters") or {}
    clip = hyper.get("clip_samples") or (data.get("train_crop_samples") if isinstance(data, Mapping) else None)
    card = card_from_model_config(
        hyper["model_config"],
        names,
        multilabel=bool(hyper.get("multilabel", True)),
        clip_samples=clip,
        source=str(path),
    )
    return card, "hyper_parameters"


def build_network(
    file: ModelFile,
    *,
    model_name: str | None = None,
    frontend: Mapping[str, Any] | None = None,
    labels: list[str] | None = None,
) -> tuple[ModelCard, nn.Module]:
    """The zoo network the file's weights belong to, built once and loaded strictly, with its card."""
    if file.card is not None:
        card = check_overrides(file.card, file.path, model_name=model_name, frontend=frontend, labels=labels)
    else:
        card = published_card(file, model_name=model_name, frontend=frontend, labels=labels)
    network = build_for_weights(card.model, **card.build_options())
    built_filters = mel_filters(network) if file.card is None else None
    load_strictly(network, file.state_dict, file.path, card.model, assign=True)
    if built_filters is not None:
        warn_if_other_frontend(file.path, card, built_filters, mel_filters(network))
    return card, network.eval()


def check_overrides(
    card: ModelCard,
    path: Path,
    *,
    model_name: str | None = None,
    frontend: Mapping[str, Any] | None = None,
    labels: list[str] | None = None,
) -> ModelCard:
    """``card`` itself; any given value that contradicts it is an error naming both."""
    if model_name is not None and model_name != card.model:
        raise CheckpointLoadError(
            f"{path} holds a {card.model!r} model (its model card), but model name {model_name!r} was given"
        )
    for key, value in (frontend or {}).items():
        if key not in FRONTEND_KEYS:
            raise CheckpointLoadError(f"unknown front-end setting {key!r}; expected some of {list(FRONTEND_KEYS)}")
        if card.frontend[key] != value:
            raise CheckpointLoadError(
                f"{path}: its model card says {key}={card.frontend[key]}, but {key}={value} was given"
            )
    if labels is not None and labels != card.labels:
        raise CheckpointLoadError(f"{path}: {label_difference(card.labels, labels)}")
    return card


def published_card(
    file: ModelFile,
    *,
    model_name: str | None = None,
    frontend: Mapping[str, Any] | None = None,
    labels: list[str] | None = None,
) -> ModelCard:
    """A card for a file without one (a published PANNs file): today's inference from layout and name.

    The network: ``model_name``, else the zoo model the file name starts with if the weights fit
    it, else the one whose layout they fit. Its paper front end (``frontend`` overrides it),
    AudioSet's task (multi-label), classes named ``class_<i>`` unless ``labels`` names them.
    """
    state, path = file.state_dict, file.path
    unknown = sorted(set(frontend or {}) - set(FRONTEND_KEYS))
    if unknown:
        raise CheckpointLoadError(f"unknown front-end settings {unknown}; expected some of {list(FRONTEND_KEYS)}")
    if model_name is None:
        model_name = name_from_file(path, state, frontend) or infer_model_name(state, path)
    elif model_name not in FRONTEND_DEFAULTS:
        raise CheckpointLoadError(unknown_model_message(model_name))
    classes = next((int(state[key].shape[0]) for key in CLASSIFIER_BIAS_KEYS if key in state), None)
    if classes is None:
        raise CheckpointLoadError(f"{path}: no classifier found (expected one of {', '.join(CLASSIFIER_BIAS_KEYS)})")
    if labels is not None and len(labels) != classes:
        raise CheckpointLoadError(f"the labels list {len(labels)} classes but {path} has {classes}")
    return ModelCard.from_dict(
        {
            "version": 1,
            "model": model_name,
            "frontend": {**FRONTEND_DEFAULTS[model_name], **(frontend or {})},
            "labels": labels or [f"class_{index}" for index in range(classes)],
            "task": "multi-label",
            "provenance": {"note": "no model card in the file: model, front end and labels inferred"},
        },
        str(path),
    )


def name_from_file(
    path: Path, state_dict: Mapping[str, torch.Tensor], frontend: Mapping[str, Any] | None = None
) -> str | None:
    """The longest zoo name the file name starts with (``Cnn14_16k_mAP=0.438.pth`` → Cnn14_16k), if the weights fit it."""
    stem = path.name.lower()
    named = [
        name
        for name in list_models()
        if stem == name.lower() or stem.startswith(tuple(name.lower() + c for c in "_-."))
    ]
    if not named:
        return None
    name = max(named, key=len)
    check_frontend({**FRONTEND_DEFAULTS[name], **(frontend or {})}, str(path))  # before anything is built from it
    if fits_layout(name, state_dict, frontend):
        logger.info("%s: model %s, from the file name", path, name)
        return name
    logger.info("%s: the file name suggests %s, but the weights do not fit it; inferring from their layout", path, name)
    return None


def infer_model_name(state_dict: Mapping[str, torch.Tensor], path: PathLike) -> str:
    """The zoo model whose key/shape layout ``state_dict`` matches exactly (no card, no name).

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


def build_for_weights(name: str, **options: Any) -> nn.Module:
    """Zoo model ``name`` with no weights of its own yet (built on the meta device: nothing is
    allocated or initialised), for :func:`load_strictly` with ``assign=True`` to give it a file's.

    Building Cnn14 this way takes a fraction of the time a normal build spends drawing random
    weights that the file replaces. The STFT and mel matrices are built for real (torchlibrosa
    needs it) and then replaced by the file's like every other tensor.
    """
    with torch.device("meta"):
        return build_model(name, **options)


def load_strictly(
    network: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path, name: str, *, assign: bool = False
) -> None:
    """Every key and shape must match; a mismatch is named key by key (with the best-fitting zoo model).

    ``assign=True`` (a network from :func:`build_for_weights`) makes the file's tensors the network's
    own, in float32, instead of copying them into allocated ones.
    """
    mismatch = StateDictMismatch.between(network.state_dict(), state_dict)
    if mismatch:
        raise CheckpointMismatchError(mismatch.report(path, name))
    if not assign:
        network.load_state_dict(state_dict)
        return
    state = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    network.load_state_dict(state, assign=True)
    left = [key for key, value in [*network.named_parameters(), *network.named_buffers()] if value.is_meta]
    if left:
        raise CheckpointMismatchError(f"{path}: {name} has tensors the file does not fill: {', '.join(left[:5])}")


def clip_probabilities(outputs: Mapping[str, torch.Tensor], card: ModelCard) -> torch.Tensor:
    """What users read as class probabilities: the card's activation of the logits.

    Multi-label: the sigmoids (the zoo's ``clipwise_output``). Single-label (cross-entropy): the
    softmax of the logits, what it was trained to output; a network without a ``logits`` output
    (the SED heads) gets the softmax of ``logit(clipwise_output)``, the logits its loss used. An
    exported graph whose ``clipwise_output`` already has the activation is taken as it is.
    """
    clipwise = outputs["clipwise_output"]
    if card.activation == card.clipwise_activation:
        return clipwise
    logits = outputs.get("logits")
    if logits is None:
        logits = torch.logit(clipwise.float().clamp(1e-7, 1 - 1e-7))
    return torch.softmax(logits.float(), dim=-1)


def mel_filters(network: nn.Module) -> torch.Tensor | None:
    extractor = getattr(network, "logmel_extractor", None)
    return None if extractor is None else extractor.melW.detach().clone()


def warn_if_other_frontend(path: Path, card: ModelCard, built: torch.Tensor, loaded: torch.Tensor | None) -> None:
    """A published file carries its mel filter bank: a mismatch means another sample rate / fmin / fmax."""
    if loaded is not None and built.shape == loaded.shape and not torch.allclose(built, loaded, atol=1e-5):
        logger.warning(
            "%s: the file's mel filter bank differs from the one %s's front end %s builds; the "
            "model was probably trained at another sample rate or fmin/fmax (pass frontend=...)",
            path,
            card.model,
            card.frontend,
        )


def label_difference(recorded: list[str], given: list[str]) -> str:
    """One line: how a given label list differs from the card's."""
    if len(recorded) != len(given):
        return f"its model card names {len(recorded)} classes, but the labels given name {len(given)}"
    index = next(i for i, (a, b) in enumerate(zip(recorded, given)) if a != b)
    return f"its model card names class {index} {recorded[index]!r}, but the labels given name it {given[index]!r}"


def _is_onnx(path: Path) -> bool:
    if path.suffix.lower() == ONNX_SUFFIX:
        return True
    with path.open("rb") as stream:
        return stream.read(1) == ONNX_FIRST_BYTE


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding compiled ``code/``; torch.save's hold only data."""
    import zipfile

    with path.open("rb") as stream:
        if stream.read(4) != ZIP_MAGIC:
            return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


__all__ = [
    "CheckpointLoadError",
    "LoadedModel",
    "ModelFile",
    "build_network",
    "clip_probabilities",
    "file_kind",
    "load_model",
    "read_card",
    "read_model_file",
]

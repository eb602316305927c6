"""Upstream PANNs' checkpoint format, ``{"model": state_dict}``, with the model card beside it.

The file holds ``"model"`` (upstream's key names, fp32) and ``"model_card"`` (plain data). Upstream's
code (``audioset_tagging_cnn``: ``checkpoint = torch.load(path); model.load_state_dict(checkpoint["model"])``)
and ``panns_inference`` (``AudioTagging`` / ``SoundEventDetection``: the same two lines) read the
``"model"`` entry only, so the card is ignored there; everything in it is a plain str / int / float /
list / dict, so ``torch.load(weights_only=True)`` (torch's default since 2.6) reads the file.

Which upstream classes can load which of our layouts (checked against upstream's source and,
for the two classes ``panns_inference.models`` ships, in tests): every class builds its STFT and
mel filter bank from its constructor's front-end arguments, but ``bn0`` is hard-coded
(``BatchNorm2d(64)``; 32 in ``Cnn14_mel32``, 128 in ``Cnn14_mel128`` / ``Wavegram_Logmel128_Cnn14``),
and ``Cnn14_16k`` / ``Cnn14_8k`` assert their paper front end. A model with other mel bins (or
those two at another front end) loads only in panns_lightning; :func:`upstream_notes` says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from panns_lightning.atomic import atomic_open
from panns_lightning.models import FRONTEND_DEFAULTS, build_model
from panns_lightning.models.card import CARD_KEY, ModelCard
from panns_lightning.models.checkpoint import StateDictMismatch, classes_num
from panns_lightning.models.finite import require_finite
from panns_lightning.models.reader import build_for_weights, load_strictly
from panns_lightning.models.registry import WAVEFORM_ONLY

from .common import (
    TOLERANCE,
    VERIFY_BATCH,
    ExportableModel,
    ExportReport,
    ExportVerificationError,
    NotRepresentableError,
    check_name,
    finite_outputs,
    removed_on_failure,
)

# The classes panns_inference 0.1.x ships (panns_inference.models) and the wrapper that builds each.
PANNS_INFERENCE_MODELS = {"Cnn14": "AudioTagging", "Cnn14_DecisionLevelMax": "SoundEventDetection"}
PANNS_INFERENCE_CLASSES = 527
# panns_inference 0.1.x downloads its own Cnn14 over any checkpoint_path smaller than this (bytes).
PANNS_INFERENCE_MIN_BYTES = 300_000_000
# Upstream's hard-coded bn0 width (its mel bins) per class; 64 for the other log-mel classes.
UPSTREAM_MEL_BINS = {"Cnn14_mel32": 32, "Cnn14_mel128": 128, "Wavegram_Logmel128_Cnn14": 128}
UPSTREAM_DEFAULT_MEL_BINS = 64
# Upstream classes that assert their front end in the constructor.
UPSTREAM_FIXED_FRONTEND = ("Cnn14_16k", "Cnn14_8k")


def panns_state_dict(model: nn.Module, model_name: str, frontend: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``model``'s weights as upstream's class ``model_name`` holds them: its key names and shapes,
    floating tensors in fp32, contiguous, on the CPU.

    The zoo keeps upstream's key names, so this is a check, not a renaming: the keys and shapes
    must equal those of ``build_model(model_name, **frontend)`` with upstream's options (the
    parity tests hold those equal to upstream's classes). Anything else, e.g. a module added to a
    network after it was built, raises :class:`NotRepresentableError` naming the keys. Options that
    change no key (``stft="fft"``, SpecAugment widths, ``wave_conv2d``) are not stored.
    """
    state = {
        key: (value.float() if value.is_floating_point() else value).detach().cpu().contiguous()
        for key, value in model.state_dict().items()
    }
    classes = classes_num(state)
    if classes is None:
        raise NotRepresentableError(
            f"{model_name}: no classifier in the state_dict (upstream's classes have fc_audioset or att_block)"
        )
    if model_name not in FRONTEND_DEFAULTS:
        raise NotRepresentableError(f"{model_name!r} is not one of upstream's model classes")
    with torch.device("meta"):
        reference = build_model(model_name, **frontend, classes_num=classes).state_dict()
    mismatch = StateDictMismatch.between(reference, state)
    if mismatch:
        raise NotRepresentableError(
            f"the network does not have the layout of upstream's {model_name} ({classes} classes), so "
            f"upstream's code could not load it: {mismatch.summary()}"
        )
    return state


def export_panns_checkpoint(
    model: nn.Module,
    path: str | Path,
    model_name: str,
    frontend: dict[str, Any],
    *,
    seconds: float = 10.0,
    tolerance: float = TOLERANCE,
    seed: int = 0,
    card: ModelCard | None = None,
) -> ExportReport:
    """Write ``{"model": state_dict, "model_card": card}``, upstream PANNs' format plus the card, and verify it.

    Verification: the file is read back into a zoo model built with upstream's options and run on
    a random batch at ``seconds``; its outputs must equal ``model``'s within ``tolerance``. Written
    atomically; the report's notes say which upstream code can load it (:func:`upstream_notes`).
    ``model`` is left in fp32 and eval mode. The network's ``clipwise_output`` stays upstream's
    sigmoid; a single-label card says its probabilities are the softmax of the logits.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    path = Path(path)
    state = panns_state_dict(model, model_name, frontend)
    classes = classes_num(state)
    assert classes is not None  # panns_state_dict checked it
    payload: dict[str, Any] = {"model": state}
    if card is not None:
        payload[CARD_KEY] = card.with_artifact("panns", clipwise_output="sigmoid").to_dict()
    sample_rate = int(frontend["sample_rate"])
    wrapper = ExportableModel(model.float().eval())
    generator = torch.Generator().manual_seed(seed)
    waveform = torch.randn(VERIFY_BATCH, int(round(seconds * sample_rate)), generator=generator) * 0.1
    expected = finite_outputs(wrapper, waveform)  # before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as stream:
        torch.save(payload, stream)
    with removed_on_failure(path):
        rebuilt = build_for_weights(model_name, **frontend, classes_num=classes)
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["model"]
        load_strictly(rebuilt, stored, path, model_name, assign=True)
        with torch.no_grad():
            got = ExportableModel(rebuilt.eval())(waveform)
        for name, value in zip(wrapper.output_names, got):
            require_finite(value, f"{model_name}'s {name} read back from {path}")
        difference = max(float((a - b).abs().max()) for a, b in zip(expected, got))
        if difference > tolerance:
            raise ExportVerificationError(
                f"{path}: read back into upstream's {model_name}, the weights give outputs {difference:.3e} away "
                f"from the original network's (> {tolerance:g}); the network computes something its weights do "
                "not say (e.g. stft='fft' or another option upstream's class lacks)"
            )
    report = ExportReport(
        path=str(path),
        format="panns",
        model_name=model_name,
        sample_rate=sample_rate,
        input_samples=waveform.shape[1],
        dynamic_time=True,
        outputs=list(wrapper.output_names),
        max_abs_diff={check_name(waveform): difference},
        notes=upstream_notes(model_name, frontend, classes, path.stat().st_size, card),
    )
    return report


def upstream_loads(model_name: str, frontend: dict[str, Any]) -> str | None:
    """``None`` when upstream's class ``model_name`` can load our layout; else why not."""
    if model_name in WAVEFORM_ONLY:
        return None
    if model_name in UPSTREAM_FIXED_FRONTEND and frontend != FRONTEND_DEFAULTS[model_name]:
        return f"upstream's {model_name} asserts its front end {FRONTEND_DEFAULTS[model_name]}"
    expected = UPSTREAM_MEL_BINS.get(model_name, UPSTREAM_DEFAULT_MEL_BINS)
    if int(frontend["mel_bins"]) != expected:
        return (
            f"upstream's {model_name} hard-codes bn0 = BatchNorm2d({expected}) for {expected} mel bins, "
            f"this model has {frontend['mel_bins']}"
        )
    return None


def upstream_notes(
    model_name: str, frontend: dict[str, Any], classes: int, size: int, card: ModelCard | None = None
) -> list[str]:
    """Which upstream code can load the file, how, and what its outputs mean there."""
    settings = ", ".join(f"{key}={value}" for key, value in frontend.items())
    refusal = upstream_loads(model_name, frontend)
    if refusal is not None:
        notes = [f"loads only in panns_lightning: {refusal}, so load_state_dict raises a size mismatch there"]
    else:
        notes = [
            f"upstream's code loads it into {model_name}({settings}, classes_num={classes}) with "
            "model.load_state_dict(torch.load(path)['model'])"
        ]
        notes.extend(panns_inference_notes(model_name, frontend, classes, size))
    if card is not None:
        notes.append(
            "the model card (front end, labels, task, clip length, provenance) is stored beside 'model' under "
            "'model_card'; upstream's and panns_inference's loaders read only checkpoint['model']"
        )
        if card.activation == "softmax":
            notes.append(
                "single-label model: upstream's class outputs sigmoid(logits) as clipwise_output; its "
                "probabilities (what panns-tag shows) are softmax(logit(clipwise_output))"
            )
    return notes


def panns_inference_notes(model_name: str, frontend: dict[str, Any], classes: int, size: int) -> list[str]:
    """What ``panns_inference`` (0.1.x) can do with the file, for a layout upstream's class loads.

    ``panns_inference.models`` ships ``Cnn14`` and ``Cnn14_DecisionLevelMax`` only (front end as
    arguments, ``bn0`` of 64); ``AudioTagging`` / ``SoundEventDetection`` build them at 32 kHz,
    64 mels, with AudioSet's 527 labels unless given ``model=``, and download their own Cnn14 over
    any ``checkpoint_path`` smaller than :data:`PANNS_INFERENCE_MIN_BYTES`.
    """
    wrapper = PANNS_INFERENCE_MODELS.get(model_name)
    if wrapper is None:
        return [f"panns_inference ships no {model_name} class (only {', '.join(PANNS_INFERENCE_MODELS)})"]
    fits = frontend == FRONTEND_DEFAULTS[model_name] and classes == PANNS_INFERENCE_CLASSES
    if fits and size >= PANNS_INFERENCE_MIN_BYTES:
        return [f"panns_inference loads it as it is: panns_inference.{wrapper}(checkpoint_path=..., device='cpu')"]
    if size < PANNS_INFERENCE_MIN_BYTES:
        return [
            f"not through panns_inference.{wrapper}: at {size} bytes the file is under the {PANNS_INFERENCE_MIN_BYTES} "
            "bytes below which panns_inference 0.1.x replaces checkpoint_path with a download of its own Cnn14"
        ]
    return [
        f"panns_inference builds {model_name} at {FRONTEND_DEFAULTS[model_name]['sample_rate']} Hz with {PANNS_INFERENCE_CLASSES} AudioSet classes; "
        f"this one has {classes} classes at {frontend['sample_rate']} Hz: pass "
        f"{wrapper}(model=panns_inference.models.{model_name}(... as above), checkpoint_path=...) "
        "(its labels list stays AudioSet's)"
    ]

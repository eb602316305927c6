"""Export a zoo model to ONNX, TorchScript or upstream PANNs' checkpoint format, and check it.

The exported graph is the eval-mode network: ``waveform[B, T]`` (float32, mono, at the model's
sample rate) → ``clipwise_output[B, classes]``, ``embedding[B, D]`` and, for the
``Cnn14_DecisionLevel*`` models, ``framewise_output[B, frames, classes]`` (a tuple in that order).
The batch axis is always dynamic. The time axis is made dynamic too and then *checked* at a second
length; if the export does not reproduce PyTorch there, it is exported again with the time axis
fixed at ``seconds`` and the report says so (pad or crop inputs to that length).

ONNX goes through ``torch.onnx.export`` with ``dynamo=False`` (the TorchScript-based tracer,
opset 17): it exports every zoo model at its paper front end with a dynamic time axis except the
Wavegram ones, in about half the time of the torch.export-based exporter. When tracing itself
fails (Wavegram models at a hop other than 320 call ``round()`` on a traced size), the
torch.export-based exporter (``dynamo=True``, needs ``onnxscript``) is used with a dynamic batch
axis and a fixed time axis. TorchScript uses ``torch.jit.trace``: ``torch.jit.script`` rejects the
models (torchlibrosa's modules carry type annotations TorchScript does not know).

``panns`` writes upstream's checkpoint file, ``{"model": state_dict}``, for upstream's code and
``panns_inference``: see :func:`export_panns_checkpoint`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from panns_lightning.atomic import atomic_open
from panns_lightning.models import FRONTEND_DEFAULTS, build_model, load_panns_checkpoint, require_finite
from panns_lightning.models.checkpoint import StateDictMismatch, classes_num

logger = logging.getLogger(__name__)

Format = Literal["onnx", "torchscript", "panns"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript", "panns")
ONNX_OPSET = 17
TOLERANCE = 1e-4
VERIFY_BATCH = 2
# The second length the dynamic time axis is checked at: not a multiple of common hops, so
# rounding in the STFT framing and the poolings is exercised.
SECOND_LENGTH_FACTOR = 0.73
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "panns": ".pth"}
# What panns_inference 0.1.x builds: Cnn14 / Cnn14_DecisionLevelMax at 32 kHz, 64 mels, AudioSet's classes.
PANNS_INFERENCE_MODELS = {"Cnn14": "AudioTagging", "Cnn14_DecisionLevelMax": "SoundEventDetection"}
PANNS_INFERENCE_CLASSES = 527
# panns_inference 0.1.x downloads its own Cnn14 over any checkpoint_path smaller than this (bytes).
PANNS_INFERENCE_MIN_BYTES = 300_000_000
Runner = Callable[[np.ndarray], list[np.ndarray]]


class ExportError(RuntimeError):
    """The exporter could not trace or write the model."""


class ExportVerificationError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


class NotRepresentableError(ExportError):
    """The network cannot be written in upstream's checkpoint format (keys or shapes upstream lacks)."""


class ExportableModel(nn.Module):
    """Zoo model → tuple of tensors (exporters want tensors, not dicts), eval mode only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.output_names = output_names(model)
        # A fresh Module is in training mode, and exporters restore the wrapper's mode recursively
        # after tracing: without this the inner model would come back in training mode.
        self.eval()

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(waveform)
        return tuple(outputs[name] for name in self.output_names)


@dataclass
class ExportReport:
    """What was written, which axes are dynamic, and how closely it reproduces PyTorch."""

    path: str
    format: str
    model_name: str
    sample_rate: int
    input_samples: int
    dynamic_time: bool
    outputs: list[str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    """Per check (``"B=1,T=16000"``), the largest absolute difference over all outputs."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def output_names(model: nn.Module) -> list[str]:
    """The outputs in export order; ``framewise_output`` only for models that return it."""
    names = ["clipwise_output", "embedding"]
    if type(model).__name__ == "CnnDecisionLevel" or getattr(model, "zoo_name", "").startswith("Cnn14_DecisionLevel"):
        names.append("framewise_output")
    return names


def export_model(
    model: nn.Module,
    path: str | Path,
    format: Format,
    sample_rate: int,
    *,
    seconds: float = 10.0,
    dynamic_time: bool | None = None,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` to ``path`` and verify it against PyTorch.

    ``dynamic_time=None`` tries a dynamic time axis and falls back to a fixed one when the
    export does not reproduce PyTorch at a second length; ``True`` / ``False`` force it (``True``
    raises instead of falling back). Checks: batch 1 at ``seconds`` and batch 3 at the other
    length (dynamic) or at ``seconds`` (fixed). Raises :class:`ExportVerificationError` when any
    output differs by more than ``tolerance``.
    """
    if format not in FORMATS or format == "panns":
        raise ValueError(f"format must be one of {FORMATS[:2]} (panns: export_panns_checkpoint), got {format!r}")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableModel(model).cpu()
    samples = int(round(seconds * sample_rate))
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(VERIFY_BATCH, samples, generator=generator) * 0.1
    other = torch.randn(VERIFY_BATCH + 1, int(samples * SECOND_LENGTH_FACTOR), generator=generator) * 0.1
    _finite_outputs(wrapper, example)  # before anything is written
    report = ExportReport(
        path=str(path),
        format=format,
        model_name=getattr(model, "zoo_name", type(model).__name__),
        sample_rate=int(sample_rate),
        input_samples=samples,
        dynamic_time=dynamic_time is not False,
        outputs=list(wrapper.output_names),
    )

    checks: dict[str, float] = {}
    if report.dynamic_time:
        runner, failure = _try_dynamic_time(wrapper, example, other, path, format, tolerance, checks)
        if failure is not None:
            if dynamic_time:
                raise ExportVerificationError(f"{path}: a dynamic time axis was requested, but {failure}")
            report.dynamic_time = False
            report.notes.append(
                f"time axis fixed at {samples} samples ({seconds:g} s) because with a dynamic one "
                f"{failure}; pad or crop inputs to that length"
            )
            checks.clear()
    if not report.dynamic_time:
        _write(wrapper, example, path, format, dynamic_time=False)
        runner = _load_runner(path, format)
        larger_batch = torch.cat([example, example[:1]])
        checks[_check_name(larger_batch)] = _max_diff(wrapper, runner, larger_batch)
    checks[_check_name(example[:1])] = _max_diff(wrapper, runner, example[:1])
    report.max_abs_diff = checks
    worst = max(checks.values())
    if worst > tolerance:
        raise ExportVerificationError(
            f"{path}: exported {format} model differs from PyTorch by {worst:.3e} > {tolerance:g} ({checks})"
        )
    return report


def default_output_path(checkpoint: str | Path, format: Format) -> Path:
    """``best.ckpt`` → ``best.onnx`` / ``best.torchscript.pt`` next to the checkpoint's name, in the cwd."""
    return Path(Path(checkpoint).stem + SUFFIXES[format])


# ---- upstream PANNs' checkpoint format ----------------------------------------------------------
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
) -> ExportReport:
    """Write ``{"model": state_dict}``, upstream PANNs' checkpoint format, and verify it.

    The file loads with ``torch.load(path, weights_only=True)`` into upstream's class
    ``model_name`` built with ``frontend`` (``sample_rate``, ``window_size``, ``hop_size``,
    ``mel_bins``, ``fmin``, ``fmax``; upstream's files do not record them, so they are not in the
    file either) and the network's class count. Verification: the file is read back into a zoo
    model built with upstream's options and run on a random batch at ``seconds``; its outputs must
    equal ``model``'s within ``tolerance``. Written atomically; the report's notes say whether
    ``panns_inference`` can load the file as it is. ``model`` is left in fp32 and eval mode.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    path = Path(path)
    state = panns_state_dict(model, model_name, frontend)
    classes = classes_num(state)
    assert classes is not None  # panns_state_dict checked it
    sample_rate = int(frontend["sample_rate"])
    reference = model.float().eval()
    wrapper = ExportableModel(reference)
    generator = torch.Generator().manual_seed(seed)
    waveform = torch.randn(VERIFY_BATCH, int(round(seconds * sample_rate)), generator=generator) * 0.1
    expected = _finite_outputs(wrapper, waveform)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as stream:
        torch.save({"model": state}, stream)
    with _removed_on_failure(path):
        rebuilt = load_panns_checkpoint(build_model(model_name, **frontend, classes_num=classes), path).eval()
        with torch.no_grad():
            got = ExportableModel(rebuilt)(waveform)
        for name, value in zip(wrapper.output_names, got):
            require_finite(value, f"{model_name}'s {name} read back from {path}")
        difference = max(float((a - b).abs().max()) for a, b in zip(expected, got))
        _check_panns_difference(path, model_name, difference, tolerance)
    report = ExportReport(
        path=str(path),
        format="panns",
        model_name=model_name,
        sample_rate=sample_rate,
        input_samples=waveform.shape[1],
        dynamic_time=True,
        outputs=list(wrapper.output_names),
        max_abs_diff={_check_name(waveform): difference},
        notes=panns_inference_notes(model_name, frontend, classes, path.stat().st_size),
    )
    return report


def _check_panns_difference(path: Path, model_name: str, difference: float, tolerance: float) -> None:
    if difference > tolerance:
        raise ExportVerificationError(
            f"{path}: read back into upstream's {model_name}, the weights give outputs {difference:.3e} away "
            f"from the original network's (> {tolerance:g}); the network computes something its weights do "
            "not say (e.g. stft='fft' or another option upstream's class lacks)"
        )


def panns_inference_notes(model_name: str, frontend: dict[str, Any], classes: int, size: int) -> list[str]:
    """How to load the file: upstream's class always; ``panns_inference`` (0.1.x) only when it fits.

    ``panns_inference.AudioTagging`` builds Cnn14 (``SoundEventDetection``: Cnn14_DecisionLevelMax)
    at 32 kHz, 64 mels, with AudioSet's 527 labels unless given ``model=``, and downloads its own
    Cnn14 over any ``checkpoint_path`` smaller than :data:`PANNS_INFERENCE_MIN_BYTES`.
    """
    wrapper = PANNS_INFERENCE_MODELS.get(model_name)
    fits = wrapper is not None and frontend == FRONTEND_DEFAULTS[model_name] and classes == PANNS_INFERENCE_CLASSES
    if fits and size >= PANNS_INFERENCE_MIN_BYTES:
        return [f"panns_inference loads it as it is: panns_inference.{wrapper}(checkpoint_path=..., device='cpu')"]
    settings = ", ".join(f"{key}={value}" for key, value in frontend.items())
    notes = [
        f"upstream's code loads it into {model_name}({settings}, classes_num={classes}) with "
        "model.load_state_dict(torch.load(path)['model'])"
    ]
    if size < PANNS_INFERENCE_MIN_BYTES:
        notes.append(
            f"not through panns_inference: at {size} bytes the file is under the {PANNS_INFERENCE_MIN_BYTES} "
            "bytes below which panns_inference 0.1.x replaces checkpoint_path with a download of its own Cnn14"
        )
    elif wrapper is None:
        notes.append(
            "panns_inference builds Cnn14 / Cnn14_DecisionLevelMax only: pass "
            f"AudioTagging(model=<upstream's {model_name}(...) as above>, checkpoint_path=...)"
        )
    else:
        notes.append(
            f"panns_inference builds {model_name} at 32000 Hz with {PANNS_INFERENCE_CLASSES} AudioSet classes; "
            f"this one has {classes} classes at {frontend['sample_rate']} Hz: pass "
            f"{wrapper}(model=<upstream's {model_name}(...) as above>, checkpoint_path=...) "
            "(its labels list stays AudioSet's)"
        )
    return notes


# ---- writing and running ------------------------------------------------------------------------
def _try_dynamic_time(
    wrapper: ExportableModel,
    example: torch.Tensor,
    other: torch.Tensor,
    path: Path,
    format: str,
    tolerance: float,
    checks: dict[str, float],
) -> tuple[Runner | None, str | None]:
    """Export with a dynamic time axis and check it at ``other``'s length.

    Returns the loaded export and ``None``, or ``None`` and why a dynamic time axis does not work.
    """
    try:
        _write(wrapper, example, path, format, dynamic_time=True)
    except ExportError as error:
        return None, f"tracing failed: {error}"
    runner = _load_runner(path, format)
    try:
        difference = _max_diff(wrapper, runner, other)
    except Exception as error:  # a shape frozen inside the graph: the runtime refuses the length
        reason = " ".join(str(error).split())[:200]
        return None, f"at {other.shape[1]} samples the export fails ({type(error).__name__}: {reason})"
    if difference > tolerance:
        return None, f"at {other.shape[1]} samples the export differs from PyTorch by {difference:.2e}"
    checks[_check_name(other)] = difference
    return runner, None


def _write(wrapper: ExportableModel, example: torch.Tensor, path: Path, format: str, dynamic_time: bool) -> None:
    try:
        if format == "onnx":
            _write_onnx(wrapper, example, path, dynamic_time)
        else:
            _write_torchscript(wrapper, example, path)
    except Exception as error:
        raise ExportError(
            f"tracing {getattr(wrapper.model, 'zoo_name', type(wrapper.model).__name__)} for {format} failed "
            f"({type(error).__name__}: {' '.join(str(error).split())[:300]}); the model's forward "
            "probably computes with tensor shapes in Python (e.g. round() on a size)"
        ) from error


def _write_onnx(wrapper: ExportableModel, example: torch.Tensor, path: Path, dynamic_time: bool) -> None:
    try:
        _write_onnx_traced(wrapper, example, path, dynamic_time)
    except Exception as error:
        if dynamic_time:
            raise  # export_model retries with a fixed time axis, which lands below
        logger.info("legacy ONNX tracing failed (%s); using the torch.export-based exporter", error)
        _write_onnx_dynamo(wrapper, example, path)


def _write_onnx_dynamo(wrapper: ExportableModel, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,
            input_names=["waveform"],
            output_names=list(wrapper.output_names),
            dynamic_shapes=({0: batch},),
            verbose=False,
        )


def _write_onnx_traced(wrapper: ExportableModel, example: torch.Tensor, path: Path, dynamic_time: bool) -> None:
    axes: dict[str, dict[int, str]] = {"waveform": {0: "batch", 1: "samples"} if dynamic_time else {0: "batch"}}
    for name in wrapper.output_names:
        axes[name] = {0: "batch", 1: "frames"} if name == "framewise_output" and dynamic_time else {0: "batch"}
    with warnings.catch_warnings():
        # The legacy exporter warns about every traced shape computation and its own deprecation.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["waveform"],
            output_names=list(wrapper.output_names),
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _write_torchscript(wrapper: ExportableModel, example: torch.Tensor, path: Path) -> None:
    # Tracing records shape arithmetic as graph ops, so batch and (for most models) time stay dynamic;
    # Python branches on shapes are frozen, which the second-length check catches.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    traced.save(str(path))


def _load_runner(path: Path, format: str) -> Runner:
    if format == "onnx":
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("verifying an ONNX export needs onnxruntime (pip install onnxruntime)") from error
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda waveform: list(session.run(None, {"waveform": waveform}))
    module = torch.jit.load(str(path), map_location="cpu")

    def run(waveform: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [value.numpy() for value in module(torch.from_numpy(waveform))]

    return run


def _max_diff(wrapper: ExportableModel, runner: Runner, waveform: torch.Tensor) -> float:
    wrapper.eval()
    with torch.no_grad():
        expected = [value.numpy() for value in wrapper(waveform)]
    got = runner(np.ascontiguousarray(waveform.numpy()))
    worst = 0.0
    for name, reference, value in zip(wrapper.output_names, expected, got):
        if tuple(reference.shape) != tuple(value.shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)} but PyTorch gives {tuple(reference.shape)}")
        # NaN compares false, so max(worst, nan) would keep worst: an all-NaN export would pass.
        require_finite(reference, f"{name} in PyTorch")
        require_finite(value, f"{name} of the exported model")
        worst = max(worst, float(np.abs(reference - value).max()))
    return worst


def _finite_outputs(wrapper: ExportableModel, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """PyTorch's own outputs, which must be finite: there is nothing to export or verify against otherwise."""
    wrapper.eval()
    with torch.no_grad():
        outputs = wrapper(waveform)
    name = getattr(wrapper.model, "zoo_name", type(wrapper.model).__name__)
    for output, value in zip(wrapper.output_names, outputs):
        require_finite(value, f"{name}'s {output} in PyTorch, before export")
    return outputs


@contextlib.contextmanager
def _removed_on_failure(path: Path) -> Iterator[None]:
    """An export that fails its own verification leaves no file behind to be mistaken for a good one."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _check_name(waveform: torch.Tensor) -> str:
    return f"B={waveform.shape[0]},T={waveform.shape[1]}"

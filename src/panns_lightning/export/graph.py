"""ONNX and TorchScript export of a zoo model, verified against PyTorch, with the model card inside.

The exported graph is the eval-mode network: ``waveform[B, T]`` (float32, mono, at the model's
sample rate) → ``clipwise_output[B, classes]``, ``embedding[B, D]`` and, for the
``Cnn14_DecisionLevel*`` models, ``framewise_output[B, frames, classes]`` (a tuple in that order).
With a card, ``clipwise_output`` holds the probabilities panns-tag shows: the card's activation
(softmax for a single-label model), and the card rides in the file (ONNX metadata
``model_card``, TorchScript extra file ``model_card.json``), its ``artifact`` saying so.

The batch axis is always dynamic. The time axis is made dynamic and then *checked* at three
lengths: the example length (``seconds``), a length that is not a multiple of common hops (so
rounding in the STFT framing and the poolings is exercised, at a larger batch) and the shortest
input the card allows (``min_samples``). If the export does not reproduce PyTorch there, it is
written again with the time axis fixed at ``seconds`` and the report's note gives the error that
forced it (pad or crop inputs to that length).

ONNX goes through ``torch.onnx.export`` with ``dynamo=False`` (the TorchScript-based tracer,
opset 17): every log-mel zoo model exports with a dynamic time axis, ``stft="fft"`` included
(its ``torch.stft`` is traced in the real-and-imaginary form that ONNX's STFT operator takes). When
tracing itself fails, the torch.export-based exporter (``dynamo=True``, needs ``onnxscript``) is used
with a fixed time axis. TorchScript uses ``torch.jit.trace``: ``torch.jit.script`` rejects the
models (torchlibrosa's modules carry type annotations TorchScript does not know).

Files are written under a temporary name and renamed once verified: a failed export leaves nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from panns_lightning.models.card import CARD_FILE, CARD_KEY, ModelCard
from panns_lightning.models.finite import require_finite

from .common import (
    TOLERANCE,
    VERIFY_BATCH,
    ExportableModel,
    ExportError,
    ExportReport,
    ExportVerificationError,
    check_name,
    finite_outputs,
)

logger = logging.getLogger(__name__)

Format = Literal["onnx", "torchscript", "panns"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript", "panns")
ONNX_OPSET = 17
# The second length the dynamic time axis is checked at: not a multiple of common hops.
SECOND_LENGTH_FACTOR = 0.73
THIRD_LENGTH_FACTOR = 1.37
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "panns": ".pth"}
Runner = Callable[[np.ndarray], list[np.ndarray]]


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
    card: ModelCard | None = None,
) -> ExportReport:
    """Export ``model`` to ``path`` and verify it against PyTorch (see the module docstring).

    ``dynamic_time=None`` tries a dynamic time axis and falls back to a fixed one when the
    export does not reproduce PyTorch at the other lengths; ``True`` / ``False`` force it (``True``
    raises instead of falling back). Raises :class:`ExportVerificationError` when any output
    differs by more than ``tolerance``. ``card`` (the model's) is written into the file.
    """
    if format not in FORMATS or format == "panns":
        raise ValueError(f"format must be one of {FORMATS[:2]} (panns: export_panns_checkpoint), got {format!r}")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableModel(model, card).cpu()
    samples = int(round(seconds * sample_rate))
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(VERIFY_BATCH, samples, generator=generator) * 0.1
    others = [
        torch.randn(VERIFY_BATCH + 1, int(samples * SECOND_LENGTH_FACTOR), generator=generator) * 0.1,
        torch.randn(1, _shortest(card, sample_rate, samples), generator=generator) * 0.1,
    ]
    finite_outputs(wrapper, example)  # before anything is written
    report = ExportReport(
        path=str(path),
        format=format,
        model_name=getattr(model, "zoo_name", type(model).__name__),
        sample_rate=int(sample_rate),
        input_samples=samples,
        dynamic_time=dynamic_time is not False,
        outputs=list(wrapper.output_names),
        clipwise_output=wrapper.activation,
    )
    temporary = _temporary_path(path)
    try:
        checks: dict[str, float] = {}
        if report.dynamic_time:
            card_json = graph_card(card, report).to_json() if card is not None else ""
            runner, failure = _try_dynamic_time(
                wrapper, example, others, temporary, format, tolerance, checks, card_json
            )
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
            card_json = graph_card(card, report).to_json() if card is not None else ""
            _write(wrapper, example, temporary, format, dynamic_time=False, card_json=card_json)
            runner = _load_runner(temporary, format)
            larger_batch = torch.cat([example, example])
            checks[check_name(larger_batch)] = _max_diff(wrapper, runner, larger_batch)
        checks[check_name(example[:1])] = _max_diff(wrapper, runner, example[:1])
        report.max_abs_diff = checks
        worst = max(checks.values())
        if worst > tolerance:
            raise ExportVerificationError(
                f"{path}: exported {format} model differs from PyTorch by {worst:.3e} > {tolerance:g} ({checks})"
            )
        if card is not None and format == "onnx":
            _write_onnx_card(temporary, graph_card(card, report))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return report


def graph_card(card: ModelCard, report: ExportReport) -> ModelCard:
    """``card`` for one exported graph: its format, outputs, time axis and what ``clipwise_output`` holds."""
    return card.with_artifact(
        report.format,
        clipwise_output=report.clipwise_output,
        outputs=list(report.outputs),
        dynamic_time=report.dynamic_time,
        input_samples=None if report.dynamic_time else report.input_samples,
    )


def default_output_path(checkpoint: str | Path, format: Format) -> Path:
    """``best.ckpt`` → ``best.onnx`` / ``best.torchscript.pt`` next to the checkpoint's name, in the cwd."""
    return Path(Path(checkpoint).stem + SUFFIXES[format])


# ---- writing and running ------------------------------------------------------------------------
def _shortest(card: ModelCard | None, sample_rate: int, samples: int) -> int:
    """The third length checked: the shortest input the card allows (1 s without a card), unless
    that is one of the other two; then a longer one."""
    shortest = card.min_samples if card is not None else int(sample_rate)
    if shortest in (samples, int(samples * SECOND_LENGTH_FACTOR)):
        return int(samples * THIRD_LENGTH_FACTOR)
    return shortest


def _temporary_path(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _try_dynamic_time(
    wrapper: ExportableModel,
    example: torch.Tensor,
    others: list[torch.Tensor],
    path: Path,
    format: str,
    tolerance: float,
    checks: dict[str, float],
    card_json: str = "",
) -> tuple[Runner | None, str | None]:
    """Export with a dynamic time axis and check it at the ``others``' lengths.

    Returns the loaded export and ``None``, or ``None`` and why a dynamic time axis does not work.
    """
    try:
        _write(wrapper, example, path, format, dynamic_time=True, card_json=card_json)
    except ExportError as error:
        return None, f"tracing failed: {error}"
    runner = _load_runner(path, format)
    for other in others:
        try:
            difference = _max_diff(wrapper, runner, other)
        except Exception as error:  # a shape frozen inside the graph: the runtime refuses the length
            reason = " ".join(str(error).split())[:200]
            return None, f"at {other.shape[1]} samples the export fails ({type(error).__name__}: {reason})"
        if difference > tolerance:
            return None, f"at {other.shape[1]} samples the export differs from PyTorch by {difference:.2e}"
        checks[check_name(other)] = difference
    return runner, None


def _write(
    wrapper: ExportableModel, example: torch.Tensor, path: Path, format: str, dynamic_time: bool, card_json: str = ""
) -> None:
    """Trace ``wrapper`` into ``path``; TorchScript gets ``card_json`` as it is saved (ONNX afterwards)."""
    try:
        if format == "onnx":
            _write_onnx(wrapper, example, path, dynamic_time)
        else:
            _write_torchscript(wrapper, example, path, card_json)
    except Exception as error:
        raise ExportError(
            f"tracing {getattr(wrapper.model, 'zoo_name', type(wrapper.model).__name__)} for {format} failed "
            f"({type(error).__name__}: {' '.join(str(error).split())[:300]})"
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


def _write_torchscript(wrapper: ExportableModel, example: torch.Tensor, path: Path, card_json: str = "") -> None:
    # Tracing records shape arithmetic as graph ops, so batch and (for most models) time stay dynamic;
    # Python branches on shapes are frozen, which the other lengths' checks catch.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    traced.save(str(path), _extra_files={CARD_FILE: card_json} if card_json else {})


def _write_onnx_card(path: Path, card: ModelCard) -> None:
    """Put the card into a written ONNX file's metadata (the exporter takes none)."""
    import onnx

    graph = onnx.load(str(path))
    for entry in list(graph.metadata_props):
        if entry.key == CARD_KEY:
            graph.metadata_props.remove(entry)
    graph.metadata_props.add(key=CARD_KEY, value=card.to_json())
    onnx.save(graph, str(path))


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

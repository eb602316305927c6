"""Exported graphs as runnable models: ONNX (through onnxruntime) and TorchScript.

The card travels inside the file (ONNX: metadata ``model_card``; TorchScript: the extra file
``model_card.json``) and is read with the graph itself, in one read. An exported graph takes
``waveform[B, T]`` and returns its outputs in the order the card's ``artifact.outputs`` names;
``clipwise_output`` already holds the probabilities users see (``artifact.clipwise_output``).

onnxruntime is an optional dependency (the ``export`` extra), imported only when an ONNX file is
read. A TorchScript archive holds a program, not arbitrary Python: loading it runs nothing, and
calling it runs TorchScript operators only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .card import CARD_FILE, CARD_KEY, ModelCard
from .checkpoint import ZIP_MAGIC, CheckpointReadError

Runner = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def read_graph(path: Path) -> tuple[str, ModelCard | None, Any]:
    """ONNX or TorchScript ``path`` → its kind (``onnx`` / ``torchscript``), card and loaded graph, in one read."""
    if path.suffix.lower() == ".onnx" or not _is_zip(path):
        session = onnx_session(path)
        text = session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
        return "onnx", ModelCard.from_json(text, str(path)) if text else None, session
    extra = {CARD_FILE: b""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as error:  # torch's archive reader fails with many types on a damaged file
        raise CheckpointReadError(
            f"{path} cannot be read as a TorchScript file: {type(error).__name__}: {_first_line(error)}"
        ) from error
    text = extra.get(CARD_FILE) or b""
    return "torchscript", ModelCard.from_json(text, str(path)) if text else None, module


def runnable_graph(
    kind: str, card: ModelCard, graph: Any, path: Path, device: str | torch.device
) -> tuple[Runner, int | None]:
    """The graph as ``waveform[B, T] → {name: tensor}``, and the input length it requires (fixed time axis)."""
    names = list(card.artifact.get("outputs") or ["clipwise_output", "embedding"])
    fixed = None if card.artifact.get("dynamic_time", True) else int(card.artifact["input_samples"])
    device = torch.device(device)
    if kind == "onnx":
        if device.type != "cpu":
            raise ValueError(f"{path}: ONNX files run on the CPU here (onnxruntime); use --device cpu")
        session = graph
        graph_names = [output.name for output in session.get_outputs()]

        def run_onnx(waveform: torch.Tensor) -> dict[str, torch.Tensor]:
            values = session.run(None, {"waveform": np.ascontiguousarray(waveform.detach().cpu().numpy())})
            return {name: torch.from_numpy(value) for name, value in zip(graph_names, values)}

        return run_onnx, fixed
    module = graph.to(device).eval()

    def run_torchscript(waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            values = module(waveform.to(device))
        return dict(zip(names, values))

    return run_torchscript, fixed


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session over ``path``; a missing onnxruntime or an unreadable file is one line."""
    try:
        import onnxruntime
    except ImportError as error:
        raise CheckpointReadError(
            f"{path}: running ONNX files needs onnxruntime (pip install 'panns-lightning[export]')"
        ) from error
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a bad file
        raise CheckpointReadError(
            f"{path} is not a model file this package reads (not a torch checkpoint, TorchScript or ONNX model): "
            f"{_first_line(error)}"
        ) from error


def _is_zip(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) == ZIP_MAGIC


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]

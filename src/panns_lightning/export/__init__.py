"""Export a zoo model to ONNX, TorchScript or upstream PANNs' checkpoint format, check it, and put
its model card inside.

* :func:`export_model` (``graph.py``): ONNX / TorchScript, dynamic batch and time axes, verified
  against PyTorch at three lengths; ``clipwise_output`` holds the probabilities panns-tag shows.
* :func:`export_panns_checkpoint` (``upstream.py``): upstream's ``{"model": state_dict}`` plus
  ``"model_card"``, read back and verified; its notes say which upstream code can load it.

Imports neither Lightning nor the training stack: exporting is reading a model file and running it.
"""

from .common import (
    TOLERANCE,
    ExportableModel,
    ExportError,
    ExportReport,
    ExportVerificationError,
    NotRepresentableError,
    output_names,
)
from .graph import FORMATS, SUFFIXES, Format, default_output_path, export_model, graph_card
from .upstream import (
    PANNS_INFERENCE_MIN_BYTES,
    export_panns_checkpoint,
    panns_inference_notes,
    panns_state_dict,
    upstream_loads,
    upstream_notes,
)

__all__ = [
    "FORMATS",
    "PANNS_INFERENCE_MIN_BYTES",
    "SUFFIXES",
    "TOLERANCE",
    "ExportError",
    "ExportReport",
    "ExportVerificationError",
    "ExportableModel",
    "Format",
    "NotRepresentableError",
    "default_output_path",
    "export_model",
    "export_panns_checkpoint",
    "graph_card",
    "output_names",
    "panns_inference_notes",
    "panns_state_dict",
    "upstream_loads",
    "upstream_notes",
]

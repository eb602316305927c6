"""The PANNs model zoo as plain PyTorch modules (no Lightning, no Hydra).

``build_model("Cnn14", **FRONTEND_DEFAULTS["Cnn14"], classes_num=527)`` returns a module with
``forward(waveform[B, T], mixup_lambda=None) -> {"clipwise_output", "embedding"[, "framewise_output"]}``
whose state_dict keys match the published PANNs checkpoints. Every model file this package writes
carries a :class:`ModelCard`; :func:`read_model_file` / :func:`read_card` (``reader.py``) read any
of them, and ``reader.load_model`` returns the runnable model.
"""

from .card import CardError, ModelCard
from .checkpoint import CheckpointMismatchError, load_panns_checkpoint, save_panns_checkpoint
from .finite import NonFiniteOutputError, require_finite
from .frontend import frontend_problems
from .mixup import do_mixup
from .reader import LoadedModel, read_card, read_model_file
from .registry import FRONTEND_DEFAULTS, FRONTEND_KEYS, build_model, list_models

__all__ = [
    "FRONTEND_DEFAULTS",
    "FRONTEND_KEYS",
    "CardError",
    "CheckpointMismatchError",
    "LoadedModel",
    "ModelCard",
    "NonFiniteOutputError",
    "build_model",
    "do_mixup",
    "frontend_problems",
    "list_models",
    "load_panns_checkpoint",
    "read_card",
    "read_model_file",
    "require_finite",
    "save_panns_checkpoint",
]

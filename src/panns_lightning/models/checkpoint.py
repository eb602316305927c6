"""Read and write PANNs checkpoints.

Accepted inputs:
  * upstream PANNs files: ``{"model": state_dict, "iteration": ..., ...}``;
  * a bare ``state_dict``;
  * Lightning checkpoints: ``{"state_dict": {"model.<key>": ...}}`` (the LightningModule holds
    the network as attribute ``model``).

Files are always read with ``weights_only=True``: a checkpoint is data, and unpickling arbitrary
objects from a downloaded file would run code.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from panns_lightning.atomic import atomic_open

from .registry import FRONTEND_DEFAULTS, build_model, list_models

LAYOUTS_FILE = Path(__file__).with_name("zoo_layouts.json")
"""Every zoo model's state_dict keys and shapes at its paper front end (scripts/zoo_layouts.py)."""

logger = logging.getLogger(__name__)

LIGHTNING_PREFIX = "model."
EXAMPLES_SHOWN = 5
# Keys whose first dimension is the class count, which differs between datasets.
CLASSIFIER_PREFIXES = ("fc_audioset.", "att_block.")
CLASSIFIER_BIAS_KEYS = ("fc_audioset.bias", "att_block.cla.bias")
# What torch's weights-only unpickler says when it refuses a file (its wording, torch >= 2.6).
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_REFUSED_OPERAND = re.compile(r"Unsupported operand \d+")
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = b"\x80"  # protocol >= 2 pickles, torch's legacy format among them
TORCH_HEAD_BYTES = 64


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's keys or shapes do not fit the model."""


class CheckpointReadError(CheckpointMismatchError, ValueError):
    """The file cannot be read as a checkpoint at all (corrupt, truncated, not a torch file).

    Also a ``ValueError``: callers that catch either family (CLIs, older code) see it.
    """


class UnsafeCheckpointError(CheckpointReadError):
    """The file holds more than tensors and plain containers; refused without running any of it."""


def load_panns_checkpoint(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``model`` (in place) and return it.

    With ``strict=True`` any missing, unexpected or mis-shaped key raises
    :class:`CheckpointMismatchError` naming them and the zoo model the file fits best. With
    ``strict=False`` only keys present in both with equal shapes are loaded (e.g. a 527-class
    AudioSet checkpoint into a 10-class model: everything but ``fc_audioset``); the skipped keys
    are logged.
    """
    path = Path(path)
    state_dict = read_state_dict(path)
    model_state = model.state_dict()
    mismatch = StateDictMismatch.between(model_state, state_dict)
    if strict and mismatch:
        raise CheckpointMismatchError(mismatch.report(path, getattr(model, "zoo_name", type(model).__name__)))
    if mismatch:
        logger.warning(
            "Partial load from %s: skipped %d missing, %d unexpected and %d mis-shaped keys (%s)",
            path,
            len(mismatch.missing),
            len(mismatch.unexpected),
            len(mismatch.misshaped),
            examples(mismatch.missing + mismatch.unexpected + mismatch.misshaped),
        )
    compatible = {
        key: value for key, value in state_dict.items() if key in model_state and key not in mismatch.misshaped
    }
    model.load_state_dict(compatible, strict=strict)
    return model


def save_panns_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``{"model": state_dict}`` (upstream's format, which panns-inference reads) atomically.

    The file is written next to ``path`` under a temporary name and renamed, so a crash never
    leaves a truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_open(path) as file:
        torch.save({"model": state_dict}, file)
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Return the network state_dict stored in ``path``, whichever supported layout it uses."""
    path = Path(path)
    return extract_state_dict(load_weights_only(path), path)


def load_weights_only(path: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; every failure names the file and says why.

    The weights-only unpickler refuses any pickled global (class, function) outside tensors and
    plain containers *before* calling it, so a crafted file executes nothing. ``mmap=True`` maps
    zip-format files (cheap peeks at large files) and falls back to a plain read for legacy ones.
    """
    path = require_checkpoint_file(path)
    require_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(_refusal_message(path, error)) from error
    except Exception as error:  # torch's readers fail on damaged files with many types (IndexError, KeyError, ...)
        raise CheckpointReadError(
            f"{path} cannot be read as a torch checkpoint (truncated, corrupt or not written by "
            f"torch.save): {type(error).__name__}: {_first_line(error)}"
        ) from error


def require_torch_file(path: Path) -> None:
    """A torch file is a zip archive (torch.save's format) or a pickle (the legacy one); say so of anything else.

    Checked on the first bytes, before any unpickler sees the file: a text, JSON or audio file
    given as a checkpoint gets one line naming it and what it starts with.
    """
    with path.open("rb") as stream:
        head = stream.read(TORCH_HEAD_BYTES)
    if not head:
        raise CheckpointReadError(f"{path} is empty (0 bytes), not a checkpoint")
    if head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_PROTOCOL_OPCODE):
        return
    raise CheckpointReadError(
        f"{path} is not a checkpoint: torch files are zip archives or pickles, this one starts with {head[:16]!r}"
        f"{' (text)' if _looks_like_text(head) else ''}"
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\r\n\t" for char in text)


def require_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it is an existing file; else a one-line FileNotFoundError naming it."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _refusal_message(path: Path, error: BaseException) -> str:
    text = str(error)
    referenced = _REFUSED_GLOBAL.search(text)
    if referenced:
        reason = (
            f"it references the Python object '{referenced.group(1)}', which only a full unpickle would import or call"
        )
    else:
        operand = _REFUSED_OPERAND.search(text)
        detail = operand.group(0) if operand else _first_line(error)
        reason = f"the weights-only unpickler stopped at: {detail} (not a torch.save file, or not plain data)"
    return (
        f"{path} is not a plain-weights checkpoint: {reason}. It was refused without running any of "
        "its code (checkpoints are read with torch.load(weights_only=True)). If you trust the file's "
        "source, load it yourself with weights_only=False and re-save the network with "
        "save_panns_checkpoint."
    )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def extract_state_dict(content: object, path: Path) -> dict[str, torch.Tensor]:
    """The network's state_dict inside a checkpoint's contents (Lightning, ``{"model": ...}`` or bare)."""
    if not isinstance(content, Mapping):
        raise CheckpointMismatchError(
            f"{path}: expected a dict (state_dict, {{'model': ...}} or Lightning checkpoint), "
            f"found {type(content).__name__}"
        )
    if isinstance(content.get("state_dict"), Mapping):
        lightning_state = content["state_dict"]
        state = {
            key[len(LIGHTNING_PREFIX) :]: value
            for key, value in lightning_state.items()
            if key.startswith(LIGHTNING_PREFIX)
        }
        if not state:
            prefixes = sorted({key.split(".", 1)[0] for key in lightning_state})
            raise CheckpointMismatchError(
                f"{path}: Lightning checkpoint has no '{LIGHTNING_PREFIX}*' keys (the network must "
                f"be the LightningModule's attribute 'model'); found prefixes {prefixes}"
            )
    elif isinstance(content.get("model"), Mapping):
        state = dict(content["model"])
    else:
        state = dict(content)
    non_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if non_tensors:
        raise CheckpointMismatchError(
            f"{path}: expected a state_dict of tensors; {len(non_tensors)} entries are not tensors "
            f"({examples(non_tensors)}). Top-level keys: {sorted(map(str, content))[:10]}"
        )
    # nn.DataParallel / DistributedDataParallel wrap the network as 'module'.
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def best_matching_models(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], float]:
    """Zoo models whose (key, shape) layout best fits ``state_dict``, and the fitted fraction.

    Candidates' layouts at their paper front end come from :data:`LAYOUTS_FILE` (no network is
    built; scripts/zoo_layouts.py writes it); classifier rows (the class count) are not compared. Several names tie when
    layouts are identical (e.g. Cnn14 and Cnn14_DecisionLevelMax).
    """
    given = {key: tuple(value.shape) for key, value in state_dict.items()}
    scores: dict[str, float] = {}
    for name in list_models():
        layout = zoo_layout(name)
        matching = sum(1 for key, shape in layout.items() if _same_layout(key, given.get(key), shape))
        scores[name] = matching / len(set(layout) | set(given))
    best = max(scores.values())
    return [name for name, score in scores.items() if score == best], best


def fits_layout(name: str, state_dict: Mapping[str, torch.Tensor], frontend: Mapping[str, Any] | None = None) -> bool:
    """Whether ``state_dict`` has exactly zoo model ``name``'s keys and shapes at its paper front end
    updated by ``frontend`` (classifier rows, the class count, not compared): one network checked
    (on the meta device), none of the others built."""
    layout = zoo_layout(name, tuple(sorted((frontend or {}).items())))
    return set(layout) == set(state_dict) and all(
        _same_layout(key, tuple(state_dict[key].shape), shape) for key, shape in layout.items()
    )


def _same_layout(key: str, given: tuple[int, ...] | None, expected: tuple[int, ...]) -> bool:
    if given is None or len(given) != len(expected):
        return False
    if key.startswith(CLASSIFIER_PREFIXES):
        return given[1:] == expected[1:]
    return given == expected


def zoo_layout(name: str, frontend: tuple[tuple[str, Any], ...] = ()) -> dict[str, tuple[int, ...]]:
    """Zoo model ``name``'s keys and shapes: from :data:`LAYOUTS_FILE` at its paper front end, else built."""
    if not dict(frontend) or dict(frontend).items() <= FRONTEND_DEFAULTS[name].items():
        recorded = recorded_layouts().get(name)
        if recorded is not None:
            return recorded
    return built_layout(name, frontend)


@functools.lru_cache(maxsize=None)
def built_layout(name: str, frontend: tuple[tuple[str, Any], ...] = ()) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of zoo model ``name`` built on the meta device (no memory), 527 classes."""
    with torch.device("meta"):
        model = build_model(name, **{**FRONTEND_DEFAULTS[name], **dict(frontend)}, classes_num=527)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@functools.lru_cache(maxsize=1)
def recorded_layouts() -> dict[str, dict[str, tuple[int, ...]]]:
    """:data:`LAYOUTS_FILE` read once (empty when absent: then every layout is built)."""
    try:
        data = json.loads(LAYOUTS_FILE.read_text(encoding="utf-8"))
    except OSError:
        return {}
    return {name: {key: tuple(shape) for key, shape in layout.items()} for name, layout in data.items()}


def layouts_json(layouts: Mapping[str, Mapping[str, tuple[int, ...]]]) -> str:
    """The text of :data:`LAYOUTS_FILE`: one model per line, keys in state_dict order."""
    lines = [
        f"{json.dumps(name)}: {json.dumps({k: list(v) for k, v in layout.items()}, separators=(',', ':'))}"
        for name, layout in sorted(layouts.items())
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) keys of ``given`` against ``expected``; a non-tensor counts as mis-shaped."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    misshaped = [
        key
        for key in expected
        if key in given
        and (not isinstance(given[key], torch.Tensor) or tuple(given[key].shape) != tuple(expected[key].shape))
    ]
    return missing, unexpected, misshaped


def classes_num(state_dict: Mapping[str, Any], prefix: str = "") -> int | None:
    """Classes of the clip classifier in a state_dict (keys under ``prefix``), if it has one."""
    for key in CLASSIFIER_BIAS_KEYS:
        value = state_dict.get(prefix + key)
        if isinstance(value, torch.Tensor) and value.dim() == 1:
            return int(value.shape[0])
    return None


@dataclass(frozen=True)
class StateDictMismatch:
    """How a checkpoint's state_dict differs from the one a model expects: the one place that words it.

    Built by :meth:`between` from the two state_dicts (``prefix``: the keys' common prefix, e.g.
    ``model.`` in a Lightning checkpoint, for finding the classifier). Two renderings of the same
    facts: :meth:`report`, a multi-line report for published files (``load_panns_checkpoint``),
    and :meth:`summary`, one line for this project's own checkpoints and fine-tuning backbones.
    Falsy when the two fit.
    """

    missing: list[str]
    unexpected: list[str]
    misshaped: list[str]
    given: Mapping[str, Any]
    expected: Mapping[str, torch.Tensor]
    file_classes: int | None
    model_classes: int | None

    @classmethod
    def between(
        cls, expected: Mapping[str, torch.Tensor], given: Mapping[str, Any], prefix: str = ""
    ) -> StateDictMismatch:
        missing, unexpected, misshaped = compare_state_dicts(expected, given)
        return cls(
            missing, unexpected, misshaped, given, expected, classes_num(given, prefix), classes_num(expected, prefix)
        )

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)

    @property
    def classes_differ(self) -> bool:
        return None not in (self.file_classes, self.model_classes) and self.file_classes != self.model_classes

    def shapes(self, key: str, separator: str = " ") -> str:
        """``key file (a, b) vs model (c, d)``; a non-tensor in the file is named by its type."""
        value = self.given[key]
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        return f"{key}{separator}file {found} vs model {tuple(self.expected[key].shape)}"

    def summary(self) -> str:
        """One line: what is missing, unexpected and mis-shaped, and the class counts when they differ."""
        problems = []
        if self.missing:
            problems.append(f"{len(self.missing)} keys missing from the file ({examples(sorted(self.missing))})")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected keys ({examples(sorted(self.unexpected))})")
        if self.misshaped:
            details = [self.shapes(key, ": ") for key in sorted(self.misshaped)]
            problems.append(f"{len(self.misshaped)} keys with other shapes ({examples(details)})")
        if problems and self.classes_differ:
            problems.append(
                f"the file's classifier has {self.file_classes} classes, the model expects {self.model_classes}"
            )
        return "; ".join(problems)

    def report(self, path: Path, model_name: str) -> str:
        """Several lines: the differences, the zoo model the file fits best, what to do about it."""
        lines = [
            f"Checkpoint {path} does not fit {model_name} ({len(self.expected)} keys; file has {len(self.given)}):"
        ]
        if self.missing:
            lines.append(f"  {len(self.missing)} missing from the file: {examples(self.missing)}")
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected in the file: {examples(self.unexpected)}")
        if self.misshaped:
            lines.append(
                f"  {len(self.misshaped)} with other shapes: {examples([self.shapes(key) for key in self.misshaped])}"
            )
        names, score = best_matching_models(self.given)
        classes = f"; the file's classifier has {self.file_classes} classes" if self.file_classes is not None else ""
        lines.append(
            f"  The file's layout best fits zoo model {' / '.join(names)} ({score:.0%} of keys and shapes{classes})."
        )
        if self.classes_differ:
            lines.append(
                f"  Class count: {path} has {self.file_classes} classes, {model_name} expects {self.model_classes}."
            )
        only_classifier = all(key.startswith(CLASSIFIER_PREFIXES) for key in self.misshaped)
        if self.misshaped and only_classifier and not (self.missing or self.unexpected):
            lines.append("  Only the classifier differs: to fine-tune, load with strict=False.")
        return "\n".join(lines)


def examples(items: list[str]) -> str:
    """The first few items, and how many more there are."""
    shown = ", ".join(items[:EXAMPLES_SHOWN])
    return shown + (f", ... ({len(items) - EXAMPLES_SHOWN} more)" if len(items) > EXAMPLES_SHOWN else "")

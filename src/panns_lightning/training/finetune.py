"""FineTuneModule: a pretrained PANNs backbone with a new classifier, trained on a small dataset.

It is a :class:`TaggingModule` (same loss, mixup, metrics, checkpoint contents); what it adds:

- **Backbone weights** from a published PANNs file (``{"model": ...}``), a bare state_dict or one
  of our Lightning checkpoints, loaded *strictly* for everything but the AudioSet classifier: a
  missing, extra or mis-shaped backbone key is an error, never a silent partial load. The mel
  filterbank stored in the file must also equal the one ``model_config`` builds, which catches a
  checkpoint trained at another sample rate / fmin / fmax whose tensors happen to have equal shapes.
- **A new head** ``Linear(embedding_dim, num_classes)`` where ``fc_audioset`` was (the AudioSet
  weights are dropped). Keeping the attribute name makes the fine-tuned network an ordinary zoo
  model with ``num_classes`` outputs: ``build_model(name, classes_num=K)`` + ``load_panns_checkpoint``
  read it back, and panns-eval can score it. As in upstream's transfer models the head reads the
  embedding *after* the backbone's last dropout (p = 0.5; ``head_on_dropped_embedding=False``
  feeds it the undropped activations, as the AudioSet tagger does). Single-label training is
  cross-entropy on the head's true (fp32) logits, i.e. upstream's log-softmax + NLL.
- **What trains**: ``mode="full"`` (everything), ``"linear_probe"`` (only the head; the backbone is
  frozen, and its BatchNorm layers kept in eval mode so their running statistics do not move;
  dropout and SpecAugment still act in training steps) or
  ``"partial"`` with ``freeze_until="conv_block3"`` (the model's top-level layers up to and
  including that one frozen, in registration order = forward order). ``layer_decay`` < 1 gives
  each trainable layer ``lr · layer_decay^depth`` with depth counted from the head.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics.utilities import dim_zero_cat

from panns_lightning.models.blocks import init_layer
from panns_lightning.models.card import ModelCard
from panns_lightning.models.checkpoint import (
    CLASSIFIER_PREFIXES,
    CheckpointMismatchError,
    StateDictMismatch,
    best_matching_models,
)
from panns_lightning.models.reader import ModelFile, read_model_file
from panns_lightning.models.registry import FRONTEND_KEYS
from panns_lightning.training.module import TaggingModule

log = logging.getLogger(__name__)

MODES = ("full", "linear_probe", "partial")
HEAD = "fc_audioset"
# Deterministic front-end tensors: equal only if the checkpoint was made with the same front end.
FRONTEND_TENSORS = ("logmel_extractor.melW",)


class FineTuneModule(TaggingModule):
    """A TaggingModule whose backbone starts from a checkpoint and may be (partly) frozen.

    ``checkpoint=None`` trains from scratch (the demo's baseline, and how a saved fine-tuned
    checkpoint is rebuilt before its own weights are loaded). Other keyword arguments go to
    :class:`TaggingModule` (lr, betas, augment, ...).
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        labels: list[dict[str, Any]],
        multilabel: bool = False,
        checkpoint: str | None = None,
        mode: str = "full",
        freeze_until: str | None = None,
        layer_decay: float = 1.0,
        head_on_dropped_embedding: bool = True,
        **tagging_options: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"finetune mode must be one of {MODES}, got {mode!r}")
        if mode == "partial" and not freeze_until:
            raise ValueError("finetune mode 'partial' needs freeze_until (e.g. 'conv_block3')")
        if mode != "partial" and freeze_until:
            raise ValueError(f"freeze_until={freeze_until!r} is only used with mode 'partial' (mode is {mode!r})")
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        super().__init__(model_config, labels, multilabel, **tagging_options)
        if not isinstance(getattr(self.model, HEAD, None), nn.Linear):
            raise ValueError(
                f"fine-tuning replaces the clip classifier '{HEAD}', which {model_config['name']} does not have "
                "(attention-pooled SED models are not supported); pick a clip-level model such as Cnn14"
            )
        self.mode = mode
        self.layer_decay = layer_decay
        if hasattr(self.model, "classify_dropped_embedding"):  # clip-head models (not the SED ones)
            self.model.classify_dropped_embedding = bool(head_on_dropped_embedding)
        if checkpoint:
            parent = read_model_file(checkpoint)
            frontend = {key: model_config[key] for key in FRONTEND_KEYS if key in model_config}
            load_backbone_file(self.model, parent, frontend)
            self.card_provenance["parent"] = parent_provenance(parent)
        self.reset_head()
        self.frozen_layers = frozen_layer_names(self.model, mode, freeze_until)
        for name in self.frozen_layers:
            for parameter in getattr(self.model, name).parameters():
                parameter.requires_grad_(False)
        self.last_test_predictions: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def embedding_dim(self) -> int:
        return int(getattr(self.model, HEAD).in_features)

    def reset_head(self) -> None:
        """A fresh ``Linear(embedding_dim, num_classes)`` with upstream's Xavier init."""
        head = nn.Linear(self.embedding_dim, len(self.labels), bias=True)
        init_layer(head)
        setattr(self.model, HEAD, head)

    def train(self, mode: bool = True) -> FineTuneModule:
        """BatchNorm layers inside frozen layers stay in eval mode, so their running statistics never move.

        Only BatchNorm: SpecAugment and the zoo's functional dropout follow the model's mode, so
        augmentation still acts while the backbone is frozen.
        """
        super().train(mode)
        self._keep_frozen_batchnorm_in_eval()
        return self

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning restores each submodule's mode itself around validation; re-assert before every step.
        self._keep_frozen_batchnorm_in_eval()

    def _keep_frozen_batchnorm_in_eval(self) -> None:
        for name in getattr(self, "frozen_layers", ()):
            for module in getattr(self.model, name).modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def on_test_epoch_end(self) -> None:
        # Keep the raw predictions (gathered across ranks) for confusion matrices before they are reset.
        with self.test_metrics.sync_context(should_sync=self.trainer.world_size > 1 if self._trainer else False):
            probs = (
                dim_zero_cat(self.test_metrics.probs) if self.test_metrics.probs else torch.zeros(0, len(self.labels))
            )
            targets = (
                dim_zero_cat(self.test_metrics.targets)
                if self.test_metrics.targets
                else torch.zeros(0, len(self.labels))
            )
        self.last_test_predictions = (probs.cpu(), targets.cpu())
        super().on_test_epoch_end()

    def configure_optimizers(self) -> Any:
        """Adam over the trainable parameters only, one group per layer when ``layer_decay`` < 1."""
        hp = self.hparams
        groups = parameter_groups(self.model, hp.lr, self.layer_decay)
        if not groups:
            raise ValueError("nothing to train: every parameter is frozen")
        optimizer = torch.optim.Adam(
            groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay, amsgrad=hp.amsgrad
        )
        if hp.warmup_steps <= 0:
            return optimizer
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / hp.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


def load_backbone(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load every non-classifier tensor of ``path`` into ``model`` strictly; returns what was loaded.

    The file is read once through the one reader (:func:`panns_lightning.models.reader.read_model_file`).
    Raises :class:`CheckpointMismatchError` naming missing / unexpected / mis-shaped keys (and the
    zoo model the file fits best), a model card whose network or front end differs from the
    model's (both values named), or a mel filter bank that differs from the model's.
    """
    return load_backbone_file(model, read_model_file(path))


def load_backbone_file(model: nn.Module, file: ModelFile, frontend: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`load_backbone` from an already read file; ``frontend``: the model's, compared with the file's card."""
    path, state = file.path, file.state_dict
    name = getattr(model, "zoo_name", type(model).__name__)
    if file.kind in ("onnx", "torchscript"):
        raise CheckpointMismatchError(
            f"{path} is an exported {file.kind} graph; fine-tuning starts from weights: give the .ckpt or the "
            "panns-export --format panns .pth"
        )
    if file.card is not None:
        check_backbone_card(file.card, path, name, frontend)
    file_backbone = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    model_backbone = {k: v for k, v in model.state_dict().items() if not k.startswith(CLASSIFIER_PREFIXES)}
    mismatch = StateDictMismatch.between(model_backbone, file_backbone)
    if mismatch:
        names, score = best_matching_models(state)
        raise CheckpointMismatchError(
            f"{path} does not fit the {name} backbone: {mismatch.summary()}. The file's layout best fits "
            f"{' / '.join(names)} ({score:.0%} of keys); set model=<that name> and its front end"
        )
    for key in FRONTEND_TENSORS:
        if key in file_backbone and not torch.allclose(
            file_backbone[key].float(), model_backbone[key].float(), atol=1e-5
        ):
            raise CheckpointMismatchError(
                f"{path}: its {key} differs from the one {name} builds from model_config, so the checkpoint was "
                "trained with another front end (sample_rate / window_size / mel_bins / fmin / fmax); use the "
                "checkpoint's front end and convert the data at its sample rate"
            )
    # strict=False only because the head is not in the file; the backbone was checked key by key above.
    model.load_state_dict(file_backbone, strict=False)
    log.info("loaded %d backbone tensors from %s (classifier dropped)", len(file_backbone), path)
    return file_backbone


def check_backbone_card(card: ModelCard, path: Path, name: str, frontend: dict[str, Any] | None) -> None:
    """The file's card must name the model's network and front end; a difference names both values."""
    if card.model != name:
        raise CheckpointMismatchError(
            f"{path}: its model card says model {card.model}, but the model config says {name}"
        )
    for key, value in (frontend or {}).items():
        if key in card.frontend and card.frontend[key] != value:
            raise CheckpointMismatchError(
                f"{path}: its model card says {key}={card.frontend[key]}, but the model config says {key}={value}"
            )


def parent_provenance(file: ModelFile) -> dict[str, Any]:
    """What a fine-tuned model's card records of the checkpoint it started from."""
    parent: dict[str, Any] = {"file": file.path.name, "kind": file.kind, "has_card": file.card is not None}
    if file.card is not None:
        parent["model"] = file.card.model
        data = file.card.provenance.get("training_data")
        if isinstance(data, dict):
            parent["training_data"] = {key: data.get(key) for key in ("dataset", "split", "num_clips")}
    return parent


def frozen_layer_names(model: nn.Module, mode: str, freeze_until: str | None) -> list[str]:
    """Top-level children to freeze: none (full), all but the head (linear_probe), up to ``freeze_until``."""
    names = [name for name, _ in model.named_children()]
    if mode == "full":
        return []
    if mode == "linear_probe":
        return [name for name in names if name != HEAD]
    if freeze_until not in names or freeze_until == HEAD:
        choices = [name for name in names if name != HEAD]
        raise ValueError(
            f"freeze_until={freeze_until!r} is not a layer of {getattr(model, 'zoo_name', type(model).__name__)}; choose one of {choices}"
        )
    return names[: names.index(freeze_until) + 1]


def parameter_groups(model: nn.Module, lr: float, layer_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters grouped per top-level layer, lr decayed by depth from the head.

    Layers without trainable parameters (frozen, or the fixed STFT) do not count as depth.
    """
    layers = [(name, [p for p in child.parameters() if p.requires_grad]) for name, child in model.named_children()]
    layers = [(name, params) for name, params in layers if params]
    groups = []
    for depth, (name, params) in enumerate(reversed(layers)):
        groups.append({"params": params, "lr": lr * layer_decay**depth, "name": name})
    return list(reversed(groups))

"""TaggingModule: the LightningModule around any model of the zoo.

It owns what is *training*: the loss (BCE multi-label / CE single-label, both on the model's fp32
logits, so bf16 autocast loses no gradient that fp32 keeps), PANNs-style mixup
(λ ~ Beta(α, α), targets mixed with the same pairwise arithmetic as the features; on the log-mel
inside the model as upstream, or on the waveforms before it), cheap waveform augmentations
(train step only; all augmentation is configured by one :class:`AugmentOptions`, ``training/augment.py``),
Adam with PANNs' defaults, and the metrics. The network itself is a plain ``nn.Module`` from
``build_model`` stored as ``self.model``, so its state_dict keys inside a Lightning checkpoint are
``model.<upstream key>``.

A checkpoint alone is enough to evaluate or tag: it carries the model card (``"model_card"``,
:mod:`panns_lightning.models.card`: network, front end, labels, task and activation, training clip
length, the training data's name and clip counts, the parent checkpoint when fine-tuned), and the
hyper-parameters hold the model config and the label list; all plain Python values, so that the
file loads with ``torch.load(weights_only=True)``. How a process runs (channels-last, compile,
fused Adam, sync-free step: :class:`~panns_lightning.training.speed.SpeedOptions`) is not saved.

The training step never waits for the device when ``speed.sync_free`` is on: the non-finite
verdict goes to the fused optimizer as a device tensor, and the host reads losses and verdicts only
every ``trainer.log_every_n_steps`` steps, when Lightning logs (and syncs) anyway.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from panns_lightning import __version__
from panns_lightning.models import build_model, do_mixup
from panns_lightning.models.card import CARD_KEY, ModelCard, card_from_model_config
from panns_lightning.shardset.codec import INT16_SCALE
from panns_lightning.training.augment import AugmentOptions, sample_mixup_lambda
from panns_lightning.training.metrics import TaggingMetrics, TaggingScores
from panns_lightning.training.numerics import NonFiniteGuard, optimizer_skips_on_device
from panns_lightning.training.speed import SpeedOptions, to_device_async

log = logging.getLogger(__name__)

_PROB_EPS = 1e-7


class TaggingModule(L.LightningModule):
    """Clip-level tagging with any PANNs architecture."""

    def __init__(
        self,
        model_config: dict[str, Any],
        labels: list[dict[str, Any]],
        multilabel: bool = True,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = True,
        warmup_steps: int = 0,
        augment: Mapping[str, Any] | None = None,
        max_nonfinite_steps: int = 5,
        speed: SpeedOptions | None = None,
        network: torch.nn.Module | None = None,
    ) -> None:
        """``augment``: the ``augment`` config as a plain dict (:meth:`AugmentOptions.to_dict`, what a
        checkpoint holds) sets mixup, SpecAugment and the waveform augmentations; a part left out
        keeps :class:`AugmentOptions`' default, SpecAugment left out is what ``model_config`` says.
        ``speed``: how this process runs (compile, channels-last, ...; not saved).
        ``network``: an already loaded network for ``model_config`` (panns-eval; not saved), else one is built.
        """
        super().__init__()
        # The arguments as given are the hyper-parameters, all plain values (weights_only-loadable);
        # everything below is derived from them again when a checkpoint is rebuilt. speed and network
        # are how this process runs, not what the weights are: a checkpoint must not make its
        # evaluator compile.
        self.save_hyperparameters(ignore=["speed", "network"])
        if not labels:
            raise ValueError("TaggingModule needs the label list (from the shard manifest); got none")
        if "name" not in model_config:
            raise ValueError(f"model_config needs a 'name'; got keys {sorted(model_config)}")
        if augment is not None and not isinstance(augment, Mapping):
            raise TypeError(f"augment takes the plain dict (AugmentOptions.to_dict()), got {type(augment).__name__}")
        self.augment = AugmentOptions.from_dict(augment or {}).check()
        network_config = dict(model_config)
        if augment is not None and "specaugment" in augment:
            network_config.update(self.augment.specaugment.model_settings())
        self.speed = speed or SpeedOptions()
        self.waveform_augment = self.augment.waveform_augment(int(network_config.get("sample_rate", 0)))
        self.labels = list(labels)
        self.multilabel = multilabel
        name = network_config.pop("name")
        self.model = network if network is not None else build_model(name, classes_num=len(labels), **network_config)
        # What the model card says beyond the config (filled from the data at fit start, or from a
        # loaded checkpoint's card): the training data, the clip length, the parent checkpoint.
        self.card_provenance: dict[str, Any] = {}
        self.card_clip_samples: int | None = None
        self.val_metrics = TaggingMetrics(len(labels), multilabel)
        self.test_metrics = TaggingMetrics(len(labels), multilabel)
        self.last_val_scores: TaggingScores | None = None
        self.last_test_scores: TaggingScores | None = None
        self.nonfinite = NonFiniteGuard(max_nonfinite_steps)

    # ---- forward and loss -------------------------------------------------------------------
    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.model(waveform, mixup_lambda)

    def loss(self, output: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """BCE with logits (multi-label) or CE on the logits (single-label), in fp32.

        ``output`` is the model's output dict. Every clip-level zoo model returns fp32 ``logits``
        (``clipwise_output = sigmoid(logits)``); only the SED models that average or attend over
        segment probabilities have none, and their loss is taken on the (fp32) probabilities.
        A NaN input gives a NaN loss (which :class:`NonFiniteGuard` skips), never an exception.
        """
        logits = output.get("logits")
        if logits is None:
            return self._loss_from_probabilities(output["clipwise_output"].float(), target)
        logits = logits.float()
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target)

    def _loss_from_probabilities(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = probs.clamp(_PROB_EPS, 1 - _PROB_EPS)
        if self.multilabel:
            # Written out rather than F.binary_cross_entropy, which raises (a device-side assert on
            # GPU) on a NaN input.
            return -(target * torch.log(probs) + (1 - target) * torch.log1p(-probs)).mean()
        return F.cross_entropy(torch.logit(probs), target)

    def configure_model(self) -> None:
        """Channels-last and ``torch.compile`` of the network in place (state_dict keys unchanged)."""
        if getattr(self, "_model_configured", False):
            return
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.speed.compile:
            self.model.compile(mode=self.speed.compile_mode)
        self._model_configured = True

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        waveform, target = float_waveform(batch["waveform"]), batch["target"]
        if self.waveform_augment.enabled:  # each source clip is augmented before any mixing
            waveform = self.waveform_augment(waveform)
        mixup_lambda = None
        mixup = self.augment.mixup
        if mixup.enabled and waveform.shape[0] >= 2:
            if waveform.shape[0] % 2:  # pairs only: drop the odd clip out
                waveform, target = waveform[:-1], target[:-1]
            mixup_lambda = to_device_async(sample_mixup_lambda(waveform.shape[0], mixup.alpha), waveform.device)
            target = do_mixup(target, mixup_lambda)
            if mixup.at == "waveform":
                # Same pairwise arithmetic as the log-mel site, applied before the front end.
                waveform, mixup_lambda = do_mixup(waveform, mixup_lambda), None
        output = self.model(waveform, mixup_lambda)
        loss = self.loss(output, target)
        self.nonfinite.note_batch(loss, batch.get("key"))
        # Logger only: Lightning converts a progress-bar value to a Python number every step (a
        # host sync); the bar's loss is refreshed in on_before_optimizer_step instead.
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=target.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the update when the loss or a gradient is not finite (see :class:`NonFiniteGuard`)."""
        scaled = self.trainer.precision in ("16-mixed", "16")  # a GradScaler skips such steps itself
        review = (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0
        if self.guard_update(optimizer, self.global_step, scaled=scaled, review=review):
            self._log_host_values()

    def guard_update(
        self, optimizer: torch.optim.Optimizer, step: int, *, scaled: bool = False, review: bool = True
    ) -> bool:
        """Arrange for a non-finite step to change nothing; True if the host looked at the device.

        With ``speed.sync_free`` and a fused optimizer the verdict stays on the device
        (``optimizer.found_inf``) and is read only when ``review`` is true; otherwise it is read
        now and the gradients are dropped. ``scaled``: a GradScaler handles the gradients.
        """
        if self.speed.sync_free and not scaled and optimizer_skips_on_device(optimizer):
            optimizer.found_inf = self.nonfinite.verdict(self.parameters(), step)
            if review:
                self._review_verdicts()
            return review
        if self.nonfinite.check(self.parameters(), step, clear_gradients=not scaled):
            log.warning("skipped step %d: %s", step + 1, self.nonfinite.last_problem)
        return True

    def on_train_end(self) -> None:
        self._review_verdicts()

    def _review_verdicts(self) -> None:
        for step in self.nonfinite.review():
            log.warning("skipped step %d: %s", step, self.nonfinite.last_problem)

    def _log_host_values(self) -> None:
        # Host tensors: Lightning keeps them as they are, so showing them later costs no sync.
        loss = self.nonfinite.last_loss
        if self._trainer is None or loss is None:
            return
        self.log("loss", loss.cpu(), prog_bar=True, logger=False, on_step=True, on_epoch=False)
        self.log("train/skipped_steps", torch.tensor(float(self.nonfinite.skipped)), on_step=True, on_epoch=False)

    # ---- evaluation -------------------------------------------------------------------------
    def _evaluate_batch(self, batch: dict[str, Any], metrics: TaggingMetrics, stage: str) -> None:
        output = self.model(float_waveform(batch["waveform"]))
        probs = output["clipwise_output"].float()
        loss = self.loss(output, batch["target"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=probs.shape[0])
        metrics.update(probs, batch["target"])

    def _log_scores(self, metrics: TaggingMetrics, stage: str) -> TaggingScores:
        scores = metrics.compute()
        metrics.reset()
        for key, value in scores.headline().items():
            # NaN would poison "best checkpoint" tracking; an empty set is reported as 0.
            self.log(f"{stage}/{key}", 0.0 if math.isnan(value) else value, prog_bar=key == "mAP", sync_dist=False)
        return scores

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_batch(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.last_val_scores = self._log_scores(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate_batch(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.last_test_scores = self._log_scores(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {
            "key": batch["key"],
            **{k: v.float().cpu() for k, v in self.model(float_waveform(batch["waveform"])).items()},
        }

    # ---- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=hp.lr,
            betas=tuple(hp.betas),
            eps=hp.eps,
            weight_decay=hp.weight_decay,
            amsgrad=hp.amsgrad,
            **self.speed.adam_options(),
        )
        if hp.warmup_steps <= 0:
            return optimizer
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / hp.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    # ---- what a checkpoint carries ----------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return [str(label.get("name", label.get("mid", i))) for i, label in enumerate(self.labels)]

    def model_card(self) -> ModelCard:
        """The card every checkpoint of this module carries (``"model_card"``; docs/model_card.md)."""
        provenance = {**self.card_provenance, "created_by": f"panns_lightning {__version__} {type(self).__name__}"}
        card = card_from_model_config(
            self.hparams.model_config,
            self.label_names,
            multilabel=self.multilabel,
            clip_samples=self.card_clip_samples,
            source=f"{type(self).__name__} model_config",
            provenance=provenance,
        )
        return card.with_artifact("lightning", clipwise_output="sigmoid")

    def on_fit_start(self) -> None:
        """Note what the card records of the training data (the DataModule's manifest)."""
        describe = getattr(getattr(self.trainer, "datamodule", None), "training_data", None)
        data = describe() if callable(describe) else None
        if data:
            self.card_provenance["training_data"] = data
            self.card_clip_samples = int(data["clip_samples"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CARD_KEY] = self.model_card().to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run keeps the card's provenance and clip length (its data may be read again at fit start)."""
        card = checkpoint.get(CARD_KEY)
        if isinstance(card, Mapping):
            self.card_provenance = {k: v for k, v in dict(card.get("provenance") or {}).items() if k != "created_by"}
            self.card_clip_samples = card.get("clip_samples")


def float_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """int16 batches (``speed.int16_batches``) → float32 x / 32767 where they already are (the device)."""
    if waveform.dtype == torch.int16:
        return waveform.to(torch.float32).div_(float(INT16_SCALE))
    return waveform

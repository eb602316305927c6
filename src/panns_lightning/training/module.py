"""TaggingModule: the LightningModule around any model of the zoo.

It owns what is *training*: the loss (BCE multi-label / CE single-label), PANNs-style mixup
(λ ~ Beta(α, α), targets mixed with the same pairwise arithmetic as the features; on the log-mel
inside the model as upstream, or on the waveforms before it), cheap waveform augmentations
(``training/augment.py``, train step only), Adam with PANNs' defaults, and the metrics. The network itself is a plain ``nn.Module`` from
``build_model`` stored as ``self.model``, so its state_dict keys inside a Lightning checkpoint are
``model.<upstream key>``.

A checkpoint alone is enough to evaluate or tag: the hyper-parameters it carries hold the model
config (name + front end), the label list and the task type, as plain Python values so that the
file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from panns_lightning.models import build_model
from panns_lightning.training.augment import MIXUP_SITES, WaveformAugment
from panns_lightning.training.metrics import TaggingMetrics, TaggingScores
from panns_lightning.training.mixup import do_mixup, sample_mixup_lambda
from panns_lightning.training.numerics import NonFiniteGuard

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
        mixup_alpha: float = 1.0,
        mixup_enabled: bool = True,
        mixup_on: str = "logmel",
        gain_db: tuple[float, float] | list[float] | None = None,
        max_shift_seconds: float = 0.0,
        max_nonfinite_steps: int = 5,
        compile_model: bool = False,
    ) -> None:
        super().__init__()
        if not labels:
            raise ValueError("TaggingModule needs the label list (from the shard manifest); got none")
        model_config = dict(model_config)
        if "name" not in model_config:
            raise ValueError(f"model_config needs a 'name'; got keys {sorted(model_config)}")
        if mixup_on not in MIXUP_SITES:
            raise ValueError(f"mixup_on must be one of {MIXUP_SITES}, got {mixup_on!r}")
        # compile_model is how this process runs, not what the weights are: a checkpoint must not
        # make its evaluator compile.
        self.save_hyperparameters(ignore=["compile_model"])
        self.compile_model = compile_model
        self.waveform_augment = WaveformAugment(
            gain_db=None if gain_db is None else (float(gain_db[0]), float(gain_db[1])),
            max_shift_samples=int(round(max_shift_seconds * int(model_config.get("sample_rate", 0)))),
        )
        self.labels = list(labels)
        self.multilabel = multilabel
        model_kwargs = dict(model_config)  # the saved hyper-parameters keep "name"
        self.model = build_model(model_kwargs.pop("name"), classes_num=len(labels), **model_kwargs)
        self.val_metrics = TaggingMetrics(len(labels), multilabel)
        self.test_metrics = TaggingMetrics(len(labels), multilabel)
        self.last_val_scores: TaggingScores | None = None
        self.last_test_scores: TaggingScores | None = None
        self.nonfinite = NonFiniteGuard(max_nonfinite_steps)

    # ---- forward and loss -------------------------------------------------------------------
    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.model(waveform, mixup_lambda)

    def loss(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE on the sigmoid outputs (multi-label), CE on their logits (single-label)."""
        probs = probs.float()
        if self.multilabel:
            # Written out rather than F.binary_cross_entropy, which raises (a device-side assert on
            # GPU) on a NaN input: a NaN must become a NaN loss, which NonFiniteGuard skips.
            probs = probs.clamp(_PROB_EPS, 1 - _PROB_EPS)
            return -(target * torch.log(probs) + (1 - target) * torch.log1p(-probs)).mean()
        # The zoo's heads end in a sigmoid (upstream's contract); logit() recovers the scores.
        logits = torch.logit(probs.clamp(_PROB_EPS, 1 - _PROB_EPS))
        return F.cross_entropy(logits, target)

    def configure_model(self) -> None:
        """Compile the network in place (``nn.Module.compile`` keeps the state_dict keys unchanged)."""
        if self.compile_model and not getattr(self, "_model_compiled", False):
            self.model.compile()
            self._model_compiled = True

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        waveform, target = batch["waveform"], batch["target"]
        if self.waveform_augment.enabled:  # each source clip is augmented before any mixing
            waveform = self.waveform_augment(waveform)
        mixup_lambda = None
        if self.hparams.mixup_enabled and waveform.shape[0] >= 2:
            if waveform.shape[0] % 2:  # pairs only: drop the odd clip out
                waveform, target = waveform[:-1], target[:-1]
            mixup_lambda = sample_mixup_lambda(waveform.shape[0], self.hparams.mixup_alpha).to(waveform.device)
            target = do_mixup(target, mixup_lambda)
            if self.hparams.get("mixup_on", "logmel") == "waveform":
                # Same pairwise arithmetic as the log-mel site, applied before the front end.
                waveform, mixup_lambda = do_mixup(waveform, mixup_lambda), None
        output = self.model(waveform, mixup_lambda)
        loss = self.loss(output["clipwise_output"], target)
        self.nonfinite.note_batch(loss, batch.get("key"))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=target.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the update when the loss or a gradient is not finite (see :class:`NonFiniteGuard`)."""
        scaled = self.trainer.precision in ("16-mixed", "16")  # a GradScaler skips such steps itself
        skipped = self.nonfinite.check(self.parameters(), self.global_step, clear_gradients=not scaled)
        self.log("train/skipped_steps", float(self.nonfinite.skipped), on_step=True, on_epoch=False)
        if skipped:
            log.warning("skipped step %d: %s", self.global_step + 1, self.nonfinite.last_problem)

    # ---- evaluation -------------------------------------------------------------------------
    def _evaluate_batch(self, batch: dict[str, Any], metrics: TaggingMetrics, stage: str) -> None:
        output = self.model(batch["waveform"])
        probs = output["clipwise_output"].float()
        loss = self.loss(probs, batch["target"])
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
        return {"key": batch["key"], **{k: v.float().cpu() for k, v in self.model(batch["waveform"]).items()}}

    # ---- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.Adam(
            self.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps,
            weight_decay=hp.weight_decay, amsgrad=hp.amsgrad,
        )
        if hp.warmup_steps <= 0:
            return optimizer
        warmup = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / hp.warmup_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    # ---- what a checkpoint carries ----------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return [str(label.get("name", label.get("mid", i))) for i, label in enumerate(self.labels)]

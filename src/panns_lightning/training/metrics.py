"""Clip-level tagging metrics: macro mAP, macro AUC, d-prime (AudioSet's reporting), accuracy.

torchmetrics keeps the predictions and gathers them across DDP ranks at ``compute()``, so a
validation that sees every clip exactly once across ranks gives the same figures as a single
process. Classes without positives (or without negatives, for AUC) in the evaluated set have no
defined AP/AUC: they are left out of the macro average and reported, never counted as zero.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_accuracy,
    multilabel_auroc,
    multilabel_average_precision,
)
from torchmetrics.utilities import dim_zero_cat

from panns_lightning.models.finite import require_finite


def d_prime(auc: float) -> float:
    """d' = sqrt(2) * Phi^-1(AUC), the sensitivity index PANNs and AudioSet papers report."""
    auc = min(max(auc, 1e-12), 1.0 - 1e-12)
    return math.sqrt(2.0) * float(torch.special.ndtri(torch.tensor(auc, dtype=torch.float64)))


@dataclass
class TaggingScores:
    """What one evaluation pass produced; ``per_class_ap`` holds NaN for classes left out."""

    mAP: float
    AUC: float
    d_prime: float
    accuracy: float
    num_clips: int
    per_class_ap: list[float] = field(default_factory=list)
    per_class_auc: list[float] = field(default_factory=list)
    classes_without_positives: list[int] = field(default_factory=list)

    def headline(self) -> dict[str, float]:
        return {"mAP": self.mAP, "AUC": self.AUC, "d_prime": self.d_prime, "accuracy": self.accuracy}


class TaggingMetrics(Metric):
    """Accumulates clip probabilities and targets, then scores them all at once."""

    full_state_update = False

    def __init__(self, num_classes: int, multilabel: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        if probs.shape != targets.shape or probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"expected probs and targets of shape [B, {self.num_classes}], "
                f"got {tuple(probs.shape)} and {tuple(targets.shape)}"
            )
        self.probs.append(probs.detach().float())
        self.targets.append(targets.detach().float())

    def compute(self) -> TaggingScores:  # type: ignore[override]
        probs = self._gathered(self.probs)
        # Ranking metrics over NaN are numbers that mean nothing: refuse them, naming the count.
        require_finite(probs, "the model's clip probabilities on this set")
        return score_tagging(probs, self._gathered(self.targets), self.multilabel)

    def _gathered(self, state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        # Under DDP torchmetrics' sync has already concatenated the list state into one tensor.
        if isinstance(state, torch.Tensor):
            return state.reshape(-1, self.num_classes)
        return dim_zero_cat(state) if state else torch.zeros(0, self.num_classes)


def score_tagging(probs: torch.Tensor, targets: torch.Tensor, multilabel: bool = True) -> TaggingScores:
    """Macro AP / AUC over the classes that are scoreable in this set, d' from the macro AUC."""
    num_clips, num_classes = targets.shape
    nan = float("nan")
    if num_clips == 0:
        return TaggingScores(nan, nan, nan, nan, 0, [nan] * num_classes, [nan] * num_classes, list(range(num_classes)))
    binary = (targets > 0.5).long()
    positives = binary.sum(0)
    has_pos = positives > 0
    has_both = has_pos & (positives < num_clips)

    with warnings.catch_warnings():
        # torchmetrics warns about classes without positives; they are masked out just below.
        warnings.simplefilter("ignore", UserWarning)
        if num_classes == 1:  # torchmetrics' multilabel functions need two labels at least
            ap = binary_average_precision(probs[:, 0], binary[:, 0]).reshape(1)
            auc = binary_auroc(probs[:, 0], binary[:, 0]).reshape(1)
        else:
            ap = multilabel_average_precision(probs, binary, num_labels=num_classes, average=None)
            auc = multilabel_auroc(probs, binary, num_labels=num_classes, average=None)
    ap = torch.where(has_pos, ap, torch.full_like(ap, nan))
    auc = torch.where(has_both, auc, torch.full_like(auc, nan))

    mean_ap = float(ap[has_pos].mean()) if has_pos.any() else nan
    mean_auc = float(auc[has_both].mean()) if has_both.any() else nan
    if multilabel:
        # Exact-match of the arg-max is meaningless for multi-label clips; report whether the top
        # prediction is one of the clip's labels instead (top-1 precision).
        top = probs.argmax(1)
        accuracy = float(binary[torch.arange(num_clips), top].float().mean())
    else:
        accuracy = float(multiclass_accuracy(probs, binary.argmax(1), num_classes=num_classes, average="micro"))
    return TaggingScores(
        mAP=mean_ap,
        AUC=mean_auc,
        d_prime=d_prime(mean_auc) if not math.isnan(mean_auc) else nan,
        accuracy=accuracy,
        num_clips=num_clips,
        per_class_ap=[float(x) for x in ap],
        per_class_auc=[float(x) for x in auc],
        classes_without_positives=[int(i) for i in torch.nonzero(~has_pos).flatten()],
    )


def format_scores_table(scores: TaggingScores, label_names: list[str], worst: int = 5) -> str:
    """A plain-text table: headline figures, then the weakest classes by AP (where to look first)."""
    lines = [
        f"{'metric':<12}{'value':>10}",
        f"{'-' * 22}",
        f"{'mAP':<12}{scores.mAP:>10.4f}",
        f"{'AUC':<12}{scores.AUC:>10.4f}",
        f"{'d-prime':<12}{scores.d_prime:>10.4f}",
        f"{'top-1 acc':<12}{scores.accuracy:>10.4f}",
        f"{'clips':<12}{scores.num_clips:>10d}",
    ]
    ranked = sorted((ap, i) for i, ap in enumerate(scores.per_class_ap) if not math.isnan(ap))
    if ranked:
        lines += ["", f"weakest {min(worst, len(ranked))} classes by AP:"]
        for ap, i in ranked[:worst]:
            lines.append(f"  {ap:6.3f}  {label_names[i] if i < len(label_names) else i}")
    if scores.classes_without_positives:
        names = [label_names[i] for i in scores.classes_without_positives[:10] if i < len(label_names)]
        lines.append(
            f"{len(scores.classes_without_positives)} classes have no positive clip here and are left out"
            f" of mAP: {', '.join(names)}{' ...' if len(scores.classes_without_positives) > 10 else ''}"
        )
    return "\n".join(lines)

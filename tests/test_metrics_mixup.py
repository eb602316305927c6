"""Metrics (mAP / AUC / d-prime) and the mixup arithmetic used for features and targets."""

import math

import pytest
import torch

from panns_lightning.models import do_mixup
from panns_lightning.training.augment import sample_mixup_lambda
from panns_lightning.training.metrics import TaggingMetrics, d_prime, format_scores_table, score_tagging


def test_perfect_predictions_score_one():
    targets = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    scores = score_tagging(targets.clone(), targets)
    assert scores.mAP == pytest.approx(1.0)
    assert scores.AUC == pytest.approx(1.0)
    assert scores.num_clips == 4


def test_inverted_predictions_score_low():
    targets = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.float32)
    scores = score_tagging(1 - targets, targets)
    assert scores.AUC == pytest.approx(0.0)
    assert scores.mAP < 0.6


def test_class_without_positives_is_left_out_not_zero():
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float32)
    probs = targets.clone()
    probs[:, 2] = torch.tensor([0.9, 0.1, 0.5])
    scores = score_tagging(probs, targets)
    assert scores.classes_without_positives == [2]
    assert math.isnan(scores.per_class_ap[2])
    assert scores.mAP == pytest.approx(1.0)
    table = format_scores_table(scores, ["a", "b", "c"])
    assert "1 classes have no positive clip" in table and "c" in table


def test_d_prime_matches_definition():
    assert d_prime(0.5) == pytest.approx(0.0, abs=1e-9)
    # Phi^-1(0.8413447) = 1.0 -> d' = sqrt(2)
    assert d_prime(0.8413447460685429) == pytest.approx(math.sqrt(2.0), rel=1e-6)


def test_metric_accumulates_batches_like_one_pass():
    torch.manual_seed(0)
    probs = torch.rand(40, 5)
    targets = (torch.rand(40, 5) > 0.6).float()
    targets[0] = 1.0
    metric = TaggingMetrics(5)
    for i in range(0, 40, 7):
        metric.update(probs[i : i + 7], targets[i : i + 7])
    assert metric.compute().mAP == pytest.approx(score_tagging(probs, targets).mAP)
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        metric.update(torch.rand(2, 4), torch.rand(2, 4))


def test_mixup_lambda_pairs_sum_to_one():
    torch.manual_seed(0)
    lam = sample_mixup_lambda(8, alpha=1.0)
    assert lam.shape == (8,)
    assert torch.allclose(lam[0::2] + lam[1::2], torch.ones(4))
    assert ((lam >= 0) & (lam <= 1)).all()
    with pytest.raises(ValueError, match="even"):
        sample_mixup_lambda(7, alpha=1.0)


def test_do_mixup_arithmetic():
    x = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    lam = torch.tensor([0.25, 0.75, 1.0, 0.0])
    mixed = do_mixup(x, lam)
    assert mixed.shape == (2, 3)
    assert torch.allclose(mixed[0], 0.25 * x[0] + 0.75 * x[1])
    assert torch.allclose(mixed[1], x[2])
    # Targets mixed with the same lambdas stay valid soft labels.
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(do_mixup(targets, lam), torch.tensor([[0.25, 0.75], [1.0, 1.0]]))

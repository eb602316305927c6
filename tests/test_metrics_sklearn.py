"""Our per-class AP / AUC (torchmetrics) against scikit-learn's, on scores with many ties.

Tied scores are where AP implementations differ (interpolation, how a tie block is stepped);
both libraries treat a tie block as one threshold, so they must agree to float precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from panns_lightning.training.metrics import score_tagging

metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is a dev dependency (pip install -e '.[dev]')")


@pytest.mark.parametrize("seed", range(5))
def test_ap_and_auc_match_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_clips, num_classes = 97, 6
    levels = 2 + seed  # scores from a handful of values: most clips tie with many others
    probs = (rng.integers(0, levels, size=(num_clips, num_classes)) / (levels - 1)).astype(np.float32)
    targets = (rng.random((num_clips, num_classes)) < 0.3).astype(np.float32)
    targets[:, 0] = 0  # a class without positives: left out, not scored as 0
    targets[:, 1] = 1  # one without negatives: AP defined (1.0), AUC not
    scores = score_tagging(torch.from_numpy(probs), torch.from_numpy(targets))

    ap = [metrics.average_precision_score(targets[:, c], probs[:, c]) for c in range(1, num_classes)]
    auc = [metrics.roc_auc_score(targets[:, c], probs[:, c]) for c in range(2, num_classes)]
    assert (
        math.isnan(scores.per_class_ap[0])
        and math.isnan(scores.per_class_auc[0])
        and math.isnan(scores.per_class_auc[1])
    )
    np.testing.assert_allclose(scores.per_class_ap[1:], ap, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores.per_class_auc[2:], auc, rtol=0, atol=1e-6)
    assert scores.mAP == pytest.approx(np.mean(ap), abs=1e-6)
    assert scores.AUC == pytest.approx(np.mean(auc), abs=1e-6)


def test_all_scores_tied_gives_the_prevalence_and_chance_auc() -> None:
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], dtype=np.float32)
    probs = np.full_like(targets, 0.5)
    scores = score_tagging(torch.from_numpy(probs), torch.from_numpy(targets))
    for c in range(2):
        assert scores.per_class_ap[c] == pytest.approx(metrics.average_precision_score(targets[:, c], probs[:, c]))
        assert scores.per_class_ap[c] == pytest.approx(targets[:, c].mean())
        assert scores.per_class_auc[c] == pytest.approx(0.5) == metrics.roc_auc_score(targets[:, c], probs[:, c])


def test_a_single_class_set_is_scored_like_any_other() -> None:
    """One tag (e.g. a custom "is there a siren" set): AP and AUC of that class, no crash."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(40, 1, generator=generator)
    targets = (torch.rand(40, 1, generator=generator) > 0.6).float()
    scores = score_tagging(probs, targets, multilabel=True)
    assert scores.mAP == pytest.approx(average_precision_score(targets[:, 0].numpy(), probs[:, 0].numpy()), abs=1e-6)
    assert scores.AUC == pytest.approx(roc_auc_score(targets[:, 0].numpy(), probs[:, 0].numpy()), abs=1e-6)

"""Gaps between consecutive draws of one clip (balance.draw_gaps / gap_stats) on hand-made draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panns_lightning.data.diagnostics.balance import ClipLabels, clips_of_classes, draw_gaps, format_gaps, gap_stats


def test_gaps_of_a_hand_made_sequence() -> None:
    # Clip 7 at draws 0, 2, 3, 9; clip 3 at 1, 6; clips 5 and 8 once.
    drawn = [7, 3, 7, 7, 5, 8, 3, 0, 0, 7]
    gaps = draw_gaps(drawn)
    assert sorted(gaps.tolist()) == [1, 1, 2, 5, 6]  # 7: 2, 1, 6; 3: 5; 0: 1
    stats = gap_stats(drawn)
    assert stats["count"] == 5 and stats["clips"] == 3
    assert stats["median"] == 2.0
    assert stats["p5"] == pytest.approx(1.0)  # linear percentile of [1, 1, 2, 5, 6]
    assert stats["p25"] == pytest.approx(1.0)
    assert stats["mean"] == pytest.approx(3.0) and stats["min"] == 1


def test_percentiles_of_evenly_spread_copies() -> None:
    # One clip every 10 draws and another every 100: gaps 10 (x99) and 100 (x9).
    drawn = np.full(1000, -1)
    drawn[::10] = 1
    drawn[5::100] = 2
    drawn[drawn == -1] = np.arange(10_000, 10_000 + int(np.sum(drawn == -1)))
    stats = gap_stats(drawn)
    assert stats["count"] == 99 + 9 and stats["clips"] == 2
    assert stats["median"] == 10.0 and stats["p5"] == 10.0
    assert gap_stats(drawn, clips=np.array([2]))["median"] == 100.0


def test_no_repeats_gives_nan_statistics() -> None:
    stats = gap_stats([4, 5, 6])
    assert stats["count"] == 0 and stats["clips"] == 0
    assert math.isnan(stats["median"]) and math.isnan(stats["p5"])
    assert draw_gaps([]).size == 0 and draw_gaps([1]).size == 0
    assert "nan" in format_gaps({"none": stats})


def test_clips_of_classes() -> None:
    label_set = ClipLabels.from_lists([[0], [1, 2], [2], [0, 3]], 4, [2, 2])
    assert clips_of_classes(label_set, np.array([2, 3])).tolist() == [1, 2, 3]

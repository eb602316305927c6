"""run_inspect: the shard-set summary and the measured train-stream draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from panns_lightning.data import run_inspect
from shard_fixtures import long_tailed_clips, write_shard_set


@pytest.fixture(scope="module")
def long_tail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clips = long_tailed_clips(8, largest=400, smallest=4, seed=1)
    third = len(clips) // 3
    return write_shard_set(
        tmp_path_factory.mktemp("inspect"), clips, [third, third, len(clips) - 2 * third], num_classes=9
    )


def test_summary_without_draws(long_tail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_inspect(long_tail)
    printed = capsys.readouterr().out
    assert report["num_shards"] == 3 and report["storage"] == "int16"
    assert report["num_clips"] == sum(1 for _ in long_tailed_clips(8, largest=400, smallest=4, seed=1))
    assert report["clip_seconds"] == pytest.approx(0.1)
    assert report["empty_classes"] == ["class_08"]  # 9 labels, only 8 used
    assert "stream" not in report
    assert "3 shards" in printed and "class_00=" in printed and "1 without clips" in printed


def test_draws_measure_the_balanced_and_plain_streams(long_tail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    balanced = run_inspect(long_tail, balanced=True, draws=3000, seed=0, batch_size=30)["stream"]
    plain = run_inspect(long_tail, balanced=False, draws=3000, seed=0, batch_size=30)["stream"]
    printed = capsys.readouterr().out
    assert balanced["draws"] == plain["draws"] == 3000 and balanced["batches"] == 100
    assert balanced["share"][8] is None and balanced["coverage"][8] is None, "empty class is not measured"
    assert balanced["min_share"] > 0.7 > 0.3 > plain["min_share"]
    assert balanced["max_min_ratio"] < plain["max_min_ratio"]
    assert plain["min_coverage"] > 0.9, "a plain stream of 3000 draws passes over every clip"
    assert balanced["batches_with_repeat"] == 0 and balanced["bad_samples"] == 0
    assert "balanced: 3000 draws" in printed and "plain shuffled: 3000 draws" in printed


def test_balanced_draws_are_printed_next_to_panns_and_plotted(
    long_tail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "figures" / "counts.png"
    report = run_inspect(long_tail, balanced=True, draws=2000, seed=0, batch_size=25, plot=plot)
    printed = capsys.readouterr().out
    panns, ours = report["comparison"]["panns"], report["comparison"]["ours"]
    assert panns["draws"] == ours["draws"] == 2000
    assert ours["per_class"].sum() >= 2000, "every drawn key maps back to a clip of the set"
    assert list(ours["per_class"]) == [round(share * 2000 / 8) for share in report["stream"]["share"][:8]] + [0], (
        "the side-by-side figures count the same draws as the stream tally"
    )
    assert ours["min_count"] >= 0.5 * panns["min_count"] > 0
    assert "PANNs BalancedTrainSampler" in printed and "ours (stream)" in printed and "KL to uniform" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert report["plot"] == str(plot)


def test_plain_draws_print_no_comparison_unless_plotted(long_tail: Path, tmp_path: Path) -> None:
    assert "comparison" not in run_inspect(long_tail, balanced=False, draws=300, seed=0)
    report = run_inspect(long_tail, balanced=False, draws=300, seed=0, plot=tmp_path / "plain.png")
    assert report["comparison"]["ours"]["draws"] == 300 and (tmp_path / "plain.png").is_file()


def test_cli_plot_flag_writes_the_png(long_tail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from panns_lightning.cli.prepare import main

    plot = tmp_path / "cli.png"
    assert main(["inspect", str(long_tail), "--balanced", "--draws", "300", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG" and f"plot           {plot}" in capsys.readouterr().out

"""``panns-tag``: tables, JSON, SED files (CSV/NPZ/PNG), embeddings, unreadable files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from panns_lightning.cli import tag
from panns_lightning.labels import read_label_csv
from test_inference_support import (
    EXAMPLE_MP3,
    EXAMPLE_WAV,
    LABEL_NAMES,
    SMALL_FRONTEND,
    audioset_csv,
    cnn6_checkpoint,
    published_cnn6,
    sed_checkpoint,
)

pytestmark = pytest.mark.usefixtures("two_torch_threads")

needs_example_audio = pytest.mark.skipif(
    not (EXAMPLE_WAV.is_file() and EXAMPLE_MP3.is_file()), reason=f"example audio missing under {EXAMPLE_WAV.parent}"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_tag(capsys, *args: object) -> tuple[int, str, str]:
    code = tag.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@needs_example_audio
def test_table_for_wav_and_mp3_from_a_lightning_checkpoint(capsys) -> None:
    code, out, err = run_tag(capsys, EXAMPLE_WAV, EXAMPLE_MP3, "--checkpoint", cnn6_checkpoint(), "--top-k", 3)
    assert code == 0, err
    assert f"{EXAMPLE_WAV}  (7.00 s, 1 window)" in out and f"{EXAMPLE_MP3}  (7.0" in out
    ranked_lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(ranked_lines) == 6
    assert all(any(name in line for name in LABEL_NAMES) for line in ranked_lines)


@needs_example_audio
def test_json_from_a_published_checkpoint_with_labels(capsys) -> None:
    code, out, err = run_tag(
        capsys,
        EXAMPLE_WAV,
        EXAMPLE_MP3,
        "--checkpoint",
        published_cnn6(),
        "--model",
        "Cnn6",
        "--labels",
        audioset_csv(),
        "--json",
        "--top-k",
        4,
    )
    assert code == 0, err
    payload = json.loads(out)
    names = list(read_label_csv(audioset_csv()).names)
    assert payload["model"] == "Cnn6" and payload["failures"] == []
    assert [Path(r["file"]).name for r in payload["results"]] == [EXAMPLE_WAV.name, EXAMPLE_MP3.name]
    for result in payload["results"]:
        probabilities = [entry["probability"] for entry in result["top"]]
        assert len(probabilities) == 4 and probabilities == sorted(probabilities, reverse=True)
        assert all(names[entry["index"]] == entry["label"] for entry in result["top"])
        assert result["duration_s"] == pytest.approx(7.0, abs=0.01)


@needs_example_audio
def test_sed_writes_csv_npz_png_and_embed_writes_npy(capsys, tmp_path) -> None:
    sed_dir, embed_dir = tmp_path / "sed", tmp_path / "embed"
    code, out, err = run_tag(
        capsys,
        EXAMPLE_WAV,
        EXAMPLE_MP3,
        "--checkpoint",
        sed_checkpoint(),
        "--sed",
        sed_dir,
        "--embed",
        embed_dir,
        "--top-k",
        3,
        "--json",
    )
    assert code == 0, err
    frames = 7 * SMALL_FRONTEND["sample_rate"] // SMALL_FRONTEND["hop_size"] + 1
    stems = [EXAMPLE_WAV.stem, f"{EXAMPLE_MP3.stem}_mp3"]  # same stem: the second gets its suffix
    for stem in stems:
        with (sed_dir / f"{stem}.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["time_s", *LABEL_NAMES] and len(rows) == frames + 1
        assert float(rows[-1][0]) == pytest.approx(7.0)
        with np.load(sed_dir / f"{stem}.npz", allow_pickle=False) as archive:
            assert archive["framewise"].shape == (frames, 5) and archive["frame_times"].shape == (frames,)
            assert list(archive["labels"]) == LABEL_NAMES
            np.testing.assert_allclose(archive["clipwise"], archive["framewise"].max(axis=0), atol=1e-6)
        png = (sed_dir / f"{stem}.png").read_bytes()
        assert png[:8] == PNG_MAGIC and len(png) > 20_000
        assert np.load(embed_dir / f"{stem}.npy").shape == (2048,)
    result = json.loads(out)["results"][0]
    assert result["sed"]["png"] == str(sed_dir / f"{stems[0]}.png")
    assert result["embedding"] == str(embed_dir / f"{stems[0]}.npy")


@needs_example_audio
def test_unreadable_file_is_reported_and_the_others_still_run(capsys, tmp_path) -> None:
    bad = tmp_path / "not_audio.wav"
    bad.write_text("this is text, not audio\n", encoding="utf-8")
    missing = tmp_path / "missing.flac"
    code, out, err = run_tag(
        capsys, bad, EXAMPLE_WAV, missing, "--checkpoint", cnn6_checkpoint(), "--embed", tmp_path / "e"
    )
    assert code == 1
    error_lines = err.strip().splitlines()
    assert any(line.startswith(f"panns-tag: {bad}: cannot decode") for line in error_lines), err
    assert f"panns-tag: {missing}: file not found" in error_lines
    assert str(EXAMPLE_WAV) in out and str(bad) not in out
    assert np.load(tmp_path / "e" / f"{EXAMPLE_WAV.stem}.npy").shape == (512,)


def test_sed_with_a_clip_level_model_is_a_usage_error(capsys, tmp_path) -> None:
    code, _, err = run_tag(capsys, tmp_path / "x.wav", "--checkpoint", cnn6_checkpoint(), "--sed", tmp_path / "sed")
    assert code == 2 and "Cnn14_DecisionLevelMax" in err and "Cnn6" in err
    assert not (tmp_path / "sed").exists()


def test_missing_checkpoint_is_one_clear_line(capsys, tmp_path) -> None:
    code, _, err = run_tag(capsys, tmp_path / "x.wav", "--checkpoint", tmp_path / "nope.ckpt")
    assert (
        code == 1
        and err.strip()
        == f"panns-tag: cannot load checkpoint {tmp_path / 'nope.ckpt'}: checkpoint not found: {tmp_path / 'nope.ckpt'}"
    )


@pytest.mark.slow
def test_module_entry_point_shows_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "panns_lightning.cli.tag", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--checkpoint" in result.stdout and "--sed" in result.stdout

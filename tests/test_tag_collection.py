"""panns-tag over collections (issue 21): batching across files, workers, backends, --out/--resume, bad files.

A 5-class Cnn6 at 8 kHz with 1 s windows, files of 0.7-3.3 s at 8 and 16 kHz, so files have
several windows, tails of different lengths, and resampling runs in the workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.cli import tag
from panns_lightning.inference import AudioTagger
from panns_lightning.tagging import backends
from panns_lightning.tagging.batcher import WindowBatcher
from panns_lightning.tagging.prefetch import Prefetcher
from panns_lightning.tagging.prefetch import decode as real_decode
from panns_lightning.tagging.sources import collect_inputs
from panns_lightning.tagging.writers import EmbeddingWriter
from test_inference_support import cnn6_checkpoint

pytestmark = pytest.mark.usefixtures("two_torch_threads")

DURATIONS = [(2.5, 8000), (1.2, 16000), (3.3, 8000), (0.7, 8000), (2.0, 16000), (1.0, 8000)]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for index, (seconds, rate) in enumerate(DURATIONS):
        t = np.arange(int(seconds * rate)) / rate
        audio = 0.3 * np.sin(2 * np.pi * (300 + 150 * index) * t) + 0.05 * rng.standard_normal(t.shape)
        path = folder / f"sub{index % 2}" / f"clip_{index}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, audio.astype(np.float32), rate)
        paths.append(path)
    (folder / "notes.txt").write_text("not audio")
    return paths


@pytest.fixture(scope="module")
def tagger() -> AudioTagger:
    return AudioTagger(cnn6_checkpoint(), window_seconds=1.0, batch_size=1)


def one_by_one(tagger: AudioTagger, paths: list[Path]) -> list:
    return [tagger.infer(tagger.load_audio(path), tagger.sample_rate) for path in paths]


@pytest.fixture(scope="module")
def expected(tagger: AudioTagger, clips: list[Path]) -> list:
    """Each file alone through AudioTagger.infer at batch 1: what every other path must give."""
    return one_by_one(tagger, clips)


def batched(tagger: AudioTagger, paths: list[Path], batch_size: int, workers: int) -> list:
    prefetcher = Prefetcher(paths, tagger.sample_rate, workers=workers, ahead=3)
    return list(WindowBatcher(tagger, batch_size, max_pending=3).run(prefetcher))


def assert_same_outputs(expected: list, results: list, paths: list[Path]) -> None:
    assert [result.path for result in results] == paths  # input order
    for reference, result in zip(expected, results):
        assert result.error is None
        np.testing.assert_allclose(result.output.clipwise, reference.clipwise, atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(result.output.embedding, reference.embedding, atol=TOLERANCE, rtol=0)
        np.testing.assert_array_equal(result.output.window_starts, reference.window_starts)


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 0), (3, 0), (8, 2), (16, 1)])
def test_batch_sizes_and_worker_counts_give_the_one_file_results_in_input_order(
    tagger: AudioTagger, clips: list[Path], expected: list, batch_size: int, workers: int
) -> None:
    assert_same_outputs(expected, batched(tagger, clips, batch_size, workers), clips)


def test_onnxruntime_gives_the_torch_results(clips: list[Path], expected: list, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    fast = backends.open_tagger(
        cnn6_checkpoint(), backend="onnxruntime", window_seconds=1.0, batch_size=4, onnx_cache=tmp_path
    )
    exported = sorted(path.name for path in tmp_path.glob("*.onnx"))
    assert fast.loaded.kind == "onnx" and len(exported) == 2 and ".opt-" in exported[1]  # the export, optimised
    assert_same_outputs(expected, batched(fast, clips, 4, 1), clips)
    again = backends.open_tagger(cnn6_checkpoint(), backend="auto", window_seconds=1.0, onnx_cache=tmp_path)
    assert again.loaded.kind == "onnx"  # auto takes the cached export, even for one file


def test_auto_runs_torch_for_a_few_files_without_a_cached_export(tmp_path: Path) -> None:
    tagger = backends.open_tagger(cnn6_checkpoint(), backend="auto", onnx_cache=tmp_path, files=3)
    assert tagger.loaded.kind == "lightning" and not list(tmp_path.glob("*.onnx"))


def test_onnxruntime_missing_is_a_usage_error_naming_the_extra(monkeypatch, capsys, clips: list[Path]) -> None:
    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    code = tag.main([str(clips[0]), "--checkpoint", str(cnn6_checkpoint()), "--backend", "onnxruntime"])
    assert code == tag.EXIT_USAGE
    assert "panns-lightning[fast]" in capsys.readouterr().err


def test_a_folder_is_walked_recursively_by_extension(clips: list[Path]) -> None:
    root = clips[0].parent.parent
    found = collect_inputs([root])
    assert sorted(found) == sorted(clips) and found == sorted(found)
    assert collect_inputs([clips[1], root])[0] == clips[1] and len(collect_inputs([clips[1], root])) == len(clips)


def run_tag(capsys, *args: object) -> tuple[int, str, str]:
    code = tag.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_skips_exactly_the_finished_files(capsys, clips: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    common = ["--checkpoint", cnn6_checkpoint(), "--window-seconds", 1, "--backend", "torch", "--workers", 0]
    code, _, err = run_tag(capsys, *clips, *common, "--out", out)
    assert code == 0, err
    full = records(out)
    assert [record["file"] for record in full] == [str(path) for path in clips]
    # An interrupted run: three whole lines and a torn fourth.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:20])
    code, _, err = run_tag(capsys, *clips, *common, "--out", out, "--resume")
    assert code == 0, err
    assert "3 files already" in err
    resumed = records(out)
    assert [record["file"] for record in resumed] == [str(path) for path in clips]  # each once, in order
    assert resumed[:3] == full[:3]
    for again, first in zip(resumed[3:], full[3:]):
        assert [t["index"] for t in again["top"]] == [t["index"] for t in first["top"]]


def test_a_bad_file_costs_only_itself(capsys, clips: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 4)
    inputs = [*clips[:3], bad, *clips[3:]]
    out = tmp_path / "tags.csv"
    embed = tmp_path / "embeddings.npz"
    common = ["--checkpoint", cnn6_checkpoint(), "--window-seconds", 1, "--backend", "torch", "--top-k", 2]
    code, _, err = run_tag(capsys, *inputs, *common, "--out", out, "--embed", embed, "--batch-size", 4)
    assert code == tag.EXIT_FAILED
    assert f"{bad}:" in err
    rows = out.read_text().splitlines()
    assert rows[0] == "file,duration_s,windows,error,label_1,probability_1,label_2,probability_2"
    assert [row.split(",")[0] for row in rows[1:]] == [str(path) for path in inputs]
    assert rows[4].split(",")[3] != "" and all(row.split(",")[3] == "" for i, row in enumerate(rows[1:]) if i != 3)
    with np.load(embed) as archive:
        assert sorted(archive.files) == sorted(str(path) for path in clips)
        with_bad = {name: archive[name] for name in archive.files}
    code, _, err = run_tag(capsys, *clips, *common, "--embed", tmp_path / "clean.npz", "--workers", 0)
    assert code == 0, err
    with np.load(tmp_path / "clean.npz") as archive:
        for name in archive.files:
            np.testing.assert_allclose(archive[name], with_bad[name], atol=TOLERANCE, rtol=0)


def test_embeddings_refuse_a_bare_npy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.npz or a folder"):
        EmbeddingWriter(tmp_path / "e.npy", resume=False)


def test_collection_options_are_refused_with_stream(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tag.main(["--stream", "-", "--checkpoint", str(cnn6_checkpoint()), "--out", "x.jsonl"])
    assert exit_info.value.code == tag.EXIT_USAGE
    assert "--out does not apply to --stream" in capsys.readouterr().err


def decode_or_die(index: int, path: Path, sample_rate: int):
    """Stands in for a decoder that crashes the process (a native decoder's segfault, the OOM killer)."""
    import os

    if path.stem.endswith("_dies"):
        os._exit(3)
    return real_decode(index, path, sample_rate)


def test_a_decoder_process_that_dies_costs_only_its_file(monkeypatch, clips: list[Path], tmp_path: Path) -> None:
    from panns_lightning.tagging import prefetch

    dying = tmp_path / "clip_dies.wav"
    dying.write_bytes(clips[0].read_bytes())
    monkeypatch.setattr(prefetch, "decode", decode_or_die)
    paths = [clips[0], dying, clips[1], clips[2]]
    decoded = list(prefetch.Prefetcher(paths, 8000, workers=1, ahead=2))
    assert [clip.path for clip in decoded] == paths
    assert decoded[1].waveform is None and "died" in decoded[1].error
    assert all(clip.waveform is not None for i, clip in enumerate(decoded) if i != 1)

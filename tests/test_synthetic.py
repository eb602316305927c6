"""The synthetic AudioSet look-alike: AudioSet's layout, long tail, balanced eval, end-to-end conversion."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.datasets.audioset import parse_segments_csv, read_audioset
from panns_lightning.datasets.synthetic import event_catalog, generate_synthetic_audioset
from panns_lightning.labels import read_label_csv
from panns_lightning.shardset import read_manifest
from panns_lightning.shardset.writer import write_shards


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_audioset(
        root, num_classes=8, num_train=160, num_eval=80, clip_seconds=0.5, seed=5, progress=False
    )


def test_layout_and_header_follow_audioset(small_set) -> None:
    root = small_set.root
    assert sorted(p.name for p in root.iterdir()) == [
        "audio",
        "balanced_train_segments.csv",
        "class_labels_indices.csv",
        "eval_segments.csv",
    ]
    lines = (root / "eval_segments.csv").read_text().splitlines()
    assert lines[0].startswith("# Segments csv created ")
    assert lines[1].startswith("# num_ytids=80, num_segs=80, num_unique_labels=8, num_positive_labels=")
    assert lines[2] == "# YTID, start_seconds, end_seconds, positive_labels"
    ytid, start, end, mids = lines[3].split(", ", 3)
    assert len(ytid) == 11 and start.endswith(".000") and float(end) - float(start) == 0.5
    assert mids.startswith('"/synth/') and mids.endswith('"')
    labels = read_label_csv(small_set.labels_csv)
    assert len(labels) == 8 and labels.names[0] == "Tone, 500 Hz"


def test_every_row_parses_and_finds_its_audio(small_set) -> None:
    labels = read_label_csv(small_set.labels_csv)
    for split, count in (("balanced_train", 160), ("eval", 80)):
        rows, problems = parse_segments_csv(small_set.segments[split])
        assert problems == [] and len(rows) == count
        result = read_audioset(small_set.segments[split], small_set.audio_dir, labels)
        assert result.skipped == [] and result.warnings == [] and len(result.records) == count
        counts = Counter(c for r in result.records for c in r.labels)
        assert [counts[c] for c in range(8)] == small_set.class_counts[split]


def test_files_mix_rates_channels_formats_and_names(small_set) -> None:
    files = sorted(small_set.audio_dir.rglob("*.*"))
    infos = [sf.info(str(f)) for f in files]
    assert {i.samplerate for i in infos} == {16000, 22050, 44100}
    assert {i.channels for i in infos} == {1, 2}
    assert {f.suffix for f in files} == {".wav", ".flac", ".ogg"}
    assert any(f.name.startswith("Y") and f.suffix == ".wav" for f in files)
    assert any(f.suffix == ".flac" and f.stem.endswith(".500") for f in files)  # {ytid}_{start}_{end} with CSV spelling
    assert all(abs(i.duration - 0.5) < 0.01 for i in infos)


def test_default_sizes_give_a_long_tail_and_a_balanced_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the plan matters here: skip writing audio so the test stays fast.
    monkeypatch.setattr("panns_lightning.datasets.synthetic.sf.write", lambda *args, **kwargs: None)
    monkeypatch.setattr("panns_lightning.datasets.synthetic._render_clip", lambda *args: np.zeros(1, dtype=np.float32))
    dataset = generate_synthetic_audioset(tmp_path / "plan", progress=False)
    train, evaluation = dataset.class_counts["balanced_train"], dataset.class_counts["eval"]
    assert len(train) == 12 and sum(1 for _ in open(dataset.segments["balanced_train"])) == 3 + 2000
    assert max(train) >= 20 * min(train)
    assert train[0] == max(train)  # class 0 is the head
    assert min(evaluation) >= 15 and max(evaluation) <= 2 * min(evaluation)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    options = dict(num_classes=4, num_train=12, num_eval=8, clip_seconds=0.25, progress=False)
    first = generate_synthetic_audioset(tmp_path / "a", seed=1, **options)
    again = generate_synthetic_audioset(tmp_path / "b", seed=1, **options)
    other = generate_synthetic_audioset(tmp_path / "c", seed=2, **options)
    names = sorted(p.relative_to(first.root) for p in first.root.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    for name in names:
        if name.suffix == ".ogg":  # libsndfile gives each Ogg stream a random serial number: compare samples
            np.testing.assert_array_equal(sf.read(first.root / name)[0], sf.read(again.root / name)[0])
        else:
            assert (first.root / name).read_bytes() == (again.root / name).read_bytes(), name
    assert first.segments["eval"].read_text() != other.segments["eval"].read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_synthetic_audioset(tmp_path / "a", seed=1, **options)
    with pytest.raises(ValueError, match="num_classes"):
        generate_synthetic_audioset(tmp_path / "d", num_classes=len(event_catalog()) + 1, progress=False)


def test_classes_differ_on_a_log_spectrogram() -> None:
    """Every pair of classes looks different in time × frequency at 16 kHz: a CNN has something to learn."""
    rng = np.random.default_rng(0)
    band_edges = np.geomspace(2, 257, 33).astype(int)[:-1]
    images = []
    for event in event_catalog():
        x = event.render(rng, 16000, 16000)
        assert np.isfinite(x).all() and abs(np.sqrt(np.mean(x**2)) - 1) < 1e-6
        frames = x[: 16000 // 256 * 256].reshape(-1, 256)
        power = np.abs(np.fft.rfft(frames * np.hanning(256), n=512, axis=1)) ** 2
        image = np.log(np.add.reduceat(power, band_edges, axis=1) + 1e-6).ravel()
        images.append((image - image.mean()) / image.std())
    correlation = np.corrcoef(images)
    np.fill_diagonal(correlation, -1)
    first, second = np.unravel_index(correlation.argmax(), correlation.shape)
    assert correlation.max() < 0.95, (event_catalog()[first].name, event_catalog()[second].name)


@pytest.mark.slow
def test_synthetic_converts_end_to_end(small_set, tmp_path: Path) -> None:
    labels = read_label_csv(small_set.labels_csv)
    result = read_audioset(small_set.segments["eval"], small_set.audio_dir, labels)
    manifest = write_shards(
        result.records,
        tmp_path / "eval",
        sample_rate=16000,
        clip_samples=8000,
        labels=labels.to_manifest(),
        dataset="audioset",
        split="eval",
        clips_per_shard=20,
        num_workers=2,
        progress=False,
    )
    assert manifest.num_clips == 80 and manifest.num_skipped == 0 and len(manifest.shards) == 4
    assert manifest.class_counts == small_set.class_counts["eval"]
    assert read_manifest(tmp_path / "eval").num_classes == 8

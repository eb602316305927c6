"""``panns-prepare audioset-hdf5`` / ``audioset-mp3-hdf5``: AudioSet as upstream PANNs and PaSST pack it.

The files are built here with h5py in the packers' layouts (datasets, dtypes, shapes; see
``datasets/audioset_hdf5.py``): upstream's packed waveforms (int16 ``[N, 320000]`` at 32 kHz),
its index files pointing into several packed files, and PaSST / EfficientAT's mp3 bytes with
``np.packbits`` targets.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.cli import prepare
from panns_lightning.data.datamodule import AudioShardDataModule
from panns_lightning.datasets.audioset_hdf5 import clip_key, split_name
from panns_lightning.shardset import read_manifest

h5py = pytest.importorskip("h5py")

NUM_CLASSES = 527  # the target width of every AudioSet packing
RATE = 32000
CLIP = 320000  # upstream's rows: 10 s at 32 kHz


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 527-row class_labels_indices.csv (names with commas and quotes, as the real one has)."""
    path = tmp_path_factory.mktemp("labels") / "class_labels_indices.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["index", "mid", "display_name"])
        for index in range(NUM_CLASSES):
            writer.writerow(
                [index, f"/m/c{index:03d}", f'Class {index}, "quoted"' if index % 50 == 0 else f"Class {index}"]
            )
    return path


def ytid(index: int) -> str:
    return f"-{index:02d}abcDEF_x"[:11]  # 11 characters, starting with '-' as many real YTIDs do


def packed_rows(count: int, seed: int, first: int = 0) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Names ``b"Y{ytid}.wav"``, int16 waveforms (noise + a tone per clip), bool targets (2 classes each)."""
    rng = np.random.default_rng(seed)
    names = [f"Y{ytid(first + i)}.wav".encode() for i in range(count)]
    t = np.arange(CLIP) / RATE
    waveforms = np.stack(
        [
            0.2 * np.sin(2 * np.pi * (200 + 50 * (first + i)) * t) + 0.05 * rng.standard_normal(CLIP)
            for i in range(count)
        ]
    )
    waveforms = (np.clip(waveforms, -1, 1) * 32767).astype(np.int16)
    targets = np.zeros((count, NUM_CLASSES), dtype=bool)
    for i in range(count):
        targets[i, [(first + i) // 2 * 7, 526]] = True  # classes of 2 clips and one of all: --val-fraction can hold out
    return names, waveforms, targets


def write_packed(path: Path, names: list[bytes], waveforms: np.ndarray, targets: np.ndarray) -> Path:
    """Upstream's ``pack_waveforms_to_hdf5`` layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array(names, dtype="S20"))
        f.create_dataset("waveform", data=waveforms, dtype=np.int16)
        f.create_dataset("target", data=targets, dtype=bool)
        f.attrs.create("sample_rate", data=RATE, dtype=np.int32)
    return path


def stored_clips(shard_dir: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """Every clip of a shard set: key → (int16 samples, json member)."""
    clips: dict[str, tuple[np.ndarray, dict]] = {}
    for shard in sorted(shard_dir.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, payload in members.items():
            if name.endswith(".npy"):
                key = name[: -len(".npy")]
                clips[key] = (np.load(io.BytesIO(payload)), json.loads(members[key + ".json"]))
    return clips


def run(*args: object) -> int:
    return prepare.main([str(a) for a in args])


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, labels_csv: Path) -> dict:
    """8 rows in upstream's layout: row 2 was never downloaded (empty name), row 5 lost its labels."""
    root = tmp_path_factory.mktemp("packed")
    names, waveforms, targets = packed_rows(8, seed=0)
    names[2], waveforms[2], targets[2] = b"", 0, False
    targets[5] = False
    path = write_packed(root / "balanced_train.h5", names, waveforms, targets)
    out = root / "shards"
    assert run("audioset-hdf5", "--hdf5", path, "--labels", labels_csv, "--out", out, "--workers", 2, "--quiet") == 0
    return {"path": path, "names": names, "waveforms": waveforms, "targets": targets, "out": out}


def test_packed_rows_are_stored_bit_exact_with_their_labels(packed: dict, labels_csv: Path) -> None:
    manifest = read_manifest(packed["out"])
    assert (manifest.dataset, manifest.split, manifest.sample_rate, manifest.clip_samples) == (
        "audioset",
        "balanced_train",
        RATE,
        CLIP,
    )
    assert manifest.storage == "int16" and manifest.multilabel
    with labels_csv.open(newline="") as handle:
        expected_names = [row["display_name"] for row in csv.DictReader(handle)]
    assert manifest.label_names == expected_names
    clips = stored_clips(packed["out"])
    kept = [i for i in range(8) if i not in (2, 5)]
    assert sorted(clips) == sorted(ytid(i) for i in kept) == sorted(clip_key(packed["names"][i].decode()) for i in kept)
    for i in kept:
        samples, info = clips[ytid(i)]
        assert samples.dtype == np.int16
        np.testing.assert_array_equal(samples, packed["waveforms"][i])  # bit for bit: nothing re-encoded
        assert info["labels"] == np.flatnonzero(packed["targets"][i]).tolist()
        assert info["source"] == f"balanced_train.h5:{i}" and info["audio_name"] == f"Y{ytid(i)}.wav"
    assert manifest.class_counts == packed["targets"][kept].sum(axis=0).tolist()
    reasons = {entry.source: entry.reason for entry in manifest.skipped}
    assert set(reasons) == {"balanced_train.h5:2", "balanced_train.h5:5"}
    assert "empty audio_name" in reasons["balanced_train.h5:2"] and "all-zero target" in reasons["balanced_train.h5:5"]


def test_a_training_stream_reads_the_import(packed: dict) -> None:
    datamodule = AudioShardDataModule(
        str(packed["out"]), None, batch_size=3, num_workers=0, steps_per_epoch=2, shuffle_buffer=4, balanced=False
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["waveform"].shape == (3, CLIP) and batch["target"].shape == (3, NUM_CLASSES)
    row_of = {ytid(i): i for i in range(8)}
    for key, waveform, target in zip(batch["key"], batch["waveform"], batch["target"]):
        row = row_of[key]
        np.testing.assert_allclose(waveform.numpy(), packed["waveforms"][row] / 32767, atol=1e-6)
        np.testing.assert_array_equal(target.numpy().astype(bool), packed["targets"][row])


def test_an_index_file_points_into_two_packed_files(tmp_path: Path, labels_csv: Path) -> None:
    # upstream's workspace: hdf5s/waveforms/... and hdf5s/indexes/full_train.h5, whose hdf5_path
    # entries are the paths given to the packing script (relative to where it ran, here gone).
    hdf5s = tmp_path / "hdf5s"
    parts = [packed_rows(3, seed=1, first=0), packed_rows(3, seed=2, first=3)]
    written = ["./workspaces/audioset_tagging/hdf5s/waveforms/unbalanced_train/unbalanced_train_part00.h5"]
    written.append(written[0].replace("part00", "part01"))
    for (names, waveforms, targets), text in zip(parts, written):
        write_packed(hdf5s / text.split("hdf5s/")[1], names, waveforms, targets)
    rows = [(0, 0), (0, 2), (1, 1), (1, 2), (1, 0)]  # (part, index_in_hdf5)
    names = [parts[p][0][i] for p, i in rows]
    targets = np.stack([parts[p][2][i] for p, i in rows])
    paths = [written[p].encode() for p, _ in rows]
    indices = [i for _, i in rows]
    # bad rows: a packed file that is not there, a row past the end, a name the packed row does not hold
    names += [b"Y" + ytid(40).encode() + b".wav", parts[0][0][1], b"Y" + ytid(41).encode() + b".wav"]
    targets = np.concatenate([targets, np.ones((3, NUM_CLASSES), dtype=bool)])
    paths += [b"./elsewhere/waveforms/eval.h5", written[0].encode(), written[0].encode()]
    indices += [0, 3, 1]
    index = hdf5s / "indexes" / "full_train.h5"
    index.parent.mkdir(parents=True)
    with h5py.File(index, "w") as f:  # upstream's create_indexes / combine_full_indexes layout
        f.create_dataset("audio_name", data=np.array(names, dtype="S20"))
        f.create_dataset("target", data=targets, dtype=bool)
        f.create_dataset("hdf5_path", data=np.array(paths, dtype="S200"))
        f.create_dataset("index_in_hdf5", data=np.array(indices, dtype=np.int32))
    out = tmp_path / "shards"
    assert run("audioset-hdf5", "--hdf5", index, "--labels", labels_csv, "--out", out, "--workers", 0, "--quiet") == 0

    manifest = read_manifest(out)
    assert manifest.split == "full_train" and manifest.num_clips == 5
    clips = stored_clips(out)
    for part, row in rows:
        samples, info = clips[ytid(part * 3 + row)]
        np.testing.assert_array_equal(samples, parts[part][1][row])
        assert info["labels"] == np.flatnonzero(parts[part][2][row]).tolist()
        assert info["source"] == f"unbalanced_train_part{part:02d}.h5:{row}"
    reasons = {entry.source: entry.reason for entry in manifest.skipped}
    assert set(reasons) == {"full_train.h5:5", "full_train.h5:6", "full_train.h5:7"}
    assert reasons["full_train.h5:5"].startswith("packed file not found: ./elsewhere/waveforms/eval.h5")
    assert "index_in_hdf5 3 outside the 3 rows" in reasons["full_train.h5:6"]
    assert "audio_name differs" in reasons["full_train.h5:7"]


def test_val_fraction_and_decimation_work_as_in_panns_prepare_audioset(
    packed: dict, tmp_path: Path, labels_csv: Path
) -> None:
    out = tmp_path / "train16k"
    code = run(
        "audioset-hdf5",
        "--hdf5",
        packed["path"],
        "--labels",
        labels_csv,
        "--out",
        out,
        "--sample-rate",
        16000,
        "--resample",
        "decimate",
        "--val-fraction",
        0.3,
        "--workers",
        0,
        "--quiet",
    )
    assert code == 0
    train, val = read_manifest(out), read_manifest(tmp_path / "train16k_val")
    assert train.extra["holdout"]["role"] == "train" and val.extra["holdout"]["role"] == "val"
    assert val.split == "balanced_train_val" and train.extra["resample"] == "decimate"
    assert train.num_clips + val.num_clips == 6 and val.num_clips >= 1
    clips = {**stored_clips(out), **stored_clips(tmp_path / "train16k_val")}
    assert len(clips) == 6  # no clip in both sets
    for key, (samples, _) in clips.items():
        row = int(key[1:3])
        np.testing.assert_array_equal(samples, packed["waveforms"][row][::2])  # upstream's 16 kHz data exactly
    assert {entry.source for entry in train.skipped} == {"balanced_train.h5:2", "balanced_train.h5:5"}


# --------------------------------------------------------------------------- PaSST / EfficientAT mp3


def write_mp3_hdf5(path: Path, count: int, *, packed_bits: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """PaSST's ``create_h5pymp3_dataset`` layout; row 2 holds a cut-off mp3, row 4 bytes that are not audio."""
    rng = np.random.default_rng(3)
    rate, seconds = 32000, 1.0
    t = np.arange(int(rate * seconds)) / rate
    sources, encoded = [], []
    for i in range(count):
        x = (0.3 * np.sin(2 * np.pi * (300 + 150 * i) * t) + 0.03 * rng.standard_normal(t.size)).astype(np.float32)
        buffer = io.BytesIO()
        sf.write(buffer, x, rate, format="MP3")
        sources.append(x)
        encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    encoded[2] = encoded[2][:150].copy()
    encoded[4] = np.frombuffer(b"not an mp3 " * 40, dtype=np.uint8)
    targets = np.zeros((count, NUM_CLASSES), dtype=bool)
    for i in range(count):
        targets[i, [i, 300]] = True
    prefix = ["", "03/"]  # unbalanced parts carry their folder: b"03/Y{ytid}.mp3"
    names = np.array([f"{prefix[i % 2]}Y{ytid(i)}.mp3".encode() for i in range(count)], dtype="S20")
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=names)
        mp3 = f.create_dataset("mp3", shape=(count,), dtype=h5py.vlen_dtype(np.dtype("uint8")))
        for i, data in enumerate(encoded):
            mp3[i] = data
        if packed_bits:
            f.create_dataset("target", data=np.packbits(targets, axis=-1))
        else:
            f.create_dataset("target", data=targets.astype(np.float32))
    return sources, targets


@pytest.mark.parametrize("packed_bits", [True, False], ids=["packbits", "float32"])
def test_mp3_hdf5_is_decoded_once_and_corrupt_rows_are_skipped(
    tmp_path: Path, labels_csv: Path, packed_bits: bool
) -> None:
    path = tmp_path / "balanced_train_segments_mp3.hdf"
    sources, targets = write_mp3_hdf5(path, 6, packed_bits=packed_bits)
    out = tmp_path / "shards"
    args = ["--labels", labels_csv, "--out", out, "--clip-seconds", 1, "--workers", 0, "--quiet"]
    assert run("audioset-mp3-hdf5", "--hdf5", path, *args) == 0
    manifest = read_manifest(out)
    assert manifest.split == "balanced_train" and manifest.num_clips == 4
    clips = stored_clips(out)
    for i in (0, 1, 3, 5):
        samples, info = clips[ytid(i)]
        assert info["labels"] == np.flatnonzero(targets[i]).tolist()
        correlation = np.corrcoef(samples / 32767, sources[i])[0, 1]
        assert correlation > 0.95, (i, correlation)
    assert {entry.source for entry in manifest.skipped} == {f"{path.name}:2", f"{path.name}:4"}
    assert all(entry.reason.startswith("cannot decode") for entry in manifest.skipped)


# --------------------------------------------------------------------------- usage errors


def test_wrong_layouts_and_widths_are_usage_errors(
    packed: dict, tmp_path: Path, labels_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    common = ["--labels", labels_csv, "--out", tmp_path / "out", "--quiet"]
    assert run("audioset-mp3-hdf5", "--hdf5", packed["path"], *common) == 2
    assert "use panns-prepare audioset-hdf5" in capsys.readouterr().err
    narrow = tmp_path / "narrow.h5"
    names, waveforms, targets = packed_rows(2, seed=0)
    write_packed(narrow, names, waveforms[:, :100], targets[:, :400])
    assert run("audioset-hdf5", "--hdf5", narrow, *common) == 2
    err = capsys.readouterr().err
    assert "narrow.h5: dataset 'target' has 400 columns, but the label CSV has 527 classes" in err
    assert run("audioset-hdf5", "--hdf5", tmp_path / "missing.h5", *common) == 2
    assert "--hdf5" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_without_h5py_the_error_says_how_to_install_it(
    packed: dict, tmp_path: Path, labels_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    assert run("audioset-hdf5", "--hdf5", packed["path"], "--labels", labels_csv, "--out", tmp_path / "o") == 2
    assert "pip install 'panns-lightning[hdf5]'" in capsys.readouterr().err


def test_keys_and_split_names() -> None:
    assert clip_key("Y--PJHxphWEs.wav") == "--PJHxphWEs"
    assert clip_key("03/Y--PJHxphWEs.mp3") == "--PJHxphWEs"
    # a name that is not Y + YTID is its own key, whole: a.wav and a.flac stay two clips
    assert clip_key("Yshort.wav") == "Yshort.wav" and clip_key("dir/my_clip.flac") == "dir/my_clip.flac"
    assert split_name(["x/balanced_train.h5"]) == "balanced_train"
    assert split_name(["balanced_train_segments_mp3.hdf"]) == "balanced_train"
    assert split_name([f"unbalanced_train_part{i:02d}.h5" for i in range(41)]) == "unbalanced_train"

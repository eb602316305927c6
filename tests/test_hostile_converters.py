"""Converters on hostile rows (issue 19 cases 8 and 9, issue 20 item 9): nothing silent, no good clip lost.

- Silent wrong results become errors or reported skips: HDF5 rows of 0 samples, integer HDF5
  targets of -1 or 2, a CSV header naming a column twice, a CSV segment of 10 µs.
- Raw tracebacks become one line or a per-row skip: HDF5 ``sample_rate`` attributes that are
  huge, empty or text, a ``waveform`` that is a group, a CSV cell over 128 KiB.
- Good clips are kept: HDF5 rows named ``.`` and ``.wav``, a CSV ``end`` of 1e306, folder files
  ``a.b.wav`` / ``a_b.wav`` / ``a/b.wav`` and ``dogs/a.wav`` / ``dogs/a.flac``; ``--val-out``
  inside ``--out`` is refused before any work; a key collision is an error naming both files.
- A bad row costs one row in every converter, whatever goes wrong in it (mixed sets below).

Everything is tiny (1 s clips at 8 kHz) and converted in-process (``--workers 0``) unless the
worker pool itself is under test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.cli import prepare
from panns_lightning.datasets.audioset import read_audioset
from panns_lightning.datasets.esc50 import read_esc50
from panns_lightning.labels import read_label_csv
from panns_lightning.shardset import ClipRecord, read_manifest, shard_key
from panns_lightning.shardset.format import clip_id
from panns_lightning.shardset.writer import DuplicateKeyError, write_shards

h5py = pytest.importorskip("h5py")

RATE = 8000
CLASSES = ("/m/a", "/m/b", "/m/c")


def tone(seed: int = 0, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * (200 + 40 * seed) * t)).astype(np.float32)


def run(*args: object) -> int:
    common = ["--sample-rate", RATE, "--clip-seconds", 1, "--workers", 0, "--quiet"]
    return prepare.main([str(a) for a in (*args, *common)])


def members(out: Path) -> set[str]:
    """Member stems (keys) of every shard of a set."""
    keys: set[str] = set()
    for shard in out.glob("shard-*.tar"):
        with tarfile.open(shard) as tar:
            keys |= {name.rsplit(".", 1)[0] for name in tar.getnames() if name.endswith(".npy")}
    return keys


def labels_csv(folder: Path) -> Path:
    path = folder / "labels.csv"
    rows = [["index", "mid", "display_name"], *([i, mid, f"class {i}"] for i, mid in enumerate(CLASSES))]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def packed_h5(path: Path, names: list[str], targets: np.ndarray, *, width: int = RATE, rate: object = RATE) -> Path:
    """Upstream's packed layout at 8 kHz: ``audio_name``, int16 ``waveform``, ``target``, attribute ``sample_rate``."""
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array([n.encode() for n in names], dtype="S20"))
        waves = np.stack([tone(i)[:width] for i in range(len(names))]) if width else np.zeros((len(names), 0))
        f.create_dataset("waveform", data=(waves * 32767).astype(np.int16))
        f.create_dataset("target", data=targets)
        if rate is not None:
            f.attrs["sample_rate"] = rate
    return path


def hot(rows: int, dtype: object = bool) -> np.ndarray:
    target = np.zeros((rows, len(CLASSES)), dtype=dtype)
    target[:, 0] = 1
    return target


def convert_hdf5(tmp_path: Path, *files: Path, out: str = "out") -> int:
    return run("audioset-hdf5", "--hdf5", *files, "--labels", labels_csv(tmp_path), "--out", tmp_path / out)


# ---- case 8: silent wrong results ------------------------------------------------------------


def test_hdf5_rows_of_zero_samples_are_reported_not_padded(tmp_path: Path) -> None:
    good = packed_h5(tmp_path / "good.h5", ["Yaaaaaaaaaaa.wav", "Ybbbbbbbbbbb.wav"], hot(2))
    empty = packed_h5(tmp_path / "empty.h5", ["Ycccccccccccc.wav", "Ydddddddddd.wav"], hot(2), width=0)
    assert convert_hdf5(tmp_path, good, empty) == 0
    manifest = read_manifest(tmp_path / "out")
    assert manifest.num_clips == 2 and members(tmp_path / "out") == {"aaaaaaaaaaa", "bbbbbbbbbbb"}
    reasons = {entry.source: entry.reason for entry in manifest.skipped}
    assert set(reasons) == {"empty.h5:0", "empty.h5:1"}
    assert all("waveform rows hold 0 samples" in reason for reason in reasons.values())


def test_hdf5_integer_targets_other_than_0_and_1_are_skipped_with_their_value(tmp_path: Path) -> None:
    target = hot(4, dtype=np.int8)
    target[1, 2], target[2, 1] = -1, 2
    path = packed_h5(tmp_path / "t.h5", [f"Y{c * 11}.wav" for c in "abcd"], target)
    assert convert_hdf5(tmp_path, path) == 0
    manifest = read_manifest(tmp_path / "out")
    assert members(tmp_path / "out") == {"a" * 11, "d" * 11}
    assert {(s.key, s.reason) for s in manifest.skipped} == {
        ("b" * 11, "target row holds -1 at column 2; expected multi-hot flags (0 or 1)"),
        ("c" * 11, "target row holds 2 at column 1; expected multi-hot flags (0 or 1)"),
    }


def write_csv(folder: Path, text: str, clips: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        sf.write(folder / f"c{i}.wav", tone(i), RATE)
    (folder / "list.csv").write_text(text)
    return folder / "list.csv"


def test_csv_header_naming_a_column_twice_is_an_error_naming_it(tmp_path: Path, capsys) -> None:
    path = write_csv(tmp_path / "d", "file,label,label\nc0.wav,dog,cat\nc1.wav,dog,cat\n")
    assert run("csv", "--csv", path, "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("the header names column 'label' more than once (columns 2, 3); rename or drop the extra one")
    assert len(error.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_csv_segment_of_ten_microseconds_is_skipped_not_padded(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d", "file,label,start,end\nc0.wav,dog,0,0.00001\nc1.wav,dog,,\nc2.wav,cat,0.2,0.9\n")
    assert run("csv", "--csv", path, "--out", tmp_path / "out", "--num-folds", 2) == 0
    manifest = read_manifest(tmp_path / "out")
    assert {clip_id(key) for key in members(tmp_path / "out")} == {"c1.wav", "c2.wav@0.2-0.9s"}
    (skip,) = manifest.skipped
    assert (skip.key, skip.source) == ("c0.wav@0-1e-05s", "list.csv:2")
    assert skip.reason.startswith("segment of 0.01 ms is shorter than 50 ms (--min-segment-seconds)")


# ---- raw tracebacks become one line or a per-row skip -------------------------------------------


@pytest.mark.parametrize(
    "rate, reason",
    [
        (np.float64(1e30), "attribute sample_rate is 1e+30 Hz, outside the supported 1000..384000 Hz"),
        (np.int64(2**40), "attribute sample_rate is 1099511627776 Hz, outside the supported"),
        (np.array([], dtype=np.int32), "attribute sample_rate must be one number of Hz, found []"),
        ("32000 Hz", "attribute sample_rate must be one number of Hz, found '32000 Hz'"),
    ],
)
def test_hdf5_sample_rate_attributes_that_are_not_rates(tmp_path: Path, capsys, rate: object, reason: str) -> None:
    bad = packed_h5(tmp_path / "bad.h5", ["Yaaaaaaaaaaa.wav"], hot(1), rate=rate)
    good = packed_h5(tmp_path / "good.h5", ["Ybbbbbbbbbbb.wav"], hot(1))
    assert convert_hdf5(tmp_path, bad, good) == 0  # the other file still converts
    (skip,) = read_manifest(tmp_path / "out").skipped
    assert skip.source == "bad.h5:0" and reason in skip.reason
    assert convert_hdf5(tmp_path, bad, out="alone") == 1  # alone: nothing usable, said in a few lines
    err = capsys.readouterr().err
    assert "Traceback" not in err and reason in err and len(err.strip().splitlines()) <= 3


def test_hdf5_waveform_that_is_a_group_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array([b"Yaaaaaaaaaaa.wav"]))
        f.create_dataset("target", data=hot(1))
        f.create_group("waveform")
    assert convert_hdf5(tmp_path, path) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("group.h5: 'waveform' must be dataset(s), found group(s)") and len(err.splitlines()) == 1


def test_csv_cell_over_128_kib_costs_its_row_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d", f'file,label\nc0.wav,dog\n"{"x" * 200_000}",dog\nc1.wav,cat\n')
    assert run("csv", "--csv", path, "--out", tmp_path / "out", "--num-folds", 2) == 0
    manifest = read_manifest(tmp_path / "out")
    assert {clip_id(key) for key in members(tmp_path / "out")} == {"c0.wav", "c1.wav"}
    (skip,) = manifest.skipped
    assert skip.source == "list.csv:3" and skip.reason == "unreadable CSV row: field larger than field limit (131072)"


# ---- case 9: good clips lost ------------------------------------------------------------------


def test_hdf5_rows_named_dot_and_dot_wav_are_clips_of_their_own(tmp_path: Path) -> None:
    path = packed_h5(tmp_path / "names.h5", [".", ".wav", "Yaaaaaaaaaaa.wav", "Yaaaaaaaaaaa.mp3"], hot(4))
    assert convert_hdf5(tmp_path, path) == 0
    manifest = read_manifest(tmp_path / "out")
    assert {clip_id(key) for key in members(tmp_path / "out")} == {".", ".wav", "aaaaaaaaaaa"}
    (duplicate,) = manifest.skipped  # one YTID twice is one clip: reported, the first kept
    assert duplicate.reason == "duplicate of names.h5:2 (the same clip key 'aaaaaaaaaaa')"


def test_csv_end_of_1e306_costs_its_row_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d", "file,label,start,end\nc0.wav,dog,0,1e306\nc1.wav,dog,,\nc2.wav,cat,0,0.5\n")
    assert run("csv", "--csv", path, "--out", tmp_path / "out", "--num-folds", 2) == 0
    manifest = read_manifest(tmp_path / "out")
    assert {clip_id(key) for key in members(tmp_path / "out")} == {"c1.wav", "c2.wav@0-0.5s"}
    (skip,) = manifest.skipped
    assert skip.reason == "end 1e+306 s is beyond any recording (at most 1e+07 s)"


def test_folder_keeps_files_that_differ_only_in_dots_slashes_or_extension(tmp_path: Path) -> None:
    root = tmp_path / "sounds"
    names = ["dogs/a.b.wav", "dogs/a_b.wav", "dogs/a/b.wav", "dogs/a.wav", "dogs/a.flac", "cats/a.wav", "cats/x.wav"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, tone(i), RATE)
    assert run("folder", "--root", root, "--out", tmp_path / "out", "--num-folds", 2) == 0
    assert read_manifest(tmp_path / "out").skipped == []
    assert {clip_id(key) for key in members(tmp_path / "out")} == set(names)


def test_val_out_inside_out_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    path = packed_h5(tmp_path / "p.h5", [f"Y{c * 11}.wav" for c in "abcdef"], hot(6))
    out = tmp_path / "out"
    code = run(
        "audioset-hdf5", "--hdf5", path, "--labels", labels_csv(tmp_path), "--out", out,
        "--val-fraction", 0.3, "--val-out", out / "val",
    )  # fmt: skip
    assert code == 2 and not out.exists()
    assert "are nested: give the two shard sets separate folders" in capsys.readouterr().err


def test_a_key_collision_is_an_error_naming_both_files(tmp_path: Path) -> None:
    sf.write(tmp_path / "x.wav", tone(), RATE)
    records = [ClipRecord("k.wav", tmp_path / "x.wav", (0,), source=f"src{i}/k.wav") for i in (1, 2)]
    labels = [{"index": 0, "mid": "/m/a", "name": "a"}]
    with pytest.raises(DuplicateKeyError, match="two clips have the key 'k.wav': src1/k.wav and src2/k.wav"):
        write_shards(records, tmp_path / "out", sample_rate=RATE, clip_samples=RATE, labels=labels,
                     dataset="d", split="s", num_workers=0, progress=False)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_member_names_are_injective_and_survive_webdatasets_split() -> None:
    from webdataset.tariterators import base_plus_ext

    keys = ["a.b.wav", "a_b.wav", "a/b.wav", "a%2Eb.wav", "ü .wav", "x\udcff", "\u2028", "--PJHxphWEs", "..", "%"]
    stems = [shard_key(key) for key in keys]
    assert len(set(stems)) == len(keys) and shard_key("--PJHxphWEs") == "--PJHxphWEs"
    for key, stem in zip(keys, stems):
        assert base_plus_ext(f"{stem}.npy") == (stem, "npy") and clip_id(stem) == key


# ---- case 4: a bad row costs one row, in every converter ------------------------------------------


def test_mixed_csv_keeps_every_good_clip(tmp_path: Path) -> None:
    """Missing files, a NUL byte and a 5000-character name (the OS refuses both), bad times, junk audio."""
    folder = tmp_path / "d"
    text = "file,label,start,end\n" + "".join(f"c{i}.wav,dog,,\n" for i in range(3))
    text += "gone.wav,dog,,\nbad\x00name.wav,dog,,\n" + "n" * 5000 + ".wav,cat,,\n"
    text += "c0.wav,cat,1e306,\nc1.wav,cat,0,1e-9\njunk.wav,cat,,\n"
    path = write_csv(folder, text)
    (folder / "junk.wav").write_text("not audio")
    assert run("csv", "--csv", path, "--out", tmp_path / "out", "--num-folds", 2) == 0
    manifest = read_manifest(tmp_path / "out")
    assert {clip_id(key) for key in members(tmp_path / "out")} == {"c0.wav", "c1.wav", "c2.wav"}
    reasons = {s.source: s.reason.split(":")[0] for s in manifest.skipped}
    assert reasons == {
        "list.csv:5": "audio file not found",
        "list.csv:6": "unusable file name",
        "list.csv:7": "unusable file name",
        "list.csv:8": "start 1e+306 s is beyond any recording (at most 1e+07 s)",
        "list.csv:9": "segment of 1e-06 ms is shorter than 50 ms (--min-segment-seconds)",
        "junk.wav": "cannot decode",  # the shard writer's skip names the file
    }


def test_mixed_hdf5_index_with_pool_workers_keeps_every_good_clip(tmp_path: Path) -> None:
    """Index rows: past the packed file's end, an hdf5_path the OS refuses, a NaN target, a duplicate."""
    packed_h5(tmp_path / "waves.h5", [f"Y{c * 11}.wav" for c in "abcde"], hot(5))
    names = ["Yccccccccccc.wav", "Yddddddddddd.wav", "Yeeeeeeeeeee.wav", "Yaaaaaaaaaaa.wav", "Yfffffffffff.wav"]
    names += ["Yggggggggggg.wav", "Yccccccccccc.wav"]
    target = hot(7, dtype=np.float32)
    target[5, 1] = np.nan
    index = tmp_path / "index.h5"
    with h5py.File(index, "w") as f:
        f.create_dataset("audio_name", data=np.array([n.encode() for n in names], dtype="S20"))
        f.create_dataset("target", data=target)
        paths = ["waves.h5"] * 4 + ["x" * 5000 + ".h5"] + ["waves.h5"] * 2  # the OS refuses a 5000-byte name
        f.create_dataset("hdf5_path", data=paths, dtype=h5py.string_dtype())
        f.create_dataset("index_in_hdf5", data=np.array([2, 3, 4, 99, 0, 1, 2], dtype=np.int32))
    out = tmp_path / "o"
    args = ["audioset-hdf5", "--hdf5", index, "--labels", labels_csv(tmp_path), "--out", out, "--sample-rate", RATE]
    assert prepare.main([str(a) for a in (*args, "--workers", 2, "--quiet")]) == 0
    assert members(out) == {"c" * 11, "d" * 11, "e" * 11}
    assert {s.source: s.reason.split(":")[0] for s in read_manifest(out).skipped} == {
        "index.h5:3": "index_in_hdf5 99 outside the 5 rows of waves.h5",
        "index.h5:4": "unreadable index row",
        "index.h5:5": "target row holds nan at column 1; expected multi-hot flags (0 or 1)",
        "index.h5:6": "duplicate of index.h5",
    }


def test_mixed_audioset_and_esc50_csvs_keep_every_good_clip(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for ytid in ("aaaaaaaaaaa", "bbbbbbbbbbb"):
        sf.write(audio / f"Y{ytid}.wav", tone(), RATE)
    segments = tmp_path / "segments.csv"
    segments.write_text(
        "# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\n"
        'aaaaaaaaaaa, 0.000, 10.000, "/m/a"\n'
        f'cccccccccc{"x" * 200_000}, 0, 10, "/m/a"\n'
        'ddddddddddd, 0, inf, "/m/a"\n'
        'eeeeeeeeeee, 0, 10, "/m/a\n' + "f" * (2 << 20) + '\nbbbbbbbbbbb, 0.000, 10.000, "/m/b"\n'
    )
    result = read_audioset(segments, audio, read_label_csv(labels_csv(tmp_path)))
    assert sorted(r.key for r in result.records) == ["aaaaaaaaaaa", "bbbbbbbbbbb"]
    assert {s.source: s.reason.split(":")[0] for s in result.skipped} == {
        "segments.csv:5": "unreadable CSV row",  # a 200 000-character YTID
        "segments.csv:6": "expected 0 <= start < end (finite), found start=0.0, end=inf",
        "segments.csv:7": "audio file not found (patterns",
        "segments.csv:8": "line over 1 MiB",
    }

    root = tmp_path / "ESC-50"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    for name in ("1-1-A-0.wav", "1-2-A-1.wav", "1-3-A-0.wav"):
        sf.write(root / "audio" / name, tone(), RATE)
    rows = [
        "filename,fold,target,category,esc10,src_file,take",
        "1-1-A-0.wav,1,0,dog,True,1,A",
        "../../etc/passwd,1,0,dog,True,1,A",
        "1-3-A-0.wav,1,0",  # a short row: no src_file, no take
        f"1-9-A-0.wav,1,1,{'y' * 200_000},False,9,A",
        "1-1-A-0.flac,2,0,dog,True,1,A",
        "1-2-A-1.wav,2,1,rooster,False,2,A",
    ]
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    folded = read_esc50(root)
    assert sorted(r.key for r in folded.result.records) == ["1-1-A-0", "1-2-A-1"]
    assert {s.source: s.reason.split(",")[0] for s in folded.result.skipped} == {
        "esc50.csv:3": "filename is not a file name in audio/ (a path)",
        "esc50.csv:4": "short row: no category",
        "esc50.csv:5": "unreadable CSV row: field larger than field limit (131072)",
        "esc50.csv:6": "duplicate clip '1-1-A-0' (1-1-A-0.wav and 1-1-A-0.flac)",
    }


def test_skipped_entries_and_members_are_valid_json_and_tar(tmp_path: Path) -> None:
    """Keys with unprintable characters (undecodable file names) stay readable everywhere."""
    root = tmp_path / "sounds"
    (root / "dogs").mkdir(parents=True)
    sf.write(root / "dogs" / "ok.wav", tone(), RATE)
    sf.write(root / "dogs" / "tmp.wav", tone(1), RATE)
    os.rename(root / "dogs" / "tmp.wav", root / "dogs" / "b\udcffd\u2028.wav")  # bytes b"b\xffd\xe2\x80\xa8.wav"
    assert run("folder", "--root", root, "--out", tmp_path / "out", "--num-folds", 2) == 0
    keys = members(tmp_path / "out")
    assert {clip_id(key) for key in keys} == {"dogs/ok.wav", "dogs/b\udcffd\u2028.wav"}
    for shard in (tmp_path / "out").glob("shard-*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    json.load(io.BytesIO(tar.extractfile(member).read()))


def _convert_or_raise(task: int) -> str:
    """A convert function with a bug on one input (module level: the worker pool pickles it by name)."""
    if task == 3:
        raise KeyError("an odd field")
    return f"ok {task}"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_convert_function_that_raises_costs_its_task_only(workers: int) -> None:
    from panns_lightning.shardset.decode_pool import convert_all

    results = list(convert_all(list(range(6)), _convert_or_raise, lambda task, reason: reason, workers=workers))
    assert results == ["ok 0", "ok 1", "ok 2", "KeyError: 'an odd field'", "ok 4", "ok 5"]

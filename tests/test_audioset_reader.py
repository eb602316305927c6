"""AudioSet's label CSV, segment CSV parser and clip finder."""

from __future__ import annotations

from pathlib import Path

import pytest

from panns_lightning.datasets.audioset import AudioIndex, parse_segments_csv, read_audioset, split_name
from panns_lightning.labels import LabelFileError, LabelSet, read_label_csv, write_label_csv
from shared_data import SHARED_AUDIOSET

REAL_LABEL_CSV = SHARED_AUDIOSET / "class_labels_indices.csv"

SEGMENTS = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=6, num_segs=6, num_unique_labels=3, num_positive_labels=8
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/a,/m/b"
-0RWZT-miFs, 420.000, 430.000, "/m/c"
broken_row, 1.000, "/m/a"
badtimes, ten, 20.000, "/m/a"
unknownmid, 0.000, 10.000, "/m/a,/m/zzz"
onlyunknown, 0.000, 10.000, "/m/zzz"
--PJHxphWEs, 50.000, 60.000, "/m/c"
"""

LABELS = 'index,mid,display_name\n0,/m/a,"Speech"\n1,/m/b,"Male speech, man speaking"\n2,/m/c,"Dog"\n'


@pytest.fixture()
def labels(tmp_path: Path) -> LabelSet:
    path = tmp_path / "class_labels_indices.csv"
    path.write_text(LABELS)
    return read_label_csv(path)


def test_label_csv_keeps_commas_inside_quoted_names(labels: LabelSet) -> None:
    assert labels.mids == ("/m/a", "/m/b", "/m/c")
    assert labels.names[1] == "Male speech, man speaking"
    assert labels.index_of["/m/c"] == 2
    assert labels.to_manifest()[1] == {"index": 1, "mid": "/m/b", "name": "Male speech, man speaking"}


def test_label_csv_round_trips_through_the_writer(labels: LabelSet, tmp_path: Path) -> None:
    path = tmp_path / "again.csv"
    write_label_csv(LabelSet.from_pairs([("/m/x", 'Say "hi", twice'), ("/m/y", "Plain")]), path)
    again = read_label_csv(path)
    assert again.names == ('Say "hi", twice', "Plain")
    assert path.read_text().splitlines()[1] == '0,/m/x,"Say ""hi"", twice"'


@pytest.mark.parametrize(
    "content,message",
    [
        ("idx,mid,name\n0,/m/a,A\n", "expected header"),
        ('index,mid,display_name\n0,/m/a,"A"\n2,/m/b,"B"\n', ":3: expected index 1"),
        ('index,mid,display_name\n0,/m/a,"A"\n1,/m/a,"B"\n', "already defined on line 2"),
        ("index,mid,display_name\n0,/m/a\n", ":2: expected 3 fields"),
        ("index,mid,display_name\n", "no classes"),
    ],
)
def test_label_csv_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(LabelFileError, match=message) as caught:
        read_label_csv(path)
    assert str(path) in str(caught.value)


@pytest.mark.skipif(not REAL_LABEL_CSV.is_file(), reason="real AudioSet label CSV not present")
def test_real_audioset_label_csv() -> None:
    labels = read_label_csv(REAL_LABEL_CSV)
    assert len(labels) == 527
    assert labels.mids[0] == "/m/09x0r" and labels.names[0] == "Speech"
    assert labels.names[1] == "Male speech, man speaking"
    assert all(labels.index_of[m] == i for i, m in enumerate(labels.mids))


def test_segment_parser_reads_the_official_row_format(tmp_path: Path) -> None:
    path = tmp_path / "balanced_train_segments.csv"
    path.write_text(SEGMENTS)
    rows, problems = parse_segments_csv(path)
    assert [r.ytid for r in rows] == ["--PJHxphWEs", "-0RWZT-miFs", "unknownmid", "onlyunknown"]
    first = rows[0]
    assert (first.start_seconds, first.end_seconds, first.start_text, first.mids, first.line) == (
        30.0,
        40.0,
        "30.000",
        ("/m/a", "/m/b"),
        4,
    )
    reasons = {p.line: p.reason for p in problems}
    assert set(reasons) == {6, 7, 10}
    assert "expected 4 fields" in reasons[6]
    assert "not numbers" in reasons[7]
    assert "duplicate YTID, first seen on line 4" in reasons[10]
    assert split_name(path) == "balanced_train"


def test_reader_reports_unknown_labels_missing_audio_and_bad_rows(tmp_path: Path, labels: LabelSet) -> None:
    csv_path = tmp_path / "eval_segments.csv"
    csv_path.write_text(SEGMENTS)
    audio = tmp_path / "audio" / "nested"
    audio.mkdir(parents=True)
    (audio / "Y--PJHxphWEs.wav").write_bytes(b"x")
    (audio / "unknownmid_0_10.flac").write_bytes(b"x")
    result = read_audioset(csv_path, tmp_path / "audio", labels)
    assert [(r.key, r.labels, r.source) for r in result.records] == [
        ("--PJHxphWEs", (0, 1), "nested/Y--PJHxphWEs.wav"),
        ("unknownmid", (0,), "nested/unknownmid_0_10.flac"),
    ]
    skipped = {s.key: (s.source, s.reason) for s in result.skipped}
    assert skipped["-0RWZT-miFs"][0] == "eval_segments.csv:5" and "audio file not found" in skipped["-0RWZT-miFs"][1]
    assert skipped["onlyunknown"] == ("eval_segments.csv:9", "no label in the label CSV: /m/zzz")
    assert "broken_row" in skipped and "badtimes" in skipped
    assert len(result.warnings) == 1 and "eval_segments.csv:8" in result.warnings[0] and "/m/zzz" in result.warnings[0]


def test_finder_tries_both_time_spellings_and_prefers_wav(tmp_path: Path) -> None:
    for name in ["Yabc.ogg", "Yabc.wav", "Yabc.txt", "def_30.000_40.000.flac", "ghi_30_40.mp3", "sub/jkl.au"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    index = AudioIndex(tmp_path)
    assert index.find("Yabc.*").name == "Yabc.wav"
    assert index.find("Yabc.txt").name == "Yabc.txt"
    assert index.find("nothing.*") is None
    assert index.find("sub/jkl.au") is not None and index.find("jkl.au") is not None

    csv_path = tmp_path / "s.csv"
    csv_path.write_text(
        '#\n#\n#\nabc, 0.000, 10.000, "/m/a"\ndef, 30.000, 40.000, "/m/a"\nghi, 30.000, 40.000, "/m/a"\njkl, 0.000, 10.000, "/m/a"\n'
    )
    labels = LabelSet.from_pairs([("/m/a", "A")])
    found = {r.key: Path(r.audio_path).name for r in read_audioset(csv_path, tmp_path, labels).records}
    assert found == {"abc": "Yabc.wav", "def": "def_30.000_40.000.flac", "ghi": "ghi_30_40.mp3"}
    custom = read_audioset(csv_path, tmp_path, labels, audio_patterns=["sub/{ytid}.au"])
    assert [r.key for r in custom.records] == ["jkl"]
    with pytest.raises(ValueError, match="pattern"):
        read_audioset(csv_path, tmp_path, labels, audio_patterns=["{video}.wav"])

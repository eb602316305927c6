"""Shards and manifests over HTTP (data/remote.py): statuses named, cuts detected, retries resumed.

A local server in a thread (tests/http_shard_server.py) serves files with faults: a 404, a
transfer cut after N bytes once (then whole) or every time, with and without Range support.
The end-to-end run of panns-train over such a server is tests/test_http_shards.py.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from http_shard_server import Faults, start_in_thread
from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.remote import HttpOptions, RemoteReadError, fetch_http, join_url, open_http
from panns_lightning.data.shard_urls import shard_urls
from panns_lightning.data.tar_reader import read_shard
from panns_lightning.shardset import ManifestError, ShardSetError

FAST = HttpOptions(timeout=5.0, retries=1, retry_delay=0.0)
CLIPS = 6
SAMPLES = 800


def tiny_shard(path: Path) -> list[str]:
    """A shard of CLIPS int16 clips (KEY.npy + KEY.json each); returns the keys."""
    keys = [f"clip{i}" for i in range(CLIPS)]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, key in enumerate(keys):
            buffer = io.BytesIO()
            np.save(buffer, np.full(SAMPLES, i, dtype=np.int16))
            for name, payload in ((f"{key}.npy", buffer.getvalue()), (f"{key}.json", json.dumps({"labels": [0]}))):
                data = payload.encode() if isinstance(payload, str) else payload
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return keys


def audio_data_middle(path: Path, clip: int) -> int:
    """A byte offset in the middle of clip ``clip``'s audio data."""
    with tarfile.open(path) as tar:
        member = tar.getmember(f"clip{clip}.npy")
        return member.offset_data + member.size // 2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Faults]]:
    tiny_shard(tmp_path / "shard.tar")
    faults = Faults()
    server = start_in_thread(tmp_path, faults)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path, faults
    finally:
        server.shutdown()
        server.server_close()


def test_a_healthy_file_reads_whole(served: tuple[str, Path, Faults]) -> None:
    base, root, faults = served
    assert fetch_http(join_url(base, "shard.tar"), FAST) == (root / "shard.tar").read_bytes()
    assert faults.requests == [("shard.tar", None)]


def test_a_404_is_named_and_not_retried(served: tuple[str, Path, Faults]) -> None:
    base, _, faults = served
    with pytest.raises(RemoteReadError, match=r"^HTTP 404 Not Found$"):
        open_http(join_url(base, "nothing.tar"), FAST)
    assert len(faults.requests) == 1


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_a_cut_transfer_is_resumed_where_it_stopped(served: tuple[str, Path, Faults], ranges: bool) -> None:
    base, root, faults = served
    faults.cut["shard.tar"] = 5000
    faults.cut_times = 1
    faults.ranges = ranges
    assert fetch_http(join_url(base, "shard.tar"), FAST) == (root / "shard.tar").read_bytes()
    assert faults.requests == [("shard.tar", None), ("shard.tar", "bytes=5000-")]


def test_a_transfer_cut_every_time_fails_with_its_byte_counts(served: tuple[str, Path, Faults]) -> None:
    base, root, faults = served
    faults.cut["shard.tar"] = 5000
    size = (root / "shard.tar").stat().st_size
    with pytest.raises(
        RemoteReadError, match=rf"^connection closed after 5000 of {size} bytes; gave up after 1 retry$"
    ):
        fetch_http(join_url(base, "shard.tar"), FAST)


def test_read_shard_reports_404_and_cut_shards_and_keeps_the_clips_before_the_cut(
    served: tuple[str, Path, Faults], caplog: pytest.LogCaptureFixture
) -> None:
    base, root, faults = served
    faults.missing.add("gone.tar")
    faults.cut["shard.tar"] = audio_data_middle(root / "shard.tar", 3)
    errors = ErrorLog("val")
    url = join_url(base, "shard.tar")
    clips = list(read_shard(url, storage="int16", with_audio=True, errors=errors, http=FAST))
    assert [clip.key for clip in clips] == ["clip0", "clip1", "clip2"]
    assert (
        list(read_shard(join_url(base, "gone.tar"), storage="int16", with_audio=True, errors=errors, http=FAST)) == []
    )
    assert errors.counts() == {"bad_samples": 0, "bad_shards": 2}
    messages = [record.getMessage() for record in caplog.records]
    assert f"val: stopped reading {base}/gone.tar before its first clip: cannot open (HTTP 404 Not Found)" in messages
    assert any(
        message.startswith(f"val: stopped reading {url} after clip 'clip2': download failed (connection closed after")
        and message.endswith("; gave up after 1 retry)")
        for message in messages
    ), messages


def test_a_shard_set_url_lists_its_shards_under_it() -> None:
    class Shard:
        def __init__(self, name: str) -> None:
            self.name = name

    class FakeManifest:
        shards = [Shard("shard-000000.tar"), Shard("shard-000001.tar")]

    urls = shard_urls("https://host/sets/train/?token=abc", FakeManifest())  # type: ignore[arg-type]
    assert urls == [
        "https://host/sets/train/shard-000000.tar?token=abc",
        "https://host/sets/train/shard-000001.tar?token=abc",
    ]


def test_a_manifest_url_that_fails_or_is_not_json_says_so(served: tuple[str, Path, Faults]) -> None:
    from panns_lightning.data.shard_urls import load_manifest

    base, root, _ = served
    with pytest.raises(ShardSetError, match=r"cannot fetch .*/missing/manifest.json: HTTP 404 Not Found"):
        load_manifest(f"{base}/missing", FAST)
    (root / "bad").mkdir()
    (root / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"/bad/manifest.json: cannot read JSON"):
        load_manifest(f"{base}/bad", FAST)


def test_val_counts_the_clips_a_cut_shard_lost_against_the_error_budget(served: tuple[str, Path, Faults]) -> None:
    from panns_lightning.data.eval_stream import EvalClipStream
    from panns_lightning.data.spec import StreamSpec

    base, root, faults = served
    faults.cut["shard.tar"] = audio_data_middle(root / "shard.tar", 3)
    spec = StreamSpec(
        urls=(join_url(base, "shard.tar"),),
        storage="int16",
        sample_rate=8000,
        clip_samples=SAMPLES,
        num_classes=1,
        class_counts=(CLIPS,),
        num_clips=CLIPS,
        shard_clips=(CLIPS,),
        http=FAST,
    )
    errors = ErrorLog("val")
    batches = list(EvalClipStream(spec, rank=0, world_size=1, batch_size=4, errors=errors))
    assert [key for batch in batches for key in batch["key"]] == ["clip0", "clip1", "clip2"]
    assert errors.budget_counts() == {"bad_samples": 0, "bad_shards": 1, "read_samples": 3, "lost_samples": CLIPS - 3}


def test_preflight_names_the_key_of_a_shard_set_url_that_does_not_answer(served: tuple[str, Path, Faults]) -> None:
    from panns_lightning.cli.config_schema import ConfigError
    from panns_lightning.cli.preflight import check_shard_dir

    base, _, _ = served
    with pytest.raises(
        ConfigError, match=rf"^data.val_dir={base}/nowhere: cannot fetch {base}/nowhere/manifest.json: HTTP 404"
    ):
        check_shard_dir("data.val_dir", f"{base}/nowhere", http=FAST)

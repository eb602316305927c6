"""Acceptance (issue 19, cases 3 and 6): what a shard set from elsewhere may cost is bounded.

Each limit has its own setting and message: ``data.http_deadline`` (the total time of one
request, not one read: a manifest served at 1 byte/s, or a server trickling its headers, is given
up), ``data.max_manifest_bytes`` (an endless manifest body stops there, with memory bounded),
``data.max_shard_bytes`` (announced or sent) and ``data.max_member_bytes`` (a tar member, and a
pax header, over it is not read). The hang tests run the read in a thread and fail, rather than
hang, if it does not end: no timing is asserted.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.remote import HttpOptions, RemoteReadError, open_http
from panns_lightning.data.shard_urls import load_manifest
from panns_lightning.data.tar_reader import read_shard
from panns_lightning.shardset import ShardSetError
from shard_fixtures import simple_clips, write_shard_set
from test_shard_trust import first_batch

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
GUARD_SECONDS = 60  # a read still running after this is a hang: the test fails instead of waiting


class HostileHandler(BaseHTTPRequestHandler):
    """``/slow``: a body at 1 byte/s; ``/slow-headers``: the status line at 1 byte/s; ``/endless``:
    a body without end or Content-Length; ``/huge``: announces 10^12 bytes, sends a few."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        try:
            if self.path.startswith("/slow-headers"):
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(1.0)
                return
            self.send_response(200)
            if self.path.startswith("/slow"):
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(100000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(1.0)
            elif self.path.startswith("/endless"):
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = b" " * (1 << 16)
                while True:
                    self.wfile.write(chunk)
            elif self.path.startswith("/huge"):
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
                self.wfile.write(b"\0" * 1024)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: what the tests want
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def ends(action: Callable[[], object]) -> BaseException | None:
    """Run ``action`` in a thread; the exception it raised (None if it returned). Fails on a hang."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD_SECONDS)
    assert outcome, f"still reading after {GUARD_SECONDS} s: the request has no deadline"
    return outcome[0]


@pytest.mark.parametrize("path", ["slow", "slow-headers"])
def test_a_manifest_trickled_at_one_byte_a_second_ends_at_its_deadline(hostile_server: str, path: str) -> None:
    options = HttpOptions(timeout=30.0, retries=2, retry_delay=0.0, deadline=1.0)
    error = ends(lambda: load_manifest(f"{hostile_server}/{path}", options))
    assert isinstance(error, ShardSetError)
    message = str(error)
    assert message.startswith(f"cannot fetch {hostile_server}/{path}/manifest.json: not finished within ")
    assert "http_deadline=1 s" in message and "\n" not in message


def test_a_shard_trickled_at_one_byte_a_second_ends_at_its_deadline_and_is_reported(hostile_server: str) -> None:
    errors = ErrorLog("train")
    options = HttpOptions(timeout=30.0, retries=0, deadline=1.0)
    clips: list = []
    failure = ends(
        lambda: clips.extend(
            read_shard(f"{hostile_server}/slow/s.tar", storage="int16", with_audio=True, errors=errors, http=options)
        )
    )
    assert failure is None and clips == []
    assert errors.counts()["bad_shards"] == 1


ENDLESS_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # main's unbounded read fails here, not the machine
sys.path.insert(0, {src!r})
from panns_lightning.data.remote import HttpOptions, RemoteReadError, fetch_http
try:
    fetch_http({url!r}, HttpOptions(retries=0))
    print("READ WHOLE")
except (RemoteReadError, MemoryError) as error:
    print(type(error).__name__, error)
# VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still holds the parent's peak.
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


@pytest.mark.slow
def test_an_endless_manifest_body_stops_at_max_manifest_bytes_with_memory_bounded(hostile_server: str) -> None:
    """In a child process, so that its peak resident memory is its own (the default cap, 64 MiB)."""
    code = ENDLESS_CHILD.format(src=str(SRC), url=f"{hostile_server}/endless/manifest.json")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert lines[0] == "RemoteReadError the body is longer than max_manifest_bytes=67108864 bytes; not read further", (
        result.stdout + result.stderr
    )
    peak_mb = int(lines[1].split()[1]) / 1024  # "VmHWM:   12345 kB"
    # The cap (64 MiB) held twice over at most, plus the interpreter: far from the GBs of an unbounded read.
    assert peak_mb < 64 * 2 + 150, peak_mb


def test_a_shard_announcing_more_than_max_shard_bytes_is_refused_before_its_body(hostile_server: str) -> None:
    with pytest.raises(
        RemoteReadError, match=r"^the server announces 1000000000000 bytes, over max_shard_bytes=17179869184$"
    ):
        open_http(f"{hostile_server}/huge/s.tar", HttpOptions(retries=0))


def test_a_shard_sending_more_than_max_shard_bytes_is_given_up(hostile_server: str) -> None:
    errors = ErrorLog("train")
    options = HttpOptions(retries=0, max_shard_bytes=1 << 20)
    clips = list(
        read_shard(f"{hostile_server}/endless/s.tar", storage="int16", with_audio=True, errors=errors, http=options)
    )
    assert clips == [] and errors.counts()["bad_shards"] == 1


def test_a_member_over_max_member_bytes_is_not_read_and_its_clip_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = write_shard_set(tmp_path / "set", simple_clips(4, 2), [4], num_classes=2)
    shard = str(directory / "shard-000000.tar")
    errors = ErrorLog("train")
    assert len(list(read_shard(shard, storage="int16", with_audio=True, errors=errors))) == 4
    with caplog.at_level("WARNING"):
        kept = list(read_shard(shard, storage="int16", with_audio=True, errors=errors, max_member_bytes=1000))
    assert kept == [] and errors.counts() == {"bad_samples": 4, "bad_shards": 0}
    assert "holds 1728 bytes, over max_member_bytes=1000" in caplog.text
    assert "no .npy member" not in caplog.text  # reported once, for what it is


def test_an_extended_tar_header_over_its_bound_ends_the_shard_unread(tmp_path: Path) -> None:
    from panns_lightning.data.tar_reader import MAX_TAR_HEADER_BYTES

    shard = tmp_path / "pax.tar"
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("a.json", json.dumps({"labels": [0]}).encode()), ("a.npy", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = {"comment": "x" * (MAX_TAR_HEADER_BYTES + 1)}
            tar.addfile(info, io.BytesIO(data))
    errors = ErrorLog("train")
    assert list(read_shard(str(shard), storage="int16", with_audio=True, errors=errors)) == []
    assert errors.counts()["bad_shards"] == 1


def test_the_member_limit_reaches_the_stream_from_the_data_options(tmp_path: Path) -> None:
    """``data.max_member_bytes`` set on the DataModule bounds what its train stream reads."""
    from panns_lightning.data.error_log import NoReadableClipsError

    directory = write_shard_set(tmp_path / "set", simple_clips(8, 2), [4, 4], num_classes=2)
    assert len(first_batch(str(directory))[0]["key"]) == 4
    with pytest.raises(NoReadableClipsError, match="2 shards in a row held no readable clip") as caught:
        first_batch(str(directory), max_member_bytes=1000)
    assert "last " in str(caught.value)

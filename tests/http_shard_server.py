"""A static file server for tests, with faults on demand: some paths answer 404, some are cut.

A cut answer sends the file's full ``Content-Length``, then only its first N bytes, and closes the
connection: what a dropped download looks like to the client. ``Range: bytes=N-`` and ``bytes=N-M`` are
honoured (206) unless ``ranges=False``. Run as a process (``python tests/http_shard_server.py ROOT --missing
train/shard-000001.tar --cut eval/shard-000002.tar=40000``; it prints ``PORT <n>`` once listening)
or in a thread via :func:`start_in_thread`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Faults:
    """What goes wrong, by URL path relative to the root (``train/shard-000001.tar``)."""

    missing: set[str] = field(default_factory=set)
    cut: dict[str, int] = field(default_factory=dict)  # path → bytes sent before closing
    cut_times: int | None = None  # cut only the first N requests of a path (None: every one)
    ranges: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultyFileHandler(BaseHTTPRequestHandler):
    """GET of files under ``root`` with the :class:`Faults` applied."""

    protocol_version = "HTTP/1.1"

    def __init__(self, *args, root: Path, faults: Faults, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.root = root
        self.faults = faults
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        relative = self.path.split("?", 1)[0].lstrip("/")
        with self.faults.lock:
            self.faults.requests.append((relative, self.headers.get("Range")))
            earlier = sum(1 for path, _ in self.faults.requests if path == relative) - 1
        path = (self.root / relative).resolve()
        if relative in self.faults.missing or not path.is_file() or self.root not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        size = len(data)
        start, end = self._range(size)
        partial_answer = start > 0 or end < size
        data = data[:end]
        cut = self.faults.cut.get(relative)
        if cut is not None and self.faults.cut_times is not None and earlier >= self.faults.cut_times:
            cut = None
        self.send_response(206 if partial_answer else 200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", f'"{len(data)}"')
        if partial_answer:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        body = data[start:] if cut is None else data[start:cut]
        self.wfile.write(body)
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

    def _range(self, size: int) -> tuple[int, int]:
        """[start, end) asked for by ``Range: bytes=a-`` or ``bytes=a-b``; the whole file otherwise."""
        header = self.headers.get("Range", "")
        if not (self.faults.ranges and header.startswith("bytes=")):
            return 0, size
        first, _, last = header[len("bytes=") :].partition("-")
        start = int(first)
        end = min(int(last) + 1, size) if last else size
        return (start, end) if 0 <= start < end else (0, size)

    def log_message(self, format: str, *args) -> None:  # noqa: A002, ANN002 - quiet unless run as a process
        if self.server.verbose:  # type: ignore[attr-defined]
            sys.stderr.write(f"http_shard_server: {self.address_string()} {format % args}\n")


def make_server(root: Path, faults: Faults, verbose: bool = False) -> ThreadingHTTPServer:
    """A server on 127.0.0.1 and a free port (``server.server_address[1]``)."""
    handler = partial(FaultyFileHandler, root=root.resolve(), faults=faults)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.verbose = verbose  # type: ignore[attr-defined]
    return server


def start_in_thread(root: Path, faults: Faults) -> ThreadingHTTPServer:
    """Serve in a daemon thread; call ``server.shutdown()`` when done."""
    server = make_server(root, faults)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--missing", action="append", default=[], help="path answered with 404")
    parser.add_argument("--cut", action="append", default=[], help="PATH=BYTES: send BYTES of it, then close")
    args = parser.parse_args()
    cuts = dict(item.rsplit("=", 1) for item in args.cut)
    faults = Faults(missing=set(args.missing), cut={path: int(size) for path, size in cuts.items()})
    server = make_server(args.root, faults, verbose=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""HTTP(S) connections whose every socket read stops at one deadline: a total time per request.

A socket timeout bounds one wait for data, so a server that sends a byte a second (in its headers
or its body) keeps a reader forever. Here every read of the connection's socket first checks a
deadline shared by the whole request (retries included) and waits at most until it; once it has
passed, the read raises :class:`DeadlineExceeded`. :func:`deadline_opener` is a
``urllib.request`` opener (proxies from the environment as usual) whose HTTP and HTTPS
connections do so. Only the standard library.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
import urllib.request
from typing import Any


class DeadlineExceeded(TimeoutError):
    """A read was attempted after the request's deadline (or waited until it)."""


def deadline_opener(deadline_at: float, timeout: float) -> urllib.request.OpenerDirector:
    """An opener whose connections wait ``timeout`` s at most per read and stop at ``deadline_at``
    (a :func:`time.monotonic` value)."""
    return urllib.request.build_opener(
        _DeadlineHTTPHandler(deadline_at, timeout), _DeadlineHTTPSHandler(deadline_at, timeout)
    )


class DeadlineSocket:
    """A connected socket whose reads wait at most ``timeout`` s each and never past ``deadline_at``."""

    def __init__(self, sock: socket.socket, deadline_at: float, timeout: float) -> None:
        self._sock = sock
        self._deadline_at = deadline_at
        self._timeout = timeout

    def recv_into(self, buffer: Any, *args: Any) -> int:
        self._wait_budget()
        try:
            return self._sock.recv_into(buffer, *args)
        except TimeoutError:
            if time.monotonic() >= self._deadline_at:
                raise DeadlineExceeded("the request's deadline passed") from None
            raise

    def recv(self, *args: Any) -> bytes:
        self._wait_budget()
        return self._sock.recv(*args)

    def makefile(self, mode: str = "rb", buffering: int | None = None, **_: Any) -> io.BufferedReader:
        """What ``http.client`` reads a response through: reads come back through :meth:`recv_into`."""
        if mode != "rb":
            raise ValueError(f"DeadlineSocket.makefile supports mode 'rb' only, got {mode!r}")
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile counts its files
        return io.BufferedReader(socket.SocketIO(self, "rb"), buffering or io.DEFAULT_BUFFER_SIZE)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # sendall, close, fileno, _decref_socketios, ...
        return getattr(self._sock, name)

    def _wait_budget(self) -> None:
        left = self._deadline_at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request's deadline passed")
        self._sock.settimeout(min(self._timeout, left))


class _DeadlineConnectionMixin:
    """Wraps the socket a connection opens (after TLS, for HTTPS) in a :class:`DeadlineSocket`."""

    sock: Any

    def __init__(self, *args: Any, deadline_at: float, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._deadline_at = deadline_at
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock = DeadlineSocket(self.sock, self._deadline_at, self._read_timeout)


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline_at: float, timeout: float) -> None:
        super().__init__()
        self._connection = functools.partial(_DeadlineHTTPConnection, deadline_at=deadline_at, read_timeout=timeout)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)  # type: ignore[arg-type]


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline_at: float, timeout: float) -> None:
        super().__init__()
        self._connection = functools.partial(_DeadlineHTTPSConnection, deadline_at=deadline_at, read_timeout=timeout)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req, context=self._context)  # type: ignore[attr-defined,arg-type]

"""Reading shards and manifests over HTTP(S): errors that say what happened, retries that resume.

webdataset opens ``http(s)://`` through ``curl`` in a pipe, so all that reaches the reader is an
exit status (22 for any HTTP error, 18 for a cut transfer), a stalled server blocks a DataLoader
worker for ever, and 30 retries two seconds apart follow every server error. Here the standard
library reads the URL instead (no ``curl`` needed), and:

- an HTTP error is reported by its status (``HTTP 404 Not Found``); 4xx errors are final, except
  408 and 429, which are retried like 5xx errors and failed connections;
- a transfer that ends before its ``Content-Length`` (or its last chunk) is an error, not a short
  tar: a cut at a member boundary would otherwise read as a complete, smaller shard;
- a cut or stalled transfer is retried ``retries`` times (waits of ``retry_delay`` s, doubling),
  resuming with a ``Range`` request from the byte where it stopped (``If-Range`` with the first
  response's validator, so a file replaced meanwhile is not spliced; a server without ranges
  sends it whole and the bytes already read are skipped);
- ``timeout`` bounds the connect and every wait for data, ``deadline`` the whole request
  (retries and waits included: a server trickling a byte a second is given up, :mod:`.deadline`);
- a manifest may send at most ``max_manifest_bytes``, a shard at most ``max_shard_bytes`` (an
  announced ``Content-Length`` over the cap is refused before its body is read).

Each limit is a ``data.*`` setting (:class:`~panns_lightning.data.options.StreamOptions`) and has
its own message naming it; docs/security.md lists them with their defaults.

``https://user:password@host/...`` is sent as basic authentication; proxies come from the usual
``http_proxy`` / ``https_proxy`` variables. For anything else (custom headers, other tools) use a
``pipe:curl ...`` URL, which webdataset's opener still runs.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from panns_lightning.data.deadline import DeadlineExceeded, deadline_opener
from panns_lightning.shardset.format import MAX_MANIFEST_BYTES

log = logging.getLogger(__name__)

HTTP_SCHEMES = ("http", "https")
# Retried: request timeout, too many requests, and the server errors that mean "try again".
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


DEFAULT_DEADLINE = 1800.0
"""Seconds one request (a manifest or a shard, retries included) may take: 640 MB at 0.36 MB/s."""
MAX_SHARD_BYTES = 16 * 2**30
"""Bytes one shard may send: 25 x an AudioSet shard of 1000 ten-second int16 clips."""


@dataclass(frozen=True)
class HttpOptions:
    """How HTTP(S) shards and manifests are read, and what they may cost.

    ``timeout`` s for a connect or a wait for data, ``retries`` per request, ``deadline`` s for a
    whole request; a manifest may send ``max_manifest_bytes``, a shard ``max_shard_bytes``.
    """

    timeout: float = 60.0
    retries: int = 3
    retry_delay: float = 1.0
    deadline: float = DEFAULT_DEADLINE
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    max_shard_bytes: int = MAX_SHARD_BYTES

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.retries >= 0 and self.retry_delay >= 0 and self.deadline > 0):
            raise ValueError(
                f"http timeout and deadline must be > 0, retries and retry_delay >= 0, got {self.timeout}, "
                f"{self.deadline}, {self.retries}, {self.retry_delay}"
            )
        if self.max_manifest_bytes < 1 or self.max_shard_bytes < 1:
            raise ValueError(
                f"max_manifest_bytes and max_shard_bytes must be >= 1, got {self.max_manifest_bytes}, "
                f"{self.max_shard_bytes}"
            )


DEFAULT_HTTP = HttpOptions()


class RemoteReadError(OSError):
    """An HTTP(S) read that failed for good; the message is the reason (callers name the URL)."""


class _Transient(Exception):
    """A failure worth a retry; its message says what happened."""


def is_http_url(location: str) -> bool:
    """``http://`` or ``https://``."""
    return urlsplit(str(location)).scheme.lower() in HTTP_SCHEMES


def join_url(base: str, name: str) -> str:
    """``base`` (a "directory" URL, query kept) with ``/name`` appended to its path."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


def fetch_http(url: str, options: HttpOptions = DEFAULT_HTTP) -> bytes:
    """The whole body of ``url``, a ``manifest.json`` (at most ``max_manifest_bytes``), with the
    retries and deadline of :func:`open_http`."""
    with HttpStream(url, options, max_bytes=options.max_manifest_bytes, limit="max_manifest_bytes") as stream:
        return stream.read()


def open_http(url: str, options: HttpOptions = DEFAULT_HTTP) -> HttpStream:
    """A readable binary stream over ``url``, a shard (at most ``max_shard_bytes``);
    :class:`RemoteReadError` when it cannot be read."""
    return HttpStream(url, options, max_bytes=options.max_shard_bytes, limit="max_shard_bytes")


class HttpStream(io.RawIOBase):
    """The body of one GET, resumed with ``Range`` after a cut; raises :class:`RemoteReadError`.

    ``read(n)`` returns what one socket read gives (maybe fewer than ``n`` bytes), so a reader
    keeps every byte that arrived before a failure. The body may be ``max_bytes`` long at most
    (``limit`` names the setting in the message), and the request, retries included, ends at
    ``options.deadline`` s after it started.
    """

    def __init__(self, url: str, options: HttpOptions, *, max_bytes: int, limit: str) -> None:
        super().__init__()
        self.url = url
        self.options = options
        self.max_bytes = max_bytes
        self.limit = limit
        self._deadline_at = time.monotonic() + options.deadline
        self.position = 0
        self.total: int | None = None  # Content-Length of the whole body, when the server says
        self._validator: str | None = None  # ETag or Last-Modified of the first response
        self._request_url, self._headers = _split_credentials(url)
        self._retries_used = 0
        self._response: http.client.HTTPResponse | None = None
        self._connect_with_retries()

    # ------------------------------------------------------------------ io.RawIOBase

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if len(buffer) == 0:
            return 0
        while True:
            try:
                count = self._read_some(buffer)
            except _Transient as failure:
                self._retry(str(failure))
                continue
            self.position += count
            return count

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
        super().close()

    # ------------------------------------------------------------------ internals

    def _read_some(self, buffer: memoryview | bytearray) -> int:
        response = self._response
        if response is None:
            return 0
        # One byte past the cap is enough to know the body is over it.
        room = self.max_bytes - self.position + 1
        view = memoryview(buffer)[:room] if len(buffer) > room else buffer
        try:
            count = response.readinto(view)
        except DeadlineExceeded:
            raise self._past_deadline() from None
        except TimeoutError as error:
            raise _Transient(f"no data for {self.options.timeout:g} s after {self._where()}") from error
        except (OSError, http.client.HTTPException) as error:  # reset, IncompleteRead of a chunked body
            raise _Transient(f"connection failed after {self._where()} ({type(error).__name__}: {error})") from error
        if count == 0 and self.total is not None and self.position < self.total:
            raise _Transient(f"connection closed after {self._where()}")
        if self.position + count > self.max_bytes:
            raise RemoteReadError(f"the body is longer than {self.limit}={self.max_bytes} bytes; not read further")
        return count

    def _past_deadline(self) -> RemoteReadError:
        return RemoteReadError(
            f"not finished within http_deadline={self.options.deadline:g} s (after {self._where()}, "
            f"{_plural(self._retries_used, 'retry', 'retries')})"
        )

    def _time_left(self) -> float:
        """Seconds to the deadline; :class:`RemoteReadError` once it has passed."""
        left = self._deadline_at - time.monotonic()
        if left <= 0:
            raise self._past_deadline()
        return left

    def _where(self) -> str:
        total = f" of {self.total}" if self.total is not None else ""
        return f"{self.position}{total} bytes"

    def _retry(self, reason: str) -> None:
        """Wait, then reconnect from ``position``; :class:`RemoteReadError` once the retries are spent."""
        while True:
            if self._retries_used >= self.options.retries:
                raise RemoteReadError(f"{reason}; gave up after {_plural(self._retries_used, 'retry', 'retries')}")
            self._retries_used += 1
            delay = self.options.retry_delay * 2 ** (self._retries_used - 1)
            log.warning(
                "%s: %s; retry %d of %d in %g s", self.url, reason, self._retries_used, self.options.retries, delay
            )
            if self._response is not None:
                self._response.close()
                self._response = None
            time.sleep(min(delay, self._time_left()))
            try:
                self._connect()
                return
            except _Transient as failure:
                reason = str(failure)

    def _connect_with_retries(self) -> None:
        try:
            self._connect()
        except _Transient as failure:
            self._retry(str(failure))

    def _connect(self) -> None:
        """GET from ``position`` (a ``Range`` request after the first); positions the body there."""
        headers = dict(self._headers)
        if self.position:
            headers["Range"] = f"bytes={self.position}-"
            if self._validator:
                headers["If-Range"] = self._validator
        request = urllib.request.Request(self._request_url, headers=headers)
        timeout = min(self.options.timeout, self._time_left())
        try:
            response = deadline_opener(self._deadline_at, self.options.timeout).open(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            error.close()
            reason = f"HTTP {error.code} {error.reason}".rstrip()
            if error.code in _TRANSIENT_STATUS:
                raise _Transient(reason) from error
            raise RemoteReadError(reason + (f" (after {self._where()})" if self.position else "")) from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, DeadlineExceeded):
                raise self._past_deadline() from None
            raise _Transient(f"cannot connect ({_reason_text(error.reason)})") from error
        except DeadlineExceeded:
            raise self._past_deadline() from None
        except TimeoutError as error:
            if time.monotonic() >= self._deadline_at:
                raise self._past_deadline() from None
            raise _Transient(f"no answer in {timeout:g} s") from error
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(f"cannot connect ({type(error).__name__}: {error})") from error
        self._response = response
        if self.position == 0:
            self._validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            length = response.headers.get("Content-Length")
            self.total = int(length) if length and length.isdigit() else None
            if self.total is not None and self.total > self.max_bytes:
                response.close()
                self._response = None
                raise RemoteReadError(f"the server announces {self.total} bytes, over {self.limit}={self.max_bytes}")
        elif response.status == 206:
            self._check_resumed_range(response.headers.get("Content-Range", ""))
        else:
            self._skip_to_position(response)

    def _check_resumed_range(self, content_range: str) -> None:
        """A 206 must start at ``position`` and describe the same total length."""
        try:
            unit, _, span = content_range.partition(" ")
            first, _, rest = span.partition("-")
            total = rest.partition("/")[2]
            start_ok = unit == "bytes" and int(first) == self.position
            total_ok = self.total is None or total in ("*", str(self.total))
        except ValueError:
            start_ok = total_ok = False
        if not (start_ok and total_ok):
            raise RemoteReadError(
                f"the server resumed at an unexpected range ({content_range or 'no Content-Range'}) "
                f"after {self._where()}"
            )

    def _skip_to_position(self, response: http.client.HTTPResponse) -> None:
        """A server without ranges sent the whole body again: drop the bytes already read."""
        length = response.headers.get("Content-Length")
        if self.total is not None and length is not None and length != str(self.total):
            raise RemoteReadError(f"the file changed on the server after {self._where()} (now {length} bytes)")
        remaining = self.position
        while remaining:
            try:
                chunk = response.read(min(remaining, 1 << 16))
            except DeadlineExceeded:
                raise self._past_deadline() from None
            except TimeoutError as error:
                raise _Transient(f"no data for {self.options.timeout:g} s after {self._where()}") from error
            except (OSError, http.client.HTTPException) as error:
                raise _Transient(f"connection failed after {self._where()} ({type(error).__name__})") from error
            if not chunk:
                raise _Transient(f"connection closed after {self.position - remaining}{self._of_total()} bytes")
            remaining -= len(chunk)

    def _of_total(self) -> str:
        return f" of {self.total}" if self.total is not None else ""


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``scheme://user:password@host/...`` → the URL without them and a basic-auth header."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


def _reason_text(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"

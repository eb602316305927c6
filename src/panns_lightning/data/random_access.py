"""Reading one clip out of a shard set by its clip index: one ``pread`` (local) or one HTTP ``Range`` request.

``data.sampler=panns`` draws clips anywhere in the set at any time, so it cannot walk shards as
the stream does. The clip index (:mod:`panns_lightning.shardset.clip_index`) says where each
clip's audio member lies; :class:`ClipReader` fetches exactly those bytes:

- local files: one ``os.pread`` per clip on a file descriptor kept open (at most
  ``MAX_OPEN_FILES`` per process, least recently used closed first); a shard's size is checked
  against the index when it is opened, so a stale index stops the run with a message instead
  of feeding wrong bytes to the decoder;
- ``http(s)://``: one ``GET`` with ``Range: bytes=a-b`` per clip, with ``data.http_timeout``,
  ``data.http_retries`` and the ``data.http_deadline`` per request (:mod:`.deadline`); the answer
  must be a ``206`` whose ``Content-Range`` names the range asked for and the shard size the index
  recorded, and whose body is exactly the member's size (bounded by ``data.max_member_bytes``
  when the index was checked). A server that ignores ranges is refused, not read whole.
``pipe:`` commands cannot seek: the data module refuses ``data.sampler=panns`` for them.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from pathlib import Path

from panns_lightning.data.deadline import DeadlineExceeded, deadline_opener
from panns_lightning.data.remote import (
    HttpOptions,
    HttpStream,
    RemoteReadError,
    _split_credentials,
    is_http_url,
    join_url,
)
from panns_lightning.shardset import Manifest
from panns_lightning.shardset.clip_index import (
    CLIP_INDEX_NAME,
    ClipIndex,
    ClipIndexError,
    ensure_clip_index,
    max_index_bytes,
    parse_clip_index,
)

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 128
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def load_train_index(location: str, manifest: Manifest, http: HttpOptions, max_member_bytes: int) -> ClipIndex:
    """The clip index of the shard set at ``location`` (a directory, built once if missing, or an http(s) URL)."""
    if not is_http_url(location):
        return ensure_clip_index(location, manifest, max_member_bytes=max_member_bytes)
    url = join_url(location, CLIP_INDEX_NAME)
    limit = max_index_bytes(manifest)
    try:
        with HttpStream(url, http, max_bytes=limit, limit="the size its manifest's clips can need") as stream:
            data = stream.read()
    except RemoteReadError as error:
        raise ClipIndexError(
            f"cannot fetch {url} ({error}); data.sampler=panns needs the clip index. A set converted before "
            "indexes existed gets one with `python -m panns_lightning.shardset.clip_index DIR` where its files are"
        ) from None
    return parse_clip_index(data, manifest, url, max_member_bytes=max_member_bytes)


class ClipReader:
    """Reads clip ``i``'s audio bytes from ``urls[index.shard[i]]``; counts its reads (``reads``, ``bytes_read``)."""

    def __init__(self, urls: tuple[str, ...], index: ClipIndex, http: HttpOptions) -> None:
        if len(urls) != index.shard_bytes.shape[0]:
            raise ClipIndexError(f"the clip index lists {index.shard_bytes.shape[0]} shards, {len(urls)} are given")
        self.urls = urls
        self.index = index
        self.http = http
        self.reads = 0
        self.bytes_read = 0
        self._files: OrderedDict[int, int] = OrderedDict()  # shard → open descriptor, least recent first

    def read(self, clip: int) -> bytes:
        """The audio member of ``clip``; ``OSError`` (``RemoteReadError`` over HTTP) when it cannot be read."""
        shard = int(self.index.shard[clip])
        offset, size = int(self.index.offset[clip]), int(self.index.size[clip])
        url = self.urls[shard]
        self.reads += 1
        if is_http_url(url):
            data = read_range(url, offset, size, int(self.index.shard_bytes[shard]), self.http)
        else:
            data = os.pread(self._descriptor(shard), size, offset)
            if len(data) != size:
                raise OSError(f"read {len(data)} of {size} bytes at offset {offset}: the file ends early")
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        while self._files:
            os.close(self._files.popitem()[1])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _descriptor(self, shard: int) -> int:
        descriptor = self._files.get(shard)
        if descriptor is not None:
            self._files.move_to_end(shard)
            return descriptor
        path = Path(self.urls[shard].removeprefix("file:"))
        descriptor = os.open(path, os.O_RDONLY)
        size, expected = os.fstat(descriptor).st_size, int(self.index.shard_bytes[shard])
        if size != expected:
            os.close(descriptor)
            raise ClipIndexError(
                f"{path} is {size} bytes but its clip index recorded {expected}: the index is stale (the shard "
                f"was rewritten after it); delete {path.parent / CLIP_INDEX_NAME} to have it rebuilt"
            )
        self._files[shard] = descriptor
        if len(self._files) > MAX_OPEN_FILES:
            os.close(self._files.popitem(last=False)[1])
        return descriptor


def read_range(url: str, offset: int, size: int, shard_bytes: int, http: HttpOptions) -> bytes:
    """``size`` bytes of ``url`` from ``offset``, by one ``Range`` request (retried on transient failures)."""
    deadline_at = time.monotonic() + http.deadline
    request_url, headers = _split_credentials(url)
    headers["Range"] = f"bytes={offset}-{offset + size - 1}"
    reason = ""
    for attempt in range(http.retries + 1):
        if attempt:
            delay = http.retry_delay * 2 ** (attempt - 1)
            log.warning("%s: %s; retry %d of %d in %g s", url, reason, attempt, http.retries, delay)
            time.sleep(max(0.0, min(delay, deadline_at - time.monotonic())))
        left = deadline_at - time.monotonic()
        if left <= 0:
            raise RemoteReadError(f"range read not finished within http_deadline={http.deadline:g} s ({reason})")
        try:
            request = urllib.request.Request(request_url, headers=headers)
            with deadline_opener(deadline_at, http.timeout).open(request, timeout=min(http.timeout, left)) as response:
                _check_range_answer(response.status, response.headers, offset, size, shard_bytes)
                data = response.read(size + 1)
        except urllib.error.HTTPError as error:
            error.close()
            reason = f"HTTP {error.code} {error.reason}".rstrip()
            if error.code not in _TRANSIENT_STATUS:
                raise RemoteReadError(reason) from None
            continue
        except RemoteReadError:
            raise
        except DeadlineExceeded:
            raise RemoteReadError(f"range read not finished within http_deadline={http.deadline:g} s") from None
        except (OSError, urllib.error.URLError) as error:
            reason = f"{type(error).__name__}: {error}"
            continue
        if len(data) == size:
            return data
        reason = f"the answer held {len(data)} bytes, expected {size}"
    raise RemoteReadError(f"{reason}; gave up after {http.retries} retries")


def _check_range_answer(status: int, headers: object, offset: int, size: int, shard_bytes: int) -> None:
    """A ``206`` for exactly ``[offset, offset + size)`` of a file of ``shard_bytes`` bytes, or ``RemoteReadError``."""
    if status != 206:
        raise RemoteReadError(
            f"the server answered HTTP {status} to a Range request; data.sampler=panns needs a server that "
            "honours Range (or use data.sampler=stream)"
        )
    expected = f"bytes {offset}-{offset + size - 1}/{shard_bytes}"
    content_range = headers.get("Content-Range", "")  # type: ignore[attr-defined]
    if content_range.strip() != expected:
        raise RemoteReadError(
            f"the server sent range {content_range or 'none'!r}, expected {expected!r} (a stale clip index, or "
            "a shard replaced on the server)"
        )

"""Where a shard set's manifest and shards are: a local directory or an ``http(s)://`` URL, or URL overrides.

The manifest is read by :mod:`panns_lightning.shardset.manifest` (the only reader); this module
only says where to find it and the shards, so ``cli/preflight.py`` can check a set without
importing the streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from braceexpand import braceexpand

from panns_lightning.data.remote import DEFAULT_HTTP, HttpOptions, RemoteReadError, fetch_http, is_http_url, join_url
from panns_lightning.shardset import MANIFEST_NAME, Manifest, ShardSetError, parse_manifest, read_manifest


def load_manifest(location: str | Path, http: HttpOptions = DEFAULT_HTTP) -> Manifest:
    """The manifest of a shard set: a local directory, or an ``http(s)://`` URL of one (``URL/manifest.json``).

    Shards are not checked: a missing one counts against the error budget when it is read.
    """
    if not is_http_url(str(location)):
        return read_manifest(location, check_files=False, max_bytes=http.max_manifest_bytes)
    url = join_url(str(location), MANIFEST_NAME)
    try:
        text = fetch_http(url, http)
    except RemoteReadError as error:
        raise ShardSetError(f"cannot fetch {url}: {error}") from None
    return parse_manifest(text, url)


def shard_location(shard_dir: str | Path) -> str:
    """How to name a file of a shard set in messages: ``DIR/manifest.json`` or ``URL/manifest.json``."""
    if is_http_url(str(shard_dir)):
        return join_url(str(shard_dir), MANIFEST_NAME)
    return str(Path(shard_dir) / MANIFEST_NAME)


def shard_urls(shard_dir: str | Path, manifest: Manifest, urls: str | Sequence[str] | None = None) -> list[str]:
    """Where to read the shards from: the manifest's files in ``shard_dir``, or ``urls`` when given.

    ``shard_dir`` may be a local directory or an ``http(s)://`` URL of one. ``urls`` may be one
    string or a list; each is brace-expanded (``shard-{000000..000009}.tar``) and may be a path,
    ``file:``, ``pipe:CMD`` or ``http(s)://`` URL. Order is kept: it is the eval order.
    """
    if urls is None:
        if is_http_url(str(shard_dir)):
            return [join_url(str(shard_dir), shard.name) for shard in manifest.shards]
        return [str(Path(shard_dir) / shard.name) for shard in manifest.shards]
    patterns = [urls] if isinstance(urls, str) else list(urls)
    expanded = [url for pattern in patterns for url in braceexpand(pattern)]
    if not expanded:
        raise ShardSetError(f"shard URL override {urls!r} for {shard_dir} expands to no URLs")
    return expanded

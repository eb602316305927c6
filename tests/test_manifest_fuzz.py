"""Fuzz test (issue 19) of the one manifest parser: any bytes give a checked Manifest or a ManifestError.

Three sources of input, all through ``shardset.parse_manifest`` (which ``read_manifest`` and the
HTTP reader call): arbitrary bytes; arbitrary JSON values; and a valid manifest with entries
replaced by arbitrary JSON, deleted, or with its shard names drawn from hostile and random text.
Asserted for every case: the parser returns a Manifest whose shard names are plain file names
inside the set and whose counts add up, or raises :class:`ManifestError` with a one-line message
naming the source; never another exception; and the memory it takes stays within a bound linear
in the input's size (tracemalloc peak). ``derandomize`` keeps the cases the same on every run.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from panns_lightning.shardset import Manifest, ManifestError, parse_manifest

ROOT = Path("/data/set")
# The test's own statement of a plain file name (docs/security.md), not the implementation's pattern.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}")
FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
HOSTILE_NAMES = [
    "pipe:touch /tmp/x; cat shard-000000.tar",
    "../../../../etc/passwd",
    "/etc/passwd",
    "http://evil/x.tar",
    "file:/etc/passwd",
    "a/b",
    "a\\b",
    "..",
    ".",
    "",
    "~/x",
    "x\x00y",
    "s" * 300,
    "shard-000000.tar",
]


def valid_manifest(num_shards: int = 2) -> dict[str, Any]:
    labels = [{"index": 0, "mid": "/m/0", "name": "a"}, {"index": 1, "mid": "/m/1", "name": "b"}]
    shards = [{"name": f"shard-{i:06d}.tar", "num_clips": 3, "class_counts": [2, 1]} for i in range(num_shards)]
    return {
        "format_version": 1,
        "dataset": "fuzz",
        "split": "train",
        "sample_rate": 16000,
        "clip_samples": 16000,
        "storage": "int16",
        "multilabel": True,
        "labels": labels,
        "num_clips": 3 * num_shards,
        "class_counts": [2 * num_shards, num_shards],
        "shards": shards,
        "skipped": [],
        "num_skipped": 0,
        "created_by": "fuzz",
        "created_at": "now",
    }


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(HOSTILE_NAMES) | st.text(max_size=20)


@st.composite
def mutated_manifests(draw: st.DrawFn) -> dict[str, Any]:
    manifest = valid_manifest(draw(st.integers(min_value=1, max_value=3)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        action = draw(st.sampled_from(["replace", "delete", "shard_name", "shard_entry", "count"]))
        key = draw(st.sampled_from(sorted(manifest)))
        if action == "replace":
            manifest[key] = draw(json_values)
        elif action == "delete":
            manifest.pop(key, None)
        elif action == "count":
            manifest[key] = draw(st.integers(min_value=-(10**30), max_value=10**30) | st.booleans())
        elif isinstance(manifest.get("shards"), list) and manifest["shards"]:
            index = draw(st.integers(min_value=0, max_value=len(manifest["shards"]) - 1))
            if action == "shard_name" and isinstance(manifest["shards"][index], dict):
                manifest["shards"][index]["name"] = draw(names)
            else:
                manifest["shards"][index] = draw(json_values)
    return manifest


def check(text: str | bytes) -> Manifest | None:
    """Parse ``text``: a checked Manifest or None for a clean ManifestError; anything else fails the test."""
    tracemalloc.start()
    try:
        manifest = parse_manifest(text, "fuzz/manifest.json", root=ROOT)
    except ManifestError as error:
        message = str(error)
        assert message.startswith("fuzz/manifest.json: ") and "\n" not in message, message
        manifest = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 2_000_000 + 200 * len(text), (peak, len(text))
    if manifest is not None:
        for shard, path in zip(manifest.shards, manifest.shard_paths()):
            assert PLAIN_NAME.fullmatch(shard.name) and ":" not in shard.name and ".." not in shard.name.split("/")
            assert path.parent == ROOT and path.name == shard.name
        assert sum(shard.num_clips for shard in manifest.shards) == manifest.num_clips
        assert len(manifest.class_counts) == manifest.num_classes
    return manifest


@FUZZ
@given(st.binary(max_size=300))
@example(b"[" * 100_000)  # nesting deeper than the JSON decoder's recursion
@example(b"9" * 5000)  # an integer past Python's 4300-digit limit
@example(b'{"format_version": 1e999}')
@example(b"\xff\xfe{")
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    check(json.dumps(value))


@FUZZ
@given(mutated_manifests())
def test_mutated_valid_manifests(manifest: dict[str, Any]) -> None:
    check(json.dumps(manifest))


@FUZZ
@given(st.lists(names, min_size=1, max_size=4))
def test_shard_names(shard_names: list[str]) -> None:
    manifest = valid_manifest(len(shard_names))
    for entry, name in zip(manifest["shards"], shard_names):
        entry["name"] = name
    parsed = check(json.dumps(manifest))
    plain = all(PLAIN_NAME.fullmatch(name) for name in shard_names) and len(set(shard_names)) == len(shard_names)
    assert (parsed is not None) == plain, shard_names


def test_the_valid_manifest_parses() -> None:
    assert check(json.dumps(valid_manifest())) is not None

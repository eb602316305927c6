"""Acceptance (issue 19, case 1): a shard set's manifest cannot run a command or reach outside its set.

A manifest comes with the data. Before, its shard names were joined to the directory and handed to
the opener, so ``pipe:touch MARKER; cat shard-000000.tar`` ran a shell command (with
``data.train_dir=.``) and ``../../etc/passwd`` or an absolute URL were read as shards. Now a name
must be a plain file name inside the set, checked where the manifest is parsed, for a local set
and one served over HTTP alike; ``pipe:`` commands come only from the user's own ``data.*_urls``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from http_shard_server import Faults, start_in_thread
from panns_lightning.data import AudioShardDataModule
from panns_lightning.data.shard_urls import load_manifest
from panns_lightning.shardset import ManifestError, parse_manifest, read_manifest
from shard_fixtures import simple_clips, write_shard_set

HOSTILE_NAMES = [
    "pipe:touch {marker}; cat shard-000000.tar",
    "../../etc/passwd",
    "../shard-000000.tar",
    "/etc/passwd",
    "http://evil.example/shard.tar",
    "file:///etc/passwd",
    "sub/shard.tar",
    "sub\\shard.tar",
    "..",
    ".hidden.tar",
    "-rf.tar",
    "shard.tar?x=1",
    "shard.tar#frag",
    "shard%2e%2e.tar",
    "shard\n.tar",
    "",
]


def hostile_set(root: Path, name: str) -> Path:
    """A readable 8-clip set whose manifest names its first shard ``name``."""
    directory = write_shard_set(root / "set", simple_clips(8, 2), [4, 4], num_classes=2)
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["name"] = name
    manifest_path.write_text(json.dumps(manifest))
    return directory


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_manifest_naming_anything_but_a_plain_file_in_its_set_is_refused_in_one_line(
    tmp_path: Path, name: str
) -> None:
    name = name.format(marker=tmp_path / "MARKER")
    directory = hostile_set(tmp_path, name)
    with pytest.raises(ManifestError) as caught:
        read_manifest(directory)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{directory / 'manifest.json'}: shards[0].name ")
    assert repr(name)[:60] in message or not name, message
    assert "not a plain file name inside the set" in message or "must be" in message


def test_plain_names_are_accepted(tmp_path: Path) -> None:
    directory = hostile_set(tmp_path, "my_set-part.00+1.tar")
    (directory / "shard-000000.tar").rename(directory / "my_set-part.00+1.tar")
    assert read_manifest(directory).shards[0].name == "my_set-part.00+1.tar"


def test_a_repeated_shard_name_is_refused(tmp_path: Path) -> None:
    directory = hostile_set(tmp_path, "shard-000001.tar")
    with pytest.raises(ManifestError, match=r"shards\[1\]\.name 'shard-000001.tar' repeats shards\[0\]\.name"):
        read_manifest(directory)


def first_batch(train_dir: str, **options: object) -> tuple[dict, AudioShardDataModule]:
    """The first train batch of a small DataModule over ``train_dir`` (``options``: its stream options)."""
    datamodule = AudioShardDataModule(
        train_dir=train_dir,
        val_dir=None,
        test_dir=None,
        **{"batch_size": 4, "num_workers": 0, "steps_per_epoch": 1, "shuffle_buffer": 8, **options},
    )
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader())), datamodule


def test_the_command_never_runs_for_a_local_set_read_as_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case: ``data.train_dir=.`` made ``Path('.') / name`` the bare ``pipe:`` URL."""
    marker = tmp_path / "MARKER"
    directory = hostile_set(tmp_path, f"pipe:touch {marker}; cat shard-000000.tar")
    monkeypatch.chdir(directory)
    with pytest.raises(ManifestError, match=r"manifest\.json: shards\[0\]\.name 'pipe:touch "):
        first_batch(".")
    assert not marker.exists()


@pytest.fixture
def served_hostile_set(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    marker = tmp_path / "MARKER"
    directory = hostile_set(tmp_path, f"pipe:touch {marker}; cat shard-000000.tar")
    server = start_in_thread(tmp_path, Faults())
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/set", marker
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(directory)


def test_the_command_never_runs_for_a_set_served_over_http(
    served_hostile_set: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, marker = served_hostile_set
    monkeypatch.chdir(marker.parent)
    with pytest.raises(ManifestError, match=rf"^{url}/manifest\.json: shards\[0\]\.name 'pipe:touch "):
        load_manifest(url)
    with pytest.raises(ManifestError):
        first_batch(url)
    assert not marker.exists()


def test_pipe_commands_from_the_users_own_urls_still_run(tmp_path: Path) -> None:
    """``data.*_urls`` is the user's own config: a ``pipe:`` there is what they asked for."""
    directory = write_shard_set(tmp_path / "set", simple_clips(8, 2), [4, 4], num_classes=2)
    batch, _ = first_batch(str(directory), train_urls=f"pipe:cat {directory}/shard-00000{{0..1}}.tar")
    assert len(batch["key"]) == 4


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"sample_rate": 10**9}, "'sample_rate' must be in 1..384000 Hz, found 1000000000"),
        ({"clip_samples": 10**12}, "'clip_samples' must be in 1..600 s x sample_rate = 4800000, found 1000000000000"),
        ({"sample_rate": True}, "'sample_rate' must be a non-negative integer, found True"),
        ({"format_version": True}, "format_version True is not supported"),
    ],
)
def test_sizes_that_become_allocations_are_bounded(tmp_path: Path, entry: dict, expected: str) -> None:
    directory = write_shard_set(tmp_path / "set", simple_clips(4, 2), [4], num_classes=2)
    manifest = {**json.loads((directory / "manifest.json").read_text()), **entry}
    with pytest.raises(ManifestError, match="^where: " + expected.replace("(", r"\(").replace(")", r"\)")):
        parse_manifest(json.dumps(manifest), "where")


def test_a_local_manifest_over_its_size_limit_is_not_read(tmp_path: Path) -> None:
    directory = write_shard_set(tmp_path / "set", simple_clips(4, 2), [4], num_classes=2)
    size = (directory / "manifest.json").stat().st_size
    assert read_manifest(directory, max_bytes=size).num_clips == 4
    with pytest.raises(ManifestError, match=rf"larger than max_manifest_bytes={size - 1}; not read"):
        read_manifest(directory, max_bytes=size - 1)

"""Acceptance (issue 19, case 2): a password in a shard set's URL is never printed, wherever it travels.

Before, ``data.train_dir=http://user:PASS@host/set/`` with failing shards printed PASS twice on
stderr: in Hydra's ``Error executing job with overrides:`` echo and in the "shards in a row held
no readable clip" RuntimeError with its traceback. Now every console script writes through the
redacting console (redact.py, cli/entry.py) and that error is one line naming the data.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from http_shard_server import Faults, start_in_thread
from panns_lightning.cli.entry import console_entry, one_line
from panns_lightning.redact import MASK, RedactingStream, redacted_console
from train_fixtures import BIN, REPO, demo_overrides

PASSWORD = "S3cretPassw0rd"


def test_a_secret_written_in_pieces_is_masked_whole() -> None:
    target = io.StringIO()
    stream = RedactingStream(target)
    for piece in ("failed: http://user:", PASSWORD[:5], PASSWORD[5:], "@host/set/shard.tar", "\n"):
        stream.write(piece)
    assert target.getvalue() == f"failed: http://user:{MASK}@host/set/shard.tar\n"


def test_progress_redraws_and_flushes_go_out_masked() -> None:
    target = io.StringIO()
    stream = RedactingStream(target)
    stream.write(f"\rreading https://u:{PASSWORD}@h/x 10%")
    stream.flush()
    stream.write(f"\rreading https://u:{PASSWORD}@h/x 20%\r")
    assert PASSWORD not in target.getvalue() and target.getvalue().count(MASK) == 2


def test_the_console_is_masked_inside_and_restored_after(capsys: pytest.CaptureFixture[str]) -> None:
    with redacted_console():
        print("url", f"http://user:{PASSWORD}@host/")
        print(f"token=abc{PASSWORD}", file=sys.stderr)
    print(f"after: {PASSWORD}")
    out, err = capsys.readouterr()
    assert out == f"url http://user:{MASK}@host/\nafter: {PASSWORD}\n"
    assert err == f"token={MASK}\n"


def test_an_error_raised_in_a_dataloader_worker_is_shown_by_its_own_message() -> None:
    """torch re-raises a worker's exception with the worker's traceback in its message."""
    worker_message = (
        "Caught NoReadableClipsError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise NoReadableClipsError(...)\n'
        f"panns_lightning.data.stream.NoReadableClipsError: train stream: 4 shards, last http://u:{PASSWORD}@h/s.tar\n"
    )
    assert one_line("panns-train", RuntimeError(worker_message)) == (
        f"panns-train: train stream: 4 shards, last http://u:{MASK}@h/s.tar"
    )


def test_a_closed_pipe_ends_a_console_script_with_exit_code_0(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[bool] = []
    monkeypatch.setattr("panns_lightning.cli.entry.end_on_closed_pipe", lambda: ended.append(True) or 0)

    @console_entry
    def main() -> int:
        raise BrokenPipeError

    assert main() == 0 and ended == [True]


@pytest.fixture
def all_train_shards_missing(tiny_audioset: Path) -> Iterator[str]:
    shards = sorted(path.name for path in (tiny_audioset / "train").glob("shard-*.tar"))
    server = start_in_thread(tiny_audioset, Faults(missing={f"train/{name}" for name in shards}))
    try:
        yield f"http://user:{PASSWORD}@127.0.0.1:{server.server_address[1]}/train/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_the_password_of_a_failing_http_set_is_in_no_output_and_no_file(
    all_train_shards_missing: str, tiny_audioset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        o
        for o in demo_overrides(tiny_audioset, run_dir)
        if not o.startswith(("data.train_dir", "data.val_dir", "data.test_dir"))
    ]
    result = subprocess.run(
        [
            str(BIN / "panns-train"),
            *overrides,
            f"data.train_dir={all_train_shards_missing}",
            "data.val_dir=null",
            "data.test_dir=null",
            "data.num_workers=1",  # the error is raised in a DataLoader worker, as by default
            "data.http_retries=0",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert PASSWORD not in result.stdout and PASSWORD not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("panns-train: train stream: 4 shards in a row held no readable clip, last http://user:")
    assert f"user:{MASK}@127.0.0.1" in last
    assert "Traceback" not in result.stderr and "Error executing job" not in result.stderr
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert any(path.name == "config.yaml" for path in files), files  # the run directory was written
    assert [path for path in files if PASSWORD.encode() in path.read_bytes()] == []

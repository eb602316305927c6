"""Acceptance (issue 19, case 2 and the closed-pipe part of "one line"): what the console scripts print.

Before, ``data.train_dir=http://user:PASS@host/set/`` with failing shards printed PASS twice on
stderr: in Hydra's ``Error executing job with overrides:`` echo and in the "shards in a row held
no readable clip" RuntimeError with its traceback; ``panns-tag a.wav b.wav | head -1`` ended in a
``BrokenPipeError`` traceback. Now every console script runs in ``cli.entry.console_entry``: it
writes through the redacting console (redact.py), a closed pipe ends it quietly with exit code 0,
and the "no readable clip" error is one line naming the data.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from http_shard_server import Faults, start_in_thread
from panns_lightning.redact import MASK
from shard_fixtures import simple_clips, write_shard_set
from test_inference_support import cnn6_checkpoint
from train_fixtures import BIN, REPO, demo_overrides

PASSWORD = "S3cretPassw0rd"


def test_a_secret_written_in_pieces_is_masked_whole() -> None:
    from panns_lightning.redact import RedactingStream

    target = io.StringIO()
    stream = RedactingStream(target)
    for piece in ("failed: http://user:", PASSWORD[:5], PASSWORD[5:], "@host/set/shard.tar", "\n"):
        stream.write(piece)
    assert target.getvalue() == f"failed: http://user:{MASK}@host/set/shard.tar\n"


def test_progress_redraws_and_flushes_go_out_masked() -> None:
    from panns_lightning.redact import RedactingStream

    target = io.StringIO()
    stream = RedactingStream(target)
    stream.write(f"\rreading https://u:{PASSWORD}@h/x 10%")
    stream.flush()
    stream.write(f"\rreading https://u:{PASSWORD}@h/x 20%\r")
    assert PASSWORD not in target.getvalue() and target.getvalue().count(MASK) == 2


def test_the_console_is_masked_inside_and_restored_after(capsys: pytest.CaptureFixture[str]) -> None:
    from panns_lightning.redact import redacted_console

    with redacted_console():
        print("url", f"http://user:{PASSWORD}@host/")
        print(f"token=abc{PASSWORD}", file=sys.stderr)
    print(f"after: {PASSWORD}")
    out, err = capsys.readouterr()
    assert out == f"url http://user:{MASK}@host/\nafter: {PASSWORD}\n"
    assert err == f"token={MASK}\n"


def test_an_error_raised_in_a_dataloader_worker_is_shown_by_its_own_message() -> None:
    """torch re-raises a worker's exception with the worker's traceback in its message."""
    from panns_lightning.cli.entry import one_line

    worker_message = (
        "Caught NoReadableClipsError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise NoReadableClipsError(...)\n'
        f"panns_lightning.data.error_log.NoReadableClipsError: train stream: 4 shards, last http://u:{PASSWORD}@h/s.tar\n"
    )
    assert one_line("panns-train", RuntimeError(worker_message)) == (
        f"panns-train: train stream: 4 shards, last http://u:{MASK}@h/s.tar"
    )


class ClosedPipe(io.StringIO):
    """stdout whose reader went away: every write fails as a pipe's does."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_panns_tag_into_a_closed_pipe_ends_with_exit_code_0(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_torch_threads: None
) -> None:
    """``panns-tag a.wav b.wav | head -1``, in process: the table's first line meets a closed pipe."""
    import numpy as np
    import soundfile

    from panns_lightning.cli import tag as tag_cli

    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(8000, dtype=np.float32), 8000)
    ended: list[bool] = []
    monkeypatch.setattr("panns_lightning.cli.entry.end_on_closed_pipe", lambda: ended.append(True) or 0)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert tag_cli.main([str(wav), str(wav), "--checkpoint", str(cnn6_checkpoint())]) == 0
    assert ended == [True]


def test_a_decorated_main_passes_its_result_and_other_errors_through() -> None:
    from panns_lightning.cli.entry import console_entry

    @console_entry
    def main(code: int) -> int:
        if code < 0:
            raise ValueError("a bug keeps its traceback")
        return code

    assert main(3) == 3
    with pytest.raises(ValueError, match="a bug keeps"):
        main(-1)


@pytest.mark.slow
def test_a_reader_that_closes_the_pipe_ends_a_real_command_quietly(tmp_path: Path) -> None:
    """``panns-prepare inspect SET | head -1``, the reader gone before the first line: no traceback."""
    data = write_shard_set(tmp_path / "set", simple_clips(8, 2), [8], num_classes=2)
    process = subprocess.Popen(
        [str(BIN / "panns-prepare"), "inspect", str(data), "--draws", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


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


def test_hydras_echo_of_the_overrides_after_a_bug_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug (not a user error) keeps its traceback; Hydra prints the overrides before it, masked too."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from panns_lightning.cli.entry import console_entry

    (tmp_path / "app.yaml").write_text("url: null\n")

    @console_entry
    @hydra.main(version_base="1.3", config_path=str(tmp_path), config_name="app")
    def app(cfg: object) -> None:
        raise RuntimeError(f"a bug while reading {cfg.url}")  # type: ignore[attr-defined]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["app", f"url=http://user:{PASSWORD}@host/set/", f"hydra.run.dir={tmp_path}/run"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit):
            app()
    finally:  # Hydra configured logging for its job: give the next tests theirs back
        GlobalHydra.instance().clear()
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Error executing job with overrides: " in err and "RuntimeError: a bug while reading" in err
    assert PASSWORD not in err and f"user:{MASK}@host" in err

"""Where a collection's results go: a JSONL or CSV file written as it goes, and embeddings by path.

``--out FILE.jsonl|.csv`` gets one record per file the moment it is ready (flushed each time), so
an interrupted run keeps what it finished and ``--resume`` continues it: files that already have
a result are skipped, files recorded as failed are tried again (a reader takes a file's last
record). A line cut short by a crash is dropped before appending. Without ``--resume`` the file is
started afresh.

Embeddings (``--embed``): a folder gets ``<stem>.npy`` per file; ``FILE.npz`` one array per input
path, written atomically when the run ends (a resumed run keeps the arrays already there); a
``.parquet`` file (path, embedding) needs pyarrow, which is not a dependency.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from panns_lightning.atomic import atomic_open

OUTPUT_SUFFIXES = (".jsonl", ".csv")
EMBEDDING_SUFFIXES = (".npz", ".parquet")


class OutputError(ValueError):
    """An output path this writer cannot use (unknown suffix, an existing file it cannot continue)."""


class ResultWriter:
    """Append one record per file to ``path`` (``.jsonl`` or ``.csv``), flushed per record."""

    def __init__(self, path: Path, top_k: int, *, resume: bool) -> None:
        suffix = path.suffix.lower()
        if suffix not in OUTPUT_SUFFIXES:
            raise OutputError(f"--out {path}: expected a .jsonl or .csv file")
        self.path, self.top_k, self.format = path, top_k, suffix[1:]
        self.finished: set[str] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.exists():
            self.finished = self._read_finished()
            self._stream: IO[str] = path.open("a", encoding="utf-8", newline="")
        else:
            self._stream = path.open("w", encoding="utf-8", newline="")
            if self.format == "csv":
                self._stream.write(_csv_line(self.header()))
                self._stream.flush()

    def header(self) -> list[str]:
        ranks = [f"{name}_{rank}" for rank in range(1, self.top_k + 1) for name in ("label", "probability")]
        return ["file", "duration_s", "windows", "error", *ranks]

    def write(self, record: dict[str, Any]) -> None:
        """One file's record (``describe``'s dict, or ``{"file", "error"}``), flushed at once."""
        if self.format == "jsonl":
            self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            row = [record["file"], record.get("duration_s", ""), record.get("windows", ""), record.get("error", "")]
            for entry in record.get("top", [])[: self.top_k]:
                row += [entry["label"], entry["probability"]]
            self._stream.write(_csv_line(row))
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def _read_finished(self) -> set[str]:
        """Files with a result in the existing output; a torn last line is cut off first."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as stream:
                stream.truncate(keep)
            data = data[:keep]
        text = data.decode("utf-8")
        finished: dict[str, bool] = {}
        if self.format == "jsonl":
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    finished[str(record["file"])] = "error" not in record
                except (ValueError, KeyError, TypeError) as error:
                    raise OutputError(f"{self.path}: line {number} is not a panns-tag record ({error})") from None
            return {name for name, ok in finished.items() if ok}
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:  # an empty file: start it
            with self.path.open("w", encoding="utf-8", newline="") as stream:
                stream.write(_csv_line(self.header()))
            return set()
        if rows[0] != self.header():
            raise OutputError(
                f"{self.path}: its header {rows[0][:6]}... is not this run's (--top-k {self.top_k}); "
                "resume with the same --top-k, or write to a new file"
            )
        for row in rows[1:]:
            if row:
                finished[row[0]] = len(row) > 3 and not row[3]
        return {name for name, ok in finished.items() if ok}


class EmbeddingWriter:
    """Embeddings keyed by input path: a folder of ``.npy``, one ``.npz``, or a ``.parquet`` file."""

    def __init__(self, target: Path, *, resume: bool) -> None:
        suffix = target.suffix.lower()
        self.target = target
        self.kind = suffix[1:] if suffix in EMBEDDING_SUFFIXES else "folder"
        if suffix == ".npy":
            raise OutputError(f"--embed {target}: one .npy cannot say which row is which file; use .npz or a folder")
        self.vectors: dict[str, np.ndarray] = {}
        if self.kind == "folder":
            target.mkdir(parents=True, exist_ok=True)
            return
        if self.kind == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise OutputError(
                    f"--embed {target}: Parquet needs pyarrow (pip install pyarrow), or use .npz"
                ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        if resume and target.exists():
            self.vectors = self._read_existing()

    def add(self, path: str, stem: str, embedding: np.ndarray) -> str:
        """Keep one file's embedding; returns where it is (a file, or ``target#path``)."""
        if self.kind == "folder":
            destination = self.target / f"{stem}.npy"
            with atomic_open(destination, "wb") as stream:
                np.save(stream, embedding)
            return str(destination)
        self.vectors[path] = np.asarray(embedding, dtype=np.float32)
        return f"{self.target}#{path}"

    def close(self) -> None:
        """Write the ``.npz`` / ``.parquet`` file (atomically) with every embedding kept."""
        if self.kind == "folder" or not self.vectors:
            return
        if self.kind == "npz":
            with atomic_open(self.target, "wb") as stream:
                np.savez(stream, **self.vectors)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {"file": list(self.vectors), "embedding": [vector.tolist() for vector in self.vectors.values()]}
        )
        with atomic_open(self.target, "wb") as stream:
            pq.write_table(table, stream)

    def _read_existing(self) -> dict[str, np.ndarray]:
        if self.kind == "npz":
            with np.load(self.target, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        import pyarrow.parquet as pq

        table = pq.read_table(self.target).to_pydict()
        return {name: np.asarray(vector, dtype=np.float32) for name, vector in zip(table["file"], table["embedding"])}


def _csv_line(row: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row)
    return buffer.getvalue()

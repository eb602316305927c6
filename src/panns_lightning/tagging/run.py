"""Tag a collection: decode ahead in workers, batch windows across files, write results as they come.

The pieces: :class:`.prefetch.Prefetcher` (bounded, ordered, in worker processes) feeds
:class:`.batcher.WindowBatcher` (windows of many files per forward pass), whose per-file results
go to stdout (a table each, or one JSON document with ``--json``), to ``--out`` (JSONL / CSV,
flushed per file, resumable), to ``--sed`` and ``--embed``. A file that cannot be decoded or run
is reported with its reason and skipped; :func:`tag_files` then returns 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batcher import WindowBatcher
from .prefetch import Prefetcher
from .progress import Progress
from .report import describe, format_table, unique_stem, write_sed
from .writers import EmbeddingWriter, ResultWriter

EXIT_OK, EXIT_FAILED = 0, 1


@dataclass
class CollectionOptions:
    """How one ``panns-tag`` run over files behaves (see ``panns-tag --help``)."""

    top_k: int
    batch_size: int
    workers: int
    json: bool = False
    out: Path | None = None
    resume: bool = False
    sed: Path | None = None
    embed: Path | None = None
    progress: bool | None = None
    prog: str = "panns-tag"
    checkpoint: str = ""


def tag_files(tagger: Any, paths: list[Path], options: CollectionOptions) -> int:
    """Tag ``paths`` with ``tagger`` (an :class:`~panns_lightning.inference.AudioTagger`); 0 or 1."""
    writer = ResultWriter(options.out, options.top_k, resume=options.resume) if options.out else None
    embeddings = EmbeddingWriter(options.embed, resume=options.resume) if options.embed else None
    if options.sed is not None:
        options.sed.mkdir(parents=True, exist_ok=True)
    todo = [path for path in paths if writer is None or str(path) not in writer.finished]
    if writer is not None and len(todo) < len(paths):
        print(f"{options.prog}: --resume: {len(paths) - len(todo)} files already in {options.out}", file=sys.stderr)
    progress = Progress(len(todo), enabled=options.progress)
    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    stems: set[str] = set()
    ahead = options.batch_size + 2 * max(options.workers, 1)
    prefetcher = Prefetcher(todo, tagger.sample_rate, workers=options.workers, ahead=ahead)
    batcher = WindowBatcher(tagger, options.batch_size)
    try:
        for item in batcher.run(prefetcher):
            if item.output is None:
                failure = {"file": str(item.path), "error": item.error or "unknown error"}
                progress.note(f"{options.prog}: {item.path}: {failure['error']}")
                failures.append(failure)
                if writer is not None:
                    writer.write(failure)
                progress.update(failed=True)
                continue
            result = describe(item.path, tagger, item.output, options.top_k)
            stem = unique_stem(item.path, stems) if (options.sed or options.embed) else item.path.stem
            if options.sed is not None:
                result["sed"] = write_sed(
                    options.sed / stem, tagger, item.output, item.waveform, item.path, options.top_k
                )
            if embeddings is not None:
                result["embedding"] = embeddings.add(str(item.path), stem, item.output.embedding)
            if writer is not None:
                writer.write(result)
            if options.json:
                results.append(result)
            elif writer is None:
                print(format_table(result), flush=True)
            progress.update()
    finally:
        prefetcher.close()
        progress.close()
        if writer is not None:
            writer.close()
        if embeddings is not None:
            embeddings.close()
    if options.json:
        payload = {
            "checkpoint": options.checkpoint,
            "model": tagger.model_name,
            "task": tagger.card.task,
            "probabilities": tagger.card.activation,
            "sample_rate": tagger.sample_rate,
            "window_seconds": tagger.window_seconds,
            "results": results,
            "failures": failures,
        }
        print(json.dumps(payload, indent=2))
    return EXIT_FAILED if failures else EXIT_OK

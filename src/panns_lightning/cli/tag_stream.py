"""``panns-tag --stream -``: tag live or endless audio from stdin (or a named pipe), hop by hop.

``ffmpeg -i URL -f wav -ac 1 - | panns-tag --stream - --checkpoint best.ckpt`` prints one line per
event onset and offset (and, with ``--every``, the top labels of the current window). A WAV stream's
header says its rate and channels; raw PCM carries neither, so raw input needs ``--stdin-rate``
unless the model runs at :data:`DOCUMENTED_RAW_RATE`, the rate the documented raw command sends
(``ffmpeg ... -f s16le -ac 1 -ar 32000 -``): the rate is never guessed from the model.
The work is done by :mod:`panns_lightning.live`; this module parses options and prints.
Output lines go to stdout as they happen (flushed); the start and end summaries (the real-time
factor among them) go to stderr, or to stdout as ``start``/``end`` records with ``--jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time as clock
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from panns_lightning import input_limits
from panns_lightning.input_limits import SampleRateError, check_sample_rate
from panns_lightning.live import DEFAULT_HOP_SECONDS, DEFAULT_WINDOW_SECONDS, MAX_WINDOW_SECONDS
from panns_lightning.live.events import Event, EventTracker
from panns_lightning.live.pcm import STREAM_FORMATS, StreamFormatError, open_pcm_stream

if TYPE_CHECKING:  # torch: imported by run(), not by panns-tag --help
    from panns_lightning.live.tagger import Hop, StreamTagger

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DOCUMENTED_RAW_RATE = input_limits.PANNS_SAMPLE_RATE
"""What the raw PCM command in the docs sends (``-ar 32000``): raw input without --stdin-rate is
read at this rate only when the model runs at it too."""
DEFAULT_STREAM_TOP_K = 3
DEFAULT_ONSET, DEFAULT_OFFSET, DEFAULT_ONSET_HOPS, DEFAULT_OFFSET_HOPS = 0.5, 0.3, 2, 2
SLOW_WARNING_AFTER_SECONDS = 10.0
"""Stream seconds after which a real-time factor above 1 is reported (once)."""
_FILE_ONLY = (
    ("sed", "--sed"),
    ("embed", "--embed"),
    ("json", "--json (use --jsonl)"),
    ("window_seconds", "--window-seconds (use --window)"),
)
_STREAM_ONLY = (
    "stdin_format",
    "stdin_rate",
    "stdin_channels",
    "window",
    "hop",
    "onset",
    "offset",
    "onset_hops",
    "offset_hops",
    "every",
    "jsonl",
)


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--stream`` options of ``panns-tag`` (defaults ``None``: they are resolved in :func:`run`)."""
    group = parser.add_argument_group("live and endless audio (--stream)")
    group.add_argument(
        "--stream", default=None, metavar="SOURCE", help="tag a stream: - for stdin, or a path (named pipe)"
    )
    group.add_argument(
        "--stdin-format",
        choices=STREAM_FORMATS,
        default=None,
        help="auto (default): WAV when the stream starts with a RIFF header, else raw s16le",
    )
    group.add_argument(
        "--stdin-rate",
        type=_positive_int,
        default=None,
        metavar="HZ",
        help=f"raw PCM rate; required for raw input unless the model runs at {DOCUMENTED_RAW_RATE} Hz "
        "(a WAV stream's header gives its own: ffmpeg ... -f wav -)",
    )
    group.add_argument(
        "--stdin-channels", type=_positive_int, default=None, metavar="N", help="raw PCM channels, averaged (default 1)"
    )
    group.add_argument(
        "--window",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"analysis window (default {DEFAULT_WINDOW_SECONDS:g})",
    )
    group.add_argument(
        "--hop",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"analyse every hop (default {DEFAULT_HOP_SECONDS:g})",
    )
    group.add_argument(
        "--onset",
        type=float,
        default=None,
        metavar="P",
        help=f"event starts at probability >= P (default {DEFAULT_ONSET})",
    )
    group.add_argument(
        "--offset", type=float, default=None, metavar="P", help=f"event ends below P (default {DEFAULT_OFFSET})"
    )
    group.add_argument(
        "--onset-hops",
        type=_positive_int,
        default=None,
        metavar="K",
        help=f"hops in a row >= onset (default {DEFAULT_ONSET_HOPS})",
    )
    group.add_argument(
        "--offset-hops",
        type=_positive_int,
        default=None,
        metavar="K",
        help=f"hops in a row < offset (default {DEFAULT_OFFSET_HOPS})",
    )
    group.add_argument(
        "--every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also print the top-k labels this often (a multiple of --hop)",
    )
    group.add_argument("--jsonl", action="store_true", default=None, help="one JSON object per line")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit 2): files and a stream together, stream options without one, and vice versa."""
    if args.stream is None:
        used = [name for name in _STREAM_ONLY if getattr(args, name) is not None]
        if used:
            parser.error(f"--{used[0].replace('_', '-')} needs --stream")
        if not args.audio:
            parser.error("give audio files, or --stream - to read audio from stdin")
        return
    if args.audio:
        parser.error("--stream reads one stream; give no audio files with it")
    for name, flag in _FILE_ONLY:
        if getattr(args, name) not in (None, False):
            parser.error(f"{flag} does not apply to --stream")
    for name in ("onset", "offset"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            parser.error(f"--{name} must be a probability in [0, 1], got {value}")
    for name in ("window", "hop", "every"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            parser.error(f"--{name} must be a positive number of seconds, got {value}")
    for name in ("window", "hop"):
        value = getattr(args, name)
        if value is not None and value > MAX_WINDOW_SECONDS:
            parser.error(f"--{name} must be at most {MAX_WINDOW_SECONDS:g} seconds, got {value:g}")
    if args.stdin_rate is not None:
        try:
            check_sample_rate(args.stdin_rate, "--stdin-rate")
        except SampleRateError as error:
            parser.error(str(error))


def run(args: argparse.Namespace, tagger: Any, prog: str) -> int:
    """Stream ``args.stream`` through ``tagger``; returns the exit code."""
    window = args.window if args.window is not None else DEFAULT_WINDOW_SECONDS
    hop = args.hop if args.hop is not None else DEFAULT_HOP_SECONDS
    onset = args.onset if args.onset is not None else DEFAULT_ONSET
    offset = args.offset if args.offset is not None else min(DEFAULT_OFFSET, onset)
    try:
        tracker = EventTracker(
            len(tagger.labels),
            onset=onset,
            offset=offset,
            onset_hops=args.onset_hops or DEFAULT_ONSET_HOPS,
            offset_hops=args.offset_hops or DEFAULT_OFFSET_HOPS,
        )
        every_hops = _every_in_hops(args.every, hop, args.top_k is not None)
    except ValueError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    from panns_lightning.live.tagger import StreamTagger

    name = "stdin" if args.stream == "-" else str(args.stream)
    with ExitStack() as stack:
        try:
            source = sys.stdin.buffer if args.stream == "-" else stack.enter_context(Path(args.stream).open("rb"))
            pcm = open_pcm_stream(
                source,
                sample_format=args.stdin_format or "auto",
                sample_rate=args.stdin_rate,
                channels=args.stdin_channels,
                default_rate=tagger.sample_rate if tagger.sample_rate == DOCUMENTED_RAW_RATE else None,
                name=name,
            )
        except (OSError, StreamFormatError) as error:
            print(f"{prog}: {error}", file=sys.stderr)
            return EXIT_FAILED
        try:
            streamer = StreamTagger.from_tagger(
                tagger, input_rate=pcm.info.sample_rate, window_seconds=window, hop_seconds=hop, tracker=tracker
            )
        except ValueError as error:
            print(f"{prog}: {error}", file=sys.stderr)
            return EXIT_USAGE
        printer = Printer(
            tagger.labels, jsonl=bool(args.jsonl), top_k=args.top_k or DEFAULT_STREAM_TOP_K, every_hops=every_hops
        )
        printer.start(name, pcm.info.describe(), tagger, streamer, prog)
        try:
            return _loop(pcm, streamer, printer, prog)
        except BrokenPipeError:  # the reader went away (e.g. | head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK


def _loop(pcm: Any, streamer: StreamTagger, printer: Printer, prog: str) -> int:
    code, failure, warned = EXIT_OK, None, False
    started = clock.perf_counter()
    try:
        for chunk in pcm.chunks(max(1, round(streamer.hop_seconds * pcm.info.sample_rate))):
            for hop in streamer.push(chunk):
                printer.hop(hop)
            if not warned and streamer.time >= SLOW_WARNING_AFTER_SECONDS and streamer.busy_seconds > streamer.time:
                warned = True
                print(
                    f"{prog}: processing is slower than real time (real-time factor "
                    f"{streamer.busy_seconds / streamer.time:.2f} over {streamer.time:.0f} s): a live source will "
                    "fall behind; use a larger --hop, a shorter --window or a smaller model",
                    file=sys.stderr,
                )
    except StreamFormatError as error:
        code, failure = EXIT_FAILED, str(error)
    except KeyboardInterrupt:
        code, failure = EXIT_INTERRUPTED, "interrupted"
    hops, closing = streamer.finish()
    if failure is None and streamer.time == 0:
        code, failure = EXIT_FAILED, f"{pcm.name}: empty stream (no samples)"
    for hop in hops:
        printer.hop(hop)
    for event in closing:
        printer.event(event)
    printer.end(streamer, clock.perf_counter() - started, failure, prog)
    if failure is not None and code == EXIT_FAILED:
        print(f"{prog}: {failure}", file=sys.stderr)
    return code


class Printer:
    """Formats hops and events as text lines or JSON lines, flushed one by one (a live reader waits)."""

    def __init__(
        self, labels: list[str], *, jsonl: bool, top_k: int, every_hops: int | None, out: TextIO | None = None
    ):
        self.labels, self.jsonl, self.top_k, self.every_hops = labels, jsonl, top_k, every_hops
        self.out = out
        self.events = 0
        self.hop_seconds: list[float] = []

    def start(self, name: str, layout: str, tagger: Any, streamer: StreamTagger, prog: str) -> None:
        if self.jsonl:
            self._emit(
                {
                    "type": "start",
                    "source": name,
                    "input": layout,
                    "model": tagger.model_name,
                    "sample_rate": streamer.sample_rate,
                    "window_s": streamer.window_seconds,
                    "hop_s": streamer.hop_seconds,
                }
            )
            return
        print(
            f"{prog}: tagging {name} ({layout}) with {tagger.model_name} at {streamer.sample_rate} Hz: "
            f"window {streamer.window_seconds:g} s, hop {streamer.hop_seconds:g} s",
            file=sys.stderr,
            flush=True,
        )

    def hop(self, hop: Hop) -> None:
        self.hop_seconds.append(hop.seconds)
        for event in hop.events:
            self.event(event)
        if self.every_hops is None or hop.index % self.every_hops:
            return
        order = np.argsort(-hop.probabilities, kind="stable")[: self.top_k]
        if self.jsonl:
            top = [
                {"label": self.labels[i], "index": int(i), "probability": round(float(hop.probabilities[i]), 6)}
                for i in order
            ]
            self._emit({"type": "top", "time": round(hop.time, 6), "start": round(hop.start, 6), "top": top})
        else:
            ranked = " | ".join(f"{self.labels[i]} {hop.probabilities[i]:.2f}" for i in order)
            self._emit(f"{hop.time:9.2f} s  top     {ranked}")

    def event(self, event: Event) -> None:
        self.events += 1
        label = self.labels[event.index]
        if self.jsonl:
            record: dict[str, Any] = {
                "type": event.kind,
                "time": round(event.time, 6),
                "label": label,
                "index": event.index,
                "decided": round(event.decided, 6),
            }
            if event.kind == "onset":
                record["probability"] = round(event.probability, 6)
            else:
                record.update(onset=round(event.onset or 0.0, 6), duration=round(event.duration or 0.0, 6))
                record["peak"] = round(event.probability, 6)
            self._emit(record)
        elif event.kind == "onset":
            self._emit(f"{event.time:9.2f} s  onset   {label} ({event.probability:.2f})")
        else:
            self._emit(
                f"{event.time:9.2f} s  offset  {label} (from {event.onset:.2f} s, {event.duration:.2f} s long, "
                f"peak {event.probability:.2f})"
            )

    def end(self, streamer: StreamTagger, wall: float, failure: str | None, prog: str) -> None:
        audio = streamer.time
        per_hop = np.array(self.hop_seconds or [0.0]) * 1000
        summary = {
            "type": "end",
            "time": round(audio, 6),
            "hops": streamer.hops,
            "events": self.events,
            "processing_s": round(streamer.busy_seconds, 3),
            "wall_s": round(wall, 3),
            "rtf": round(streamer.busy_seconds / audio, 4) if audio > 0 else None,
            "model_ms_mean": round(float(per_hop.mean()), 2),
            "model_ms_p95": round(float(np.percentile(per_hop, 95)), 2),
        }
        if failure is not None:
            summary["error"] = failure
        if self.jsonl:
            self._emit(summary)
            return
        rtf = "n/a" if summary["rtf"] is None else f"{summary['rtf']:.3f}"
        print(
            f"{prog}: end of stream at {audio:.2f} s: {streamer.hops} hops, {self.events} events; "
            f"processing {streamer.busy_seconds:.2f} s (real-time factor {rtf}), model "
            f"{summary['model_ms_mean']:.0f} ms per hop (p95 {summary['model_ms_p95']:.0f} ms)",
            file=sys.stderr,
            flush=True,
        )

    def _emit(self, line: str | dict[str, Any]) -> None:
        text = line if isinstance(line, str) else json.dumps(line)
        print(text, file=self.out or sys.stdout, flush=True)


def _every_in_hops(every: float | None, hop: float, top_k_given: bool) -> int | None:
    """``--every`` as a whole number of hops; ``--top-k`` alone means every hop; neither: no top lines."""
    if every is None:
        return 1 if top_k_given else None
    hops = round(every / hop)
    if hops < 1 or abs(hops * hop - every) > 1e-6 * max(every, 1.0):
        raise ValueError(f"--every must be a whole number of hops ({hop:g} s), got {every:g} s")
    return hops


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value

"""Run the commands the docs show, as written, on tiny data (tests/test_preset_recipes.py, tests/test_readme.py).

A command is taken from a ```bash block of a page, split like a shell splits it, and run with a few
arguments appended that make it cheap (a lower rate, shorter clips, two steps), never with any of
its own words changed: what a reader copies is what the test runs. The datasets' official layouts
are made here, tiny, by the test helpers of their converters.
"""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Appended to every command of its kind: the last value of a flag or key wins, so these make a
# recipe cheap without rewriting it.
FAST_RATE = 8000
FAST_CONVERT = [
    "--sample-rate",
    str(FAST_RATE),
    "--clip-seconds",
    "1",
    "--workers",
    "0",
    "--min-shards",
    "2",
    "--quiet",
]
FAST_SYNTHETIC = ["--num-classes", "4", "--num-train", "40", "--num-eval", "16", "--clip-seconds", "1", "--quiet"]
FAST_MODEL = [
    f"model.sample_rate={FAST_RATE}",
    "model.window_size=256",
    "model.hop_size=80",
    "model.mel_bins=32",
    "model.fmax=4000",
]
FAST_RUN = [
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.precision=32-true",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.steps_per_epoch=2",
    "data.shuffle_buffer=16",
    "augment.specaugment.time_drop_width=8",
    "logger=none",
]


def bash_blocks(markdown: str) -> list[str]:
    """The bodies of the ```bash blocks of a Markdown text, in order."""
    return re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split(" # ")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def sections(markdown: str) -> dict[str, list[str]]:
    """``{heading text: commands of the bash blocks under it}`` for every ``## heading``."""
    found: dict[str, list[str]] = {}
    for heading, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", markdown, flags=re.MULTILINE | re.DOTALL):
        found[heading.strip()] = [command for block in bash_blocks(body) for command in commands(block)]
    return found


def split(command: str, cwd: Path) -> list[str]:
    """``command`` as the shell would pass it: words, with unquoted globs expanded (sorted) in ``cwd``."""
    words: list[str] = []
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    for raw, word in zip(_raw_words(command), lexer):
        quoted = raw[:1] in "'\""
        if not quoted and any(c in word for c in "*?["):
            matches = sorted(glob.glob(word, root_dir=cwd))
            words += matches or [word]  # bash passes an unmatched glob as it is
        else:
            words.append(word)
    return words


def _raw_words(command: str) -> list[str]:
    """The words of ``command`` before unquoting (to tell a quoted glob from an unquoted one)."""
    return re.findall(r"""(?:"[^"]*"|'[^']*'|\S)+""", command)


def make_layout(kind: str, root: Path) -> None:
    """A tiny copy of dataset ``kind``'s official layout at ``root`` (the converter tests' helpers)."""
    if kind == "esc50":
        from test_esc50_converter import make_esc50

        make_esc50(root)
    elif kind == "gtzan":
        from test_gtzan_converter import make_gtzan

        make_gtzan(root, folder="genres", extension="au", per_genre=10)
    elif kind == "ravdess":
        from test_ravdess_converter import make_ravdess

        make_ravdess(root, actors=range(1, 9))
    elif kind == "folder":
        from test_own_data import make_folder

        make_folder(root, per_class=8)
    elif kind == "audioset":
        from panns_lightning.datasets.synthetic import generate_synthetic_audioset

        generate_synthetic_audioset(root, num_classes=4, num_train=40, num_eval=16, clip_seconds=1, progress=False)
    else:
        raise ValueError(f"no tiny layout for {kind!r}")

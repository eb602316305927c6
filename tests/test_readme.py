"""The README's tour runs: every command, in order, as written (with fewer steps appended), on data made
the way `make demo` makes it; and every other command of the README and the getting-started page is
accounted for."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from doc_commands import FAST_MODEL, FAST_RUN, REPO, bash_blocks, commands, split
from test_preset_recipes import recipes, run_recipe_command

BIN = Path(sys.executable).parent
README = (REPO / "README.md").read_text(encoding="utf-8")
GETTING_STARTED = (REPO / "docs" / "getting-started.md").read_text(encoding="utf-8")

# What each tour step gets appended: fewer steps, a smaller model (step 2; step 4 takes it from the
# checkpoint's card), one data-loading process.
TOUR_EXTRA = {
    "panns-prepare": ["--sample-rate", "8000", "--clip-seconds", "1", "--workers", "0", "--quiet"],
    "panns-train": [*FAST_MODEL, *FAST_RUN],
    "panns-eval": ["num_workers=0", "batch_size=8"],
    "panns-finetune": FAST_RUN,
    "panns-tag": [],
    "panns-export": [],
}
# Commands of the README and the getting-started page outside the tour, and where each one runs.
ELSEWHERE = {
    "make demo": "its data and training: tests/test_preset_recipes.py (demo, demo_finetune); panns-eval: the tour",
    "make test": ".ci/run",
    "make lint": ".ci/run",
    "make test-fast": "make test runs a superset",
    "make bench": "benchmarks/ (figures only, not a test)",
}


def tour() -> list[str]:
    section = re.search(r"--8<-- \[start:tour\](.*?)--8<-- \[end:tour\]", README, flags=re.DOTALL)
    assert section, "README.md has no tour markers"
    blocks = bash_blocks(section.group(1))
    assert len(blocks) == 1
    return commands(blocks[0])


def test_the_getting_started_page_includes_the_tour_and_every_other_command_runs_somewhere() -> None:
    assert '--8<-- "README.md:tour"' in GETTING_STARTED
    tour_commands = set(tour())
    outside = [
        command
        for text in (README, GETTING_STARTED)
        for block in bash_blocks(text)
        for command in commands(block)
        if command not in tour_commands
    ]
    assert outside and sorted(set(outside) - set(ELSEWHERE)) == []


def make_demo_data(root: Path) -> None:
    """What `make demo` leaves for the tour: the demo's data and shards, the fine-tuning set (tiny)."""
    for preset in ("demo", "demo_finetune"):
        for command in recipes()[preset]:
            if not command.startswith(("panns-train", "panns-finetune")):
                run_recipe_command(command, root, root / "unused")


@pytest.mark.slow
def test_the_tour_runs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_demo_data(tmp_path)
    steps = tour()
    assert steps[0] == "source .venv/bin/activate"  # the console scripts below are this interpreter's
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    outputs = {}
    for command in steps[1:]:
        program, *args = split(command, tmp_path)
        assert program in TOUR_EXTRA, f"a tour step this test does not know: {command}"
        done = subprocess.run(
            [str(BIN / program), *args, *TOUR_EXTRA[program]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs[program] = outputs.get(program, "") + done.stdout + done.stderr  # panns-tag runs twice
    # Step 5 tags with the fine-tuned model: the classes it names are the fine-tuning set's, not the demo's.
    manifest = json.loads((tmp_path / "data" / "demo_finetune" / "shards" / "manifest.json").read_text())
    finetune_classes = {label["name"] for label in manifest["labels"]}
    pretrain_manifest = json.loads((tmp_path / "data" / "demo" / "shards" / "train" / "manifest.json").read_text())
    pretrain_classes = {label["name"] for label in pretrain_manifest["labels"]} - finetune_classes
    tagged = outputs["panns-tag"]
    assert any(name in tagged for name in finetune_classes), tagged[-2000:]
    assert not any(name in tagged for name in pretrain_classes), tagged[-2000:]
    # The folder step wrote one JSON line per audio file, each naming fine-tuning classes.
    lines = (tmp_path / "outputs" / "tour" / "tags.jsonl").read_text().splitlines()
    assert len(lines) == len(list((tmp_path / "data" / "demo_finetune" / "raw" / "audio").glob("*.wav")))
    assert all(json.loads(line) and any(name in line for name in finetune_classes) for line in lines)
    assert (tmp_path / "outputs" / "tour" / "model.onnx").stat().st_size > 0
    check_carded_pth_evaluates_like_its_ckpt(tmp_path, env)


def _eval_metrics(output: str) -> list[str]:
    """The metric lines panns-eval prints (``mAP   0.6602`` ...)."""
    return [line.strip() for line in output.splitlines() if re.match(r"\s*(mAP|AUC|d-prime)\s+\d", line)]


def check_carded_pth_evaluates_like_its_ckpt(root: Path, env: dict[str, str]) -> None:
    """Beside the tour: step 2's checkpoint exported as upstream's .pth (with its model card) scores what
    the .ckpt scored in panns-eval, with no flags (the .pth names its network, front end and classes)."""
    pth = root / "outputs" / "tour" / "model.pth"
    command = [str(BIN / "panns-export"), "outputs/tour/checkpoints/best.ckpt", "--format", "panns", "--out", str(pth)]
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True, timeout=600)
    scores = []
    for name, checkpoint in (("ckpt", "outputs/tour/checkpoints/best.ckpt"), ("pth", str(pth))):
        done = subprocess.run(
            [
                str(BIN / "panns-eval"),
                f"ckpt_path={checkpoint}",
                "data_dir=data/tour/eval",
                f"hydra.run.dir=outputs/eval_{name}",
            ]
            + TOUR_EXTRA["panns-eval"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        scores.append(_eval_metrics(done.stdout + done.stderr))
    assert scores[0] and scores[0] == scores[1], scores

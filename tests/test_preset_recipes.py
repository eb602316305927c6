"""docs/recipes.md: the CPU recipe of every preset runs, as written, on a tiny copy of its dataset's layout."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest

from doc_commands import FAST_CONVERT, FAST_MODEL, FAST_RUN, FAST_SYNTHETIC, REPO, make_layout, sections, split

PAGE = REPO / "docs" / "recipes.md"
# Where each recipe reads its dataset from (its official layout, made tiny by the test); the demo
# recipes make their own data.
LAYOUTS = {
    "finetune_esc50": ("esc50", "ESC-50-master"),
    "finetune_gtzan": ("gtzan", "GTZAN"),
    "finetune_ravdess": ("ravdess", "RAVDESS"),
    "finetune_custom": ("folder", "my_sounds"),
    "pretrain_audioset": ("audioset", "AudioSet"),
}


def recipes() -> dict[str, list[str]]:
    found = {}
    for heading, commands in sections(PAGE.read_text(encoding="utf-8")).items():
        named = re.fullmatch(r"`experiment=(\w+)`", heading)
        if named:
            found[named.group(1)] = commands
    return found


def test_every_preset_has_a_recipe() -> None:
    presets = sorted(path.stem for path in (REPO / "experiments").glob("*.yaml"))
    assert sorted(recipes()) == presets
    for name, commands in recipes().items():
        runs = [c for c in commands if c.startswith(("panns-train ", "panns-finetune "))]
        assert len(runs) == 1 and f"experiment={name}" in runs[0].split(), name


def test_the_demo_recipe_is_what_make_demo_data_runs() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    values = dict(re.findall(r"^(DEMO_RATE|DEMO_SECONDS|DEMO_DIR) := (\S+)$", makefile, flags=re.MULTILINE))
    recipe = re.search(r"^demo-data:.*?\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE).group(1)
    made = re.sub(r"\\\n\s*", " ", recipe).replace("$(BIN)/", "")
    for name, value in values.items():
        made = made.replace(f"$({name})", value)
    lines = [" ".join(line.split()) for line in made.splitlines() if line.strip()]
    assert lines == [" ".join(c.split()) for c in recipes()["demo"] if c.startswith("panns-prepare")]


def run_recipe_command(command: str, cwd: Path, out: Path) -> dict:
    """Run one command of a recipe in this process, with the cheap arguments appended; the run's results."""
    from hydra import compose, initialize_config_dir

    from panns_lightning.cli import prepare
    from panns_lightning.cli.finetune import finetune
    from panns_lightning.cli.hydra_app import find_config_dir
    from panns_lightning.cli.train import train

    program, *args = split(command, cwd)
    if program == "python":
        assert args[0] == "-c", command
        exec(compile(args[1], "<recipe>", "exec"), {"__name__": "recipe"})
        return {}
    if program == "panns-prepare":
        fast = FAST_SYNTHETIC if args[0] == "synthetic" else FAST_CONVERT
        assert prepare.main([*args, *fast]) == 0, command
        return {}
    app = {"panns-train": train, "panns-finetune": finetune}[program]
    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*args, *FAST_MODEL, *FAST_RUN, f"paths.output_dir={out}"])
    return app(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(recipes()))
def test_the_cpu_recipe_runs(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    if preset in LAYOUTS:
        kind, root = LAYOUTS[preset]
        assert any(f" {root}" in c for c in recipes()[preset]), f"the {preset} recipe does not read {root}"
        make_layout(kind, tmp_path / root)
    results: dict = {}
    with caplog.at_level(logging.WARNING, logger="panns_lightning.finetune"):
        for command in recipes()[preset]:
            results = run_recipe_command(command, tmp_path, tmp_path / "run") or results
    assert math.isfinite(results["train/loss"]) if "train/loss" in results else results, results
    assert (tmp_path / "run" / "checkpoints").is_dir()
    if preset.startswith(("finetune", "demo_finetune")):
        assert "score" in results and 0.0 <= results["score"] <= 1.0
        # No finetune.checkpoint in a recipe: the run says it trains from random weights, once.
        assert sum("from random weights" in r.getMessage() for r in caplog.records) == 1

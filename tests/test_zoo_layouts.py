"""Guessing a published file's network compares key sets from a table, building no network (issue 21)."""

from __future__ import annotations

import pytest
import torch

from panns_lightning.models import FRONTEND_DEFAULTS, build_model
from panns_lightning.models import checkpoint as checkpoint_module
from panns_lightning.models.checkpoint import best_matching_models, built_layout, layouts_json, recorded_layouts
from panns_lightning.models.registry import list_models


@pytest.mark.slow
def test_the_table_is_what_the_zoo_builds() -> None:
    """scripts/zoo_layouts.py regenerates the table after a zoo change; this says when it must."""
    built = {name: built_layout(name) for name in list_models()}
    assert recorded_layouts() == built, "run scripts/zoo_layouts.py"
    assert checkpoint_module.LAYOUTS_FILE.read_text(encoding="utf-8") == layouts_json(built)


def test_guessing_builds_no_network(monkeypatch) -> None:
    with torch.device("meta"):
        state = build_model("Cnn6", **FRONTEND_DEFAULTS["Cnn6"], classes_num=10).state_dict()

    def refuse(*args, **kwargs):
        raise AssertionError("a network was built to guess the model")

    monkeypatch.setattr(checkpoint_module, "build_model", refuse)
    checkpoint_module.built_layout.cache_clear()
    try:
        names, score = best_matching_models(state)
    finally:
        checkpoint_module.built_layout.cache_clear()
    assert names == ["Cnn6"] and score == 1.0

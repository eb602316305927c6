"""The layout keeps each fact in one home: config presets list exactly the schema's keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from panns_lightning.cli.config_schema import DataConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("preset", sorted(path.name for path in (CONF / "data").glob("*.yaml")))
def test_data_presets_list_the_stream_options_of_the_schema(preset: str) -> None:
    keys = set(yaml.safe_load((CONF / "data" / preset).read_text()))
    assert keys == {field.name for field in dataclasses.fields(DataConfig)}

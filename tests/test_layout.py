"""The layout keeps each fact in one home: config presets list exactly the schema's keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from panns_lightning.cli.config_schema import DataConfig
from panns_lightning.training.augment import AugmentOptions

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("preset", sorted(path.name for path in (CONF / "data").glob("*.yaml")))
def test_data_presets_list_the_stream_options_of_the_schema(preset: str) -> None:
    keys = set(yaml.safe_load((CONF / "data" / preset).read_text()))
    assert keys == {field.name for field in dataclasses.fields(DataConfig)}


def _keys(node: object, prefix: str = "") -> set[str]:
    """Dotted leaf keys of a dataclass tree or a YAML mapping."""
    if dataclasses.is_dataclass(node):
        node = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
    if not isinstance(node, dict):
        return {prefix}
    return {key for name, value in node.items() if name != "defaults" for key in _keys(value, f"{prefix}{name}.")}


@pytest.mark.parametrize("preset", sorted(path.name for path in (CONF / "augment").glob("*.yaml")))
def test_augment_presets_use_the_keys_of_the_one_augment_config(preset: str) -> None:
    content = yaml.safe_load((CONF / "augment" / preset).read_text())
    schema = _keys(AugmentOptions())
    if "defaults" in content:  # a preset on top of another one: any subset
        assert _keys(content) <= schema
    else:
        assert _keys(content) == schema

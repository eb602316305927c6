"""panns-prepare's shared options: one table, one validator, one writer-argument builder."""

from __future__ import annotations

import argparse

import pytest

from panns_lightning.cli import prepare
from panns_lightning.cli.prepare_options import (
    OPTIONS,
    WRITER_FLAGS,
    add_options,
    positive_problems,
    writer_arguments,
    writer_problems,
)
from panns_lightning.datasets.registry import AUDIOSET_HDF5_LAYOUTS, CUSTOM_DATASETS, FOLDED_DATASETS
from panns_lightning.input_limits import PANNS_SAMPLE_RATE


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = prepare.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_converter_of_the_registry_takes_every_writer_flag() -> None:
    commands = _subcommands()
    converters = ["audioset", *AUDIOSET_HDF5_LAYOUTS, *FOLDED_DATASETS, *CUSTOM_DATASETS]
    assert set(converters) <= set(commands)
    for name in converters:
        flags = {flag for action in commands[name]._actions for flag in action.option_strings}
        assert set(WRITER_FLAGS) <= flags, name
        assert commands[name].get_default("sample_rate") == PANNS_SAMPLE_RATE, name


def test_per_command_defaults_come_from_changes_not_a_second_declaration() -> None:
    commands = _subcommands()
    assert commands["audioset"].get_default("clips_per_shard") == 1000
    assert commands["esc50"].get_default("clips_per_shard") == OPTIONS["--clips-per-shard"]["default"]
    assert commands["esc50"].get_default("clip_seconds") == FOLDED_DATASETS["esc50"].clip_seconds
    assert commands["audioset-hdf5"].get_default("clip_seconds") is None
    with pytest.raises(ValueError, match="--val-out"):
        add_options(argparse.ArgumentParser(), WRITER_FLAGS, {"--val-out": {"default": "x"}})


def _args(command: str, *extra: str) -> argparse.Namespace:
    args = prepare.build_parser().parse_args([command, "--root", "r", "--out", "o", *extra])
    args.command_line = "panns-prepare test"
    return args


def test_one_validator_names_each_bad_value() -> None:
    args = _args("esc50", "--clip-seconds", "-1", "--clips-per-shard", "0", "--decode-timeout", "-2")
    problems = writer_problems(args)
    assert "--clip-seconds must be positive, got -1" in problems
    assert "--clips-per-shard must be positive, got 0" in problems
    assert any(p.startswith("--decode-timeout must be >= 0") for p in problems)
    assert not any("--sample-rate" in p for p in problems)
    assert positive_problems(_args("gtzan")) == []


def test_writer_arguments_follow_the_flags() -> None:
    arguments = writer_arguments(_args("ravdess", "--sample-rate", "16000", "--quiet", "--storage", "flac"))
    assert arguments["sample_rate"] == 16000
    assert arguments["clip_samples"] == int(FOLDED_DATASETS["ravdess"].clip_seconds * 16000)
    assert arguments["storage"] == "flac" and arguments["progress"] is False
    assert arguments["created_by"] == "panns-prepare test"

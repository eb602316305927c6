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


def test_no_import_cycle_between_the_files_of_src() -> None:
    """Every import (also inside functions) as an edge between files; no file reaches itself again.

    The acyclic_siblings contract (make lint) checks the same per package level; this names the files.
    """
    import grimp

    graph = grimp.build_graph("panns_lightning", cache_dir=None)
    edges = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    cycles = [sorted(component) for component in _strongly_connected(edges) if len(component) > 1]
    assert cycles == []


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in edges:
                    continue
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


@pytest.mark.parametrize("preset", sorted(path.stem for path in (CONF / "debug").glob("*.yaml")))
def test_debug_presets_compose_on_an_experiment_and_validate(preset: str) -> None:
    from hydra import compose, initialize_config_dir

    from panns_lightning.cli.config_schema import validate_train_config
    from panns_lightning.cli.hydra_app import find_config_dir

    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = validate_train_config(compose("train", overrides=["experiment=demo", f"debug={preset}"]))
    assert cfg.task_name == "debug" and cfg.data.num_workers == 0 and cfg.trainer.accelerator == "cpu"
    if preset == "overfit":
        assert cfg.data.steps_per_epoch == 1 and cfg.callbacks.stream_epoch is None
        assert not cfg.augment.mixup.enabled and not cfg.augment.specaugment.enabled


MAX_SRC_LINES = 600


def test_every_file_in_src_is_at_most_600_lines() -> None:
    """Small modules with one job (a longer file is two jobs; `python scripts/largest.py` lists the largest)."""
    src = CONF.parent / "src"
    lengths = {
        str(path.relative_to(src)): len(path.read_text(encoding="utf-8").splitlines()) for path in src.rglob("*.py")
    }
    assert len(lengths) > 50
    assert {path: n for path, n in lengths.items() if n > MAX_SRC_LINES} == {}

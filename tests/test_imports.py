"""The package's import graph has no cycle: every ``import`` of an rlgate module, at module
level or inside a function, read from the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package it is installed as
PACKAGES = {"rlgate": "rlgate", "agents": "rlgate.agents", "envs": "rlgate.envs"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            if folder == "rlgate" and path.relative_to(ROOT / folder).parts[0] in (
                "agents",
                "envs",
            ):
                continue
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the rlgate modules it imports (``from pkg import name`` counts as pkg.name
    where that is a module; the implicit import of a module's parent package is left out)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module not in modules:
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_reads_the_package():
    graph = import_graph()
    assert "rlgate.agents.rollout" in graph["rlgate.train"]
    assert "rlgate.envs.base" in graph["rlgate.envs.grid"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_layers_point_down():
    """Evaluation and the agents never reach into the trainer; the envs know no agent."""
    graph = import_graph()
    assert "rlgate.train" not in graph["rlgate.evaluate"]
    for module, targets in graph.items():
        if module.startswith("rlgate.agents"):
            assert "rlgate.train" not in targets, module
        if module.startswith("rlgate.envs"):
            assert not any(t.startswith(("rlgate.agents", "rlgate.train")) for t in targets)


def test_every_agent_has_a_config_section_and_a_learner():
    from rlgate.agents.learner import Learner
    from rlgate.agents.registry import AGENTS
    from rlgate.config import AGENT_SECTIONS, TrainConfig

    assert list(AGENTS) == list(AGENT_SECTIONS)
    for name, agent in AGENTS.items():
        assert issubclass(agent.learner, Learner)
        cfg = TrainConfig(agent=name)
        assert isinstance(cfg.section, AGENT_SECTIONS[name])

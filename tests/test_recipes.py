"""Named recipes: each is a valid config, its printed flags stand for it, ``--recipe`` starts
from it, and the docs, the benchmark and the sweep train the registered ones."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from rlgate import cli, sweep
from rlgate.cli import _parse, train_config
from rlgate.config import TrainConfig
from rlgate.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_recipe_is_the_config_its_flags_give(name):
    """``rlgate recipes`` prints the flags a recipe stands for: parsed as plain flags they give
    the recipe's config, which holds every setting of the recipe."""
    recipe = RECIPES[name]
    cfg = TrainConfig.from_recipe(name)
    assert _parse(TrainConfig, recipe.flags(), "rlgate train") == cfg
    assert train_config(["--recipe", name]) == cfg
    for key, value in recipe.settings.items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert getattr(getattr(cfg, key), k) == v, (name, key, k)
        else:
            assert getattr(cfg, key) == value, (name, key)
    assert recipe.summary and recipe.notes and recipe.result


def test_flags_given_with_a_recipe_override_it_and_keep_the_rest():
    cfg = train_config(
        ["--recipe", "passive-match", "--core", "lstm", "--ppo.vf-coef", "0.5",
         "--env-option", "num_apples=3", "--seed", "4"]
    )  # fmt: skip
    expected = TrainConfig.from_recipe(
        "passive-match",
        core="lstm",
        seed=4,
        ppo={"vf_coef": 0.5},
        env_option=("delay=30", "num_apples=3"),
    )
    assert cfg == expected and cfg.ppo.ent_coef == 0.03  # the recipe's other PPO setting kept
    # a given env option replaces the recipe's value of the same key (and --delay is one)
    assert train_config(["--recipe=passive-match", "--env-option", "delay=5"]).env_option == (
        "delay=5",
    )
    assert train_config(["--recipe", "passive-match", "--delay", "7"]).env_option == ("delay=7",)
    assert train_config([]) == TrainConfig.from_recipe("tmaze")  # the main job is a recipe


def test_from_recipe_merges_sections_and_refuses_unknown_names():
    cfg = TrainConfig.from_recipe("repeat-previous-easy", ppo={"ent_coef": 0.02})
    assert (cfg.ppo.epochs, cfg.ppo.num_minibatches, cfg.ppo.ent_coef) == (10, 2, 0.02)
    with pytest.raises(ValueError, match="unknown recipe 'x'; valid recipes: tmaze, passive"):
        TrainConfig.from_recipe("x")


def test_recipes_command_lists_every_recipe_with_its_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["recipes"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for name, recipe in RECIPES.items():
        assert f"rlgate train --recipe {name}  =  rlgate train {' '.join(recipe.flags())}" in out
    with pytest.raises(SystemExit):
        cli.main(["recipes", "passive-match"])
    out = capsys.readouterr().out
    assert "vf-coef 2.0" in out and "Value-loss weight 2" in out and "tmaze" not in out


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _sections(text: str) -> dict[str, str]:
    """Anchor -> the text under that heading, up to the next heading of its level or above."""
    out, lines = {}, text.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"^(#+) (.+)$", line):
            level, body = len(m.group(1)), []
            for nxt in lines[i + 1 :]:
                h = re.match(r"^(#+) ", nxt)
                if h and len(h.group(1)) <= level:
                    break
                body.append(nxt)
            out[_slug(m.group(2))] = "\n".join(body)
    return out


def test_every_recipe_points_at_a_section_of_the_docs_that_reports_it():
    """A recipe's ``result`` is a docs section that exists and gives its command."""
    for name, recipe in RECIPES.items():
        page, _, anchor = recipe.result.partition("#")
        sections = _sections((ROOT / page).read_text())
        assert anchor in sections, (name, recipe.result)
        assert f"--recipe {name}" in sections[anchor], (name, recipe.result)


def test_the_docs_train_registered_recipes_only():
    """Every ``--recipe NAME`` in the README and docs names a registered recipe, and the
    training page lists every recipe."""
    named = set()
    for page in DOCS:
        named |= set(re.findall(r"--recipe[ =]([\w-]+)", page.read_text()))
    assert named <= set(RECIPES), named - set(RECIPES)
    training = (ROOT / "docs" / "training.md").read_text()
    for name in RECIPES:
        assert f"--recipe {name}" in training, name


def test_every_train_command_in_the_docs_parses():
    """Every complete ``rlgate train`` example in the README and docs is a valid command line."""
    commands = []
    for page in DOCS:
        text = page.read_text().replace("\\\n", " ")
        lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
        commands += [
            ln
            for ln in lines
            if ln.startswith("rlgate train ") and "..." not in ln and "--help" not in ln
            and "--resume" not in ln and "`" not in ln
        ]  # fmt: skip
    assert len(commands) >= 5
    for cmd in commands:
        assert isinstance(train_config(shlex.split(cmd)[2:]), TrainConfig), cmd


def test_the_benchmark_and_the_sweep_train_registered_recipes():
    path = ROOT / "scripts" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert set(bench.TASKS.values()) <= set(RECIPES)
    for grid in sweep.PRESETS.values():
        if hasattr(grid, "recipes"):
            assert set(grid.recipes.values()) <= set(RECIPES)
            assert set(grid.recipes) >= set(grid.delays)
        else:  # the POPGym suite: one recipe over every env
            assert grid.recipe in RECIPES


def _flags_of(cls, prefix: str = "") -> set[str]:
    """The command-line flags tyro makes of a config dataclass (sections as --ppo.x)."""
    import dataclasses

    out = set()
    for f in dataclasses.fields(cls):
        name = f"--{prefix}{f.name.replace('_', '-')}"
        if dataclasses.is_dataclass(
            f.default_factory if f.default_factory is not dataclasses.MISSING else None
        ):
            out |= _flags_of(f.default_factory, f"{prefix}{f.name}.")
        else:
            out.add(name)
            if f.type in (bool, "bool"):
                out.add(f"--{prefix}no-{f.name.replace('_', '-')}")
    return out


def test_the_training_page_names_only_flags_that_exist():
    """Every flag docs/training.md names (before its sweep section, which is the script's) is
    one of ``rlgate train``'s or ``rlgate eval``'s, as ``--help`` lists them."""
    from rlgate.cli import EvalConfig

    text = (ROOT / "docs" / "training.md").read_text().split("## Sweeps", 1)[0]
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9.-]*[a-z0-9]", text))
    known = _flags_of(TrainConfig) | _flags_of(EvalConfig) | {"--recipe", "--delay", "--help"}
    assert named <= known, named - known
    assert {"--recipe", "--ppo.bptt", "--impala.num-actors", "--view-gate"} <= named

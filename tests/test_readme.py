"""The README's two fresh-machine commands stay true: CI runs the test command verbatim, and
the main command's script exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_gives_exactly_two_commands():
    assert len(_commands()) == 2
    for cmd in _commands():
        assert "torch==2.13.0" in cmd and "\n" not in cmd


def test_ci_runs_the_readme_test_command():
    main, test = _commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
    assert main.endswith("&& rlgate train")  # the main job: a short real training run


def test_readme_training_commands_parse():
    """Every `rlgate train` example in the README is a valid command line."""
    import shlex

    from rlgate.cli import _parse
    from rlgate.config import TrainConfig

    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
    commands = [
        ln
        for ln in lines
        if ln.startswith("rlgate train ") and "..." not in ln and "--help" not in ln
    ]
    assert len(commands) >= 2  # at least the two recipes
    for cmd in commands:
        cfg = _parse(TrainConfig, shlex.split(cmd)[2:], "rlgate train")
        assert isinstance(cfg, TrainConfig), cmd


def test_readme_python_example_of_an_own_env_trains(tmp_path, monkeypatch):
    """The "Your own environment" section's Python example runs (on a small budget)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own environment", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
    assert "rlgate.fit(" in code and "total_timesteps=200_000" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("200_000", "512"), "README.md", "exec"), {"__name__": "readme"})
    assert any((tmp_path / "runs").iterdir())

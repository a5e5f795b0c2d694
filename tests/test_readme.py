"""The README's two fresh-machine commands stay true (CI runs the test command verbatim), its
links reach every docs page, and the docs' own-env example runs."""

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


def test_the_readme_links_every_docs_page_and_each_exists():
    text = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", text))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert linked == pages


def test_docs_python_example_of_an_own_env_trains(tmp_path, monkeypatch):
    """docs/envs.md's "Your own environment" Python example runs (on a small budget)."""
    text = (ROOT / "docs" / "envs.md").read_text()
    section = text.split("## Your own environment", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
    assert "rlgate.fit(" in code and "total_timesteps=200_000" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("200_000", "512"), "README.md", "exec"), {"__name__": "readme"})
    assert any((tmp_path / "runs").iterdir())

"""The layout of the design card: envs/ and agents/ install as rlgate.envs and rlgate.agents,
the package list in pyproject.toml is complete, and both an editable install and a built
wheel import every module."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"]["package-dir"]


def _packages_on_disk() -> set[str]:
    found = set()
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([package, *rel.parts]))
    return found


def _modules_on_disk() -> list[str]:
    modules = []
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for py in base.rglob("*.py"):
            rel = py.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules.append(".".join([package, *parts]))
    return sorted(set(modules) - {"rlgate.__main__"})


def test_package_list_is_complete():
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _packages_on_disk()


def test_editable_install_imports_every_module():
    for name in _modules_on_disk():
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().is_relative_to(ROOT), name


def test_folders_refuse_generic_import_names():
    for folder in ("envs", "agents"):
        proc = subprocess.run(
            [sys.executable, "-c", f"import {folder}"], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode != 0
        assert f"package rlgate.{folder}" in proc.stderr


def test_no_generic_top_level_names_installed():
    for name in ("envs", "agents"):
        proc = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd="/", capture_output=True, text=True
        )
        assert proc.returncode != 0, f"a top-level {name!r} package is importable"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("rlgate-*.whl")
    return path


def test_built_wheel_imports_every_module(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path)
        names = set(zf.namelist())
    assert not any(n.startswith(("envs/", "agents/")) for n in names)
    assert "rlgate/cores/native.c" in names  # the native kernels' sources ship with the wheel
    assert "rlgate/envs/native.c" in names
    code = (
        "import importlib, sys\n"
        f"root = {str(tmp_path)!r}\n"
        f"for name in {_modules_on_disk()!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    assert m.__file__.startswith(root), (name, m.__file__)\n"
        "from rlgate.cores import native\n"
        "assert native.SOURCE.is_file() and str(native.SOURCE).startswith(root)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"

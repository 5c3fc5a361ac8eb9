"""Packaging and the newcomer's path: the import guard for an unbuilt source tree, one version
everywhere, the cibuildwheel configuration, and the generated "coming from tf.keras" page.

The full wheel/sdist build is tools/build_dist.sh (minutes; .ci/run runs it)."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest

import fastckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUARD_WORDS = ("pip install .", "another directory")


def _env_without_safe_path():
    env = dict(os.environ)
    env.pop("PYTHONSAFEPATH", None)  # conftest sets it; a user's shell does not
    return env


# Runs `python -m fastckpt ARGS` as Python does (the current directory first on sys.path), minus
# the finder of an editable install, which would otherwise serve the real package from anywhere.
_RUN_AS_DASH_M = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
sys.argv[1:] = {args!r}
runpy.run_module("fastckpt", run_name="__main__", alter_sys=True)
"""


def test_unbuilt_source_tree_says_how_to_install(tmp_path):
    checkout = tmp_path / "checkout"  # a fresh clone: Python sources, no compiled extension
    shutil.copytree(os.path.join(ROOT, "fastckpt"), checkout / "fastckpt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "lib", "include"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), checkout)
    res = subprocess.run([sys.executable, "-c", _RUN_AS_DASH_M.format(args=["--version"])],
                         cwd=checkout, env=_env_without_safe_path(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0
    assert "partially initialized" not in res.stderr, res.stderr
    assert "ImportError" in res.stderr and "fastckpt._core" in res.stderr, res.stderr
    for words in GUARD_WORDS:
        assert words in res.stderr, res.stderr
    assert str(checkout / "fastckpt") in res.stderr  # names the tree it found


def test_python_m_fastckpt_from_the_repository_root():
    """With an editable install this works; with a regular install the source tree shadows it and
    the guard explains. Never the bare "partially initialized module" error."""
    res = subprocess.run([sys.executable, "-m", "fastckpt", "--version"], cwd=ROOT,
                         env=_env_without_safe_path(), capture_output=True, text=True, timeout=120)
    assert "partially initialized" not in res.stderr, res.stderr
    if res.returncode == 0:
        assert res.stdout.strip() == fastckpt.__version__
    else:
        for words in GUARD_WORDS:
            assert words in res.stderr, res.stderr

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


# --- one version -------------------------------------------------------------------------------
def _version_py():
    text = open(os.path.join(ROOT, "fastckpt", "version.py")).read()
    return re.search(r'^VERSION = "([^"]+)"$', text, re.M).group(1)


def test_one_version_source():
    """fastckpt/version.py is the only place the version is written: pyproject.toml takes it
    dynamically, CMake (libfastckpt, its CMake package) and docs/conf.py read it."""
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.M), "pyproject.toml must not repeat the version"
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert 'input = "fastckpt/version.py"' in pyproject
    assert "fastckpt/version.py" in open(os.path.join(ROOT, "CMakeLists.txt")).read()
    assert "fastckpt/version.py" in open(os.path.join(ROOT, "docs", "conf.py")).read()
    assert re.fullmatch(r"\d+\.\d+\.\d+", _version_py())


def test_installed_versions_agree():
    from fastckpt import embedding
    version = _version_py()
    assert fastckpt.__version__ == version
    assert importlib.metadata.version("fastckpt") == version
    lib = ctypes.CDLL(os.path.join(embedding.lib_dir(), "libfastckpt.so"))
    lib.fckpt_version.restype = ctypes.c_char_p
    assert lib.fckpt_version().decode() == version
    config = open(os.path.join(embedding.cmake_dir(), "fastckptConfigVersion.cmake")).read()
    assert f'set(PACKAGE_VERSION "{version}")' in config


# --- the generated "coming from tf.keras" page --------------------------------------------------
def _gen_compat():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen_compat", os.path.join(ROOT, "tools", "gen_compat.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compat_page_matches_the_code():
    gen = _gen_compat()
    with open(gen.PAGE, encoding="utf-8") as f:
        page = f.read()
    assert page == gen.generate(), "docs/coming-from-tf-keras.md is stale: run python tools/gen_compat.py"


def test_compat_page_follows_the_code(monkeypatch, tmp_path):
    """The page is looked up, not written: a name that disappears (or appears) changes it."""
    from fastckpt.keras import layers
    gen = _gen_compat()
    assert "| `Dense` | `fastckpt.keras.layers.Dense` |" in gen.generate()
    monkeypatch.setattr(layers, "__all__", [n for n in layers.__all__ if n != "Dense"])
    page = gen.generate()
    assert "| `Dense` | not available |" in page
    out = tmp_path / "page.md"
    out.write_text(page)
    monkeypatch.undo()
    assert gen.main(["--check", "--output", str(out)]) == 1
    assert "| `Conv2D` | not available |" in gen.generate()


def test_getting_started_example_runs(tmp_path):
    """The page's Python example, run as a user would (a fresh interpreter, outside the tree)."""
    pytest.importorskip("sklearn")
    text = open(os.path.join(ROOT, "docs", "getting-started.md"), encoding="utf-8").read()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "restored model, accuracy: 0.9" in res.stdout, res.stdout[-2000:]


# --- release configuration ----------------------------------------------------------------------
def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_cibuildwheel_builds_what_the_docs_promise():
    cfg = _pyproject()["tool"]["cibuildwheel"]
    assert sorted(cfg["build"]) == sorted(f"cp3{m}-*" for m in range(9, 14))
    assert "*-musllinux_*" in cfg["skip"]
    assert sorted(cfg["linux"]["archs"]) == ["aarch64", "x86_64"]
    assert "tools/smoke.py" in cfg["test-command"]
    assert os.path.isfile(os.path.join(ROOT, "tools", "smoke.py"))
    # the BLAS comes from the scipy-openblas32 dependency, as in tools/build_dist.sh
    assert "--exclude 'libscipy_openblas*.so'" in cfg["linux"]["repair-wheel-command"]
    assert "--exclude 'libscipy_openblas*.so'" in open(os.path.join(ROOT, "tools", "build_dist.sh")).read()
    assert "scipy-openblas32" in " ".join(_pyproject()["project"]["dependencies"])


def test_build_dist_script_parses():
    subprocess.run(["bash", "-n", os.path.join(ROOT, "tools", "build_dist.sh")], check=True)

"""The test suite's own machinery: it must be able to fail.

``FASTCKPT_REQUIRE_INTEROP=1`` turns every skip into a failure, wherever it is raised. These tests run
pytest in a child process on small test files next to a copy of the real ``tests/conftest.py``,
with TensorFlow hidden (a ``tensorflow`` package on ``PYTHONPATH`` whose import fails), so the
checks hold whether or not TensorFlow is installed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

MODULE_LEVEL = '''
import pytest
tf = pytest.importorskip("tensorflow")

def test_needs_tf():
    assert tf
'''
OTHER = '''
def test_plain():
    assert True
'''
IN_TESTS = '''
import pytest

@pytest.fixture
def tf():
    return pytest.importorskip("tensorflow")

def test_skip_in_test():
    pytest.importorskip("tensorflow")

def test_skip_in_fixture(tf):
    assert tf

@pytest.mark.skipif(True, reason="marked")
def test_skipif_mark():
    pass

@pytest.mark.xfail(reason="expected", strict=True)
def test_xfail_stays_xfail():
    assert False
'''


def run_pytest(tmp_path, files, require: bool):
    tests = tmp_path / "t"
    tests.mkdir(exist_ok=True)
    shutil.copy(os.path.join(HERE, "conftest.py"), tests / "conftest.py")
    for name, text in files.items():
        (tests / name).write_text(textwrap.dedent(text))
    hidden = tmp_path / "hidden"
    (hidden / "tensorflow").mkdir(parents=True, exist_ok=True)
    (hidden / "tensorflow" / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'tensorflow\' (hidden by the test)", name="tensorflow")\n')
    env = {k: v for k, v in os.environ.items() if k != "FASTCKPT_REQUIRE_INTEROP"}
    env["PYTHONPATH"] = str(hidden)
    if require:
        env["FASTCKPT_REQUIRE_INTEROP"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "--rootdir", str(tests), str(tests)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_module_level_importorskip_fails_the_required_run(tmp_path):
    rc, out = run_pytest(tmp_path, {"test_mod.py": MODULE_LEVEL, "test_other.py": OTHER}, require=True)
    assert rc != 0, out
    assert "skipped at collection under FASTCKPT_REQUIRE_INTEROP=1" in out, out
    assert "hidden by the test" in out and "test_mod.py" in out, out
    assert "1 error" in out, out


def test_module_level_importorskip_is_a_plain_skip_otherwise(tmp_path):
    rc, out = run_pytest(tmp_path, {"test_mod.py": MODULE_LEVEL, "test_other.py": OTHER}, require=False)
    assert rc == 0, out
    assert "1 passed, 1 skipped" in out, out


@pytest.mark.parametrize("require", [True, False])
def test_skips_in_tests_fixtures_and_marks(tmp_path, require):
    rc, out = run_pytest(tmp_path, {"test_in.py": IN_TESTS}, require=require)
    if require:
        assert rc == 1, out
        for status, name, where in (("FAILED", "test_skip_in_test", "in call"),
                                    ("ERROR", "test_skip_in_fixture", "in setup"),
                                    ("ERROR", "test_skipif_mark", "in setup")):
            assert f"{status} t/test_in.py::{name} - skipped {where} under" in out, out
        assert "1 failed, 1 xfailed, 2 errors" in out, out
    else:
        assert rc == 0, out
        assert "3 skipped, 1 xfailed" in out, out


# -- tests/data/make_golden.py ---------------------------------------------------------------------------

def test_make_golden_clears_only_what_it_regenerates(tmp_path):
    """It used to rmtree tests/data/keras/, taking the Keras 3 goldens and their script with it."""
    sys.path.insert(0, os.path.join(HERE, "data"))
    try:
        import make_golden
    finally:
        sys.path.remove(os.path.join(HERE, "data"))
    ours = ["keras/cp.ckpt.index", "keras/cp.ckpt.data-00000-of-00001", "keras/checkpoint",
            "tfckpt/ckpt-1.index", "tfckpt/ckpt-1.data-00000-of-00001", "tfckpt/checkpoint"]
    # Everything that is in tests/data/keras today besides the TF-format bundle, and look-alikes.
    others = sorted(f"keras/{n}" for n in os.listdir(os.path.join(HERE, "data", "keras"))
                    if not n.startswith("cp.ckpt.") and n != "checkpoint")
    others += ["keras/cp.ckpt.notes.txt", "tfckpt/README", "tfckpt/ckpt-1.index.bak"]
    assert "keras/make_golden.py" in others and "keras/keras3_model.keras" in others
    for rel in ours + others:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert sorted(make_golden.clear_outputs(str(tmp_path))) == sorted(ours)
    left = sorted(f"{d}/{n}" for d in ("keras", "tfckpt") for n in os.listdir(tmp_path / d))
    assert left == sorted(others)

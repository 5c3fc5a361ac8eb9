import os

import numpy as np
import pytest

# Child interpreters started by tests (kill tests, crash points) must import the installed
# fastckpt, not the source tree in the current directory (which has no built extension).
os.environ["PYTHONSAFEPATH"] = "1"

from fastckpt import backend


@pytest.fixture
def rng():
    """A seeded NumPy generator; every test that draws data uses it, so failures reproduce."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_names_and_seed():
    backend.clear_session()
    backend.set_random_seed(42)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With FASTCKPT_REQUIRE_INTEROP=1 (CI, after installing the peers) a skip is a failure:
    a test that needs TensorFlow, Keras or PyTorch must run there, not quietly skip."""
    outcome = yield
    report = outcome.get_result()
    import os
    if report.skipped and os.environ.get("FASTCKPT_REQUIRE_INTEROP") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped under FASTCKPT_REQUIRE_INTEROP=1: {report.longrepr}"

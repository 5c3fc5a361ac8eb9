import os

import numpy as np
import pytest

# Child interpreters started by tests (kill tests, crash points) must import the installed
# fastckpt, not the source tree in the current directory (which has no built extension).
os.environ["PYTHONSAFEPATH"] = "1"

from fastckpt import backend, ops


@pytest.fixture
def rng():
    """A seeded NumPy generator; every test that draws data uses it, so failures reproduce."""
    return np.random.default_rng(1234)


@pytest.fixture
def xy(request, rng):
    """Learnable ``(x, y)``: shaped by the test module's ``XY = (samples, features, classes)``
    (default ``(96, 12, 4)``), drawn from ``rng`` (see ``saving_helpers.xy``)."""
    from saving_helpers import xy as draw
    n, features, classes = getattr(request.module, "XY", (96, 12, 4))
    return draw(rng, n, features, classes)


@pytest.fixture
def threads():
    """``threads(n)`` sets fastckpt's thread count for the test; the count before is restored after."""
    before = ops.num_threads()
    yield ops.set_num_threads
    ops.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_names_and_seed():
    backend.clear_session()
    backend.set_random_seed(42)
    yield


def _interop_required() -> bool:
    return os.environ.get("FASTCKPT_REQUIRE_INTEROP") == "1"


def _skip_reason(longrepr) -> str:
    # A skip's longrepr is (path, lineno, "Skipped: reason"); say where it was raised.
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, reason = longrepr
        return f"{reason} ({path}:{lineno if lineno is None else lineno + 1})"
    return str(longrepr)


def _fail_skip(report, where: str) -> None:
    report.outcome = "failed"
    report.longrepr = (f"skipped {where} under FASTCKPT_REQUIRE_INTEROP=1 (every test must run "
                       f"there): {_skip_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With FASTCKPT_REQUIRE_INTEROP=1 (CI, after installing the peers) a skip is a failure:
    a test that needs TensorFlow, Keras or PyTorch must run there, not quietly skip. This covers
    skips raised in a test, in its fixtures and by skip/skipif marks."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and _interop_required():
        _fail_skip(report, f"in {report.when}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for skips raised while collecting (a module-level ``pytest.importorskip`` or
    ``pytest.skip(allow_module_level=True)``): the module becomes a collection error, so the run
    fails instead of quietly dropping every test in the module."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _interop_required():
        _fail_skip(report, "at collection")


def pytest_runtest_logreport(report):
    """``FASTCKPT_SKIPPED_FILE=path``: append the node id of every skipped test to ``path``, so
    that CI can run exactly those again once the peers are installed (each test then runs, and
    passes, in one of the two runs; none is left skipped)."""
    path = os.environ.get("FASTCKPT_SKIPPED_FILE")
    # Only this suite's tests (a test that runs pytest on a scratch suite inherits the variable).
    if (path and report.skipped and not hasattr(report, "wasxfail")
            and report.nodeid.startswith("tests/")):
        with open(path, "a", encoding="utf-8") as f:
            f.write(report.nodeid + "\n")

"""Interop tests need TensorFlow, tf_keras, Keras 3 or PyTorch.

Locally they are skipped when those are missing; CI sets FASTCKPT_REQUIRE_INTEROP=1 so a missing
peer is a failure there, never a silent skip.
"""

import importlib
import os

import pytest


def require(module: str):
    if os.environ.get("FASTCKPT_REQUIRE_INTEROP") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def pytest_collection_modifyitems(items):
    for item in items:
        if "interop" in str(item.fspath):
            item.add_marker(pytest.mark.interop)


# The peers as fixtures, one import per session; any test module under interop/ may ask for them.
@pytest.fixture(scope="session")
def tf():
    return require("tensorflow")


@pytest.fixture(scope="session")
def tfk():
    require("tensorflow")
    return require("tf_keras")


@pytest.fixture(scope="session")
def k3():
    return require("keras")

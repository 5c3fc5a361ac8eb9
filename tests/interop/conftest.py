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

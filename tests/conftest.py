import numpy as np
import pytest

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

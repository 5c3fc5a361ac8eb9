"""Process-wide state shared by layers and models: name uniquification and seeding.

Keras names layers ``dense``, ``dense_1``, ... per process, and ``set_random_seed`` makes every later
random draw (initializers, dropout masks, shuffling) reproducible. Both live here so that nothing
else keeps global state.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Optional

import numpy as np

from fastckpt.checks import is_int

__all__ = ["unique_name", "clear_session", "note_model_created", "models_created", "set_random_seed", "next_seed", "floatx", "to_snake_case"]

_name_counts: dict = defaultdict(int)
_seed_rng: Optional[np.random.Generator] = None


def to_snake_case(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    s = re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()
    return s


def unique_name(base: str) -> str:
    """``dense``, then ``dense_1``, ``dense_2``, ... as Keras does."""
    n = _name_counts[base]
    _name_counts[base] += 1
    return base if n == 0 else f"{base}_{n}"


def reserve_name(name: str) -> None:
    """Record an explicitly given (or restored) name so later automatic names do not collide."""
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    base, idx = m.group(1), m.group(2)
    nxt = int(idx) + 1 if idx is not None else 1
    if _name_counts[base] < nxt:
        _name_counts[base] = nxt


_models_created = 0


def note_model_created() -> None:
    """Counted by ``Model.__init__``: a distribution strategy must exist before any model."""
    global _models_created
    _models_created += 1


def models_created() -> int:
    return _models_created


def clear_session() -> None:
    """Reset automatic layer names (``dense``, ``dense_1``, ...)."""
    _name_counts.clear()


def set_random_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and every fastckpt random draw."""
    global _seed_rng
    if not is_int(seed):
        raise TypeError(f"Expected an integer seed, got {type(seed).__name__}: {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    _seed_rng = np.random.default_rng(int(seed))


def next_seed() -> int:
    """A fresh 63-bit seed: deterministic after ``set_random_seed``, random otherwise."""
    global _seed_rng
    if _seed_rng is None:
        _seed_rng = np.random.default_rng()
    return int(_seed_rng.integers(0, 2**63 - 1))


def floatx() -> str:
    return "float32"

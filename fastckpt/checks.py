"""Argument checks and small object helpers shared by the whole package (one rule each)."""

from __future__ import annotations

import numbers

__all__ = ["is_int", "is_real", "unique_objects"]


def is_int(value) -> bool:
    """An integer, Python's or NumPy's, and not a bool (``True`` is an ``int`` to Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number (an integer or a float, Python's or NumPy's), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def unique_objects(items) -> list:
    """``items`` in order, each object once (by identity: layers and variables are not hashable
    by value, and equal-valued arrays are still distinct objects)."""
    seen, out = set(), []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            out.append(item)
    return out

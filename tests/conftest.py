"""Shared test settings.

Hypothesis profiles, chosen with ``HYPOTHESIS_PROFILE=<name>`` (default ``default``):

* ``default``: 100 examples per unit, no deadline (timing on a shared machine is noisy);
* ``ci``: the same examples, derandomized: every CI run draws the same cases;
* ``quick``: 10 per unit, for a fast local loop;
* ``thorough``: 1000 per unit, for a long run before a release.

Tests scale their example counts from ``settings.default.max_examples`` (the loaded profile's),
e.g. ``@settings(max_examples=2 * settings.default.max_examples)`` for the convolution, so one
variable scales the whole suite.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_EXAMPLES = {"default": 100, "ci": 100, "quick": 10, "thorough": 1000}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
if PROFILE not in _EXAMPLES:
    raise ValueError(f"HYPOTHESIS_PROFILE must be one of {sorted(_EXAMPLES)}, got {PROFILE!r}")

for _name, _n in _EXAMPLES.items():
    settings.register_profile(_name, max_examples=_n, deadline=None, print_blob=True,
                              derandomize=_name == "ci",
                              suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(PROFILE)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded generator per test: reproducible random inputs."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _compiled_kernels_off_after() -> object:
    """Every test starts with numba's kernels off (convscope.ops.jit), whatever the one before it
    left on: which path a test takes must not depend on the order tests run in."""
    from convscope.ops import jit

    jit.enable(False)
    yield
    jit.enable(False)

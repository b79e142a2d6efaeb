"""chainrule.allocator: once a model is compiled, its training steps reuse the memory they free
instead of page-faulting fresh pages every step (glibc), and a user's own allocator settings
win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from chainrule import allocator, models

GLIBC = platform.libc_ver()[0] == "glibc"

#: Three cnn training steps at batch 128 after two warm-up steps; prints the page faults
#: (minor: memory the kernel had to map and zero) per step and what retain_freed_memory said.
#: With COMPILED False, BatchNorm and max pooling run their NumPy passes (as without numba),
#: whose temporaries of the batch's size are what the default heap handling maps afresh.
STEPS = """
import resource
import sys
import numpy as np
from chainrule import allocator, kernels, models
kernels.ENABLED = sys.argv[1] == "True"
model = models.cnn(input_shape=(1, 28, 28), augment=0, seed=0)
rng = np.random.default_rng(0)
x = rng.random((128, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, 128)
for _ in range(2):
    model.train_step(x, y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    model.train_step(x, y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(allocator.retain_freed_memory(), (after - before) / 3)
"""


def faults_per_step(env: dict, compiled: bool) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", STEPS, str(compiled)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", float(out[1])


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}


def test_compile_sets_the_thresholds_where_the_c_library_is_glibc():
    models.cnn(input_shape=(1, 28, 28), augment=0, seed=0)  # compiles
    users_own = any(name in os.environ for name in allocator.USER_SETTINGS)
    assert allocator.retain_freed_memory() is (GLIBC and not users_own)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's; elsewhere nothing is set")
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_cnn_training_steps_reuse_freed_memory(compiled):
    applied, faults = faults_per_step(clean_env(), compiled)
    assert applied
    assert faults < 100, f"{faults:.0f} page faults per cnn step after warm-up"


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's; elsewhere nothing is set")
def test_the_users_allocator_settings_are_left_alone():
    """With glibc's own tunables set by the user, nothing is changed, and the default heap
    handling page-faults thousands of times per step of BatchNorm's and pooling's NumPy passes
    (what the thresholds remove)."""
    applied, faults = faults_per_step({**clean_env(), "GLIBC_TUNABLES": "glibc.malloc.check=0"},
                                      compiled=False)
    assert not applied
    assert faults > 1000, f"{faults:.0f} page faults per cnn step after warm-up"

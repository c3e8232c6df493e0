"""runtime.host_memory: with it, a jitted step stops page-faulting its scratch space in again on
every call (XLA's CPU temporaries come from malloc; glibc would mmap and unmap them each time)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from runtime import host_memory
from tests.conftest import REPO

# A fresh process per case: the setting must precede JAX's threads. The step's temporaries (70 MB,
# checked) are above glibc's largest mmap threshold (32 MB).
PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from runtime import host_memory
    tuned = host_memory.keep_freed_memory() if sys.argv[1] == "tuned" else False
    import jax, jax.numpy as jnp

    @jax.jit
    def step(x):
        y = jnp.tanh(x) @ x
        return (jnp.sin(y) @ y).sum()

    x = jnp.ones((3000, 3000), jnp.float32)
    compiled = step.lower(x).compile()
    faults = []
    for _ in range(int(sys.argv[2])):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        compiled(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    temp = compiled.memory_analysis().temp_size_in_bytes
    print(json.dumps({"tuned": tuned, "temp_pages": temp // 4096, "faults": faults}))
    """
)


def probe(mode: str, calls: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(calls)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not host_memory.is_glibc(), reason="glibc's malloc only")
def test_freed_step_memory_is_reused_instead_of_faulted_in_again():
    default = probe("default", calls=3)
    if min(default["faults"][1:]) < default["temp_pages"] // 100:
        # e.g. transparent huge pages set to "always": a few faults per 2 MB page
        pytest.skip("this kernel faults the block in cheaply already: nothing to remove here")
    tuned = probe("tuned", calls=10)
    assert tuned["tuned"] and tuned["temp_pages"] > 15_000
    # Without the setting every call faults its memory in again (the control: what the setting
    # removes, so that this test can fail; seen: 430,000 faults a call) ...
    assert min(default["faults"][1:]) > default["temp_pages"]
    # ... with it the heap grows over the first calls (by how much depends on the order the
    # threads free in), then calls reuse it: seen 0-2 faults a call after the first two to five.
    assert sum(tuned["faults"][1:]) < 9 * min(default["faults"][1:]) // 10
    assert min(tuned["faults"][1:]) < tuned["temp_pages"] // 20


@pytest.mark.parametrize(
    "name, value", [("ARCHLAB_KEEP_FREED_MEMORY", "0"), ("GLIBC_TUNABLES", "x")]
)
def test_an_opt_out_or_the_users_own_malloc_settings_leave_malloc_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert host_memory.keep_freed_memory() is False  # returns before touching malloc

"""Run a Python script in a fresh process with a chosen number of CPU devices (not a test module).

The test process has one CPU device (conftest.py) and JAX fixes the device count when it starts,
so tests of several devices run their checks in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_script(script: str, cpu_devices: str | None, timeout: float = 600) -> str:
    """Run ``script`` (dedented) with ``JAX_NUM_CPU_DEVICES=cpu_devices`` (None: JAX's default)
    on the CPU; assert that it exits 0 and return its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    if cpu_devices is not None:
        env["JAX_NUM_CPU_DEVICES"] = cpu_devices
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout

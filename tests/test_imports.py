"""Importing ctcdyn after ArviZ (as notebooks do) leaves NumPyro usable."""

import subprocess
import sys


def test_numpyro_works_when_arviz_is_imported_first():
    """ArviZ registers numpyro as a lazy module; ctcdyn must load it whole before using a
    submodule, or every fit fails ("numpyro.distributions has no attribute 'distribution'")."""
    code = (
        "import arviz, ctcdyn, numpyro\n"
        "import numpyro.distributions as dist\n"
        "assert hasattr(dist, 'distribution')\n"
        "print(float(dist.Normal(0.0, 1.0).log_prob(0.0)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

"""Load numpyro whole before any of its submodules.

ArviZ registers numpyro in ``sys.modules`` as a lazily loaded module. When ArviZ is imported
before ctcdyn, ctcdyn's first ``import numpyro.distributions`` then leaves the package half set
up, and every fit fails with "module 'numpyro.distributions' has no attribute 'distribution'".
An attribute access runs a lazily registered module; a real one is unaffected.
"""

import numpyro

numpyro.__version__  # noqa: B018

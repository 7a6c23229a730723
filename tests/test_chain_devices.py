"""NUTS chains spread over several CPU devices (``run_nuts``) and the CLI that sets them up.

The test process has one CPU device (conftest.py), so every check runs in a subprocess with
``JAX_NUM_CPU_DEVICES`` set.
"""

from __future__ import annotations

import pytest
from _subprocess import run_script

_SPREAD = """
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
import numpyro, numpyro.distributions as dist
from ctcdyn.inference import NUTSSettings, run_nuts
from ctcdyn.inference._nuts import _kernels, chain_devices

devices = jax.local_devices()
assert len(devices) == 4, devices

def model(data):
    # a correlated Gaussian per problem: mean mu, sd (1, 2, 0.5), x1 - x0 correlated
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    numpyro.deterministic("x", data["mu"] + jax.numpy.array([1.0, 2.0, 0.5]) * z)

batch = {"mu": np.array([[0.0, 1.0, 2.0], [-3.0, 0.0, 5.0]])}  # 2 problems

# how many devices the chains use: as many as divide them evenly
assert chain_devices(4, batch) == tuple(devices)
assert chain_devices(6, batch) == tuple(devices[:3])
assert chain_devices(2, batch) == tuple(devices[:2])
assert chain_devices(5, batch) is None and chain_devices(1, batch) is None
sharded = jax.device_put(batch["mu"], jax.sharding.NamedSharding(
    jax.sharding.Mesh(np.array(devices), ("p",)), jax.sharding.PartitionSpec(None, None)))
assert chain_devices(4, {"mu": sharded}) is None  # already spread over devices: left alone

# the same NUTS as on one device: one block from the same start, step by step
settings = NUTSSettings(chains=4, warmup=50, samples=50)
first = jax.tree.map(lambda x: x[0], batch)
key = jax.random.key(0)
keys = (jax.random.split(jax.random.key(1), (2, 4)), jax.random.split(jax.random.key(2), (2, 4)))
one = _kernels(model, settings, first, key, None)
spread = _kernels(model, settings, first, key, chain_devices(4, batch))
s1, s4 = one.start(batch, *keys), spread.start(batch, *keys)
assert len(jax.tree.leaves(s4)[0].sharding.device_set) == 4
(s1, r1), (s4, r4) = one.block(s1, batch), spread.block(s4, batch)
np.testing.assert_array_equal(np.asarray(r1["n_steps"]), np.asarray(r4["n_steps"]))
np.testing.assert_allclose(np.asarray(r1["z"]["z"]), np.asarray(r4["z"]["z"]), rtol=0, atol=1e-9)
assert np.asarray(r1["n_steps"]).std() > 0  # chains and problems took different trajectories

# and the posterior through the public entry point
result = run_nuts(model, batch, jax.random.key(3), NUTSSettings(chains=4, warmup=300, samples=500))
x = result.samples["x"]  # (problems, chains, samples, 3)
assert x.shape == (2, 4, 500, 3), x.shape
assert not np.allclose(x[:, 0], x[:, 1])  # independent chains
flat = x.reshape(2, -1, 3)
print("mean", flat.mean(axis=1).tolist())
print("sd", flat.std(axis=1).tolist())
np.testing.assert_allclose(flat.mean(axis=1), batch["mu"], atol=0.25)
np.testing.assert_allclose(flat.std(axis=1), np.array([[1.0, 2.0, 0.5]] * 2), rtol=0.15)
"""


def test_chains_spread_over_cpu_devices_run_the_same_nuts_as_one_device():
    """Each device runs its own chains' NUTS: from the same start the trees and draws equal the
    one-device sampler's (to rounding), and the posterior moments are right."""
    run_script(_SPREAD, "4")


_START = """
import os
from ctcdyn._cli_common import start
start(cpu_devices=4)
import jax
print(len(jax.devices()), os.environ.get("JAX_NUM_CPU_DEVICES"))
start(cpu_devices=2)  # JAX has started: the layout stays
print(len(jax.devices()))
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, "4 4\n4\n"), ("2", "2 2\n2\n")])
def test_the_cli_gives_one_cpu_device_per_chain_unless_the_user_chose(preset, expected):
    assert run_script(_START, preset) == expected

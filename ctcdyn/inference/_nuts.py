"""NUTS over a batch of independent problems, all chains and problems in one compiled kernel.

A *problem* is one posterior: the whole cohort (hierarchical fit: a batch of one) or one patient
(per-patient fits: a batch of many), or one simulated data set (simulation-based calibration).
Problems share the model and the data's shapes, so NumPyro's NUTS kernel is vmapped over
problems and chains and compiled once; each (problem, chain) adapts its own step size and
mass matrix (diagonal, or dense over blocks of sites the model declares). Iterations run in
blocks of one compiled ``lax.scan`` each, so long runs report progress between blocks.

With several CPU devices (``jax.config.update("jax_num_cpu_devices", 4)`` before JAX starts;
the CLI does this), the chains are spread over them with ``shard_map``: each device runs its
own chains' NUTS loop, so a chain no longer waits for the longest trajectory among all the
chains, and the devices run on separate cores, as Stan runs one process per chain. Nothing is
exchanged between devices until the block ends. The draws agree with those of one device to
rounding (XLA compiles a different batch size), so over many iterations they differ as two
NUTS runs from slightly different starts do; a given device layout always gives the same draws.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PRNGKeyArray
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.hmc import hmc
from numpyro.infer.util import get_potential_fn, transform_fn

#: Iterations per compiled block at most (progress is reported between blocks).
MAX_BLOCK = 100
#: Mass matrices the sampler adapts (see :class:`NUTSSettings`).
MASS_MATRICES = ("diagonal", "blocks")
#: Name of the mesh axis the chains are spread over.
CHAIN_AXIS = "chain"


@dataclasses.dataclass(frozen=True)
class NUTSSettings:
    """Sampler settings (recorded in the run's manifest).

    Attributes:
        chains: independent chains per problem (4 gives R-hat something to compare).
        warmup: adaptation iterations (step size and diagonal mass matrix), discarded.
        samples: kept iterations per chain.
        target_accept: target mean acceptance probability of the step-size adaptation.
        max_tree_depth: NUTS doubles its trajectory at most this many times.
        init_jitter: chains start at the prior median plus Uniform(-j, j) on the unconstrained
            scale, so R-hat sees chains from different places.
        mass_matrix: ``"diagonal"`` (the default; Stan's ``diag_e``) adapts a diagonal matrix;
            ``"blocks"`` adapts a dense matrix over each block of sites the model declares
            (:class:`DeclaresMassBlocks`: a cohort's population-level parameters, whose
            posterior holds ridges such as shedding x half-life) and a diagonal one elsewhere.
            Blocks cut the leapfrog steps per effective sample of a 50-patient cohort 2.5-fold,
            but gave divergent transitions in a 12-patient one (docs/inference.md), so they
            are opt-in.
    """

    chains: int = 4
    warmup: int = 1000
    samples: int = 1000
    target_accept: float = 0.8
    max_tree_depth: int = 10
    init_jitter: float = 1.0
    mass_matrix: str = "diagonal"

    def __post_init__(self) -> None:
        for name in ("chains", "warmup", "samples", "max_tree_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"NUTS {name} must be >= 1, got {getattr(self, name)}")
        if self.mass_matrix not in MASS_MATRICES:
            raise ValueError(
                f"mass_matrix must be one of {', '.join(map(repr, MASS_MATRICES))}; "
                f"got {self.mass_matrix!r}"
            )
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept}")


@dataclasses.dataclass(frozen=True)
class NUTSResult:
    """Draws and sampler statistics, every array shaped (problems, chains, samples, ...).

    ``samples`` holds every site of the model after NumPyro's post-processing (constrained
    values and deterministic sites); ``stats`` holds diverging, energy, n_steps, step_size,
    accept_prob, potential_energy. ``warmup_divergences`` counts divergent warmup transitions
    (problems, chains): reported, though only sampling-phase divergences fail the gate.
    """

    samples: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    warmup_divergences: np.ndarray


@runtime_checkable
class StartsAtValues(Protocol):
    """A model with a deterministic start point (e.g. :class:`~ctcdyn.inference.CountModel`: the
    prior medians). Chains of such a model start there plus jitter, so its compiled sampler does
    not depend on the key and is cached; other models start at a prior draw."""

    def initial_values(self, n_patients: int) -> dict[str, Any]: ...


@runtime_checkable
class DeclaresMassBlocks(Protocol):
    """A model that names blocks of latent sites whose posterior correlations are worth a dense
    mass matrix (small blocks: the matrix is estimated from the warmup draws)."""

    def mass_blocks(self) -> list[tuple[str, ...]]: ...


def _dense_mass(model, settings: NUTSSettings) -> list[tuple[str, ...]] | bool:
    """NumPyro's ``dense_mass``: the model's blocks, or False (one flat diagonal matrix).

    Not ``[]``: NumPyro reads an empty list as a structured matrix of one diagonal block per
    site, the same matrix computed in a different order, which changed the last digits of the
    draws between processes (a resumed run no longer equalled an uninterrupted one).
    """
    if settings.mass_matrix == "diagonal" or not isinstance(model, DeclaresMassBlocks):
        return False
    return model.mass_blocks() or False


def _block_length(settings: NUTSSettings) -> int:
    return math.gcd(settings.warmup, settings.samples, MAX_BLOCK)


def run_nuts(
    model: Callable[..., Any],
    batch: Any,
    key: PRNGKeyArray,
    settings: NUTSSettings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> NUTSResult:
    """Sample the posterior of ``model(data)`` for every problem's ``data`` in ``batch``.

    Args:
        model: a NumPyro model taking one positional argument, the data PyTree.
        batch: the data of all problems: a PyTree whose leaves have a leading problem axis.
        key: PRNG key (the same key and settings give the same draws).
        settings: chains, warmup, samples and adaptation settings.
        progress: called as ``progress(iterations_done, iterations_total)`` between blocks
            (an iteration advances every chain of every problem by one transition).

    Returns:
        A :class:`NUTSResult` of NumPy arrays.

    Cost: under ``vmap`` every (problem, chain) advances in lock step, so one iteration costs
    the longest trajectory among them (NUTS's while-loop runs until the last tree is built).
    A batch of many easy problems with a few hard ones runs at the pace of the hard ones; a
    lower ``max_tree_depth`` bounds that cost (at the price of mixing for the hard problems,
    which their R-hat and ESS then show).
    """
    settings = NUTSSettings() if settings is None else settings
    leaves = jax.tree.leaves(batch)
    n_problems = int(leaves[0].shape[0])
    first = jax.tree.map(lambda x: x[0], batch)
    k_init, k_jitter, k_chain = jax.random.split(key, 3)
    kernels = _kernels(model, settings, first, k_init, chain_devices(settings.chains, batch))
    shape = (n_problems, settings.chains)
    jitter_keys = jax.random.split(k_jitter, shape)
    chain_keys = jax.random.split(k_chain, shape)
    states = kernels.start(batch, jitter_keys, chain_keys)
    block = kernels.block
    length = _block_length(settings)

    total = settings.warmup + settings.samples
    kept: list[dict] = []
    warmup_divergences = np.zeros(shape, dtype=np.int64)
    done = 0
    while done < total:
        states, records = block(states, batch)
        records = jax.device_get(records)
        if done < settings.warmup:
            warmup_divergences += np.asarray(records["diverging"]).sum(axis=0)
        else:
            kept.append(records)
        done += length
        if progress is not None:
            progress(done, total)

    # scan stacks iterations first: (iterations, problems, chains, ...) -> (problems, chains, it)
    joined = jax.tree.map(lambda *xs: np.moveaxis(np.concatenate(xs), 0, 2), *kept)
    z = joined.pop("z")
    out = kernels.postprocess(batch, z)
    samples = {name: np.asarray(value) for name, value in jax.device_get(out).items()}
    return NUTSResult(samples=samples, stats=joined, warmup_divergences=warmup_divergences)


def chain_devices(chains: int, batch: Any = None) -> tuple | None:
    """The CPU devices :func:`run_nuts` spreads ``chains`` over, or None (all on one device).

    As many devices as divide the chains evenly (4 chains on 3 devices use 2). None with one
    device, on accelerators (where a cohort's patients are sharded instead,
    :func:`~ctcdyn.inference.shard_patients`), and for a batch already spread over devices.
    """
    devices = jax.local_devices()
    if len(devices) < 2 or devices[0].platform != "cpu":
        return None
    if any(_spread(leaf) for leaf in jax.tree.leaves(batch)):
        return None
    used = max(d for d in range(1, min(chains, len(devices)) + 1) if chains % d == 0)
    return tuple(devices[:used]) if used > 1 else None


def _spread(x: Any) -> bool:
    return isinstance(x, jax.Array) and len(x.sharding.device_set) > 1


class _Kernels(NamedTuple):
    start: Callable  # (batch, jitter_keys, chain_keys) -> states
    block: Callable  # (states, batch) -> (states, records of `length` iterations)
    postprocess: Callable  # (batch, z) -> constrained and deterministic sites


#: Compiled kernels by (model, settings, data structure): chunks of a batch run, and repeated
#: fits of one model, reuse them instead of tracing and compiling NUTS again (tens of seconds).
_KERNELS: dict[tuple, _Kernels] = {}
_KERNELS_KEPT = 8


def _kernels(model, settings: NUTSSettings, first, key, devices: tuple | None = None) -> _Kernels:
    deterministic_start = isinstance(model, StartsAtValues)
    signature = (
        model,
        settings,
        devices,
        jax.tree.structure(first),
        tuple((jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(first)),
    )
    if deterministic_start and signature in _KERNELS:
        return _KERNELS[signature]
    potential_gen, postprocess_gen, center = _potential(model, first, key)
    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")
    dense_mass = _dense_mass(model, settings)

    def start(data, jitter_key, chain_key):
        flat, unravel = jax.flatten_util.ravel_pytree(center)
        noise = jax.random.uniform(
            jitter_key, flat.shape, minval=-settings.init_jitter, maxval=settings.init_jitter
        )
        jittered = unravel(flat + noise)
        potential = potential_gen(data)
        # A jittered start with a non-finite density falls back to the median start.
        usable = jnp.isfinite(potential(jittered))
        z0 = jax.tree.map(lambda a, b: jnp.where(usable, a, b), jittered, center)
        return init_kernel(
            z0,
            settings.warmup,
            dense_mass=dense_mass,
            target_accept_prob=settings.target_accept,
            max_tree_depth=settings.max_tree_depth,
            model_args=(data,),
            rng_key=chain_key,
        )

    def one_step(state, data):
        new = sample_kernel(state, model_args=(data,))
        record = {
            "z": new.z,
            "diverging": new.diverging,
            "energy": new.energy,
            "n_steps": new.num_steps,
            "step_size": new.adapt_state.step_size,
            "accept_prob": new.mean_accept_prob,
            "potential_energy": new.potential_energy,
        }
        return new, record

    step_all = jax.vmap(jax.vmap(one_step, in_axes=(0, None)))
    length = _block_length(settings)

    def block(states, data):
        return jax.lax.scan(lambda s, _: step_all(s, data), states, None, length=length)

    start_all = jax.vmap(jax.vmap(start, in_axes=(None, 0, 0)))
    if devices is None:
        start_jit, block_jit = jax.jit(start_all), jax.jit(block)
    else:
        # Each device runs the NUTS loop of its own chains: states and records are split on
        # the chain axis, the data copied to every device. The states leave `start` already
        # split, so every block is called with the shardings it was compiled for.
        mesh = Mesh(np.array(devices), (CHAIN_AXIS,))
        chain, records = PartitionSpec(None, CHAIN_AXIS), PartitionSpec(None, None, CHAIN_AXIS)
        sharded = jax.shard_map(
            block,
            mesh=mesh,
            in_specs=(chain, PartitionSpec()),
            out_specs=(chain, records),
            # No collectives inside: skip the check that NumPyro's loops would have to satisfy.
            check_vma=False,
        )
        on = lambda spec: NamedSharding(mesh, spec)  # noqa: E731
        start_jit = jax.jit(start_all, out_shardings=on(chain))
        block_jit = jax.jit(
            sharded,
            in_shardings=(on(chain), on(PartitionSpec())),
            out_shardings=(on(chain), on(records)),
        )

    def one_problem(data, z_problem):
        fn = postprocess_gen(data)
        flat = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), z_problem)
        out = jax.lax.map(fn, flat, batch_size=256)
        chains, draws = jax.tree.leaves(z_problem)[0].shape[:2]
        return jax.tree.map(lambda x: x.reshape((chains, draws, *x.shape[1:])), out)

    kernels = _Kernels(
        start=start_jit,
        block=block_jit,
        postprocess=jax.jit(jax.vmap(one_problem)),
    )
    if deterministic_start:
        if len(_KERNELS) >= _KERNELS_KEPT:
            _KERNELS.pop(next(iter(_KERNELS)))
        _KERNELS[signature] = kernels
    return kernels


def _potential(model, data, key):
    """NumPyro's potential and post-processing functions of ``model(data)`` (as functions of
    the data), and the unconstrained start point: the model's ``initial_values`` when it has
    them, else a prior draw. One eager trace of the model; nothing compiled here."""
    with handlers.seed(rng_seed=key):
        trace = handlers.trace(model).get_trace(data)
    latent = {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    transforms = {name: biject_to(site["fn"].support) for name, site in latent.items()}
    potential_gen, postprocess_gen = get_potential_fn(
        model, transforms, replay_model=True, dynamic_args=True, model_args=(data,)
    )
    values = (
        model.initial_values(jax.tree.leaves(data)[0].shape[0])
        if isinstance(model, StartsAtValues)
        else {name: site["value"] for name, site in latent.items()}
    )
    center = transform_fn(transforms, values, invert=True)
    return potential_gen, postprocess_gen, center

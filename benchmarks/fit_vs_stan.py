"""ESS per second of the hierarchical cohort fit: ctcdyn (NumPyro NUTS) against Stan, same run.

Simulates an mbc cohort, fits it with ctcdyn's NUTS (the loop of ``ctcdyn.inference._nuts.
run_nuts``, with its kernels compiled ahead of time so that compilation is timed apart) and
with Stan (PyStan 3, ``benchmarks/stan/mbc_cohort.stan``: the same model, priors,
parameterisation and data), and reports for each engine

- compile time: ctcdyn cold (empty persistent cache) and warm (populated cache), each in a
  fresh process; Stan cold (httpstan's model cache emptied) and warm (cached build);
- wall time of warmup and of sampling; min bulk ESS over the population parameters
  (``CountModel.site_names()[0]``) and which parameter it is;
- ESS/s: min bulk ESS / (warmup + sampling) [the headline], / sampling only, and / (compile +
  warmup + sampling);
- G = leapfrog steps / min bulk ESS (sampling phase; also counting warmup), time per gradient;
- the ratios ctcdyn / Stan.

Before sampling it checks that Stan's log-likelihood and full log density (priors and
Jacobians) equal ctcdyn's at the same parameter values; a mismatch makes the comparison
meaningless and is reported loudly.

    .venv/bin/python benchmarks/fit_vs_stan.py --patients 200 --warmup 1000 --samples 1000
    .venv/bin/python benchmarks/fit_vs_stan.py --patients 20 --warmup 200 --samples 200

Needs PyStan (``pip install "pystan>=3.10"``; a C++ compiler) unless ``--skip-stan``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STAN_FILE = HERE / "stan" / "mbc_cohort.stan"
PATIENT_LEVEL = (
    "metastatic_burden0",
    "growth_rate",
    "shedding_single_per_division",
    "shedding_cluster_per_division",
    "kill_rate",
)
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ctcdyn-fit-vs-stan-jax-cache"


def _setup_jax(cache_dir: Path | None, cpu_devices: int) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    # ctcdyn spreads its chains over CPU devices (run_nuts); 1 keeps them vmapped on one.
    jax.config.update("jax_num_cpu_devices", cpu_devices)
    if cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _cohort(patients: int, seed: int):
    """The spec and the FitData of a simulated mbc cohort."""
    import jax

    from ctcdyn.data import read_tables
    from ctcdyn.inference import fit_data
    from ctcdyn.simulate import simulate_cohort
    from ctcdyn.specs import load_spec

    spec = load_spec("mbc")
    with tempfile.TemporaryDirectory() as tmp:
        simulate_cohort(spec, patients, jax.random.key(seed)).write(tmp)
        folder = Path(tmp)
        tables = read_tables(
            folder / "draws.csv", folder / "patients.csv", folder / "treatments.csv"
        )
    return spec, fit_data(spec, tables)


# -- ctcdyn -------------------------------------------------------------------------------------


def _ctcdyn_kernels(spec, data, settings, seed: int, partial_centring: bool):
    """Model, batch, kernels and the start keys exactly as ``run_nuts`` builds them."""
    import jax
    import jax.numpy as jnp

    from ctcdyn.inference._fit import count_model
    from ctcdyn.inference._nuts import _kernels, chain_devices

    model = dataclasses.replace(count_model(spec, data, None), partial_centring=partial_centring)
    batch = jax.tree.map(lambda x: jnp.asarray(x)[None], data.arrays)
    first = jax.tree.map(lambda x: x[0], batch)
    k_init, k_jitter, k_chain = jax.random.split(jax.random.key(seed), 3)
    start = time.perf_counter()
    kernels = _kernels(model, settings, first, k_init, chain_devices(settings.chains, batch))
    setup_s = time.perf_counter() - start
    shape = (1, settings.chains)
    keys = (jax.random.split(k_jitter, shape), jax.random.split(k_chain, shape))
    return model, batch, kernels, keys, setup_s


def _compile_kernels(kernels, batch, keys, samples: int):
    """Trace, lower and compile start, block and postprocess; returns executables and seconds."""
    import jax

    times = {}
    start = time.perf_counter()
    start_exe = kernels.start.lower(batch, *keys).compile()
    times["start"] = time.perf_counter() - start
    states = jax.eval_shape(kernels.start, batch, *keys)
    start = time.perf_counter()
    block_exe = kernels.block.lower(states, batch).compile()
    times["block"] = time.perf_counter() - start
    z = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((*s.shape[:2], samples, *s.shape[2:]), s.dtype), states.z
    )
    start = time.perf_counter()
    post_exe = kernels.postprocess.lower(batch, z).compile()
    times["postprocess"] = time.perf_counter() - start
    return (start_exe, block_exe, post_exe), times


def _compile_probe(args) -> None:
    """Child process: setup and compile only (cold or warm persistent cache), JSON on stdout."""
    _setup_jax(Path(args.cache_dir), args.cpu_devices)
    from ctcdyn.inference import NUTSSettings

    spec, data = _cohort(args.patients, args.seed)
    settings = NUTSSettings(
        chains=args.chains,
        warmup=args.warmup,
        samples=args.samples,
        mass_matrix=args.mass_matrix,
    )
    _, batch, kernels, keys, setup_s = _ctcdyn_kernels(
        spec, data, settings, args.seed, args.partial_centring
    )
    _, times = _compile_kernels(kernels, batch, keys, args.samples)
    print(json.dumps({"setup_s": setup_s, **times, "total_s": setup_s + sum(times.values())}))


def _probe(args, cache_dir: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--compile-probe",
        *("--patients", str(args.patients), "--warmup", str(args.warmup)),
        *("--samples", str(args.samples), "--chains", str(args.chains)),
        *("--seed", str(args.seed), "--cache-dir", str(cache_dir)),
        *("--mass-matrix", args.mass_matrix),
        *("--cpu-devices", str(args.cpu_devices)),
        *(["--partial-centring"] if args.partial_centring else []),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ess(draws: dict[str, np.ndarray]) -> dict[str, float]:
    """Bulk ESS of each (chain, draw) array (ArviZ)."""
    import arviz

    out = arviz.ess({k: np.asarray(v, float) for k, v in draws.items()}, method="bulk")
    return {k: float(out[k].values) for k in draws}


def run_ctcdyn(args, spec, data, compile_probes: dict | None) -> dict:
    import jax

    from ctcdyn.inference import NUTSSettings
    from ctcdyn.inference._nuts import _block_length, _potential, chain_devices

    settings = NUTSSettings(
        chains=args.chains,
        warmup=args.warmup,
        samples=args.samples,
        mass_matrix=args.mass_matrix,
    )
    model, batch, kernels, keys, setup_s = _ctcdyn_kernels(
        spec, data, settings, args.seed, args.partial_centring
    )
    (start_exe, block_exe, post_exe), compile_times = _compile_kernels(
        kernels, batch, keys, args.samples
    )
    compile_s = setup_s + sum(compile_times.values())

    # One gradient of the potential, alone (one chain, no NUTS around it).
    first = jax.tree.map(lambda x: x[0], batch)
    potential_gen, _, center = _potential(model, first, jax.random.key(0))
    grad = jax.jit(jax.value_and_grad(potential_gen(first)))
    jax.block_until_ready(grad(center))
    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(grad(center))
    gradient_alone_s = (time.perf_counter() - start) / repeats

    # The loop of run_nuts, timed per phase.
    start = time.perf_counter()
    states = jax.block_until_ready(start_exe(batch, *keys))
    start_s = time.perf_counter() - start
    length = _block_length(settings)
    total = settings.warmup + settings.samples
    done, warmup_s, sampling_s = 0, 0.0, 0.0
    steps, kept_z, stats = [], [], {"diverging": [], "step_size": [], "accept_prob": []}
    while done < total:
        start = time.perf_counter()
        states, records = block_exe(states, batch)
        records = jax.device_get(records)
        elapsed = time.perf_counter() - start
        steps.append(np.asarray(records["n_steps"])[:, 0])  # (iterations, chains)
        if done < settings.warmup:
            warmup_s += elapsed
        else:
            sampling_s += elapsed
            kept_z.append(records["z"])
            for k in stats:
                stats[k].append(np.asarray(records[k])[:, 0])
        done += length
    warmup_s += start_s
    start = time.perf_counter()
    z = jax.tree.map(lambda *xs: np.moveaxis(np.concatenate(xs), 0, 2), *kept_z)
    samples = jax.device_get(post_exe(batch, z))
    post_s = time.perf_counter() - start

    steps_all = np.concatenate(steps)  # (iterations, chains)
    groups = len(chain_devices(settings.chains, batch) or [None])
    n_warm = settings.warmup
    population, patient = model.site_names()
    if args.save_draws is not None:
        # the sampler's own coordinates (unconstrained latent sites) and the parameters,
        # each (chain, draw, ...), for benchmarks/posterior_coupling.py
        np.savez_compressed(
            args.save_draws,
            **{f"latent/{k}": np.asarray(v)[0] for k, v in z.items()},
            **{f"value/{k}": np.asarray(samples[k])[0] for k in population + patient},
        )
        print(f"wrote {args.save_draws}")
    ess = _ess({name: np.asarray(samples[name])[0] for name in population})
    stats = {k: np.concatenate(v) for k, v in stats.items()}
    patient_ess = _patient_ess({name: np.asarray(samples[name])[0] for name in patient})
    return _summary(
        engine="ctcdyn",
        ess=ess,
        patient_ess=patient_ess,
        steps_warmup=steps_all[:n_warm],
        steps_sampling=steps_all[n_warm:],
        warmup_s=warmup_s,
        sampling_s=sampling_s,
        compile_s=compile_s,
        compile_cold_s=compile_probes["cold"]["total_s"] if compile_probes else None,
        compile_warm_s=compile_probes["warm"]["total_s"] if compile_probes else None,
        extra={
            "compile_in_process_s": {"setup": setup_s, **compile_times},
            "compile_probes": compile_probes,
            "postprocess_s": post_s,
            "gradient_alone_s": gradient_alone_s,
            "chain_devices": groups,
            # the chains on one device run in lockstep: an iteration costs the device's longest
            "lockstep_efficiency": float(
                steps_all.sum()
                / (
                    steps_all.shape[1]
                    * steps_all.reshape(len(steps_all), groups, -1).max(axis=2).mean(axis=1).sum()
                )
            ),
            "divergences": int(stats["diverging"].sum()),
            "step_size": stats["step_size"].mean(axis=0).tolist(),
            "accept_prob": float(stats["accept_prob"].mean()),
        },
    )


def _patient_ess(draws: dict[str, np.ndarray]) -> dict:
    """Min bulk ESS over patients for each patient-level parameter (chain, draw, patient)."""
    import arviz

    out = arviz.ess({k: np.asarray(v, float) for k, v in draws.items()}, method="bulk")
    return {k: float(np.min(out[k].values)) for k in draws}


def _summary(
    *,
    engine,
    ess,
    patient_ess,
    steps_warmup,
    steps_sampling,
    warmup_s,
    sampling_s,
    compile_s,
    compile_cold_s,
    compile_warm_s,
    extra,
) -> dict:
    slowest = min(ess, key=ess.get)
    min_ess = ess[slowest]
    n_sampling, n_warmup = float(np.sum(steps_sampling)), float(np.sum(steps_warmup))
    run_s = warmup_s + sampling_s
    return {
        "engine": engine,
        "min_ess_bulk": min_ess,
        "slowest_parameter": slowest,
        "ess_bulk": ess,
        "min_ess_bulk_patient_level": patient_ess,
        "compile_s": compile_s,
        "compile_cold_s": compile_cold_s,
        "compile_warm_s": compile_warm_s,
        "warmup_s": warmup_s,
        "sampling_s": sampling_s,
        "ess_per_s": min_ess / run_s,
        "ess_per_s_sampling_only": min_ess / sampling_s,
        "ess_per_s_with_compile": min_ess / (run_s + compile_s),
        "leapfrog_sampling": n_sampling,
        "leapfrog_warmup": n_warmup,
        "G": n_sampling / min_ess,
        "G_with_warmup": (n_sampling + n_warmup) / min_ess,
        "mean_steps_per_iteration": float(np.mean(steps_sampling)),
        "time_per_gradient_s": run_s / (n_sampling + n_warmup),
        **extra,
    }


# -- Stan ---------------------------------------------------------------------------------------


def stan_data(spec, data, *, prior=1, likelihood=1, seeding=1) -> dict:
    """The data block of mbc_cohort.stan from ctcdyn's FitData (long format, observed draws)."""
    from ctcdyn.dynamics._circadian import _GRID, N_HARMONICS
    from ctcdyn.dynamics._treatments import TreatmentKind
    from ctcdyn.inference._model import SD_PRIOR_SD_LOG

    a = data.arrays
    design = a.design
    kind = np.asarray(design.kind)
    _require(
        np.all(np.isin(kind, [int(TreatmentKind.NONE), int(TreatmentKind.CYTOTOXIC)]))
        and not np.any(np.asarray(design.dose_interval) > 0)
        and not np.any(np.isfinite(np.asarray(design.surgery_time))),
        "mbc_cohort.stan handles continuous cytotoxic treatments only",
    )
    _require(
        not np.any(np.asarray(a.ctc_censor)) and not np.any(np.asarray(a.clusters_censor)),
        "mbc_cohort.stan has no censored counts",
    )
    observed = np.asarray(a.ctc_mask) | np.asarray(a.clusters_mask)
    _require(  # padded rows (patients with fewer draws) carry no assay
        bool(np.all(np.asarray(a.sampled_recovery)[observed])), "every draw must use the spec assay"
    )
    _check_spec(spec)
    rows, cols = np.nonzero(observed)  # row-major: patient by patient, in time order
    t = np.asarray(a.time)[rows, cols]
    volume = np.asarray(a.volume_ml)[rows, cols]
    blood = np.asarray(a.blood_volume_ml)[rows]
    start, end = np.asarray(design.start)[rows], np.asarray(design.end)[rows]
    cytotoxic = kind[rows] == int(TreatmentKind.CYTOTOXIC)
    exposure = np.clip(t[:, None] - start, 0.0, np.maximum(end - start, 0.0))
    dose = np.where(cytotoxic, np.asarray(design.dose)[rows], 0.0)
    hour = 24.0 * np.mod(t, 1.0)
    phi = 2.0 * np.pi * hour / 24.0
    n = np.arange(N_HARMONICS + 1)
    theta = 2.0 * np.pi * np.arange(_GRID) / _GRID
    dft = np.where(n == 0, 1.0, 2.0)[:, None] / _GRID * np.cos(n[:, None] * theta[None, :])
    index = np.arange(1, t.size + 1)
    ctc_mask = np.asarray(a.ctc_mask)[rows, cols]
    cl_mask = np.asarray(a.clusters_mask)[rows, cols]
    p = spec.parameters

    def lognormal(name):
        return [math.log(p[name].prior.median_), p[name].prior.sd_log]

    def beta(name):
        return [p[name].prior.a, p[name].prior.b]

    _require(
        p["half_life_single"].to_internal == p["half_life_cluster"].to_internal,
        "both half-lives must share a unit",
    )
    return {
        "N": int(a.time.shape[0]),
        "D": int(t.size),
        "K": int(kind.shape[1]),
        "H": int(N_HARMONICS),
        "G": int(_GRID),
        "patient": (rows + 1).tolist(),
        "t": t,
        "fraction": volume / blood,
        "background": np.asarray(a.background_per_ml)[rows, cols] * volume,
        "cluster_fraction": np.asarray(a.cluster_recovery)[rows, cols] * volume / blood,
        "exposure_days": exposure,
        "dose": dose,
        "cos_hour": np.cos(n[None, :] * phi[:, None]),
        "sin_hour": np.sin(n[None, :] * phi[:, None]),
        "dft": dft,
        "cos_grid": np.cos(theta),
        "n_ctc": int(ctc_mask.sum()),
        "ctc_draw": index[ctc_mask].tolist(),
        "ctc": np.asarray(a.ctc)[rows, cols][ctc_mask].astype(int).tolist(),
        "n_clusters": int(cl_mask.sum()),
        "clusters_draw": index[cl_mask].tolist(),
        "clusters": np.asarray(a.clusters)[rows, cols][cl_mask].astype(int).tolist(),
        "unit_growth_rate": float(p["growth_rate"].to_internal),
        "unit_burden": float(p["metastatic_burden0"].to_internal),
        "unit_half_life": float(p["half_life_single"].to_internal),
        "median_log_location": [math.log(p[x].prior.median_) for x in PATIENT_LEVEL],
        "median_sd_log": [p[x].prior.sd_log for x in PATIENT_LEVEL],
        "between_patients": [p[x].between_patients for x in PATIENT_LEVEL],
        "sd_prior_sd_log": SD_PRIOR_SD_LOG,
        "half_life_prior": lognormal("half_life_single"),
        "half_life_cluster_prior": lognormal("half_life_cluster"),
        "efficiency_single_prior": beta("efficiency_single"),
        "efficiency_cluster_prior": beta("efficiency_cluster"),
        "circadian_amplitude_prior": lognormal("circadian_amplitude"),
        "peak_low": p["circadian_peak_hour"].prior.low,
        "peak_high": p["circadian_peak_hour"].prior.high,
        "resistance_rate_prior": lognormal("resistance_rate"),
        "recovery_prior": beta("recovery"),
        "dispersion_prior": lognormal("dispersion"),
        "include_prior": prior,
        "include_likelihood": likelihood,
        "include_seeding": seeding,
    }


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SystemExit(f"fit_vs_stan: {message}")


def _check_spec(spec) -> None:
    """The structure mbc_cohort.stan is written for (priors' families, levels, fixed values)."""
    from ctcdyn.specs._priors import Beta, LogNormal, Uniform

    p = spec.parameters
    want = {
        **{x: ("patient", LogNormal) for x in PATIENT_LEVEL},
        "half_life_single": ("population", LogNormal),
        "half_life_cluster": ("population", LogNormal),
        "efficiency_single": ("population", Beta),
        "efficiency_cluster": ("population", Beta),
        "circadian_amplitude": ("population", LogNormal),
        "circadian_peak_hour": ("population", Uniform),
        "resistance_rate": ("population", LogNormal),
        "recovery": ("population", Beta),
        "dispersion": ("population", LogNormal),
    }
    _require(set(spec.sampled) == set(want), f"sampled parameters differ: {spec.sampled}")
    for name, (level, prior) in want.items():
        _require(p[name].level == level and isinstance(p[name].prior, prior), f"{name} differs")
    _require(
        spec.primary_growth == spec.metastatic_growth == "exponential"
        and spec.count_family == "negbin"
        and float(p["primary_burden0"].value) == 0.0
        and "metastatic_growth_rate" not in p
        and "death_rate" not in p,
        "mbc_cohort.stan assumes P0 = 0, exponential growth at the patient's growth_rate, "
        "shedding per division with no turnover (division rate = growth_rate), NB2",
    )


def _start_points(model, data, chains: int, jitter: float, seed: int) -> list[dict]:
    """Constrained start values like ctcdyn's: prior medians, z = 0, plus Uniform(-j, j) on the
    unconstrained scale (ctcdyn falls back to the median where the density is not finite)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers
    from numpyro.distributions.transforms import biject_to

    arrays = jax.tree.map(jnp.asarray, data.arrays)
    with handlers.seed(rng_seed=0):
        trace = handlers.trace(model).get_trace(arrays)
    center = model.initial_values(data.n_patients)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(chains):
        point = {}
        for name, value in center.items():
            transform = biject_to(trace[name]["fn"].support)
            u = np.asarray(transform.inv(value))
            u = u + rng.uniform(-jitter, jitter, size=u.shape)
            point[name] = np.asarray(transform(jnp.asarray(u)))
        out.append(point)
    return out


def _values(point: dict) -> dict:
    """Parameter values (spec units, patient arrays) from the sites of one start point."""
    values = {}
    for name, v in point.items():
        if name.endswith("_z"):
            x = name[: -len("_z")]
            values[x] = np.exp(
                np.log(point[f"{x}_median"]) + point[f"{x}_sd"] * np.asarray(v, float)
            )
        elif not name.endswith(("_median", "_sd")):
            values[name] = np.asarray(v, float)
    return values


def _to_stan(point: dict) -> dict:
    return {k: (np.asarray(v, float).tolist()) for k, v in point.items()}


def check_stan(stan, code, spec, data, model, points, seed) -> dict:
    """Stan's log-likelihood and log density against ctcdyn's at the same parameter values."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import potential_energy, unconstrain_fn

    arrays = jax.tree.map(jnp.asarray, data.arrays)
    full = stan.build(code, data=stan_data(spec, data), random_seed=seed + 1)
    lik = stan.build(code, data=stan_data(spec, data, prior=0), random_seed=seed + 1)
    no_seed = stan.build(code, data=stan_data(spec, data, prior=0, seeding=0), random_seed=seed + 1)
    rows = []
    for point in points:
        values = {k: jnp.asarray(v) for k, v in _values(point).items()}
        singles, clusters = model.log_likelihood(arrays, values)
        ll_ctcdyn = float(jnp.sum(singles) + jnp.sum(clusters))
        upars = full.unconstrain_pars(_to_stan(point))
        ll_stan = lik.log_prob(upars, adjust_transform=False)
        ll_no_seed = no_seed.log_prob(upars, adjust_transform=False)
        site = {k: jnp.asarray(v) for k, v in point.items()}
        unconstrained = unconstrain_fn(model, (arrays,), {}, site)
        lp_ctcdyn = -float(potential_energy(model, (arrays,), {}, unconstrained))
        lp_stan = full.log_prob(upars, adjust_transform=True)
        rows.append(
            {
                "loglik_ctcdyn": ll_ctcdyn,
                "loglik_stan": ll_stan,
                "loglik_abs_diff": abs(ll_stan - ll_ctcdyn),
                "logdensity_ctcdyn": lp_ctcdyn,
                "logdensity_stan": lp_stan,
                "logdensity_abs_diff": abs(lp_stan - lp_ctcdyn),
                "loglik_change_without_seeding": ll_no_seed - ll_stan,
            }
        )
    worst = max(max(r["loglik_abs_diff"], r["logdensity_abs_diff"]) for r in rows)
    return {"points": rows, "max_abs_diff": worst, "ok": worst < 1e-6}


_ELAPSED = re.compile(rb"([0-9.eE+-]+) seconds \((Warm-up|Sampling)\)")


def run_stan(args, spec, data, model) -> dict:
    import httpstan.cache
    import httpstan.models
    import stan

    code = STAN_FILE.read_text()
    name = httpstan.models.calculate_model_name(code)
    compile_cold = None
    if not args.stan_keep_cache:
        httpstan.cache.delete_model_directory(name)
        start = time.perf_counter()
        stan.build(code, data=stan_data(spec, data), random_seed=args.seed + 1)
        compile_cold = time.perf_counter() - start
    start = time.perf_counter()
    posterior = stan.build(code, data=stan_data(spec, data), random_seed=args.seed + 1)
    compile_warm = time.perf_counter() - start

    points = _start_points(model, data, args.chains, 1.0, args.seed)
    check = check_stan(stan, code, spec, data, model, points[:2], args.seed)
    print(
        f"log-likelihood check (Stan vs ctcdyn, {len(check['points'])} points): max |diff| "
        f"{check['max_abs_diff']:.2e} -> {'OK' if check['ok'] else 'MISMATCH'}"
    )
    for r in check["points"]:
        print(
            f"  loglik {r['loglik_ctcdyn']:.9f} vs {r['loglik_stan']:.9f}; log density "
            f"{r['logdensity_ctcdyn']:.9f} vs {r['logdensity_stan']:.9f}; without seeding "
            f"the loglik changes by {r['loglik_change_without_seeding']:+.2e}"
        )

    # httpstan caches fits by seed: drop cached fits so that sampling really runs.
    fits = httpstan.cache.model_directory(name) / "fits"
    shutil.rmtree(fits, ignore_errors=True)
    start = time.perf_counter()
    fit = posterior.sample(
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.samples,
        save_warmup=True,
        init=[_to_stan(p) for p in points],
    )
    wall_s = time.perf_counter() - start
    # Per-chain elapsed times as Stan reports them (chains run in parallel processes).
    elapsed = []
    for out in fit.stan_outputs:
        found = {kind.decode(): float(v) for v, kind in _ELAPSED.findall(out)}
        elapsed.append((found.get("Warm-up", math.nan), found.get("Sampling", math.nan)))
    names = list(fit.sample_and_sampler_param_names) + list(fit.constrained_param_names)
    draws = fit._draws  # (rows, draws, chains), warmup first

    def row(key):
        return draws[names.index(key)]

    leapfrog = row("n_leapfrog__")
    warm = args.warmup
    population, patient = model.site_names()
    ess = _ess({p: row(p)[warm:].T for p in population})
    patient_ess = {}
    for x in patient:
        cols = [i for i, n in enumerate(names) if n.startswith(f"{x}_z.")]
        med, sd = row(f"{x}_median")[warm:], row(f"{x}_sd")[warm:]
        z = draws[cols][:, warm:]  # (patients, draws, chains)
        vals = np.exp(np.log(med)[None] + sd[None] * z)
        patient_ess[x] = vals.transpose(2, 1, 0)  # (chains, draws, patients)
    patient_ess = _patient_ess(patient_ess)
    warmup_s = max(w for w, _ in elapsed)
    sampling_s = max(s for _, s in elapsed)
    # Chains run in parallel: phase wall times are the slowest chain's; PyStan's own overhead
    # (HTTP, JSON of every draw) is the rest of the call.
    run_s = max(w + s for w, s in elapsed)
    return _summary(
        engine="Stan",
        ess=ess,
        patient_ess=patient_ess,
        steps_warmup=leapfrog[:warm],
        steps_sampling=leapfrog[warm:],
        warmup_s=warmup_s,
        sampling_s=run_s - warmup_s,
        compile_s=compile_warm if compile_cold is None else compile_cold,
        compile_cold_s=compile_cold,
        compile_warm_s=compile_warm,
        extra={
            "loglik_check": check,
            "chain_elapsed_s": elapsed,
            "pystan_sample_wall_s": wall_s,
            "sampling_s_slowest_chain": sampling_s,
            "divergences": int(row("divergent__")[warm:].sum()),
            "step_size": row("stepsize__")[warm:].mean(axis=0).tolist(),
            "accept_prob": float(row("accept_stat__")[warm:].mean()),
            "pystan": stan.__version__ if hasattr(stan, "__version__") else None,
        },
    )


# -- report -------------------------------------------------------------------------------------


def _fmt(x, spec=".3g") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_table(results: list[dict]) -> None:
    rows = [
        ("compile, cold (s)", "compile_cold_s", ".1f"),
        ("compile, warm (s)", "compile_warm_s", ".1f"),
        ("compile, this run (s)", "compile_s", ".1f"),
        ("warmup (s)", "warmup_s", ".1f"),
        ("sampling (s)", "sampling_s", ".1f"),
        ("min bulk ESS, population", "min_ess_bulk", ".0f"),
        ("  slowest parameter", "slowest_parameter", "s"),
        ("ESS/s (warmup + sampling)", "ess_per_s", ".3g"),
        ("ESS/s (sampling only)", "ess_per_s_sampling_only", ".3g"),
        ("ESS/s (with compile)", "ess_per_s_with_compile", ".3g"),
        ("G = leapfrog / min ESS", "G", ".0f"),
        ("G incl. warmup leapfrog", "G_with_warmup", ".0f"),
        ("mean leapfrog / iteration", "mean_steps_per_iteration", ".1f"),
        ("time per gradient (ms)", "time_per_gradient_s", ".3g"),
        ("divergences (sampling)", "divergences", "d"),
    ]
    width = 28
    header = f"{'':<{width}}" + "".join(f"{r['engine']:>14}" for r in results)
    if len(results) == 2:
        header += f"{'ratio':>10}"
    print(header)
    for label, key, spec in rows:
        line = f"{label:<{width}}"
        values = []
        for r in results:
            v = r.get(key)
            if key == "time_per_gradient_s" and v is not None:
                v = v * 1e3
            values.append(v)
            line += f"{_fmt(v, spec):>14}"
        if (
            len(results) == 2
            and all(isinstance(v, float | int) for v in values)
            and key not in ("divergences",)
        ):
            line += f"{_fmt(values[0] / values[1] if values[1] else math.nan, '.2f'):>10}"
        print(line)


def _brief(r: dict) -> None:
    print(
        f"{r['engine']}: compile {r['compile_s']:.1f} s, warmup {r['warmup_s']:.1f} s, "
        f"sampling {r['sampling_s']:.1f} s, min ESS {r['min_ess_bulk']:.0f} "
        f"({r['slowest_parameter']}), ESS/s {r['ess_per_s']:.3g}, G {r['G']:.0f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mass-matrix",
        choices=("diagonal", "blocks"),
        default="diagonal",
        help="ctcdyn's NUTS mass matrix (NUTSSettings.mass_matrix); Stan runs diag_e",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=4,
        help="CPU devices ctcdyn spreads its chains over (as `ctcdyn fit` does: one per chain; "
        "1 runs them vmapped on one device, as before 2026-12-01)",
    )
    parser.add_argument(
        "--partial-centring",
        action="store_true",
        help="ctcdyn samples each patient's singles level partially centred "
        "(CountModel.partial_centring); default: every patient effect non-centred, as Stan",
    )
    parser.add_argument(
        "--save-draws",
        type=Path,
        default=None,
        help="write ctcdyn's draws (latent coordinates and parameters) to this .npz",
    )
    parser.add_argument("--skip-stan", action="store_true")
    parser.add_argument("--skip-ctcdyn", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="JAX persistent compilation cache (emptied first to time a cold compile)",
    )
    parser.add_argument(
        "--no-compile-probes",
        action="store_true",
        help="skip the two child processes that time cold and warm-cache compiles",
    )
    parser.add_argument(
        "--stan-keep-cache",
        action="store_true",
        help="do not empty httpstan's model cache (no cold Stan compile)",
    )
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_probe:
        _compile_probe(args)
        return

    probes = None
    if not args.skip_ctcdyn and not args.no_compile_probes:
        shutil.rmtree(args.cache_dir, ignore_errors=True)
        probes = {"cold": _probe(args, args.cache_dir), "warm": _probe(args, args.cache_dir)}
    _setup_jax(args.cache_dir, args.cpu_devices)
    import jax

    from ctcdyn.inference._fit import count_model

    spec, data = _cohort(args.patients, args.seed)
    draws = int(np.sum(np.asarray(data.arrays.ctc_mask)))
    print(
        f"mbc cohort: {args.patients} patients, {draws} draws; {args.chains} chains x "
        f"({args.warmup} warmup + {args.samples} samples); float64; {jax.devices()[0]}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    )
    results = []
    if not args.skip_ctcdyn:
        results.append(run_ctcdyn(args, spec, data, probes))
        _brief(results[-1])
    if not args.skip_stan:
        # Stan's model is non-centred throughout: its start points and the log-density check
        # are in those coordinates (partial_centring off)
        results.append(run_stan(args, spec, data, count_model(spec, data, None)))
        _brief(results[-1])
    print()
    print_table(results)
    if len(results) == 2:
        ratio = results[0]["ess_per_s"] / results[1]["ess_per_s"]
        print(f"\nESS/s ratio ctcdyn / Stan (warmup + sampling, no compile): {ratio:.2f}")
    if args.out is not None:
        payload = {
            "command": " ".join(sys.argv),
            "patients": args.patients,
            "draws": draws,
            "chains": args.chains,
            "warmup": args.warmup,
            "samples": args.samples,
            "seed": args.seed,
            "cpus": os.cpu_count(),
            "results": results,
        }
        args.out.write_text(json.dumps(payload, indent=2, default=_json_default))
        print(f"wrote {args.out}")


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


if __name__ == "__main__":
    main()

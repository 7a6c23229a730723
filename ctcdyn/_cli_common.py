"""What every ``ctcdyn`` command shares: consoles, start-up, failing with exit code 2."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True)

#: Where compiled JAX programs are kept between runs (``CTCDYN_JAX_CACHE`` overrides).
JAX_CACHE = Path(os.environ.get("CTCDYN_JAX_CACHE", Path.home() / ".cache" / "ctcdyn" / "jax"))


def start(cpu_devices: int | None = None) -> None:
    """Set up JAX for a command: 64-bit numbers, the persistent compilation cache, and with
    ``cpu_devices`` that many CPU devices.

    Only the CLI does this; the library never changes JAX's global configuration. Counts and
    burdens spanning 1 to 1e12 are computed in double precision, and repeated runs reuse
    compiled samplers instead of compiling them again (DESIGN.md section 10). NUTS spreads its
    chains over CPU devices (:func:`ctcdyn.inference.run_nuts`; one device per chain ran a
    50-patient cohort fit 2.8x faster on 2 cores, docs/benchmarks.md), so a fitting command
    passes its chain count. The count is also put in the environment, so Dask workers that this
    process starts lay out their chains the same way and give the same draws. A count the user
    set (``JAX_NUM_CPU_DEVICES``, or ``--xla_force_host_platform_device_count`` in
    ``XLA_FLAGS``) is kept, as is the layout of a JAX that has already started.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))
    user_set = "JAX_NUM_CPU_DEVICES" in os.environ or "device_count" in os.environ.get(
        "XLA_FLAGS", ""
    )
    if cpu_devices is None or user_set:
        return
    try:
        jax.config.update("jax_num_cpu_devices", cpu_devices)
    except RuntimeError:  # JAX has started (an earlier step of the same command): keep its layout
        return
    os.environ["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)


def progress_bar(description: str = "[bold]{task.description}[/]") -> Progress:
    """The progress bar of every long command: on stderr, removed when it finishes."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def load_spec(model: str):
    """A bundled spec by name or a .toml path; exit code 2 with the problems when invalid."""
    from .specs import SpecError, load_spec

    try:
        return load_spec(model)
    except (SpecError, ValueError, FileNotFoundError) as err:
        raise fail(str(err)) from None

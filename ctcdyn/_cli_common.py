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


def start() -> None:
    """Set up JAX for a command: 64-bit numbers and the persistent compilation cache.

    Only the CLI does this; the library never changes JAX's global configuration. Counts and
    burdens spanning 1 to 1e12 are computed in double precision, and repeated runs reuse
    compiled samplers instead of compiling them again (DESIGN.md section 10).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))


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

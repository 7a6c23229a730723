"""Where the chunks of a batch fit run: in this process, or on a Dask cluster.

An executor maps a task function over tasks and yields ``(position, result)`` as tasks finish,
in any order. The caller (:func:`~ctcdyn.inference.fit_run`) writes each result to the run
folder as it arrives, so the writer is always the calling process: writes stay atomic and
single-writer whatever runs the fits.

- :class:`LocalExecutor`: one task after the other in this process (compiled samplers are
  reused through the module-level caches).
- :class:`DaskExecutor`: tasks go to the workers of a ``dask.distributed`` cluster (an address,
  an existing ``Client``, or a ``LocalCluster`` started for the run). Workers are long-lived
  processes, so each compiles a sampler once per shape and reuses it for every chunk it fits.
  A worker that dies takes only its running task with it: Dask runs it again elsewhere, and
  chunks already written are never redone. Each task carries this process's JAX precision and
  compilation-cache settings, so a worker computes exactly what this process would.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

#: JAX settings copied to every Dask task (so a worker's draws equal this process's).
MIRRORED_JAX_CONFIG = (
    "jax_enable_x64",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
)


class Executor(Protocol):
    """Runs ``fn`` over ``tasks``; yields ``(position in tasks, result)`` as each finishes."""

    def map[T, R](self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[tuple[int, R]]: ...


@dataclasses.dataclass(frozen=True)
class LocalExecutor:
    """Every task in this process, in order."""

    def map[T, R](self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[tuple[int, R]]:
        for i, task in enumerate(tasks):
            yield i, fn(task)


@dataclasses.dataclass(frozen=True)
class DaskExecutor:
    """Tasks on a ``dask.distributed`` cluster.

    Attributes:
        scheduler: the scheduler's address (``tcp://host:8786``); None starts a
            ``LocalCluster`` of worker processes (one thread each) for the run and closes it
            afterwards.
        client: an existing ``distributed.Client`` to use instead (left open).
        n_workers: workers of the ``LocalCluster`` (default: Dask's choice, one per core).
        in_flight: tasks submitted ahead per worker (more keeps workers busy; fewer bounds the
            results held on workers).
        retries: extra attempts of a task that raised (a killed worker is retried by Dask
            anyway, up to its ``allowed-failures`` setting).
    """

    scheduler: str | None = None
    client: Any = None
    n_workers: int | None = None
    in_flight: int = 2
    retries: int = 0

    def __post_init__(self) -> None:
        if self.scheduler is not None and self.client is not None:
            raise ValueError("give DaskExecutor a scheduler address or a client, not both")
        if self.in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {self.in_flight}")

    def map[T, R](self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[tuple[int, R]]:
        distributed = import_distributed()
        own_cluster = None
        if self.client is not None:
            client = self.client
        elif self.scheduler is not None:
            client = distributed.Client(self.scheduler)
        else:
            own_cluster = distributed.LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            client = distributed.Client(own_cluster)
        try:
            yield from self._run(distributed, client, fn, tasks)
        finally:
            if self.client is None:
                client.close()
            if own_cluster is not None:
                own_cluster.close()

    def _run(self, distributed, client, fn, tasks) -> Iterator[tuple[int, Any]]:
        config = jax_config()
        prefix = f"ctcdyn-{uuid.uuid4().hex[:8]}"
        todo = iter(enumerate(tasks))
        pending: dict[Any, int] = {}
        done = distributed.as_completed()

        def top_up() -> None:
            # workers may join or leave during the run: keep `in_flight` tasks per worker
            workers = max(1, len(client.scheduler_info().get("workers", {})))
            for i, task in itertools.islice(todo, max(0, self.in_flight * workers - len(pending))):
                future = client.submit(
                    run_configured,
                    fn,
                    task,
                    config,
                    key=f"{prefix}-{i}",
                    pure=False,
                    retries=self.retries,
                )
                pending[future] = i
                done.add(future)

        top_up()
        try:
            for future in done:
                i = pending.pop(future)
                result = future.result()  # raises the task's error (KilledWorker after retries)
                future.release()
                top_up()
                yield i, result
        finally:
            if pending:
                client.cancel(list(pending))


def import_distributed():
    """``dask.distributed``, or an ImportError that says how to install it."""
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            "the Dask executor needs dask.distributed, which is not installed. Try 1) "
            "pip install 'ctcdyn[dask]', or 2) the local executor (the default)."
        ) from err
    return distributed


def jax_config() -> dict[str, Any]:
    """This process's values of :data:`MIRRORED_JAX_CONFIG`."""
    import jax

    return {name: getattr(jax.config, name) for name in MIRRORED_JAX_CONFIG}


def run_configured[T, R](fn: Callable[[T], R], task: T, config: dict[str, Any]) -> R:
    """Set a worker's JAX configuration to ``config`` (the caller's), then run ``fn(task)``.

    Runs inside Dask workers only: the caller asked for these settings, and a worker must
    compute with the same precision to give the same draws.
    """
    import jax

    for name, value in config.items():
        if getattr(jax.config, name) != value:
            jax.config.update(name, value)
    return fn(task)

"""Where the units of a benchmark run: in this process, in local processes, or on a Ray cluster.

A unit is a module-level function called with arguments that decide its result (seeds among
them), never with the worker or the order it runs in, so the three give the same numbers.

- Local (the default): spawned processes, not forked ones (ONNX Runtime and torch thread pools
  in the parent cannot deadlock), one thread each: on a busy or small machine two 1-thread
  workers beat one 2-thread worker.
- Ray (``pip install droil_ros[ray]``): each unit is a Ray task of one CPU, retried on another
  node when its node dies (``RETRIES``). ``ray`` is ``local`` (start Ray on this machine),
  ``auto`` (the cluster this machine joined with ``ray start``) or a cluster's address. Units
  read and write their files (datasets, ONNX policies, results) under the benchmark's output
  folder, which every node must see at the same path (a shared filesystem), and each node needs
  this package installed as the head has it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial

from droil_ros.errors import DroilError

RETRIES = 3  # a Ray task lost with its node runs again elsewhere, up to this many times


class Executor:
    """``map(fn, items, common)``: ``fn(*common, item)`` for each item, results in order."""

    workers = 1
    name = "serial"

    def map(self, fn: Callable, items: Iterable, common: tuple = ()) -> Iterator:
        return (fn(*common, item) for item in items)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalProcesses(Executor):
    def __init__(self, workers: int):
        self.workers = workers
        self.name = f"{workers} local processes"
        self.pool = None

    def map(self, fn: Callable, items: Iterable, common: tuple = ()) -> Iterator:
        if self.pool is None:
            self.pool = multiprocessing.get_context("spawn").Pool(self.workers, _one_thread)
        return self.pool.imap(partial(_call, fn, common), items)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


class RayCluster(Executor):
    def __init__(self, address: str):
        try:
            import ray
        except ImportError:
            raise DroilError("--ray needs Ray: pip install 'droil_ros[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, log_to_driver=False,  # "local": a new one, never a joined one
                     include_dashboard=False, configure_logging=False)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.name = f"Ray ({address}, {self.workers} CPUs)"

    def map(self, fn: Callable, items: Iterable, common: tuple = ()) -> Iterator:
        ray = self.ray
        task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(fn)
        shared = [ray.put(value) for value in common]  # sent to each node once, not once per unit
        refs = [task.remote(*shared, item) for item in items]
        return (ray.get(ref) for ref in refs)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def executor(workers: int = 1, ray: str | None = None) -> Executor:
    """Ray when ``ray`` names a cluster, else ``workers`` local processes (1: this process)."""
    if ray:
        return RayCluster(ray)
    if workers < 1:
        raise DroilError(f"workers must be >= 1, got {workers}")
    return LocalProcesses(workers) if workers > 1 else Executor()


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch and ONNX Runtime when a unit imports them


def _call(fn: Callable, common: tuple, item):
    return fn(*common, item)

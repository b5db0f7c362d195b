"""Partitions of a population run on Dask distributed: a ``LocalCluster`` of worker processes started
here, or the workers of a running cluster (``--scheduler ADDRESS``).

Each worker process loads the knowledge once (a worker plugin, run again on a worker that replaces a
dead one); a partition whose task fails or whose worker dies is retried on another worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from datasets.extract_partitions import Partition
from screening.population import PartitionResult, RunOptions, load_screener, screen_partition
from screening.screener import Screener

__all__ = ["run_on_dask", "local_cluster", "RETRIES", "WORKER_CONFIG"]

PLUGIN = "medscreen-screener"
RETRIES = 2  # task errors; a dying worker's tasks are rescheduled by the scheduler anyway


class ScreenerOnWorker(WorkerPlugin):
    """Loads the screener (ontology, 12,633-disease tables, code maps, risk model) once per worker."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.screener: Screener | None = None

    def setup(self, worker: Any) -> None:
        self.screener = load_screener(self.options)

    def teardown(self, worker: Any) -> None:
        self.screener = None


def screen_on_worker(partition: Partition, options: RunOptions) -> PartitionResult:
    worker = get_worker()
    plugin = worker.plugins[PLUGIN]
    assert isinstance(plugin, ScreenerOnWorker)
    if plugin.screener is None:  # registered while this worker was starting: load it now
        plugin.setup(worker)
    assert plugin.screener is not None
    return screen_partition(plugin.screener, partition, options)


# Dask's statistical profiler samples every worker's stack 100 times a second for the dashboard's
# profile page; with no dashboard it only takes the GIL from the screening (about a tenth of the work
# measured on 30,000 children: 2 workers 5,229 -> 5,806 children per wall-second, median of 3).
WORKER_CONFIG: dict[str, object] = {
    "distributed.worker.profile.enabled": False,
    # Dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers to hand freed memory back to the OS at once;
    # a set threshold also fixes glibc's mmap threshold at 128 KB, so every array the batches make
    # (most are larger) is mapped and unmapped again, page faults included: about a tenth slower.
    # Screening's memory is flat per worker (one partition at a time), so glibc's own adaptive default.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


def local_cluster(workers: int) -> LocalCluster:
    """The ``LocalCluster`` population runs start: one single-threaded worker process per core asked
    (screening is Python-bound: processes give the parallelism), no dashboard, :data:`WORKER_CONFIG`."""
    with dask.config.set(WORKER_CONFIG):  # read by each worker process as it starts
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)


def run_on_dask(
    partitions: list[Partition],
    options: RunOptions,
    workers: int,
    scheduler: str | None,
    finished: Callable[[PartitionResult], None],
) -> float:
    """Run ``partitions`` on Dask and hand each result to ``finished`` (in this thread) as it comes;
    returns the seconds spent starting the workers and loading their knowledge."""
    began = time.perf_counter()
    cluster = None
    if scheduler is None:
        cluster = local_cluster(workers)
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            client.register_plugin(ScreenerOnWorker(options), name=PLUGIN)  # returns once every worker loaded
            loading = time.perf_counter() - began
            run = uuid.uuid4().hex[:12]  # keys unique per run: a shared scheduler must not reuse another run's result
            futures = [
                client.submit(screen_on_worker, p, options, key=f"screen-partition-{run}-{p.index}", retries=RETRIES)
                for p in partitions
            ]
            for future in as_completed(futures):
                finished(future.result())
                future.release()
            return loading
    finally:
        if cluster is not None:
            cluster.close()

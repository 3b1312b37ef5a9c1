"""Independent jobs spread over worker processes, their results in input order.

Making a training set or evaluating a package simulates scenes and takes
each through the first pass (detection and deblending): seconds to minutes
a scene, on one core, each depending only on its seed. On a cluster node or
a GPU machine with many cores, `ordered_map` runs them in parallel with the
same results, in the same order, as a loop (``workers=1``, which runs in
the calling process).

Workers are started with ``spawn``: a forked copy of a process that has
loaded torch (the evaluation's detector, the training loop) can deadlock
on locks held by its threads. Each job runs with BLAS on one thread, so
that the workers do not oversubscribe the cores between them. At most
twice as many jobs as workers are in flight, so the results waiting for the
caller (prepared scenes, say) stay few.

As with any spawned process (torch's ``DataLoader`` workers too), a script
that calls this with several workers must run its work under
``if __name__ == "__main__":``: each worker imports the script's module
first, and would otherwise run it again. The command line's entry point
does.
"""

from __future__ import annotations

__all__ = ["ordered_map"]

import collections
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _one_blas_thread(function: Callable[[Any], Any], item: Any) -> Any:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return function(item)


def ordered_map(function: Callable[[Any], Any], items: Iterable[Any], workers: int = 1) -> Iterator[Any]:
    """``function(item)`` for each of ``items``, in order, computed in up to ``workers`` processes.

    Parameters
    ----------
    function : callable
        A picklable callable (module-level function or `functools.partial`
        of one) of one argument; with several workers it runs in another
        process, so it must not rely on the caller's state.
    items : iterable
        Its picklable arguments.
    workers : `int`
        Processes to use; 1 runs every job in the calling process, one
        after the other.

    Yields
    ------
    result
        ``function(item)``, in the order of ``items``.

    Raises
    ------
    ValueError
        If ``workers`` is below 1.
    Exception
        The first exception a job raised, in the order of ``items``; jobs
        not yet started are cancelled.
    """
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}.")
    if workers == 1:
        for item in items:
            yield function(item)
        return
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        pending: collections.deque = collections.deque()
        queue = iter(items)
        for item in queue:
            pending.append(executor.submit(_one_blas_thread, function, item))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            for item in queue:
                pending.append(executor.submit(_one_blas_thread, function, item))
                break
            yield result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

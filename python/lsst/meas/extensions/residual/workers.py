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

A worker process can die under a job: killed by the system for its memory
(a cluster's out-of-memory killer takes the largest process), or by a crash
in compiled code. Its pool then fails every job not yet finished, those
running in the other workers too, and which job killed it is not known.
Each job marks its start (an empty file in a private folder). The jobs that
had started and not finished (about one per worker; all those in input order
up to the last of them) run again, alone in a fresh process, one after the
other: the others then give their own results, the one that needed the
machine's memory to itself may succeed, and one that dies again is known.
It raises `WorkerDiedError`, or gives the result ``on_lost`` makes of it
(the batch ``run`` records the scene as ``worker died`` and goes on). The
jobs that had not started go on in a fresh pool, with those after them.
Workers that die three times in a row before any job starts (they cannot
start, or the machine kills them at once) raise `WorkerDiedError`.

When the caller stops early (it closes the generator, or an exception or
Ctrl-C reaches it, SIGTERM too where the command line turned that into an
exception), the jobs still running are stopped (their workers terminated),
not waited for: a batch stopped by its time limit has seconds before it is
killed, and a worker that ran on would write into outputs that its caller no
longer watches.

As with any spawned process (torch's ``DataLoader`` workers too), a script
that calls this with several workers must run its work under
``if __name__ == "__main__":``: each worker imports the script's module
first, and would otherwise run it again. The command line's entry point
does.
"""

from __future__ import annotations

__all__ = ["ordered_map", "WorkerDiedError"]

import collections
import contextlib
import itertools
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .errors import WorkerDiedError

_log = logging.getLogger(__name__)


def _one_blas_thread(function: Callable[[Any], Any], item: Any, start_mark: str | None = None) -> Any:
    from threadpoolctl import threadpool_limits

    if start_mark is not None:
        # A file, not a message: a process killed while it writes one cannot block the others.
        open(start_mark, "x").close()
    with threadpool_limits(limits=1, user_api="blas"):
        return function(item)


def _set_up_process() -> None:
    """A worker's set-up: tqdm's lock becomes a lock among this process's threads only.

    tqdm's default lock is a multiprocessing one, a named semaphore: a worker stopped with its job
    (`_stop_workers`) leaves it for multiprocessing's resource tracker to remove, with a warning
    about "leaked semaphore objects" at the end of the command.
    """
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


#: Pools broken in a row with no job started (workers that die as they start) before giving up.
_IDLE_DEATHS = 3


@contextlib.contextmanager
def _spawned_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawned processes, shut down on leaving; its running jobs stopped if
    it is left by an exception (``GeneratorExit`` too: the caller stopped iterating)."""
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_set_up_process
    )
    try:
        yield executor
    except BaseException:
        _stop_workers(executor)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Terminate the pool's worker processes (their jobs' results are not wanted); the pool's
    shutdown then waits only for their ends."""
    terminate = getattr(executor, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    # Before 3.14 the pool has no public way to stop a running job: its table of processes.
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError):
            process.terminate()


def ordered_map(
    function: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int = 1,
    *,
    on_lost: Callable[[Any], Any] | None = None,
) -> Iterator[Any]:
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
    on_lost : callable, optional
        ``on_lost(item)``, called in this process, gives the result of an
        item whose job killed its worker process even when run alone (see
        the module's docstring). None: `WorkerDiedError` is raised instead.
        With one worker there is no other process to lose.

    Yields
    ------
    result
        ``function(item)``, in the order of ``items``.

    Raises
    ------
    ValueError
        If ``workers`` is below 1.
    WorkerDiedError
        If a job's worker process died, also when the job ran alone, and
        ``on_lost`` is None.
    Exception
        The first exception a job raised, in the order of ``items``; jobs
        not yet started are cancelled, and those running stopped.
    """
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}.")
    if workers == 1:
        for item in items:
            yield function(item)
        return
    queue: Iterator[tuple[int, Any]] = enumerate(items)
    idle_deaths = 0  # pools broken in a row before any of their unfinished jobs had started
    while True:
        unfinished, started = yield from _until_a_worker_dies(function, queue, workers)
        if not unfinished:
            return
        # The jobs that had started, and any before them in input order, are suspects; the rest
        # had not started and go back to a fresh pool, ahead of the jobs not yet submitted.
        last = max((k for k, (index, _, _) in enumerate(unfinished) if index in started), default=-1)
        suspects, waiting = unfinished[: last + 1], unfinished[last + 1 :]
        idle_deaths = 0 if suspects else idle_deaths + 1
        if idle_deaths >= _IDLE_DEATHS:
            raise WorkerDiedError(
                f"Worker processes died {idle_deaths} times in a row before running a job: the machine "
                "kills them (memory?) or they cannot start."
            )
        lost = [not _finished(future) for _, _, future in suspects]
        _log.warning(
            "A worker process died; %d job(s) running then run again, each alone in a fresh process.",
            sum(lost),
        )
        for (index, item, future), rerun in zip(suspects, lost, strict=True):
            # One that finished before the pool broke gives its result (or raises its own error).
            yield _run_alone(function, index, item, on_lost) if rerun else future.result()
        queue = itertools.chain([(index, item) for index, item, _ in waiting], queue)


def _finished(future: Future | None) -> bool:
    """Whether a job of a broken pool had finished (with its result or its own error)."""
    if future is None or not future.done() or future.cancelled():
        return False
    return not isinstance(future.exception(), BrokenProcessPool)


def _until_a_worker_dies(function, queue, workers: int):
    """Yield results of a pool's jobs in order; return, when the jobs are done or a worker died, the
    jobs then unfinished and the indices of those that had started.

    The returned ``(index, item, future)`` are in input order; ``future`` is None for an item that
    could not be submitted any more (the pool was already broken).
    """
    marks = tempfile.mkdtemp(prefix="ordered-map-starts-")
    pending: collections.deque[tuple[int, Any, Future | None]] = collections.deque()
    try:
        with _spawned_pool(workers) as executor:

            def submit(count: int) -> None:
                for index, item in itertools.islice(queue, count):
                    mark = os.path.join(marks, str(index))
                    try:
                        pending.append((index, item, executor.submit(_one_blas_thread, function, item, mark)))
                    except BrokenProcessPool:
                        pending.append((index, item, None))

            submit(2 * workers)
            while pending:
                index, item, future = pending[0]
                try:
                    result = future.result() if future is not None else None
                except BrokenProcessPool:
                    future = None
                if future is None:
                    executor.shutdown(wait=True, cancel_futures=True)  # no worker writes a mark after this
                    return list(pending), {int(name) for name in os.listdir(marks)}
                pending.popleft()
                os.remove(os.path.join(marks, str(index)))
                submit(1)
                yield result
            return [], set()
    finally:
        shutil.rmtree(marks, ignore_errors=True)


def _run_alone(function, index: int, item: Any, on_lost):
    """``function(item)`` in a fresh process of its own; ``on_lost(item)`` if that process dies too."""
    try:
        with _spawned_pool(1) as executor:
            return executor.submit(_one_blas_thread, function, item).result()
    except BrokenProcessPool as err:
        if on_lost is None:
            raise WorkerDiedError(
                f"The worker process running job {index} (counting from 0) died, also when the job ran "
                "alone: killed by the system (out of memory, for instance) or a crash in compiled code."
            ) from err
        return on_lost(item)

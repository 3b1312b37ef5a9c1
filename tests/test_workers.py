"""Jobs in worker processes (`ordered_map`): results in input order, errors raised, one worker in-process,
and a job that kills its worker process found by running the unfinished jobs again alone."""

import os
import signal
import time

import pytest
from lsst.meas.extensions.residual.workers import WorkerDiedError, ordered_map


def _square_and_pid(value):
    return value * value, os.getpid()


def _fails_on_three(value):
    if value == 3:
        raise RuntimeError(f"job {value} failed")
    return value


def _killed_on_three(value):
    if value == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    return value * value


def _slow_and_killed_on_three(value):
    """As `_killed_on_three`, each job taking 0.4 s (job 3 dies after 0.1 s): the other worker is
    still busy with its job when the pool breaks, and the queued jobs have not started."""
    time.sleep(0.1 if value == 3 else 0.4)
    return _killed_on_three(value)


def _killed_once(job):
    """Kills its process the first time it runs (no marker file yet), as an out-of-memory kill
    that depended on what else ran beside it; succeeds when run again."""
    value, marker = job
    if value == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def _slow_unless_zero_or_three(value):
    """0 at once, job 3 fails at once, every other job takes a minute."""
    if value == 3:
        raise RuntimeError(f"job {value} failed")
    if value:
        time.sleep(60)
    return value


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


class _KillsItsReader:
    """An item whose unpickling kills the process: a worker dies before its job starts."""

    def __reduce__(self):
        return _die, ()


def test_results_come_in_input_order_from_worker_processes():
    results = list(ordered_map(_square_and_pid, range(9), workers=2))
    assert [value for value, _ in results] == [k * k for k in range(9)]
    assert os.getpid() not in {pid for _, pid in results}


def test_one_worker_runs_the_jobs_in_this_process():
    results = list(ordered_map(_square_and_pid, [2, 5], workers=1))
    assert results == [(4, os.getpid()), (25, os.getpid())]


def test_a_failing_job_raises_after_the_results_before_it():
    made = []
    with pytest.raises(RuntimeError, match="job 3 failed"):
        for value in ordered_map(_fails_on_three, range(8), workers=2):
            made.append(value)
    assert made == [0, 1, 2]


def test_fewer_than_one_worker_is_refused():
    with pytest.raises(ValueError, match="workers must be at least 1, not 0"):
        list(ordered_map(_square_and_pid, [1], workers=0))


def test_a_job_that_kills_its_worker_gets_on_losts_result_and_the_others_their_own(caplog):
    lost = []

    def on_lost(value):
        lost.append(value)
        return "lost"

    caplog.set_level("WARNING", logger="lsst.meas.extensions.residual.workers")
    results = list(ordered_map(_slow_and_killed_on_three, range(9), workers=2, on_lost=on_lost))
    # The job running beside it when the pool broke ran again, alone, and succeeded; the queued
    # ones that had not started went on in a fresh pool.
    assert results == [0, 1, 4, "lost", 16, 25, 36, 49, 64]
    assert lost == [3]
    reruns = [r.args[0] for r in caplog.records if "run again, each alone" in r.getMessage()]
    # Job 3 and the one running beside it, not the queued ones (four jobs are in flight).
    assert len(reruns) == 1 and 1 <= reruns[0] <= 2


def test_a_job_that_kills_its_worker_raises_after_the_results_before_it():
    made = []
    with pytest.raises(
        WorkerDiedError, match=r"running job 3 \(counting from 0\) died, also when the job ran alone"
    ):
        for value in ordered_map(_killed_on_three, range(6), workers=2):
            made.append(value)
    assert made == [0, 1, 4]


def test_a_job_whose_worker_died_once_succeeds_when_run_alone(tmp_path):
    marker = str(tmp_path / "died-once")
    results = list(ordered_map(_killed_once, [(k, marker) for k in range(6)], workers=2))
    assert results == list(range(6))
    assert os.path.exists(marker)  # it did kill its first worker


def test_workers_that_die_before_any_job_starts_are_given_up_on():
    with pytest.raises(WorkerDiedError, match="3 times in a row before running a job"):
        list(ordered_map(_square_and_pid, [_KillsItsReader()] * 3, workers=2))


def test_a_caller_that_stops_early_stops_the_running_jobs():
    """Closing the results (a caller's Ctrl-C, SIGTERM or error does) terminates the jobs still
    running instead of waiting for them (the pool's own shutdown would wait the 60 s)."""
    start = time.monotonic()
    results = ordered_map(_slow_unless_zero_or_three, [0, 1, 2], workers=2)
    assert next(results) == 0
    results.close()
    assert time.monotonic() - start < 30


def test_an_error_in_a_job_stops_the_jobs_running_beside_it():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="job 3 failed"):
        list(ordered_map(_slow_unless_zero_or_three, [3, 1], workers=2))
    assert time.monotonic() - start < 30

"""Jobs in worker processes (`ordered_map`): results in input order, errors raised, one worker in-process."""

import os

import pytest
from lsst.meas.extensions.residual.workers import ordered_map


def _square_and_pid(value):
    return value * value, os.getpid()


def _fails_on_three(value):
    if value == 3:
        raise RuntimeError(f"job {value} failed")
    return value


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

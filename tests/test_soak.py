"""`make soak`, shortened: two served instances on one database keep their promises under random
load while a gunicorn worker is killed and PostgreSQL restarts (see benchmarks/soak.py).

It runs an embedded PostgreSQL of its own whatever TEST_DATABASE_URL says, since it restarts it.
Every time bound in it is a deadline polled against or a window measured during the run.
"""

from pathlib import Path

from benchmarks.soak import SoakPlan, run_soak, summary

SOAK_SECONDS = 20


def test_two_instances_through_a_worker_kill_and_a_database_restart_keep_every_promise(
    tmp_path: Path,
) -> None:
    result = run_soak(SoakPlan.lasting(SOAK_SECONDS), tmp_path / "instances.log")

    report = summary(result)
    print(report)
    assert result.passed, report

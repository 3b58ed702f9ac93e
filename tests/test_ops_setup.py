"""Operations against a real Airflow (api-server, scheduler, dag-processor on loopback; no tfp_sftp pool):

- ``tfp run`` whose ``AIRFLOW_HOME`` is that of a running scheduler refuses, and creates no run there
  (contract section 10: it never changes runs of an Airflow whose scheduler is live);
- a night triggered through the scheduler with no ``tfp_sftp`` pool anywhere runs its network tasks
  (the DAG uses the default pool, which always exists), rather than leaving them *scheduled*.
"""

from __future__ import annotations

import sqlite3

import pytest
from hardening_helpers import R, make_borough, night_root, run_env, tfp_run

from conftest import make_keys
from ops_helpers import airflow_stack

pytestmark = [pytest.mark.slow, pytest.mark.airflow_stack]


def _runs(home) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT run_id, run_type FROM dag_run").fetchall()


def test_tfp_run_refuses_the_home_of_a_live_scheduler_and_a_night_runs_without_a_dedicated_pool(tmp_path):
    borough = make_borough(tmp_path / "borough", families=20)
    root = tmp_path / "night"
    config = night_root(root, borough)
    keys = make_keys()
    with airflow_stack(tmp_path, {"TFP_CONFIG": str(config), **keys}) as stack:
        admin = stack.token("admin")
        stack.wait_for_dag("tfp_nightly", admin)
        pools = [p["name"] for p in stack.api("GET", "/pools", admin)["pools"]]
        assert pools == ["default_pool"], pools

        refused = tfp_run(config, run_env(root, keys, AIRFLOW_HOME=str(stack.home)), timeout=300)
        assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
        assert "scheduler is running" in refused.stderr and str(stack.home) in refused.stderr
        assert _runs(stack.home) == []  # no dag_test run was created beside the scheduler's

        # the scheduler runs a triggered night to the end with no tfp_sftp pool
        stack.api("PATCH", "/dags/tfp_nightly", admin, {"is_paused": False})
        stack.api("POST", "/dags/tfp_nightly/dagRuns", admin,
                  {"logical_date": f"{R.isoformat()}T00:00:00+00:00", "conf": {"dry_run": True}})
        runs = stack.wait_for_runs("tfp_nightly", admin, 1, timeout=600)
        assert runs[0]["state"] == "success", stack.failed_task_logs("tfp_nightly", runs, admin)

"""Production-shaped: CeleryExecutor with the machine's PostgreSQL and Redis, one nightly run through it.

Airflow's metadata and the tfp warehouse each get a fresh PostgreSQL database (dropped afterwards);
Celery's broker is the running Redis on 127.0.0.1:6379, on a queue of this test's own so nothing else
on that Redis is touched. The scheduler, dag-processor, api-server and one `airflow celery worker`
run on loopback; `airflow dags trigger` starts a run for 31 March 2025, and the delivery is checked
as the recipient would check it (`tfp verify-delivery`) and against the run report.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import secrets
import shutil
import subprocess
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import make_url

from conftest import PG_SERVER, _drop_pg_database, _new_pg_database, make_keys, new_pg_warehouse
from helpers import write_config
from ops_helpers import TFP, airflow_stack
from tfp.feeds import OPTIONAL_SOURCES, SOURCES
from tfp_airflow import preload
from tfp_dev.generate import generate

pytestmark = [pytest.mark.slow, pytest.mark.airflow_stack]

R = date(2025, 3, 31)
LA = "E09000031"
REDIS = "redis://127.0.0.1:6379"


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def airflow_db():
    if not PG_SERVER:
        pytest.skip("CeleryExecutor test: set TFP_TEST_POSTGRES_URL to run it (.ci/run does)")
    url = _new_pg_database()
    yield make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    _drop_pg_database(url)


def test_nightly_run_through_celery_on_postgresql_and_redis(tmp_path, airflow_db, pg_url):
    pytest.importorskip("airflow.providers.celery", reason="apache-airflow-providers-celery is not installed")
    if not _redis_up():
        pytest.skip(f"no Redis answering on {REDIS}")
    generate(tmp_path / "feeds", families=40, seed=47, on=R)
    new_pg_warehouse(pg_url)  # the operator's `tfp db upgrade`: a run never migrates PostgreSQL itself
    config = write_config(tmp_path, pg_url)
    for source in SOURCES:
        for path in (tmp_path / "feeds" / source).iterdir():
            shutil.copy(path, tmp_path / "inbound" / source / path.name)
    keys = make_keys()
    queue = f"tfp-ops-{secrets.token_hex(4)}"
    celery = {
        "AIRFLOW__CELERY__BROKER_URL": f"{REDIS}/{secrets.randbelow(8) + 8}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{airflow_db}",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
    }
    with airflow_stack(tmp_path, {"TFP_CONFIG": str(config), **keys}, executor="CeleryExecutor",
                       sql_alchemy_conn=airflow_db, celery=celery, worker_queue=queue) as stack:
        admin = stack.token("admin")
        stack.wait_for_dag("tfp_nightly", admin)
        stack.api("PATCH", "/dags/tfp_nightly", admin, {"is_paused": False})
        logical = datetime(R.year, R.month, R.day, 1, tzinfo=ZoneInfo("Europe/London")).isoformat()
        stack.airflow("dags", "trigger", "tfp_nightly", "--logical-date", logical, "--run-id", "ops_celery")
        [run] = stack.wait_for_runs("tfp_nightly", admin, 1, timeout=480,
                                    run_filter=lambda r: r["dag_run_id"] == "ops_celery")
        tis = stack.api("GET", "/dags/tfp_nightly/dagRuns/ops_celery/taskInstances?limit=100", admin)
        # Only the Celery worker listens on this queue: every task went through the broker to it.
        assert {ti["queue"] for ti in tis["task_instances"]} == {queue}
        # every task succeeded, but the optional sources' (the config leaves them out): skipped
        assert all(ti["state"] == ("skipped" if ti["task_id"].split(".")[0] in OPTIONAL_SOURCES else "success")
                   for ti in tis["task_instances"]), [(ti["task_id"], ti["state"]) for ti in tis["task_instances"]]
        worker_log = (stack.home / "celery-worker.log").read_text(errors="replace")
        assert "ops_celery" in worker_log
        # the worker's task processes were forked from a process that had imported their libraries; the
        # scheduler (CeleryExecutor: it forks no task) did not import them (tfp_airflow.preload)
        on = preload.wanted(["airflow", "celery", "worker"], os.environ, "CeleryExecutor")
        assert ("tfp preload: " in worker_log) is on
        assert "tfp preload:" not in (stack.home / "scheduler.log").read_text(errors="replace")

    delivered = tmp_path / "delivered"
    stamp = f"{R:%Y%m%d}"
    names = sorted(p.name for p in delivered.iterdir())
    assert names == sorted([f"tfp_submission_{LA}_{stamp}.csv", f"tfp_summary_{LA}_{stamp}.csv",
                            f"tfp_withdrawals_{LA}_{stamp}.csv", f"tfp_progress_{LA}_{stamp}.csv",
                            f"tfp_manifest_{LA}_{stamp}.json", f"tfp_manifest_{LA}_{stamp}.json.sig"])
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.from_private_bytes(base64.b64decode(keys["TFP_SIGNING_KEY"])).public_key()
    (tmp_path / "signing.pub").write_text(base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw))
                                          .decode())
    verify = subprocess.run([TFP, "verify-delivery", str(delivered), "--signing-public-key",
                             str(tmp_path / "signing.pub")], capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    manifest = json.loads((delivered / f"tfp_manifest_{LA}_{stamp}.json").read_text())
    assert manifest["reference_date"] == R.isoformat()
    report = json.loads((tmp_path / "work" / "reports" / R.isoformat() / "run_report.json").read_text())
    with (delivered / f"tfp_submission_{LA}_{stamp}.csv").open(newline="") as handle:
        submission = list(csv.DictReader(handle))
    assert len(submission) == report["persons_submitted"] > 0
    assert {row["reference_date"] for row in submission} == {R.isoformat()}

"""Load: two boroughs' runs at once (each its own PostgreSQL warehouse), and a backfill of several
dates at once against one PostgreSQL warehouse and one landing zone (the runs land the same files
concurrently): every run succeeds, no file is landed twice, and no run's data leaks into another's.
First as `tfp run` processes side by side, then all of it at once through Airflow's scheduler and
LocalExecutor on PostgreSQL."""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta
from itertools import combinations
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hardening_helpers import LA, assert_counts_add_up, landings, run_env, start_run
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from conftest import _drop_pg_database, _new_pg_database, airflow_home, make_keys, new_pg_warehouse
from helpers import write_config
from ops_helpers import airflow_stack
from tfp.warehouse import connect, staging
from tfp_dev.generate import generate

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.airflow_stack]

R = date(2025, 3, 31)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _wait_all(procs: dict[str, tuple], timeout: float = 1500) -> None:
    for label, (proc, log) in procs.items():
        code = proc.wait(timeout=timeout)
        assert code == 0, f"{label}: {log.read_text()[-4000:] if log.exists() else ''}"


def test_two_boroughs_at_once(tmp_path, pg_url):
    new_pg_warehouse(pg_url)
    second_url = new_pg_warehouse()
    try:
        keys = make_keys()
        procs, roots = {}, {}
        for la, url, seed in (("E09000031", pg_url, 21), ("E09000032", second_url, 22)):
            root = tmp_path / la
            generate(root / "inbound", families=25, seed=seed, on=R)
            config = write_config(root, url, local_authority={"code": la, "name": f"Borough {la}"})
            log = root / "run.log"
            fed = sum(len(_rows(p)) for p in (root / "inbound").rglob("*.csv") if "truth" not in p.parts)
            procs[la] = (start_run(config, run_env(root, keys), R, log), log)
            roots[la] = (root, url, fed)  # counted before the run removes the landed files from the drop
        _wait_all(procs)
        for la, (root, url, fed) in roots.items():
            submission = _rows(root / "delivered" / f"tfp_submission_{la}_{R:%Y%m%d}.csv")
            assert submission and {r["la_code"] for r in submission} == {la}
            engine = connect(url)
            assert sum(r["rows_read"] for r in landings(engine)) == fed  # its own rows, all of them, once
            assert_counts_add_up(engine)
    finally:
        _drop_pg_database(second_url)


def _several_nights(root: Path, dates: list[date], families: int, seed: int) -> None:
    """One borough's feeds for several nights side by side in ``root/inbound``."""
    for d in dates:
        generate(root / "gen" / d.isoformat(), families=families, seed=seed, on=d)
        for path in (root / "gen" / d.isoformat()).rglob("*.csv"):
            if "truth" not in path.parts:
                target = root / "inbound" / path.relative_to(root / "gen" / d.isoformat())
                target.parent.mkdir(parents=True, exist_ok=True)
                path.replace(target)


def test_a_backfill_of_several_dates_at_once_on_one_warehouse(tmp_path, pg_url):
    dates = [R - timedelta(days=2), R - timedelta(days=1), R]
    _several_nights(tmp_path, dates, families=25, seed=5)
    new_pg_warehouse(pg_url)
    config = write_config(tmp_path, pg_url)
    sent = len(list((tmp_path / "inbound").rglob("*.csv")))  # before the runs remove what they landed
    keys = make_keys()
    procs = {}
    for d in dates:
        home = tmp_path / f"airflow-{d}"
        env = run_env(tmp_path, keys, AIRFLOW_HOME=str(airflow_home(home)))
        log = tmp_path / f"run-{d}.log"
        procs[str(d)] = (start_run(config, env, d, log), log)
    _wait_all(procs)
    engine = connect(pg_url)
    rows = landings(engine)
    names = [(r["source"], r["file_name"]) for r in rows if r["status"] != "duplicate"]
    assert len(names) == len(set(names)) == sent
    assert list((tmp_path / "inbound").rglob("*.csv")) == []  # each landed file removed once, by some run
    assert {r["status"] for r in rows} <= {"staged", "duplicate"}
    assert_counts_add_up(engine)
    with engine.connect() as conn:
        for dataset, table in staging.items():
            per_landing = conn.execute(select(table.c.landing_id, func.count()).group_by(table.c.landing_id)).all()
            assert all(n == next(r["rows_staged"] for r in rows if r["id"] == lid) for lid, n in per_landing), dataset
    for d in dates:
        submission = _rows(tmp_path / "delivered" / f"tfp_submission_{LA}_{d:%Y%m%d}.csv")
        assert submission and {r["reference_date"] for r in submission} == {d.isoformat()}


def _interval(stack, dag_id: str, run_id: str, token: str) -> tuple[datetime, datetime]:
    """When a run's first task started and its last task ended."""
    tis = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100", token)["task_instances"]
    return (min(datetime.fromisoformat(t["start_date"]) for t in tis if t["start_date"]),
            max(datetime.fromisoformat(t["end_date"]) for t in tis if t["end_date"]))


def test_two_boroughs_and_a_parallel_backfill_through_the_scheduler_and_local_executor(tmp_path, pg_url):
    """The same, through Airflow's own scheduler and LocalExecutor with PostgreSQL as Airflow's metadata
    database: a backfill of three dates of one borough with three runs at a time, and at the same time a
    manual run of a second borough (its own config, warehouse and work_dir: its DAG `tfp_nightly__<la_code>`
    comes from its file in TFP_BOROUGHS_DIR). Every run succeeds (no deadlock), the runs overlap in time, and
    each delivery holds only its own borough's and date's data."""
    airflow_db = make_url(_new_pg_database()).set(drivername="postgresql+psycopg").render_as_string(
        hide_password=False)
    new_pg_warehouse(pg_url)
    second_url = new_pg_warehouse()
    try:
        dates = [R - timedelta(days=2), R - timedelta(days=1), R]
        first = tmp_path / "first"
        _several_nights(first, dates, families=20, seed=31)
        first_config = write_config(first, pg_url)
        second, second_la, second_date = tmp_path / "second", "E09000032", R - timedelta(days=10)
        generate(second / "inbound", families=20, seed=32, on=second_date)
        # the second borough's keys are variables of its own: check_setup refuses a borough sharing another's
        own = {f"{k}_key_env": f"TFP_{second_la}_{k.upper()}_KEY" for k in ("pseudonym", "linkage", "signing")}
        write_config(second, second_url, local_authority={"code": second_la, "name": "Borough 2"}, keys=own)
        # counted before the runs remove what they landed from the drop folders
        sent = len(list((first / "inbound").rglob("*.csv")))
        fed = sum(len(_rows(p)) for p in (second / "inbound").rglob("*.csv") if "truth" not in p.parts)
        keys = make_keys()
        keys.update({own[f"{k}_key_env"]: make_keys()[f"TFP_{k.upper()}_KEY"] for k in ("pseudonym", "linkage", "signing")})
        second_dag = f"tfp_nightly__{second_la}"
        with airflow_stack(tmp_path, {"TFP_CONFIG": str(first_config), "TFP_BOROUGHS_DIR": str(second), **keys},
                           sql_alchemy_conn=airflow_db) as stack:
            admin = stack.token("admin")
            for dag_id in ("tfp_nightly", second_dag):
                stack.wait_for_dag(dag_id, admin)
                stack.api("PATCH", f"/dags/{dag_id}", admin, {"is_paused": False})
            stack.airflow("backfill", "create", "--dag-id", "tfp_nightly", "--max-active-runs", "3",
                          "--from-date", dates[0].isoformat(), "--to-date", f"{dates[-1]}T23:59:59")
            logical = datetime(second_date.year, second_date.month, second_date.day, 1,
                               tzinfo=ZoneInfo("Europe/London")).isoformat()
            stack.airflow("dags", "trigger", second_dag, "--logical-date", logical, "--run-id", "second_borough")
            runs = stack.wait_for_runs("tfp_nightly", admin, 3, timeout=900)
            spans = {r["dag_run_id"]: _interval(stack, "tfp_nightly", r["dag_run_id"], admin) for r in runs}
            stack.wait_for_runs(second_dag, admin, 1, timeout=900)
            spans["second_borough"] = _interval(stack, second_dag, "second_borough", admin)
        backfill = [s for run_id, s in spans.items() if run_id != "second_borough"]
        assert len(backfill) == 3

        def overlap(a, b):
            return a[0] < b[1] and b[0] < a[1]

        assert any(overlap(a, b) for a, b in combinations(backfill, 2)), spans  # the backfill ran in parallel
        assert any(overlap(spans["second_borough"], b) for b in backfill), spans  # and beside the other borough

        engine = connect(pg_url)
        rows = landings(engine)
        names = [(r["source"], r["file_name"]) for r in rows if r["status"] != "duplicate"]
        assert len(names) == len(set(names)) == sent
        assert_counts_add_up(engine)
        for d in dates:
            submission = _rows(first / "delivered" / f"tfp_submission_{LA}_{d:%Y%m%d}.csv")
            assert submission and {(r["reference_date"], r["la_code"]) for r in submission} == {(d.isoformat(), LA)}
        assert sorted(p.name for p in (second / "delivered").iterdir()) == sorted(
            f"tfp_{kind}_{second_la}_{second_date:%Y%m%d}.{ext}" for kind, ext in
            (("submission", "csv"), ("summary", "csv"), ("withdrawals", "csv"), ("progress", "csv"), ("manifest", "json"),
             ("manifest", "json.sig")))
        submission = _rows(second / "delivered" / f"tfp_submission_{second_la}_{second_date:%Y%m%d}.csv")
        assert submission and {(r["reference_date"], r["la_code"]) for r in submission} == {
            (second_date.isoformat(), second_la)}
        assert sum(r["rows_read"] for r in landings(connect(second_url))) == fed
    finally:
        _drop_pg_database(second_url)
        _drop_pg_database(airflow_db)

"""Load: two boroughs' runs at once (each its own PostgreSQL warehouse), and a backfill of several
dates at once against one PostgreSQL warehouse and one landing zone (the runs land the same files
concurrently): every run succeeds, no file is landed twice, and no run's data leaks into another's."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

import pytest
from hardening_helpers import LA, assert_counts_add_up, landings, run_env, start_run
from sqlalchemy import func, select

from conftest import _drop_pg_database, _new_pg_database, make_keys
from helpers import write_config
from tfp.generate import generate
from tfp.warehouse import connect, staging

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

R = date(2025, 3, 31)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _wait_all(procs: dict[str, tuple], timeout: float = 1500) -> None:
    for label, (proc, log) in procs.items():
        code = proc.wait(timeout=timeout)
        assert code == 0, f"{label}: {log.read_text()[-4000:] if log.exists() else ''}"


def test_two_boroughs_at_once(tmp_path, pg_url):
    second_url = _new_pg_database()
    try:
        keys = make_keys()
        procs, roots = {}, {}
        for la, url, seed in (("E09000031", pg_url, 21), ("E09000032", second_url, 22)):
            root = tmp_path / la
            generate(root / "inbound", families=25, seed=seed, on=R)
            config = write_config(root, url, local_authority={"code": la, "name": f"Borough {la}"})
            log = root / "run.log"
            procs[la] = (start_run(config, run_env(root, keys), R, log), log)
            roots[la] = (root, url)
        _wait_all(procs)
        for la, (root, url) in roots.items():
            submission = _rows(root / "delivered" / f"tfp_submission_{la}_{R:%Y%m%d}.csv")
            assert submission and {r["la_code"] for r in submission} == {la}
            engine = connect(url)
            fed = sum(len(_rows(p)) for p in (root / "inbound").rglob("*.csv") if "truth" not in p.parts)
            assert sum(r["rows_read"] for r in landings(engine)) == fed  # its own rows, all of them, once
            assert_counts_add_up(engine)
    finally:
        _drop_pg_database(second_url)


def test_a_backfill_of_several_dates_at_once_on_one_warehouse(tmp_path, pg_url):
    dates = [R - timedelta(days=2), R - timedelta(days=1), R]
    for d in dates:
        generate(tmp_path / "gen" / d.isoformat(), families=25, seed=5, on=d)
        for path in (tmp_path / "gen" / d.isoformat()).rglob("*.csv"):
            if "truth" not in path.parts:
                target = tmp_path / "inbound" / path.relative_to(tmp_path / "gen" / d.isoformat())
                target.parent.mkdir(parents=True, exist_ok=True)
                path.replace(target)
    config = write_config(tmp_path, pg_url)
    keys = make_keys()
    procs = {}
    for d in dates:
        home = tmp_path / f"airflow-{d}"
        env = run_env(tmp_path, keys, AIRFLOW_HOME=str(home))
        log = tmp_path / f"run-{d}.log"
        procs[str(d)] = (start_run(config, env, d, log), log)
    _wait_all(procs)
    engine = connect(pg_url)
    rows = landings(engine)
    names = [(r["source"], r["file_name"]) for r in rows if r["status"] != "duplicate"]
    assert len(names) == len(set(names)) == len(list((tmp_path / "inbound").rglob("*.csv")))
    assert {r["status"] for r in rows} <= {"staged", "duplicate"}
    assert_counts_add_up(engine)
    with engine.connect() as conn:
        for dataset, table in staging.items():
            per_landing = conn.execute(select(table.c.landing_id, func.count()).group_by(table.c.landing_id)).all()
            assert all(n == next(r["rows_staged"] for r in rows if r["id"] == lid) for lid, n in per_landing), dataset
    for d in dates:
        submission = _rows(tmp_path / "delivered" / f"tfp_submission_{LA}_{d:%Y%m%d}.csv")
        assert submission and {r["reference_date"] for r in submission} == {d.isoformat()}

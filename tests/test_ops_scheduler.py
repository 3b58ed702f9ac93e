"""The scheduled path for real: a backfill of three nights through Airflow's scheduler and LocalExecutor.

The api-server, scheduler and dag-processor run on loopback (SQLite metadata); `airflow backfill create`
asks for three reference dates (across the clocks going forward on 30 March 2025). Their deliveries
must be byte for byte what three `tfp run` calls produce against an independent warehouse with the same
feeds, keys and config. Then one date is cleared and re-run by the scheduler, and nothing changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import MetaData, create_engine, func, select

from conftest import airflow_home, make_keys
from helpers import write_config
from ops_helpers import TFP, airflow_stack, clean_env
from tfp.feeds import SOURCES
from tfp_airflow import preload
from tfp_dev.generate import generate

pytestmark = [pytest.mark.slow, pytest.mark.airflow_stack]

DATES = (date(2025, 3, 29), date(2025, 3, 30), date(2025, 3, 31))
LONDON = ZoneInfo("Europe/London")


def _reference_date(run: dict) -> date:
    return datetime.fromisoformat(run["logical_date"]).astimezone(LONDON).date()


def _delivered(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def _row_counts(warehouse: Path) -> dict[str, int]:
    engine = create_engine(f"sqlite:///{warehouse}")
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        counts = {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                  for name, table in meta.tables.items()}
    engine.dispose()
    return counts


def _tfp_runs(config: Path, env: dict, results: list) -> None:
    """What an engineer would run by hand: `tfp run` for each date, in order."""
    for day in DATES:
        results.append(subprocess.run([TFP, "run", "--config", str(config), "--date", day.isoformat()], env=env,
                                      capture_output=True, text=True, cwd=config.parent, timeout=400))


def test_backfill_through_the_scheduler_matches_tfp_run_and_a_rerun_changes_nothing(tmp_path):
    started = time.monotonic()
    inbound = tmp_path / "inbound"
    for day in DATES:  # three nights' drops from the same synthetic borough, side by side
        generate(tmp_path / f"gen-{day:%Y%m%d}", families=40, seed=13, on=day)
        for source in SOURCES:
            (inbound / source).mkdir(parents=True, exist_ok=True)
            for path in (tmp_path / f"gen-{day:%Y%m%d}" / source).iterdir():
                shutil.copy(path, inbound / source / path.name)
    scheduled, by_hand = tmp_path / "scheduled", tmp_path / "by-hand"
    for folder in (scheduled, by_hand):
        folder.mkdir()
        config = write_config(folder, f"sqlite:///{folder / 'warehouse.db'}", inbound=str(inbound))
        # the scheduled runs and `tfp run` read one drop folder: neither may remove what it landed there
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
        config.write_text(yaml.safe_dump({**raw, "inbound": {"keep_local_files": True}}, sort_keys=False),
                          encoding="utf-8")
    keys = make_keys()

    manual: list[subprocess.CompletedProcess] = []
    hand = threading.Thread(target=_tfp_runs, args=(by_hand / "tfp.yaml", clean_env(
        {**keys, "AIRFLOW_HOME": str(airflow_home(by_hand / "airflow"))}), manual), daemon=True)
    with airflow_stack(tmp_path, {"TFP_CONFIG": str(scheduled / "tfp.yaml"), **keys}) as stack:
        hand.start()
        admin = stack.token("admin")
        stack.wait_for_dag("tfp_nightly", admin)
        stack.api("PATCH", "/dags/tfp_nightly", admin, {"is_paused": False})
        # One night at a time, as the DAG's own max_active_runs=1 (a backfill's default is 10). The last
        # night's logical date is 01:00 London, so the window ends at the end of that day.
        created = stack.airflow("backfill", "create", "--dag-id", "tfp_nightly", "--max-active-runs", "1",
                                "--from-date", DATES[0].isoformat(), "--to-date", f"{DATES[-1]}T23:59:59")
        runs = stack.wait_for_runs("tfp_nightly", admin, 3, timeout=600)
        assert sorted(_reference_date(r) for r in runs) == list(DATES), created.stdout
        assert {r["run_type"] for r in runs} == {"backfill"}
        backfilled_at = time.monotonic()
        # the tasks ran in processes forked from a scheduler that had imported their libraries (tfp_airflow.preload,
        # through the home's airflow_local_settings.py); no other component imported them
        logs = {name: (stack.home / f"{name}.log").read_text(errors="replace") for name in stack.procs}
        preloaded = f"tfp preload: {len(preload.MODULES)} of {len(preload.MODULES)} modules"
        assert (preloaded in logs["scheduler"]) is preload.wanted(["airflow", "scheduler"], os.environ, "LocalExecutor")
        assert not any("tfp preload:" in text for name, text in logs.items() if name != "scheduler")

        hand.join(timeout=max(1.0, 540 - (time.monotonic() - started)))
        assert not hand.is_alive(), "the three `tfp run` calls did not finish in time"
        for day, done in zip(DATES, manual, strict=True):
            assert done.returncode == 0, f"tfp run {day}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        scheduled_files = _delivered(scheduled / "delivered")
        by_hand_files = _delivered(by_hand / "delivered")
        for day in DATES:
            names = {n for n in scheduled_files if f"_{day:%Y%m%d}." in n}
            assert len(names) == 6, sorted(scheduled_files)
        assert sorted(scheduled_files) == sorted(by_hand_files)
        for name in scheduled_files:
            assert scheduled_files[name][0] == by_hand_files[name][0], f"{name} differs from tfp run's"

        # A partner asks for the 30th again: clear that run; the scheduler re-runs every task.
        rows_before = _row_counts(scheduled / "warehouse.db")
        rerun = next(r for r in runs if _reference_date(r) == DATES[1])
        stack.airflow("tasks", "clear", "tfp_nightly", "--start-date", DATES[1].isoformat(),
                      "--end-date", f"{DATES[1]}T23:59:59", "--yes")  # as the README's operations section says

        def rerun_finished():
            run = stack.api("GET", f"/dags/tfp_nightly/dagRuns/{rerun['dag_run_id']}", admin)
            if run["state"] == "failed":
                raise AssertionError(stack.failed_task_logs("tfp_nightly", [run], admin))
            return run if run["state"] == "success" and run["end_date"] != rerun["end_date"] else None

        stack.wait_for("the cleared run to succeed again", rerun_finished, timeout=300, every=5)
        tis = stack.api("GET", f"/dags/tfp_nightly/dagRuns/{rerun['dag_run_id']}/taskInstances?limit=100", admin)
        assert {ti["task_id"]: ti["try_number"] for ti in tis["task_instances"]}["deliver"] == 2
        assert _delivered(scheduled / "delivered") == scheduled_files  # same bytes, not even rewritten
        assert _row_counts(scheduled / "warehouse.db") == rows_before
    print(f"\nbackfill of 3 dates done {backfilled_at - started:.0f}s after start; "
          f"whole test {time.monotonic() - started:.0f}s")

"""The nightly DAG's params for manual runs, through the real DAG (dag.test in a subprocess):
`dry_run` does everything but deliver; `reference_date` runs a night from a run of another logical
date; `sources` pulls only the chosen partners' feeds while the night still links, assesses and
delivers from what every partner staged before."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from hardening_helpers import R, files_bytes, landings, make_borough, night_root, run_env

from conftest import make_keys
from tfp.warehouse import connect

pytestmark = pytest.mark.slow

RUN = ("import json, sys, datetime; from tfp_airflow.runner import run_dag; "
       "state, _ = run_dag('tfp_nightly', sys.argv[1], datetime.date.fromisoformat(sys.argv[2]), "
       "json.loads(sys.argv[3])); print('STATE', state); sys.exit(0 if state.endswith('success') else 1)")


def _run(config: Path, env: dict[str, str], conf: dict, logical: date = R) -> None:
    done = subprocess.run([sys.executable, "-c", RUN, str(config), logical.isoformat(), json.dumps(conf)], env=env,
                          capture_output=True, text=True, cwd=config.parent, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _states(home: Path) -> dict[str, str]:
    """Task id -> state in the newest run."""
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT task_id, state FROM task_instance WHERE run_id = "
                                 "(SELECT run_id FROM dag_run ORDER BY id DESC LIMIT 1)"))


def test_dry_run_delivers_nothing_and_a_sources_run_pulls_only_its_partner(tmp_path_factory):
    borough = make_borough(tmp_path_factory.mktemp("borough"))
    root = tmp_path_factory.mktemp("night")
    config = night_root(root, borough)
    env = run_env(root, make_keys())

    _run(config, env, {"dry_run": True})
    assert _states(root / "airflow")["deliver"] == "success"
    assert not (root / "delivered").exists() or files_bytes(root / "delivered") == {}
    assert len(list((root / "work" / "outbox").rglob("tfp_*"))) == 6  # packaged all the same (four CSVs)

    _run(config, env, {})
    delivered = files_bytes(root / "delivered")
    assert len(delivered) == 6  # four CSVs, the manifest, its signature
    engine = connect(f"sqlite:///{root / 'work' / 'warehouse.db'}")
    before = landings(engine)

    # Probation sends the night's file again under another date, and police sends nothing new. A
    # manual run (on another logical date, for reference date R) for police only must not touch
    # probation's folder.
    # (from the borough's own copy: the runs removed the landed plaintext from the drop folder)
    shutil.copy(borough / "probation" / f"cases_{R:%Y%m%d}.csv",
                root / "inbound" / "probation" / f"cases_{R - timedelta(days=1):%Y%m%d}.csv")
    _run(config, env, {"sources": ["police"], "reference_date": R.isoformat()}, logical=R + timedelta(days=7))
    states = _states(root / "airflow")
    # choose_sources (a branch) skips the left-out groups; extract no longer skips itself. The grid shows a
    # group in the state Airflow aggregates from its tasks' states: skipped for those, success for police.
    from airflow.api_fastapi.core_api.services.ui.grid import agg_state

    def group_state(source: str) -> str:
        return agg_state([states[f"{source}.{step}"] for step in ("extract", "validate", "stage")])

    assert states["choose_sources"] == "success"
    for source in ("probation", "housing", "dwp", "schools", "children_services"):
        assert {states[f"{source}.{step}"] for step in ("extract", "validate", "stage")} == {"skipped"}, source
        assert group_state(source) == "skipped", source
    assert group_state("police") == "success"
    assert states["police.extract"] == states["link"] == states["deliver"] == states["report"] == "success"
    assert all(state == "success" for task_id, state in states.items() if "." not in task_id), states
    assert landings(engine) == before  # nothing new landed: probation was not pulled, police had nothing new
    assert files_bytes(root / "delivered") == delivered  # the night is the same night

    _run(config, env, {})  # the next full run pulls probation's re-sent file: same bytes, landed as a duplicate
    after = landings(engine)
    assert len(after) == len(before) + 1 and after[-1]["status"] == "duplicate"
    assert files_bytes(root / "delivered") == delivered

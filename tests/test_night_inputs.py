"""No silent partial night, no silent slow failure (issue 14 items 2, 3; contract section 10), through
`tfp run` (the real DAG by dag.test in a subprocess):

- a night whose roster or a dataset of a source in the run has no file on or before R fails in
  ``check_inputs``, before ``package``, naming the datasets, and delivers nothing; a manual run that
  leaves that source out still runs on what was staged before;
- a typo in a drop folder fails ``check_setup`` in seconds, without retries or a flood of polling lines;
- the console ends with each task's outcome; the ``validate`` log holds its counts.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hardening_helpers import R, files_bytes, make_borough, night_root, run_env, tfp_run

from conftest import make_keys

pytestmark = pytest.mark.slow

RUN = ("import json, sys, datetime; from tfp_airflow.runner import run_dag; "
       "state, _ = run_dag('tfp_nightly', sys.argv[1], datetime.date.fromisoformat(sys.argv[2]), "
       "json.loads(sys.argv[3])); sys.exit(0 if state.endswith('success') else 1)")


def _states(home: Path) -> dict[str, tuple[str, int]]:
    """Task id -> (state, try number) in the newest run."""
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as conn:
        return {t: (s, n) for t, s, n in conn.execute(
            "SELECT task_id, state, try_number FROM task_instance WHERE run_id = "
            "(SELECT run_id FROM dag_run ORDER BY id DESC LIMIT 1)")}


def _delivered(root: Path) -> dict:
    return files_bytes(root / "delivered") if (root / "delivered").exists() else {}


def _assert_failed_before_package(done: subprocess.CompletedProcess, root: Path, missing: list[str]) -> None:
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-4000:]
    states = _states(root / "airflow")
    assert states["check_inputs"][0] == "failed", states
    assert states["package"][0] == "upstream_failed" and states["deliver"][0] == "upstream_failed", states
    assert _delivered(root) == {}
    assert not list((root / "work" / "outbox").rglob("tfp_*"))  # nothing packaged either
    assert f"no file dated on or before {done.args[-1]} for: {', '.join(missing)}" in out, out[-4000:]
    assert "  check_inputs: failed" in done.stdout  # the per-task outcome list
    assert "No tasks to run" not in out


@pytest.fixture(scope="module")
def borough(tmp_path_factory):
    return make_borough(tmp_path_factory.mktemp("borough"))


def test_a_borough_missing_one_dataset_never_delivers_and_a_run_leaving_that_source_out_does(tmp_path, borough):
    root = tmp_path / "night"
    config = night_root(root, borough)
    for path in (root / "inbound" / "schools").iterdir():
        path.unlink()  # schools never sent a file: the folder is there, empty
    (root / "inbound" / "children_services" / f"needs_{R:%Y%m%d}.csv").unlink()
    env = run_env(root, make_keys())

    done = tfp_run(config, env)
    _assert_failed_before_package(done, root, ["attendance", "needs"])

    # needs arrives; schools is deliberately left out of a manual run: the night runs without it
    (root / "inbound" / "children_services" / f"needs_{R:%Y%m%d}.csv").write_bytes(
        (borough / "children_services" / f"needs_{R:%Y%m%d}.csv").read_bytes())
    sources = ["police", "probation", "housing", "dwp", "children_services"]
    manual = subprocess.run([sys.executable, "-c", RUN, str(config), R.isoformat(), json.dumps({"sources": sources})],
                            env=env, capture_output=True, text=True, cwd=root, timeout=900)
    assert manual.returncode == 0, manual.stdout[-3000:] + manual.stderr[-3000:]
    states = _states(root / "airflow")
    assert states["schools.extract"][0] == "skipped" and states["deliver"][0] == "success", states
    assert len(_delivered(root)) == 6  # four CSVs, the manifest, its signature

    # the validate log holds its counts; Great Expectations' own INFO lines stay out of it
    text = manual.stdout + manual.stderr
    assert "source children_services validated: {'files_validated': 1, 'rows_read': " in text, text[-3000:]
    gx_info = [line for line in text.splitlines() if "[info" in line and "[great_expectations" in line]
    assert gx_info == [], gx_info[:5]


def test_an_empty_source_folder_never_delivers(tmp_path, borough):
    root = tmp_path / "night"
    config = night_root(root, borough)
    for path in (root / "inbound" / "police").iterdir():
        path.unlink()
    done = tfp_run(config, run_env(root, make_keys()))
    _assert_failed_before_package(done, root, ["incidents"])


def test_a_date_before_any_file_never_delivers(tmp_path, borough):
    root = tmp_path / "night"
    config = night_root(root, borough)
    env = run_env(root, make_keys())
    done = tfp_run(config, env, reference_date=R - timedelta(days=30))
    _assert_failed_before_package(done, root, ["attendance", "benefits", "cases", "consent", "families",
                                               "incidents", "needs", "tenancy_events"])
    # before the DAG's start date Airflow makes a run with no task at all: that is no green night either
    early = tfp_run(config, env, reference_date=R - timedelta(days=400))
    assert early.returncode == 1, early.stdout[-3000:]
    assert "no task ran" in early.stdout + early.stderr


def test_a_typo_in_a_drop_folder_fails_at_once_naming_it(tmp_path, borough):
    root = tmp_path / "night"
    config = night_root(root, borough)
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["sources"]["police"]["path"] = "inbound/polcie"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    started = time.monotonic()
    done = tfp_run(config, run_env(root, make_keys()), timeout=600)
    took = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 1, out[-4000:]
    assert took < 120, f"took {took:.0f} s"
    states = _states(root / "airflow")
    assert states["check_setup"] == ("failed", 1), states  # one try: no retries
    assert {states[f"{s}.extract"][0] for s in ("police", "schools")} == {"upstream_failed"}
    assert "source police: drop folder" in out and "polcie does not exist" in out, out[-4000:]
    assert "  check_setup: failed" in done.stdout
    assert "No tasks to run" not in out
    assert len(out.splitlines()) < 400, len(out.splitlines())
    assert _delivered(root) == {}


def test_an_extract_whose_folder_went_missing_fails_without_retries(tmp_path):
    """check_setup saw the folder; it is gone by the time extract runs: the task fails on its first try
    (AirflowFailException), where a network error would be retried."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dags"))
    from airflow.sdk.exceptions import AirflowFailException
    from tfp_nightly import _fail_fast

    from tfp.extract import SourceUnavailable, _DirectoryReader

    with pytest.raises(AirflowFailException, match="does not exist"):
        _fail_fast(_DirectoryReader, tmp_path / "gone", True, "police")
    with pytest.raises(OSError):  # anything else (the network) is left to the retries
        _fail_fast(lambda: (_ for _ in ()).throw(TimeoutError("sftp")))
    assert issubclass(SourceUnavailable, Exception) and not issubclass(SourceUnavailable, OSError)

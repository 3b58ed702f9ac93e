"""A stage that fails with an error that is not tfp's own (a library's, whose message may quote a value)
shows only the error's class and where it was raised: in the task's log, the alert, the failed night's
report and the OpenLineage FAIL event (tfp.pipeline.guarded, tfp.errors.StageCrashed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from conftest import airflow_home, make_keys
from helpers import read_lineage_events, write_config
from tfp.errors import FileRejected, StageCrashed, TfpError, value_free_traceback
from tfp.pipeline import guarded
from tfp_dev.generate import generate

R = date(2025, 3, 31)
TFP = str(Path(sys.executable).with_name("tfp"))
VALUE = "Zebedee-Quartermaine"  # stands for a value a library quoted: a name, a key, a postcode


def _library_call():
    raise KeyError(f"Key (forename)=({VALUE}) already exists")


def _stage_step():
    try:
        _library_call()
    except KeyError as e:
        raise ValueError(f"could not store {VALUE}") from e


def test_a_foreign_error_becomes_a_stage_crashed_naming_its_class_and_place_not_its_message(caplog):
    caplog.set_level(logging.ERROR, logger="tfp.pipeline")
    with pytest.raises(StageCrashed) as raised:
        guarded("consent", _stage_step)
    error = raised.value
    assert isinstance(error, TfpError)
    assert str(error).startswith("stage consent failed: ValueError in _stage_step (test_pipeline_errors.py:")
    assert VALUE not in str(error) and VALUE not in error.hint
    # raised outside the except block: no context or cause for a log formatter to print
    assert error.__cause__ is None and error.__context__ is None
    logged = caplog.text
    assert "ValueError" in logged and "KeyError" in logged and "_library_call" in logged
    assert VALUE not in logged


def test_tfp_errors_and_results_pass_through_unchanged():
    rejected = FileRejected("incidents_20250331.csv", "header")
    with pytest.raises(FileRejected) as raised:
        guarded("validate", lambda: (_ for _ in ()).throw(rejected))
    assert raised.value is rejected
    assert guarded("link", lambda: {"records_linked": 3}) == {"records_linked": 3}


def test_the_value_free_traceback_keeps_frames_and_classes_of_the_whole_chain():
    try:
        _stage_step()
    except ValueError as e:
        text = value_free_traceback(e)
    assert VALUE not in text
    assert text.index("KeyError") < text.index("ValueError")  # the cause first, as Python prints it
    assert "_library_call" in text and "_stage_step" in text and "raise KeyError" in text


CRASHING_CONSENT = textwrap.dedent('''
    """Test only: makes tfp.consent.run fail as a library would, quoting a roster forename."""
    import importlib.abc
    import importlib.machinery
    import sys


    class _Patch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "tfp.consent":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            original = spec.loader.exec_module

            def exec_module(module):
                original(module)

                def run(ctx):
                    from sqlalchemy import text
                    with ctx.warehouse.connect() as conn:
                        forename = conn.execute(text(
                            "SELECT forename FROM stg_families WHERE forename IS NOT NULL "
                            "ORDER BY LENGTH(forename) DESC LIMIT 1")).scalar()
                    with open(__import__("os").environ["TFP_TEST_QUOTED"], "w") as out:
                        out.write(forename)
                    raise ValueError(f"duplicate key value violates unique constraint: ({forename})")

                module.run = run
            spec.loader.exec_module = exec_module
            return spec


    sys.meta_path.insert(0, _Patch())
''')


@pytest.mark.slow  # a whole night through `tfp run`, with lineage on
def test_a_night_crashing_in_a_library_keeps_the_value_out_of_logs_events_and_report(tmp_path):
    root = tmp_path / "borough"
    root.mkdir()
    config = write_config(root, "sqlite:///work/warehouse.db")
    generate(root / "inbound", families=30, seed=20261202, on=R)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASHING_CONSENT)
    quoted = tmp_path / "quoted.txt"
    events_file = tmp_path / "lineage" / "events.jsonl"
    events_file.parent.mkdir()
    home = airflow_home(tmp_path / "airflow")
    env = {**os.environ, **make_keys(), "AIRFLOW_HOME": str(home), "TFP_TEST_QUOTED": str(quoted),
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events_file),
                                                          "append": True}),
           "AIRFLOW__OPENLINEAGE__NAMESPACE": "tfp-test"}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    done = subprocess.run([TFP, "run", "--config", str(config), "--date", R.isoformat()],
                          env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode != 0
    value = quoted.read_text()
    assert len(value) >= 4  # the crash really read a name, so the searches below can fail

    failed = [e for e in read_lineage_events(events_file) if e["eventType"] == "FAIL"]
    assert sorted(e["job"]["name"] for e in failed) == ["tfp_nightly", "tfp_nightly.consent"]  # the run and its task
    task_event = next(e for e in failed if e["job"]["name"] == "tfp_nightly.consent")
    message = task_event["run"]["facets"]["errorMessage"]["message"]
    assert message.startswith("stage consent failed: ValueError in run (sitecustomize.py:"), message

    searched = {"stdout": done.stdout.encode(), "stderr": done.stderr.encode(),
                "lineage events": events_file.read_bytes()}
    for folder in (home / "logs", root / "work" / "reports"):
        for path in folder.rglob("*"):
            if path.is_file():
                searched[str(path)] = path.read_bytes()
    assert any(b"traceback without messages" in data for data in searched.values())  # the task log was read
    leaked = [where for where, data in searched.items() if value.encode() in data]
    assert not leaked, f"the quoted value appears in {leaked}"

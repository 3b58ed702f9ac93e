"""DAG integrity: the DAGs folder imports cleanly, every task is owned and retried sensibly, and
parsing imports none of the heavy libraries (they load inside tasks only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfp.feeds import ALL_SOURCES

DAGS = Path(__file__).resolve().parents[1] / "dags"
HEAVY = ("pandas", "great_expectations", "splink", "duckdb", "pyrage", "paramiko", "asyncssh", "faker")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"tfp_nightly", "tfp_retention"} <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", ["tfp_nightly", "tfp_retention"])
def test_tags_owner_retries_and_docs(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert "tfp" in dag.tags
    assert dag.doc_md and "reference date" in dag.doc_md
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.owner == "tfp-data-team", task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert task.on_failure_callback, task.task_id
        if task.task_id.endswith(".extract") or task.task_id == "deliver":
            assert task.retries >= 1 and task.retry_exponential_backoff, task.task_id
        # the default pool always exists: a task in a missing pool would stay "scheduled" silently
        assert task.pool == "default_pool", task.task_id
        if task.task_id.endswith((".validate", ".delete")):
            assert task.retries == 0, "a broken file does not mend itself: no retries"


def test_nightly_shape(dagbag):
    dag = dagbag.dags["tfp_nightly"]
    assert dag.get_task("choose_sources").upstream_task_ids == {"check_setup"}
    for source in ALL_SOURCES:  # a group for health too: skipped by choose_sources when the config has none
        # a source left out of a manual run is skipped by choose_sources (a branch), before its group
        assert dag.get_task(f"{source}.extract").upstream_task_ids == {"choose_sources"}
        assert dag.get_task(f"{source}.validate").upstream_task_ids == {f"{source}.extract"}
        assert dag.get_task(f"{source}.stage").upstream_task_ids == {f"{source}.validate"}
    assert dag.get_task("check_inputs").upstream_task_ids == {f"{s}.stage" for s in ALL_SOURCES}
    assert dag.get_task("link").upstream_task_ids == {"check_inputs"}
    assert dag.get_task("deliver").upstream_task_ids == {"package"}


def test_parsing_imports_no_heavy_library(tmp_path):
    borough = tmp_path / "boroughs"
    borough.mkdir()
    (borough / "b.yaml").write_text("local_authority: {code: E09000032, name: B}\n", encoding="utf-8")
    code = (
        f"import sys, json, runpy, glob; sys.path.insert(0, {str(DAGS)!r})\n"
        f"for path in sorted(glob.glob({str(DAGS)!r} + '/*.py')):\n"
        "    runpy.run_path(path)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "TFP_BOROUGHS_DIR": str(borough)}  # a borough's DAGs parse just as lightly
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_manual_run_params_are_described_and_a_skipped_source_does_not_stop_the_night(dagbag):
    dag = dagbag.dags["tfp_nightly"]
    params = dag.params
    for name in ("reference_date", "dry_run", "sources"):
        assert params.get_param(name).description, name
    assert params["sources"] == ["police", "probation", "housing", "dwp", "schools", "children_services", "health",
                                 "support_services"]
    assert params["dry_run"] is False and params["reference_date"] is None
    assert dag.get_task("check_inputs").trigger_rule == "none_failed"


@pytest.mark.parametrize(("dag_id", "groups"), [
    ("tfp_nightly", ("police", "probation", "housing", "dwp", "schools", "children_services", "health")),
    ("tfp_retention", ("landing_copies", "quarantine", "staging", "withdrawn", "programme_end")),
])
def test_every_group_keeps_its_operator_docs_through_serialisation(dagbag, dag_id, groups):
    """The UI shows the serialised DAG: each group's tooltip and doc_md must survive it."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags[dag_id]))
    for group_id in groups:
        group = dag.task_group_dict[group_id]
        assert group.tooltip and group.doc_md, group_id
        assert group.children, group_id
    if dag_id == "tfp_nightly":
        assert "**police**" in dag.task_group_dict["police"].doc_md

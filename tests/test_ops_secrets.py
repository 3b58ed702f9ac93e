"""Review issue 13, items 7 and 1, against a real Airflow (api-server, scheduler, dag-processor on loopback).

7. Keys stored as Airflow Variables are masked in the API that the UI's Variables page reads, because
   tfp registers their names as sensitive (``[core] sensitive_var_conn_names``), as every config it
   writes or documents does. Another Variable is shown as it is, so the masking is this setting's doing.
1. A user with the User role can trigger runs but cannot set the Variable ``TFP_CONFIG``; a run they
   trigger with ``{"config": <their file>}`` is refused and never reads that file.
"""

from __future__ import annotations

import json

import pytest

from conftest import make_keys
from helpers import write_config
from ops_helpers import airflow_stack

pytestmark = [pytest.mark.slow, pytest.mark.airflow_stack]  # starts a real Airflow: about two minutes


def test_keys_stored_as_variables_are_masked_and_a_user_cannot_choose_the_config(tmp_path):
    keys = make_keys()
    legit = write_config(tmp_path / "borough", f"sqlite:///{tmp_path / 'borough' / 'warehouse.db'}")
    attacker = write_config(tmp_path / "borough" / "inbound" / "police", f"sqlite:///{tmp_path / 'loot.db'}",
                            work_dir=str(tmp_path / "attacker"), anonymisation={"k": 1})
    with airflow_stack(tmp_path, {"TFP_CONFIG": str(legit)}) as stack:
        admin = stack.token("admin")
        for name, value in {**keys, "TFP_NOTE": "a plain setting, not a secret"}.items():
            stack.api("POST", "/variables", admin, {"key": name, "value": value})

        for name, value in keys.items():
            one = stack.api("GET", f"/variables/{name}", admin)
            assert one["value"] != value and one["value"] == "***", name
        status, raw = stack.request("GET", "/api/v2/variables?limit=100", token=admin)
        assert status == 200
        listed = {v["key"]: v["value"] for v in json.loads(raw)["variables"]}
        assert {listed[name] for name in keys} == {"***"}
        assert not [name for name, value in keys.items() if value.encode() in raw]
        assert listed["TFP_NOTE"] == "a plain setting, not a secret"

        # item 1: the User role triggers runs but cannot name the config
        analyst = stack.token("analyst")
        status, _ = stack.request("POST", "/api/v2/variables", token=analyst,
                                  body={"key": "TFP_CONFIG", "value": str(attacker)})
        assert status == 403
        stack.wait_for_dag("tfp_nightly", admin)
        stack.api("PATCH", "/dags/tfp_nightly", admin, {"is_paused": False})
        run = stack.api("POST", "/dags/tfp_nightly/dagRuns", analyst,
                        {"logical_date": None, "conf": {"config": str(attacker)}})

        def finished():
            state = stack.api("GET", f"/dags/tfp_nightly/dagRuns/{run['dag_run_id']}", admin)["state"]
            return state if state in ("success", "failed") else None

        assert stack.wait_for("the attacker's run to finish", finished, timeout=300) == "failed"
        log = stack.failed_task_logs("tfp_nightly", [run], admin, tail=None)
        assert "check_setup" in log and "a trigger cannot choose the config" in log, log[-3000:]
    assert not (tmp_path / "attacker").exists()

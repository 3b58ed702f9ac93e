"""What ``tfp run`` does to cut a night's fixed cost (issue 18) keeps Airflow's behaviour.

The in-process execution API is built for the Task SDK's own API version only: it must answer that
version exactly as Airflow's full app does, leave Airflow's module-level bundle and router as they were,
and fall back to Airflow's app when it cannot be trimmed. The heap helpers freeze what is alive and
restore the collector's state.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import airflow_home
from tfp_airflow.heap import freeze_at_exit, long_lived

# In a fresh process: Airflow reads its settings at import, so AIRFLOW_HOME is set before it.
PROBE = r"""
import json, os, sys
from pathlib import Path
from tfp_airflow.runner import prepare_airflow, _build_execution_api
prepare_airflow(Path(sys.argv[1]))
mode = sys.argv[2]
from airflow.api_fastapi.execution_api import routes, versions
from airflow.sdk.api.datamodels._generated import API_VERSION
from airflow.sdk.execution_time.supervisor import in_process_api_server
full_versions = [str(v.value) for v in versions.bundle.versions]
full_routes = len(routes.execution_api_router.routes)
if mode == "break":  # a router Cadwyn refuses: the trimmed build fails, Airflow's own app must be built
    import cadwyn.route_generation as rg
    real = rg.generate_versioned_routers
    calls = []
    def once_broken(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("trimmed build refused")
        return real(*a, **k)
    import cadwyn.applications as apps
    apps.generate_versioned_routers = once_broken
if mode != "airflow":
    _build_execution_api()
api = in_process_api_server()
app = api.app
import httpx
client = httpx.Client(transport=api.transport, base_url="http://in-process.invalid/")
answers = {}
for path in ("variables/tfp_no_such_variable", "connections/tfp_no_such_connection",
             "task-instances/00000000-0000-0000-0000-000000000000/previous-successful-dagrun"):
    r = client.get(path, headers={"airflow-api-version": API_VERSION})
    answers[path] = [r.status_code, r.json()]
print("RESULT " + json.dumps({
    "sdk": API_VERSION, "app_versions": [str(v.value) for v in app.versions.versions],
    "full_versions": full_versions,
    "module_versions_after": [str(v.value) for v in versions.bundle.versions],
    "routes_before": full_routes, "routes_after": len(routes.execution_api_router.routes),
    "answers": answers}))
"""


def _probe(tmp_path: Path, mode: str) -> dict:
    home = airflow_home(tmp_path / f"airflow-{mode}")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "GX_ANALYTICS_ENABLED": "False"}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    done = subprocess.run([sys.executable, "-c", PROBE, str(home), mode], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_the_execution_api_is_built_for_the_sdk_version_alone_and_answers_as_airflow_does(tmp_path):
    trimmed = _probe(tmp_path, "trimmed")
    airflow = _probe(tmp_path, "airflow")
    assert airflow["app_versions"] == airflow["full_versions"] and len(airflow["full_versions"]) > 1
    assert trimmed["app_versions"] == [trimmed["sdk"]]
    # Airflow's own bundle and router are as they were, for anything else in the process
    assert trimmed["module_versions_after"] == trimmed["full_versions"] == airflow["full_versions"]
    assert trimmed["routes_after"] == trimmed["routes_before"]
    assert trimmed["answers"] == airflow["answers"]
    assert {status for status, _ in trimmed["answers"].values()} == {200, 404}
    assert trimmed["answers"]["variables/tfp_no_such_variable"][1]["detail"]["reason"] == "not_found"


def test_a_trimmed_build_that_fails_falls_back_to_airflows_app(tmp_path):
    result = _probe(tmp_path, "break")
    assert result["app_versions"] == result["full_versions"]
    assert result["module_versions_after"] == result["full_versions"]
    assert result["answers"]["variables/tfp_no_such_variable"][1]["detail"]["reason"] == "not_found"


def test_long_lived_freezes_what_it_made_and_restores_the_collector():
    gc.unfreeze()
    try:
        assert gc.isenabled()
        before = gc.get_freeze_count()
        with long_lived():
            assert not gc.isenabled()
            made = [[i] for i in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(made)
        gc.disable()
        with long_lived():
            pass
        assert not gc.isenabled()  # a collector that was off stays off
    finally:
        gc.enable()
        gc.unfreeze()


def test_freeze_at_exit_registers_once():
    import atexit

    from tfp_airflow import heap

    calls = []
    real, was = atexit.register, heap._at_exit
    atexit.register = lambda f, *a, **k: calls.append(f) or f
    heap._at_exit = False
    try:
        freeze_at_exit()
        freeze_at_exit()
    finally:
        atexit.register, heap._at_exit = real, was
    assert calls == [gc.freeze]

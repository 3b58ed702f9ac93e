"""tfp_airflow.preload: which processes import the tasks' libraries before forking, the off switch, and that
the imports leave nothing behind that a forked task process could trip over (threads, files, sockets)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfp_airflow import preload

BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("argv", "executor", "expected"), [
    ([AIRFLOW, "scheduler"], "LocalExecutor", True),
    (["airflow", "scheduler", "--num-runs", "3"], "LocalExecutor", True),
    ([str(BIN.parent / "lib" / "airflow" / "__main__.py"), "scheduler"], "LocalExecutor", True),  # python -m airflow
    ([AIRFLOW, "scheduler"], "CeleryExecutor", False),  # its tasks are forked by the Celery workers
    ([AIRFLOW, "scheduler"], "CeleryExecutor,LocalExecutor", True),
    ([AIRFLOW, "scheduler"], "local:airflow.executors.local_executor.LocalExecutor", True),
    ([AIRFLOW, "scheduler"], "my_company.LocalExecutorish", False),
    ([AIRFLOW, "celery", "worker", "--queues", "tfp"], "CeleryExecutor", True),
    ([AIRFLOW, "celery", "flower"], "CeleryExecutor", False),
    ([AIRFLOW, "api-server", "--port", "8080"], "LocalExecutor", False),
    ([AIRFLOW, "dag-processor"], "LocalExecutor", False),
    ([AIRFLOW, "triggerer"], "LocalExecutor", False),
    ([AIRFLOW, "standalone"], "LocalExecutor", False),  # its scheduler subprocess decides for itself
    ([AIRFLOW, "backfill", "create", "--dag-id", "scheduler"], "LocalExecutor", False),
    ([AIRFLOW, "tasks", "test", "tfp_nightly", "scheduler"], "LocalExecutor", False),
    ([AIRFLOW, "scheduler", "--help"], "LocalExecutor", False),
    ([AIRFLOW], "LocalExecutor", False),
    ([str(BIN / "tfp"), "run", "--config", "x.yaml", "--date", "2025-03-31"], "LocalExecutor", False),
    (["-c", "from airflow.sdk.execution_time.supervisor import _child_exec_main"], "LocalExecutor", False),
    ([str(BIN / "pytest"), "scheduler"], "LocalExecutor", False),
    ([str(BIN / "my-airflow"), "scheduler"], "LocalExecutor", False),
    ([], "LocalExecutor", False),
])
def test_only_the_scheduler_with_local_executor_and_a_celery_worker_preload(argv, executor, expected):
    assert preload.wanted(argv, {}, executor) is expected


def test_a_scheduler_whose_workers_are_not_forked_does_not_preload(monkeypatch):
    assert preload._start_method() == "fork"  # Linux, Python 3.11: what the figures were measured with
    monkeypatch.setattr(preload, "_start_method", lambda: "forkserver")
    assert preload.wanted([AIRFLOW, "scheduler"], {}, "LocalExecutor") is False
    assert preload.wanted([AIRFLOW, "celery", "worker"], {}, "CeleryExecutor") is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "OFF", " off "])
def test_the_switch_turns_it_off(value):
    assert preload.wanted([AIRFLOW, "scheduler"], {"TFP_PRELOAD": value}, "LocalExecutor") is False
    assert preload.wanted([AIRFLOW, "celery", "worker"], {"TFP_PRELOAD": value}, "CeleryExecutor") is False


@pytest.mark.parametrize("value", ["", "1", "true", "yes"])
def test_on_unless_switched_off(value):
    assert preload.wanted([AIRFLOW, "celery", "worker"], {"TFP_PRELOAD": value}, "CeleryExecutor") is True


def _module(tmp_path: Path, monkeypatch, name: str) -> str:
    (tmp_path / f"{name}.py").write_text("LOADED = True\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_preload_imports_only_when_wanted(tmp_path, monkeypatch):
    name = _module(tmp_path, monkeypatch, "tfp_preload_probe_a")
    assert preload.preload([AIRFLOW, "dag-processor"], {}, modules=[name]) == []
    assert name not in sys.modules
    assert preload.preload([AIRFLOW, "celery", "worker"], {"TFP_PRELOAD": "0"}, modules=[name]) == []
    assert name not in sys.modules
    assert preload.preload([AIRFLOW, "celery", "worker"], {}, modules=[name, "tfp_no_such_module_x"]) == [name]
    assert sys.modules[name].LOADED


def test_the_local_settings_file_wires_the_preload():
    text = (REPO / "config" / "airflow_local_settings.py").read_text(encoding="utf-8")
    assert "from tfp_airflow.preload import preload" in text and "\npreload()\n" in text
    assert "task_policy" in text


PROBE = textwrap.dedent("""
    import json, os, sys, threading
    sys.argv = [sys.argv[1], "scheduler"]
    import airflow  # the scheduler has Airflow loaded before airflow_local_settings runs
    from tfp_airflow import preload

    def fds():
        return {f: os.readlink(f"/proc/self/fd/{f}") for f in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{f}")}

    before = fds()
    done = preload.preload(environ={"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"})
    after = fds()
    print(json.dumps({"done": done, "missing": [m for m in preload.MODULES if m not in sys.modules],
                      "threads": [t.name for t in threading.enumerate()],
                      "new_fds": sorted(v for k, v in after.items() if before.get(k) != v),
                      "gx_analytics": os.environ.get("GX_ANALYTICS_ENABLED")}))
""")


@pytest.mark.slow
def test_the_real_preload_leaves_no_thread_file_or_socket_for_the_fork(tmp_path):
    env = {"PATH": str(BIN), "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": ":".join(sys.path),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", PROBE, AIRFLOW], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["done"] == list(preload.MODULES) and result["missing"] == []
    assert result["threads"] == ["MainThread"]  # no Python thread (GX analytics, a pool) started by an import
    assert result["new_fds"] == []  # no file, socket or database connection left open
    assert result["gx_analytics"] == "False"


def _code(text: str) -> list[str]:
    """A module's statements without its docstring."""
    body = ast.parse(text).body
    return [ast.dump(node) for node in body[1:] if body and isinstance(body[0], ast.Expr)] or \
        [ast.dump(node) for node in body]


def test_tfp_airflow_writes_the_same_local_settings_and_keeps_an_operators_own(tmp_path):
    path, written = preload.install_local_settings(tmp_path)
    assert written and path == tmp_path / "config" / "airflow_local_settings.py"
    # the same imports and calls as the repository's file
    assert _code(path.read_text()) == _code((REPO / "config" / "airflow_local_settings.py").read_text())
    path.write_text("# the operator's own\n")
    assert preload.install_local_settings(tmp_path) == (path, False)
    assert path.read_text() == "# the operator's own\n"

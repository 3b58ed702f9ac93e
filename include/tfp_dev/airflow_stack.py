"""A real Airflow on loopback: api-server, scheduler, dag-processor (and a Celery worker), for the operations
tests and the backfill benchmark (``tfp_dev.bench_backfill``).

Each component is its own process group with a fresh ``AIRFLOW_HOME``, sharing one generated JWT
secret, the repo's DAGs and plugins, ``TFP_CONFIG`` and the keys. The home's ``config/`` holds the repo's
``config/airflow_local_settings.py``, as a deployment's does: its cluster policy, and the preload of the
tasks' libraries in the scheduler and a Celery worker (``TFP_PRELOAD=0`` in the environment turns it off). SimpleAuthManager with users
from a passwords file we write: ``admin`` (admin), ``oncall`` (viewer) and ``analyst`` (user), so callers can get
real tokens and an unauthenticated request is still refused. Everything is stopped on exit, even on
failure, and the components' logs are given when a wait times out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfp_airflow.local import free_port, write_passwords

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
TFP = str(BIN / "tfp")
LOCAL_SETTINGS = REPO / "config" / "airflow_local_settings.py"
USERS = {"admin": "admin", "oncall": "viewer", "analyst": "user"}  # a User may trigger DAGs, not set Variables


def sensitive_names() -> str:
    """``[core] sensitive_var_conn_names`` as tfp documents it: the example config's key variables and the
    warehouse password variable, so Airflow masks their Variables in the UI and the API."""
    from tfp.config import example_settings, sensitive_var_conn_names

    return sensitive_var_conn_names([*example_settings()["keys"].values(), "TFP_WAREHOUSE_PASSWORD"])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its Airflow settings (a test session's, say), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"GX_ANALYTICS_ENABLED": "False", "SCARF_ANALYTICS": "false", "DO_NOT_TRACK": "1"})
    env.update(extra or {})
    return env


def install_local_settings(home: Path) -> Path:
    """Copy the repo's ``config/airflow_local_settings.py`` to ``<home>/config/``, where every Airflow process
    of that home imports it at start-up."""
    target = home / "config" / LOCAL_SETTINGS.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LOCAL_SETTINGS, target)
    return target


class StackError(AssertionError):
    """A component did not come up or a wait ran out; carries the tail of every component's log."""


@dataclass
class AirflowStack:
    home: Path
    port: int
    env: dict[str, str]
    passwords: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- processes --------------------------------------------------------------------------------

    def start(self, name: str, *args: str) -> None:
        log = (self.home / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([AIRFLOW, *args], env=self.env, cwd=self.home, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """SIGTERM each component's process group, then SIGKILL what is left after a grace period."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def logs(self, lines: int = 40) -> str:
        out = []
        for name in self.procs:
            path = self.home / f"{name}.log"
            tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"--- {name} (exit {self.procs[name].poll()}) ---\n" + "\n".join(tail))
        return "\n".join(out)

    def airflow(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        """The airflow command line against this stack's metadata database."""
        done = subprocess.run([AIRFLOW, *args], env=self.env, cwd=self.home, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
        return done

    # -- HTTP -------------------------------------------------------------------------------------

    def request(self, method: str, path: str, token: str | None = None, body: Any = None,
                cookie: str | None = None, timeout: float = 30) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if cookie:
            req.add_header("Cookie", cookie)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def api(self, method: str, path: str, token: str, body: Any = None) -> Any:
        status, data = self.request(method, "/api/v2" + path, token=token, body=body)
        if status >= 300:
            raise StackError(f"{method} {path}: HTTP {status} {data[:500]!r}")
        return json.loads(data) if data else None

    def token(self, username: str = "admin") -> str:
        """A JWT from SimpleAuthManager's login endpoint, as the UI gets one."""
        status, data = self.request("POST", "/auth/token",
                                    body={"username": username, "password": self.passwords[username]})
        if status >= 300:
            raise StackError(f"login as {username}: HTTP {status} {data[:300]!r}")
        return json.loads(data)["access_token"]

    # -- waiting ----------------------------------------------------------------------------------

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
        """Poll ``check`` until it returns something truthy; fail with the components' logs on timeout."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs()}")
            try:
                result = check()
                if result:
                    return result
            except (OSError, StackError, ValueError) as err:  # not up yet
                last_error = err
            time.sleep(every)
        raise StackError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})\n"
                         f"{self.logs()}")

    def healthy(self) -> bool:
        status, data = self.request("GET", "/api/v2/monitor/health", timeout=5)
        if status != 200:
            return False
        health = json.loads(data)
        wanted = ["metadatabase", "scheduler", "dag_processor"]
        return all((health.get(part) or {}).get("status") == "healthy" for part in wanted)

    def wait_for_dag(self, dag_id: str, token: str, timeout: float = 180) -> dict:
        """Wait until the dag-processor has parsed and serialised ``dag_id``."""
        def parsed():
            status, data = self.request("GET", f"/api/v2/dags/{dag_id}/details", token=token, timeout=10)
            return json.loads(data) if status == 200 else None

        return self.wait_for(f"DAG {dag_id} to be parsed", parsed, timeout)

    def dag_runs(self, dag_id: str, token: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date", token)["dag_runs"]

    def wait_for_runs(self, dag_id: str, token: str, count: int, timeout: float,
                      run_filter: Callable[[dict], bool] = lambda run: True) -> list[dict]:
        """Wait until ``count`` runs (matching ``run_filter``) have finished; fail at once when one fails."""
        def finished():
            runs = [r for r in self.dag_runs(dag_id, token) if run_filter(r)]
            failed = [r for r in runs if r["state"] == "failed"]
            if failed:
                raise AssertionError(f"run(s) failed: {[r['dag_run_id'] for r in failed]}\n"
                                     f"{self.failed_task_logs(dag_id, failed, token)}")
            done = [r for r in runs if r["state"] == "success"]
            return done if len(done) >= count else None

        return self.wait_for(f"{count} successful {dag_id} runs", finished, timeout, every=5)

    def failed_task_logs(self, dag_id: str, runs: list[dict], token: str, *, tail: int | None = 3000) -> str:
        """The log of every failed task of the given runs, its last ``tail`` characters (all when None).

        An assertion message wants the end; a test that looks for a message wants it all, because the
        traceback's frames after the message can be longer than any tail (they hold the install path).
        """
        out = []
        for run in runs:
            tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances?limit=100", token)
            for ti in tis["task_instances"]:
                if ti["state"] != "failed":
                    continue
                status, data = self.request(
                    "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/{ti['task_id']}"
                           f"/logs/{max(ti['try_number'], 1)}?full_content=true", token=token)
                out.append(f"--- {run['dag_run_id']} {ti['task_id']} ---\n{data.decode(errors='replace')[-tail if tail else 0:]}")
        return "\n".join(out)


@contextlib.contextmanager
def airflow_stack(root: Path, extra_env: dict[str, str], *, executor: str = "LocalExecutor",
                  sql_alchemy_conn: str | None = None, celery: dict[str, str] | None = None,
                  worker_queue: str | None = None, use_job_schedule: bool = False,
                  boot_timeout: float = 240,
                  prepare_home: Callable[[Path], object] | None = None) -> Iterator[AirflowStack]:
    """Start api-server, scheduler and dag-processor (and a Celery worker when ``celery`` is given).

    ``prepare_home(home)`` readies the SQLite metadata database of ``root/airflow-home`` (copying a migrated
    one); without it, and without ``sql_alchemy_conn``, the stack runs ``airflow db migrate`` first.

    ``use_job_schedule=False`` stops the scheduler from creating the cron's own latest run when a DAG
    is unpaused, so a test sees only the runs it asks for (backfills and triggers still run).
    """
    home = root / "airflow-home"
    home.mkdir(parents=True)
    install_local_settings(home)
    port = free_port()
    passwords = write_passwords(home / "passwords.json", USERS)  # as tfp airflow writes its admin's: 0600
    env = clean_env({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES": sensitive_names(),
        # a loaded two-core machine with SQLite can keep the api-server busy for more than the 5 s default
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(use_job_schedule),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # not 8793: other Airflows may run here
        **({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn} if sql_alchemy_conn else {}),
        # Airflow derives its async URL as postgresql+asyncpg, which is not installed: psycopg 3 does both
        **({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": sql_alchemy_conn.replace("+psycopg:", "+psycopg_async:")}
           if sql_alchemy_conn and sql_alchemy_conn.startswith("postgresql+psycopg:") else {}),
        **(celery or {}),
        **extra_env,
    })
    stack = AirflowStack(home=home, port=port, env=env, passwords=passwords)
    try:
        if sql_alchemy_conn:
            stack.airflow("db", "migrate", timeout=300)
        elif prepare_home is not None:
            prepare_home(home)  # e.g. a copy of an already migrated SQLite metadata database: no migration here
        else:
            stack.airflow("db", "migrate", timeout=300)
        stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        stack.start("scheduler", "scheduler")
        stack.start("dag-processor", "dag-processor")
        if celery is not None:
            stack.start("celery-worker", "celery", "worker", *(["--queues", worker_queue] if worker_queue else []))
        stack.wait_for("api-server, scheduler and dag-processor to be healthy", stack.healthy, boot_timeout)
        yield stack
    finally:
        stack.stop()

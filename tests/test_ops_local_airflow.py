"""``tfp airflow`` as a new user runs it (issue 14, item 1; contract section 10).

A small generated borough with directory transports and no encryption. ``tfp airflow`` is started on a
free loopback port with ``AIRFLOW_HOME`` unset (so ``<work_dir>/airflow``, as ``tfp run`` picks it). With
the admin password from the file it prints, a token comes from ``POST /auth/token``; ``tfp_nightly`` is
triggered for a logical date through the REST API and must succeed. A second ``tfp airflow`` on the same
home is refused while the first runs. SIGINT then stops everything: every process seen under it is gone.
The delivery must equal, byte for byte, a ``tfp run`` of the same date for the same borough elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml
from hardening_helpers import LA, R, make_borough, night_root, run_env, tfp_run

from conftest import make_keys
from helpers import lineage_downstream, lineage_edges, read_lineage_events, write_config
from ops_helpers import TFP, clean_env, free_port
from tfp_airflow.local import given_connection, named_connections, set_options, write_passwords

# -- the pieces, without starting anything ---------------------------------------------------------

def test_set_options_edits_its_lines_and_keeps_the_rest(tmp_path):
    cfg = tmp_path / "airflow.cfg"
    cfg.write_text("[core]\n# executor = SequentialExecutor\nexecutor = SequentialExecutor\n"
                   "dags_folder = /elsewhere\n\n[api]\n# the port\nport = 8080\n")
    set_options(cfg, {("core", "executor"): "LocalExecutor", ("api", "port"): "18080",
                      ("api", "host"): "127.0.0.1", ("logging", "worker_log_server_port"): "18793"})
    text = cfg.read_text()
    assert "# executor = SequentialExecutor" in text and "# the port" in text  # comments stay
    assert "executor = LocalExecutor" in text and "\nexecutor = SequentialExecutor" not in text
    assert "dags_folder = /elsewhere" in text and "port = 18080" in text and "\nport = 8080" not in text
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(cfg)
    assert parser.get("api", "host") == "127.0.0.1" and parser.get("logging", "worker_log_server_port") == "18793"
    assert cfg.stat().st_mode & 0o777 == 0o600


def test_the_passwords_file_is_0600_and_a_second_start_keeps_the_password(tmp_path):
    path = tmp_path / "passwords.json"
    first = write_passwords(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(first["admin"]) >= 16
    path.chmod(0o644)
    assert write_passwords(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def test_connections_named_by_the_config_come_from_the_environment_or_a_file(tmp_path):
    from tfp.config import parse_config

    raw = yaml.safe_load(write_config(tmp_path, "sqlite:///work/warehouse.db").read_text())
    raw["sources"]["police"] = {"transport": "sftp", "conn_id": "sftp_police", "path": "/out"}
    raw["sources"]["dwp"] = {"transport": "sftp", "conn_id": "sftp_dwp", "path": "/out"}
    config = parse_config(raw, tmp_path)
    assert named_connections(config) == ["sftp_police", "sftp_dwp"]
    secret = tmp_path / "conn"
    secret.write_text('{"conn_type": "sftp", "host": "127.0.0.1"}\n')
    environ = {"AIRFLOW_CONN_SFTP_POLICE": "sftp://tfp@127.0.0.1:2222", "AIRFLOW_CONN_SFTP_DWP_FILE": str(secret)}
    assert given_connection("sftp_police", environ) == "sftp://tfp@127.0.0.1:2222"
    assert given_connection("sftp_dwp", environ) == '{"conn_type": "sftp", "host": "127.0.0.1"}'
    assert given_connection("sftp_ons", environ) is None


def test_the_command_line_imports_no_airflow_until_the_command_runs():
    done = subprocess.run([sys.executable, "-c", "import sys, tfp.cli; tfp.cli._parser().parse_args("
                           "['airflow', '--config', 'x.yaml']); print('airflow' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


# -- the whole thing ------------------------------------------------------------------------------

def _request(url: str, method: str = "GET", token: str | None = None, body: object = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, {"error": err.read()[:500].decode(errors="replace")}


def _descendants(pid: int, seen: dict[int, psutil.Process]) -> None:
    """Add ``pid`` and every process under it to ``seen`` (by pid, with its start time kept by psutil)."""
    try:
        parent = psutil.Process(pid)
        for p in [parent, *parent.children(recursive=True)]:
            seen.setdefault(p.pid, p)
    except psutil.Error:
        pass


def _alive(procs: dict[int, psutil.Process]) -> list[str]:
    out = []
    for p in procs.values():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
        except psutil.Error:
            pass
    return out


def _delivery(root: Path) -> dict[str, bytes]:
    folder = root / "delivered"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


@pytest.mark.slow
@pytest.mark.airflow_stack
def test_tfp_airflow_runs_a_triggered_night_like_tfp_run_and_ctrl_c_stops_everything(tmp_path):
    borough = make_borough(tmp_path / "borough", families=20)
    keys = make_keys()
    config = night_root(tmp_path / "local", borough)
    inputs = sorted((config.parent / "inbound").glob("*/*.csv"))  # the night's partner files
    port = free_port()
    out_path = tmp_path / "tfp-airflow.out"
    events_file = tmp_path / "lineage.jsonl"  # OpenLineage's file transport: lineage under the real scheduler
    # no tfp_nightly run of its own for the latest night: the test sees only the run it triggers
    env = clean_env({**keys, "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                     "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events_file),
                                                                    "append": True})})
    with out_path.open("wb") as out:
        proc = subprocess.Popen([TFP, "airflow", "--config", str(config), "--port", str(port)], env=env,
                                cwd=config.parent, stdout=out, stderr=subprocess.STDOUT)
    seen: dict[int, psutil.Process] = {}
    url = f"http://127.0.0.1:{port}"

    def output() -> str:
        return out_path.read_text(errors="replace")

    def wait(what: str, check, timeout: float, every: float = 3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _descendants(proc.pid, seen)
            assert proc.poll() is None, f"tfp airflow exited with {proc.returncode} waiting for {what}:\n{output()[-5000:]}"
            result = check()
            if result:
                return result
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}:\n{output()[-5000:]}")

    try:
        wait("the welcome", lambda: "Airflow is up" in output(), 600)
        home = config.parent / "work" / "airflow"
        assert f"Airflow home {home}" in output()
        assert f"Airflow is up: {url}" in output() and "tfp_nightly, tfp_retention" in output()
        password_file = Path(re.search(r"the password is in (\S+) \(mode 0600\)", output()).group(1))
        assert password_file.parent == home
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = json.loads(password_file.read_text())["admin"]

        status, body = _request(f"{url}/auth/token", "POST", body={"username": "admin", "password": password})
        assert status in (200, 201), body
        token = body["access_token"]
        status, _ = _request(f"{url}/api/v2/dags/tfp_nightly")
        assert status == 401  # the API still needs a token
        for dag_id in ("tfp_nightly", "tfp_retention"):
            status, dag = _request(f"{url}/api/v2/dags/{dag_id}", token=token)
            assert status == 200 and dag["is_paused"] is False, dag
        status, pools = _request(f"{url}/api/v2/pools", token=token)
        assert [p["name"] for p in pools["pools"]] == ["default_pool"], pools

        # the same home while its scheduler is live: refused, and nothing of the first one is touched
        second = subprocess.run([TFP, "airflow", "--config", str(config), "--port", str(free_port())], env=env,
                                cwd=config.parent, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert "already has a running scheduler" in second.stderr and str(home) in second.stderr

        status, run = _request(f"{url}/api/v2/dags/tfp_nightly/dagRuns", "POST", token,
                               {"logical_date": f"{R.isoformat()}T00:00:00+00:00"})
        assert status == 200, run
        run_id = run["dag_run_id"]

        def finished():
            status, got = _request(f"{url}/api/v2/dags/tfp_nightly/dagRuns/{run_id}", token=token)
            assert status == 200, got
            assert got["state"] != "failed", f"the night failed:\n{output()[-3000:]}"
            return got["state"] == "success"

        wait("the triggered night to succeed", finished, 900, every=5)
        _descendants(proc.pid, seen)
        # each task ran in its own worker process: still, every partner file leads to the delivered submission
        edges = lineage_edges(read_lineage_events(events_file))
        submission = ("file", str(config.parent / "delivered" / f"tfp_submission_{LA}_{R:%Y%m%d}.csv"))
        for path in inputs:
            assert submission in lineage_downstream(edges, ("file", str(path))), path.name
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, output()[-3000:]
    assert "tfp airflow: stopped" in output()
    components = [p for p in seen.values() if p.pid != proc.pid]
    assert len(components) >= 4, seen  # api-server, scheduler, dag-processor, triggerer (and their workers)
    time.sleep(1)
    left = _alive({p.pid: p for p in components})
    assert not left, f"processes left after Ctrl-C: {left}"
    groups = {p.pid for p in components}  # each component leads its own process group
    stray = [p.pid for p in psutil.process_iter() if _pgid(p.pid) in groups]
    assert not stray, f"processes left in the components' groups: {stray}"

    # the same night through tfp run, in a folder of its own, delivers the same bytes
    reference = night_root(tmp_path / "reference", borough)
    done = tfp_run(reference, run_env(reference.parent, keys), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    local, expected = _delivery(config.parent), _delivery(reference.parent)
    assert sorted(local) == sorted(expected) and len(expected) >= 4, (sorted(local), sorted(expected))
    submission = f"tfp_submission_E09000031_{R:%Y%m%d}.csv"
    assert len(expected[submission].splitlines()) > 5
    for name in expected:
        assert local[name] == expected[name], f"{name} differs from tfp run's"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None

"""Issue 14 item 1: ``tfp airflow`` stores the Connections its config names, given as ``AIRFLOW_CONN_<ID>``
(JSON or URI) or as a file named by ``AIRFLOW_CONN_<ID>_FILE``, in the metadata database, so the UI lists
them; a second start replaces them rather than adding copies; one not given is reported missing. A real
migrated Airflow metadata database (a copy of the session's), no server started."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import airflow_home
from ops_helpers import clean_env

STORE = r"""
import json, os, sys
from tfp_airflow.local import ensure_connections
from airflow.models.connection import Connection
from airflow.utils.session import create_session
from sqlalchemy import select

environ = json.loads(sys.argv[1])
for _ in range(2):  # a second start of the same home
    stored, missing = ensure_connections(["sftp_police", "sftp_dwp", "sftp_ons"], environ)
with create_session() as session:
    rows = session.scalars(select(Connection).order_by(Connection.conn_id)).all()
    print("STORED", json.dumps(stored), json.dumps(missing))
    print("ROWS", json.dumps([[c.conn_id, c.conn_type, c.host, c.port, c.login] for c in rows]))
"""


def test_connections_given_in_the_environment_or_a_file_are_stored_once(tmp_path):
    secret = tmp_path / "dwp.json"
    secret.write_text(json.dumps({"conn_type": "sftp", "host": "dwp.example", "port": 2222, "login": "la"}))
    environ = {"AIRFLOW_CONN_SFTP_POLICE": "sftp://tfp@police.example:22", "AIRFLOW_CONN_SFTP_DWP_FILE": str(secret)}
    env = clean_env({"AIRFLOW_HOME": str(airflow_home(tmp_path / "home"))})
    done = subprocess.run([sys.executable, "-c", STORE, json.dumps(environ)], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("STORED", "ROWS")))
    assert "ROWS" in lines, done.stdout[-2000:] + done.stderr[-4000:]
    assert lines["STORED"] == '["sftp_police", "sftp_dwp"] ["sftp_ons"]'
    assert json.loads(lines["ROWS"]) == [["sftp_dwp", "sftp", "dwp.example", 2222, "la"],
                                         ["sftp_police", "sftp", "police.example", 22, "tfp"]]


def test_the_welcome_says_where_to_sign_in_and_what_to_click_first(tmp_path):
    from tfp_airflow.local import _welcome

    text = _welcome("http://127.0.0.1:8080", tmp_path / "passwords.json", ["tfp_nightly", "tfp_retention"])
    assert "Airflow is up: http://127.0.0.1:8080" in text
    assert f"sign in as admin; the password is in {tmp_path / 'passwords.json'} (mode 0600)" in text
    assert "first: sign in, open Dags > tfp_nightly, press Trigger, set reference_date" in text
    assert "Browse > tfp reports (http://127.0.0.1:8080/tfp-reports/)" in text and "Ctrl-C stops everything" in text

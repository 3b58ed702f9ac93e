"""A failed night e-mails the on-call engineer, and the e-mail names the file and the rule and nothing personal.

A real SMTP server (aiosmtpd) listens on loopback; the `tfp_alerts` Connection points at it; `tfp run`
runs the real DAG on a police feed that lacks a required column and is full of personal values.
"""

from __future__ import annotations

import email
import json
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from conftest import airflow_home, make_keys
from helpers import write_config, write_feed
from ops_helpers import TFP, clean_env
from tfp.feeds import DATASETS

pytestmark = pytest.mark.slow  # one real `tfp run` (on a copy of the session's migrated Airflow home)

R = date(2025, 3, 31)
BROKEN_FILE = "incidents_20250330.csv"
# What a person looks like in the broken file; none of it may reach the alert.
PERSONAL = {"record_id": "INC-77123", "forename": "Zebedee", "surname": "Quintrell-Okafor",
            "date_of_birth": "1984-07-13", "sex": "M", "postcode": "E17 4AB", "pnc_id": "84/123456X",
            "category": "offence", "role": "offender", "proven": "Y"}


class _Inbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.raw: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.raw.append(envelope.original_content or envelope.content)
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(message: Message) -> str:
    """Subject and every decoded text part of a message."""
    parts = [str(email.header.make_header(email.header.decode_header(message["Subject"] or "")))]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8"))
    return "\n".join(parts)


@pytest.fixture
def smtp_inbox():
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def test_failure_alert_names_file_and_rule_and_nothing_personal(tmp_path, smtp_inbox):
    inbox, port = smtp_inbox
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}")
    header = [c for c in DATASETS["incidents"].columns if c != "incident_date"]
    write_feed(tmp_path, "police", BROKEN_FILE, header, [[PERSONAL[c] for c in header]])
    alerts = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
              "extra": {"from_email": "tfp@council.example", "to": "oncall@council.example",
                        "disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0}}
    env = clean_env({**make_keys(), "AIRFLOW_HOME": str(airflow_home(tmp_path / "airflow")),
                     "AIRFLOW_CONN_TFP_ALERTS": json.dumps(alerts)})

    run = subprocess.run([TFP, "run", "--config", str(config), "--date", R.isoformat()], env=env,
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)

    assert run.returncode != 0, run.stdout[-2000:] + run.stderr[-4000:]
    deadline = time.monotonic() + 10
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inbox.messages, "no alert reached the SMTP server:\n" + run.stderr[-4000:]
    alerts_about_validate = [m for m in inbox.messages if "police.validate" in _text(m)]
    assert len(alerts_about_validate) == 1, [m["Subject"] for m in inbox.messages]
    message = alerts_about_validate[0]
    assert message["To"] == "oncall@council.example"
    assert message["From"] == "tfp@council.example"
    body = _text(message)
    assert "tfp_nightly" in body and R.isoformat() in body
    assert BROKEN_FILE in body
    assert "required column missing: incident_date" in body
    everything = "\n".join(_text(m) for m in inbox.messages) + "\n" + b"\n".join(inbox.raw).decode("utf-8", "replace")
    for column, value in PERSONAL.items():
        if column in {"sex", "category", "role", "proven"}:
            continue  # codes, not personal
        assert value not in everything, f"the alert holds the {column} of the broken file"


# -- review issue 13, items 14 and 8: the night a manual run was for, and weak disclosure -------------

def test_a_manual_run_for_another_night_with_weak_disclosure_alerts_with_its_night_and_the_weak_settings(
        tmp_path, smtp_inbox):
    """A manual run of reference date R triggered on another logical date, from a config that allows weak
    disclosure, fails at validate: the alert names R (not the logical date) and the weak settings by
    name, and check_setup's log warns of them."""
    inbox, port = smtp_inbox
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}", anonymisation={"k": 1},
                          disclosure={"round_to": 1, "allow_weak_disclosure": True})
    header = [c for c in DATASETS["incidents"].columns if c != "incident_date"]
    write_feed(tmp_path, "police", BROKEN_FILE, header, [[PERSONAL[c] for c in header]])
    alerts = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
              "extra": {"from_email": "tfp@council.example", "to": "oncall@council.example",
                        "disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0}}
    env = clean_env({**make_keys(), "AIRFLOW_HOME": str(airflow_home(tmp_path / "airflow")),
                     "AIRFLOW_CONN_TFP_ALERTS": json.dumps(alerts)})
    logical = R + timedelta(days=9)
    code = ("import sys, datetime; from tfp_airflow.runner import run_dag; "
            "state, _ = run_dag('tfp_nightly', sys.argv[1], datetime.date.fromisoformat(sys.argv[2]), "
            "{'reference_date': sys.argv[3]}); print('STATE', state)")
    run = subprocess.run([sys.executable, "-c", code, str(config), logical.isoformat(), R.isoformat()], env=env,
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    output = run.stdout + run.stderr
    assert "STATE failed" in output, output[-4000:]
    assert "weak disclosure allowed: anonymisation.k, disclosure.round_to" in output  # check_setup's warning
    deadline = time.monotonic() + 10
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.1)
    validate = [m for m in inbox.messages if "police.validate" in _text(m)]
    assert len(validate) == 1, [m["Subject"] for m in inbox.messages]
    assert validate[0]["Subject"] == f"[tfp] tfp_nightly {R}: task police.validate failed"
    body = _text(validate[0])
    assert logical.isoformat() not in body
    assert "weak disclosure allowed: anonymisation.k, disclosure.round_to" in body


# -- issue 16 items 3 and 5: only a TfpError is quoted, through the adapter's real callback ----------------

CALLBACK = r"""
import sys
from pathlib import Path
from types import SimpleNamespace

from airflow.sdk.exceptions import AirflowFailException

from tfp.extract import SourceUnavailable
from tfp_airflow.callbacks import notify_failure

personal = sys.argv[2]


def wrapped(cause):
    try:
        try:
            raise cause
        except Exception as e:
            raise AirflowFailException(str(e)) from e
    except AirflowFailException as stop:
        return stop


errors = {
    "police.stage": ValueError(f"invalid literal for int() with base 10: {personal!r}"),
    "police.link": wrapped(KeyError(personal)),  # stopped retries; the cause is not tfp's
    "police.extract": wrapped(SourceUnavailable("police", Path("/srv/drops/polce"), "does not exist")),
}
for task_id, error in errors.items():
    context = {"ti": SimpleNamespace(dag_id="tfp_nightly", task_id=task_id), "exception": error,
               "params": {"reference_date": "2025-03-31"}, "logical_date": None}
    notify_failure(context, sys.argv[1])
print("SENT", len(errors))
"""


def test_the_callback_quotes_a_tfp_error_and_names_any_other_exception_by_its_class_only(tmp_path, smtp_inbox):
    """A library's exception whose message holds a person's details (here fake ones), raised in a task or as
    the cause of the AirflowFailException that stopped its retries: the e-mail names its class only. A tfp
    error (SourceUnavailable) is quoted with its operator hint. The alert goes through Airflow's SMTP
    notifier and the Connection tfp_alerts, as in a failed task."""
    inbox, port = smtp_inbox
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}")
    personal = f"{PERSONAL['forename']} {PERSONAL['surname']} {PERSONAL['date_of_birth']} {PERSONAL['postcode']}"
    alerts = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
              "extra": {"from_email": "tfp@council.example", "to": "oncall@council.example",
                        "disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0}}
    env = clean_env({"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW_CONN_TFP_ALERTS": json.dumps(alerts)})
    done = subprocess.run([sys.executable, "-c", CALLBACK, str(config), personal], env=env, capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert "SENT 3" in done.stdout, done.stdout[-2000:] + done.stderr[-4000:]
    deadline = time.monotonic() + 10
    while len(inbox.messages) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    bodies = {m["Subject"].split("task ")[1].split()[0]: _text(m) for m in inbox.messages}
    assert set(bodies) == {"police.stage", "police.link", "police.extract"}, list(bodies)
    assert "ValueError (details in the task log)" in bodies["police.stage"]
    assert "KeyError (details in the task log)" in bodies["police.link"]
    assert "source police: drop folder /srv/drops/polce does not exist" in bodies["police.extract"]
    assert "What to do: create the drop folder" in bodies["police.extract"]
    everything = "\n".join(bodies.values()) + "\n" + b"\n".join(inbox.raw).decode("utf-8", "replace")
    for value in (PERSONAL["forename"], PERSONAL["surname"], PERSONAL["date_of_birth"], PERSONAL["postcode"]):
        assert value not in everything

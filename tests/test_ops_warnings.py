"""Issue 14 item 4: a night that goes on with feeds flagged says so in a warning alert (dataset names and
counts only), a night failed by an overdue feed says so in its failure alert, and each borough's alerts go
through its own Connection (issue 14 item 6). The adapter's real callbacks, Airflow's SMTP notifier and a
real SMTP server on loopback; the whole path through the scheduler is in tests/test_ops_boroughs.py."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

from smtp_helpers import smtp_server, text_of

from ops_helpers import clean_env
from tfp.errors import FeedOverdue
from tfp.notify import failure_summary, warning_summary

R = date(2025, 3, 31)
FLAGGED = {
    "datasets": {"incidents": {"newest": "2025-03-20", "max_age_days": 8}},
    "overdue": [{"dataset": "incidents", "newest": "2025-03-20", "max_age_days": 8, "age_days": 11}],
    "volume": [{"dataset": "attendance", "file_date": "2025-03-31", "rows": 33, "median": 100.0,
                "earlier_files": 5, "change": "fall"}],
}


def test_the_warning_alert_names_datasets_and_counts_only():
    subject, body = warning_summary("tfp_nightly__E09000032", R, FLAGGED, ["anonymisation.k"])
    assert subject == ("[tfp] tfp_nightly__E09000032 2025-03-31: warning, 1 feed(s) overdue, "
                       "1 file(s) with unusual row counts")
    assert "overdue: incidents, newest file 11 days old (max age 8 days)" in body
    assert "volume: attendance, 33 rows, a fall against the median 100 of its last 5 files" in body
    assert "weak disclosure allowed: anonymisation.k" in body
    assert "2025-03-20" not in body and "_2025" not in body  # no file's date, no file name
    assert warning_summary("tfp_nightly", R, {"datasets": {}, "overdue": [], "volume": []}) is None


def test_the_failure_alert_of_an_overdue_night_names_the_feed():
    _, body = failure_summary("tfp_nightly", "check_inputs", R, FeedOverdue(R, [("incidents", date(2025, 3, 20), 8)]))
    assert "feeds overdue on 2025-03-31: incidents (newest file 2025-03-20, max age 8 days)" in body
    assert "What to do: ask the named partners for their file" in body


CALLBACKS = r"""
import json, sys
from types import SimpleNamespace

from tfp.inputs import MissingInput
from tfp_airflow.callbacks import notify_failure, notify_warning
import datetime

flags = json.loads(sys.argv[1])
for la_code in ("E09000031", "E09000032"):
    ti = SimpleNamespace(dag_id=f"tfp_nightly__{la_code}", task_id="check_inputs")
    context = {"ti": ti, "params": {"reference_date": "2025-03-31"}, "logical_date": None}
    print("WARNED", la_code, notify_warning(context, flags, None, la_code))
    notify_failure({**context, "exception": MissingInput(datetime.date(2025, 3, 31), ["needs"])}, None, la_code)
ti = SimpleNamespace(dag_id="tfp_nightly", task_id="check_inputs")
print("WARNED deployment", notify_warning({"ti": ti, "params": {}, "logical_date": None}, flags))
"""


def test_each_borough_alerts_through_its_own_connection_else_the_deployments(tmp_path):
    """E09000032 has its own Connection tfp_alerts__E09000032: its warning and failure alerts go there and
    nowhere else. E09000031 has none: its alerts go through the deployment's tfp_alerts, as do the
    deployment DAG's."""
    import json

    with smtp_server() as shared, smtp_server() as own:
        env = clean_env({"AIRFLOW_HOME": str(tmp_path / "airflow"),
                         "AIRFLOW_CONN_TFP_ALERTS": shared.connection("oncall@shared.example"),
                         "AIRFLOW_CONN_TFP_ALERTS__E09000032": own.connection("oncall@b.example")})
        done = subprocess.run([sys.executable, "-c", CALLBACKS, json.dumps(FLAGGED)], env=env, capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
        assert "WARNED deployment True" in done.stdout, done.stdout[-2000:] + done.stderr[-4000:]
        assert "WARNED E09000031 True" in done.stdout and "WARNED E09000032 True" in done.stdout
        shared.wait(4)
        own.wait(2)
    mine = sorted(m["Subject"] for m in own.messages)
    assert mine == ["[tfp] tfp_nightly__E09000032 2025-03-31: task check_inputs failed",
                    "[tfp] tfp_nightly__E09000032 2025-03-31: warning, 1 feed(s) overdue, 1 file(s) with unusual "
                    "row counts"], mine
    assert {m["To"] for m in own.messages} == {"oncall@b.example"}
    theirs = sorted(m["Subject"] for m in shared.messages)
    assert len(theirs) == 3 and not any("E09000032" in s for s in theirs), theirs
    assert sum("tfp_nightly__E09000031" in s for s in theirs) == 2
    assert any("no file dated on or before 2025-03-31 for: needs" in text_of(m) for m in own.messages)


def test_without_any_alert_connection_the_warning_is_logged_and_the_task_goes_on(tmp_path):
    code = ("from types import SimpleNamespace\nfrom tfp_airflow.callbacks import notify_warning\nimport json, sys\n"
            "ti = SimpleNamespace(dag_id='tfp_nightly__E09000032', task_id='check_inputs')\n"
            "print('WARNED', notify_warning({'ti': ti, 'params': {}, 'logical_date': None}, json.loads(sys.argv[1]), "
            "None, 'E09000032'))\n")
    import json

    done = subprocess.run([sys.executable, "-c", code, json.dumps(FLAGGED)], capture_output=True, text=True,
                          env=clean_env({"AIRFLOW_HOME": str(tmp_path / "airflow")}), cwd=tmp_path, timeout=300)
    assert "WARNED False" in done.stdout, done.stdout[-2000:] + done.stderr[-4000:]
    assert "no alert connection tfp_alerts__E09000032 or tfp_alerts: warning alert not sent" in done.stderr + done.stdout

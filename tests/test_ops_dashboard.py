"""The dashboard over nights as an engineer sees it (issue 14 item 5): headless Chromium on the real
api-server's tfp-reports plugin after two real nights, one failed and one succeeded, and a real retention
dry run.

The night before R has no file on or before its date: `tfp run` fails it in check_inputs, and the failure
callback still writes its run report (status failed, the stage, the safe message). Night R succeeds and
delivers. Every request the dashboard page makes is intercepted: none may leave the api-server, none may
fail, no console error, no CSP violation, and no URL in the page points elsewhere. The screenshot is saved
(``docs/local-airflow-dashboard.png`` is one) and checked to be a full page, not a blank or an error.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from test_ops_browser import ROLES, Browser, _chromium, _personal_values

from conftest import airflow_home, make_keys
from helpers import write_config
from ops_helpers import TFP, airflow_stack, clean_env
from tfp.feeds import SOURCES
from tfp_dev.generate import generate

pytestmark = [pytest.mark.slow, pytest.mark.airflow_stack]

R = date(2025, 3, 31)
BEFORE = R - timedelta(days=1)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """A failed night (no input dated on or before it), a delivered night, a retention dry run."""
    root = tmp_path_factory.mktemp("dashboard")
    generate(root / "feeds", families=40, seed=31, on=R)
    config = write_config(root, f"sqlite:///{root / 'warehouse.db'}")
    for source in SOURCES:
        for path in (root / "feeds" / source).iterdir():
            shutil.copy(path, root / "inbound" / source / path.name)
    keys = make_keys()
    env = clean_env({**keys, "AIRFLOW_HOME": str(airflow_home(root / "run-airflow"))})
    runs = {}
    for day in (BEFORE, R):
        runs[day] = subprocess.run([TFP, "run", "--config", str(config), "--date", day.isoformat()], env=env,
                                   capture_output=True, text=True, cwd=root, timeout=900)
    retention = subprocess.run([TFP, "retention", "--config", str(config), "--date", R.isoformat(), "--dry-run"],
                               env=env, capture_output=True, text=True, cwd=root, timeout=600)
    reports = root / "work" / "reports"
    return {"root": root, "config": config, "keys": keys, "runs": runs, "retention": retention,
            "failed": json.loads((reports / BEFORE.isoformat() / "run_report.json").read_text()),
            "report": json.loads((reports / R.isoformat() / "run_report.json").read_text())}


def test_a_failed_night_writes_its_report_and_retention_dry_run_prints_counts(nights):
    failed_run, ok_run = nights["runs"][BEFORE], nights["runs"][R]
    assert failed_run.returncode == 1, failed_run.stdout[-2000:]
    assert ok_run.returncode == 0, ok_run.stdout[-2000:] + ok_run.stderr[-3000:]
    failed = nights["failed"]
    assert failed["status"] == "failed" and failed["failure"]["stage"] == "check_inputs"
    assert failed["failure"]["message"].startswith(f"no file dated on or before {BEFORE}")
    assert failed["started_at"] and 0 <= failed["duration_seconds"] < 1800  # this run's, not since its date
    report = nights["report"]
    assert report["status"] == "succeeded" and report["previous"]["reference_date"] == BEFORE.isoformat()
    assert report["previous"]["status"] == "failed" and 0 < report["duration_seconds"] < 1800
    assert report["previous"]["counts"]["rows_read"]["before"] == 0  # nothing landed for the night before
    assert failed["persons_submitted"] is None and failed["delivery"] == {}  # never reached
    assert len(report["delivery"]["files"]) >= 4  # the delivery log of what went, for the dashboard
    out = nights["retention"].stdout
    assert nights["retention"].returncode == 0, out[-2000:] + nights["retention"].stderr[-2000:]
    assert re.search(r"^  landing copies: would delete \d+ files \(cutoff \d{4}-\d{2}-\d{2}\)$", out, re.M), out
    assert re.search(r"^  would delete \d+ in all \(dry run: nothing was deleted\)$", out, re.M), out


def test_dashboard_in_chromium_after_two_nights(nights, tmp_path_factory):
    chromium = _chromium()
    env = {"TFP_CONFIG": str(nights["config"]), **nights["keys"],
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in ROLES.items())}
    shots = tmp_path_factory.mktemp("shots")
    with airflow_stack(tmp_path_factory.mktemp("stack"), env) as stack:
        stack.passwords.update(json.loads((stack.home / "passwords.json").read_text()))
        browser = Browser(chromium, shots / "profile")
        try:
            browser.send("Network.setCookie", {"name": "_token", "value": stack.token("oncall"), "url": stack.url,
                                               "httpOnly": True})
            browser.intercept(stack.url)
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            text = browser.open(f"{stack.url}/tfp-reports/", settle=1.0)
            problems = browser.problems(stack.url)
            html = browser.evaluate("document.documentElement.outerHTML")
            urls = json.loads(browser.evaluate(
                "JSON.stringify([...document.querySelectorAll('[href],[src]')]"
                ".map(e => e.href || e.src))"))
            charts = json.loads(browser.evaluate(
                "JSON.stringify([...document.querySelectorAll('svg.chart')].map(s => "
                "[s.id, s.getBoundingClientRect().width, s.querySelectorAll('circle,rect.bar').length]))"))
            shot = base64.b64decode(browser.send("Page.captureScreenshot",
                                                 {"format": "png", "captureBeyondViewport": True})["data"])
            (shots / "dashboard.png").write_bytes(shot)
            if os.environ.get("TFP_DASHBOARD_SCREENSHOT"):  # how docs/local-airflow-dashboard.png was made
                Path(os.environ["TFP_DASHBOARD_SCREENSHOT"]).write_bytes(shot)
            failed_page = browser.open(f"{stack.url}/tfp-reports/{BEFORE.isoformat()}/run_report.html")
            failed_problems = browser.problems(stack.url)
            # the Data Docs page of a file that staged with rows quarantined
            partial = next(f for f in nights["report"]["files"] if f["rows_quarantined"] and f["rows_staged"])
            docs = browser.open(f"{stack.url}/tfp-reports/{R.isoformat()}/{partial['data_docs']}", settle=1.0)
            docs_problems = browser.problems(stack.url)
            docs_html = browser.evaluate("document.documentElement.outerHTML")
            index = browser.open(f"{stack.url}/tfp-reports/{R.isoformat()}/data_docs/index.html", settle=1.0)
            index_problems = browser.problems(stack.url)
        finally:
            browser.close()

    assert problems == [], problems
    assert failed_problems == [], failed_problems
    assert all(u.startswith(f"{stack.url}/") for u in urls), [u for u in urls if not u.startswith(stack.url)]
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    # what the engineer reads: the title, the summary, each section, both nights and their outcomes
    assert "tfp dashboard (E09000031)" in text
    for heading in ("Sources, last night", "Trends", "Last delivery", "Retention runs", "Nights", "Reports"):
        assert f"\n{heading}\n" in f"\n{text}\n", heading
    nights_rows = [line for line in text.splitlines() if line.startswith(("2025-03-30\t", "2025-03-31\t"))]
    assert any(line.startswith(f"{BEFORE}\tfailed at check_inputs") for line in nights_rows), nights_rows
    assert any(line.startswith(f"{R}\tsucceeded") for line in nights_rows), nights_rows
    assert f"Night {R}: " in text and "Verification: checked" in text
    assert re.search(r"would delete \d+ files", text)  # the retention dry run's counts
    assert f"{R}: run report · Data Docs · retention report" in text
    police = next(line for line in text.splitlines() if line.startswith("police\t")).split("\t")
    landed = [f for f in nights["report"]["files"] if f["source"] == "police" and f["landed_by_run"] == R.isoformat()]
    assert police[1:3] == [str(len(landed)), str(sum(f["rows_read"] for f in landed))], police
    # five charts drawn, full width, with a mark for the nights that have a value
    assert [c[0] for c in charts] == ["chart-rows", "chart-quarantine", "chart-linkage", "chart-freshness",
                                      "chart-duration"]
    assert all(c[1] >= 700 for c in charts) and all(c[2] >= 1 for c in charts), charts
    width, height = _png_size(shot)
    assert width >= 1200 and height > 1500, (width, height)  # the whole page, not a login or an error
    assert len(shot) > 50_000
    assert not sorted(v for v in _personal_values(nights["root"] / "feeds") if v in html)
    assert docs_problems == [] and index_problems == [], docs_problems + index_problems
    assert '"Failed" below does not mean a file was refused.' in index and partial["name"] in index
    docs = " ".join(docs.split())
    assert (f"Failed Rows quarantined, file staged. {partial['rows_quarantined']} of {partial['rows_read']} rows "
            f"broke at least one row-level rule below and were quarantined") in docs, docs[:1500]
    assert f"the other {partial['rows_staged']} rows were staged" in docs
    broken = next(iter(partial["quarantine_reasons"]))
    assert f"Rule {broken}: " in docs  # the contract's rule name, where GX would name an internal column
    assert not re.search(r"\w__(?:is_date|is_datetime|yyyymmdd|valid|fit)\b", docs_html)
    assert "Status: failed at check_inputs" in failed_page and "Nothing is delivered from a failed night" in failed_page

"""The run report as an engineer sees it: headless Chromium on the real api-server's tfp-reports plugin.

One `tfp run` on a small synthetic borough writes the report; the api-server (with plugins/) serves it
to a signed-in user. Chromium is driven over the DevTools protocol: a viewer's session cookie is set
as the login page would set it, the page is opened, and what it shows is read back. Without the
cookie the same page is refused.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from conftest import make_keys
from helpers import write_config
from ops_helpers import TFP, airflow_stack, clean_env
from tfp.feeds import SOURCES
from tfp.generate import generate

pytestmark = pytest.mark.slow

R = date(2025, 3, 31)
PERSONAL_COLUMNS = ("record_id", "date_of_birth", "postcode", "nino", "upn", "person_ref", "family_ref", "surname")


def _chromium() -> str:
    """Chromium from Debian's packages, installed here when missing (needs root and apt)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and this user cannot apt-get install it (needs root and apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # a stale package list: refresh once and retry
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"apt-get install chromium failed: {done.stderr[-500:]}")
    return shutil.which("chromium")


class Browser:
    """Headless Chromium with a DevTools websocket: just enough CDP to set a cookie, open and read a page."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()) and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            time.sleep(0.2)
        port = int(active.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self._id = 0
        self.send("Page.enable")
        self.send("Network.enable")

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str, timeout: float = 30) -> str:
        """Navigate and wait for the load event; returns the page's visible text."""
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("method") == "Page.loadEventFired":
                break
        return self.evaluate("document.body ? document.body.innerText : ''")

    def evaluate(self, expression: str) -> str:
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"]["value"]

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)


def _personal_values(feeds: Path) -> set[str]:
    values: set[str] = set()
    for path in feeds.rglob("*.csv"):
        if path.parent.name == "truth":
            continue
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                values.update(row[c].strip() for c in PERSONAL_COLUMNS if len((row.get(c) or "").strip()) >= 5)
    return values


@pytest.fixture(scope="module")
def borough(tmp_path_factory):
    """One real night on 40 synthetic families: directory transports, no encryption."""
    root = tmp_path_factory.mktemp("browser")
    generate(root / "feeds", families=40, seed=31, on=R)
    config = write_config(root, f"sqlite:///{root / 'warehouse.db'}")
    for source in SOURCES:
        for path in (root / "feeds" / source).iterdir():
            shutil.copy(path, root / "inbound" / source / path.name)
    keys = make_keys()
    env = clean_env({**keys, "AIRFLOW_HOME": str(root / "run-airflow")})
    run = subprocess.run([TFP, "run", "--config", str(config), "--date", R.isoformat()], env=env,
                         capture_output=True, text=True, cwd=root, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads((root / "work" / "reports" / R.isoformat() / "run_report.json").read_text())
    return {"root": root, "config": config, "keys": keys, "report": report}


def test_run_report_page_in_chromium(borough, tmp_path):
    chromium = _chromium()
    root, report = borough["root"], borough["report"]
    with airflow_stack(tmp_path, {"TFP_CONFIG": str(borough["config"]), **borough["keys"]}) as stack:
        plugins = stack.api("GET", "/plugins", stack.token("admin"))["plugins"]
        ours = next(p for p in plugins if p["name"] == "tfp_reports")
        assert [v["href"] for v in ours["external_views"]] == ["tfp-reports/"]
        assert ours["fastapi_apps"][0]["url_prefix"] == "/tfp-reports"

        page_url = f"{stack.url}/tfp-reports/{R.isoformat()}/run_report.html"
        status, body = stack.request("GET", f"/tfp-reports/{R.isoformat()}/run_report.html")
        assert status == 401, body[:200]
        token = stack.token("oncall")  # a viewer: what an on-call engineer needs to read it
        browser = Browser(chromium, tmp_path / "chromium-profile")
        try:
            refused = browser.open(page_url)
            assert "Not authenticated" in refused and "Data quality" not in refused

            browser.send("Network.setCookie", {"name": "_token", "value": token, "url": stack.url,
                                               "httpOnly": True})
            index = browser.open(f"{stack.url}/tfp-reports/")
            assert f"{R.isoformat()}: run report" in index
            text = browser.open(page_url)
            html = browser.evaluate("document.documentElement.outerHTML")
            shot = browser.send("Page.captureScreenshot", {"format": "png"})["data"]
            # the first file's Great Expectations Data Docs page, through the report's own link
            first = report["files"][0]
            docs_text = browser.open(f"{stack.url}/tfp-reports/{R.isoformat()}/{first['data_docs']}")
            docs_html = browser.evaluate("document.documentElement.outerHTML")
            escape = browser.open(f"{stack.url}/tfp-reports/{R.isoformat()}/data_docs/..%2F..%2Ftfp.yaml")
        finally:
            browser.close()

    assert f"tfp nightly run — {R.isoformat()} (E09000031)" in text
    for heading in ("Totals", "Files", "Data quality (Great Expectations, counts only)"):
        assert heading in text
    assert len(report["files"]) == 8
    lines = text.splitlines()
    for f in report["files"]:
        row = next((line for line in lines if f["name"] in line), None)
        assert row is not None, f"{f['name']} is not on the page"
        cells = row.split("\t")
        assert cells[:6] == [f["source"], f["name"], f["status"], str(f["rows_read"]), str(f["rows_staged"]),
                             str(f["rows_quarantined"])], row
        for reason, count in f["quarantine_reasons"].items():
            assert f"{reason}: {count}" in row
    assert sum(f["rows_quarantined"] for f in report["files"]) > 0  # the generator's bad rows show up
    for measure in ("records_linked", "families_assessed", "families_eligible", "persons_submitted"):
        assert f"{measure}\t{report[measure]}" in text
    assert "rows failing" in text and "passed" in text
    assert len(shot) > 1000
    leaked = sorted(v for v in _personal_values(root / "feeds") if v in html)
    assert not leaked, f"{len(leaked)} personal values on the report page"
    assert "Data Docs" in text
    assert first["name"] in docs_text and "Evaluated Expectations" in " ".join(docs_text.split())
    assert not sorted(v for v in _personal_values(root / "feeds") if v in docs_html)
    assert "no such page" in escape or "Not Found" in escape

"""The run report as an engineer sees it: headless Chromium on the real api-server's tfp-reports plugin.

One `tfp run` on a small synthetic borough writes the report; the api-server (with plugins/) serves it
to a signed-in user. Chromium is driven over the DevTools protocol: a viewer's session cookie is set
as the login page would set it, the page is opened, and what it shows is read back. Without the
cookie the same page is refused.

Issue 20 (second security review): every page the plugin serves is opened with every request
intercepted; none may leave the api-server's address, none may log a console error or a CSP
violation, each carries the CSP header. A user with no role is refused (403), a viewer and a user
are let in; links planted in work_dir (run_report.json to the warehouse, data_docs to /) serve
nothing.
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

from conftest import airflow_home, make_keys
from helpers import write_config
from ops_helpers import TFP, USERS, airflow_stack, clean_env
from tfp.feeds import SOURCES
from tfp_dev.generate import generate

pytestmark = [pytest.mark.slow, pytest.mark.airflow_stack]

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
        self.events: list[dict] = []  # every CDP event since the last open()
        self.allowed_origin: str | None = None  # with intercept(): requests elsewhere are failed
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Runtime.enable")
        self.send("Log.enable")

    def intercept(self, origin: str) -> None:
        """Pause every request the page makes; let through those to ``origin``, fail (and record) the rest.
        CSP violations are recorded in the page too (a listener added before any page script runs)."""
        self.allowed_origin = origin
        self.send("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "window.__csp = []; document.addEventListener('securitypolicyviolation', e => "
            "window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")})

    def _event(self, message: dict) -> None:
        self.events.append(message)
        if message.get("method") == "Fetch.requestPaused":
            params = message["params"]
            self._id += 1
            if params["request"]["url"].startswith(f"{self.allowed_origin}/"):
                command = {"method": "Fetch.continueRequest", "params": {"requestId": params["requestId"]}}
            else:
                command = {"method": "Fetch.failRequest",
                           "params": {"requestId": params["requestId"], "errorReason": "BlockedByClient"}}
            self.ws.send(json.dumps({"id": self._id, **command}))  # its answer is not waited for

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self._id += 1
        wanted = self._id
        self.ws.send(json.dumps({"id": wanted, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in message:
                self._event(message)
            elif message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str, timeout: float = 30, settle: float = 0.0) -> str:
        """Navigate and wait for the load event (and ``settle`` seconds more for late scripts and
        requests); returns the page's visible text. ``events`` then holds what happened."""
        self.events = []
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        loaded = None
        while time.monotonic() < deadline and (loaded is None or time.monotonic() < loaded + settle):
            wait = deadline - time.monotonic() if loaded is None else loaded + settle - time.monotonic()
            try:
                message = json.loads(self.ws.recv(timeout=max(0.05, wait)))
            except TimeoutError:
                continue
            if "method" in message:
                self._event(message)
                if message["method"] == "Page.loadEventFired" and loaded is None:
                    loaded = time.monotonic()
        return self.evaluate("document.body ? document.body.innerText : ''")

    def problems(self, origin: str) -> list[str]:
        """Requests that left ``origin``, console errors, exceptions, failed loads, CSP violations of the
        last open()."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Fetch.requestPaused" and not params["request"]["url"].startswith(f"{origin}/"):
                out.append(f"request off loopback: {params['request']['url'][:120]}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(f"console.{params['type']}: {[a.get('value', a.get('description')) for a in params['args']]}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(f"exception: {(details.get('exception') or {}).get('description', details['text'])[:200]}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(f"log error: {params['entry']['text'][:200]} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                out.append(f"load failed: {params.get('errorText')} {params.get('blockedReason', '')}")
        violations = self.evaluate("JSON.stringify(window.__csp || [])")
        out += [f"CSP violation: {v}" for v in json.loads(violations)]
        return out

    def document_headers(self, url: str) -> dict[str, str]:
        """The response headers of the last open()'s document (lower-case names)."""
        for event in self.events:
            if event.get("method") == "Network.responseReceived" and event["params"]["response"]["url"] == url:
                return {k.lower(): v for k, v in event["params"]["response"]["headers"].items()}
        raise AssertionError(f"no response seen for {url}")

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
    env = clean_env({**keys, "AIRFLOW_HOME": str(airflow_home(root / "run-airflow"))})
    run = subprocess.run([TFP, "run", "--config", str(config), "--date", R.isoformat()], env=env,
                         capture_output=True, text=True, cwd=root, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads((root / "work" / "reports" / R.isoformat() / "run_report.json").read_text())
    return {"root": root, "config": config, "keys": keys, "report": report}


ROLES = {**USERS, "nobody": "", "runner": "user"}  # "nobody": signed in, no role at all


@pytest.fixture(scope="module")
def served(borough, tmp_path_factory):
    """One api-server (with scheduler and dag-processor) for the module, serving the borough's reports,
    with users of every kind: the simple auth manager writes the added users' passwords on start."""
    env = {"TFP_CONFIG": str(borough["config"]), **borough["keys"],
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in ROLES.items())}
    with airflow_stack(tmp_path_factory.mktemp("stack"), env) as stack:
        stack.passwords.update(json.loads((stack.home / "passwords.json").read_text()))
        yield stack


def test_run_report_page_in_chromium(borough, served, tmp_path):
    chromium = _chromium()
    root, report = borough["root"], borough["report"]
    stack = served
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


def _served_pages(borough) -> list[str]:
    """Every page the plugin serves for the night: its index, the report (HTML and JSON), each Data Docs page."""
    night = borough["root"] / "work" / "reports" / R.isoformat()
    docs = sorted(p.relative_to(night).as_posix() for p in (night / "data_docs").rglob("*.html"))
    assert len(docs) >= 1 + 8 + 1, docs  # the index, a validation page per file, the suite pages
    return ["", f"{R.isoformat()}/run_report.html", f"{R.isoformat()}/run_report.json",
            *(f"{R.isoformat()}/{d}" for d in docs)]


def test_every_page_stays_on_loopback_without_errors(borough, served, tmp_path):
    """Issue 20 item 1: Chromium opens every page with each request intercepted. Nothing goes beyond the
    api-server, no console error, no CSP violation, the CSP, nosniff and no-referrer headers on each.
    A control page with a CDN script and an inline script shows the interception and the CSP do catch them."""
    chromium = _chromium()
    stack = served
    pages = _served_pages(borough)
    night = borough["root"] / "work" / "reports" / R.isoformat()
    control = night / "data_docs" / "tfp-control.html"
    control.write_text('<!doctype html><html><body><p>control</p><script src="https://cdn.jsdelivr.net/npm/vega@5">'
                       '</script><script>document.title = "inline ran"</script></body></html>', encoding="utf-8")
    browser = Browser(chromium, tmp_path / "chromium-profile")
    seen: dict[str, list[str]] = {}
    try:
        browser.intercept(stack.url)
        browser.send("Network.setCookie", {"name": "_token", "value": stack.token("oncall"), "url": stack.url,
                                           "httpOnly": True})
        for page in pages:
            url = f"{stack.url}/tfp-reports/{page}"
            text = browser.open(url, settle=1.5)
            headers = browser.document_headers(url)
            assert headers.get("content-security-policy", "").startswith("default-src 'self'"), (page, headers)
            assert headers.get("x-content-type-options") == "nosniff" and headers.get("referrer-policy") == \
                "no-referrer", (page, headers)
            assert "Not authenticated" not in text and "Forbidden" not in text, page
            requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Fetch.requestPaused"]
            assert requests and all(u.startswith(f"{stack.url}/") for u in requests), (page, requests)
            seen[page] = browser.problems(stack.url)
        browser.open(f"{stack.url}/tfp-reports/{R.isoformat()}/data_docs/tfp-control.html", settle=1.0)
        control_problems = browser.problems(stack.url)
        control_title = browser.evaluate("document.title")
        browser.open("https://cdn.jsdelivr.net/npm/vega@5", timeout=10)  # the interception itself
        outside = browser.problems(stack.url)
    finally:
        browser.close()
        control.unlink()
    assert {page: found for page, found in seen.items() if found} == {}
    validation = next(p for p in seen if "/validations/" in p)
    assert validation and len(seen) >= 12
    # the control: the CSP refuses its CDN script and its inline script, and the check sees both
    violations = [p for p in control_problems if p.startswith("CSP violation: script-src")]
    assert any("https://cdn.jsdelivr.net/npm/vega@5" in v for v in violations), control_problems
    assert any(v.endswith(" inline") for v in violations), control_problems
    assert control_title != "inline ran"
    # and a request off loopback is caught (and failed before it leaves the machine)
    assert "request off loopback: https://cdn.jsdelivr.net/npm/vega@5" in outside, outside


def test_reading_reports_needs_a_role(borough, served):
    """Issue 20 item 2: what the README says, enforced by the auth manager: no session 401, signed in
    without a role 403 (as bearer token and as the UI's cookie), viewer, user and admin 200."""
    stack = served
    pages = ["", f"{R.isoformat()}/run_report.html", f"{R.isoformat()}/run_report.json",
             f"{R.isoformat()}/data_docs/index.html",
             "static/vendor/jquery-3.7.1/jquery.min.js"]
    tokens = {user: stack.token(user) for user in ROLES}
    for page in pages:
        path = f"/tfp-reports/{page}"
        assert stack.request("GET", path)[0] == 401, page
        assert stack.request("GET", path, token=tokens["nobody"])[0] == 403, page
        assert stack.request("GET", path, cookie=f"_token={tokens['nobody']}")[0] == 403, page
        for user in ("oncall", "runner", "admin"):
            status, body = stack.request("GET", path, token=tokens[user])
            assert status == 200, (page, user, status, body[:200])
    status, body = stack.request("GET", f"/tfp-reports/{R.isoformat()}/run_report.json", token=tokens["nobody"])
    assert b"rows_read" not in body


def test_planted_links_serve_nothing(borough, served):
    """Issue 20 item 2, as an attacker who can write one file in work_dir: run_report.json replaced by a
    link to the warehouse, then data_docs replaced by a link to /. The api-server serves neither target."""
    stack = served
    root = borough["root"]
    night = root / "work" / "reports" / R.isoformat()
    token = stack.token("oncall")
    warehouse = (root / "warehouse.db").read_bytes()
    assert warehouse.startswith(b"SQLite format 3")

    report = night / "run_report.json"
    saved = report.read_bytes()
    report.unlink()
    report.symlink_to(root / "warehouse.db")
    try:
        status, body = stack.request("GET", f"/tfp-reports/{R.isoformat()}/run_report.json", token=token)
    finally:
        report.unlink()
        report.write_bytes(saved)
    assert status == 404 and b"SQLite format" not in body, (status, body[:100])

    docs = night / "data_docs"
    docs.rename(night / "data_docs.saved")
    docs.symlink_to("/")
    try:
        answers = {p: stack.request("GET", f"/tfp-reports/{R.isoformat()}/data_docs/{p}", token=token)
                   for p in ("etc/passwd", "etc/hostname", f"{root.relative_to('/')}/warehouse.db")}
    finally:
        docs.unlink()
        (night / "data_docs.saved").rename(docs)
    for path, (status, body) in answers.items():
        assert status == 404 and b"root:" not in body and b"SQLite format" not in body, (path, status, body[:100])
    assert stack.request("GET", f"/tfp-reports/{R.isoformat()}/run_report.json", token=token)[0] == 200

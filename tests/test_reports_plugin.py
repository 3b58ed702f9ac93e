"""The tfp-reports plugin's file serving, as an attacker who can write one file in work_dir sees it
(issue 20 item 2), and its security headers (item 1). The plugin's FastAPI app in-process with the
auth check passed; tests/test_ops_browser.py runs the same attacks and the role checks against a real
api-server."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[1]
DAY = "2025-03-31"


@pytest.fixture(scope="module")
def plugin():
    spec = importlib.util.spec_from_file_location("tfp_reports_under_test", REPO / "plugins" / "tfp_reports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def work(tmp_path, plugin, monkeypatch):
    """work_dir with one night's report, its Data Docs and a warehouse beside it; a client of the plugin."""
    work = tmp_path / "work"
    night = work / "reports" / DAY
    (night / "data_docs" / "validations").mkdir(parents=True)
    (night / "run_report.json").write_text('{"reference_date": "2025-03-31"}')
    (night / "run_report.html").write_text("<!doctype html><h1>tfp nightly run</h1>")
    (night / "data_docs" / "index.html").write_text("<!doctype html><p>docs</p>")
    (night / "data_docs" / "validations" / "p.html").write_text("<!doctype html><p>page</p>")
    with sqlite3.connect(work / "warehouse.db") as conn:
        conn.execute("CREATE TABLE person (surname TEXT)")
        conn.execute("INSERT INTO person VALUES ('Fairweather-Secret')")
    monkeypatch.setattr(plugin, "_reports_dir", lambda: work / "reports")
    plugin.app.dependency_overrides[plugin._may_read] = lambda: None
    yield {"work": work, "night": night, "client": TestClient(plugin.app)}
    plugin.app.dependency_overrides.clear()


def _refused(response) -> None:
    assert response.status_code in (403, 404), response.status_code
    assert b"SQLite format" not in response.content and b"Fairweather-Secret" not in response.content
    assert b"root:" not in response.content


def test_pages_are_served_with_security_headers(work, plugin):
    client = work["client"]
    for url in ("/", f"/{DAY}/run_report.html", f"/{DAY}/run_report.json", f"/{DAY}/data_docs/index.html",
                f"/{DAY}/data_docs/validations/p.html", f"/{DAY}/nothing.html"):
        response = client.get(url)
        assert response.status_code == (404 if "nothing" in url else 200), url
        assert response.headers["content-security-policy"] == plugin.CSP, url
        assert "default-src 'self'" in plugin.CSP and "script-src 'self';" in plugin.CSP
        assert "unsafe-inline" not in plugin.CSP.split("script-src")[1].split(";")[0]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert client.get(f"/{DAY}/run_report.json").headers["content-type"].startswith("application/json")


def test_run_report_linked_to_the_warehouse_is_refused(work):
    report = work["night"] / "run_report.json"
    report.unlink()
    report.symlink_to(work["work"] / "warehouse.db")  # the attacker's one file
    _refused(work["client"].get(f"/{DAY}/run_report.json"))


def test_data_docs_linked_to_root_is_refused(work):
    docs = work["night"] / "data_docs"
    os.rename(docs, work["work"] / "old_docs")
    docs.symlink_to("/")  # the attacker's one file
    for path in ("etc/passwd", "etc/hostname", "index.html", "proc/self/environ"):
        _refused(work["client"].get(f"/{DAY}/data_docs/{path}"))


@pytest.mark.parametrize("link, url", [
    ("data_docs/validations/w.html", "data_docs/validations/w.html"),  # a file link deep in the site
    ("data_docs/validations/up", "data_docs/validations/up/warehouse.db"),  # a directory link
    ("run_report.html", "run_report.html"),
])
def test_any_link_below_the_reports_folder_is_refused(work, link, url):
    target = work["night"] / link
    if target.exists():
        target.unlink()
    target.symlink_to(work["work"] / ("warehouse.db" if not link.endswith("up") else ""))
    _refused(work["client"].get(f"/{DAY}/{url}"))


def test_a_link_inside_the_site_is_refused_too(work):
    """Even a link whose target is inside the reports folder: a link is never followed."""
    (work["night"] / "data_docs" / "copy.html").symlink_to(work["night"] / "data_docs" / "index.html")
    _refused(work["client"].get(f"/{DAY}/data_docs/copy.html"))


def test_reports_folder_replaced_by_a_link_is_refused(work):
    reports = work["work"] / "reports"
    os.rename(reports, work["work"] / "real_reports")
    reports.symlink_to(work["work"] / "real_reports")
    _refused(work["client"].get(f"/{DAY}/run_report.json"))
    assert DAY not in work["client"].get("/").text


@pytest.mark.parametrize("url", [
    f"/{DAY}/data_docs/..%2F..%2F..%2Fwarehouse.db", f"/{DAY}/data_docs/%2E%2E/%2E%2E/%2E%2E/warehouse.db",
    f"/{DAY}/data_docs/validations/..%2F..%2Frun_report.json", f"/{DAY}/data_docs/..\\..\\run_report.json",
    f"/{DAY}/data_docs/", f"/{DAY}/data_docs/validations", "/..%2Fwarehouse.db/run_report.json",
])
def test_dot_dot_and_directories_are_refused(work, url):
    _refused(work["client"].get(url))


def test_a_fifo_is_not_opened(work):
    os.mkfifo(work["night"] / "data_docs" / "pipe.html")
    _refused(work["client"].get(f"/{DAY}/data_docs/pipe.html"))


def test_vendored_files_come_from_the_package(work):
    client = work["client"]
    response = client.get("/static/vendor/jquery-3.7.1/jquery.min.js")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
    assert response.content.startswith(b"/*! jQuery v3.7.1")
    assert client.get("/static/tfp/handlers.js").status_code == 200
    for url in ("/static/vendor/VENDOR.json/../../datadocs.py", "/static/datadocs.py", "/static/..%2Fdatadocs.py",
                "/static/vendor/../../config.py"):
        _refused(client.get(url))


def test_only_the_builds_own_scripts_are_served_from_work_dir(work, plugin):
    """A script in a night's site is served only under the name of its SHA-256: one written (or
    replaced) by someone who can write in work_dir is not, so the CSP's 'self' does not let it run."""
    from tfp.datadocs import script_name

    scripts = work["night"] / "data_docs" / "static" / "tfp"
    scripts.mkdir(parents=True)
    good = b"function showAllValidations() {}"
    (scripts / script_name(good)).write_bytes(good)
    client = work["client"]
    assert client.get(f"/{DAY}/data_docs/static/tfp/{script_name(good)}").content == good
    evil = b"fetch('/api/v2/variables').then(r => r.text()).then(t => navigator.sendBeacon('/x', t))"
    (scripts / script_name(good)).write_bytes(evil)  # replaced
    (scripts / "planted.js").write_bytes(evil)  # added
    (scripts / "planted.mjs").write_bytes(evil)
    for name in (script_name(good), "planted.js", "planted.mjs"):
        response = client.get(f"/{DAY}/data_docs/static/tfp/{name}")
        assert response.status_code == 404 and b"fetch" not in response.content, name

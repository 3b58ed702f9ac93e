"""Airflow UI plugin: tfp's run reports and data-quality pages, one click from the Airflow menu.

Serves the HTML pages the nightly run writes under ``work_dir/reports`` (counts only, nothing
personal), and each night's Great Expectations Data Docs site (built without values), to signed-in
Airflow users, at ``/tfp-reports/``, and adds "tfp reports" to the Browse menu. The config is found
through ``TFP_CONFIG``, as the DAGs find it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

PAGES = {"run_report.html", "run_report.json", "retention_report.json"}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _reports_dir() -> Path:
    from tfp.config import load_config

    config = os.environ.get("TFP_CONFIG")
    if not config:
        raise HTTPException(503, "TFP_CONFIG is not set for the api-server")
    return load_config(config).reports_dir


def _signed_in():
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return requires_authenticated()


app = FastAPI(title="tfp reports", dependencies=[Depends(_signed_in())])


@app.get("/", response_class=HTMLResponse)
def index() -> str:
    folder = _reports_dir()
    days = sorted((p.name for p in folder.iterdir() if p.is_dir() and DAY.match(p.name)), reverse=True) \
        if folder.exists() else []
    items = "".join(
        f'<li>{day}: <a href="{day}/run_report.html">run report</a>'
        + (f' · <a href="{day}/data_docs/index.html">Data Docs</a>'
           if (folder / day / "data_docs" / "index.html").exists() else "")
        + (f' · <a href="{day}/retention_report.json">retention report</a>'
           if (folder / day / "retention_report.json").exists() else "")
        + "</li>"
        for day in days
    )
    return ("<!doctype html><meta charset=utf-8><title>tfp reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}</style>"
            f"<h1>tfp reports</h1><ul>{items or '<li>no runs yet</li>'}</ul>")


@app.get("/{day}/{page}")
def page(day: str, page: str) -> FileResponse:
    if not DAY.match(day) or page not in PAGES:
        raise HTTPException(404, "no such report")
    path = _reports_dir() / day / page
    if not path.is_file():
        raise HTTPException(404, "no such report")
    return FileResponse(path)


@app.get("/{day}/data_docs/{path:path}")
def data_docs(day: str, path: str) -> FileResponse:
    """A file of the night's Great Expectations Data Docs site (built without values), nothing outside it."""
    if not DAY.match(day):
        raise HTTPException(404, "no such report")
    site = (_reports_dir() / day / "data_docs").resolve()
    target = (site / path).resolve()
    if not target.is_relative_to(site) or not target.is_file():
        raise HTTPException(404, "no such page")
    return FileResponse(target)


class TfpReportsPlugin(AirflowPlugin):
    name = "tfp_reports"
    fastapi_apps = [{"app": app, "url_prefix": "/tfp-reports", "name": "tfp reports"}]
    external_views = [{"name": "tfp reports", "href": "tfp-reports/", "destination": "nav", "category": "browse"}]

"""Airflow UI plugin: tfp's dashboard over nights, its run reports and data-quality pages, one click from
the Airflow menu.

Its index is the dashboard (tfp.dashboard: the last 30 to 90 nights per source, the last delivery,
retention runs, charts drawn as inline SVG on the server), read from the run and retention reports only.
It serves the HTML pages the nightly run writes under ``work_dir/reports`` (counts only, nothing
personal), and each night's Great Expectations Data Docs site (built without values, its scripts and
styles vendored), at ``/tfp-reports/``, and adds "tfp reports" to the Browse menu. The config is
found through ``TFP_CONFIG``, as the DAGs find it.

Reading needs what the README says: read access to the DAG's runs (the Viewer role or more under the
simple auth manager), asked of Airflow's auth manager; the retention report needs it on
tfp_retention, everything else on tfp_nightly. Every response carries a strict Content-Security-Policy
(no script but this origin's files), ``nosniff`` and ``no-referrer``: the pages run with the reader's
Airflow session, which the REST API accepts. A file is opened one path component at a time below
the reports folder, refusing ``..`` and every symlink (``O_NOFOLLOW``), so a link planted in
``work_dir`` (to the warehouse, to ``/``) serves nothing. Scripts come only from the installed tfp
package (the vendored libraries, at ``/tfp-reports/static/``) or are the scripts the Data Docs build
moved out of its pages, named by their SHA-256 and served only while name and content agree: a file
written into ``work_dir`` cannot become a script the pages run.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from pathlib import Path

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

PAGES = {"run_report.html", "run_report.json", "retention_report.json"}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# 'unsafe-inline' for styles only: GX's pages and bootstrap-table set style attributes. No inline
# script, no eval, nothing from another origin, no framing, no <base>, no form posts.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}
_READ_RUNS = {dag_id: requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id)
              for dag_id in ("tfp_nightly", "tfp_retention")}


def _may_read(request: Request, user: GetUserDep) -> None:
    """403 unless the auth manager lets this user read the runs of the DAG that wrote the page."""
    dag_id = "tfp_retention" if request.path_params.get("page") == "retention_report.json" else "tfp_nightly"
    _READ_RUNS[dag_id](request, user)


def _reports_dir() -> Path:
    from tfp.config import load_config

    config = os.environ.get("TFP_CONFIG")
    if not config:
        raise HTTPException(503, "TFP_CONFIG is not set for the api-server")
    return load_config(config).reports_dir


def _read_below(root: Path, parts: list[str]) -> bytes:
    """The bytes of the regular file ``root/parts...``, opened without following any link below root."""
    if not parts or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise HTTPException(404, "no such page")
    if root.is_symlink():  # work_dir/reports replaced by a link: nothing below it is ours
        raise HTTPException(404, "no such page")
    try:
        real_root = root.resolve(strict=True)
        if not real_root.joinpath(*parts).resolve().is_relative_to(real_root):
            raise HTTPException(404, "no such page")
        fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        raise HTTPException(404, "no such page") from None
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        for part in parts[:-1]:
            child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)  # ELOOP/ENOTDIR on a symlink
            os.close(fd)
            fd = child
        child = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        os.close(fd)
        fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HTTPException(404, "no such page")
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            return handle.read()
    except OSError:
        raise HTTPException(404, "no such page") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _static_dir() -> Path:
    from tfp.datadocs import STATIC

    return STATIC


def _is_script(media: str) -> bool:
    return media in ("application/javascript", "text/javascript", "application/ecmascript", "text/ecmascript")


def _file(parts: list[str], root: Path | None = None) -> Response:
    from tfp.datadocs import script_name

    body = _read_below(root or _reports_dir(), parts)
    media = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    if root is None and _is_script(media) and parts[-1] != script_name(body):
        raise HTTPException(404, "no such page")  # not a script the Data Docs build wrote
    if media.startswith("text/") or media in ("application/javascript", "application/json"):
        media += "; charset=utf-8"
    return Response(body, media_type=media)


app = FastAPI(title="tfp reports", dependencies=[Depends(_may_read)])


@app.middleware("http")
async def _security_headers(request: Request, call_next):
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    return response


@app.get("/", response_class=HTMLResponse)
def index(nights: int = 60) -> str:
    """The dashboard over the last ``nights`` nights (30 to 90), from the run and retention reports only."""
    from tfp.dashboard import dashboard_html

    return dashboard_html(_reports_dir(), nights, read=_read_below)


@app.get("/static/{path:path}")
def static(path: str) -> Response:
    """tfp's vendored scripts, styles and fonts, from the installed package (read-only to work_dir)."""
    parts = path.split("/")
    if parts[0] not in ("vendor", "tfp"):
        raise HTTPException(404, "no such page")
    return _file(parts, root=_static_dir())


@app.get("/{day}/{page}")
def page(day: str, page: str) -> Response:
    if not DAY.match(day) or page not in PAGES:
        raise HTTPException(404, "no such report")
    return _file([day, page])


@app.get("/{day}/data_docs/{path:path}")
def data_docs(day: str, path: str) -> Response:
    """A file of the night's Great Expectations Data Docs site (built without values), nothing outside it."""
    if not DAY.match(day):
        raise HTTPException(404, "no such report")
    return _file([day, "data_docs", *path.split("/")])


class TfpReportsPlugin(AirflowPlugin):
    name = "tfp_reports"
    fastapi_apps = [{"app": app, "url_prefix": "/tfp-reports", "name": "tfp reports"}]
    external_views = [{"name": "tfp reports", "href": "tfp-reports/", "destination": "nav", "category": "browse"}]

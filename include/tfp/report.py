"""The run report (contract section 8): what a night did, in counts only, as JSON and an HTML page."""

from __future__ import annotations

import html
import json
import os
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, func, select

from tfp.config import Config
from tfp.stage import quarantine_reasons
from tfp.warehouse import family_flags, landing_log, links


def current_files(engine: Engine, reference_date: date) -> list[dict]:
    """The feed files that make up R: the latest landing of each file name dated on or before R."""
    latest = (
        select(landing_log.c.source, landing_log.c.file_name, func.max(landing_log.c.id).label("id"))
        .where(landing_log.c.file_date <= reference_date, landing_log.c.status != "duplicate")
        .group_by(landing_log.c.source, landing_log.c.file_name).subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(landing_log).join(latest, latest.c.id == landing_log.c.id)
            .order_by(landing_log.c.source, landing_log.c.file_date, landing_log.c.file_name)
        ).all()
    files = []
    for r in rows:
        files.append({
            "name": r.file_name, "source": r.source, "dataset": r.dataset, "status": r.status,
            "rows_read": r.rows_read or 0, "rows_staged": r.rows_staged or 0,
            "rows_quarantined": r.rows_quarantined or 0,
            "quarantine_reasons": quarantine_reasons(engine, r.id),
            "expectations": json.loads(r.expectation_results or "[]"),
            **({"rejection": r.rejection} if r.rejection else {}),
        })
    return files


def _link_counts(engine: Engine, reference_date: date) -> dict[str, dict[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(links.c.dataset, (links.c.person_ref.is_not(None)).label("linked"), func.count())
            .where(links.c.reference_date == reference_date)
            .group_by(links.c.dataset, links.c.person_ref.is_not(None))
        ).all()
    out: dict[str, dict[str, int]] = {}
    for dataset, linked, count in rows:
        out.setdefault(dataset, {"linked": 0, "unlinked": 0})["linked" if linked else "unlinked"] += count
    return dict(sorted(out.items()))


def _family_counts(engine: Engine, reference_date: date, scope: str) -> dict[str, int]:
    with engine.connect() as conn:
        assessed, eligible = conn.execute(
            select(func.count(), func.coalesce(func.sum(family_flags.c.eligible), 0))
            .where(family_flags.c.reference_date == reference_date, family_flags.c.scope == scope)
        ).one()
    return {"families_assessed": int(assessed), "families_eligible": int(eligible)}


def build_run_report(engine: Engine, config: Config, reference_date: date, stage_counts: dict) -> dict:
    files = current_files(engine, reference_date)
    linkage = _link_counts(engine, reference_date)
    delivered = _family_counts(engine, reference_date, "kept")
    package = stage_counts.get("package") or {}
    consent = stage_counts.get("consent") or {}
    return {
        "reference_date": reference_date.isoformat(),
        "la_code": config.local_authority.code,
        "files": files,
        "rows_read": sum(f["rows_read"] for f in files),
        "rows_staged": sum(f["rows_staged"] for f in files),
        "rows_quarantined": sum(f["rows_quarantined"] for f in files),
        "records_linked": sum(c["linked"] for c in linkage.values()),
        "records_unlinked": sum(c["unlinked"] for c in linkage.values()),
        "linkage": linkage,
        **delivered,
        "families_assessed_all_persons": _family_counts(engine, reference_date, "all")["families_assessed"],
        "persons_submitted": int(package.get("persons_submitted", 0)),
        "persons_excluded_by_consent": int(consent.get("excluded", 0)),
        "withdrawals_listed": int(package.get("withdrawals", 0)),
        "delivery": {k: v for k, v in (stage_counts.get("deliver") or {}).items() if isinstance(v, int)},
    }


def _html(report: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(f['source'])}</td><td>{e(f['name'])}</td><td>{e(f['status'])}</td>"
        f"<td>{f['rows_read']}</td><td>{f['rows_staged']}</td><td>{f['rows_quarantined']}</td>"
        f"<td>{e(', '.join(f'{k}: {v}' for k, v in f['quarantine_reasons'].items()))}"
        f"{e(' ' + f['rejection']) if f.get('rejection') else ''}</td></tr>"
        for f in report["files"]
    )
    quality = "".join(
        f"<h3>{e(f['source'])} / {e(f['name'])}</h3><table><tr><th>rule</th><th>expectation</th><th>result</th>"
        "<th>rows checked</th><th>rows failing</th></tr>"
        + "".join(
            f"<tr><td>{e(str(x.get('rule')))}</td><td>{e(str(x.get('expectation_type')))}</td>"
            f"<td>{'passed' if x.get('success') else 'FAILED'}</td><td>{x.get('element_count', '')}</td>"
            f"<td>{x.get('unexpected_count', '')}</td></tr>"
            for x in f.get("expectations", []))
        + "</table>"
        for f in report["files"]
    )
    totals = "".join(
        f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in report.items() if isinstance(v, int)
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>tfp run report {e(report['reference_date'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style>"
        f"<h1>tfp nightly run — {e(report['reference_date'])} ({e(report['la_code'])})</h1>"
        f"<h2>Totals</h2><table>{totals}</table>"
        "<h2>Files</h2><table><tr><th>source</th><th>file</th><th>status</th><th>read</th><th>staged</th>"
        f"<th>quarantined</th><th>quarantine reasons</th></tr>{rows}</table>"
        f"<h2>Data quality (Great Expectations, counts only)</h2>{quality}</html>\n"
    )


def write_run_report(engine: Engine, config: Config, reference_date: date, stage_counts: dict) -> Path:
    """Write run_report.json and run_report.html under work_dir/reports/<date>/; returns the JSON path."""
    report = build_run_report(engine, config, reference_date, stage_counts)
    folder = config.reports_dir / reference_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run_report.json"
    _atomic_write(path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    _atomic_write(folder / "run_report.html", _html(report))
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

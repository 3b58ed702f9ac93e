"""The operations dashboard over nights: what the tfp_reports plugin shows at ``/tfp-reports/``.

It reads only the reports a night and a retention run write (``reports/<date>/run_report.json`` and
``retention_report.json``), which hold counts, dates, rule and file names, never a personal value, so
the page cannot show one either. :func:`assemble` turns the last N nights' reports into plain series
(per night, per source), :func:`render` draws them as one HTML page whose charts are inline SVG made
here: no script and nothing from another origin, so the plugin's strict Content-Security-Policy holds.
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_NIGHTS = 60
NIGHT_CHOICES = (30, 60, 90)
Reader = Callable[[Path, list[str]], bytes]


def read_no_links(root: Path, parts: list[str]) -> bytes:
    """The bytes of the regular file ``root/parts...``, refusing a link anywhere below ``root``."""
    path = root
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink() or not path.is_dir():
            raise OSError(f"{path} is not a folder")
    fd = os.open(path / parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError("not a regular file")
        return handle.read()


def _load(root: Path, parts: list[str], read: Reader) -> dict | None:
    try:
        value = json.loads(read(root, parts))
    except Exception:  # noqa: BLE001 - a missing, linked or broken report is a night without that report
        return None
    return value if isinstance(value, dict) else None


def load_nights(reports_dir: Path, nights: int = DEFAULT_NIGHTS, read: Reader = read_no_links) -> list[dict]:
    """The last ``nights`` dates that have a run or retention report, oldest first:
    ``{"date", "run": dict | None, "retention": dict | None, "data_docs": bool}``."""
    if reports_dir.is_symlink() or not reports_dir.is_dir():
        return []
    days = sorted((p.name for p in reports_dir.iterdir()
                   if DAY.match(p.name) and not p.is_symlink() and p.is_dir()), reverse=True)
    out = []
    for day in days:
        run = _load(reports_dir, [day, "run_report.json"], read)
        retention = _load(reports_dir, [day, "retention_report.json"], read)
        if run is None and retention is None:
            continue
        docs = (reports_dir / day / "data_docs" / "index.html")
        out.append({"date": day, "run": run, "retention": retention,
                    "data_docs": not docs.is_symlink() and docs.is_file()})
        if len(out) >= nights:
            break
    return out[::-1]


def _source_of_dataset() -> dict[str, str]:
    from tfp.feeds import DATASETS

    return {name: d.source for name, d in DATASETS.items()}


def _rate(part: int | float | None, whole: int | float | None) -> float | None:
    if not isinstance(part, int | float) or not isinstance(whole, int | float) or not whole:
        return None
    return part / whole


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _age_days(reference: str, newest: str | None) -> int | None:
    if not newest:
        return None
    try:
        return (date.fromisoformat(reference) - date.fromisoformat(newest)).days
    except ValueError:
        return None


def source_night(report: Mapping, source: str, datasets_of: Mapping[str, str]) -> dict:
    """One source's figures for one night's run report: files it landed that night and their rows and
    quarantine rate, its linkage rate, its feeds' freshness (the oldest newest-file age, overdue datasets)."""
    day = report.get("reference_date")
    files = [f for f in report.get("files") or [] if f.get("source") == source]
    known = all("landed_by_run" in f for f in files)
    landed = [f for f in files if f.get("landed_by_run") == day]
    rows = sum(_int(f.get("rows_read")) or 0 for f in landed)
    quarantined = sum(_int(f.get("rows_quarantined")) or 0 for f in landed)
    linked = unlinked = 0
    for dataset, counts in (report.get("linkage") or {}).items():
        if datasets_of.get(dataset) == source and isinstance(counts, Mapping):
            linked += _int(counts.get("linked")) or 0
            unlinked += _int(counts.get("unlinked")) or 0
    fresh = report.get("freshness") or {}
    ages, overdue = [], []
    late = {o.get("dataset") for o in fresh.get("overdue") or [] if isinstance(o, Mapping)}
    for dataset, d in (fresh.get("datasets") or {}).items():
        if datasets_of.get(dataset) != source or not isinstance(d, Mapping):
            continue
        age = _age_days(str(day), d.get("newest"))
        ages.append(age)
        if dataset in late:
            overdue.append(dataset)
    return {
        "files_landed": len(landed) if known else None,
        "rows": rows if known else None,
        "rows_quarantined": quarantined if known else None,
        "quarantine_rate": _rate(quarantined, rows) if known else None,
        "linkage_rate": _rate(linked, linked + unlinked),
        "records_linked": linked, "records_unlinked": unlinked,
        "newest_age_days": None if not ages or None in ages else max(ages),
        "no_file": [d for d, info in (fresh.get("datasets") or {}).items()
                    if datasets_of.get(d) == source and isinstance(info, Mapping) and not info.get("newest")],
        "overdue": sorted(overdue),
    }


def _night_row(night: Mapping) -> dict:
    report = night.get("run") or {}
    failure = report.get("failure") or {}
    delivery = report.get("delivery") or {}
    linked, unlinked = _int(report.get("records_linked")), _int(report.get("records_unlinked"))
    fresh = report.get("freshness") or {}
    return {
        "date": night["date"],
        "has_run_report": bool(night.get("run")),
        "status": report.get("status", "succeeded") if report else None,
        "failed_stage": failure.get("stage"),
        "failure_message": failure.get("message"),
        "started_at": report.get("started_at"),
        "duration_seconds": _int(report.get("duration_seconds")),
        "rows_read": _int(report.get("rows_read")),
        "rows_quarantined": _int(report.get("rows_quarantined")),
        "quarantine_rate": _rate(_int(report.get("rows_quarantined")), _int(report.get("rows_read"))),
        "linkage_rate": _rate(linked, (linked or 0) + (unlinked or 0)) if linked is not None else None,
        "families_eligible": report.get("families_eligible"),
        "persons_submitted": _int(report.get("persons_submitted")),
        # the linkage review queue (tfp.review): records left for a reviewer, settled by a decision, pairs pending
        "review_queued": _int(report.get("review_queued")),
        "review_decided": _int(report.get("review_decided")),
        "review_pending": _int(report.get("review_pending")),
        "files_delivered": len(delivery.get("files") or []),
        "dry_run": bool(delivery.get("dry_run")),
        "overdue": len(fresh.get("overdue") or []),
        "volume_flags": len(fresh.get("volume") or []),
        "data_docs": bool(night.get("data_docs")),
        "has_retention_report": bool(night.get("retention")),
    }


def assemble(nights: list[dict], sources: Iterable[str] | None = None) -> dict:
    """The dashboard's content from :func:`load_nights`' list: a row per night, per-source series, the
    last delivery with how it was checked, and the retention runs with their counts per category."""
    from tfp.feeds import SOURCES

    datasets_of = _source_of_dataset()
    seen = {f.get("source") for n in nights for f in (n.get("run") or {}).get("files") or []}
    order = list(sources or SOURCES) + sorted(s for s in seen if s and s not in (sources or SOURCES))
    rows = [_night_row(n) for n in nights]
    per_source = {s: [{"date": n["date"], **source_night(n["run"], s, datasets_of)} if n.get("run")
                      else {"date": n["date"]} for n in nights] for s in order}
    last_delivery = None
    for n in reversed(nights):
        report = n.get("run") or {}
        delivery = report.get("delivery") or {}
        if report.get("status", "succeeded") == "succeeded" and delivery.get("files") and not delivery.get("dry_run"):
            files = delivery["files"]
            last_delivery = {
                "date": n["date"], "files": files, "uploaded": _int(delivery.get("uploaded")) or 0,
                "skipped": _int(delivery.get("skipped")) or 0, "checked": delivery.get("checked"),
                "bytes": sum(_int(f.get("bytes")) or 0 for f in files),
                "verified": all(f.get("sha256") for f in files),
            }
            break
    retention = []
    for n in nights:
        r = n.get("retention")
        if not r:
            continue
        categories = {c: {"found": _int(v.get("found")) or 0, "deleted": _int(v.get("deleted")) or 0,
                          "unit": str(v.get("unit", "")), "cutoff": str(v.get("cutoff", ""))}
                      for c, v in (r.get("categories") or {}).items() if isinstance(v, Mapping)}
        retention.append({"date": n["date"], "dry_run": bool(r.get("dry_run")), "categories": categories})
    codes = [str(n["run"]["la_code"]) for n in nights if (n.get("run") or {}).get("la_code")]
    return {"nights": rows, "sources": per_source, "last_delivery": last_delivery, "retention": retention,
            "la_code": codes[-1] if codes else None}


# -- drawing ---------------------------------------------------------------------------------------

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 210, 56, 150, 24, 34
e = html.escape


def _x(i: int, n: int) -> float:
    span = W - LEFT - RIGHT
    return LEFT + (span / 2 if n <= 1 else i * span / (n - 1))


def _fmt(value: float, percent: bool) -> str:
    if percent:
        return f"{100 * value:.3g}%"
    return f"{value:,.0f}" if value >= 10 or float(value).is_integer() else f"{value:.1f}"


def _nice(top: float) -> float:
    """The axis top: the next of 1, 2, 4, 8, 10 times a power of ten at or above ``top``, so that the four
    grid lines fall on round figures."""
    import math

    if top <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(top))
    return next(m * power for m in (1, 2, 4, 8, 10) if m * power >= top - 1e-12)


def _frame(title: str, chart_id: str, dates: list[str], failed: list[bool], top: float, percent: bool) -> list[str]:
    """Axes, grid, the first and last date, and a red band behind each failed night."""
    n = len(dates)
    plot_h = H - TOP - BOTTOM
    parts = [f'<svg id="{e(chart_id)}" class=chart role=img aria-label="{e(title)}" viewBox="0 0 {W} {H}" '
             f'width="{W}" height="{H}"><title>{e(title)}</title>',
             f'<text x="{LEFT}" y="15" class=ct>{e(title)}</text>']
    step = (W - LEFT - RIGHT) / max(n - 1, 1)
    for i, bad in enumerate(failed):
        if bad:
            parts.append(f'<rect class=failband x="{_x(i, n) - step / 2:.1f}" y="{TOP}" width="{max(step, 4):.1f}" '
                         f'height="{plot_h}"><title>{e(dates[i])}: failed</title></rect>')
    for k in range(5):
        v = top * k / 4
        y = TOP + plot_h - plot_h * k / 4
        parts.append(f'<line class=grid x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class=ax x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor=end>{_fmt(v, percent)}</text>')
    if n:
        parts.append(f'<text class=ax x="{_x(0, n):.1f}" y="{H - 10}" text-anchor={"start" if n > 1 else "middle"}>{e(dates[0])}</text>')
        if n > 1:
            parts.append(f'<text class=ax x="{_x(n - 1, n):.1f}" y="{H - 10}" text-anchor=end>{e(dates[-1])}</text>')
    return parts


def line_chart(title: str, chart_id: str, dates: list[str], series: Mapping[str, list[float | None]],
               failed: list[bool], percent: bool = False, limit: float | None = None, minimum: float = 4) -> str:
    """An inline SVG line per series over the nights (a gap where a value is missing), a dot per value
    with its exact figure as the tooltip, a legend at the right; ``limit`` draws a dashed threshold."""
    values = [v for vs in series.values() for v in vs if v is not None]
    top = max([*values, limit or 0, 0.01 if percent else minimum])
    top = 1.0 if percent and 0.2 < top <= 1.0 else _nice(top * 1.1)
    n, plot_h = len(dates), H - TOP - BOTTOM
    parts = _frame(title, chart_id, dates, failed, top, percent)

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / top

    if limit is not None:
        parts.append(f'<line class=limit x1="{LEFT}" x2="{W - RIGHT}" y1="{y(limit):.1f}" y2="{y(limit):.1f}"/>')
    for k, (name, vs) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        runs, current = [], []
        for i, v in enumerate(vs):
            if v is None:
                if current:
                    runs.append(current)
                current = []
            else:
                current.append((i, v))
        if current:
            runs.append(current)
        for run in runs:
            points = " ".join(f"{_x(i, n):.1f},{y(v):.1f}" for i, v in run)
            if len(run) > 1:
                parts.append(f'<polyline fill=none stroke="{colour}" stroke-width=2 points="{points}"/>')
            parts += [f'<circle cx="{_x(i, n):.1f}" cy="{y(v):.1f}" r=3.5 fill="{colour}">'
                      f'<title>{e(name)} {e(dates[i])}: {_fmt(v, percent)}</title></circle>' for i, v in run]
        ly = TOP + 14 * k + 6
        parts.append(f'<rect x="{W - RIGHT + 10}" y="{ly - 8}" width=10 height=10 fill="{colour}"/>'
                     f'<text class=lg x="{W - RIGHT + 24}" y="{ly + 1}">{e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, chart_id: str, dates: list[str], values: list[float | None], failed: list[bool],
              unit: str = "") -> str:
    """An inline SVG bar per night (red for a failed night), its exact figure as the tooltip."""
    top = _nice(max([v for v in values if v is not None] + [4]) * 1.1)
    n, plot_h = len(dates), H - TOP - BOTTOM
    parts = _frame(title, chart_id, dates, [False] * n, top, False)
    width = max(2.0, min(24.0, (W - LEFT - RIGHT) / max(n, 1) * 0.7))
    for i, v in enumerate(values):
        if v is None:
            continue
        h = plot_h * v / top
        parts.append(f'<rect class="bar{" failed" if failed[i] else ""}" x="{_x(i, n) - width / 2:.1f}" '
                     f'y="{TOP + plot_h - h:.1f}" width="{width:.1f}" height="{h:.1f}">'
                     f'<title>{e(dates[i])}: {_fmt(v, False)}{e(unit)}{" (failed)" if failed[i] else ""}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _n(v) -> str:
    return "—" if v is None else e(str(v))


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(seconds, 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {secs} s"


STYLE = (
    "body{font-family:sans-serif;margin:1.5em 2em;color:#222}h1{margin-bottom:.2em}h2{margin-top:1.6em}"
    "td,th{padding:2px 8px;text-align:left;vertical-align:top}table{border-collapse:collapse}"
    "tr:nth-child(even){background:#f3f3f3}.succeeded{color:#060}.failed{color:#b00;font-weight:bold}"
    ".chart{display:block;margin:.6em 0;background:#fff;border:1px solid #ddd}.chart .ct{font-size:13px;"
    "font-weight:bold}.chart .ax,.chart .lg{font-size:11px;fill:#444}.chart .grid{stroke:#e5e5e5}"
    ".chart .limit{stroke:#b00;stroke-dasharray:4 3}.chart .failband{fill:#fdd}.chart .bar{fill:#1f77b4}"
    ".chart .bar.failed{fill:#b00}.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ccc;"
    "border-radius:6px;padding:.6em 1em;min-width:12em}.card b{font-size:1.4em;display:block}"
    "nav a{margin-right:.8em}.note{color:#555;max-width:60em}"
)


def _cards(data: Mapping) -> str:
    nights = [n for n in data["nights"] if n["has_run_report"]]
    if not nights:
        return "<p id=no-nights>No night has written a run report yet.</p>"
    last = nights[-1]
    failed = sum(1 for n in nights if n["status"] == "failed")
    delivery = data["last_delivery"]
    cards = [
        ("last night", f'<span class="{e(str(last["status"]))}">{e(str(last["status"]))}</span>',
         f'{e(last["date"])}' + (f' at {e(str(last["failed_stage"]))}' if last["failed_stage"] else "")),
        ("nights failed", str(failed), f"of the {len(nights)} shown"),
        ("last delivery", e(delivery["date"]) if delivery else "none", f'{len(delivery["files"])} files' if delivery else ""),
        ("feeds overdue last night", str(last["overdue"]), f'{last["volume_flags"]} file(s) with unusual row counts'),
    ]
    return "<div class=cards id=summary>" + "".join(
        f"<div class=card><small>{e(t)}</small><b>{v}</b><small>{s}</small></div>" for t, v, s in cards) + "</div>"


def _sources_table(data: Mapping) -> str:
    head = ("<tr><th>source</th><th>files landed</th><th>rows</th><th>quarantine rate</th><th>linkage rate</th>"
            "<th>newest file (days old)</th><th>overdue</th></tr>")
    rows = []
    for source, series in data["sources"].items():
        last = next((s for s in reversed(series) if "files_landed" in s), None)
        if last is None:
            continue
        rows.append(
            f"<tr><th>{e(source)}</th><td>{_n(last['files_landed'])}</td><td>{_n(last['rows'])}</td>"
            f"<td>{_pct(last['quarantine_rate'])}</td><td>{_pct(last['linkage_rate'])}</td>"
            f"<td>{_n(last['newest_age_days'])}</td>"
            f"<td class=\"{'failed' if last['overdue'] else ''}\">{e(', '.join(last['overdue']) or 'none')}</td></tr>")
    return f"<table id=sources-table>{head}{''.join(rows)}</table>"


def _delivery_html(delivery: Mapping | None) -> str:
    if not delivery:
        return "<p id=last-delivery>No delivery yet in the nights shown (a dry run delivers nothing).</p>"
    rows = "".join(f"<tr><td>{e(f['name'])}</td><td>{_n(f.get('bytes'))}</td><td>{_n(f.get('rows'))}</td>"
                   f"<td>{e(str(f.get('delivered_at', '')))}</td><td><code>{e(str(f.get('sha256', ''))[:16])}…</code></td></tr>"
                   for f in delivery["files"])
    return (
        f"<div id=last-delivery><p>Night <strong>{e(delivery['date'])}</strong>: {len(delivery['files'])} files, "
        f"{delivery['bytes']:,} bytes ({delivery['uploaded']} uploaded, {delivery['skipped']} already there "
        f"unchanged). Verification: <strong>{'checked' if delivery['verified'] else 'not recorded'}</strong>"
        + (f" — {e(str(delivery['checked']))}" if delivery.get("checked") else "") + ".</p>"
        "<table><tr><th>file</th><th>bytes</th><th>rows</th><th>delivered at</th><th>SHA-256 recorded</th></tr>"
        f"{rows}</table></div>")


def _retention_html(runs: list[Mapping]) -> str:
    if not runs:
        return "<p id=retention>No retention run in the nights shown.</p>"
    categories = sorted({c for r in runs for c in r["categories"]})
    head = "<tr><th>run</th><th>kind</th>" + "".join(f"<th>{e(c.replace('_', ' '))}</th>" for c in categories) + "</tr>"
    rows = []
    for r in reversed(runs):
        cells = []
        for c in categories:
            v = r["categories"].get(c)
            if v is None:
                cells.append("<td>—</td>")
            elif r["dry_run"]:
                cells.append(f"<td>would delete {v['found']} {e(v['unit'])}</td>")
            else:
                cells.append(f"<td>{v['deleted']} {e(v['unit'])} deleted</td>")
        rows.append(f"<tr><td>{e(r['date'])}</td><td>{'dry run' if r['dry_run'] else 'deleted'}</td>{''.join(cells)}</tr>")
    return f"<table id=retention>{head}{''.join(rows)}</table>"


def _nights_table(data: Mapping) -> str:
    head = ("<tr><th>night</th><th>status</th><th>started</th><th>duration</th><th>rows read</th>"
            "<th>quarantined</th><th>linkage rate</th><th>eligible families (published)</th>"
            "<th>persons submitted</th><th>files delivered</th><th>feeds overdue</th>"
            "<th>review: queued / decided / pending</th></tr>")
    rows = "".join(
        f"<tr><td>{e(n['date'])}</td><td class=\"{e(str(n['status']))}\">{_n(n['status'])}"
        + (f" at {e(str(n['failed_stage']))}" if n["failed_stage"] else "") + "</td>"
        f"<td>{_n((n['started_at'] or '')[:16].replace('T', ' ') or None)}</td><td>{_duration(n['duration_seconds'])}</td>"
        f"<td>{_n(n['rows_read'])}</td><td>{_n(n['rows_quarantined'])} ({_pct(n['quarantine_rate'])})</td>"
        f"<td>{_pct(n['linkage_rate'])}</td><td>{_n(n['families_eligible'])}</td><td>{_n(n['persons_submitted'])}</td>"
        f"<td>{'dry run' if n['dry_run'] else n['files_delivered']}</td><td>{n['overdue']}</td>"
        f"<td>{_n(n['review_queued'])} / {_n(n['review_decided'])} / {_n(n['review_pending'])}</td></tr>"
        for n in reversed(data["nights"]) if n["has_run_report"])
    return f"<table id=nights-table>{head}{rows}</table>"


def _reports_list(data: Mapping) -> str:
    items = "".join(
        f"<li>{e(n['date'])}: "
        + " · ".join(
            ([f'<a href="{e(n["date"])}/run_report.html">run report</a>'] if n["has_run_report"] else [])
            + ([f'<a href="{e(n["date"])}/data_docs/index.html">Data Docs</a>'] if n["data_docs"] else [])
            + ([f'<a href="{e(n["date"])}/retention_report.json">retention report</a>']
               if n["has_retention_report"] else []))
        + "</li>" for n in reversed(data["nights"]))
    return f"<ul id=reports>{items or '<li>no runs yet</li>'}</ul>"


def render(data: Mapping, nights: int = DEFAULT_NIGHTS) -> str:
    """The dashboard page: summary cards, per-source figures of the last night, charts over the nights,
    the last delivery, retention runs, a table of nights and every night's reports."""
    shown = data["nights"]
    dates = [n["date"] for n in shown]
    failed = [n["status"] == "failed" for n in shown]
    sources = data["sources"]
    charts = [
        bar_chart("Rows read per night", "chart-rows", dates, [n["rows_read"] for n in shown], failed, " rows"),
        line_chart("Quarantine rate of the files each source landed", "chart-quarantine", dates,
                   {s: [p.get("quarantine_rate") for p in v] for s, v in sources.items()
                    if any(p.get("rows") for p in v)}, failed, percent=True),
        line_chart("Linkage rate per source (partner records linked to the roster)", "chart-linkage", dates,
                   {s: [p.get("linkage_rate") for p in v] for s, v in sources.items()
                    if any(p.get("linkage_rate") is not None for p in v)}, failed, percent=True),
        line_chart("Freshness: age in days of each source's oldest newest file", "chart-freshness", dates,
                   {s: [p.get("newest_age_days") for p in v] for s, v in sources.items()
                    if any(p.get("newest_age_days") is not None for p in v)}, failed),
        bar_chart("Run time per night (minutes)", "chart-duration", dates,
                  [None if n["duration_seconds"] is None else n["duration_seconds"] / 60 for n in shown], failed,
                  " min"),
    ]
    choose = " ".join(f'<a href="?nights={k}">{"<b>" if k == nights else ""}last {k} nights'
                      f'{"</b>" if k == nights else ""}</a>' for k in NIGHT_CHOICES)
    la_code = data.get("la_code")
    title = "tfp dashboard" + (f" ({la_code})" if la_code else "")
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{e(title)}</title><style>{STYLE}</style>"
        f"<h1>{e(title)}</h1><p class=note>The last {len(dates)} nights with a report (at most {nights}), "
        "read from the nights' run reports and retention reports only: counts, dates and names of files, rules "
        "and datasets, never a personal value. A red band or bar marks a failed night.</p>"
        f"<nav>{choose}</nav>{_cards(data)}"
        f"<h2>Sources, last night</h2>{_sources_table(data)}"
        f"<h2>Trends</h2>{''.join(charts)}"
        f"<h2>Last delivery</h2>{_delivery_html(data['last_delivery'])}"
        f"<h2>Retention runs</h2>{_retention_html(data['retention'])}"
        f"<h2>Nights</h2>{_nights_table(data)}"
        f"<h2>Reports</h2>{_reports_list(data)}</html>\n"
    )


def dashboard_html(reports_dir: Path, nights: int = DEFAULT_NIGHTS, read: Reader = read_no_links) -> str:
    """The whole page for the reports folder (the plugin passes its own link-refusing reader)."""
    nights = min(max(int(nights), 1), max(NIGHT_CHOICES))
    return render(assemble(load_nights(reports_dir, nights, read)), nights)

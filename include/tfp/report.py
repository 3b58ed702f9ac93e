"""The run report (contract section 8): what a night did, in counts only, as JSON and an HTML page."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select

from tfp.config import WEAK_DISCLOSURE_FLOOR, Config
from tfp.freshness import assess
from tfp.fsmodes import atomic_write
from tfp.inputs import required_datasets
from tfp.statuses import FlagScope, LandingStatus, LinkMethod
from tfp.validate import quarantine_reasons
from tfp.warehouse import delivery_log, family_flags, landing_log, links

if TYPE_CHECKING:
    from tfp.context import PathResult, RunContext, StageResult


def _current_landings(engine: Engine, reference_date: date) -> list:
    """The latest landing of each partner's file name dated on or before R (duplicates aside)."""
    latest = (
        select(landing_log.c.source, landing_log.c.partner, landing_log.c.file_name,
               func.max(landing_log.c.id).label("id"))
        .where(landing_log.c.file_date <= reference_date, landing_log.c.status != LandingStatus.DUPLICATE)
        .group_by(landing_log.c.source, landing_log.c.partner, landing_log.c.file_name).subquery()
    )
    with engine.connect() as conn:
        return conn.execute(
            select(landing_log).join(latest, latest.c.id == landing_log.c.id)
            .order_by(landing_log.c.source, landing_log.c.partner, landing_log.c.file_date, landing_log.c.file_name)
        ).all()


def current_files(engine: Engine, reference_date: date) -> list[dict]:
    """The feed files that make up R, with their counts, quarantine reasons and expectation results."""
    files = []
    for r in _current_landings(engine, reference_date):
        files.append({
            "name": r.file_name, "source": r.source, "dataset": r.dataset, "status": r.status,
            **({"partner": r.partner} if r.partner != r.source else {}),  # a source with several partners
            "rows_read": r.rows_read or 0, "rows_staged": r.rows_staged or 0,
            "rows_quarantined": r.rows_quarantined or 0,
            "landed_by_run": r.landed_by_run.isoformat() if r.landed_by_run else None,
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


# -- linkage equity (issue 15 item 4) ---------------------------------------------------------------

# Age at R in whole years, from the record's date of birth; bands chosen for the groups UK linkage is
# known to under-link (young adults) and the programme's own age lines (16, 25).
AGE_BANDS: tuple[tuple[int, str], ...] = ((16, "0-15"), (25, "16-24"), (45, "25-44"), (65, "45-64"))
OLDEST_BAND = "65+"
UNKNOWN = "not known"
SEX_LABELS = {"M": "male", "F": "female"}
EQUITY_DIMENSIONS = ("age_band", "sex", "dataset")
_CUBE_INDEX = {"dataset": 0, "age_band": 1, "sex": 2}  # the key of _equity_counts


def _equity_sql(dataset: str) -> str:
    """One dataset's ``links`` rows for R joined to its current rows, counted by age band and sex: the
    dates of birth and sexes stay in the database, only the group labels and counts come out.

    It joins ``cur_<dataset>`` (tfp.current.create_current_tables, indexed on record_id): joined to the
    current rows' query inline, SQLite scanned them once per link (a 50,000-family borough's attendance
    links would take hours)."""
    age = "(CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(c.date_of_birth)) / 10000"
    bands = " ".join(f"WHEN {age} < {upper} THEN '{label}'" for upper, label in AGE_BANDS)
    sexes = " ".join(f"WHEN '{code}' THEN '{label}'" for code, label in SEX_LABELS.items())
    return (
        f"SELECT CASE WHEN c.date_of_birth IS NULL THEN '{UNKNOWN}' {bands} ELSE '{OLDEST_BAND}' END AS age_band,"
        f" CASE c.sex {sexes} ELSE '{UNKNOWN}' END AS sex,"
        " COUNT(*) AS records,"
        " SUM(CASE WHEN l.person_ref IS NOT NULL THEN 1 ELSE 0 END) AS linked,"
        f" SUM(CASE WHEN l.method = '{LinkMethod.QUEUED}' THEN 1 ELSE 0 END) AS queued"
        f" FROM links l LEFT JOIN cur_{dataset} c ON c.record_id = l.record_id"
        " WHERE l.reference_date = :reference_date AND l.dataset = :dataset"
        " GROUP BY 1, 2"
    )


def _equity_counts(engine: Engine, reference_date: date) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """(records, linked, queued for review) by (dataset, age band, sex) over R's ``links`` rows: the same
    rows, so the same denominators, as the report's linkage rates by dataset."""
    from sqlalchemy import text

    from tfp.current import create_current_tables
    from tfp.feeds import PARTNER_DATASETS

    params = {"reference_date": reference_date, "reference_yyyymmdd": int(reference_date.strftime("%Y%m%d"))}
    out: dict[tuple[str, str, str], tuple[int, int, int]] = {}
    with engine.connect() as conn:
        for dataset in PARTNER_DATASETS:
            create_current_tables(conn, reference_date, [dataset])
            for band, sex, records, linked, queued in conn.execute(text(_equity_sql(dataset)),
                                                                   {**params, "dataset": dataset}).all():
                out[(dataset, band, sex)] = (int(records), int(linked or 0), int(queued or 0))
    return out


def _band_order(label: str) -> int:
    labels = [label for _, label in AGE_BANDS] + [OLDEST_BAND, UNKNOWN]
    return labels.index(label) if label in labels else len(labels)


def linkage_equity(engine: Engine, config: Config, reference_date: date) -> dict:
    """The link rate and the review queue rate by age band, sex and dataset, with the disclosure rules
    applied to the counts shown.

    A group with fewer records than ``suppress_below`` shows ``[c]`` and no rate, and is never flagged
    (a flag would say something of a group too small to show). Rates come from the exact counts; a shown
    group is flagged when its link rate is below the whole's by more than ``linkage.equity_margin``. The
    queue rate (records left for a reviewer, tfp.review) is shown beside it, its count disclosed by the
    same rules; a group whose records wait for review more often than the whole is one whose link rate
    the review may yet raise."""
    from tfp.anonymise import disclose

    d, margin = config.disclosure, config.linkage.equity_margin
    cube = _equity_counts(engine, reference_date)
    records = sum(n for n, _, _ in cube.values())
    linked = sum(k for _, k, _ in cube.values())
    queued = sum(q for _, _, q in cube.values())
    whole = linked / records if records else None
    groups = []
    for dimension in EQUITY_DIMENSIONS:
        by: dict[str, list[int]] = {}
        for key, (n, k, q) in cube.items():
            counts = by.setdefault(key[_CUBE_INDEX[dimension]], [0, 0, 0])
            counts[0] += n
            counts[1] += k
            counts[2] += q
        order = (lambda g: (_band_order(g), g)) if dimension == "age_band" else (lambda g: (0, g))
        for group in sorted(by, key=order):
            n, k, q = by[group]
            shown = n >= d.suppress_below
            rate = k / n if shown else None
            groups.append({
                "dimension": dimension, "group": group,
                "records": disclose(n, d.suppress_below, d.round_to),
                "linked": disclose(k, d.suppress_below, d.round_to),
                "queued": disclose(q, d.suppress_below, d.round_to),
                "link_rate": None if rate is None else round(rate, 3),
                "queue_rate": round(q / n, 3) if shown else None,
                "flagged": bool(rate is not None and whole is not None and whole - rate > margin),
            })
    return {
        "margin": margin,
        "records": disclose(records, d.suppress_below, d.round_to),
        "linked": disclose(linked, d.suppress_below, d.round_to),
        "queued": disclose(queued, d.suppress_below, d.round_to),
        "link_rate": None if whole is None else round(whole, 3),
        "queue_rate": round(queued / records, 3) if records else None,
        "groups": groups,
        "flags": sum(g["flagged"] for g in groups),
    }


VERIFICATION = ("before sending, the manifest's Ed25519 signature and every file's SHA-256 against it; at the "
                "destination, each upload's size before its rename into place, and the SHA-256 of a file left "
                "there from an earlier run before it is skipped")


def delivered_files(engine: Engine, reference_date: date, names: tuple[str, ...] | list[str]) -> list[dict]:
    """The delivery log's latest entry for each of ``names`` delivered for R: bytes, rows, when, the
    SHA-256 recorded at upload (file names, sizes and checksums only)."""
    if not names:
        return []
    with engine.connect() as conn:
        rows = conn.execute(select(delivery_log).where(delivery_log.c.reference_date == reference_date,
                                                       delivery_log.c.file_name.in_(list(names)))
                            .order_by(delivery_log.c.id)).all()
    latest = {r.file_name: r for r in rows}
    return [{"name": n, "bytes": int(latest[n].bytes), "rows": latest[n].rows,
             "sha256": latest[n].sha256, "delivered_at": latest[n].delivered_at.isoformat()}
            for n in names if n in latest]


def _family_counts(engine: Engine, reference_date: date, scope: str) -> dict[str, int]:
    with engine.connect() as conn:
        assessed, eligible = conn.execute(
            select(func.count(), func.coalesce(func.sum(family_flags.c.eligible), 0))
            .where(family_flags.c.reference_date == reference_date, family_flags.c.scope == scope)
        ).one()
    return {"families_assessed": int(assessed), "families_eligible": int(eligible)}


def _review_section(engine: Engine, reference_date: date, link: StageResult | None) -> dict[str, int]:
    """The review queue's counts for R (tfp.review), counts only: ``queued`` records left for review,
    ``decided`` records whose outcome a reviewer's decision settled (from the link stage's result; 0 when
    the report has none), ``pending`` review pairs of R with no decision yet, ``pairs`` review pairs of R,
    ``reviewed_links`` links made by a decision."""
    from tfp.review import review_counts

    c = review_counts(engine, reference_date)
    return {"queued": c["queued"], "decided": link.count("review_decided") if link is not None else 0,
            "pending": c["pairs_pending"], "pairs": c["pairs_queued"], "reviewed_links": c["reviewed_links"]}


def indicator_counts(criteria: StageResult | None, suppress_below: int, round_to: int) -> list[dict[str, str]]:
    """Families per indicator (the rules under each flag, tfp.criteria.INDICATORS) among the families
    assessed counting kept people only, and of them the eligible, as the summary's disclosure rules
    publish a count (tfp.anonymise.disclose: 1 to suppress_below - 1 is [c], others rounded). Empty when
    the criteria stage's result is not at hand (a failed night's report)."""
    from tfp.anonymise import disclose
    from tfp.context import CriteriaResult
    from tfp.criteria import INDICATORS

    if not isinstance(criteria, CriteriaResult) or not criteria.indicators:
        return []
    out = []
    for flag, names in INDICATORS.items():
        for name in names:
            found = criteria.indicators.get(f"{flag}.{name}", {})
            out.append({"flag": flag, "indicator": name,
                        "families": disclose(int(found.get("families", 0)), suppress_below, round_to),
                        "eligible": disclose(int(found.get("eligible", 0)), suppress_below, round_to)})
    return out


def build_run_report(engine: Engine, config: Config, reference_date: date,
                     results: Mapping[str, StageResult]) -> dict:
    """The report's content: the files that make up R and the warehouse's counts for R, with what the
    night's stages reported (``results``, by stage name; a stage missing from it counts nothing)."""
    from tfp.anonymise import disclose
    from tfp.context import DeliverResult, PackageResult, StageResult

    files = current_files(engine, reference_date)
    linkage = _link_counts(engine, reference_date)
    equity = linkage_equity(engine, config, reference_date)
    d = config.disclosure
    review = _review_section(engine, reference_date, results.get("link"))
    package = results.get("package")
    if not isinstance(package, PackageResult):
        package = PackageResult(stage="package")
    consent = results.get("consent") or StageResult(stage="consent")
    deliver = results.get("deliver")
    if not isinstance(deliver, DeliverResult):
        deliver = DeliverResult(stage="deliver")
    published = {m: dict(by) for m, by in package.published_summary.items()}
    # as the summary published them (secondary suppression may hide a cell that disclose() alone would show)
    exact = _family_counts(engine, reference_date, FlagScope.KEPT)
    exact_all = _family_counts(engine, reference_date, FlagScope.ALL)["families_assessed"]
    delivered = {k: published.get(k, {}).get("all") or disclose(v, d.suppress_below, d.round_to)
                 for k, v in exact.items()}
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
        "linkage_equity": equity,
        "review": review,
        "review_queued": review["queued"],
        "review_decided": review["decided"],
        "review_pending": review["pending"],
        "linkage_equity_flags": equity["flags"],
        **delivered,
        "families_assessed_all_persons": disclose(exact_all, d.suppress_below, d.round_to),
        # the attached_month cross-check of the optional support_services source (tfp.support), only when the
        # config names it, so a config without it reports exactly as before
        **({"support_services": _support_section(engine, config, reference_date)}
           if config.source("support_services") is not None else {}),
        # the exact counts behind the published ones above, for the engineer's comparison (never delivered)
        "families_exact": {**exact, "families_assessed_all_persons": exact_all},
        "eligibility": published,
        # which rules under each flag the assessed families meet (kept people only), disclosed
        "indicators": indicator_counts(results.get("criteria"), d.suppress_below, d.round_to),
        "disclosure": {"suppress_below": d.suppress_below, "round_to": d.round_to},
        # the settings below tfp's floor while disclosure.allow_weak_disclosure is on; [] normally
        "weak_disclosure": list(config.weak_disclosure),
        "persons_submitted": package.count("persons_submitted"),
        "persons_excluded_by_consent": consent.count("excluded"),
        "withdrawals_listed": package.count("withdrawals"),
        "delivery": {**{k: int(v) for k, v in deliver.counts.items()}, **({"dry_run": 1} if deliver.dry_run else {}),
                     "files": delivered_files(engine, reference_date, deliver.delivered),
                     **({"checked": VERIFICATION} if deliver.delivered else {})},
        # every dataset's newest file and max age, and the night's flags (names, dates, counts: tfp.freshness);
        # all sources, as the night uses what a source left out of a manual run staged before
        "freshness": {"on_overdue": config.freshness.on_overdue,
                      **assess(engine, config.freshness, reference_date,
                                 required_datasets(config.configured_sources)).to_json()},
    }


def _support_section(engine: Engine, config: Config, reference_date: date) -> dict[str, str]:
    """tfp.support's cross-check counts for R, disclosed as every other count here (no exact counts)."""
    from tfp.support import crosscheck, disclosed

    d = config.disclosure
    return disclosed(crosscheck(engine, reference_date, config.criteria.lookback_months), d.suppress_below,
                     d.round_to)


def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.1f}%"


def _equity_html(equity: dict, rule: dict) -> str:
    """The equity section: group labels, disclosed counts and rates only."""
    e = html.escape
    rows = "".join(
        f"<tr{' class=flagged' if g['flagged'] else ''}><td>{e(g['dimension'].replace('_', ' '))}</td>"
        f"<td>{e(g['group'])}</td><td>{e(g['records'])}</td><td>{e(g['linked'])}</td>"
        f"<td>{_rate(g['link_rate'])}</td><td>{e(g['queued'])}</td><td>{_rate(g['queue_rate'])}</td>"
        f"<td>{'lags' if g['flagged'] else ''}</td></tr>"
        for g in equity["groups"]
    )
    return (
        "<h2>Linkage equity</h2>"
        f"<p>The link rate of all partner records is {_rate(equity['link_rate'])} "
        f"({e(equity['linked'])} of {e(equity['records'])}). A group whose rate is more than "
        f"{100 * equity['margin']:g} percentage points below it is flagged "
        f"(linkage.equity_margin): <strong>{equity['flags']} flagged</strong>. Counts follow the disclosure "
        f"rules ([c] for 1 to {rule['suppress_below'] - 1}, others rounded to the nearest {rule['round_to']}); "
        "a group shown [c] has no rate and is never flagged. Rates are computed from the exact counts. "
        f"The queue rate (records left for a reviewer) of all partner records is {_rate(equity['queue_rate'])} "
        f"({e(equity['queued'])}).</p>"
        "<table><tr><th>by</th><th>group</th><th>records</th><th>linked</th><th>link rate</th>"
        f"<th>queued</th><th>queue rate</th><th>flag</th></tr>{rows}</table>"
    )


# The counts the header compares with the previous night (each a plain count, or a published mark).
COMPARED = ("rows_read", "rows_staged", "rows_quarantined", "records_linked", "records_unlinked",
            "families_assessed", "families_eligible", "persons_submitted", "persons_excluded_by_consent")
# Counts of a night's package and delivery, which a failed night never reaches (its report shows "—").
NOT_REACHED = ("persons_submitted", "persons_excluded_by_consent", "withdrawals_listed")
EXACT_VS_PUBLISHED = ("families_assessed", "families_eligible", "families_assessed_all_persons")


def previous_report(reports_dir: Path, reference_date: date) -> dict | None:
    """The run report of the latest night before ``reference_date`` that has one (a failed night too)."""
    import re

    if not reports_dir.is_dir() or reports_dir.is_symlink():
        return None
    days = sorted((p.name for p in reports_dir.iterdir()
                   if re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.name) and p.name < reference_date.isoformat()),
                  reverse=True)
    for day in days:
        path = reports_dir / day / "run_report.json"
        if path.is_file() and not path.is_symlink():
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(report, dict):
                return report
    return None


def compare(report: Mapping, previous: Mapping | None) -> dict | None:
    """This night's counts beside the previous night's: before, now and the change where both are numbers."""
    if not previous:
        return None
    changes = {}
    for key in COMPARED:
        now, before = report.get(key), previous.get(key)
        if now is None and before is None:
            continue
        change = now - before if isinstance(now, int) and isinstance(before, int) else None
        changes[key] = {"before": before, "now": now, "change": change}
    return {"reference_date": previous.get("reference_date"), "status": previous.get("status", "succeeded"),
            "counts": changes}


def why_published_differs(exact: int, published: str, suppress_below: int, round_to: int) -> str:
    """Why a published count is not the exact one beside it (the summary's disclosure rules, section 7)."""
    from tfp.anonymise import disclose

    if published == str(exact):
        return "the same: 0, or already a multiple of the rounding base"
    if published == "[c]" and 0 < exact < suppress_below:
        return (f"suppressed: {exact} is from 1 to {suppress_below - 1}, which is published as [c] "
                "so that no small group can be picked out")
    if published == "[c]":
        return ("hidden by secondary suppression: published, it would let a reader work out a suppressed cell "
                "from the other cells and totals")
    if published == disclose(exact, suppress_below, round_to):
        return f"rounded to the nearest {round_to} ({exact} is published as {published})"
    return "as the summary published it (see the eligibility table)"


def run_header(config: Config, reference_date: date, run: Mapping[str, str] | None, status: str,
               clock=None) -> dict:
    """The report's opening facts: status, the run's id, start, finish and duration."""
    from datetime import UTC, datetime

    run = dict(run or {})
    finished = (clock or (lambda: datetime.now(UTC)))()
    started = None
    if run.get("started_at"):
        try:
            started = datetime.fromisoformat(run["started_at"])
        except ValueError:
            started = None
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return {
        "status": status,
        "run_id": run.get("run_id"),
        "started_at": started.isoformat() if started else None,
        "finished_at": finished.isoformat(),
        "duration_seconds": max(0, round((finished - started).total_seconds())) if started else None,
    }


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "not known"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s")


def _change(change: int | None) -> str:
    if change is None:
        return ""
    return "no change" if change == 0 else f"{change:+d}"


def _header_html(report: Mapping) -> str:
    """The report's opening: the night's status, start, duration, what failed, and the previous night."""
    e = html.escape
    status = str(report.get("status") or "succeeded")
    failure = report.get("failure") or {}
    lines = [
        f'<p id=night-status class="status {e(status)}"><strong>Status: {e(status)}</strong>'
        + (f" at <code>{e(str(failure.get('stage')))}</code>" if failure.get("stage") else "") + "</p>",
        "<table id=night-facts>"
        f"<tr><th>started</th><td>{e(str(report.get('started_at') or 'not known'))}</td></tr>"
        f"<tr><th>duration</th><td>{e(_duration(report.get('duration_seconds')))}</td></tr>"
        f"<tr><th>run</th><td>{e(str(report.get('run_id') or '—'))}</td></tr></table>",
    ]
    if failure:
        more = [f for f in report.get("failures") or [] if f.get("stage") != failure.get("stage")]
        lines.append(
            "<div id=night-failure role=alert style=\"border:3px solid #b00;background:#fee;padding:8px 12px\">"
            f"<p><strong>{e(str(failure.get('stage')))} failed:</strong> {e(str(failure.get('message')))}</p>"
            + (f"<p>What to do: {e(str(failure['hint']))}</p>" if failure.get("hint") else "")
            + (f"<p>Also failed: {e(', '.join(str(f.get('stage')) for f in more))}</p>" if more else "")
            + "<p>Nothing is delivered from a failed night. The counts below are what the night knew when it "
            "stopped: stages after the failure did not run.</p></div>")
    prev = report.get("previous")
    if prev:
        rows = "".join(
            f"<tr><th>{e(k)}</th><td>{e(str(c['now']))}</td><td>{e(str(c['before']))}</td>"
            f"<td>{e(_change(c['change']))}</td></tr>" for k, c in prev["counts"].items())
        lines.append(
            f"<h2 id=previous-night>Compared with the previous night ({e(str(prev['reference_date']))}, "
            f"{e(str(prev['status']))})</h2>"
            f"<table><tr><th>count</th><th>this night</th><th>previous night</th><th>change</th></tr>{rows}</table>")
    else:
        lines.append("<p id=previous-night>No earlier night's report to compare with.</p>")
    return "".join(lines)


def _exact_html(report: Mapping) -> str:
    """Exact counts beside the published ones, each with the reason they differ."""
    exact = report.get("families_exact")
    rule = report.get("disclosure")
    if not exact or not rule:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><th>{e(k)}</th><td>{exact[k]}</td><td>{e(str(report.get(k)))}</td>"
        f"<td>{e(why_published_differs(exact[k], str(report.get(k)), rule['suppress_below'], rule['round_to']))}"
        "</td></tr>"
        for k in EXACT_VS_PUBLISHED if k in exact and k in report)
    return (
        "<h2 id=published-vs-exact>Published and exact counts</h2>"
        "<p>What the recipient receives is the <em>published</em> count: the summary's disclosure rules round "
        f"every count to the nearest {rule['round_to']}, show a count from 1 to {rule['suppress_below'] - 1} as "
        "[c], and hide a cell that could otherwise be worked out from the others (secondary suppression). "
        "The <em>exact</em> count is the warehouse's, shown here for checking only; it is never delivered.</p>"
        "<table><tr><th>count</th><th>exact</th><th>published</th><th>why they differ</th></tr>"
        f"{rows}</table>")


def _html(report: dict) -> str:
    e = html.escape
    if "disclosure" not in report:  # a failed night whose warehouse could not be read: the header only
        return (
            "<!doctype html><html lang=en><meta charset=utf-8>"
            f"<title>tfp run report {e(report['reference_date'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}</style>"
            f"<h1>tfp nightly run — {e(report['reference_date'])} ({e(str(report.get('la_code') or ''))})</h1>"
            f"{_header_html(report)}<p>No counts: {e(str(report.get('counts_unavailable', '')))}</p></html>\n")
    rows = "".join(
        f"<tr><td>{e(f['source'])}</td><td>{e(f['name'])}</td><td>{e(f['status'])}</td>"
        f"<td>{f['rows_read']}</td><td>{f['rows_staged']}</td><td>{f['rows_quarantined']}</td>"
        f"<td>{e(', '.join(f'{k}: {v}' for k, v in f['quarantine_reasons'].items()))}"
        f"{e(' ' + f['rejection']) if f.get('rejection') else ''}</td></tr>"
        for f in report["files"]
    )
    quality = "".join(
        f"<h3>{e(f['source'])} / {e(f['name'])}"
        + (f' <small>(<a href="{e(f["data_docs"])}">Data Docs</a>)</small>' if f.get("data_docs") else "")
        + "</h3><table><tr><th>rule</th><th>expectation</th><th>result</th>"
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
        f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in report.items()
        if isinstance(v, int) and not isinstance(v, bool) and k != "duration_seconds"
    )
    rule = report["disclosure"]
    statuses = ("intervention", "comparison", "all")
    published = "".join(
        f"<tr><th>{e(measure)}</th>" + "".join(f"<td>{e(str(by.get(s, '')))}</td>" for s in statuses) + "</tr>"
        for measure, by in report["eligibility"].items()
    )
    linkage = "".join(
        f"<tr><td>{e(dataset)}</td><td>{c['linked']}</td><td>{c['unlinked']}</td>"
        f"<td>{100 * c['linked'] / max(c['linked'] + c['unlinked'], 1):.1f}%</td></tr>"
        for dataset, c in report["linkage"].items()
    )
    equity = _equity_html(report["linkage_equity"], rule)
    families = "".join(f"<tr><th>{k}</th><td>{e(str(report[k]))}</td></tr>"
                       for k in ("families_assessed", "families_eligible", "families_assessed_all_persons"))
    freshness = _freshness_html(report.get("freshness"))
    weak = report.get("weak_disclosure") or []
    floor = ", ".join(f"{k} {v}" for k, v in WEAK_DISCLOSURE_FLOOR.items())
    banner = (
        '<div id=weak-disclosure role=alert style="border:3px solid #b00;background:#fee;padding:8px 12px">'
        f"<strong>Warning: weak disclosure control.</strong> These settings are below tfp's floor ({e(floor)}): "
        f"<strong>{e(', '.join(weak))}</strong>. The counts this run published are less protected than that "
        "floor; over SFTP only disclosure.allow_weak_disclosure: true lets such a config run.</div>"
    ) if weak else ""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>tfp run report {e(report['reference_date'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}tr.flagged{background:#fdd}"
        ".status.succeeded{color:#060}.status.failed{color:#b00}"
        f"</style><h1>tfp nightly run — {e(report['reference_date'])} ({e(report['la_code'])})</h1>{banner}"
        f"{_header_html(report)}"
        f"<h2>Totals</h2><table>{totals}</table>"
        "<h2>Linkage</h2><table><tr><th>dataset</th><th>records linked</th><th>not linked</th>"
        f"<th>linkage rate</th></tr>{linkage}</table>"
        f"{_review_html(report['review'])}"
        f"{equity}"
        "<h2>Eligibility (as published)</h2>"
        f"<p>The summary's disclosure rules apply: a count from 1 to {rule['suppress_below'] - 1} is shown "
        f"[c], others are rounded to the nearest {rule['round_to']}, 0 stays 0.</p>"
        f"<table>{families}</table>{_exact_html(report)}"
        "<table><tr><th>measure</th>" + "".join(f"<th>{s}</th>" for s in statuses) + f"</tr>{published}</table>"
        f"{_indicators_html(report.get('indicators') or [], rule)}"
        f"{_support_html(report.get('support_services'))}"
        f"{freshness}"
        "<h2>Files</h2><table><tr><th>source</th><th>file</th><th>status</th><th>read</th><th>staged</th>"
        f"<th>quarantined</th><th>quarantine reasons</th></tr>{rows}</table>"
        "<h2>Data quality (Great Expectations, counts only)</h2>"
        + (f'<p><a href="{e(report["data_docs"])}">Great Expectations Data Docs</a> for this night '
           "(GX's own pages, built from the same results without values)</p>" if report.get("data_docs") else "")
        + f"{quality}</html>\n"
    )


def _support_html(support: dict | None) -> str:
    """The support_services cross-check (only when the config names the source): disclosed counts."""
    if support is None:
        return ""
    e = html.escape
    rows = "".join(f"<tr><th>{e(k.replace('_', ' '))}</th><td>{e(str(v))}</td></tr>" for k, v in support.items())
    return ("<h2>Support services: attached_month cross-check</h2>"
            "<p>Families with a kept member linked to a support_services attendance active in the look-back "
            "window. Counts only, disclosed as above; nothing here changes what is delivered.</p>"
            f"<table>{rows}</table>")


def _indicators_html(indicators: list[dict[str, str]], rule: dict) -> str:
    """The "Indicators" section: families per rule under each flag, disclosed counts only."""
    e = html.escape
    if not indicators:
        return ("<h2 id=indicators>Indicators</h2><p>No indicator counts: the criteria stage's result is not "
                "part of this report.</p>")
    rows = "".join(
        f"<tr><td>{e(i['flag'])}</td><td>{e(i['indicator'])}</td><td>{e(i['families'])}</td>"
        f"<td>{e(i['eligible'])}</td></tr>" for i in indicators)
    return (
        "<h2 id=indicators>Indicators</h2>"
        "<p>Families assessed tonight (counting kept people only) that meet each rule under a flag, and how "
        "many of them are eligible: which indicators drive eligibility. A family can meet several. Counts "
        f"follow the disclosure rules ([c] for 1 to {rule['suppress_below'] - 1}, others rounded to the "
        f"nearest {rule['round_to']}).</p>"
        "<table><tr><th>flag</th><th>indicator</th><th>families</th><th>of them eligible</th></tr>"
        f"{rows}</table>"
    )


def _review_html(review: dict) -> str:
    """The "Linkage review queue" section: counts only."""
    return (
        "<h2 id=review-queue>Linkage review queue</h2>"
        "<table><tr><th>records queued for review tonight (left unlinked)</th>"
        f"<td>{review['queued']}</td></tr>"
        f"<tr><th>records settled by a reviewer's decision</th><td>{review['decided']}</td></tr>"
        f"<tr><th>review pairs of tonight awaiting a decision</th><td>{review['pending']}</td></tr>"
        f"<tr><th>links made by a reviewer's decision</th><td>{review['reviewed_links']}</td></tr></table>"
        "<p>tfp review export --config FILE --date this night writes the pending pairs, encrypted, for the "
        "reviewer; tfp review import records the decisions.</p>"
    )


def _freshness_html(fresh: dict | None) -> str:
    """The "Feed freshness" section: each dataset's newest file against its max age, and the volume flags."""
    if not fresh:
        return ""
    e = html.escape
    late = {o["dataset"]: o for o in fresh["overdue"]}
    rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(d['newest'] or 'no file')}</td><td>{d['max_age_days']}</td>"
        f"<td>{'<strong>OVERDUE</strong> (' + str(late[name]['age_days']) + ' days old)' if name in late else 'ok'}"
        "</td></tr>"
        for name, d in fresh["datasets"].items())
    volume = "".join(
        f"<tr><td>{e(v['dataset'])}</td><td>{e(v['file_date'])}</td><td>{v['rows']}</td><td>{v['median']:g}</td>"
        f"<td>{v['earlier_files']}</td><td>{e(v['change'])}</td></tr>" for v in fresh["volume"])
    flagged = len(fresh["overdue"]) + len(fresh["volume"])
    summary = (f"<p id=freshness-flags role=alert><strong>{len(fresh['overdue'])} feed(s) overdue, "
               f"{len(fresh['volume'])} file(s) with unusual row counts</strong> "
               f"(freshness.on_overdue: {e(fresh.get('on_overdue', 'warn'))})</p>" if flagged
               else "<p>Every feed is within its max age; no file's row count is out of line.</p>")
    return (
        "<h2 id=feed-freshness>Feed freshness</h2>" + summary
        + "<table><tr><th>dataset</th><th>newest file</th><th>max age (days)</th><th>status</th></tr>"
        + f"{rows}</table>"
        + ("<h3>Row counts out of line</h3><table><tr><th>dataset</th><th>file date</th><th>rows</th>"
           f"<th>median of earlier files</th><th>earlier files</th><th>change</th></tr>{volume}</table>"
           if volume else "")
    )


def write_data_docs(engine: Engine, reference_date: date, site: Path) -> dict[str, str]:
    """Great Expectations Data Docs of the files that make up R, in ``site``; returns each file's
    validation page (relative to the report folder) by file name, and ``""`` for the index."""
    from tfp.datadocs import build_data_docs

    landings = [r for r in _current_landings(engine, reference_date) if r.gx_result]
    if not landings:
        return {}
    outcomes = {r.file_name: {"status": r.status, "rows_staged": r.rows_staged, "rows_quarantined": r.rows_quarantined}
                for r in landings}
    pages = build_data_docs(site, [(r.file_name, json.loads(r.gx_result)) for r in landings], outcomes)
    return {name: f"{site.name}/{page}" for name, page in pages.items()}


def _finish_report(report: dict, config: Config, engine: Engine | None, reference_date: date) -> Path:
    """Add the previous night's comparison and the Data Docs, then write the JSON and the page."""
    folder = config.reports_dir / reference_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    report["previous"] = compare(report, previous_report(config.reports_dir, reference_date))
    if engine is not None:
        docs = write_data_docs(engine, reference_date, folder / "data_docs")
        report["data_docs"] = docs.get("")
        for f in report.get("files", []):
            if f["name"] in docs:
                f["data_docs"] = docs[f["name"]]
    path = folder / "run_report.json"
    # counts only, no personal value: the mode is the umask's, as for any report a webserver may read
    atomic_write(path, json.dumps(report, indent=2, sort_keys=True) + "\n", mode=None)
    atomic_write(folder / "run_report.html", _html(report), mode=None)
    return path


def write_run_report(engine: Engine, config: Config, reference_date: date,
                     results: Mapping[str, StageResult], run: Mapping[str, str] | None = None) -> Path:
    """Write run_report.json, run_report.html and the Data Docs under work_dir/reports/<date>/;
    returns the JSON path. ``run`` is the orchestrator's run (run_id, started_at) for the header."""
    report = {**run_header(config, reference_date, run, "succeeded"),
              **build_run_report(engine, config, reference_date, results)}
    return _finish_report(report, config, engine, reference_date)


def failure_of(stage: str, error: BaseException | None) -> dict[str, str]:
    """What a report says of a failed stage: a tfp error's own message and hint (safe to show, no values),
    or only the class of any other exception (its message may quote a value)."""
    from tfp.errors import TfpError

    if isinstance(error, TfpError):
        return {"stage": stage, "message": error.message, "hint": error.hint}
    name = type(error).__name__ if error is not None else "an unknown error"
    return {"stage": stage, "message": f"{name} (details in the task log)",
            "hint": "see the task log for the step that failed and the README's operations section"}


def write_failed_report(config: Config, reference_date: date, stage: str, error: BaseException | None,
                        run: Mapping[str, str] | None = None, engine: Engine | None = None) -> Path:
    """The run report of a night that failed at ``stage``: status failed, the failure (safe message only),
    and the counts the warehouse holds for R so far. Several tasks of one run may fail: each adds itself
    to ``failures`` of the same run's report. A warehouse that cannot be read leaves a report without counts."""
    import logging

    log = logging.getLogger(__name__)
    failure = failure_of(stage, error)
    report: dict = {"reference_date": reference_date.isoformat(), "la_code": config.local_authority.code}
    try:
        if engine is None:
            from tfp.config import warehouse_url
            from tfp.warehouse import connect

            engine = connect(warehouse_url(config))
        report.update(build_run_report(engine, config, reference_date, {}))
    except Exception as e:  # noqa: BLE001 - the night has failed already: say what is known, name the class only
        log.warning("run report of the failed night has no counts: %s", type(e).__name__)
        report["counts_unavailable"] = f"the warehouse could not be read ({type(e).__name__})"
        engine = None
    for key in NOT_REACHED:  # what package and deliver would have said: a failed night delivers nothing
        if key in report:
            report[key] = None
    if "delivery" in report:
        report["delivery"] = {}
    report.update(run_header(config, reference_date, run, "failed"))
    failures = [failure]
    existing = config.reports_dir / reference_date.isoformat() / "run_report.json"
    try:
        earlier = json.loads(existing.read_text(encoding="utf-8")) if existing.is_file() else {}
    except (OSError, ValueError):
        earlier = {}
    if earlier.get("status") == "failed" and earlier.get("run_id") and earlier.get("run_id") == report["run_id"]:
        failures = [f for f in earlier.get("failures", []) if f.get("stage") != stage] + failures
    report["failure"] = failures[0]
    report["failures"] = failures
    try:
        return _finish_report(report, config, engine, reference_date)
    except Exception as e:  # noqa: BLE001 - Data Docs are a convenience: the report itself must be written
        log.warning("data docs of the failed night not written: %s", type(e).__name__)
        return _finish_report(report, config, None, reference_date)


def run(ctx: RunContext) -> PathResult:
    """The report task: write the night's report from the warehouse and the other stages' results
    (the context's ``upstream``)."""
    from tfp.context import PathResult

    return PathResult(stage="report", path=write_run_report(ctx.warehouse, ctx.config, ctx.reference_date,
                                                            ctx.upstream, ctx.run))

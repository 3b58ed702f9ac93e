"""Feedback to each partner (issue 17 item 4; contract section 10): which of its files were landed,
superseded or rejected (by rule), which of its ``record_id``s were quarantined and under which rules, and
its link rate, so that the same errors do not come back every month.

After ``validate`` (the night's ``feedback`` task runs once ``link`` has the link rate), each partner with an
``outbound`` path receives, over its own transport, ``tfp_feedback_<partner>_<YYYYMMDD>.csv`` (header
``file,record_id,status,rules``) and ``tfp_feedback_<partner>_<YYYYMMDD>.txt``, a short summary. A landing is
reported once (``feedback_log``): a re-run of the night sends nothing new, a night with no new landing of
a partner sends that partner nothing, and a dry run sends nothing at all. Nothing personal beyond the
partner's own record_ids, and nothing of another partner.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, and_, func, insert, select

from tfp.config import Config, DirectorySource, Partner
from tfp.context import utc_now
from tfp.current import PARTNER_SEPARATOR
from tfp.feeds import DATASETS
from tfp.fsmodes import atomic_write
from tfp.statuses import LandingStatus
from tfp.warehouse import feedback_log, landing_log, links, quarantine

if TYPE_CHECKING:
    from tfp.context import RunContext, StageResult

log = logging.getLogger(__name__)
HEADER = ("file", "record_id", "status", "rules")
# a landing's status as the partner reads it; a duplicate (bytes sent before) is not a new file
REPORTED = {LandingStatus.STAGED: "landed", LandingStatus.VALIDATED: "landed", LandingStatus.LANDED: "landed",
            LandingStatus.SUPERSEDED: "superseded", LandingStatus.REJECTED: "rejected"}


def feedback_names(partner: str, reference_date: date) -> tuple[str, str]:
    stem = f"tfp_feedback_{partner}_{reference_date:%Y%m%d}"
    return f"{stem}.csv", f"{stem}.txt"


@dataclass
class Feedback:
    """One partner's feedback of one night: the CSV rows, the summary's counts, the landings it reports."""

    partner: Partner
    reference_date: date
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    landing_ids: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    link_rate: float | None = None

    def csv_bytes(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(self.rows)
        return out.getvalue().encode("utf-8")

    def summary(self) -> str:
        c = self.counts
        rate = "not known yet (no linking ran for this date)" if self.link_rate is None else f"{self.link_rate:.1%}"
        return (f"tfp feedback for partner {self.partner.id} ({self.partner.source}), night {self.reference_date}\n"
                f"files landed: {c.get('landed', 0)}; superseded: {c.get('superseded', 0)}; "
                f"rejected: {c.get('rejected', 0)}\n"
                f"rows read: {c.get('rows_read', 0)}; rows quarantined: {c.get('quarantined', 0)}\n"
                f"link rate (your current records linked to a programme person): {rate}\n"
                f"The CSV lists each file and each quarantined record_id with the rules it broke "
                f"(header {','.join(HEADER)}); the rules are described in the data contract.\n")


def _record_id(row_json: str) -> str:
    try:
        value = json.loads(row_json).get("record_id")
    except (ValueError, AttributeError):
        return ""
    return "" if value is None else str(value)


def link_rate(engine: Engine, partner: Partner, reference_date: date) -> float | None:
    """The share of the partner's current records that night R linked to a roster person; None before link."""
    datasets = [d.name for d in DATASETS.values() if d.source == partner.source]
    where = [links.c.reference_date == reference_date, links.c.dataset.in_(datasets)]
    if not partner.short_form:
        where.append(links.c.record_id.startswith(f"{partner.id}{PARTNER_SEPARATOR}", autoescape=True))
    with engine.connect() as conn:
        total, linked = conn.execute(select(func.count(), func.count(links.c.person_ref)).where(*where)).one()
    return None if not total else linked / total


def build(engine: Engine, partner: Partner, reference_date: date) -> Feedback:
    """The partner's feedback for R: every landing of the partner dated on or before R not yet reported, and,
    before each, a ``superseded`` row for an earlier landing of its file name that it replaced."""
    feedback = Feedback(partner, reference_date)
    with engine.connect() as conn:
        todo = conn.execute(
            select(landing_log).where(
                landing_log.c.source == partner.source, landing_log.c.partner == partner.id,
                landing_log.c.file_date <= reference_date, landing_log.c.status.in_(list(REPORTED)),
                ~select(feedback_log.c.landing_id).where(feedback_log.c.landing_id == landing_log.c.id).exists())
            .order_by(landing_log.c.id)).all()
        for landing in todo:
            # an earlier landing of this file name, reported before, that this one superseded: say so once
            replaced = conn.execute(select(landing_log.c.id).where(
                landing_log.c.partner == partner.id, landing_log.c.source == partner.source,
                landing_log.c.file_name == landing.file_name, landing_log.c.id < landing.id,
                landing_log.c.status == LandingStatus.SUPERSEDED,
                select(feedback_log.c.landing_id).where(feedback_log.c.landing_id == landing_log.c.id).exists()
            )).scalars().all()
            for _ in replaced:
                feedback.counts["superseded"] = feedback.counts.get("superseded", 0) + 1
                feedback.rows.append((landing.file_name, "", "superseded", ""))
            status = REPORTED[landing.status]
            feedback.counts[status] = feedback.counts.get(status, 0) + 1
            feedback.counts["rows_read"] = feedback.counts.get("rows_read", 0) + (landing.rows_read or 0)
            feedback.rows.append((landing.file_name, "", status, landing.rejection or ""))
            feedback.landing_ids.append(landing.id)
            held = conn.execute(select(quarantine.c.row_json, quarantine.c.rules)
                                .where(quarantine.c.landing_id == landing.id).order_by(quarantine.c.row_number)).all()
            for row in held:
                rules = ";".join(r.strip() for r in row.rules.split(";") if r.strip())
                feedback.rows.append((landing.file_name, _record_id(row.row_json), "quarantined", rules))
            feedback.counts["quarantined"] = feedback.counts.get("quarantined", 0) + len(held)
    feedback.link_rate = link_rate(engine, partner, reference_date)
    return feedback


def _send(config: Config, partner: Partner, files: dict[str, bytes]) -> str:
    """Write the files to the partner's outbound path over its transport; returns where (for the log)."""
    assert partner.outbound is not None
    if isinstance(partner.transport, DirectorySource):
        folder = Path(partner.outbound)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write(folder / name, data)  # 0600: the partner's record_ids
        return str(folder)
    from tfp.sftp import SftpClient, endpoint_from_connection

    with SftpClient(endpoint_from_connection(partner.transport.conn_id)) as client:
        for name, data in files.items():
            client.upload_atomic(data, partner.outbound, name)
    return f"sftp:{partner.transport.conn_id}:{partner.outbound}"


def send_feedback(engine: Engine, config: Config, reference_date: date, dry_run: bool = False,
                  clock: Callable[[], datetime] = utc_now) -> dict[str, int]:
    """Build and send each partner's feedback for R (partners with an ``outbound`` path and something new to
    report); record the landings reported once the files are sent. A dry run builds nothing and sends
    nothing. Returns counts only."""
    counts = {"partners_sent": 0, "feedback_rows": 0, "landings_reported": 0, "dry_run": int(dry_run)}
    if dry_run:
        return counts
    for partner in config.all_partners():
        if partner.outbound is None:
            continue
        feedback = build(engine, partner, reference_date)
        if not feedback.landing_ids:
            continue
        csv_name, txt_name = feedback_names(partner.id, reference_date)
        data = feedback.csv_bytes()
        # another batch of the same night (a re-sent file landed by a later run of the date) gets its own name
        with engine.connect() as conn:
            earlier = conn.execute(select(func.count(func.distinct(feedback_log.c.file_name))).where(and_(
                feedback_log.c.partner == partner.id, feedback_log.c.reference_date == reference_date))).scalar_one()
        if earlier:
            csv_name, txt_name = (n.replace(f"_{reference_date:%Y%m%d}", f"_{reference_date:%Y%m%d}_{earlier + 1}")
                                  for n in (csv_name, txt_name))
        where = _send(config, partner, {csv_name: data, txt_name: feedback.summary().encode("utf-8")})
        with engine.begin() as conn:
            conn.execute(insert(feedback_log), [
                {"landing_id": i, "partner": partner.id, "reference_date": reference_date, "file_name": csv_name,
                 "sha256": hashlib.sha256(data).hexdigest(), "sent_at": clock()} for i in feedback.landing_ids])
        log.info("feedback for partner %s: %d rows about %d landing(s) sent to %s", partner.id, len(feedback.rows),
                 len(feedback.landing_ids), where)
        counts["partners_sent"] += 1
        counts["feedback_rows"] += len(feedback.rows)
        counts["landings_reported"] += len(feedback.landing_ids)
    return counts


def run(ctx: RunContext) -> StageResult:
    """The feedback task: send each partner its feedback for R (never in a dry run)."""
    from tfp.context import StageResult

    counts = send_feedback(ctx.warehouse, ctx.config, ctx.reference_date, dry_run=ctx.dry_run, clock=ctx.clock)
    return StageResult(stage="feedback", counts=counts)

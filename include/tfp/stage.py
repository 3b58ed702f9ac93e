"""Stages 2 and 3, validate and stage: every landed row ends up staged or quarantined.

Validation runs each new landing copy through its Great Expectations suite (tfp.validate),
writes the bad rows to the quarantine table with the rules they broke, and keeps the good rows
as a second encrypted copy beside the landing copy. Staging types those rows into the dataset's
``stg_`` table. Both steps move a landing along its status (landed -> validated -> staged) in
the same transaction as their writes, so re-running a date changes nothing and a killed run
resumes where it stopped.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import date
from functools import partial

import pandas as pd
from sqlalchemy import Engine, and_, delete, func, insert, select, update

from tfp.config import Config
from tfp.errors import FilesRejected
from tfp.extract import landing_copy_path, read_landing, source_lock
from tfp.feeds import DATASETS, Dataset
from tfp.landing import decrypt_segments, encrypting_to
from tfp.warehouse import insert_rows, landing_key, landing_log, quarantine, staging

log = logging.getLogger(__name__)


def _landings(engine: Engine, source: str, status: str, reference_date: date) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(landing_log.c.id, landing_log.c.dataset, landing_log.c.file_name, landing_log.c.file_date)
            .where(landing_log.c.source == source, landing_log.c.status == status,
                   landing_log.c.file_date <= reference_date)
            .order_by(landing_log.c.file_date, landing_log.c.id)
        ).all()


def validate_source(engine: Engine, config: Config, source: str, reference_date: date) -> dict[str, int]:
    """Validate the new landings of a source; fail naming every current file that breaks a file-level rule."""
    from tfp.validate import FileRejected, validate_file

    counts = {"files_validated": 0, "rows_read": 0, "rows_quarantined": 0, "files_rejected": 0}
    for row in _landings(engine, source, "landed", reference_date):
        key = _key(engine, row.id)
        raw = landing_copy_path(config, row.id, b"raw", engine)
        try:
            # A chunk at a time, the landing copy decrypted and the validated copy encrypted as they
            # go: memory follows the chunk, not the file. The validated copy appears only on success.
            with encrypting_to(landing_copy_path(config, row.id, b"validated", engine), key, row.id,
                               b"validated") as write:
                result = validate_file(partial(decrypt_segments, raw, key, row.id), row.dataset, row.file_date,
                                       row.file_name, config.quality.max_bad_row_fraction, write)
        except FileRejected as rejected:
            with engine.begin() as conn:
                source_lock(conn, source)
                conn.execute(update(landing_log).where(landing_log.c.id == row.id, landing_log.c.status == "landed")
                             .values(status="rejected", rejection=rejected.rule))
            counts["files_rejected"] += 1
            continue
        quarantined = [
            {"landing_id": row.id, "row_number": int(q["_row"]), "rules": q["rules"], "row_json": q["row_json"],
             "quarantined_on": reference_date}
            for q in result.quarantined.to_dict("records")
        ]
        with engine.begin() as conn:
            if not _still(conn, source, row.id, "landed"):  # a concurrent run (backfill) got there first
                continue
            conn.execute(delete(quarantine).where(quarantine.c.landing_id == row.id))
            if quarantined:
                conn.execute(insert(quarantine), quarantined)
            conn.execute(update(landing_log).where(landing_log.c.id == row.id).values(
                status="validated", rows_read=result.rows_read, rows_quarantined=len(quarantined),
                expectation_results=json.dumps(result.expectations, sort_keys=True),
                gx_result=json.dumps(result.gx_result, sort_keys=True)))
        counts["files_validated"] += 1
        counts["rows_read"] += result.rows_read
        counts["rows_quarantined"] += len(quarantined)
    failures = rejected_files(engine, source, reference_date)
    if failures:
        raise FilesRejected("; ".join(f"file {name} rejected: {rule}" for name, rule in failures))
    return counts


def _still(conn, source: str, landing_id: int, status: str) -> bool:
    """Take the source's lock and check that the landing is still in ``status``."""
    source_lock(conn, source)
    return conn.execute(select(landing_log.c.status).where(landing_log.c.id == landing_id)).scalar_one() == status


def rejected_files(engine: Engine, source: str, reference_date: date) -> list[tuple[str, str]]:
    """Current files of a source (latest landing of each name, dated on or before R) that were rejected."""
    latest = (
        select(landing_log.c.file_name, func.max(landing_log.c.id).label("id"))
        .where(landing_log.c.source == source, landing_log.c.file_date <= reference_date,
               landing_log.c.status != "duplicate")
        .group_by(landing_log.c.file_name).subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(landing_log.c.file_name, landing_log.c.rejection)
            .join(latest, latest.c.id == landing_log.c.id)
            .where(landing_log.c.status == "rejected").order_by(landing_log.c.file_name)
        ).all()
    return [(r.file_name, r.rejection) for r in rows]


def _key(engine: Engine, landing_id: int) -> bytes:
    with engine.connect() as conn:
        return conn.execute(select(landing_key.c.key).where(landing_key.c.landing_id == landing_id)).scalar_one()


def typed_rows(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Validated strings -> the staging columns' Python types; empty means unknown (None)."""
    out = pd.DataFrame({"record_id": frame["record_id"].astype(str), "row_number": frame["_row"].astype(int)})
    for column in dataset.columns:
        if column == "record_id":
            continue
        values = frame[column].fillna("").astype(str)
        empty = values.str.strip() == ""
        if column in dataset.dates:
            typed = pd.to_datetime(values.where(~empty), format="%Y-%m-%d", errors="coerce").dt.date
        elif column in dataset.datetimes:
            typed = pd.to_datetime(values.where(~empty), format="ISO8601", errors="coerce")
            typed = typed.dt.tz_localize(None) if getattr(typed.dt, "tz", None) else typed
            typed = pd.Series(typed.dt.to_pydatetime(), index=values.index, dtype=object)
        elif column in dataset.integers:
            typed = pd.to_numeric(values.where(~empty), errors="coerce").astype("Int64")
        elif column in dataset.decimals:
            typed = pd.to_numeric(values.where(~empty), errors="coerce")
        elif dataset.codes.get(column) == ("Y", "N"):
            typed = values.map({"Y": True, "N": False})
        else:
            typed = values
        out[column] = pd.Series(typed, index=values.index, dtype=object).where(~empty, None)
    return out.astype(object).where(out.notna(), None)


def stage_source(engine: Engine, config: Config, source: str, reference_date: date) -> dict[str, int]:
    """Type the validated rows of a source into its staging tables; idempotent per landing."""
    counts = {"files_staged": 0, "rows_staged": 0, "files_superseded": 0}
    # consent first: a roster file staged in the same run must already know who has withdrawn
    landings = sorted(_landings(engine, source, "validated", reference_date), key=lambda r: r.dataset != "consent")
    for row in landings:
        dataset = DATASETS[row.dataset]
        text = read_landing(engine, config, row.id, b"validated").decode("utf-8")
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        rows = typed_rows(frame, dataset)
        rows.insert(0, "landing_id", row.id)
        rows.insert(2, "file_date", row.file_date)
        table = staging[row.dataset]
        with engine.begin() as conn:
            if not _still(conn, source, row.id, "validated"):  # a concurrent run (backfill) got there first
                continue
            if row.dataset == "families":
                rows = _without_withdrawn_identifiers(conn, rows)
            conn.execute(delete(table).where(table.c.landing_id == row.id))
            if len(rows):
                insert_rows(conn, table, {c: rows[c].tolist() for c in rows.columns})
            conn.execute(update(landing_log).where(landing_log.c.id == row.id)
                         .values(status="staged", rows_staged=len(rows)))
            superseded = conn.execute(
                update(landing_log)
                .where(and_(landing_log.c.source == source, landing_log.c.file_name == row.file_name,
                            landing_log.c.status == "staged", landing_log.c.id < row.id))
                .values(status="superseded")
            ).rowcount
        counts["files_staged"] += 1
        counts["rows_staged"] += len(rows)
        counts["files_superseded"] += superseded
    return counts


def _without_withdrawn_identifiers(conn, rows: pd.DataFrame) -> pd.DataFrame:
    """A roster snapshot as it may be stored: of anyone who has ever withdrawn, only the references stay
    (contract section 10), whatever date the snapshot or the run has."""
    from tfp.retention import ROSTER_SCRUBBED, ever_withdrawn

    withdrawn = ever_withdrawn(conn)
    if not withdrawn:
        return rows
    rows = rows.copy()
    mask = rows["person_ref"].isin(withdrawn)
    for column in ROSTER_SCRUBBED:
        rows[column] = rows[column].astype(object).where(~mask, None)
    return rows


def quarantine_reasons(engine: Engine, landing_id: int) -> dict[str, int]:
    """How many quarantined rows of a landing broke each rule (for the run report)."""
    reasons: dict[str, int] = {}
    with engine.connect() as conn:
        for (rules,) in conn.execute(select(quarantine.c.rules).where(quarantine.c.landing_id == landing_id)):
            for rule in rules.split("; "):
                reasons[rule] = reasons.get(rule, 0) + 1
    return dict(sorted(reasons.items()))



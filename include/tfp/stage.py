"""Stage 3, stage: the validated rows of every landing typed into its dataset's ``stg_`` table.

Validation (:mod:`tfp.validate`) leaves the rows that passed as a second encrypted copy beside the
landing copy; staging types those rows into the dataset's ``stg_`` table. Both steps move a landing
along its status (landed -> validated -> staged) in the same transaction as their writes, so
re-running a date changes nothing and a killed run resumes where it stopped.
"""

from __future__ import annotations

import io
import logging
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import Engine, and_, delete, update

from tfp.config import Config
from tfp.feeds import DATASETS, Dataset
from tfp.landing import VALIDATED, LandingStore
from tfp.statuses import LandingStatus
from tfp.warehouse import insert_rows, landing_log, staging

if TYPE_CHECKING:
    from tfp.context import RunContext, StageResult

log = logging.getLogger(__name__)
# Rows typed and inserted at a time: a 50,000-family borough's attendance file (about 400,000 rows)
# staged whole held it as Python objects three times over (the frame, the typed frame, the insert's lists).
STAGE_CHUNK_ROWS = 50_000


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


def stage_source(engine: Engine, config: Config, source: str, reference_date: date,
                 store: LandingStore | None = None, partner: str | None = None) -> dict[str, int]:
    """Type the validated rows of one partner of a source (the short form's by default) into the source's
    staging tables; idempotent per landing. A re-sent file supersedes the same partner's earlier one only."""
    from tfp.retention import ever_withdrawn

    store = store or LandingStore.of(engine, config)
    partner_id = config.partner(source, partner).id
    counts = {"files_staged": 0, "rows_staged": 0, "files_superseded": 0}
    # consent first: a roster file staged in the same run must already know who has withdrawn
    todo = sorted(store.landings(source, LandingStatus.VALIDATED, reference_date, partner_id),
                  key=lambda r: r.dataset != "consent")
    for row in todo:
        dataset = DATASETS[row.dataset]
        text = store.read(row.id, VALIDATED).decode("utf-8")
        table = staging[row.dataset]
        staged_rows = 0
        with engine.begin() as conn:
            if not store.still(conn, source, row.id, LandingStatus.VALIDATED):  # a concurrent run (backfill) got there first
                continue
            withdrawn = ever_withdrawn(conn) if row.dataset == "families" else set()
            conn.execute(delete(table).where(table.c.landing_id == row.id))
            # typed and inserted a chunk at a time, so a big file never sits in memory as Python objects whole
            for frame in pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, chunksize=STAGE_CHUNK_ROWS):
                rows = typed_rows(frame, dataset)
                rows.insert(0, "landing_id", row.id)
                rows.insert(2, "file_date", row.file_date)
                rows = _without_withdrawn_identifiers(rows, withdrawn)
                if len(rows):
                    insert_rows(conn, table, {c: rows[c].tolist() for c in rows.columns})
                staged_rows += len(rows)
            conn.execute(update(landing_log).where(landing_log.c.id == row.id)
                         .values(status=LandingStatus.STAGED, rows_staged=staged_rows))
            superseded = conn.execute(
                update(landing_log)
                .where(and_(landing_log.c.source == source, landing_log.c.partner == partner_id,
                            landing_log.c.file_name == row.file_name,
                            landing_log.c.status == LandingStatus.STAGED, landing_log.c.id < row.id))
                .values(status=LandingStatus.SUPERSEDED)
            ).rowcount
        counts["files_staged"] += 1
        counts["rows_staged"] += staged_rows
        counts["files_superseded"] += superseded
    return counts


def _without_withdrawn_identifiers(rows: pd.DataFrame, withdrawn: set[str]) -> pd.DataFrame:
    """A roster snapshot as it may be stored: of anyone who has ever withdrawn (``withdrawn``, their
    person_refs), only the references stay (contract section 10), whatever date the snapshot or the run has."""
    from tfp.retention import ROSTER_SCRUBBED

    if not withdrawn:
        return rows
    rows = rows.copy()
    mask = rows["person_ref"].isin(withdrawn)
    for column in ROSTER_SCRUBBED:
        rows[column] = rows[column].astype(object).where(~mask, None)
    return rows


def run(ctx: RunContext) -> StageResult:
    """The stage task: type the validated rows of the context's source into its staging tables."""
    from tfp.context import StageResult
    from tfp.lineage import staged

    source = ctx.need_source()
    partner = ctx.config.partner(source, ctx.partner).id
    todo = ctx.landing.landings(source, LandingStatus.VALIDATED, ctx.reference_date, partner)
    counts = stage_source(ctx.warehouse, ctx.config, source, ctx.reference_date, store=ctx.landing, partner=partner)
    return StageResult(stage="stage", counts=counts, source=source,
                       lineage=staged(ctx.warehouse, ctx.landing, source, todo))

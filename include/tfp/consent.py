"""Stage 6: whose data may be used (contract section 6).

A person's state at reference date R is the status of their latest ``tfp_evaluation`` consent
event recorded on or before R; consent for the ``service`` purpose says nothing about the
evaluation and is ignored. The result is stored per R in ``person_consent`` so that criteria,
de-identification and retention all read one decision.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine, delete, insert

from tfp.current import current_rows
from tfp.statuses import ConsentState
from tfp.warehouse import person_consent

if TYPE_CHECKING:
    from tfp.context import RunContext, StageResult

log = logging.getLogger(__name__)

LONDON = ZoneInfo("Europe/London")
# Between events recorded at the same instant the higher rank wins. Refusing and withdrawing both beat
# giving (contract); withdrawn beats refused because it is the state that also tells the recipient to
# delete what it already holds, so on a true tie the person is excluded *and* listed for deletion.
_TIE_RANK = {ConsentState.GIVEN: 0, ConsentState.REFUSED: 1, ConsentState.WITHDRAWN: 2}


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def as_datetime(value: object) -> datetime | None:
    """A naive local datetime from what the warehouse returns (datetime on PostgreSQL, ISO text on SQLite).

    An aware value is taken to Europe/London wall time: the reference date is a London calendar date.
    """
    if _missing(value) or value == "":
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(LONDON).replace(tzinfo=None)
    return parsed


def as_date(value: object) -> date | None:
    """A date from a date, datetime or ISO text; None when missing."""
    parsed = as_datetime(value)
    return parsed.date() if parsed is not None else None


def consent_states(consent_rows: pd.DataFrame, reference_date: date) -> pd.DataFrame:
    """``person_ref, state, state_on`` for every person in ``consent_rows``.

    ``state_on`` is the date of the deciding event (None with state ``none``). A person whose events are
    all for another purpose or recorded after R has state ``none``. Ties at the same instant: withdrawn,
    then refused, then given.
    """
    columns = ["person_ref", "state", "state_on"]
    if consent_rows.empty:
        return pd.DataFrame(columns=columns)
    everyone: set[str] = set()
    latest: dict[str, tuple[tuple[datetime, int], str]] = {}  # person -> ((recorded_at, tie rank), status)
    for ref, purpose, status, recorded_at in zip(consent_rows["person_ref"], consent_rows["purpose"],
                                                 consent_rows["status"], consent_rows["recorded_at"], strict=True):
        ref = str(ref)
        everyone.add(ref)
        if purpose != "tfp_evaluation" or status not in _TIE_RANK:
            continue
        at = as_datetime(recorded_at)
        if at is None or at.date() > reference_date:
            continue
        order = (at, _TIE_RANK[status])
        if ref not in latest or order > latest[ref][0]:
            latest[ref] = (order, status)
    rows = [(ref, latest[ref][1], latest[ref][0][0].date()) if ref in latest else (ref, ConsentState.NONE, None)
            for ref in sorted(everyone)]
    return pd.DataFrame(rows, columns=columns)


def kept(state: str, lawful_basis: str) -> bool:
    """May this person's data be used? ``consent``: only with consent given; ``public_task``: unless they objected."""
    if lawful_basis == "consent":
        return state == ConsentState.GIVEN
    if lawful_basis == "public_task":
        return state not in (ConsentState.REFUSED, ConsentState.WITHDRAWN)
    raise ValueError(f"unknown lawful basis {lawful_basis!r}")


def compute_consent(engine: Engine, reference_date: date, lawful_basis: str) -> dict[str, int]:
    """Decide, for every person of the roster as of R, their consent state and whether they are kept.

    Replaces the ``person_consent`` rows of R in one transaction, so a re-run gives the same rows.
    Returns counts only.
    """
    kept(ConsentState.NONE, lawful_basis)  # a bad basis fails before the warehouse is touched
    with engine.begin() as conn:
        roster = current_rows(conn, "families", reference_date)
        consent = current_rows(conn, "consent", reference_date)
        states = {ref: (state, on) for ref, state, on in consent_states(consent, reference_date).itertuples(index=False)}
        persons = sorted({str(p) for p in roster["person_ref"] if not _missing(p)}) if not roster.empty else []
        rows = []
        for person in persons:
            state, state_on = states.get(person, (ConsentState.NONE, None))
            rows.append({"reference_date": reference_date, "person_ref": person, "state": state,
                         "state_on": state_on if not _missing(state_on) else None,
                         "kept": kept(state, lawful_basis)})
        conn.execute(delete(person_consent).where(person_consent.c.reference_date == reference_date))
        if rows:
            conn.execute(insert(person_consent), rows)
    n_kept = sum(r["kept"] for r in rows)
    log.info("consent for %s under %s: %d persons, %d kept, %d excluded",
             reference_date, lawful_basis, len(rows), n_kept, len(rows) - n_kept)
    return {"persons": len(rows), "kept": n_kept, "excluded": len(rows) - n_kept}


def run(ctx: RunContext) -> StageResult:
    """The consent task: decide R's consent states under the config's lawful basis."""
    from tfp.context import StageResult
    from tfp.lineage import tables

    return StageResult(stage="consent",
                       counts=compute_consent(ctx.warehouse, ctx.reference_date, ctx.config.consent.lawful_basis),
                       lineage=tables(ctx.warehouse, ["stg_families", "stg_consent"], ["person_consent"]))

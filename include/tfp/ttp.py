"""The identifiers file for the trusted third party (contract section 10, issue 19 item 3).

The submission carries tokens and match keys only. ONS's linkage function (the trusted third party, not
its analysts) can be sent the identifiers behind each ``person_token``, so that it can link the people to
national data itself: ``tfp_identifiers_<la>_<date>.csv.age``, sealed with age to its own recipient only.
The separation principle: the analysts' key opens the attributes (submission, summary, withdrawals) and not
the identifiers; the linkage function's key opens the identifiers and not the attributes.

The CSV exists in plaintext only in this process's memory: it is built here from the warehouse's roster
and handed to :func:`tfp.package.write_package`, which encrypts it straight into the outbox file. It is
never logged, returned to a task (XCom) or put in an exception; :class:`IdentifiersCsv` shows only its
row count.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine

log = logging.getLogger(__name__)

IDENTIFIER_COLUMNS: tuple[str, ...] = (
    "person_token", "forename", "surname", "date_of_birth", "sex", "postcode", "uprn", "nino", "upn", "nhs_number",
)


@dataclass(frozen=True, repr=False, eq=False)
class IdentifiersCsv:
    """The identifiers CSV in memory. Its ``repr`` (and so any log line, traceback or assertion message that
    shows the object) gives the row count only."""

    text: str
    rows: int

    def __repr__(self) -> str:
        return f"IdentifiersCsv(<{self.rows} rows, not shown>)"

    __str__ = __repr__


def identifiers_name(la_code: str, reference_date: date) -> str:
    """The delivered name: always ``.csv.age`` (there is no plaintext form of this file)."""
    return f"tfp_identifiers_{la_code}_{reference_date:%Y%m%d}.csv.age"


def is_identifiers_name(name: str) -> bool:
    return name.startswith("tfp_identifiers_")


def _value(value: object) -> str:
    """A roster value as the warehouse holds it: "" for unknown, a date as YYYY-MM-DD, text as it is."""
    import pandas as pd

    if value is None:
        return ""
    try:
        if pd.isna(value):  # NaN, NA, NaT
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, date):  # a date, datetime or pandas Timestamp (PostgreSQL; SQLite gives the text)
        return value.isoformat()[:10]
    return str(value)


def build_identifiers(engine: Engine, reference_date: date, person_refs: Iterable[str],
                      pseudonym_key: bytes) -> IdentifiersCsv:
    """The identifiers of ``person_refs`` (the people in R's submission), from the roster as of R, one row
    per person sorted by ``person_token``. Values are taken as the roster holds them; ``nhs_number`` (the
    roster's optional column, contract section 10) is empty when the roster's file had no such column or value. Raises, naming counts only, when a person of the
    submission is not in the roster."""
    from tfp.anonymise import person_token
    from tfp.current import current_rows

    wanted = {str(ref) for ref in person_refs}
    with engine.connect() as conn:
        roster = current_rows(conn, "families", reference_date)
    rows: list[list[str]] = []
    if not roster.empty and wanted:
        # the same person row as the submission's (build_outputs): the lowest record_id of a person_ref
        roster = roster.assign(person_ref=roster["person_ref"].astype(str))
        roster = roster.sort_values(["person_ref", "record_id"], kind="mergesort").drop_duplicates("person_ref")
        roster = roster[roster["person_ref"].isin(wanted)]
        has_nhs = "nhs_number" in roster.columns
        for person in roster.to_dict("records"):
            rows.append([person_token(pseudonym_key, person["person_ref"]),
                         *(_value(person.get(c)) for c in IDENTIFIER_COLUMNS[1:-1]),
                         _value(person.get("nhs_number")) if has_nhs else ""])
    if len(rows) != len(wanted):
        raise RuntimeError(f"identifiers for {reference_date}: {len(wanted) - len(rows)} of the {len(wanted)} "
                           "submitted people are not in the roster as of that date")
    rows.sort(key=lambda r: r[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(IDENTIFIER_COLUMNS)
    writer.writerows(rows)
    log.info("identifiers for %s: %d people", reference_date, len(rows))
    return IdentifiersCsv(buffer.getvalue(), len(rows))

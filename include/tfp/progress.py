"""The progress file: the evaluation's outcome measures per family (contract section 10).

For every family with a counted member (kept by section 6 as of R) that is intervention or comparison:
its six flags at its baseline date and now (R), whether its progress is sustained, and whether an adult
has come off out-of-work benefits.

The baseline flags are the criteria SQL itself (``include/sql/criteria``) run with the baseline date as
``reference_date`` (windows, terms, release window, ages) and R as ``night`` (the links of tonight), over
the ``cur_<dataset>`` tables as of R: everything known tonight, roster and consent as of R. No rule is
written twice: each flag's SQL runs once for every family, each member judged at their family's own
baseline date (:func:`tfp.criteria.judged_per_person_sql`); the flags at the ``sustain_months``
month-ends run once per month-end for the families with a baseline problem.

Decisions where the contract leaves room (README "Progress file"):

- ``baseline_date``: intervention, the earliest ``attached_date`` of the family's counted members on the
  roster as of R (the first roster listing when none has one); comparison, the date of the first staged
  roster file dated on or before R that lists the family. Written as a month, ``YYYY-MM``.
- the month-ends of ``sustained_progress``: the last ``sustain_months`` month-ends on or before R (R itself
  when it is a month-end), whatever the baseline date; the flags at each are judged like the baseline,
  from everything known tonight.
- ``off_out_of_work_benefits``: a counted member aged 18 or over at the baseline date, with an out-of-work
  claim active at it (start <= B, no end or end >= B), and no out-of-work claim active in
  (R - ``off_benefits_weeks`` weeks, R] (start <= R, no end or end > that bound).
"""

from __future__ import annotations

import calendar
import csv
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

from sqlalchemy import Connection, Date, Engine, bindparam, text

from tfp.config import Criteria
from tfp.criteria import (
    CRITERIA_DATASETS,
    JUDGED_AT_PARAMETERS,
    _analyze,
    _create_counted_persons,
    _drop_temporary_tables,
    _statement,
    create_judged_persons,
    criteria_parameters,
    flag_sql,
    judged_per_person_sql,
)
from tfp.current import create_current_tables, sql_file
from tfp.statuses import FlagScope
from tfp.warehouse import FLAGS, no_personal_statistics

log = logging.getLogger(__name__)

PROGRESS_STATUSES: tuple[str, ...] = ("intervention", "comparison")
PROGRESS_COLUMNS: tuple[str, ...] = (
    "family_token", "programme_status", "baseline_date",
    *(f"{flag}_baseline" for flag in FLAGS), *(f"{flag}_now" for flag in FLAGS),
    "problems_baseline", "problems_now", "sustained_progress", "off_out_of_work_benefits",
)

PROGRESS_HEADER = ",".join(PROGRESS_COLUMNS) + "\n"  # the file with no family in it

_MEMBERS = "progress_members"
_FIRST_LISTED = """
SELECT s.family_ref, MIN(l.file_date) AS first_listed
FROM stg_families s
JOIN landing_log l ON l.id = s.landing_id
WHERE l.dataset = 'families' AND l.status = 'staged' AND l.file_date <= :reference_date
GROUP BY s.family_ref
"""


@dataclass(frozen=True)
class FamilyProgress:
    """One family's row of the progress file, before its reference becomes a token."""

    family_ref: str
    programme_status: str
    baseline_date: date
    baseline: dict[str, int]
    now: dict[str, int]
    sustained_progress: int
    off_out_of_work_benefits: int

    @property
    def problems_baseline(self) -> int:
        return sum(self.baseline.values())

    @property
    def problems_now(self) -> int:
        return sum(self.now.values())


def month_ends(reference_date: date, count: int) -> list[date]:
    """The last ``count`` month-ends on or before R, newest first (R itself when it is one)."""
    year, month = reference_date.year, reference_date.month
    if reference_date.day != calendar.monthrange(year, month)[1]:
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    out = []
    for _ in range(count):
        out.append(date(year, month, calendar.monthrange(year, month)[1]))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


def _as_date(value: object) -> date | None:
    """A date from what a driver returns for a DATE column of a text() query (ISO text on SQLite)."""
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _flags_at(conn: Connection, at: date, night: date, criteria: Criteria,
              flags: Iterable[str] = FLAGS) -> dict[str, set[str]]:
    """The families of ``counted_persons`` having each flag, the rules evaluated at ``at`` with tonight's links
    (only ``flags`` are queried; the others are empty)."""
    params = criteria_parameters(at, criteria, night=night)
    wanted = set(flags)
    return {flag: set(conn.execute(_flag_statement(flag), params).scalars()) if flag in wanted else set()
            for flag in FLAGS}


@cache
def _flag_statement(flag: str):
    """A flag's statement, built once: hundreds of baseline dates run the same six."""
    return _statement(flag_sql(flag))


def _count_members(conn: Connection) -> None:
    """Narrow ``counted_persons`` to the members in the progress file."""
    conn.execute(text("DELETE FROM counted_persons"))
    conn.execute(text(f"INSERT INTO counted_persons (person_ref) SELECT person_ref FROM {_MEMBERS}"))


def _baseline_flags(conn: Connection, baseline: dict[str, date], members: list[tuple[str, str]], night: date,
                    criteria: Criteria) -> dict[str, set[str]]:
    """The families having each flag at their own baseline date: every member judged at their family's
    date (:func:`tfp.criteria.judged_per_person_sql`), each flag's SQL run once for all of them."""
    create_judged_persons(conn, {person: baseline[family] for person, family in members}, criteria)
    params = {"night": night, **{k: v for k, v in criteria_parameters(night, criteria).items()
                                 if k not in JUDGED_AT_PARAMETERS and k != "night"}}
    return {flag: {f for f in conn.execute(_judged_statement(flag), params).scalars() if f in baseline}
            for flag in FLAGS}


@cache
def _judged_statement(flag: str):
    return _statement(judged_per_person_sql(flag_sql(flag)))


def _families(conn: Connection, reference_date: date) -> tuple[dict[str, str], dict[str, date], list[tuple]]:
    """(family -> programme_status, family -> baseline date, [(person, family)]) for the families in the file."""
    roster = conn.execute(text(
        "SELECT f.person_ref, f.family_ref, f.programme_status, f.attached_date "
        "FROM cur_families f JOIN counted_persons c ON c.person_ref = f.person_ref "
        "ORDER BY f.person_ref")).all()
    status: dict[str, str] = {}
    attached: dict[str, date] = {}
    members: dict[str, str] = {}
    for person_ref, family_ref, programme_status, attached_date in roster:
        if programme_status not in PROGRESS_STATUSES:
            continue
        members[person_ref] = family_ref
        if status.get(family_ref) != "intervention":  # members should agree; as criteria: intervention wins
            status[family_ref] = programme_status
        day = _as_date(attached_date)
        if day is not None and (family_ref not in attached or day < attached[family_ref]):
            attached[family_ref] = day
    first_listed = {ref: _as_date(day) for ref, day in conn.execute(
        text(_FIRST_LISTED).bindparams(bindparam("reference_date", type_=Date)),
        {"reference_date": reference_date}) if ref in status}
    baseline: dict[str, date] = {}
    for family_ref, programme_status in status.items():
        day = attached.get(family_ref) if programme_status == "intervention" else None
        baseline[family_ref] = min(day or first_listed.get(family_ref) or reference_date, reference_date)
    return status, baseline, sorted(members.items())


def compute_progress(engine: Engine, reference_date: date, criteria: Criteria) -> list[FamilyProgress]:
    """Every family's progress row for R, sorted by family_ref (contract section 10)."""
    with engine.begin() as conn:
        create_current_tables(conn, reference_date, CRITERIA_DATASETS)
        _create_counted_persons(conn, reference_date, FlagScope.KEPT)
        status, baseline, members = _families(conn, reference_date)
        conn.execute(text(f"DROP TABLE IF EXISTS {_MEMBERS}"))
        conn.execute(text(f"CREATE TEMPORARY TABLE {_MEMBERS} (person_ref VARCHAR(100) PRIMARY KEY, "
                          "family_ref VARCHAR(100) NOT NULL, baseline_date DATE NOT NULL)"))
        if members:
            conn.execute(text(f"INSERT INTO {_MEMBERS} (person_ref, family_ref, baseline_date) "
                              "VALUES (:person_ref, :family_ref, :baseline_date)")
                         .bindparams(bindparam("baseline_date", type_=Date)),
                         [{"person_ref": p, "family_ref": f, "baseline_date": baseline[f]} for p, f in members])
        _count_members(conn)
        _analyze(conn)
        if conn.dialect.name == "postgresql":
            no_personal_statistics(conn, (_MEMBERS,), temporary=True)
            conn.execute(text(f"ANALYZE {_MEMBERS}"))

        now = _flags_at(conn, reference_date, reference_date, criteria)
        off_since = reference_date - timedelta(weeks=criteria.off_benefits_weeks)
        off_sql = text(sql_file("progress/off_out_of_work_benefits.sql")).bindparams(
            *(bindparam(name, type_=Date) for name in ("night", "reference_date", "off_since")))
        off = set(conn.execute(off_sql, {"night": reference_date, "reference_date": reference_date,
                                         "off_since": off_since}).scalars())

        at_baseline = _baseline_flags(conn, baseline, members, reference_date, criteria)

        with_problem = {f for flag in FLAGS for f in at_baseline[flag]}
        flagged_since: dict[str, set[str]] = {flag: set() for flag in FLAGS}  # at any of the month-ends
        if with_problem:
            conn.execute(text("DELETE FROM counted_persons"))
            conn.execute(text("INSERT INTO counted_persons (person_ref) VALUES (:p)"),
                         [{"p": p} for p, f in members if f in with_problem])
            for day in month_ends(reference_date, criteria.sustain_months):
                for flag, families in _flags_at(conn, day, reference_date, criteria).items():
                    flagged_since[flag] |= families
        _drop_temporary_tables(conn)
        conn.execute(text(f"DROP TABLE IF EXISTS {_MEMBERS}"))

    rows = []
    for family_ref in sorted(status):
        base = {flag: int(family_ref in at_baseline[flag]) for flag in FLAGS}
        sustained = family_ref in with_problem and not any(
            base[flag] and family_ref in flagged_since[flag] for flag in FLAGS)
        rows.append(FamilyProgress(
            family_ref=family_ref, programme_status=status[family_ref], baseline_date=baseline[family_ref],
            baseline=base, now={flag: int(family_ref in now[flag]) for flag in FLAGS},
            sustained_progress=int(sustained), off_out_of_work_benefits=int(family_ref in off)))
    log.info("progress for %s: %d families, %d baseline dates", reference_date, len(rows),
             len(set(baseline.values())))
    return rows


def progress_csv(rows: Iterable[FamilyProgress], pseudonym_key: bytes) -> tuple[str, int]:
    """The progress CSV (UTF-8 text, ``\\n`` line ends, header row) sorted by family_token, and its data rows."""
    from tfp.anonymise import family_token

    lines = []
    for row in rows:
        lines.append([
            family_token(pseudonym_key, row.family_ref), row.programme_status, row.baseline_date.strftime("%Y-%m"),
            *(str(row.baseline[flag]) for flag in FLAGS), *(str(row.now[flag]) for flag in FLAGS),
            str(row.problems_baseline), str(row.problems_now), str(row.sustained_progress),
            str(row.off_out_of_work_benefits),
        ])
    lines.sort(key=lambda line: line[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(PROGRESS_COLUMNS)
    writer.writerows(lines)
    return buffer.getvalue(), len(lines)

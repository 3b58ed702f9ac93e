"""Stage 5: which of the six headline problems each roster family has as of the reference date.

The rules (contract sections 5 and 10) live in one SQL file per flag under ``include/sql/criteria``;
each returns ``(family_ref, indicator)``: every family that has its flag, once per indicator (the rule
under the flag, :data:`INDICATORS`) it meets. :func:`flag_sql` reduces a file to the families alone. They read the "as of R" rows of each
dataset (``cur_<dataset>``, see :mod:`tfp.current`), the ``links`` of R that tie partner records to
roster persons, and ``counted_persons``, the people whose records may count. Window bounds, the
last three ended school terms and the release window are worked out here in Python and passed as
bind parameters, so the SQL stays portable between SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Date, Engine, bindparam, delete, insert, text

from tfp.config import Criteria
from tfp.current import create_current_tables, sql_file
from tfp.feeds import term_end
from tfp.months import add_months
from tfp.statuses import FlagScope
from tfp.warehouse import FLAGS, family_flags, no_personal_statistics

if TYPE_CHECKING:
    from tfp.context import CriteriaResult, RunContext

SCOPES: tuple[FlagScope, ...] = tuple(FlagScope)
RELEASE_WINDOW_MONTHS = 12
# The datasets the rules read; consent is settled by the consent stage (table person_consent).
CRITERIA_DATASETS: tuple[str, ...] = ("families", "needs", "incidents", "cases", "tenancy_events", "benefits",
                                      "attendance", "treatment_episodes", "mental_health_contacts")
DATE_PARAMETERS: tuple[str, ...] = ("night", "reference_date", "window_start", "release_window_end")
# The rules under each flag, as the SQL names them in its ``indicator`` column; the run report counts the
# families meeting each one (so an analyst sees which indicators drive eligibility). Need-based
# indicators are named after the need code.
INDICATORS: dict[str, tuple[str, ...]] = {
    "crime_asb": ("youth_offence", "asb_incident", "housing_asb", "adult_order"),
    "school_attendance": ("persistent_absence", "fixed_term_exclusions", "exclusion_or_alternative_provision",
                          "child_missing_education"),
    "children_need_help": ("child_in_need", "child_protection_plan", "early_help", "young_carer", "section_47",
                           "child_sexual_exploitation", "missing_from_home", "emotional_wellbeing"),
    "worklessness": ("out_of_work_benefit", "rent_arrears", "notice_seeking_possession", "eviction", "neet"),
    "domestic_abuse": ("domestic_abuse_incident", "domestic_abuse_need"),
    "health": ("mental_health", "substance_misuse", "vulnerable_new_mother", "physical_health",
               "treatment_episode", "mental_health_contact"),  # the last two: the health feed (section 10)
}

# Everyone on the roster but the withdrawn: their rows keep references only (programme_status, a required
# roster value, is gone), and what they withdrew counts for nothing, even in the evaluation's own checks.
_COUNT_EVERY_ROSTER_PERSON = """
INSERT INTO counted_persons (person_ref)
SELECT DISTINCT f.person_ref FROM cur_families f
WHERE f.person_ref IS NOT NULL AND f.programme_status IS NOT NULL
"""
# "Only the people kept by section 6 count": kept as the consent stage decided it for this R.
_COUNT_KEPT_PERSONS = """
INSERT INTO counted_persons (person_ref)
SELECT DISTINCT f.person_ref
FROM cur_families f
JOIN person_consent pc ON pc.reference_date = :reference_date AND pc.person_ref = f.person_ref
WHERE pc.kept = TRUE
"""


def window_start(reference_date: date, months: int) -> date:
    """The exclusive lower bound of the look-back window: an event is in it when start < date <= R."""
    return add_months(reference_date, -months)


def last_ended_terms(reference_date: date, n: int = 3) -> list[str]:
    """The ``n`` school terms that ended most recently on or before R, newest first."""
    first_year = reference_date.year - (n // 3 + 2)
    candidates = [f"{year}-{term}" for year in range(first_year, reference_date.year + 1)
                  for term in ("AUT", "SPR", "SUM")]
    ended = [t for t in candidates if term_end(t) <= reference_date]
    return sorted(ended, key=term_end, reverse=True)[:n]


def criteria_parameters(reference_date: date, criteria: Criteria, night: date | None = None) -> dict[str, object]:
    """The bind parameters of the criteria SQL for R.

    ``night`` is the run whose links count (R itself unless given); ``reference_date`` is the date the
    rules' windows and ages are evaluated at. They differ only when a family's situation is judged at
    an earlier date (its baseline) from everything known tonight.
    """
    terms = last_ended_terms(reference_date, 3)
    # The rate as an exact fraction of the value written in the config: 3 of 30 sessions at 0.10
    # must count, and 0.1 * 30 in floating point is 3.0000000000000004.
    rate = Fraction(repr(float(criteria.persistent_absence_rate)))
    return {
        "night": night or reference_date,
        "reference_date": reference_date,
        "reference_yyyymmdd": int(reference_date.strftime("%Y%m%d")),
        "window_start": window_start(reference_date, criteria.lookback_months),
        "release_window_end": add_months(reference_date, RELEASE_WINDOW_MONTHS),
        "term_1": terms[0],
        "term_2": terms[1],
        "term_3": terms[2],
        "rate_numerator": rate.numerator,
        "rate_denominator": rate.denominator,
        "fixed_term_exclusions": criteria.fixed_term_exclusions,
        "min_rent_arrears": float(criteria.min_rent_arrears),
    }


def _statement(sql: str):
    """A text() statement with its date parameters typed, so each driver binds a real date."""
    dates = [bindparam(name, type_=Date) for name in DATE_PARAMETERS if f":{name}" in sql]
    return text(sql).bindparams(*dates)


def indicator_sql(flag: str) -> str:
    """The SQL file of one flag: a SELECT of (family_ref, indicator), a row per family and indicator it meets."""
    if flag not in FLAGS:
        raise ValueError(f"unknown flag {flag!r}")
    return sql_file(f"criteria/{flag}.sql")


def flag_sql(flag: str) -> str:
    """The SQL of one flag: a SELECT of the DISTINCT family_refs that have it (any of its indicators)."""
    return f"SELECT DISTINCT x.family_ref FROM (\n{indicator_sql(flag)}\n) x"


# The parameters that follow from the date the rules are judged at. Every rule reads them where it has
# joined ``counted_persons c``, so the same SQL can judge each person at a date of their own.
JUDGED_AT_PARAMETERS: tuple[str, ...] = ("reference_date", "reference_yyyymmdd", "window_start",
                                         "release_window_end", "term_1", "term_2", "term_3")
JUDGED_PERSONS = "judged_persons"


def judged_per_person_sql(sql: str) -> str:
    """The same rules with every person judged at a date of their own: each parameter of
    :data:`JUDGED_AT_PARAMETERS` becomes that person's column of ``judged_persons`` (made by
    :func:`create_judged_persons`), which takes the place of ``counted_persons``.

    The progress file judges each family at its own baseline date, so this runs each flag once
    instead of once per baseline date. A rule that read such a parameter where ``counted_persons c``
    is not joined would fail here with an unknown column, never give another answer.
    """
    out = re.sub(r"\bcounted_persons\b", JUDGED_PERSONS, sql)
    for name in JUDGED_AT_PARAMETERS:
        out = re.sub(rf":{name}\b", f"c.{name}", out)
    return out


def create_judged_persons(conn: Connection, judged_at: dict[str, date], criteria: Criteria) -> None:
    """``judged_persons``: each person of ``judged_at`` with the parameters of their own date as columns."""
    conn.execute(text(f"DROP TABLE IF EXISTS {JUDGED_PERSONS}"))
    conn.execute(text(
        f"CREATE TEMPORARY TABLE {JUDGED_PERSONS} (person_ref VARCHAR(100) PRIMARY KEY, reference_date DATE NOT NULL, "
        "reference_yyyymmdd INTEGER NOT NULL, window_start DATE NOT NULL, release_window_end DATE NOT NULL, "
        "term_1 VARCHAR(10), term_2 VARCHAR(10), term_3 VARCHAR(10))"))
    if not judged_at:
        return
    at_day = {day: criteria_parameters(day, criteria) for day in set(judged_at.values())}
    columns = ("person_ref", *JUDGED_AT_PARAMETERS)
    insert_sql = text(f"INSERT INTO {JUDGED_PERSONS} ({', '.join(columns)}) "
                      f"VALUES ({', '.join(':' + c for c in columns)})").bindparams(
        *(bindparam(name, type_=Date) for name in JUDGED_AT_PARAMETERS if name in DATE_PARAMETERS))
    conn.execute(insert_sql, [{"person_ref": person, **{n: at_day[day][n] for n in JUDGED_AT_PARAMETERS}}
                              for person, day in judged_at.items()])
    if conn.dialect.name == "postgresql":
        no_personal_statistics(conn, (JUDGED_PERSONS,), temporary=True)
        conn.execute(text(f"ANALYZE {JUDGED_PERSONS}"))


def _create_counted_persons(conn: Connection, reference_date: date, scope: str) -> None:
    conn.execute(text("DROP TABLE IF EXISTS counted_persons"))
    conn.execute(text("CREATE TEMPORARY TABLE counted_persons (person_ref VARCHAR(100) PRIMARY KEY)"))
    if scope == FlagScope.ALL:
        conn.execute(text(_COUNT_EVERY_ROSTER_PERSON))
    else:
        conn.execute(_statement(_COUNT_KEPT_PERSONS), {"reference_date": reference_date})


def _analyze(conn: Connection) -> None:
    """Give PostgreSQL's planner real row counts before the joins, without sampling a personal value.

    Autovacuum never analyses temporary tables, and the links of R were usually written minutes
    ago, so without this the planner guesses one row each and picks nested loops that take minutes
    on a real borough. ANALYZE writes sample values into pg_statistic, where they outlive the
    dropped tables (review item 13): every personal column's statistics target is set to 0 first,
    so ANALYZE records row counts and the statistics of code columns only. SQLite plans these joins
    well without statistics.
    """
    if conn.dialect.name != "postgresql":
        return
    temporary = ("counted_persons", *(f"cur_{d}" for d in CRITERIA_DATASETS))
    no_personal_statistics(conn, temporary, temporary=True)
    no_personal_statistics(conn, ("links", "person_consent"))  # set at schema creation; never trust a default
    for table in ("links", "person_consent", *temporary):
        conn.execute(text(f"ANALYZE {table}"))


def _drop_temporary_tables(conn: Connection) -> None:
    """Leave no copy of personal rows behind in a pooled session."""
    for table in ("counted_persons", JUDGED_PERSONS, *(f"cur_{d}" for d in CRITERIA_DATASETS)):
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))


@dataclass(frozen=True)
class Assessment:
    """What the criteria found for (R, scope), in counts only: ``counts`` (families assessed and
    eligible, families per flag) and ``indicators`` ("<flag>.<indicator>" -> families meeting it and,
    of them, the eligible)."""

    counts: dict[str, int]
    indicators: dict[str, dict[str, int]]


def assess_families(engine: Engine, reference_date: date, criteria: Criteria,
                    scope: str = FlagScope.ALL) -> Assessment:
    """Work out the six flags of every assessed family for R and store them in ``family_flags``.

    Scope ``all`` counts every roster person; scope ``kept`` assesses only families with at least
    one person kept by the consent stage, and only kept people count. A family is eligible when it
    has at least ``min_problems`` flags and at least one of its counted members is a child (under 18)
    at R (contract section 10: a dependent child). The rows for (R, scope) are replaced in one
    transaction, so re-running a date changes nothing. Returns counts only.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    params = criteria_parameters(reference_date, criteria)
    with engine.begin() as conn:
        create_current_tables(conn, reference_date, CRITERIA_DATASETS)
        _create_counted_persons(conn, reference_date, scope)
        _analyze(conn)

        roster = conn.execute(text(
            "SELECT f.family_ref, f.programme_status, "
            "CASE WHEN c.person_ref IS NULL THEN 0 ELSE 1 END AS counted, "
            "CASE WHEN (CAST(:reference_yyyymmdd AS INTEGER) - tfp_yyyymmdd(f.date_of_birth)) / 10000 < 18 "
            "THEN 1 ELSE 0 END AS child "
            "FROM cur_families f LEFT JOIN counted_persons c ON c.person_ref = f.person_ref"
        ), {"reference_yyyymmdd": params["reference_yyyymmdd"]}).all()
        status: dict[str, str] = {}
        with_child: set[str] = set()
        for family_ref, programme_status, counted, child in roster:
            if not counted or programme_status is None:  # None: a withdrawn person's row keeps references only
                continue
            # Members should agree; if they do not, the family is treated as intervention.
            if status.get(family_ref) != "intervention":
                status[family_ref] = programme_status
            if child:  # an unknown date of birth is no child: tfp_yyyymmdd(NULL) is NULL
                with_child.add(family_ref)

        met: dict[str, set[str]] = {f"{flag}.{name}": set() for flag in FLAGS for name in INDICATORS[flag]}
        flagged: dict[str, set[str]] = {}
        for flag in FLAGS:
            found = conn.execute(_statement(indicator_sql(flag)), params).all()
            flagged[flag] = {family_ref for family_ref, _ in found} & status.keys()
            for family_ref, indicator in found:
                if family_ref in status:
                    met[f"{flag}.{indicator}"].add(family_ref)  # KeyError: an indicator missing from INDICATORS
        rows = []
        for family_ref in sorted(status):
            flags = {flag: int(family_ref in flagged[flag]) for flag in FLAGS}
            problems = sum(flags.values())
            rows.append({
                "reference_date": reference_date, "scope": scope, "family_ref": family_ref,
                "programme_status": status[family_ref], **flags, "problem_count": problems,
                "eligible": int(problems >= criteria.min_problems and family_ref in with_child),
            })

        conn.execute(delete(family_flags).where(family_flags.c.reference_date == reference_date,
                                                family_flags.c.scope == scope))
        if rows:
            conn.execute(insert(family_flags), rows)
        _drop_temporary_tables(conn)

    eligible = {r["family_ref"] for r in rows if r["eligible"]}
    counts = {
        "families_assessed": len(rows),
        "families_eligible": len(eligible),
        **{flag: len(flagged[flag]) for flag in FLAGS},
    }
    indicators = {key: {"families": len(refs), "eligible": len(refs & eligible)} for key, refs in met.items()}
    return Assessment(counts=counts, indicators=indicators)


def compute_family_flags(engine: Engine, reference_date: date, criteria: Criteria,
                         scope: str = FlagScope.ALL) -> dict[str, int]:
    """:func:`assess_families`' counts: families assessed and eligible, and families per flag."""
    return assess_families(engine, reference_date, criteria, scope).counts


def run(ctx: RunContext) -> CriteriaResult:
    """The criteria task: the flags counting every roster person (for the evaluation's own checks) and
    counting kept people only (what is delivered)."""
    from dataclasses import replace

    from tfp.context import CriteriaResult
    from tfp.lineage import tables

    found = {scope: assess_families(ctx.warehouse, ctx.reference_date, ctx.config.criteria, scope=scope)
             for scope in SCOPES}
    # the indicators of what is delivered (kept people only), for the run report
    result = CriteriaResult.of({scope: a.counts for scope, a in found.items()},
                               indicators=found[FlagScope.KEPT].indicators)
    reads = [*(f"stg_{d}" for d in CRITERIA_DATASETS), "links", "person_consent"]
    return replace(result, lineage=tables(ctx.warehouse, reads, ["family_flags"]))

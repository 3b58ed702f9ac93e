"""The support_services source's one use: a cross-check of the submission's ``attached_month``.

Contract section 10 adds support_services / attendance (private and voluntary providers) and says it is
not used by the six criteria; issue 17 uses it "for the submission's attached_month cross-check" without
defining one. What tfp checks, per night, over families with at least one kept member (section 6) linked
to a support attendance active in the look-back window:

- ``intervention_attending``: intervention families attending support services;
- ``intervention_attending_without_attached_month``: of those, families with no ``attached_date`` on the
  roster, so an empty ``attached_month`` in the submission although the family is being supported;
- ``intervention_attending_before_attached_month``: of those with one, families whose earliest such
  attendance began before their attached month (``attached_month`` may be late);
- ``comparison_attending``: comparison families attending support services (contamination of the
  comparison group).

Counts only, never values, and nothing here changes a delivered byte: the counts go to the run report only,
disclosed by the report's rules (tfp.anonymise.disclose).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import Engine, text

SOURCE = "support_services"
DATASET = "support_attendance"
MEASURES: tuple[str, ...] = ("intervention_attending", "intervention_attending_without_attached_month",
                             "intervention_attending_before_attached_month", "comparison_attending")


def _as_date(value) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def crosscheck_counts(rows: Iterable[tuple[str, date | None, date | None]]) -> dict[str, int]:
    """The measures from (programme_status, attached_date, first_start) per attending family."""
    counts = dict.fromkeys(MEASURES, 0)
    for status, attached, first_start in rows:
        if status == "comparison":
            counts["comparison_attending"] += 1
        elif status == "intervention":
            counts["intervention_attending"] += 1
            if attached is None:
                counts["intervention_attending_without_attached_month"] += 1
            elif first_start is not None and first_start < attached.replace(day=1):
                counts["intervention_attending_before_attached_month"] += 1
    return counts


def crosscheck(engine: Engine, reference_date: date, lookback_months: int) -> dict[str, int]:
    """The exact counts for R, from R's links and consent (run after the consent stage)."""
    from tfp.criteria import window_start
    from tfp.current import create_current_tables, sql_file

    params = {"night": reference_date, "reference_date": reference_date,
              "window_start": window_start(reference_date, lookback_months)}
    with engine.connect() as conn:
        try:
            create_current_tables(conn, reference_date, ("families", DATASET))
            rows = conn.execute(text(sql_file("support/attending.sql")), params).all()
        finally:  # leave no copy of personal rows behind in a pooled session
            conn.rollback()
            for table in ("cur_families", f"cur_{DATASET}"):
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
            conn.commit()
    return crosscheck_counts((status, _as_date(attached), _as_date(start)) for _, status, attached, start in rows)


def disclosed(counts: dict[str, int], suppress_below: int, round_to: int) -> dict[str, str]:
    """The counts as the run report shows counts: [c] for 1 to suppress_below - 1, others rounded."""
    from tfp.anonymise import disclose

    return {measure: disclose(counts[measure], suppress_below, round_to) for measure in MEASURES}

"""Whether a night has input: no silent partial night (contract section 10).

A night never delivers when the roster has no file on or before R, or when a dataset of a source
in the run has no file on or before R. Files are counted from the landing log (drop files are
removed once landed), so data landed by an earlier night counts. Only dataset names are reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import Engine, select

from tfp.errors import MissingInput
from tfp.feeds import DATASETS
from tfp.statuses import LandingStatus
from tfp.warehouse import landing_log

ROSTER = "families"
# a landing that never completed or that failed a file-level rule is not input
_NOT_INPUT = (LandingStatus.LANDING, LandingStatus.REJECTED)


def required_datasets(sources: Iterable[str]) -> list[str]:
    """The roster always; every dataset of each source in the run."""
    chosen = set(sources)
    return sorted({ROSTER} | {name for name, d in DATASETS.items() if d.source in chosen})


def missing_datasets(engine: Engine, reference_date: date, sources: Iterable[str]) -> list[str]:
    needed = required_datasets(sources)
    with engine.connect() as conn:
        present = set(conn.execute(
            select(landing_log.c.dataset).distinct()
            .where(landing_log.c.file_date <= reference_date, landing_log.c.status.not_in(_NOT_INPUT))
        ).scalars())
    return [name for name in needed if name not in present]


def check_inputs(engine: Engine, reference_date: date, sources: Iterable[str]) -> dict[str, int]:
    """Raise MissingInput naming every needed dataset without a file; else counts only."""
    needed = required_datasets(sources)
    missing = missing_datasets(engine, reference_date, sources)
    if missing:
        raise MissingInput(reference_date, missing)
    return {"datasets_checked": len(needed)}

"""Feed freshness and volume (issue 14 item 4, contract section 10 ``freshness``): a partner that stopped
sending files, or sent one far smaller or larger than usual, is noticed.

Read from the landing log only, so a flag carries dataset names, file dates and row counts, never a
value from a file:

- **overdue**: a dataset whose newest file dated on or before R is older than R - ``max_age_days``
  (the roster 2 days, incidents and attendance 8, any other dataset 35, unless the config says otherwise);
- **volume**: a file landed by this night whose rows are more than ``volume_factor`` times, or less than
  1/``volume_factor`` of, the median rows of the dataset's last ``volume_history`` files before it, when
  at least :data:`MIN_HISTORY` such files exist.

A dataset with no file at all is not overdue here: :mod:`tfp.inputs` fails that night first.
``freshness.on_overdue`` decides what an overdue dataset does (``warn``: the night delivers and the flags
are logged, returned and reported; ``fail``: :class:`~tfp.errors.FeedOverdue`). A volume flag only warns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from statistics import median
from typing import Any

from sqlalchemy import Engine, func, select

from tfp.config import Freshness as FreshnessConfig
from tfp.errors import FeedOverdue
from tfp.inputs import required_datasets
from tfp.statuses import LandingStatus
from tfp.warehouse import landing_log

log = logging.getLogger(__name__)

# a volume flag needs this many earlier files: a median of one or two files says little
MIN_HISTORY = 3
# a landing that never completed or that failed a file-level rule is no file of the feed (as tfp.inputs)
_NOT_INPUT = (LandingStatus.LANDING, LandingStatus.REJECTED)
# the files whose rows count: read by validate and current (a superseded file was replaced by its re-send)
_COUNTED = (LandingStatus.VALIDATED, LandingStatus.STAGED)


@dataclass(frozen=True)
class Overdue:
    """A dataset whose newest file is older than its max age."""

    dataset: str
    newest: date
    max_age_days: int
    age_days: int

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "newest": self.newest.isoformat(), "max_age_days": self.max_age_days,
                "age_days": self.age_days}


@dataclass(frozen=True)
class VolumeFlag:
    """A file landed tonight whose row count is out of line with the dataset's recent files."""

    dataset: str
    file_date: date
    rows: int
    median: float
    earlier_files: int
    change: str  # "rise" or "fall"

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "file_date": self.file_date.isoformat(), "rows": self.rows,
                "median": self.median, "earlier_files": self.earlier_files, "change": self.change}


@dataclass(frozen=True)
class FreshnessReport:
    """One night's freshness: each dataset's newest file date (None: no file) and max age, and the flags."""

    reference_date: date
    newest: dict[str, date | None]
    max_age_days: dict[str, int]
    overdue: list[Overdue] = field(default_factory=list)
    volume: list[VolumeFlag] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (names, dates, counts): the task's XCom and the run report's section."""
        return {
            "datasets": {name: {"newest": d.isoformat() if d else None, "max_age_days": self.max_age_days[name]}
                         for name, d in sorted(self.newest.items())},
            "overdue": [o.to_json() for o in self.overdue],
            "volume": [v.to_json() for v in self.volume],
        }

    def warnings(self) -> list[str]:
        """One line per flag, names, dates and counts only: what the task log shows as warnings."""
        lines = [f"feed overdue: {o.dataset} newest file {o.newest} is {o.age_days} days old "
                 f"(max age {o.max_age_days} days)" for o in self.overdue]
        lines += [f"feed volume: {v.dataset} file of {v.file_date} has {v.rows} rows, a {v.change} against "
                  f"the median {v.median:g} of its last {v.earlier_files} files" for v in self.volume]
        return lines


def newest_files(engine: Engine, reference_date: date, datasets: Iterable[str]) -> dict[str, date | None]:
    """Each dataset's newest file date on or before R, from the landing log (None: no file)."""
    wanted = list(datasets)
    with engine.connect() as conn:
        rows = conn.execute(
            select(landing_log.c.dataset, func.max(landing_log.c.file_date))
            .where(landing_log.c.file_date <= reference_date, landing_log.c.status.not_in(_NOT_INPUT),
                   landing_log.c.dataset.in_(wanted))
            .group_by(landing_log.c.dataset)).all()
    found = {name: newest for name, newest in rows}
    return {name: found.get(name) for name in wanted}


def volume_flags(engine: Engine, reference_date: date, datasets: Iterable[str], factor: float,
                 history: int) -> list[VolumeFlag]:
    """The files landed by this night (dated on or before R) whose rows are out of line with the median
    of the dataset's last ``history`` counted files before them (by file date, then landing order)."""
    flags = []
    with engine.connect() as conn:
        rows = conn.execute(
            select(landing_log.c.id, landing_log.c.dataset, landing_log.c.file_date, landing_log.c.rows_read,
                   landing_log.c.landed_by_run)
            .where(landing_log.c.dataset.in_(list(datasets)), landing_log.c.status.in_(_COUNTED),
                   landing_log.c.rows_read.is_not(None), landing_log.c.file_date <= reference_date)
            .order_by(landing_log.c.dataset, landing_log.c.file_date, landing_log.c.id)).all()
    by_dataset: dict[str, list] = {}
    for row in rows:
        by_dataset.setdefault(row.dataset, []).append(row)
    for dataset, files in sorted(by_dataset.items()):
        for i, new in enumerate(files):
            if new.landed_by_run != reference_date:
                continue
            earlier = [f.rows_read for f in files[:i]][-history:]
            if len(earlier) < MIN_HISTORY:
                continue
            mid = float(median(earlier))
            if new.rows_read > factor * mid or new.rows_read < mid / factor:
                flags.append(VolumeFlag(dataset=dataset, file_date=new.file_date, rows=int(new.rows_read),
                                        median=mid, earlier_files=len(earlier),
                                        change="rise" if new.rows_read > mid else "fall"))
    return flags


def assess(engine: Engine, config: FreshnessConfig, reference_date: date, datasets: Iterable[str]) -> FreshnessReport:
    """The night's freshness of ``datasets``: newest file dates, overdue datasets and volume flags."""
    wanted = sorted(set(datasets))
    newest = newest_files(engine, reference_date, wanted)
    ages = {name: config.max_age(name) for name in wanted}
    overdue = [Overdue(name, d, ages[name], (reference_date - d).days) for name, d in newest.items()
               if d is not None and d < reference_date - timedelta(days=ages[name])]
    volume = volume_flags(engine, reference_date, wanted, config.volume_factor, config.volume_history)
    return FreshnessReport(reference_date=reference_date, newest=newest, max_age_days=ages, overdue=overdue,
                           volume=volume)


def check_freshness(engine: Engine, config: FreshnessConfig, reference_date: date,
                    sources: Iterable[str]) -> FreshnessReport:
    """The check of a night's sources (the roster and every dataset of each source in the run): each flag
    is logged as a warning; with ``on_overdue: fail`` an overdue dataset raises FeedOverdue."""
    report = assess(engine, config, reference_date, required_datasets(sources))
    for line in report.warnings():
        log.warning("%s", line)
    if report.overdue and config.on_overdue == "fail":
        raise FeedOverdue(reference_date, [(o.dataset, o.newest, o.max_age_days) for o in report.overdue])
    return report

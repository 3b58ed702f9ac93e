"""tfp_retention: personal data destroyed on time, provably, and nothing else (contract section 9).

Five categories, each with a cutoff derived from the run's reference date D and the config:

- ``landing_copies``: encrypted landing copies landed before D - landing_days. The copy's key is
  deleted with it (crypto-shredding), so even a backup of the file is unreadable.
- ``quarantine``: quarantined rows quarantined before D - quarantine_days.
- ``staging``: staged partner records whose dates (all non-empty event, start, end and release
  dates; not the date of birth) are all before D - staging_months. An open spell (a benefit claim
  or probation order not yet ended) is current and never aged, however long ago it started.
- ``withdrawn``: the partner records, links and needs of every person whose consent state at D is
  withdrawn, and the review queue's pairs (with their decisions) that name them or those records.
- ``programme_end``: on or after ``delete_all_after``, every personal record, landing copy and
  outbox file.

"Before the cutoff" is strict: something exactly ``landing_days`` old is kept, a day older goes.
Every category is counted, deleted (unless a dry run) and counted again; the deletion log and
``retention_report.json`` record counts only. SQLite is then checkpointed and vacuumed with
``secure_delete`` on, so deleted rows do not survive in free pages or the WAL; PostgreSQL tables
are vacuumed (see the README for what PostgreSQL cannot promise).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, and_, delete, func, or_, select, text, update

from tfp.config import Config, ConfigError
from tfp.current import record_key_column
from tfp.errors import RetentionIncomplete
from tfp.feeds import DATASETS, PARTNER_DATASETS
from tfp.fsmodes import atomic_write
from tfp.landing import LandingStore
from tfp.months import add_months
from tfp.review import delete_reviews, pairs_of_gone_records, pairs_of_people, review_rows
from tfp.statuses import ConsentState
from tfp.warehouse import (
    family_flags,
    landing_key,
    landing_log,
    links,
    person_consent,
    quarantine,
    released_generalisation,
    review_decision,
    review_night,
    review_queue,
    staging,
)

if TYPE_CHECKING:
    from tfp.context import PathResult, RetentionResult, RunContext

log = logging.getLogger(__name__)

CATEGORIES = ("landing_copies", "quarantine", "staging", "withdrawn", "programme_end")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    category: str
    cutoff: str
    found: int
    deleted: int
    unit: str


def check_consistency(config: Config) -> None:
    """Refuse a config whose retention would delete what the criteria still need."""
    r = config.retention
    if r.staging_months < config.criteria.lookback_months:
        raise ConfigError(
            f"retention.staging_months ({r.staging_months}) is shorter than criteria.lookback_months "
            f"({config.criteria.lookback_months}): staged records would be deleted while still in the window")
    if r.staging_months < 12 + 3:
        # the school_attendance flag reads the last three terms ended on or before R: up to 15 months back
        log.warning("retention.staging_months below 15 can delete school terms the criteria still read")


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


# -- landing copies ----------------------------------------------------------------------------

def _landing_copies_due(engine: Engine, cutoff: date):
    with engine.connect() as conn:
        return conn.execute(
            select(landing_log.c.id, landing_log.c.source)
            .where(landing_log.c.landing_path.is_not(None), landing_log.c.landed_at < _start_of(cutoff))
        ).all()


def _destroy_landing(engine: Engine, config: Config, rows) -> int:
    store = LandingStore.of(engine, config)
    for row in rows:
        store.destroy(row.id, row.source)
    return len(rows)


def landing_copies(engine: Engine, config: Config, reference_date: date, dry_run: bool) -> Outcome:
    cutoff = reference_date - timedelta(days=config.retention.landing_days)
    due = _landing_copies_due(engine, cutoff)
    deleted = 0 if dry_run else _destroy_landing(engine, config, due)
    if not dry_run and _landing_copies_due(engine, cutoff):
        raise RetentionIncomplete(f"landing copies landed before {cutoff} remain after deletion")
    return Outcome("landing_copies", cutoff.isoformat(), len(due), deleted, "files")


# -- quarantine --------------------------------------------------------------------------------

def _count(engine: Engine, table, *where) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def quarantined_rows(engine: Engine, config: Config, reference_date: date, dry_run: bool) -> Outcome:
    cutoff = reference_date - timedelta(days=config.retention.quarantine_days)
    condition = quarantine.c.quarantined_on < cutoff
    found = _count(engine, quarantine, condition)
    if not dry_run:
        with engine.begin() as conn:
            conn.execute(delete(quarantine).where(condition))
        if _count(engine, quarantine, condition):
            raise RetentionIncomplete(f"quarantined rows from before {cutoff} remain after deletion")
    return Outcome("quarantine", cutoff.isoformat(), found, 0 if dry_run else found, "rows")


# -- aged staging rows -------------------------------------------------------------------------

def _event_dates(dataset: str) -> list[str]:
    d = DATASETS[dataset]
    return [c for c in (*d.dates, *d.datetimes) if c != "date_of_birth"]


def _open_spell(dataset: str):
    """The rows of a spell that has not ended: they are current, however long ago they started.

    A benefit claim is open while ``claim_end`` is empty. A probation order is open while
    ``end_date`` is empty, except custody, which ends at release: open only while both are empty.
    The health feed's spells (contract section 10): a treatment episode while ``episode_end`` is empty,
    a mental-health contact while ``discharge_date`` is empty.
    A support_services attendance is open while ``end_date`` is empty.
    """
    table = staging[dataset]
    if dataset == "benefits":
        return table.c.claim_end.is_(None)
    if dataset == "treatment_episodes":
        return table.c.episode_end.is_(None)
    if dataset == "mental_health_contacts":
        return table.c.discharge_date.is_(None)
    if dataset == "support_attendance":  # attendance of a programme that has not ended
        return table.c.end_date.is_(None)
    if dataset == "cases":
        return and_(table.c.end_date.is_(None),
                    or_(table.c.order_type.is_(None), table.c.order_type != "custody", table.c.release_date.is_(None)))
    return None


def _aged_condition(dataset: str, cutoff: date):
    """Every non-empty event date before the cutoff, at least one of them present, and not an open spell."""
    table = staging[dataset]
    columns = [table.c[c] for c in _event_dates(dataset)]
    if not columns:  # attendance: a term's end date stands for its date
        return None
    cutoff_value = _start_of(cutoff).replace(tzinfo=None) if DATASETS[dataset].datetimes else cutoff
    all_old = and_(*(or_(c.is_(None), c < cutoff_value) for c in columns))
    any_present = or_(*(c.is_not(None) for c in columns))
    still_open = _open_spell(dataset)
    if still_open is None:
        return and_(all_old, any_present)
    return and_(all_old, any_present, ~still_open)


def _aged_terms(cutoff: date) -> list[str]:
    """Term codes whose term ended before the cutoff (all terms from 1990 on)."""
    from tfp.feeds import term_end

    return [f"{y}-{t}" for y in range(1990, cutoff.year + 1) for t in ("AUT", "SPR", "SUM")
            if (term_end(f"{y}-{t}") or cutoff) < cutoff]


def aged_staging(engine: Engine, config: Config, reference_date: date, dry_run: bool) -> Outcome:
    cutoff = add_months(reference_date, -config.retention.staging_months)
    found = 0
    conditions = {}
    for dataset in PARTNER_DATASETS:
        condition = (_aged_condition(dataset, cutoff) if dataset != "attendance"
                     else staging["attendance"].c.term.in_(_aged_terms(cutoff)))
        conditions[dataset] = condition
        found += _count(engine, staging[dataset], condition)
    with engine.connect() as conn:
        reviews = _reviews_left_without_record(conn, conditions)
        found += review_rows(conn, reviews)
    if not dry_run:
        with engine.begin() as conn:
            delete_reviews(conn, reviews)
            for dataset, condition in conditions.items():
                conn.execute(delete(staging[dataset]).where(condition))
        remaining = sum(_count(engine, staging[d], c) for d, c in conditions.items())
        with engine.connect() as conn:
            remaining += len(pairs_of_gone_records(conn))
        if remaining:
            raise RetentionIncomplete(f"{remaining} staged records older than {cutoff} (or review pairs of them) "
                                      "remain after deletion")
    return Outcome("staging", cutoff.isoformat(), found, 0 if dry_run else found, "rows")


def _reviews_left_without_record(conn, conditions) -> list[str]:
    """Review ids (tfp.review) whose record keeps no staged row once the rows matching ``conditions``
    (dataset -> condition) go: the pair, its nights and its decisions go with the record."""
    from sqlalchemy import exists, false

    from tfp.warehouse import review_queue

    found: set[str] = set(pairs_of_gone_records(conn))
    for dataset, condition in conditions.items():
        table = staging[dataset]
        survivor = exists().where(record_key_column(table) == review_queue.c.record_id,
                                  ~func.coalesce(condition, false()))
        found.update(conn.execute(select(review_queue.c.review_id).where(
            review_queue.c.dataset == dataset, ~survivor)).scalars().all())
    return sorted(found)


# -- withdrawn people --------------------------------------------------------------------------

def withdrawn_people(engine: Engine, reference_date: date) -> set[str]:
    """Everyone whose consent state at D is withdrawn (contract section 6)."""
    from tfp.consent import consent_states
    from tfp.current import current_rows

    with engine.connect() as conn:
        events = current_rows(conn, "consent", reference_date)
    if events.empty:
        return set()
    states = consent_states(events, reference_date)
    return set(states.loc[states["state"] == ConsentState.WITHDRAWN, "person_ref"])


# What stays of a withdrawn person's roster row: their reference, their family's, and the row's own keys.
ROSTER_KEPT: tuple[str, ...] = ("landing_id", "record_id", "file_date", "row_number", "person_ref", "family_ref")
ROSTER_SCRUBBED: tuple[str, ...] = tuple(c.name for c in staging["families"].c if c.name not in ROSTER_KEPT)


def ever_withdrawn(conn, until: date | None = None) -> set[str]:
    """Everyone with a ``tfp_evaluation`` withdrawal recorded (on or before ``until``; None: ever).

    A person withdrawn stays withdrawn for their identifiers: consent given again later does not
    bring back what the withdrawal took away.
    """
    from tfp.consent import as_datetime
    from tfp.current import current_rows

    events = current_rows(conn, "consent", until or date(9999, 12, 31))
    if events.empty:
        return set()
    chosen = events[(events["purpose"] == "tfp_evaluation") & (events["status"] == ConsentState.WITHDRAWN)]
    return {str(ref) for ref, at in zip(chosen["person_ref"], chosen["recorded_at"], strict=True)
            if until is None or ((when := as_datetime(at)) is not None and when.date() <= until)}


def _roster_identified(people: list[str]):
    table = staging["families"]
    return and_(table.c.person_ref.in_(people), or_(*(table.c[c].is_not(None) for c in ROSTER_SCRUBBED)))


def scrub_roster(conn, people: set[str]) -> int:
    """Empty every column but ROSTER_KEPT of these people's rows in every roster snapshot; returns rows changed."""
    refs = sorted(people)
    table = staging["families"]
    changed = 0
    for i in range(0, len(refs), 500):
        changed += conn.execute(update(table).where(_roster_identified(refs[i:i + 500]))
                                .values({c: None for c in ROSTER_SCRUBBED})).rowcount
    return changed


def _roster_rows_identified(engine: Engine, people: set[str]) -> int:
    refs = sorted(people)
    return sum(_count(engine, staging["families"], _roster_identified(refs[i:i + 500]))
               for i in range(0, len(refs), 500))


def _quarantined_of(engine: Engine, people: set[str]) -> list[int]:
    """Quarantined rows of the council's own feeds (roster, needs, consent) that name one of ``people``."""
    if not people:
        return []
    with engine.connect() as conn:
        rows = conn.execute(select(quarantine.c.id, quarantine.c.row_json).join(
            landing_log, landing_log.c.id == quarantine.c.landing_id).where(
            landing_log.c.source == "children_services")).all()
    found = []
    for row_id, row_json in rows:
        try:
            ref = json.loads(row_json).get("person_ref")
        except (ValueError, AttributeError):
            continue
        if isinstance(ref, str) and ref.strip() in people:
            found.append(row_id)
    return found


def _withdrawn_targets(engine: Engine, people: set[str]) -> dict[str, list[tuple[int, str, str]]]:
    """(landing_id, record_id, record key) of every staged partner record ever linked to one of ``people``
    (links name a record by its key: its record_id, qualified by its partner unless the short form's)."""
    targets: dict[str, set[tuple[int, str, str]]] = {d: set() for d in PARTNER_DATASETS}
    if not people:
        return {d: [] for d in PARTNER_DATASETS}
    with engine.connect() as conn:
        linked = conn.execute(
            select(links.c.dataset, links.c.record_id).where(links.c.person_ref.in_(sorted(people))).distinct()
        ).all()
        by_dataset: dict[str, set[str]] = {}
        for dataset, record_id in linked:
            by_dataset.setdefault(dataset, set()).add(record_id)
        for dataset, record_ids in by_dataset.items():
            table = staging[dataset]
            ids = sorted(record_ids)
            key = record_key_column(table)
            for i in range(0, len(ids), 500):
                for landing_id, record_id, record in conn.execute(
                    select(table.c.landing_id, table.c.record_id, key).where(key.in_(ids[i:i + 500]))
                ):
                    targets[dataset].add((landing_id, record_id, record))
    return {d: sorted(t) for d, t in targets.items()}


def withdrawn(engine: Engine, config: Config, reference_date: date, dry_run: bool) -> Outcome:
    people = withdrawn_people(engine, reference_date)
    targets = _withdrawn_targets(engine, people)
    refs = sorted(people)
    needs = staging["needs"]
    n_needs = sum(_count(engine, needs, needs.c.person_ref.in_(refs[i:i + 500])) for i in range(0, len(refs), 500))
    n_links = sum(_count(engine, links, links.c.person_ref.in_(refs[i:i + 500])) for i in range(0, len(refs), 500))
    released = released_generalisation
    n_released = sum(_count(engine, released, released.c.person_ref.in_(refs[i:i + 500]))
                     for i in range(0, len(refs), 500))
    # the roster keeps only the references of anyone who withdrew on or before D, whatever their state now
    with engine.connect() as conn:
        roster_people = ever_withdrawn(conn, reference_date) | people
    n_roster = _roster_rows_identified(engine, roster_people)
    held = _quarantined_of(engine, roster_people)
    # review pairs naming a withdrawn person, and those of records deleted with them (tfp.review)
    with engine.connect() as conn:
        gone = {(d, key) for d, pairs in targets.items() for _, _, key in pairs}
        reviews = sorted(set(pairs_of_people(conn, roster_people)) | set(_reviews_of_records(conn, gone)))
        n_reviews = review_rows(conn, reviews)
    found = (sum(len(t) for t in targets.values()) + n_needs + n_links + n_released + n_roster + len(held)
             + n_reviews)
    if not dry_run and roster_people:
        with engine.begin() as conn:
            delete_reviews(conn, reviews)
            scrub_roster(conn, roster_people)
            for i in range(0, len(held), 500):
                conn.execute(delete(quarantine).where(quarantine.c.id.in_(held[i:i + 500])))
            for dataset, pairs in targets.items():
                table = staging[dataset]
                for landing_id, record_id, _ in pairs:
                    conn.execute(delete(table).where(table.c.landing_id == landing_id, table.c.record_id == record_id))
            for i in range(0, len(refs), 500):
                chunk = refs[i:i + 500]
                conn.execute(delete(needs).where(needs.c.person_ref.in_(chunk)))
                conn.execute(delete(links).where(links.c.person_ref.in_(chunk)))
                conn.execute(delete(released).where(released.c.person_ref.in_(chunk)))
        again = _withdrawn_targets(engine, people)
        left = sum(len(t) for t in again.values()) + sum(
            _count(engine, needs, needs.c.person_ref.in_(refs[i:i + 500])) + _count(
                engine, released, released.c.person_ref.in_(refs[i:i + 500])) for i in range(0, len(refs), 500))
        left += _roster_rows_identified(engine, roster_people) + len(_quarantined_of(engine, roster_people))
        with engine.connect() as conn:
            left += len(pairs_of_people(conn, roster_people))
        if left:
            raise RetentionIncomplete(f"{left} records of withdrawn people remain after deletion")
    return Outcome("withdrawn", reference_date.isoformat(), found, 0 if dry_run else found, "rows")


def _reviews_of_records(conn, records: set[tuple[str, str]]) -> list[str]:
    """Review ids of these (dataset, record_id) records."""
    from tfp.warehouse import review_queue

    found: list[str] = []
    for dataset in sorted({d for d, _ in records}):
        ids = sorted(r for d, r in records if d == dataset)
        for i in range(0, len(ids), 500):
            found += conn.execute(select(review_queue.c.review_id).where(
                review_queue.c.dataset == dataset, review_queue.c.record_id.in_(ids[i:i + 500]))).scalars().all()
    return found


# -- programme end -----------------------------------------------------------------------------

PERSONAL_TABLES = (*staging.values(), quarantine, links, family_flags, person_consent, released_generalisation,
                   review_night, review_decision, review_queue, landing_key)


def programme_end(engine: Engine, config: Config, reference_date: date, dry_run: bool) -> Outcome:
    end = config.retention.delete_all_after
    if reference_date < end:
        return Outcome("programme_end", end.isoformat(), 0, 0, "rows")
    rows = sum(_count(engine, t) for t in PERSONAL_TABLES)
    copies = _landing_copies_due(engine, reference_date + timedelta(days=1))
    outbox = [p for p in config.outbox_dir.rglob("*") if p.is_file()] if config.outbox_dir.exists() else []
    stray = LandingStore.of(engine, config).files()
    from tfp.extract import remove_local_feed_files  # partners' plaintext left in local drop folders
    from tfp.link import spill_root

    spill = spill_root(config)
    spilled = [p for p in spill.rglob("*") if p.is_file()] if spill.exists() else []
    found = rows + len(copies) + len(outbox) + len(spilled) + remove_local_feed_files(config, dry_run=True)
    if not dry_run:
        remove_local_feed_files(config)
        _destroy_landing(engine, config, copies)
        with engine.begin() as conn:
            for table in PERSONAL_TABLES:
                conn.execute(delete(table))
        if config.outbox_dir.exists():
            shutil.rmtree(config.outbox_dir)
        for path in stray:
            path.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)  # what a killed link left behind
        left = sum(_count(engine, t) for t in PERSONAL_TABLES)
        if left or (config.outbox_dir.exists() and any(config.outbox_dir.rglob("*"))):
            raise RetentionIncomplete(f"{left} personal rows remain after the programme-end purge")
        if engine.dialect.name == "postgresql":
            purge_catalog(engine)
    return Outcome("programme_end", end.isoformat(), found, 0 if dry_run else found, "rows+files")


def purge_catalog(engine: Engine) -> None:
    """PostgreSQL: take the personal tables' statistics and every dead catalog version out of the files.

    Statistics (pg_statistic) go only with their table, so the emptied tables are dropped and
    created again (new files, no statistics); then pg_statistic is rewritten by ``VACUUM FULL``,
    which only the database owner or a superuser may do: anyone else gets RetentionIncomplete
    rather than a purge that silently left sample values behind (review item 13).
    """
    from tfp.warehouse import metadata, no_personal_statistics

    tables = list(PERSONAL_TABLES)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(7423001)"))  # the schema lock of create_schema
        metadata.drop_all(conn, tables=tables)
        metadata.create_all(conn, tables=tables)
        no_personal_statistics(conn, [t.name for t in tables])
    with engine.connect() as conn:
        may = conn.execute(text(
            "SELECT r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER') FROM pg_roles r, pg_database d "
            "WHERE r.rolname = current_user AND d.datname = current_database()")).scalar_one()
    if not may:
        raise RetentionIncomplete("VACUUM FULL pg_catalog.pg_statistic needs the database owner or a superuser: "
                                  "run it as one (see the README's PostgreSQL section)")
    wait_for_older_snapshots(engine, catalog=True)
    vacuum_politely(engine, "VACUUM FULL pg_catalog.pg_statistic")


# -- making deletion stick ---------------------------------------------------------------------

# How long retention waits for older transactions of the warehouse's database to end before it
# compacts; a night's longest transaction (criteria on a big borough) is minutes, not hours.
SNAPSHOT_WAIT_SECONDS = 900.0

# Everything that holds PostgreSQL's removal horizon at or before the mark, so that VACUUM would keep
# (VACUUM FULL: copy) the deleted row versions: a session's snapshot (backend_xmin) or its own open
# transaction id (backend_xid: a read-committed session idle in transaction after a write has no snapshot
# between statements, yet its xid holds the horizon); a physical walsender's hot-standby feedback (no
# datname); a prepared transaction (in no session); a replication slot's xmin, and, when the vacuum is of a
# catalog (pg_statistic), a logical slot's catalog_xmin: it holds back catalogs only, so a forgotten logical
# slot does not stop the vacuum of tfp's own tables. backend_xmin and backend_xid are shown for every role.
# Snapshots count in this database (autovacuum's ANALYZE too); running transactions, prepared ones
# included, in every database, because a snapshot's xmin, the vacuum's own included, is the oldest
# transaction running on the whole server: seen here, another database's VACUUM FULL kept this
# database's deleted keys "not removable yet".
_OLDER_SNAPSHOTS = """
SELECT
  (SELECT count(*) FROM pg_stat_activity
   WHERE pid <> pg_backend_pid()
     AND (((datname = current_database() OR datname IS NULL)
           AND age(backend_xmin) > age(CAST(CAST(:mark AS TEXT) AS xid)))
          OR age(backend_xid) > age(CAST(CAST(:mark AS TEXT) AS xid))))
+ (SELECT count(*) FROM pg_prepared_xacts WHERE age(transaction) > age(CAST(CAST(:mark AS TEXT) AS xid)))
+ (SELECT count(*) FROM pg_replication_slots
   WHERE (database IS NULL OR database = current_database())
     AND (age(xmin) > age(CAST(CAST(:mark AS TEXT) AS xid))
          OR (:catalog AND age(catalog_xmin) > age(CAST(CAST(:mark AS TEXT) AS xid)))))
"""


def wait_for_older_snapshots(engine: Engine, timeout: float = SNAPSHOT_WAIT_SECONDS, poll: float = 0.5,
                             clock: Callable[[], float] | None = None, catalog: bool = False) -> None:
    """PostgreSQL: wait until no other session of the server still holds back the rows retention deleted.

    VACUUM, FULL included, keeps every row version that a running transaction's snapshot may still
    read. A session that began before the deletions (a report, a pg_dump, an idle-in-transaction
    client) would keep a destroyed landing key, or a purged table's sampled values, in the files
    after the vacuum that was meant to remove them. So: take a transaction id now, after every
    deletion committed, and wait until every other session's snapshot is at least that new.
    ``catalog``: the vacuum is of a system catalog, which logical replication slots also hold back.
    RetentionIncomplete names the count, never the sessions' queries, if they outlast ``timeout``.
    """
    import time as clock_module

    now = clock or clock_module.monotonic
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        mark = conn.execute(text("SELECT txid_current() % 4294967296")).scalar_one()
        deadline = now() + timeout
        while True:
            older = conn.execute(text(_OLDER_SNAPSHOTS), {"mark": str(mark), "catalog": catalog}).scalar_one()
            if not older:
                return
            if now() >= deadline:
                raise RetentionIncomplete(
                    f"{older} database sessions began before retention's deletions and are still open, so the "
                    "deleted rows cannot be vacuumed out of the files yet",
                    hint="end them (pg_stat_activity shows sessions 'idle in transaction'; pg_prepared_xacts "
                         "prepared transactions; pg_replication_slots slots whose xmin or catalog_xmin lags), "
                         "then run tfp retention again")
            log.info("retention waits for %d older database sessions to end before vacuuming", older)
            clock_module.sleep(poll)

def compact(engine: Engine, timeout: float = SNAPSHOT_WAIT_SECONDS) -> None:
    """Make deleted rows unrecoverable from the database files where the database allows it."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
            conn.commit()
        raw = engine.raw_connection()
        try:
            raw.isolation_level = None
            raw.execute("VACUUM")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
    elif engine.dialect.name == "postgresql":
        wait_for_older_snapshots(engine, timeout)
        for table in PERSONAL_TABLES:
            # VACUUM frees space without overwriting it; the key table is tiny, so it is rewritten
            # whole: a destroyed landing copy's key must not stay readable in a free slot of its file
            full = "FULL " if table is landing_key else ""
            vacuum_politely(engine, f"VACUUM {full}{table.name}", timeout)


# How long one try for a vacuum's lock may wait: while it waits, every later query of that table queues
# behind it (PostgreSQL's lock queue), so a try is short and the night's queries pass in between. Longer
# than deadlock_timeout (1 s by default), after which a waiting VACUUM has an autovacuum that blocks it
# cancelled: a shorter try would give up before that and wait for the autovacuum to finish instead.
LOCK_TRY = "5s"


def vacuum_politely(engine: Engine, statement: str, timeout: float = SNAPSHOT_WAIT_SECONDS,
                    poll: float = 0.5) -> None:
    """Run a VACUUM that needs a lock, trying for it ``LOCK_TRY`` at a time until ``timeout``.

    A VACUUM FULL waiting without a limit for a session that holds a share lock (idle in transaction
    after a read) would hold up every later reader of the table as long as that session lasts, and its
    backend would go on waiting after a retention task killed at its timeout. RetentionIncomplete names
    the statement's verb only if the lock is not free by then."""
    import time as clock_module

    from sqlalchemy.exc import OperationalError

    deadline = clock_module.monotonic() + timeout
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"SET lock_timeout = '{LOCK_TRY}'"))
        while True:
            try:
                conn.execute(text(statement))
                return
            except OperationalError as e:
                if getattr(e.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
            if clock_module.monotonic() >= deadline:
                raise RetentionIncomplete(
                    "another database session holds a lock on a personal table, so the deleted rows cannot be "
                    "vacuumed out of the files yet",
                    hint="end it (pg_locks and pg_stat_activity show sessions 'idle in transaction'), then run "
                         "tfp retention again")
            log.info("retention waits for a lock to vacuum (%s)", statement.split()[-1])
            clock_module.sleep(poll)


RUNNERS = {
    "landing_copies": landing_copies,
    "quarantine": quarantined_rows,
    "staging": aged_staging,
    "withdrawn": withdrawn,
    "programme_end": programme_end,
}


def run_category(engine: Engine, config: Config, category: str, reference_date: date, dry_run: bool,
                 clock: Callable[[], datetime] | None = None) -> Outcome:
    """Count, delete and re-count one category, and log it in the deletion log (counts only)."""
    from tfp.warehouse import deletion_log

    check_consistency(config)
    outcome = RUNNERS[category](engine, config, reference_date, dry_run)
    with engine.begin() as conn:
        conn.execute(deletion_log.insert().values(
            run_date=reference_date, category=category, cutoff=outcome.cutoff,
            deleted=outcome.found if dry_run else outcome.deleted, unit=outcome.unit, dry_run=dry_run,
            logged_at=(clock or _utc_now)()))
    log.info("retention %s: found %d, deleted %d (%s)%s", category, outcome.found, outcome.deleted,
             outcome.unit, " dry run" if dry_run else "")
    return outcome


def write_retention_report(config: Config, reference_date: date, dry_run: bool,
                           results: Mapping[str, RetentionResult]) -> str:
    """retention_report.json of a run: each category's cutoff, what was found and deleted (counts only)."""
    outcomes = {category: result.to_xcom() for category, result in results.items()}
    folder = config.reports_dir / reference_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "retention_report.json"
    body = {"run_date": reference_date.isoformat(), "dry_run": dry_run,
            "categories": {c: outcomes[c] for c in CATEGORIES if c in outcomes}}
    atomic_write(path, json.dumps(body, indent=2, sort_keys=True) + "\n", mode=None)  # counts only
    return str(path)


def run(ctx: RunContext) -> RetentionResult:
    """A retention category's task (the context's ``category``): count, delete, re-count, log."""
    from tfp.context import RetentionResult

    if ctx.category not in CATEGORIES:
        raise ValueError(f"retention runs per category: open its context with category= one of {CATEGORIES}")
    outcome = run_category(ctx.warehouse, ctx.config, ctx.category, ctx.reference_date, ctx.dry_run, ctx.clock)
    return RetentionResult(stage="retention", counts={"found": outcome.found, "deleted": outcome.deleted},
                           category=outcome.category, cutoff=outcome.cutoff, unit=outcome.unit)


def finish(ctx: RunContext) -> PathResult:
    """The retention finish task: make the deletions stick (vacuum, unless a dry run) and write
    retention_report.json from the categories' results (the context's ``upstream``)."""
    from tfp.context import PathResult, RetentionResult

    if not ctx.dry_run:
        compact(ctx.warehouse)
    results = {category: result for category, result in ctx.upstream.items() if isinstance(result, RetentionResult)}
    return PathResult(stage="retention_finish",
                      path=Path(write_retention_report(ctx.config, ctx.reference_date, ctx.dry_run, results)))

"""The warehouse: one SQLAlchemy schema that runs on SQLite (the default) and PostgreSQL.

Personal data at rest lives only here and in the encrypted landing copies. Dates are real DATE
columns; SQL that needs a date as a number (ages on an event date) calls ``tfp_yyyymmdd(d)``,
which this module defines on both databases so that ``include/sql`` stays portable.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)

from tfp.config import ConfigError
from tfp.errors import SchemaAhead, SchemaBehind
from tfp.feeds import DATASETS, Dataset
from tfp.statuses import (
    CHECKED,
    ConsentState,
    FlagScope,
    LandingStatus,
    LinkMethod,
    ReviewDecision,
    ReviewReason,
    check_sql,
)

metadata = MetaData()


def _source_as_partner(context) -> str:
    """A landing row written without a partner came from the short form's: the source's own name."""
    return context.get_current_parameters()["source"]

landing_log = Table(
    "landing_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(40), nullable=False),
    # the partner the file came from (revision 0006); the source's own name in the short form. A record_id
    # is unique per partner, and the as-of rules of contract section 3 apply per partner.
    Column("partner", String(40), nullable=False, server_default="", default=_source_as_partner),
    Column("dataset", String(40), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("file_date", Date, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("bytes", BigInteger, nullable=False),
    Column("landed_at", DateTime(timezone=True), nullable=False),
    Column("landed_by_run", Date, nullable=False),  # the reference date of the run that landed it
    # tfp.statuses.LandingStatus: landed -> validated -> staged | rejected; staged -> superseded when the
    # partner re-sends the same file name; duplicate: the same bytes were landed before (duplicate_of).
    Column("status", String(20), nullable=False),
    Column("duplicate_of", Integer, nullable=True),
    Column("rejection", Text, nullable=True),  # the file-level rule it broke (never a value from the file)
    Column("landing_path", String(500), nullable=True),  # relative to work_dir; NULL once destroyed
    Column("rows_read", Integer, nullable=True),
    Column("rows_staged", Integer, nullable=True),
    Column("rows_quarantined", Integer, nullable=True),
    # Great Expectations' outcome per expectation (rule, type, success, counts): never a value
    Column("expectation_results", Text, nullable=True),
    Column("gx_result", Text, nullable=True),  # GX's validation result without values (Data Docs)
    Column("destroyed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(check_sql("status", LandingStatus), name="ck_landing_log_status"),
)

# Partner feedback (contract section 10): which landings a partner has been told about, by which feedback
# file on which night. A landing is reported once; nothing personal (ids, names, dates, checksums).
feedback_log = Table(
    "feedback_log", metadata,
    Column("landing_id", Integer, ForeignKey("landing_log.id"), primary_key=True),
    Column("partner", String(40), nullable=False),
    Column("reference_date", Date, nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),  # of the feedback CSV sent
    Column("sent_at", DateTime(timezone=True), nullable=False),
)

# One AES-256-GCM key per landing copy. Deleting the row destroys the copy (crypto-shredding).
landing_key = Table(
    "landing_key", metadata,
    Column("landing_id", Integer, ForeignKey("landing_log.id"), primary_key=True),
    Column("key", LargeBinary(32), nullable=False),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("landing_id", Integer, ForeignKey("landing_log.id"), nullable=False, index=True),
    Column("row_number", Integer, nullable=False),  # 1 = first data row after the header
    Column("rules", Text, nullable=False),  # the rules it broke, "; "-joined rule names
    Column("row_json", Text, nullable=False),  # the raw row, kept for the partner to correct
    Column("quarantined_on", Date, nullable=False),
)

links = Table(
    "links", metadata,
    Column("reference_date", Date, primary_key=True),
    Column("dataset", String(40), primary_key=True),
    Column("record_id", String(100), primary_key=True),
    Column("person_ref", String(100), nullable=True),
    Column("match_probability", Float, nullable=True),
    Column("method", String(20), nullable=False),  # tfp.statuses.LinkMethod
    CheckConstraint(check_sql("method", LinkMethod), name="ck_links_method"),
)

# The linkage review queue (issue 15): one row per (record, candidate person) pair ever sent to review,
# with a random review id that stays the pair's for as long as the pair is kept. A decision is about the
# pair, not a night. Personal: record_id and person_ref (retention deletes the rows with the record or
# the person).
review_queue = Table(
    "review_queue", metadata,
    Column("review_id", String(32), primary_key=True),
    Column("dataset", String(40), nullable=False),
    Column("record_id", String(100), nullable=False),
    Column("person_ref", String(100), nullable=False),
    Column("first_queued_on", Date, nullable=False),  # the earliest reference date that queued the pair
    UniqueConstraint("dataset", "record_id", "person_ref", name="uq_review_queue_pair"),
)

# Which pairs each night queued (a re-run of the date replaces its rows), with the pair's probability
# that night and why: the export of date D is D's rows; the run report counts them.
review_night = Table(
    "review_night", metadata,
    Column("reference_date", Date, primary_key=True),
    Column("review_id", String(32), ForeignKey("review_queue.review_id"), primary_key=True),
    Column("reason", String(20), nullable=False),  # tfp.statuses.ReviewReason
    Column("match_probability", Float, nullable=True),
    CheckConstraint(check_sql("reason", ReviewReason), name="ck_review_night_reason"),
)

# Every decision a reviewer made (tfp review import), kept as history: night R applies, for each pair,
# the latest decision whose decided_at falls on or before R (Europe/London), so a backfill of an earlier
# date reproduces that date. reviewer is who decided (a staff name or id, personal: never logged).
review_decision = Table(
    "review_decision", metadata,
    Column("review_id", String(32), ForeignKey("review_queue.review_id"), primary_key=True),
    Column("decided_at", DateTime(timezone=True), primary_key=True),
    Column("decided_on", Date, nullable=False),  # decided_at's date in Europe/London: what "as of R" compares
    Column("decision", String(20), nullable=False),  # tfp.statuses.ReviewDecision
    Column("reviewer", String(100), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("imported_by", String(100), nullable=False),  # the operating-system user who ran the import
    CheckConstraint(check_sql("decision", ReviewDecision), name="ck_review_decision_decision"),
)

FLAGS: tuple[str, ...] = ("crime_asb", "school_attendance", "children_need_help", "worklessness",
                          "domestic_abuse", "health")

family_flags = Table(
    "family_flags", metadata,
    Column("reference_date", Date, primary_key=True),
    Column("scope", String(10), primary_key=True),  # all: every roster person counted; kept: only kept people
    Column("family_ref", String(100), primary_key=True),
    Column("programme_status", String(20), nullable=False),
    *(Column(flag, Integer, nullable=False) for flag in FLAGS),
    Column("problem_count", Integer, nullable=False),
    Column("eligible", Integer, nullable=False),
    CheckConstraint(check_sql("scope", FlagScope), name="ck_family_flags_scope"),
)

person_consent = Table(
    "person_consent", metadata,
    Column("reference_date", Date, primary_key=True),
    Column("person_ref", String(100), primary_key=True),
    Column("state", String(20), nullable=False),  # tfp.statuses.ConsentState
    Column("state_on", Date, nullable=True),
    Column("kept", Boolean, nullable=False),
    CheckConstraint(check_sql("state", ConsentState), name="ck_person_consent_state"),
)

# The generalisation level of each quasi-identifier released for a person on a night (0 = the value
# itself, then tfp.anonymise.LEVELS), so that no later release is finer (contract section 10).
# release_order numbers the nights in the order they were first packaged; personal (person_ref).
released_generalisation = Table(
    "released_generalisation", metadata,
    Column("person_ref", String(100), primary_key=True),
    Column("reference_date", Date, primary_key=True),
    Column("release_order", Integer, nullable=False, index=True),
    Column("year_of_birth", Integer, nullable=False),
    Column("postcode_district", Integer, nullable=False),
    Column("sex", Integer, nullable=False),
)

delivery_log = Table(
    "delivery_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reference_date", Date, nullable=False, index=True),
    Column("file_name", String(255), nullable=False),
    Column("destination", String(500), nullable=False),
    Column("sha256", String(64), nullable=False),  # of the delivered (possibly encrypted) bytes
    Column("plaintext_sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("rows", Integer, nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
)

deletion_log = Table(
    "deletion_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_date", Date, nullable=False),
    Column("category", String(40), nullable=False),
    Column("cutoff", String(40), nullable=True),
    Column("deleted", Integer, nullable=False),
    Column("unit", String(10), nullable=False),  # rows | files
    Column("dry_run", Boolean, nullable=False),
    Column("logged_at", DateTime(timezone=True), nullable=False),
)


def _column_type(dataset: Dataset, column: str):
    if column in dataset.dates:
        return Date
    if column in dataset.datetimes:
        return DateTime(timezone=False)
    if column in dataset.integers:
        return Integer
    if column in dataset.decimals:
        return Float
    if dataset.codes.get(column) == ("Y", "N"):
        return Boolean
    return String(200)


def _staging_table(dataset: Dataset) -> Table:
    return Table(
        f"stg_{dataset.name}", metadata,
        Column("landing_id", Integer, ForeignKey("landing_log.id"), primary_key=True),
        Column("record_id", String(100), primary_key=True),
        Column("file_date", Date, nullable=False, index=True),
        Column("row_number", Integer, nullable=False),
        *(Column(c, _column_type(dataset, c), nullable=True) for c in dataset.columns if c != "record_id"),
    )


staging: dict[str, Table] = {name: _staging_table(d) for name, d in DATASETS.items()}


def _sqlite_functions(dbapi_connection, _record) -> None:
    dbapi_connection.create_function(
        "tfp_yyyymmdd", 1, lambda d: int(str(d)[:10].replace("-", "")) if d else None, deterministic=True
    )
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite warehouse URL; None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _private_sqlite_file(path: Path) -> None:
    """Create the warehouse file 0600 (in a 0700 folder when tfp makes the folder) before SQLite does, so
    its -journal, -wal and -shm files, which SQLite gives the database file's mode, are 0600 too; an
    older warehouse file and its companions are narrowed to 0600."""
    from tfp.fsmodes import PRIVATE_FILE, create_private_file, private_dir

    if not path.parent.is_dir():
        private_dir(path.parent)
    if not create_private_file(path):
        for name in (path.name, f"{path.name}-journal", f"{path.name}-wal", f"{path.name}-shm"):
            companion = path.with_name(name)
            if companion.is_file() and not companion.is_symlink() and companion.stat().st_mode & 0o077:
                with contextlib.suppress(PermissionError):  # not ours: `tfp run` warns about the folder
                    os.chmod(companion, PRIVATE_FILE)


@cache
def get_engine(url: str) -> Engine:
    """One engine per URL per process; a SQLite file is made private before SQLite opens it."""
    sqlite_file = sqlite_path(url)
    if sqlite_file is not None:
        _private_sqlite_file(sqlite_file)
    # hide_parameters: a failed statement's message must never carry the row values it was given.
    engine = create_engine(url, future=True, pool_pre_ping=True, hide_parameters=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_functions)
    return engine


PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION tfp_yyyymmdd(d date) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(to_char(d, 'YYYYMMDD') AS integer) $$
"""


# PostgreSQL's ANALYZE (autovacuum's too) copies sample values of each column into pg_statistic
# (most common values, histogram bounds), where they outlive the rows and the table. Only these
# columns, none of them personal, keep statistics; every other column's statistics target is 0, so
# no name, date of birth, identifier, reference or key is ever sampled. A new column starts at 0.
STATISTICS_KEPT: frozenset[str] = frozenset({
    "id", "landing_id", "source", "partner", "dataset", "status", "file_date", "row_number", "landed_by_run",
    "reference_date", "scope", "method", "match_probability", "state", "kept", "programme_status",
    "category", "proven", "order_type", "parenting_responsibility", "event", "benefit", "out_of_work",
    "need", "purpose", "term", "role", "permanent_exclusion", "alternative_provision",
    "run_date", "unit", "dry_run", "problem_count", "eligible", *FLAGS,
    "reason", "decision", "first_queued_on", "decided_on",  # the review queue's states and dates
    "substance_group", "service_type",  # the health feeds' codes
    "version_num",  # alembic_version: the schema's revision
})


def no_personal_statistics(conn, table_names=None, temporary: bool = False) -> int:
    """Set the statistics target of every personal column of these tables (default: all of tfp's) to 0;
    returns how many columns it changed. One catalog query, and ALTERs only where still needed.

    A target of 0 stops future sampling but keeps what ANALYZE stored before (an older warehouse):
    re-declaring the column's own type makes PostgreSQL drop that column's statistics, without
    rewriting the table; only the owner may, as for every ALTER here.
    """
    if conn.dialect.name != "postgresql":
        return 0  # SQLite's ANALYZE (never run by tfp) keeps row counts only, unless built with STAT4
    names = sorted(table_names or metadata.tables)
    rows = conn.execute(text(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
        "EXISTS (SELECT 1 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname "
        "AND s.attname = a.attname) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE a.attrelid IN (SELECT to_regclass(n) FROM unnest(CAST(:names AS text[])) AS n) "
        "AND a.attnum > 0 AND NOT a.attisdropped AND a.attstattarget <> 0 ORDER BY 1, 2"),
        {"names": [f"pg_temp.{n}" if temporary else n for n in names]}).all()
    quote = conn.dialect.identifier_preparer.quote
    changed = 0
    for table_name, column, kind, sampled in rows:
        if column in STATISTICS_KEPT:
            continue
        target = f"ALTER TABLE {quote(table_name)} ALTER COLUMN {quote(column)}"
        conn.execute(text(f"{target} SET STATISTICS 0"))
        if sampled:
            conn.execute(text(f"{target} TYPE {kind}"))
        changed += 1
    return changed


# The schema's history is Alembic's (include/tfp/migrations): `tfp db upgrade` runs it as the
# database's owner; connect() only checks the revision, so the app role needs no DDL privilege.
SCHEMA_LOCK = 7423001  # PostgreSQL advisory lock: one schema change at a time (upgrades, the programme-end purge)
FIRST_REVISION = "0001"  # the schema of tfp 68f7203, which an older tfp created on connect
# Tables in metadata that revision 0001 does not create (added by later revisions).
ADDED_TABLES: frozenset[str] = frozenset({"released_generalisation", "review_queue", "review_night",
                                          "review_decision", "stg_treatment_episodes", "stg_mental_health_contacts",
                                          "feedback_log", "stg_support_attendance"})
# Columns of tables 0001 creates that later revisions add (0005: the roster's optional NHS number; 0006: the
# partner a file came from).
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"stg_families": ("nhs_number",), "landing_log": ("partner",)}
# The CHECK constraints of tfp.statuses.CHECKED, added by revision 0003.
STATUS_CHECKS: tuple[str, ...] = tuple(f"ck_{table}_{column}" for table, column in CHECKED)
# A nullable column an older tfp added on connect; a warehouse made before it gains it when stamped.
LEGACY_ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"landing_log": ("gx_result",)}
UPGRADE_HINT = "tfp db upgrade --config FILE"


def _alembic_config(conn):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "tfp:migrations")
    config.attributes["connection"] = conn
    return config


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None))


@cache
def head_revision() -> str:
    """The revision this tfp's code expects: read from its migration scripts once per process (they are
    this code's own files; every task of a ``tfp run`` checks the warehouse against it)."""
    return _script().get_current_head()


def schema_revision(conn) -> str | None:
    """The warehouse's recorded revision; None when it has no history (empty, or made by an older tfp)."""
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def check_schema(engine: Engine, hint: str = UPGRADE_HINT) -> None:
    """Refuse a warehouse whose schema is not at this tfp's head revision (empty or older: run
    `tfp db upgrade`; newer: upgrade tfp), with a ConfigError the alert quotes. A query, never DDL."""
    with engine.connect() as conn:
        current = schema_revision(conn)
        legacy = current is None and inspect(conn).has_table("landing_log")
    head = head_revision()
    if current == head:
        return
    if current is not None and not _known(current):
        raise SchemaAhead(f"the warehouse schema is newer than this tfp ({current}; this tfp knows up to {head}); "
                          "upgrade tfp")
    state = (f"at {current}" if current else
             "made by a tfp before its schema history" if legacy else "empty")
    raise SchemaBehind(f"the warehouse schema is {state}, not {head}; run `{hint}`",
                       hint="migrate it once, as the warehouse's owner, with that command; then run this again")


def _adopt_legacy(conn) -> list[str]:
    """Stamp a warehouse that an older tfp created on connect at revision 0001, once its tables are
    those of 0001 (a column such a tfp added on connect is added here too)."""
    inspector = inspect(conn)
    missing = sorted(set(metadata.tables) - ADDED_TABLES - set(inspector.get_table_names()))
    if missing:
        raise ConfigError(f"the warehouse has tfp tables but not these of revision {FIRST_REVISION}: "
                          f"{', '.join(missing)}; it was not made by tfp, restore it or start an empty one")
    notes = []
    for table_name, names in LEGACY_ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table_name)}
        for name in sorted(set(names) - present):
            kind = metadata.tables[table_name].c[name].type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {name} {kind}"))
            notes.append(f"added column {table_name}.{name}")
    from alembic import command

    command.stamp(_alembic_config(conn), FIRST_REVISION)
    notes.insert(0, f"the warehouse was made by a tfp before its schema history: recognised as revision "
                    f"{FIRST_REVISION} (the schema of tfp 68f7203) and stamped")
    return notes


def create_schema(engine: Engine) -> list[str]:
    """Migrate the warehouse to this tfp's head revision (what `tfp db upgrade` runs, as the owner):
    an empty one from the first revision, one an older tfp made on connect after stamping it.
    Returns what it did, one line each; refuses a newer schema."""
    from alembic import command

    notes: list[str] = []
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # concurrent upgrades (two operators, a backfill's first runs) would race: one at a time
            conn.execute(text(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
        current = schema_revision(conn)
        if current is not None and not _known(current):
            raise SchemaAhead(f"the warehouse schema is newer than this tfp ({current}); upgrade tfp")
        if current is None and inspect(conn).has_table("landing_log"):
            notes += _adopt_legacy(conn)
            current = FIRST_REVISION
        head = head_revision()
        if current == head:
            notes.append(f"the warehouse schema is at {head}, this tfp's revision: nothing to do")
            return notes
        command.upgrade(_alembic_config(conn), "head")
        notes.append(f"the warehouse schema was upgraded from {current or 'empty'} to {head}")
    return notes


def upgrade(url: str) -> list[str]:
    """`tfp db upgrade`: migrate the warehouse at ``url`` to this tfp's revision."""
    return create_schema(get_engine(url))


def upgrade_embedded(url: str) -> list[str]:
    """The nightly's first task migrates an embedded SQLite warehouse itself (one file, one owner:
    the tfp process); a PostgreSQL warehouse is left to the operator's `tfp db upgrade`, run as its
    owner, and only checked."""
    engine = get_engine(url)
    return create_schema(engine) if engine.dialect.name == "sqlite" else []


def connect(url: str) -> Engine:
    """The engine for ``url``, refused unless its schema is at this tfp's revision: what every stage
    calls first. No DDL: the app role, which may not create or alter a table, can call it."""
    engine = get_engine(url)
    check_schema(engine)
    return engine


def insert_rows(conn, table: Table, columns: dict[str, list], chunk_rows: int = 50_000) -> int:
    """Insert rows given column by column (plain Python values, None for unknown); returns the count.

    The same values SQLAlchemy would bind (each column type's bind processor, applied per column),
    but sent with the driver's own ``executemany`` in chunks: building and binding a dict per row
    through ``insert()`` costs several times what the database does with them.
    """
    names = list(columns)
    count = len(columns[names[0]]) if names else 0
    if not count:
        return 0
    dialect = conn.dialect
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):
        conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)])
        return count
    prepared = []
    for name in names:
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        values = columns[name]
        prepared.append([process(v) for v in values] if process else values)
    quote = dialect.identifier_preparer
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(n) for n in names)}) "
           f"VALUES ({', '.join([marker] * len(names))})")
    rows = list(zip(*prepared, strict=True))
    for start in range(0, count, chunk_rows):
        conn.exec_driver_sql(sql, rows[start:start + chunk_rows])
    return count

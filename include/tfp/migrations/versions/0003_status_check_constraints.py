"""The named states as CHECK constraints: landing_log.status, links.method, person_consent.state and
family_flags.scope allow only the values of their enums in ``tfp.statuses`` (issue 16 item 3).

The value lists are written out here, not imported: a revision is history and must not change when the
code does (a test checks that head allows exactly the enums' values). SQLite cannot add a constraint
to a table, so batch mode rebuilds each table there (see _rebuild for the rows that reference it).
A warehouse holding a value outside a list fails the upgrade, naming the constraint, and is unchanged.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ALLOWED: dict[tuple[str, str], tuple[str, ...]] = {
    ("landing_log", "status"): ("landing", "landed", "validated", "staged", "superseded", "rejected", "duplicate"),
    ("links", "method"): ("nino", "upn", "probabilistic", "unlinked"),
    ("person_consent", "state"): ("given", "refused", "withdrawn", "none"),
    ("family_flags", "scope"): ("all", "kept"),
}


def _in_one_transaction() -> None:
    """Python's sqlite3 opens its transaction at the first data change, not at DDL: open it now, so that
    the rebuilds below are all or nothing (a refused value leaves the warehouse as it was)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE alembic_version SET version_num = version_num")


def _rebuild(table: str, change) -> None:
    """Apply ``change`` to ``table`` in batch mode. On SQLite that rebuilds the table (copy, drop, rename),
    and dropping a table that other rows reference fails with foreign keys on, as tfp's connections have
    them (and a transaction cannot switch them off): the referencing rows are parked in temporary tables
    meanwhile and put back after, checked against the rebuilt table."""
    bind = op.get_bind()
    children = []
    if bind.dialect.name == "sqlite":
        inspector = sa.inspect(bind)
        children = [name for name in inspector.get_table_names()
                    if any(fk["referred_table"] == table for fk in inspector.get_foreign_keys(name))]
    for child in children:
        op.execute(f"CREATE TEMPORARY TABLE _parked_{child} AS SELECT * FROM {child}")
        op.execute(f"DELETE FROM {child}")
    with op.batch_alter_table(table) as batch:
        change(batch)
    for child in children:
        op.execute(f"INSERT INTO {child} SELECT * FROM _parked_{child}")
        op.execute(f"DROP TABLE _parked_{child}")


def upgrade() -> None:
    _in_one_transaction()
    for (table, column), values in ALLOWED.items():
        condition = f"{column} IN ({', '.join(repr(v) for v in values)})"
        _rebuild(table, lambda batch, name=f"ck_{table}_{column}", condition=condition:
                 batch.create_check_constraint(name, condition))


def downgrade() -> None:
    _in_one_transaction()
    for table, column in ALLOWED:
        _rebuild(table, lambda batch, name=f"ck_{table}_{column}": batch.drop_constraint(name, type_="check"))

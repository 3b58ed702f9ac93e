"""The linkage review queue (issue 15 item 3): review_queue (the pairs sent to review, each with its
review id), review_night (which pairs each night queued, and why) and review_decision (every reviewer
decision, as history); links.method gains ``queued`` and ``reviewed``.

As in 0003, the value lists are written out here, not imported (a revision is history), and SQLite's
batch mode rebuilds ``links`` to change its CHECK constraint (no table references ``links``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LINK_METHODS = ("nino", "upn", "probabilistic", "unlinked", "queued", "reviewed")
LINK_METHODS_BEFORE = ("nino", "upn", "probabilistic", "unlinked")
ALLOWED: dict[tuple[str, str], tuple[str, ...]] = {
    ("links", "method"): LINK_METHODS,
    ("review_night", "reason"): ("band", "near_tie"),
    ("review_decision", "decision"): ("link", "not_a_link"),
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _link_methods(values: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "sqlite":  # the rebuild below all or nothing (see 0003)
        op.execute("UPDATE alembic_version SET version_num = version_num")
    with op.batch_alter_table("links") as batch:
        batch.drop_constraint("ck_links_method", type_="check")
        batch.create_check_constraint("ck_links_method", _in("method", values))


def upgrade() -> None:
    from tfp.warehouse import no_personal_statistics

    _link_methods(LINK_METHODS)
    op.create_table(
        "review_queue",
        sa.Column("review_id", sa.String(length=32), nullable=False),
        sa.Column("dataset", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=100), nullable=False),
        sa.Column("person_ref", sa.String(length=100), nullable=False),
        sa.Column("first_queued_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("review_id"),
        sa.UniqueConstraint("dataset", "record_id", "person_ref", name="uq_review_queue_pair"),
    )
    op.create_table(
        "review_night",
        sa.Column("reference_date", sa.Date(), nullable=False),
        sa.Column("review_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("match_probability", sa.Float(), nullable=True),
        sa.CheckConstraint(_in("reason", ALLOWED[("review_night", "reason")]), name="ck_review_night_reason"),
        sa.ForeignKeyConstraint(["review_id"], ["review_queue.review_id"]),
        sa.PrimaryKeyConstraint("reference_date", "review_id"),
    )
    op.create_table(
        "review_decision",
        sa.Column("review_id", sa.String(length=32), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("reviewer", sa.String(length=100), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_by", sa.String(length=100), nullable=False),
        sa.CheckConstraint(_in("decision", ALLOWED[("review_decision", "decision")]),
                           name="ck_review_decision_decision"),
        sa.ForeignKeyConstraint(["review_id"], ["review_queue.review_id"]),
        sa.PrimaryKeyConstraint("review_id", "decided_at"),
    )
    # PostgreSQL: no statistics on the new tables' personal columns (see tfp.warehouse.STATISTICS_KEPT)
    no_personal_statistics(op.get_bind(), ["links", "review_queue", "review_night", "review_decision"])


def downgrade() -> None:
    op.drop_table("review_decision")
    op.drop_table("review_night")
    op.drop_table("review_queue")
    _link_methods(LINK_METHODS_BEFORE)

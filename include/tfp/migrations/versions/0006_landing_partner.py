"""Partners, not just sources (issue 17 item 1): landing_log gains ``partner``, the partner a file came
from. A source in the short form is one partner named after the source, so every existing row gets
partner = source: a warehouse upgraded from 0004 behaves exactly as before.

``partner`` is not personal (a partner id from the config), so it keeps its statistics.

``feedback_log`` (issue 17 item 4): which landings each partner has been sent feedback about, so that a
landing is reported once (ids, dates and checksums only).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a default is an ADD COLUMN SQLite accepts without rebuilding landing_log (which
    # landing_key and quarantine reference); the UPDATE then sets the real value
    op.add_column("landing_log", sa.Column("partner", sa.String(length=40), nullable=False, server_default=""))
    op.execute("UPDATE landing_log SET partner = source")
    op.create_table(
        "feedback_log",
        sa.Column("landing_id", sa.Integer(), nullable=False),
        sa.Column("partner", sa.String(length=40), nullable=False),
        sa.Column("reference_date", sa.Date(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["landing_id"], ["landing_log.id"]),
        sa.PrimaryKeyConstraint("landing_id"),
    )
    from tfp.warehouse import no_personal_statistics

    # PostgreSQL: as for every table, no statistics on columns tfp.warehouse.STATISTICS_KEPT does not name
    no_personal_statistics(op.get_bind(), ["feedback_log"])


def downgrade() -> None:
    op.drop_table("feedback_log")
    with op.batch_alter_table("landing_log") as batch:
        batch.drop_column("partner")

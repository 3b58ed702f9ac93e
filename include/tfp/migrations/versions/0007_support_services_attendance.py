"""The optional support_services source (issue 17 item 3, contract section 10): its staging table
stg_support_attendance. Its partners' files are named ``attendance_<YYYYMMDD>.csv`` like the schools';
inside tfp the dataset is ``support_attendance`` so that table, suite and landing log stay unique.

Written out here, not built from tfp.feeds (a revision is history). On PostgreSQL its personal columns
get no statistics, as every tfp table (0002).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from tfp.warehouse import no_personal_statistics

    op.create_table(
        "stg_support_attendance",
        sa.Column("landing_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(length=100), nullable=False),
        sa.Column("file_date", sa.Date(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("forename", sa.String(length=200), nullable=True),
        sa.Column("surname", sa.String(length=200), nullable=True),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(length=200), nullable=True),
        sa.Column("postcode", sa.String(length=200), nullable=True),
        sa.Column("provider", sa.String(length=200), nullable=True),
        sa.Column("service_type", sa.String(length=200), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["landing_id"], ["landing_log.id"]),
        sa.PrimaryKeyConstraint("landing_id", "record_id"),
    )
    op.create_index(op.f("ix_stg_support_attendance_file_date"), "stg_support_attendance", ["file_date"],
                    unique=False)
    no_personal_statistics(op.get_bind(), ["stg_support_attendance"])


def downgrade() -> None:
    op.drop_index(op.f("ix_stg_support_attendance_file_date"), table_name="stg_support_attendance")
    op.drop_table("stg_support_attendance")

"""What changed after 68f7203: the released_generalisation table (anonymise), and on PostgreSQL no
statistics on personal columns, with the values an earlier ANALYZE sampled dropped.

released_generalisation is created only when missing: a tfp between 68f7203 and this history
created it on connect, and such a warehouse is stamped at 0001 like an older one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from tfp.warehouse import no_personal_statistics

    bind = op.get_bind()
    if not sa.inspect(bind).has_table("released_generalisation"):
        op.create_table(
            "released_generalisation",
            sa.Column("person_ref", sa.String(length=100), nullable=False),
            sa.Column("reference_date", sa.Date(), nullable=False),
            sa.Column("release_order", sa.Integer(), nullable=False),
            sa.Column("year_of_birth", sa.Integer(), nullable=False),
            sa.Column("postcode_district", sa.Integer(), nullable=False),
            sa.Column("sex", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("person_ref", "reference_date"),
        )
        op.create_index(op.f("ix_released_generalisation_release_order"), "released_generalisation",
                        ["release_order"], unique=False)
    # every tfp table: statistics target 0 on personal columns, sampled values dropped (PostgreSQL only)
    tables = [name for name in sa.inspect(bind).get_table_names() if name != "alembic_version"]
    no_personal_statistics(bind, tables)


def downgrade() -> None:
    op.drop_index(op.f("ix_released_generalisation_release_order"), table_name="released_generalisation")
    op.drop_table("released_generalisation")

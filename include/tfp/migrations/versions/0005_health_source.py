"""The optional health source (issue 17 item 2, contract section 10): staging tables for
treatment_episodes and mental_health_contacts, the roster's optional nhs_number, and links.method
gains ``nhs_number`` (an outright link on the NHS number).

As in 0003 and 0004, the value lists are written out here, not imported (a revision is history).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LINK_METHODS = ("nino", "upn", "nhs_number", "probabilistic", "unlinked", "queued", "reviewed")
LINK_METHODS_BEFORE = ("nino", "upn", "probabilistic", "unlinked", "queued", "reviewed")
ALLOWED: dict[tuple[str, str], tuple[str, ...]] = {("links", "method"): LINK_METHODS}
PERSON = ("forename", "surname", "date_of_birth", "sex", "postcode")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _link_methods(values: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "sqlite":  # the rebuild below all or nothing (see 0003)
        op.execute("UPDATE alembic_version SET version_num = version_num")
    with op.batch_alter_table("links") as batch:
        batch.drop_constraint("ck_links_method", type_="check")
        batch.create_check_constraint("ck_links_method", _in("method", values))


def _staging(name: str, dates: tuple[str, ...], texts: tuple[str, ...]) -> None:
    columns = {"date_of_birth": sa.Date(), **{c: sa.Date() for c in dates}}
    op.create_table(
        name,
        sa.Column("landing_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(length=100), nullable=False),
        sa.Column("file_date", sa.Date(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        *(sa.Column(c, columns.get(c, sa.String(length=200)), nullable=True) for c in (*PERSON, *texts)),
        sa.ForeignKeyConstraint(["landing_id"], ["landing_log.id"]),
        sa.PrimaryKeyConstraint("landing_id", "record_id"),
    )
    op.create_index(op.f(f"ix_{name}_file_date"), name, ["file_date"], unique=False)


def upgrade() -> None:
    from tfp.warehouse import no_personal_statistics

    _link_methods(LINK_METHODS)
    _staging("stg_treatment_episodes", ("episode_start", "episode_end"),
             ("nhs_number", "episode_start", "episode_end", "substance_group", "treatment_type"))
    _staging("stg_mental_health_contacts", ("referral_date", "discharge_date"),
             ("nhs_number", "referral_date", "service_type", "discharge_date"))
    op.add_column("stg_families", sa.Column("nhs_number", sa.String(length=200), nullable=True))
    # PostgreSQL: no statistics on the new personal columns (see tfp.warehouse.STATISTICS_KEPT)
    no_personal_statistics(op.get_bind(), ["links", "stg_families", "stg_treatment_episodes",
                                           "stg_mental_health_contacts"])


def downgrade() -> None:
    with op.batch_alter_table("stg_families") as batch:
        batch.drop_column("nhs_number")
    for name in ("stg_mental_health_contacts", "stg_treatment_episodes"):
        op.drop_index(op.f(f"ix_{name}_file_date"), table_name=name)
        op.drop_table(name)
    _link_methods(LINK_METHODS_BEFORE)

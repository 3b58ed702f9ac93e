"""The warehouse schema as tfp commit 68f7203 created it on connect (the first recorded revision).

Frozen: every table spelled out, so that later changes to ``tfp.warehouse.metadata`` do not change
what this revision creates. A warehouse that an older tfp made on connect is stamped at this
revision by ``tfp db upgrade`` (``tfp.warehouse.upgrade``), never re-created.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION tfp_yyyymmdd(d date) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT CAST(to_char(d, 'YYYYMMDD') AS integer) $$
"""


def upgrade() -> None:
    op.create_table('deletion_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_date', sa.Date(), nullable=False),
    sa.Column('category', sa.String(length=40), nullable=False),
    sa.Column('cutoff', sa.String(length=40), nullable=True),
    sa.Column('deleted', sa.Integer(), nullable=False),
    sa.Column('unit', sa.String(length=10), nullable=False),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('logged_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('delivery_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('reference_date', sa.Date(), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('destination', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('plaintext_sha256', sa.String(length=64), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_delivery_log_reference_date'), 'delivery_log', ['reference_date'], unique=False)
    op.create_table('family_flags',
    sa.Column('reference_date', sa.Date(), nullable=False),
    sa.Column('scope', sa.String(length=10), nullable=False),
    sa.Column('family_ref', sa.String(length=100), nullable=False),
    sa.Column('programme_status', sa.String(length=20), nullable=False),
    sa.Column('crime_asb', sa.Integer(), nullable=False),
    sa.Column('school_attendance', sa.Integer(), nullable=False),
    sa.Column('children_need_help', sa.Integer(), nullable=False),
    sa.Column('worklessness', sa.Integer(), nullable=False),
    sa.Column('domestic_abuse', sa.Integer(), nullable=False),
    sa.Column('health', sa.Integer(), nullable=False),
    sa.Column('problem_count', sa.Integer(), nullable=False),
    sa.Column('eligible', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('reference_date', 'scope', 'family_ref')
    )
    op.create_table('landing_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('dataset', sa.String(length=40), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('landed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('landed_by_run', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('duplicate_of', sa.Integer(), nullable=True),
    sa.Column('rejection', sa.Text(), nullable=True),
    sa.Column('landing_path', sa.String(length=500), nullable=True),
    sa.Column('rows_read', sa.Integer(), nullable=True),
    sa.Column('rows_staged', sa.Integer(), nullable=True),
    sa.Column('rows_quarantined', sa.Integer(), nullable=True),
    sa.Column('expectation_results', sa.Text(), nullable=True),
    sa.Column('gx_result', sa.Text(), nullable=True),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_landing_log_sha256'), 'landing_log', ['sha256'], unique=False)
    op.create_table('links',
    sa.Column('reference_date', sa.Date(), nullable=False),
    sa.Column('dataset', sa.String(length=40), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('person_ref', sa.String(length=100), nullable=True),
    sa.Column('match_probability', sa.Float(), nullable=True),
    sa.Column('method', sa.String(length=20), nullable=False),
    sa.PrimaryKeyConstraint('reference_date', 'dataset', 'record_id')
    )
    op.create_table('person_consent',
    sa.Column('reference_date', sa.Date(), nullable=False),
    sa.Column('person_ref', sa.String(length=100), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('state_on', sa.Date(), nullable=True),
    sa.Column('kept', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('reference_date', 'person_ref')
    )
    op.create_table('landing_key',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.LargeBinary(length=32), nullable=False),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id')
    )
    op.create_table('quarantine',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('rules', sa.Text(), nullable=False),
    sa.Column('row_json', sa.Text(), nullable=False),
    sa.Column('quarantined_on', sa.Date(), nullable=False),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_quarantine_landing_id'), 'quarantine', ['landing_id'], unique=False)
    op.create_table('stg_attendance',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('forename', sa.String(length=200), nullable=True),
    sa.Column('surname', sa.String(length=200), nullable=True),
    sa.Column('date_of_birth', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=200), nullable=True),
    sa.Column('postcode', sa.String(length=200), nullable=True),
    sa.Column('upn', sa.String(length=200), nullable=True),
    sa.Column('school_urn', sa.String(length=200), nullable=True),
    sa.Column('term', sa.String(length=200), nullable=True),
    sa.Column('sessions_possible', sa.Integer(), nullable=True),
    sa.Column('sessions_missed', sa.Integer(), nullable=True),
    sa.Column('fixed_term_exclusions', sa.Integer(), nullable=True),
    sa.Column('exclusion_days', sa.Float(), nullable=True),
    sa.Column('permanent_exclusion', sa.Boolean(), nullable=True),
    sa.Column('alternative_provision', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_attendance_file_date'), 'stg_attendance', ['file_date'], unique=False)
    op.create_table('stg_benefits',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('forename', sa.String(length=200), nullable=True),
    sa.Column('surname', sa.String(length=200), nullable=True),
    sa.Column('date_of_birth', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=200), nullable=True),
    sa.Column('postcode', sa.String(length=200), nullable=True),
    sa.Column('nino', sa.String(length=200), nullable=True),
    sa.Column('benefit', sa.String(length=200), nullable=True),
    sa.Column('out_of_work', sa.Boolean(), nullable=True),
    sa.Column('claim_start', sa.Date(), nullable=True),
    sa.Column('claim_end', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_benefits_file_date'), 'stg_benefits', ['file_date'], unique=False)
    op.create_table('stg_cases',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('forename', sa.String(length=200), nullable=True),
    sa.Column('surname', sa.String(length=200), nullable=True),
    sa.Column('date_of_birth', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=200), nullable=True),
    sa.Column('postcode', sa.String(length=200), nullable=True),
    sa.Column('pnc_id', sa.String(length=200), nullable=True),
    sa.Column('nino', sa.String(length=200), nullable=True),
    sa.Column('order_type', sa.String(length=200), nullable=True),
    sa.Column('start_date', sa.Date(), nullable=True),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.Column('release_date', sa.Date(), nullable=True),
    sa.Column('parenting_responsibility', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_cases_file_date'), 'stg_cases', ['file_date'], unique=False)
    op.create_table('stg_consent',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('person_ref', sa.String(length=200), nullable=True),
    sa.Column('purpose', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=200), nullable=True),
    sa.Column('recorded_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_consent_file_date'), 'stg_consent', ['file_date'], unique=False)
    op.create_table('stg_families',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('forename', sa.String(length=200), nullable=True),
    sa.Column('surname', sa.String(length=200), nullable=True),
    sa.Column('date_of_birth', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=200), nullable=True),
    sa.Column('postcode', sa.String(length=200), nullable=True),
    sa.Column('family_ref', sa.String(length=200), nullable=True),
    sa.Column('person_ref', sa.String(length=200), nullable=True),
    sa.Column('role', sa.String(length=200), nullable=True),
    sa.Column('upn', sa.String(length=200), nullable=True),
    sa.Column('nino', sa.String(length=200), nullable=True),
    sa.Column('uprn', sa.String(length=200), nullable=True),
    sa.Column('programme_status', sa.String(length=200), nullable=True),
    sa.Column('attached_date', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_families_file_date'), 'stg_families', ['file_date'], unique=False)
    op.create_table('stg_incidents',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('forename', sa.String(length=200), nullable=True),
    sa.Column('surname', sa.String(length=200), nullable=True),
    sa.Column('date_of_birth', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=200), nullable=True),
    sa.Column('postcode', sa.String(length=200), nullable=True),
    sa.Column('pnc_id', sa.String(length=200), nullable=True),
    sa.Column('incident_date', sa.Date(), nullable=True),
    sa.Column('category', sa.String(length=200), nullable=True),
    sa.Column('role', sa.String(length=200), nullable=True),
    sa.Column('proven', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_incidents_file_date'), 'stg_incidents', ['file_date'], unique=False)
    op.create_table('stg_needs',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('person_ref', sa.String(length=200), nullable=True),
    sa.Column('need', sa.String(length=200), nullable=True),
    sa.Column('start_date', sa.Date(), nullable=True),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_needs_file_date'), 'stg_needs', ['file_date'], unique=False)
    op.create_table('stg_tenancy_events',
    sa.Column('landing_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=100), nullable=False),
    sa.Column('file_date', sa.Date(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('forename', sa.String(length=200), nullable=True),
    sa.Column('surname', sa.String(length=200), nullable=True),
    sa.Column('date_of_birth', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=200), nullable=True),
    sa.Column('postcode', sa.String(length=200), nullable=True),
    sa.Column('uprn', sa.String(length=200), nullable=True),
    sa.Column('tenancy_ref', sa.String(length=200), nullable=True),
    sa.Column('event', sa.String(length=200), nullable=True),
    sa.Column('event_date', sa.Date(), nullable=True),
    sa.Column('arrears_amount', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['landing_id'], ['landing_log.id'], ),
    sa.PrimaryKeyConstraint('landing_id', 'record_id')
    )
    op.create_index(op.f('ix_stg_tenancy_events_file_date'), 'stg_tenancy_events', ['file_date'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTIONS)  # SQLite gets tfp_yyyymmdd per connection (tfp.warehouse)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS tfp_yyyymmdd(date)")
    op.drop_index(op.f('ix_stg_tenancy_events_file_date'), table_name='stg_tenancy_events')
    op.drop_table('stg_tenancy_events')
    op.drop_index(op.f('ix_stg_needs_file_date'), table_name='stg_needs')
    op.drop_table('stg_needs')
    op.drop_index(op.f('ix_stg_incidents_file_date'), table_name='stg_incidents')
    op.drop_table('stg_incidents')
    op.drop_index(op.f('ix_stg_families_file_date'), table_name='stg_families')
    op.drop_table('stg_families')
    op.drop_index(op.f('ix_stg_consent_file_date'), table_name='stg_consent')
    op.drop_table('stg_consent')
    op.drop_index(op.f('ix_stg_cases_file_date'), table_name='stg_cases')
    op.drop_table('stg_cases')
    op.drop_index(op.f('ix_stg_benefits_file_date'), table_name='stg_benefits')
    op.drop_table('stg_benefits')
    op.drop_index(op.f('ix_stg_attendance_file_date'), table_name='stg_attendance')
    op.drop_table('stg_attendance')
    op.drop_index(op.f('ix_quarantine_landing_id'), table_name='quarantine')
    op.drop_table('quarantine')
    op.drop_table('landing_key')
    op.drop_table('person_consent')
    op.drop_table('links')
    op.drop_index(op.f('ix_landing_log_sha256'), table_name='landing_log')
    op.drop_table('landing_log')
    op.drop_table('family_flags')
    op.drop_index(op.f('ix_delivery_log_reference_date'), table_name='delivery_log')
    op.drop_table('delivery_log')
    op.drop_table('deletion_log')

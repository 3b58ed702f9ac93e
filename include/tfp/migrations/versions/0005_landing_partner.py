"""Partners, not just sources (issue 17 item 1): landing_log gains ``partner``, the partner a file came
from. A source in the short form is one partner named after the source, so every existing row gets
partner = source: a warehouse upgraded from 0004 behaves exactly as before.

``partner`` is not personal (a partner id from the config), so it keeps its statistics.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a default is an ADD COLUMN SQLite accepts without rebuilding landing_log (which
    # landing_key and quarantine reference); the UPDATE then sets the real value
    op.add_column("landing_log", sa.Column("partner", sa.String(length=40), nullable=False, server_default=""))
    op.execute("UPDATE landing_log SET partner = source")


def downgrade() -> None:
    with op.batch_alter_table("landing_log") as batch:
        batch.drop_column("partner")

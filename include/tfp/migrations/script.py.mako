"""${message}

A new column or table on PostgreSQL must get statistics target 0 on its personal columns:
call ``tfp.warehouse.no_personal_statistics(op.get_bind(), [table names])`` at the end.
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}

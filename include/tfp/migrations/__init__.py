"""The warehouse's schema history (Alembic): ``tfp db upgrade`` runs it; see ``tfp.warehouse.upgrade``."""

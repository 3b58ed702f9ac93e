"""tfp: the Troubled Families Programme evaluation feed, as a plain Python package.

The package knows nothing of Airflow; the DAGs in ``dags/`` call into it.
"""

__version__ = "0.1.0"

"""tfp's Airflow adapter: every place tfp meets Airflow, kept out of the Airflow-free ``tfp`` package.

- :mod:`tfp_airflow.lookups`: Variables and Connections read through Airflow (its secrets backends and
  ``AIRFLOW_VAR_*`` / ``AIRFLOW_CONN_*``), handed to tfp as plain values; a backend that fails is a
  :class:`tfp.errors.SecretsBackendError`, only "not defined" is absent. :func:`install` makes them the
  process's lookups (``tfp.lookups``): the DAG files and ``tfp run`` call it.
- :mod:`tfp_airflow.callbacks`: the failure alert (an ``on_failure_callback``) over SMTP.
- :mod:`tfp_airflow.dag_common`: what the DAG files share (their header, a run's config and date).
- :mod:`tfp_airflow.runner`: ``tfp run`` / ``tfp retention`` through ``dag.test()``.

Importing this package imports no Airflow: ``tfp run`` must set ``AIRFLOW_HOME`` and the rest before
Airflow reads its settings, so only the DAG files' own module (dag_common) imports Airflow at the top.
"""

from tfp_airflow.lookups import install

__all__ = ["install"]

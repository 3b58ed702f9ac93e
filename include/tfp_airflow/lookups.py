"""Airflow Variables and Connections as tfp's lookups (tfp.lookups): plain values in, errors out.

Airflow's own ``Variable.get`` / ``Connection.get`` read the secrets backends and the environment
(``AIRFLOW_VAR_<NAME>``, ``AIRFLOW_CONN_<ID>`` in JSON or URI form), so nothing here parses them by
hand. "Not defined" is ``None``; any other failure (a backend down, access denied) is a
:class:`~tfp.errors.SecretsBackendError` that names the variable or Connection and not a value.
"""

from __future__ import annotations

import sys

from tfp import lookups
from tfp.errors import SecretsBackendError
from tfp.lookups import ConnectionFields, Lookups


def variable(name: str) -> str | None:
    """Airflow Variable ``name``, or None when it is not set (or Airflow is not installed)."""
    try:
        from airflow.sdk import Variable
    except ImportError:
        return None
    try:
        # not set -> default; Airflow itself logs and skips a backend that errors, but re-raises a denial
        return Variable.get(name, default=None)
    except Exception as e:
        raise SecretsBackendError(f"the secrets backend failed reading the variable {name}: {type(e).__name__}"
                                  ) from e


def connection(conn_id: str) -> ConnectionFields | None:
    """Airflow Connection ``conn_id`` as plain fields, or None when no backend defines it."""
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as e:
        raise SecretsBackendError(f"the secrets backend failed reading the Connection {conn_id}: "
                                  f"{type(e).__name__}") from e
    return ConnectionFields(host=conn.host, port=conn.port, login=conn.login, password=conn.password,
                            extra=conn.extra_dejson or {})


def mask(value: str) -> None:
    """Tell Airflow's secrets masker about a secret, when Airflow is loaded in this process.

    When it is not, Airflow writes no log here, and importing it now would fix its settings
    (AIRFLOW_HOME and the rest) before ``tfp run`` has set them.
    """
    if "airflow" not in sys.modules:
        return
    from airflow.sdk.log import mask_secret

    mask_secret(value)


AIRFLOW = Lookups(variable=variable, connection=connection, mask=mask)


def install() -> Lookups:
    """Make Airflow's Variables and Connections this process's lookups; returns the ones replaced."""
    return lookups.install(AIRFLOW)

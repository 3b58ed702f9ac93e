"""Where the files a run reads besides Python are, found through the package, not the working directory.

The repository keeps them where people look for them (``include/sql``, ``expectations/``,
``config/tfp.example.yaml``, ``dags/``, ``plugins/``); a symbolic link inside the package points at
each (``include/tfp/sql`` -> ``../sql`` ...), so ``pip install .`` and a wheel copy them in as
package data (pyproject.toml) and a checkout (``pip install -e``, ``include/`` on the path) reads them
in place. Either way ``importlib.resources`` finds them beside the code, so ``tfp run`` works from
any folder and from the image. The Airflow-side files (DAGs, plugin) are found by
``tfp_airflow.runner`` with the same function; this module imports nothing of Airflow.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped(package: str, name: str) -> Path:
    """The file or folder ``name`` shipped in ``package``, with links resolved (a checkout's real path)."""
    return Path(str(files(package).joinpath(name))).resolve()


def sql_dir() -> Path:
    """``include/sql``: the criteria and current-view SQL."""
    return shipped("tfp", "sql")


def expectations_dir() -> Path:
    """``expectations/``: the GX suites, one JSON per dataset."""
    return shipped("tfp", "expectations")


def example_config() -> Path:
    """``config/tfp.example.yaml``: the example config, the base of every config tfp writes itself."""
    return shipped("tfp", "tfp.example.yaml")

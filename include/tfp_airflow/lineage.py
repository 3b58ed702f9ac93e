"""Each stage's lineage (:mod:`tfp.lineage`) to Airflow's OpenLineage provider, when it is installed and on.

The provider's listener emits a START and a COMPLETE (or FAIL) event for every task. For a TaskFlow task
it has no extractor, so it takes the task's datasets from the operator's ``inlets`` and ``outlets``, which
may hold OpenLineage ``Dataset`` objects. tfp knows a stage's files and tables only once the stage has
run, so :func:`report` (a :func:`tfp.pipeline.observe` observer, installed by the DAG file) sets the
running task's inlets and outlets from the stage's result just before the task returns; the listener
reads them for the COMPLETE event. Names only: file paths and table names, never a value.

With the provider absent, or installed but not configured (no transport: the provider's own rule), this
does nothing and imports nothing. A failure here is logged as a warning and never fails the night:
lineage is an observer of the night, not part of it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfp.context import StageResult
    from tfp.lineage import Lineage

log = logging.getLogger(__name__)


def enabled() -> bool:
    """Whether the OpenLineage provider is installed and configured (a transport, a config file or URL)."""
    try:
        from airflow.providers.openlineage.conf import is_disabled
    except ImportError:
        return False
    return not is_disabled()


def datasets(lineage: Lineage) -> tuple[list, list]:
    """The lineage as OpenLineage ``Dataset`` objects: (inputs, outputs)."""
    from openlineage.client.event_v2 import Dataset

    return ([Dataset(namespace=d.namespace, name=d.name) for d in lineage.inputs],
            [Dataset(namespace=d.namespace, name=d.name) for d in lineage.outputs])


def report(result: StageResult) -> None:
    """Make the stage's files and tables the running task's inlets and outlets (OpenLineage datasets),
    keeping any other inlet or outlet the task declares (an Airflow Asset still triggers what it triggers)."""
    if not result.lineage or not enabled():
        return
    try:
        from airflow.sdk import get_current_context
        from openlineage.client.event_v2 import Dataset

        try:
            task = get_current_context()["task"]
        except RuntimeError:  # not inside an Airflow task (a stage called directly): nothing to report to
            return
        inputs, outputs = datasets(result.lineage)
        task.inlets = [i for i in task.inlets if not isinstance(i, Dataset)] + inputs
        task.outlets = [o for o in task.outlets if not isinstance(o, Dataset)] + outputs
    except Exception as e:  # noqa: BLE001 -- lineage never fails a night
        log.warning("lineage of stage %s not reported: %s", result.stage, type(e).__name__)


def install() -> None:
    """Report every stage's lineage from this process (the DAG files call it; idempotent)."""
    from tfp.pipeline import observe

    observe(report)

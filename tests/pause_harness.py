"""`tfp run` that stops dead at one chosen point, so the kill tests can SIGKILL it exactly there.

    TFP_PAUSE=<before|inside>:<stage> TFP_PAUSE_MARKER=<file> python pause_harness.py run --config ... --date ...

`before:<stage>` stops at the start of the stage's task function (the previous stage has finished
and Airflow has recorded it: the boundary); `inside:<stage>` stops right after the first call of a
function the stage makes part-way through its work, most of them inside its open transaction. On
stopping it writes the marker file and sleeps until killed. Test code only: the product is unchanged.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from pathlib import Path

INSIDE = {
    "extract": ("tfp.landing", "encrypt_to"),  # the first landing copy is written, its row not committed
    "validate": ("tfp.landing", "LandingStore.still"),  # a validated copy is written, the landing not yet marked (transaction open)
    "stage": ("tfp.stage", "insert_rows"),  # a file's rows are inserted, the transaction open
    "link": ("tfp.warehouse", "insert_rows"),  # the night's links are inserted, the transaction open
    "consent": ("tfp.consent", "consent_states"),  # states worked out, person_consent not yet replaced
    "criteria": ("tfp.criteria", "indicator_sql"),  # temporary tables made, the first flag being computed
    "package": ("tfp.package", "write_outbox_file"),  # the submission written; summary and manifest not
    "deliver": ("tfp.deliver", "_Directory.upload"),  # the first file uploaded, not yet logged
    "report": ("tfp.report", "atomic_write"),  # the JSON written, the HTML not
}
STAGE_MODULES = ("tfp.pipeline", "tfp.extract", "tfp.validate", "tfp.stage", "tfp.link", "tfp.consent", "tfp.criteria",
                 "tfp.anonymise", "tfp.package", "tfp.deliver", "tfp.report")


def _stop() -> None:
    Path(os.environ["TFP_PAUSE_MARKER"]).write_text(os.environ["TFP_PAUSE"])
    while True:
        time.sleep(60)


def _patch(module: str, attribute: str, before: bool) -> None:
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    @functools.wraps(original)
    def stopping(*args, **kwargs):
        if before:
            _stop()
        result = original(*args, **kwargs)
        _stop()
        return result

    setattr(owner, name, stopping)


def main() -> int:
    when, stage = os.environ["TFP_PAUSE"].split(":")
    for module in STAGE_MODULES:  # bind every `from x import y` first, so only the chosen call is patched
        importlib.import_module(module)
    if when == "before":
        _patch("tfp.pipeline", stage, before=True)
    else:
        _patch(*INSIDE[stage], before=False)
    from tfp.cli import main as tfp

    return tfp(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

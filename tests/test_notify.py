"""What a failure alert says about the night (review issue 13, items 14 and 8), without Airflow."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from tfp.notify import failure_summary, run_reference_date

R = date(2025, 3, 31)


def test_the_alert_of_a_manual_run_without_a_logical_date_names_its_reference_date():
    manual = {"params": {"reference_date": "2025-03-31", "dry_run": False}, "logical_date": None}
    assert run_reference_date(manual) == R
    subject, body = failure_summary("tfp_nightly", "check_setup", run_reference_date(manual), None)
    assert subject == "[tfp] tfp_nightly 2025-03-31: task check_setup failed" and "unknown date" not in body
    scheduled = {"params": {"reference_date": None}, "logical_date": datetime(2025, 3, 31, 0, 30, tzinfo=UTC)}
    assert run_reference_date(scheduled) == R  # 01:30 in London (BST)
    assert run_reference_date({"params": {}, "logical_date": None}) is None


def test_the_alert_names_the_weak_disclosure_settings_in_force_and_nothing_when_there_are_none():
    _, body = failure_summary("tfp_nightly", "deliver", R, None, weak_disclosure=["anonymisation.k", "disclosure.round_to"])
    assert "weak disclosure allowed: anonymisation.k, disclosure.round_to" in body
    _, body = failure_summary("tfp_nightly", "deliver", R, None)
    assert "weak disclosure" not in body


def test_a_tampered_outbox_is_quoted_by_the_alert():
    from tfp.package import OutboxTampered

    _, body = failure_summary("tfp_nightly", "deliver", date(2025, 3, 31),
                              OutboxTampered("outbox manifest tfp_manifest_E09000031_20250331.json: bad signature"))
    assert "bad signature" in body and "details in the task log" not in body


def test_a_missing_folder_that_stopped_retries_is_quoted_through_its_cause():
    """The DAG turns SourceUnavailable into AirflowFailException (no retries); the alert still says which folder:
    the adapter's callback hands tfp the cause."""
    from airflow.sdk.exceptions import AirflowFailException

    from tfp.extract import SourceUnavailable
    from tfp_airflow.callbacks import unwrap

    try:
        try:
            raise SourceUnavailable("police", Path("/srv/drops/polce"), "does not exist or is not a folder")
        except SourceUnavailable as e:
            raise AirflowFailException(str(e)) from e
    except AirflowFailException as wrapped:
        _, body = failure_summary("tfp_nightly", "police.extract", R, unwrap(wrapped))
    assert "/srv/drops/polce" in body and "details in the task log" not in body
    assert "What to do: create the drop folder" in body


def test_missing_input_is_quoted():
    from tfp.inputs import MissingInput

    _, body = failure_summary("tfp_nightly", "check_inputs", R, MissingInput(R, ["attendance", "needs"]))
    assert "no file dated on or before 2025-03-31 for: attendance, needs" in body


def test_only_a_tfp_error_is_quoted_any_other_exception_by_its_class_name_alone():
    """A library's message may echo a value (here a fake person's name, date of birth and postcode): it never
    reaches the alert, whatever the exception's class is called; a TfpError's message and hint do."""
    from tfp.errors import ConfigError, TfpError

    personal = "Jane Example born 1980-02-29 at AB1 2CD"

    class ConfigErrorLookalike(ValueError):  # the old name list would have quoted a class of this name
        pass

    ConfigErrorLookalike.__name__ = "ConfigError"
    for error in (ValueError(f"invalid literal: {personal!r}"), KeyError(personal), ConfigErrorLookalike(personal)):
        _, body = failure_summary("tfp_nightly", "police.stage", R, error)
        assert "Jane" not in body and "1980" not in body and "AB1" not in body, body
        assert f"{type(error).__name__} (details in the task log)" in body
    _, body = failure_summary("tfp_nightly", "check_setup", R, ConfigError("the linkage key in TFP_LINKAGE_KEY is not a hex string"))
    assert "the linkage key in TFP_LINKAGE_KEY is not a hex string" in body and "What to do: correct the config" in body
    _, body = failure_summary("tfp_nightly", "check_setup", R, TfpError("a message", hint="do this"))
    assert "a message" in body and "What to do: do this" in body

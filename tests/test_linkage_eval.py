"""Linking scored on labelled data nobody here made (issue 15): FEBRL 1 and RLdata500, shipped inside
the dev-only packages of requirements-dev.txt, linked by exactly what the pipeline runs."""

from __future__ import annotations

import pandas as pd
import pytest

from tfp_dev import linkage_data, linkage_eval


@pytest.fixture(scope="module", params=["febrl1", "rldata500"])
def case(request) -> linkage_data.Case:
    return linkage_data.febrl(1) if request.param == "febrl1" else linkage_data.rldata(500)


def test_public_set_precision_at_the_default_threshold(case):
    """Fails if a wrong link in a hundred creeps in on a public set at the pipeline's threshold."""
    result = linkage_eval.evaluate(case, splink=False)
    assert result["true_pairs"] > 40
    assert result["tfp"]["precision"] >= 0.99, result["tfp"]
    assert result["tfp"]["recall"] >= 0.7, result["tfp"]  # reported, not the target; guards a collapse


def test_the_precision_gate_bites_when_links_are_made_too_eagerly():
    """Linking every best candidate (threshold 0) on FEBRL 1 links its records of nobody: the same
    gate as above then fails, so it is not a gate every linker passes."""
    case = linkage_data.febrl(1)
    best = linkage_eval.run_tfp(case)
    assert linkage_eval.scores(best, case.truth, 0.0)["precision"] < 0.99
    assert linkage_eval.scores(best, case.truth, linkage_eval.DEFAULT_THRESHOLD)["precision"] >= 0.99


def test_public_sets_are_read_from_the_installed_wheels_not_the_network():
    frame = linkage_data.febrl(1)
    assert len(frame.roster) == 400 and len(frame.records) == 500
    assert set(frame.truth.values()) <= set(frame.roster["person_ref"])
    assert len(linkage_data.rldata(500).truth) == 50


def test_scores_count_a_link_to_a_person_of_nobody_as_wrong():
    best = pd.DataFrame({"record_id": ["a", "b", "c", "d"], "person_ref": ["P1", "P2", "P9", None],
                         "match_probability": [0.99, 0.99, 0.99, None]})
    truth = {"a": "P1", "b": "P3", "d": "P4"}
    s = linkage_eval.scores(best, truth, 0.95)
    assert s["links"] == 3 and s["wrong"] == 2
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 3)
    assert linkage_eval.scores(best, truth, 0.995)["links"] == 0

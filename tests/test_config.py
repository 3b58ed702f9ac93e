"""Config: contract section 2. A bad config fails at load naming the key; keys are checked before work."""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from helpers import write_config
from tfp.config import EXAMPLE, ConfigError, Sources, load_config, load_keys, parse_config
from tfp.feeds import ALL_SOURCES, SOURCES
from tfp.pipeline import configured


def _edit(path, change):
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_example_config_loads_and_resolves_relative_paths():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "config" / "tfp.example.yaml"
    config = load_config(example)
    assert config.local_authority.code == "E09000031"
    assert config.work_dir.is_absolute() and config.work_dir.name == "tfp"
    assert config.warehouse_url.startswith("sqlite:////")
    assert config.sources.police.path.is_absolute()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(surprise=1), "surprise: unknown key"),
        (lambda r: r["quality"].pop("max_bad_row_fraction"), "quality.max_bad_row_fraction: missing required key"),
        (lambda r: r["criteria"].update(min_problems="two"), "criteria.min_problems"),
        (lambda r: r["criteria"].update(min_rent_arrears=-1), "criteria.min_rent_arrears"),
        (lambda r: r["criteria"].update(min_rent_arrears="lots"), "criteria.min_rent_arrears"),
        (lambda r: r["sources"].pop("dwp"), "sources.dwp: missing required key"),
        (lambda r: r["sources"]["police"].update(transport="ftp"), "sources.police"),
        (lambda r: r["consent"].update(lawful_basis="legitimate_interest"), "consent.lawful_basis"),
        (lambda r: r["delivery"].update(encryption="age"), "recipient"),
        (lambda r: r["retention"].update(delete_all_after="soon"), "retention.delete_all_after"),
        (lambda r: r["local_authority"].update(code="Camden"), "local_authority.code"),
    ],
)
def test_bad_config_names_the_key(tmp_path, change, message):
    path = _edit(write_config(tmp_path, "sqlite:///w.db"), change)
    with pytest.raises(ConfigError, match="invalid config") as info:
        load_config(path)
    assert message in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not a file"):  # a folder given as --config: no traceback
        load_config(tmp_path)


def test_keys_are_checked_and_never_shown(tmp_path, keys_env, monkeypatch):
    config = load_config(write_config(tmp_path, "sqlite:///w.db"))
    keys = load_keys(config)
    assert len(keys.pseudonym) == 32 and len(keys.signing) == 32
    assert keys_env["TFP_PSEUDONYM_KEY"] not in repr(keys)
    monkeypatch.setenv("TFP_LINKAGE_KEY", "ab" * 16)  # 16 bytes: too short
    with pytest.raises(ConfigError, match="TFP_LINKAGE_KEY is too short"):
        load_keys(config)
    monkeypatch.delenv("TFP_LINKAGE_KEY")
    with pytest.raises(ConfigError, match="linkage key is missing.*TFP_LINKAGE_KEY"):
        load_keys(config)
    monkeypatch.setenv("TFP_LINKAGE_KEY", "zz" * 32)
    with pytest.raises(ConfigError, match="not a hex string"):
        load_keys(config)
    monkeypatch.setenv("TFP_LINKAGE_KEY", keys_env["TFP_LINKAGE_KEY"])
    short_signing = base64.b64encode(b"secret-signing-material-31bytes").decode()
    monkeypatch.setenv("TFP_SIGNING_KEY", short_signing)
    with pytest.raises(ConfigError, match="raw 32-byte Ed25519") as info:
        load_keys(config)
    assert short_signing not in str(info.value)


# -- settings that would break a promise are refused (outside review, issue 13 items 1, 3 and 8) ------------

def _sftp_delivery(raw: dict) -> None:
    raw["delivery"] = {"transport": "sftp", "conn_id": "sftp_ons", "path": "/inbound", "encryption": "age",
                       "recipient": "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(warehouse_url="postgresql+psycopg://tfp:${TFP_LINKAGE_KEY}@evil.example/x"),
     "warehouse_url: variables are not expanded"),
    (lambda r: r.update(warehouse_url="postgresql+psycopg://tfp:$TFP_LINKAGE_KEY@evil.example/x"),
     "warehouse_url: variables are not expanded"),
    (lambda r: r["retention"].update(staging_months=11), "retention.staging_months: shorter than"),
    (lambda r: (_sftp_delivery(r), r["delivery"].update(encryption="none", recipient=None)),
     "delivery.encryption: none is for local use only"),
    (lambda r: (_sftp_delivery(r), r["anonymisation"].update(k=1)), "anonymisation.k: below 3"),
    (lambda r: (_sftp_delivery(r), r["anonymisation"].update(k=2)), "anonymisation.k: below 3"),
    (lambda r: (_sftp_delivery(r), r["disclosure"].update(suppress_below=9)), "disclosure.suppress_below: below 10"),
    (lambda r: (_sftp_delivery(r), r["disclosure"].update(round_to=1)), "disclosure.round_to: below 5"),
])
def test_unsafe_settings_are_refused_naming_the_key(tmp_path, change, message):
    raw = yaml.safe_load(EXAMPLE.read_text())
    change(raw)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw, tmp_path)


def test_weak_disclosure_over_sftp_only_when_said_and_then_shown(tmp_path):
    raw = yaml.safe_load(EXAMPLE.read_text())
    _sftp_delivery(raw)
    raw["anonymisation"]["k"] = 1
    raw["disclosure"].update(round_to=1, allow_weak_disclosure=True)
    config = parse_config(raw, tmp_path)
    assert config.weak_disclosure == ["anonymisation.k", "disclosure.round_to"]
    assert parse_config(yaml.safe_load(EXAMPLE.read_text()), tmp_path).weak_disclosure == []


def test_new_keys_are_optional_with_safe_defaults(tmp_path):
    config = parse_config(yaml.safe_load(EXAMPLE.read_text()), tmp_path)
    assert config.quality.max_file_bytes == 2_000_000_000
    assert config.inbound.keep_local_files is False
    assert config.disclosure.allow_weak_disclosure is False
    assert config.warehouse_password_env is None
    assert config.criteria.min_rent_arrears == 0
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["criteria"]["min_rent_arrears"] = 250.5
    assert parse_config(raw, tmp_path).criteria.min_rent_arrears == 250.5


def test_the_warehouse_password_comes_from_one_named_variable(tmp_path, monkeypatch):
    from tfp.config import warehouse_url

    raw = yaml.safe_load(EXAMPLE.read_text())
    raw.update(warehouse_url="postgresql+psycopg://tfp@db.example/tfp", warehouse_password_env="TFP_WAREHOUSE_PASSWORD")
    config = parse_config(raw, tmp_path)
    with pytest.raises(ConfigError, match="TFP_WAREHOUSE_PASSWORD"):
        warehouse_url(config)
    monkeypatch.setenv("TFP_WAREHOUSE_PASSWORD", "p@ss/word")
    assert warehouse_url(config) == "postgresql+psycopg://tfp:p%40ss%2Fword@db.example/tfp"


def test_config_sources_are_the_one_source_list():
    """The config's per-source sections are the sources of tfp.feeds (the six required, then the optional
    ones of contract section 10), in the contract's order."""
    assert tuple(Sources.model_fields) == ALL_SOURCES
    assert tuple(n for n, f in Sources.model_fields.items() if f.is_required()) == SOURCES


# -- the identifiers file for the trusted third party (contract section 10, issue 19 item 3) -------------------

ANALYSTS = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def _with_identifiers(raw: dict, recipient: str, delivery: dict | None = None) -> dict:
    _sftp_delivery(raw)
    raw["delivery"].update(identifiers={"recipient": recipient}, **(delivery or {}))
    return raw


def test_identifiers_are_off_by_default_and_take_a_recipient_of_their_own(tmp_path):
    import pyrage

    assert parse_config(yaml.safe_load(EXAMPLE.read_text()), tmp_path).delivery.identifiers is None
    linkage = str(pyrage.x25519.Identity.generate().to_public())
    config = parse_config(_with_identifiers(yaml.safe_load(EXAMPLE.read_text()), linkage), tmp_path)
    assert config.delivery.identifiers.recipient == linkage
    assert config.delivery.recipient == ANALYSTS


@pytest.mark.parametrize("recipient, delivery, message", [
    (ANALYSTS, {}, "delivery.identifiers.recipient must differ from delivery.recipient"),
    # one character changed: the Bech32 checksum fails, so it is not a recipient at all
    (ANALYSTS[:-1] + ("q" if ANALYSTS[-1] != "q" else "p"), {}, "delivery.identifiers.recipient: must be an age"),
    ("age1notakey", {}, "delivery.identifiers.recipient: must be an age"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", {},
     "delivery.identifiers.recipient: must be an age"),
    (None, {"transport": "directory", "path": "out", "conn_id": None, "encryption": "none", "recipient": None},
     "delivery.identifiers needs encryption: age"),
])
def test_bad_identifiers_settings_are_refused_naming_the_key(tmp_path, recipient, delivery, message):
    import pyrage

    recipient = recipient or str(pyrage.x25519.Identity.generate().to_public())
    raw = _with_identifiers(yaml.safe_load(EXAMPLE.read_text()), recipient, delivery)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw, tmp_path)
    raw["delivery"]["identifiers"]["extra"] = 1
    with pytest.raises(ConfigError, match=re.escape("delivery.identifiers.extra: unknown key")):
        parse_config(raw, tmp_path)


def test_the_health_source_is_optional(tmp_path):
    """Contract section 10: a config without ``sources.health`` runs its six sources; with it, seven."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["sources"].pop("health", None)
    config = parse_config(raw, tmp_path)
    assert config.sources.health is None and config.configured_sources == SOURCES
    assert configured(config, list(ALL_SOURCES)) == list(SOURCES)
    assert configured(config, ["health", "police"]) == ["police"]
    raw["sources"]["health"] = {"transport": "directory", "path": "data/inbound/health"}
    config = parse_config(raw, tmp_path)
    assert config.configured_sources == (*SOURCES, "health")
    assert config.source("health").path == (tmp_path / "data/inbound/health").resolve()
    raw["sources"]["health"] = {"transport": "ftp", "path": "x"}
    with pytest.raises(ConfigError, match="sources.health"):
        parse_config(raw, tmp_path)


# -- partners (issue 17 item 1, contract section 10) ------------------------------------------------

def _partners(source: str, *entries: dict):
    return lambda r: r["sources"].update({source: {"partners": list(entries)}})


def test_the_short_form_is_one_partner_named_after_its_source(tmp_path):
    config = load_config(write_config(tmp_path, "sqlite:///w.db"))
    assert [(p.source, p.id, p.short_form) for p in config.all_partners()] == [(s, s, True) for s in SOURCES]
    assert not config.multi_partner
    assert config.partner("police").transport == config.source("police")


def test_a_source_takes_several_partners_each_with_its_own_transport(tmp_path):
    (tmp_path / "in" / "clarion").mkdir(parents=True)
    path = _edit(write_config(tmp_path, "sqlite:///w.db"), _partners(
        "housing",
        {"id": "clarion", "transport": "directory", "path": "in/clarion", "outbound": "out/clarion",
         "cadence": "monthly", "contact": "data@clarion.example"},
        {"id": "peabody", "transport": "sftp", "conn_id": "sftp_peabody", "path": "/out", "outbound": "/in",
         "remove_after_pickup": True}))
    config = load_config(path)
    clarion, peabody = config.partners("housing")
    assert (clarion.id, clarion.transport.transport, peabody.id, peabody.transport.transport) == (
        "clarion", "directory", "peabody", "sftp")
    # relative paths are the config folder's, as for any source; an SFTP partner's are the server's
    assert clarion.transport.path == (tmp_path / "in" / "clarion").resolve()
    assert clarion.outbound == str((tmp_path / "out" / "clarion").resolve())
    assert (peabody.transport.conn_id, peabody.transport.remove_after_pickup, peabody.outbound) == (
        "sftp_peabody", True, "/in")
    assert config.multi_partner and config.partner("housing", "peabody") == peabody
    with pytest.raises(ValueError, match="ask for one by its id"):
        config.source("housing")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_partners("housing", {"id": "Clarion", "transport": "directory", "path": "x"}),
         r"^invalid config \S+: sources\.housing\.partners\.0\.id: String should match pattern"),
        (_partners("housing", {"id": "a" * 33, "transport": "directory", "path": "x"}),
         r"sources\.housing\.partners\.0\.id"),
        (_partners("housing", {"id": "one", "transport": "directory", "path": "x"},
                   {"id": "one", "transport": "directory", "path": "y"}),
         r"sources\.housing\.partners: partner id one is used twice \(also under housing\)"),
        (_partners("housing", {"id": "housing", "transport": "directory", "path": "x"},
                   {"id": "clarion", "transport": "directory", "path": "y"}),
         r"sources\.housing\.partners: partner id housing is the source's own name"),
        (_partners("housing", {"id": "police", "transport": "directory", "path": "x"}),
         r"sources\.housing\.partners: partner id police is used twice \(also under police\)"),
        (_partners("children_services", {"id": "la", "transport": "directory", "path": "x"},
                   {"id": "academy", "transport": "directory", "path": "y"}),
         r"sources\.children_services: has exactly one partner"),
        (_partners("housing"), r"sources\.housing\.partners: List should have at least 1 item"),
        (_partners("housing", {"id": "x", "transport": "directory", "path": "x", "bogus": 1}),
         r"sources\.housing\.partners\.0\.bogus: unknown key"),
        (_partners("housing", {"id": "x", "transport": "sftp", "path": "/x"}),
         r"sources\.housing\.partners\.0\.conn_id: missing required key"),
        (lambda r: r["sources"].update(housing={"path": "x"}),
         r"sources\.housing: needs transport: directory or sftp, or a partners: list"),
    ],
)
def test_bad_partners_are_refused_in_one_line_naming_the_key(tmp_path, change, message):
    path = _edit(write_config(tmp_path, "sqlite:///w.db"), change)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value) and re.search(message, str(info.value)), str(info.value)


def test_children_services_as_one_named_partner_is_allowed(tmp_path):
    path = _edit(write_config(tmp_path, "sqlite:///w.db"),
                 _partners("children_services", {"id": "la_case_system", "transport": "directory", "path": "x"}))
    config = load_config(path)
    assert [p.id for p in config.partners("children_services")] == ["la_case_system"]
    assert config.partner("children_services").id == "la_case_system"  # a source's only partner, by default

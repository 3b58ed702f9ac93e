"""The tfp config file (contract section 2): pydantic models over one YAML file.

Loading fails at once, naming the key, when a key is unknown, missing or of the wrong type.
Secrets are never in the file: it names the environment variables (or Airflow Variables) that
hold them, and :func:`load_keys` reads and checks them.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from tfp import lookups
from tfp.errors import ConfigError
from tfp.feeds import DATASETS
from tfp.resources import example_config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalAuthority(_Strict):
    code: str = Field(pattern=r"^E\d{8}$")
    name: str


class DirectorySource(_Strict):
    transport: Literal["directory"]
    path: Path


class SftpSource(_Strict):
    transport: Literal["sftp"]
    conn_id: str
    path: str
    # the usual pick-up-and-delete pattern: the remote file is removed once it is landed (encrypted) and committed
    remove_after_pickup: bool = False


Source = Annotated[DirectorySource | SftpSource, Field(discriminator="transport")]

PARTNER_ID = r"^[a-z0-9_]{1,32}$"


class _PartnerFields(_Strict):
    """What a partner of a source adds to its transport (contract section 10)."""

    id: str = Field(pattern=PARTNER_ID)
    outbound: str | None = None  # where its feedback goes, over its own transport
    cadence: str | None = None   # documentation: how often it sends (e.g. monthly)
    contact: str | None = None   # documentation: who to ask (a team mailbox, not a person's name)


class DirectoryPartner(_PartnerFields, DirectorySource):
    pass


class SftpPartner(_PartnerFields, SftpSource):
    pass


PartnerConfig = Annotated[DirectoryPartner | SftpPartner, Field(discriminator="transport")]


class MultiSource(_Strict):
    """A source with several partners, each sending the same datasets over its own transport."""

    partners: list[PartnerConfig] = Field(min_length=1)


def _entry_kind(value: object) -> str | None:
    """Which form a source entry is in: ``partners`` (several) or its transport (the short form)."""
    if isinstance(value, dict):
        return "partners" if "partners" in value else value.get("transport")
    if isinstance(value, MultiSource):
        return "partners"
    return getattr(value, "transport", None)


SourceEntry = Annotated[
    Annotated[DirectorySource, Tag("directory")] | Annotated[SftpSource, Tag("sftp")]
    | Annotated[MultiSource, Tag("partners")],
    Discriminator(_entry_kind, custom_error_type="invalid_source",
                  custom_error_message="needs transport: directory or sftp, or a partners: list"),
]


@dataclass(frozen=True)
class Partner:
    """One partner of one source: its id (the source's name in the short form), its transport and the
    optional feedback folder. Every per-partner stage (extract, validate, stage) reads this."""

    source: str
    id: str
    transport: DirectorySource | SftpSource
    outbound: str | None = None

    @property
    def short_form(self) -> bool:
        return self.id == self.source


def _partners_of(source: str, entry: DirectorySource | SftpSource | MultiSource) -> list[Partner]:
    if not isinstance(entry, MultiSource):
        return [Partner(source, source, entry)]
    found = []
    for p in entry.partners:
        fields = {k: getattr(p, k) for k in (DirectorySource if p.transport == "directory" else SftpSource).model_fields}
        transport = (DirectorySource if p.transport == "directory" else SftpSource)(**fields)
        found.append(Partner(source, p.id, transport, p.outbound))
    return found


class Sources(_Strict):
    police: SourceEntry
    probation: SourceEntry
    housing: SourceEntry
    dwp: SourceEntry
    schools: SourceEntry
    children_services: SourceEntry
    # optional sources (contract section 10): a config without them runs as before
    health: SourceEntry | None = None
    support_services: SourceEntry | None = None

    @model_validator(mode="after")
    def _partner_ids(self) -> Sources:
        seen: dict[str, str] = {}
        for source in type(self).model_fields:
            if getattr(self, source) is None:
                continue
            partners = _partners_of(source, getattr(self, source))
            if source == "children_services" and len(partners) != 1:
                raise ValueError("sources.children_services: has exactly one partner (the roster is one snapshot)")
            if len(partners) > 1 and any(p.id == source for p in partners):
                # its records would keep bare record_ids downstream, which a crafted id such as
                # "<other partner>:<id>" could make equal to another partner's record key
                raise ValueError(f"sources.{source}.partners: partner id {source} is the source's own name; with "
                                 "several partners each needs an id of its own, so their record_ids stay apart")
            for partner in partners:
                if partner.id in seen:
                    raise ValueError(f"sources.{source}.partners: partner id {partner.id} is used twice "
                                     f"(also under {seen[partner.id]}); partner ids are unique in the config")
                seen[partner.id] = source
        return self


class Quality(_Strict):
    max_bad_row_fraction: float = Field(ge=0, le=1)
    # checked before a file is read, so a huge or hostile file cannot exhaust the worker's memory
    max_file_bytes: int = Field(default=2_000_000_000, ge=1)


# contract section 10: the roster nightly, incidents and attendance weekly; any other dataset monthly
DEFAULT_MAX_AGE_DAYS: dict[str, int] = {"families": 2, "incidents": 8, "attendance": 8}
OTHER_MAX_AGE_DAYS = 35


class Freshness(_Strict):
    """When a feed is overdue (its newest file older than R - max_age_days) and when a file's row count is
    out of line with the dataset's recent files (more than volume_factor times, or less than 1/volume_factor
    of, the median of its last ``volume_history`` landed files)."""

    on_overdue: Literal["warn", "fail"] = "warn"
    max_age_days: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    volume_factor: float = Field(default=3, gt=1)
    volume_history: int = Field(default=5, ge=3)

    @field_validator("max_age_days")
    @classmethod
    def _known(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(DATASETS))
        if unknown:
            raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; the datasets are "
                             f"{', '.join(sorted(DATASETS))}")
        return value

    def max_age(self, dataset: str) -> int:
        """The dataset's max age in days: its config entry, else the contract's default (35 for most)."""
        return self.max_age_days.get(dataset, DEFAULT_MAX_AGE_DAYS.get(dataset, OTHER_MAX_AGE_DAYS))


class Linkage(_Strict):
    match_probability_threshold: float = Field(gt=0, le=1)
    # the run report's equity section flags a group whose link rate lags the whole by more than this
    # (a fraction: 0.05 is 5 percentage points); not named by the contract, so optional with this default
    equity_margin: float = Field(default=0.05, ge=0, le=1)
    # contract section 10: a record whose best candidate's probability p is in [low, high) goes to the review
    # queue instead of being linked (high above the threshold withholds those links for review too)
    review_band: tuple[float, float] = (0.80, 0.95)
    # a near-tie: the runner-up is at least this fraction as probable as the best candidate (0.5: within one
    # bit of match weight) and the two together reach the band's low end; both then go to the queue
    review_tie_ratio: float = Field(default=0.5, gt=0, le=1)
    # who `tfp review export` encrypts to (an age public key); --recipient overrides it
    review_recipient: str | None = None

    @model_validator(mode="after")
    def _band(self) -> Linkage:
        low, high = self.review_band
        if not 0 < low <= high <= 1:
            raise ValueError("linkage.review_band must be [low, high] with 0 < low <= high <= 1")
        if self.review_recipient is not None and not self.review_recipient.startswith("age1"):
            raise ValueError("linkage.review_recipient must be an age public key (age1...)")
        return self


class Criteria(_Strict):
    min_problems: int = Field(ge=1, le=6)
    lookback_months: int = Field(ge=1, le=120)
    persistent_absence_rate: float = Field(gt=0, le=1)
    fixed_term_exclusions: int = Field(ge=1)
    # contract section 10: the least arrears_amount (pounds) for which a rent_arrears event counts;
    # 0 counts every one, a blank amount included
    min_rent_arrears: float = Field(default=0, ge=0, allow_inf_nan=False)
    # the progress file (contract section 10): month-ends without a baseline problem, weeks off out-of-work benefits
    sustain_months: int = Field(default=6, ge=1, le=60)
    off_benefits_weeks: int = Field(default=26, ge=1, le=520)


class Consent(_Strict):
    lawful_basis: Literal["consent", "public_task"]


class Anonymisation(_Strict):
    k: int = Field(ge=1)


class Disclosure(_Strict):
    suppress_below: int = Field(ge=1)
    round_to: int = Field(ge=1)
    # weaker than k 3 / suppress_below 10 / round_to 5 over SFTP only with this said out loud
    allow_weak_disclosure: bool = False


class Inbound(_Strict):
    # directory transport: keep the partner's plaintext file after it is landed (a partner that owns its folder)
    keep_local_files: bool = False


def is_age_recipient(value: str) -> bool:
    """True when ``value`` is an age X25519 recipient (``age1...``, Bech32 with a valid checksum)."""
    import pyrage

    try:
        pyrage.x25519.Recipient.from_str(value.strip())
    except Exception:  # pyrage raises its own RecipientError; any failure means: not a recipient
        return False
    return value.strip().startswith("age1")


class Identifiers(_Strict):
    """The identifiers file for the trusted third party (contract section 10): ONS's linkage function, whose
    age recipient is not the analysts' (``delivery.recipient``)."""

    recipient: str

    @field_validator("recipient")
    @classmethod
    def _age(cls, value: str) -> str:
        if not is_age_recipient(value):
            raise ValueError("must be an age X25519 public key (age1...)")
        return value.strip()


class Delivery(_Strict):
    transport: Literal["sftp", "directory"]
    path: str
    conn_id: str | None = None
    encryption: Literal["age", "none"]
    recipient: str | None = None
    # off by default; when set, each delivery adds tfp_identifiers_<la>_<date>.csv.age sealed to this recipient only
    identifiers: Identifiers | None = None

    @model_validator(mode="after")
    def _complete(self) -> Delivery:
        if self.transport == "sftp" and not self.conn_id:
            raise ValueError("delivery.conn_id is required when delivery.transport is sftp")
        if self.encryption == "age" and not (self.recipient or "").startswith("age1"):
            raise ValueError("delivery.recipient must be an age public key (age1...) when encryption is age")
        if self.identifiers is not None:
            if self.encryption != "age":
                raise ValueError("delivery.identifiers needs encryption: age (the identifiers file is never written "
                                 "in plaintext)")
            if self.identifiers.recipient == (self.recipient or "").strip():
                raise ValueError("delivery.identifiers.recipient must differ from delivery.recipient (the analysts "
                                 "must not be able to open the identifiers)")
        return self


class Retention(_Strict):
    landing_days: int = Field(ge=1)
    quarantine_days: int = Field(ge=1)
    staging_months: int = Field(ge=1)
    delete_all_after: date


class Keys(_Strict):
    pseudonym_key_env: str
    linkage_key_env: str
    signing_key_env: str


WEAK_DISCLOSURE_FLOOR = {"anonymisation.k": 3, "disclosure.suppress_below": 10, "disclosure.round_to": 5}


class Config(_Strict):
    local_authority: LocalAuthority
    warehouse_url: str
    # the one variable (environment or Airflow Variable) that holds the warehouse password; never expanded
    # from the URL, so no config value can read another variable
    warehouse_password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    work_dir: Path
    sources: Sources
    quality: Quality
    linkage: Linkage
    criteria: Criteria
    consent: Consent
    anonymisation: Anonymisation
    disclosure: Disclosure
    delivery: Delivery
    retention: Retention
    keys: Keys
    inbound: Inbound = Inbound()
    freshness: Freshness = Freshness()

    @model_validator(mode="after")
    def _safe(self) -> Config:
        if "$" in self.warehouse_url:
            raise ValueError("warehouse_url: variables are not expanded; name the variable that holds the "
                             "password in warehouse_password_env")
        if self.retention.staging_months < self.criteria.lookback_months:
            raise ValueError("retention.staging_months: shorter than criteria.lookback_months, it would delete "
                             "records inside the criteria window")
        if self.delivery.transport == "sftp":
            if self.delivery.encryption == "none":
                raise ValueError("delivery.encryption: none is for local use only; delivery over sftp needs age")
            if not self.disclosure.allow_weak_disclosure:
                for key, floor in WEAK_DISCLOSURE_FLOOR.items():
                    if self.disclosure_setting(key) < floor:
                        raise ValueError(f"{key}: below {floor} for a delivery over sftp; set "
                                         "disclosure.allow_weak_disclosure: true to allow it")
        return self

    def disclosure_setting(self, key: str) -> int:
        section, name = key.split(".")
        return getattr(getattr(self, section), name)

    @property
    def weak_disclosure(self) -> list[str]:
        """The disclosure settings below the floor, which the run report and alerts show while they are on."""
        return [key for key, floor in WEAK_DISCLOSURE_FLOOR.items() if self.disclosure_setting(key) < floor]

    def source(self, name: str) -> DirectorySource | SftpSource | None:
        """The transport of a short-form source (one partner, named after the source); None for an optional
        source this config leaves out."""
        partners = self.partners(name)
        if not partners:
            return None
        if len(partners) != 1:
            raise ValueError(f"source {name} has {len(partners)} partners: ask for one by its id")
        return partners[0].transport

    def partners(self, source: str) -> list[Partner]:
        """The partners of a source, in config order (one, named after the source, in the short form; none
        for an optional source the config leaves out)."""
        entry = getattr(self.sources, source)
        return [] if entry is None else _partners_of(source, entry)

    def all_partners(self) -> list[Partner]:
        return [p for source in self.configured_sources for p in self.partners(source)]

    def partner(self, source: str, partner_id: str | None = None) -> Partner:
        """One partner of a source; ``None`` is the short form's (the source's own name), or the source's only
        partner whatever its id."""
        partners = self.partners(source)
        if partner_id is None and len(partners) == 1:
            return partners[0]
        wanted = partner_id or source
        for p in partners:
            if p.id == wanted:
                return p
        raise ValueError(f"source {source} has no partner {wanted}")

    @property
    def multi_partner(self) -> bool:
        """True when any source lists partners other than itself (the short form everywhere otherwise)."""
        return any(not p.short_form for p in self.all_partners())

    @property
    def configured_sources(self) -> tuple[str, ...]:
        """The six required sources and the optional ones this config names, in tfp.feeds' order."""
        from tfp.feeds import ALL_SOURCES

        return tuple(s for s in ALL_SOURCES if getattr(self.sources, s, None) is not None)

    @property
    def reports_dir(self) -> Path:
        return self.work_dir / "reports"

    @property
    def landing_dir(self) -> Path:
        return self.work_dir / "landing"

    @property
    def outbox_dir(self) -> Path:
        return self.work_dir / "outbox"


def _resolve(raw: dict, base: Path) -> dict:
    """Make the config's relative paths relative to the config file's folder."""
    raw = dict(raw)
    if isinstance(raw.get("work_dir"), str):
        raw["work_dir"] = str((base / raw["work_dir"]).resolve())
    url = raw.get("warehouse_url")
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            raw["warehouse_url"] = "sqlite:///" + str((base / rel).resolve())
    sources = raw.get("sources")
    if isinstance(sources, dict):
        def local(s: object) -> object:
            if isinstance(s, dict) and s.get("transport") == "directory":
                s = {**s, **{k: str((base / s[k]).resolve()) for k in ("path", "outbound") if isinstance(s.get(k), str)}}
            return s

        raw["sources"] = {
            name: ({**s, "partners": [local(p) for p in s["partners"]]}
                   if isinstance(s, dict) and isinstance(s.get("partners"), list) else local(s))
            for name, s in sources.items()
        }
    delivery = raw.get("delivery")
    if isinstance(delivery, dict) and delivery.get("transport") == "directory" and isinstance(delivery.get("path"), str):
        raw["delivery"] = {**delivery, "path": str((base / delivery["path"]).resolve())}
    return raw


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        loc = [str(p) for p in e["loc"] if p not in ("directory", "sftp", "function-after[_complete()]")]
        loc = [p for i, p in enumerate(loc) if not (p == "partners" and i and loc[i - 1] == "partners")]  # its tag
        key = ".".join(loc)
        problem = {"extra_forbidden": "unknown key", "missing": "missing required key"}.get(e["type"], e["msg"])
        if e["loc"] and e["type"] == "value_error":  # a field's own rule: its message, without pydantic's prefix
            problem = problem.removeprefix("Value error, ")
            if problem.startswith(f"{key}."):  # a rule that names a deeper key itself
                key, _, problem = problem.partition(": ")
        if not e["loc"] and e["msg"].startswith("Value error, "):  # a whole-config rule names its own key
            key, _, problem = e["msg"].removeprefix("Value error, ").partition(": ")
        lines.append(f"{key or '(top level)'}: {problem}")
    missing = [line.removesuffix(": missing required key") for line in lines if line.endswith(": missing required key")]
    if len(missing) > 3:  # a file that is not a tfp config at all: one phrase, not a dozen
        lines = [f"{len(missing)} required keys missing ({', '.join(missing)})",
                 *(line for line in lines if not line.endswith(": missing required key"))]
    return "; ".join(lines)


# config/tfp.example.yaml in a checkout, tfp/examples/ in an installed wheel (tfp.resources)
EXAMPLE = example_config()


def example_settings(**overrides: object) -> dict:
    """The example config's settings as a dict with some top-level keys replaced.

    The one base for every config tfp writes itself (the demo, the benchmarks, the tests), so the
    defaults live in ``config/tfp.example.yaml`` only.
    """
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw.update(overrides)
    return raw


def _start_from_the_example() -> str:
    return f"start from the example config ({EXAMPLE}): copy it, then edit it (README: configuration)"


def parse_config(raw: object, base: Path, source: Path | None = None) -> Config:
    """Check a config's settings; ``source`` (the file) is named in the error, if given."""
    name = f" {source}" if source else ""
    if not isinstance(raw, dict):
        kinds = {"str": "a line of text", "list": "a list", "int": "a number", "float": "a number", "bool": "a yes/no"}
        state = "empty" if raw is None else kinds.get(type(raw).__name__, "not a mapping")
        raise ConfigError(f"the config file{name} is {state}, not a YAML mapping of keys to values",
                          hint=_start_from_the_example())
    try:
        return Config.model_validate(_resolve(raw, base))
    except ValidationError as e:
        missing = any(x["type"] == "missing" for x in e.errors())
        raise ConfigError(f"invalid config{name}: {_describe(e)}",
                          hint=_start_from_the_example() if missing else ConfigError.hint) from None


def load_config(path: str | os.PathLike) -> Config:
    """Read and check a config file; relative paths are taken from the file's folder."""
    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}",
                          hint=f"give --config the path of your config file; to make one, {_start_from_the_example()}") from None
    except (IsADirectoryError, NotADirectoryError):
        raise ConfigError(f"config path is not a file: {path}",
                          hint="give --config the config file itself (a .yaml file), not its folder") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read: permission denied",
                          hint="run tfp as a user who may read the config (it holds no secret: mode 0640 or 0644 "
                               "is fine), or give --config a copy you can read") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text",
                          hint="give --config the YAML config file, saved as UTF-8") from None
    except OSError as e:  # a FIFO, a device, an I/O error: the system's reason, no content
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or type(e).__name__}") from None
    except yaml.YAMLError as e:  # where, never what: the text near an error could be anything
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{at} ({e.__class__.__name__})",
                          hint="correct the YAML there (indentation, a missing colon or quote); "
                               "the example config shows the layout") from None
    return parse_config(raw, path.parent, source=path)



# -- secrets ---------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class SecretKeys:
    """The three secrets, checked. ``repr`` never shows them."""

    pseudonym: bytes
    linkage: bytes
    signing: bytes  # raw 32-byte Ed25519 private key

    def __repr__(self) -> str:
        return "Keys(<redacted>)"


def read_secret(name: str) -> str | None:
    """An environment variable, or else the installed Variable lookup's value (an Airflow Variable when
    ``tfp_airflow`` is installed: tfp.lookups).

    The value is registered with the installed log masker, so a log line that holds it is redacted.
    A variable that is not set is None; a lookup that fails (a secrets backend down or denying access)
    raises, never mistaken for "not set".
    """
    hooks = lookups.installed()
    value = os.environ.get(name) or hooks.variable(name)
    if value:
        hooks.mask(value)
    return value or None


def secret_names(config: Config) -> list[str]:
    """The variables that hold this config's secrets: the three keys and the warehouse password."""
    names = [config.keys.pseudonym_key_env, config.keys.linkage_key_env, config.keys.signing_key_env]
    return names + ([config.warehouse_password_env] if config.warehouse_password_env else [])


def sensitive_var_conn_names(names: list[str], existing: str = "") -> str:
    """A value for Airflow's ``[core] sensitive_var_conn_names``: ``existing`` plus ``names``.

    Airflow hides a Variable whose lower-cased name contains any entry, but compares the entries as
    written: they must be lower case, or ``TFP_LINKAGE_KEY`` would never match.
    """
    entries = [e.strip().lower() for e in existing.split(",") if e.strip()] + [n.lower() for n in names]
    return ",".join(dict.fromkeys(entries))


def _hmac_key(env: str, what: str) -> bytes:
    value = read_secret(env)
    if not value:
        raise ConfigError(f"the {what} key is missing: set the environment variable or Airflow Variable {env}")
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        raise ConfigError(f"the {what} key in {env} is not a hex string") from None
    if len(key) < 32:
        raise ConfigError(f"the {what} key in {env} is too short: it needs at least 32 bytes (64 hex digits)")
    return key


def warehouse_url(config: Config) -> str:
    """The warehouse URL with its password from ``warehouse_password_env``, when the config names one."""
    if not config.warehouse_password_env:
        return config.warehouse_url
    from sqlalchemy.engine import make_url

    password = read_secret(config.warehouse_password_env)
    if not password:
        raise ConfigError(f"the warehouse password is missing: set the environment variable or Airflow Variable "
                          f"{config.warehouse_password_env}")
    return make_url(config.warehouse_url).set(password=password).render_as_string(hide_password=False)


def load_keys(config: Config) -> SecretKeys:
    """Read and check all three keys, failing before any work with a message that names the variable."""
    pseudonym = _hmac_key(config.keys.pseudonym_key_env, "pseudonymisation")
    linkage = _hmac_key(config.keys.linkage_key_env, "linkage")
    env = config.keys.signing_key_env
    value = read_secret(env)
    if not value:
        raise ConfigError(f"the signing key is missing: set the environment variable or Airflow Variable {env}")
    try:
        signing = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"the signing key in {env} is not base64") from None
    if len(signing) != 32:
        raise ConfigError(f"the signing key in {env} must be a raw 32-byte Ed25519 private key")
    if pseudonym == linkage:
        raise ConfigError("the pseudonymisation and linkage keys must differ")
    return SecretKeys(pseudonym=pseudonym, linkage=linkage, signing=signing)

"""The partner feeds of contract section 3: which datasets exist and what each column must hold.

One table of facts shared by the generator, validation, staging and linking, so that a rule is
written down once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

PERSON_COLUMNS: tuple[str, ...] = ("forename", "surname", "date_of_birth", "sex", "postcode")
SEX_CODES = ("M", "F", "U")
FLAG_CODES = ("Y", "N")
FILE_NAME = re.compile(r"^(?P<dataset>[a-z_]+)_(?P<date>\d{8})\.csv$")


@dataclass(frozen=True)
class Dataset:
    """One dataset of one source, with the row-level rules its values must keep."""

    source: str
    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    dates: tuple[str, ...] = ()
    datetimes: tuple[str, ...] = ()
    not_after_file_date: tuple[str, ...] = ()
    codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    integers: tuple[str, ...] = ()
    decimals: tuple[str, ...] = ()
    # columns a file may leave out of its header (read as empty): added later, so older files stay valid
    optional: tuple[str, ...] = ()
    # the ``<dataset>`` part of the contract's file name, when it differs from the internal name: two sources
    # may each have an ``attendance`` file, so the internal key (table, suite, landing log) is unique per source
    file_stem: str = ""

    @property
    def stem(self) -> str:
        """The name the partner's files carry: ``<stem>_<YYYYMMDD>.csv``."""
        return self.file_stem or self.name


# support_services / attendance: the programme's service types (the contract leaves the list to tfp)
SUPPORT_SERVICE_TYPES: tuple[str, ...] = ("family_support", "parenting", "mentoring", "youth_work",
                                          "employment_support", "debt_advice", "domestic_abuse_support",
                                          "mental_wellbeing", "substance_misuse_support", "other")


def _p(*extra: str) -> tuple[str, ...]:
    return ("record_id", *PERSON_COLUMNS, *extra)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            source="children_services",
            name="families",
            columns=_p("family_ref", "person_ref", "role", "upn", "nino", "uprn", "programme_status",
                       "attached_date", "nhs_number"),
            required=("record_id", "family_ref", "person_ref", "role", "programme_status"),
            dates=("date_of_birth", "attached_date"),
            not_after_file_date=("date_of_birth", "attached_date"),
            codes={"sex": SEX_CODES, "role": ("adult", "child"),
                   "programme_status": ("intervention", "comparison")},
            optional=("nhs_number",),  # contract section 10: a roster without it is accepted unchanged
        ),
        Dataset(
            source="children_services",
            name="needs",
            columns=("record_id", "person_ref", "need", "start_date", "end_date"),
            required=("record_id", "person_ref", "need", "start_date"),
            dates=("start_date", "end_date"),
            not_after_file_date=("start_date",),
            codes={"need": ("child_in_need", "child_protection_plan", "early_help", "young_carer", "neet",
                            "domestic_abuse", "mental_health", "substance_misuse",
                            # contract section 10
                            "section_47", "child_sexual_exploitation", "missing_from_home", "emotional_wellbeing",
                            "child_missing_education", "vulnerable_new_mother", "physical_health")},
        ),
        Dataset(
            source="children_services",
            name="consent",
            columns=("record_id", "person_ref", "purpose", "status", "recorded_at"),
            required=("record_id", "person_ref", "purpose", "status", "recorded_at"),
            datetimes=("recorded_at",),
            not_after_file_date=("recorded_at",),
            codes={"purpose": ("service", "tfp_evaluation"), "status": ("given", "refused", "withdrawn")},
        ),
        Dataset(
            source="police",
            name="incidents",
            columns=_p("pnc_id", "incident_date", "category", "role", "proven"),
            required=("record_id", "surname", "date_of_birth", "incident_date", "category", "role"),
            dates=("date_of_birth", "incident_date"),
            not_after_file_date=("date_of_birth", "incident_date"),
            codes={"sex": SEX_CODES, "category": ("offence", "asb", "domestic_abuse"),
                   "role": ("offender", "suspect", "victim", "perpetrator", "subject"), "proven": FLAG_CODES},
        ),
        Dataset(
            source="probation",
            name="cases",
            columns=_p("pnc_id", "nino", "order_type", "start_date", "end_date", "release_date",
                       "parenting_responsibility"),
            required=("record_id", "surname", "date_of_birth", "order_type", "start_date"),
            dates=("date_of_birth", "start_date", "end_date", "release_date"),
            not_after_file_date=("date_of_birth", "start_date"),
            codes={"sex": SEX_CODES,
                   "order_type": ("licence", "community_order", "suspended_sentence", "custody"),
                   "parenting_responsibility": FLAG_CODES},
        ),
        Dataset(
            source="housing",
            name="tenancy_events",
            columns=_p("uprn", "tenancy_ref", "event", "event_date", "arrears_amount"),
            required=("record_id", "surname", "date_of_birth", "event", "event_date"),
            dates=("date_of_birth", "event_date"),
            not_after_file_date=("date_of_birth", "event_date"),
            codes={"sex": SEX_CODES, "event": ("asb_warning", "asb_injunction", "rent_arrears",
                                               "notice_seeking_possession", "eviction")},
            decimals=("arrears_amount",),
        ),
        Dataset(
            source="dwp",
            name="benefits",
            columns=_p("nino", "benefit", "out_of_work", "claim_start", "claim_end"),
            required=("record_id", "surname", "date_of_birth", "benefit", "claim_start"),
            dates=("date_of_birth", "claim_start", "claim_end"),
            not_after_file_date=("date_of_birth", "claim_start"),
            codes={"sex": SEX_CODES, "benefit": ("jsa", "esa", "is", "uc", "pip", "carers"),
                   "out_of_work": FLAG_CODES},
        ),
        Dataset(
            source="schools",
            name="attendance",
            columns=_p("upn", "school_urn", "term", "sessions_possible", "sessions_missed",
                       "fixed_term_exclusions", "exclusion_days", "permanent_exclusion",
                       "alternative_provision"),
            required=("record_id", "surname", "date_of_birth", "term", "sessions_possible", "sessions_missed"),
            dates=("date_of_birth",),
            not_after_file_date=("date_of_birth",),
            codes={"sex": SEX_CODES, "permanent_exclusion": FLAG_CODES, "alternative_provision": FLAG_CODES},
            integers=("sessions_possible", "sessions_missed", "fixed_term_exclusions"),
            decimals=("exclusion_days",),
        ),
        # contract section 10: the optional health source (NDTMS- and MHSDS-shaped)
        Dataset(
            source="health",
            name="treatment_episodes",
            columns=_p("nhs_number", "episode_start", "episode_end", "substance_group", "treatment_type"),
            required=("record_id", "surname", "date_of_birth", "episode_start", "substance_group"),
            dates=("date_of_birth", "episode_start", "episode_end"),
            not_after_file_date=("date_of_birth", "episode_start"),
            codes={"sex": SEX_CODES,
                   "substance_group": ("opiates", "non_opiates", "alcohol", "alcohol_and_non_opiates")},
        ),
        Dataset(
            source="health",
            name="mental_health_contacts",
            columns=_p("nhs_number", "referral_date", "service_type", "discharge_date"),
            required=("record_id", "surname", "date_of_birth", "referral_date", "service_type"),
            dates=("date_of_birth", "referral_date", "discharge_date"),
            not_after_file_date=("date_of_birth", "referral_date"),
            codes={"sex": SEX_CODES, "service_type": ("cahms", "adult_community", "crisis", "iapt")},
        ),
        # contract section 10: an optional source of private and voluntary providers. Its files are named
        # ``attendance_<YYYYMMDD>.csv`` like the schools'; inside tfp it is ``support_attendance``
        # (stg_support_attendance, expectations/support_attendance.json, freshness key support_attendance)
        Dataset(
            source="support_services",
            name="support_attendance",
            file_stem="attendance",
            columns=_p("provider", "service_type", "start_date", "end_date"),
            required=("record_id", "surname", "date_of_birth", "provider", "service_type", "start_date"),
            dates=("date_of_birth", "start_date", "end_date"),
            not_after_file_date=("date_of_birth", "start_date"),
            codes={"sex": SEX_CODES, "service_type": SUPPORT_SERVICE_TYPES},
        ),
    )
}

# the six sources every config has (contract section 2)
SOURCES: tuple[str, ...] = ("police", "probation", "housing", "dwp", "schools", "children_services")
# contract section 10: sources a config may leave out; a config without them runs exactly as before
OPTIONAL_SOURCES: tuple[str, ...] = ("health", "support_services")
ALL_SOURCES: tuple[str, ...] = (*SOURCES, *OPTIONAL_SOURCES)
HEALTH_DATASETS: tuple[str, ...] = ("treatment_episodes", "mental_health_contacts")
PARTNER_DATASETS: tuple[str, ...] = ("incidents", "cases", "tenancy_events", "benefits", "attendance",
                                     *HEALTH_DATASETS, "support_attendance")


def datasets_of(source: str) -> tuple[str, ...]:
    """The internal dataset names of one source."""
    return tuple(name for name, d in DATASETS.items() if d.source == source)


def parse_file_name(name: str, source: str | None = None) -> tuple[str, date] | None:
    """``incidents_20250131.csv`` -> ("incidents", 2025-01-31); None for a name that is not a feed file.

    With ``source``, the name is read as that source's file (``attendance_...`` of support_services is
    ``support_attendance``); without, as the dataset whose internal name is the file's stem."""
    m = FILE_NAME.fullmatch(name)  # not match: "$" also matches before a trailing newline
    if not m:
        return None
    if source is None:
        dataset = m["dataset"] if m["dataset"] in DATASETS and not DATASETS[m["dataset"]].file_stem else None
    else:
        dataset = next((n for n, d in DATASETS.items() if d.source == source and d.stem == m["dataset"]), None)
    if dataset is None:
        return None
    try:
        return dataset, date(int(m["date"][:4]), int(m["date"][4:6]), int(m["date"][6:]))
    except ValueError:
        return None


def file_name(dataset: str, file_date: date) -> str:
    """The contract's file name of an internal dataset for a date."""
    stem = DATASETS[dataset].stem if dataset in DATASETS else dataset
    return f"{stem}_{file_date:%Y%m%d}.csv"


TERM = re.compile(r"^(?P<year>\d{4})-(?P<term>AUT|SPR|SUM)$")


def term_end(term: str) -> date | None:
    """The last day of a school term code: AUT 31 Dec YYYY, SPR 31 Mar YYYY+1, SUM 31 Jul YYYY+1."""
    m = TERM.match(term or "")
    if not m:
        return None
    y = int(m["year"])
    return {"AUT": date(y, 12, 31), "SPR": date(y + 1, 3, 31), "SUM": date(y + 1, 7, 31)}[m["term"]]

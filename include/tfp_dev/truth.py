"""The true answer for a synthetic borough: contract sections 5 and 6 written plainly in pandas.

This is deliberately a second, independent reading of the contract (the pipeline's criteria live
in SQL under ``include/sql``): the generator uses it to write ``truth/`` and the tests compare
the warehouse's flags against it. It takes the TRUE person of every record, so it says what a
perfect linkage would give.

Month arithmetic (``add_months``): the same day number in the target month, clamped to that
month's last day, so 2024-02-29 - 12 months = 2023-02-28 and 2023-03-31 + 11 months =
2024-02-29. The window of section 5 is then (R - lookback_months, R].
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from datetime import date

import pandas as pd

from tfp.feeds import term_end
from tfp.warehouse import FLAGS

CHILD_NEEDS = ("child_in_need", "child_protection_plan", "early_help", "young_carer",
               "section_47", "child_sexual_exploitation", "missing_from_home", "emotional_wellbeing")  # + section 10
SCHOOL_NEEDS = ("child_missing_education",)  # section 10
COMMUNITY_ORDERS = ("licence", "community_order", "suspended_sentence")
HOUSING_ASB = ("asb_warning", "asb_injunction")
HOUSING_WORKLESS = ("rent_arrears", "notice_seeking_possession", "eviction")
HEALTH_NEEDS = ("mental_health", "substance_misuse", "vulnerable_new_mother", "physical_health")  # + section 10
ASB_ROLES = ("offender", "suspect", "perpetrator", "subject")  # section 10: never victim
CONSENT_STATES = ("given", "refused", "withdrawn", "none")
FAMILY_COLUMNS = ("family_ref", "programme_status", *FLAGS, "problem_count", "eligible")


def add_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` (negative for earlier) on the same day number, clamped to month end."""
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    month += 1
    if day.day <= 28:
        return date(year, month, day.day)
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def last_terms_ended(reference_date: date, count: int = 3) -> list[str]:
    """The ``count`` most recent term codes whose term ended on or before R, oldest first."""
    terms = [f"{y}-{t}" for y in range(reference_date.year - 3, reference_date.year + 1)
             for t in ("AUT", "SPR", "SUM")]
    ended = sorted((t for t in terms if term_end(t) <= reference_date), key=term_end)
    return ended[-count:]


def _dates(values: pd.Series) -> pd.Series:
    """YYYY-MM-DD strings (or blanks) as timestamps; blanks and anything unparseable become NaT."""
    return pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")


def _ints(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").fillna(0).astype("int64")


def age_on(dob: pd.Series, when: pd.Series | pd.Timestamp) -> pd.Series:
    """Completed years; someone born on 29 February gets a year older on 1 March in common years."""
    if isinstance(when, pd.Timestamp):
        when = pd.Series(when, index=dob.index)
    before_birthday = (when.dt.month * 100 + when.dt.day) < (dob.dt.month * 100 + dob.dt.day)
    return when.dt.year - dob.dt.year - before_birthday.astype("int64")


def consent_states(consent: pd.DataFrame, roster: pd.DataFrame, reference_date: date) -> pd.DataFrame:
    """Section 6: each roster person's latest ``tfp_evaluation`` status recorded on or before R.

    On a tie of ``recorded_at`` refused or withdrawn wins over given. Returns
    ``person_ref, family_ref, consent_state, consent_state_on`` (state ``none`` and an empty date
    when there is no event).
    """
    people = roster[["person_ref", "family_ref"]].drop_duplicates("person_ref")
    events = consent[consent["purpose"] == "tfp_evaluation"].copy()
    events["at"] = pd.to_datetime(events["recorded_at"], format="ISO8601", errors="coerce")
    events = events[events["at"].notna() & (events["at"].dt.normalize() <= pd.Timestamp(reference_date))]
    events = events[events["status"].isin(("given", "refused", "withdrawn"))]
    events["wins_tie"] = (events["status"] != "given").astype(int)
    latest = (events.sort_values(["person_ref", "at", "wins_tie", "status"])
              .drop_duplicates("person_ref", keep="last"))
    out = people.merge(latest[["person_ref", "status", "at"]], on="person_ref", how="left")
    out["consent_state"] = out["status"].fillna("none")
    out["consent_state_on"] = out["at"].dt.strftime("%Y-%m-%d").fillna("")
    return out[["person_ref", "family_ref", "consent_state", "consent_state_on"]].reset_index(drop=True)


def ever_withdrawn(consent: pd.DataFrame, reference_date: date) -> set[str]:
    """Everyone with a ``tfp_evaluation`` withdrawal recorded on or before R.

    Contract section 10: after a withdrawal only the references of that person remain, so they count
    for nothing, even in scope ``all`` and even if consent was given again later.
    """
    events = consent[(consent["purpose"] == "tfp_evaluation") & (consent["status"] == "withdrawn")]
    recorded = pd.to_datetime(events["recorded_at"], errors="coerce", format="ISO8601")
    return set(events.loc[recorded.dt.date <= reference_date, "person_ref"])


def kept_persons(states: pd.DataFrame, lawful_basis: str) -> set[str]:
    """Section 6: under ``consent`` only ``given``; under ``public_task`` all but refused/withdrawn."""
    if lawful_basis == "consent":
        keep = states["consent_state"] == "given"
    elif lawful_basis == "public_task":
        keep = ~states["consent_state"].isin(("refused", "withdrawn"))
    else:
        raise ValueError("lawful_basis must be consent or public_task")
    return set(states.loc[keep, "person_ref"])


def truth_flags(
    roster: pd.DataFrame,
    needs: pd.DataFrame,
    records: Mapping[str, pd.DataFrame],
    reference_date: date,
    *,
    kept: Iterable[str] | None = None,
    min_problems: int = 2,
    lookback_months: int = 12,
    persistent_absence_rate: float = 0.10,
    fixed_term_exclusions: int = 3,
    min_rent_arrears: float = 0,
) -> pd.DataFrame:
    """Section 5 flags per family as of R, counting only the people in ``kept`` (all when None).

    ``roster`` is the families snapshot, ``needs`` the needs rows, ``records`` maps each partner
    dataset (incidents, cases, tenancy_events, benefits, attendance) to its rows as read from the
    feed (strings) plus a ``person_ref`` column naming the person each record counts for (blank
    or NA: nobody). Pass only the rows that should count (valid ones). Returns one row per family
    with at least one counted member, columns ``FAMILY_COLUMNS``, flags as 0/1, sorted by family.
    """
    hits = person_flags(roster, needs, records, reference_date, lookback_months=lookback_months,
                        persistent_absence_rate=persistent_absence_rate,
                        fixed_term_exclusions=fixed_term_exclusions, min_rent_arrears=min_rent_arrears)
    return family_flags(roster, hits, reference_date, kept=kept, min_problems=min_problems)


def family_flags(roster: pd.DataFrame, hits: Mapping[str, set[str]], reference_date: date, *,
                 kept: Iterable[str] | None = None, min_problems: int = 2) -> pd.DataFrame:
    """A family has a flag when one of its counted members has it (see ``truth_flags``); it is eligible
    with at least ``min_problems`` flags and a counted member under 18 at R (section 10)."""
    people = roster[["person_ref", "family_ref", "programme_status", "date_of_birth"]].drop_duplicates("person_ref")
    if kept is not None:
        people = people[people["person_ref"].isin(list(set(kept)))]
    people = people.assign(**{flag: people["person_ref"].isin(list(hits[flag])).astype(int) for flag in FLAGS})
    dob = _dates(people["date_of_birth"])
    # an unknown date of birth is nobody's child
    people = people.assign(child=(dob.notna() & (age_on(dob, pd.Timestamp(reference_date)) < 18)).astype(int))
    families = (people.groupby("family_ref", sort=True)
                .agg(programme_status=("programme_status", "first"), child=("child", "max"),
                     **{f: (f, "max") for f in FLAGS})
                .reset_index())
    families["problem_count"] = families[list(FLAGS)].sum(axis=1).astype(int)
    families["eligible"] = ((families["problem_count"] >= min_problems) & (families["child"] == 1)).astype(int)
    return families[list(FAMILY_COLUMNS)].reset_index(drop=True)


def person_flags(
    roster: pd.DataFrame,
    needs: pd.DataFrame,
    records: Mapping[str, pd.DataFrame],
    reference_date: date,
    *,
    lookback_months: int = 12,
    persistent_absence_rate: float = 0.10,
    fixed_term_exclusions: int = 3,
    min_rent_arrears: float = 0,
) -> dict[str, set[str]]:
    """For each flag, the roster people who have it themselves (independent of who else is kept)."""
    r = pd.Timestamp(reference_date)
    window_start = pd.Timestamp(add_months(reference_date, -lookback_months))  # excluded
    release_limit = pd.Timestamp(add_months(reference_date, 12))

    people = roster[["person_ref", "date_of_birth"]].drop_duplicates("person_ref")
    people = people.assign(dob=_dates(people["date_of_birth"]))
    counted = people.assign(age_r=age_on(people["dob"], r))[["person_ref", "dob", "age_r"]]

    def of_counted(frame: pd.DataFrame | None) -> pd.DataFrame:
        if frame is None or frame.empty:
            return pd.DataFrame(columns=[*(frame.columns if frame is not None else []), "dob", "age_r"])
        frame = frame[frame["person_ref"].fillna("") != ""]
        return frame.merge(counted, on="person_ref", how="inner")

    def in_window(when: pd.Series) -> pd.Series:
        return (when > window_start) & (when <= r)

    def active_in_window(start: pd.Series, end: pd.Series) -> pd.Series:
        return (start <= r) & (end.isna() | (end > window_start))

    def active_at_r(start: pd.Series, end: pd.Series) -> pd.Series:
        return (start <= r) & (end.isna() | (end >= r))

    hits: dict[str, set[str]] = {flag: set() for flag in FLAGS}

    def mark(flag: str, frame: pd.DataFrame, mask: pd.Series) -> None:
        hits[flag].update(frame.loc[mask, "person_ref"])

    inc = of_counted(records.get("incidents"))
    if not inc.empty:
        when = _dates(inc["incident_date"])
        inw = in_window(when)
        age_then = age_on(inc["dob"], when)
        offender = ((inc["category"] == "offence") & (inc["proven"] == "Y") & (inc["role"] == "offender")
                    & (age_then >= 10) & (age_then <= 17))
        asb = (inc["category"] == "asb") & inc["role"].isin(ASB_ROLES)
        mark("crime_asb", inc, inw & (offender | asb))
        mark("domestic_abuse", inc, inw & (inc["category"] == "domestic_abuse"))

    ten = of_counted(records.get("tenancy_events"))
    if not ten.empty:
        inw = in_window(_dates(ten["event_date"]))
        mark("crime_asb", ten, inw & ten["event"].isin(HOUSING_ASB))
        # a blank amount is 0: it counts only while the minimum is 0
        amount = pd.to_numeric(ten["arrears_amount"], errors="coerce").fillna(0.0)
        arrears_ok = (ten["event"] != "rent_arrears") | (amount >= min_rent_arrears)
        mark("worklessness", ten, inw & ten["event"].isin(HOUSING_WORKLESS) & arrears_ok)

    cases = of_counted(records.get("cases"))
    if not cases.empty:
        start, end, release = _dates(cases["start_date"]), _dates(cases["end_date"]), _dates(cases["release_date"])
        parent = (cases["age_r"] >= 18) & (cases["parenting_responsibility"] == "Y")
        order = cases["order_type"].isin(COMMUNITY_ORDERS) & active_at_r(start, end)
        custody = ((cases["order_type"] == "custody") & (start <= r)
                   & (release > r) & (release <= release_limit))
        mark("crime_asb", cases, parent & (order | custody))

    ben = of_counted(records.get("benefits"))
    if not ben.empty:
        active = active_at_r(_dates(ben["claim_start"]), _dates(ben["claim_end"]))
        mark("worklessness", ben, (ben["age_r"] >= 18) & (ben["out_of_work"] == "Y") & active)

    att = of_counted(records.get("attendance"))
    if not att.empty:
        att = att[att["term"].isin(last_terms_ended(reference_date)) & (att["age_r"] < 18)]
        if not att.empty:
            per_child = pd.DataFrame({
                "person_ref": att["person_ref"],
                "possible": _ints(att["sessions_possible"]),
                "missed": _ints(att["sessions_missed"]),
                "fte": _ints(att["fixed_term_exclusions"]),
                "serious": ((att["permanent_exclusion"] == "Y") | (att["alternative_provision"] == "Y")).astype(int),
            }).groupby("person_ref").sum()
            rate = per_child["missed"] / per_child["possible"].where(per_child["possible"] > 0)
            persistent = rate.fillna(0) >= persistent_absence_rate
            flagged = persistent | (per_child["fte"] >= fixed_term_exclusions) | (per_child["serious"] > 0)
            hits["school_attendance"].update(per_child.index[flagged])

    nd = of_counted(needs)
    if not nd.empty:
        active = active_in_window(_dates(nd["start_date"]), _dates(nd["end_date"]))
        mark("children_need_help", nd, active & (nd["age_r"] < 18) & nd["need"].isin(CHILD_NEEDS))
        mark("school_attendance", nd, active & (nd["age_r"] < 18) & nd["need"].isin(SCHOOL_NEEDS))
        mark("worklessness", nd, active & (nd["need"] == "neet") & (nd["age_r"] >= 16) & (nd["age_r"] <= 24))
        mark("domestic_abuse", nd, active & (nd["need"] == "domestic_abuse"))
        mark("health", nd, active & nd["need"].isin(HEALTH_NEEDS))

    # contract section 10: the optional health feed; a spell active in the window, at any age
    for dataset, start, end in (("treatment_episodes", "episode_start", "episode_end"),
                                ("mental_health_contacts", "referral_date", "discharge_date")):
        spells = of_counted(records.get(dataset))
        if not spells.empty:
            mark("health", spells, active_in_window(_dates(spells[start]), _dates(spells[end])))

    return hits


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=object, keep_default_na=False, encoding="utf-8-sig")


def read_borough(out, on: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """The roster, needs and consent feeds dated ``on`` under ``out``, and each partner dataset's rows
    that count (valid ones, of someone on the roster) with their true ``person_ref`` from
    ``truth/records.csv``, which lists each partner file's rows in file order."""
    from pathlib import Path

    from tfp.feeds import DATASETS, OPTIONAL_SOURCES, PARTNER_DATASETS, file_name

    out = Path(out)

    def feed(dataset: str) -> pd.DataFrame:
        return _read(out / DATASETS[dataset].source / file_name(dataset, on))

    roster, needs, consent = feed("families"), feed("needs"), feed("consent")
    truth = _read(out / "truth" / "records.csv")
    records: dict[str, pd.DataFrame] = {}
    for dataset in PARTNER_DATASETS:
        if DATASETS[dataset].source in OPTIONAL_SOURCES and not (
                out / DATASETS[dataset].source / file_name(dataset, on)).exists():
            continue  # a borough generated without the optional source
        rows = feed(dataset)
        if len(rows) != int((truth["dataset"] == dataset).sum()):
            raise ValueError(f"truth/records.csv does not list every row of {dataset}")
        rows["person_ref"] = truth.loc[truth["dataset"] == dataset, "person_ref"].to_numpy()
        valid = truth.loc[truth["dataset"] == dataset, "valid"].to_numpy() == "Y"
        records[dataset] = rows[valid & (rows["person_ref"] != "")]
    return roster, needs, consent, records


def write_truth(out, on: date, progress: bool = False) -> dict[str, int]:
    """Read the feeds dated ``on`` and ``truth/records.csv`` under ``out``; write the other truth files.

    Only rows marked valid count, each for its true person (``read_borough``). Writes persons.csv,
    families.csv (everyone counted but the withdrawn), families_consent.csv and
    families_public_task.csv (only the people each lawful basis keeps), and with ``progress``
    progress_consent.csv (the progress file under lawful basis consent, by family_ref). Returns rows per file.
    """
    from pathlib import Path

    truth_dir = Path(out) / "truth"
    roster, needs, consent, records = read_borough(out, on)
    states = consent_states(consent, roster, on)
    written = {"truth/persons.csv": len(states)}
    states.to_csv(truth_dir / "persons.csv", index=False, lineterminator="\n")
    hits = person_flags(roster, needs, records, on)
    counted = set(roster["person_ref"]) - ever_withdrawn(consent, on)
    for name, kept in (("families", counted), ("families_consent", kept_persons(states, "consent")),
                       ("families_public_task", kept_persons(states, "public_task"))):
        flags = family_flags(roster, hits, on, kept=kept)
        flags.to_csv(truth_dir / f"{name}.csv", index=False, lineterminator="\n")
        written[f"truth/{name}.csv"] = len(flags)
    if "support_attendance" in records:  # the support_services cross-check (tfp.support), per lawful basis
        for basis in ("consent", "public_task"):
            counts = truth_support(roster, records["support_attendance"], on, kept=kept_persons(states, basis))
            name = f"truth/support_{basis}.csv"
            pd.DataFrame({"measure": list(counts), "count": list(counts.values())}).to_csv(
                truth_dir / f"support_{basis}.csv", index=False, lineterminator="\n")
            written[name] = len(counts)
    if progress:  # the progress file under lawful basis consent (section 10); this roster is the only one known
        rows = truth_progress({on: roster}, needs, records, on, kept=kept_persons(states, "consent"))
        rows.to_csv(truth_dir / "progress_consent.csv", index=False, lineterminator="\n")
        written["truth/progress_consent.csv"] = len(rows)
    return written


def truth_support(roster: pd.DataFrame, support: pd.DataFrame, reference_date: date, *, kept: Iterable[str],
                  lookback_months: int = 12) -> dict[str, int]:
    """The support_services cross-check (tfp.support's measures), read independently from the feeds: families
    with a kept member whose valid support attendance is active in the window (start <= R and (no end or end
    > R - lookback)), by programme status, attached_date and the earliest such start."""
    from tfp.support import crosscheck_counts

    start, end = _dates(support["start_date"]), _dates(support["end_date"])
    window_start = pd.Timestamp(add_months(reference_date, -lookback_months))
    active = (start <= pd.Timestamp(reference_date)) & (end.isna() | (end > window_start))
    people = roster[roster["person_ref"].isin(set(kept))][["person_ref", "family_ref", "programme_status",
                                                           "attached_date"]]
    attending = support.loc[active, ["person_ref"]].assign(start=start[active]).merge(people, on="person_ref")
    rows = []
    for _, fam in attending.groupby("family_ref"):
        attached = fam["attached_date"].iloc[0]
        rows.append((fam["programme_status"].iloc[0], date.fromisoformat(attached) if attached else None,
                     fam["start"].min().date()))
    return crosscheck_counts(rows)


# -- the progress file (contract section 10) ------------------------------------------------------

PROGRESS_FLAG_COLUMNS = (*(f"{f}_baseline" for f in FLAGS), *(f"{f}_now" for f in FLAGS))
PROGRESS_COLUMNS = ("family_ref", "programme_status", "baseline_date", *PROGRESS_FLAG_COLUMNS,
                    "problems_baseline", "problems_now", "sustained_progress", "off_out_of_work_benefits")


def truth_progress(
    rosters: Mapping[date, pd.DataFrame],
    needs: pd.DataFrame,
    records: Mapping[str, pd.DataFrame],
    reference_date: date,
    *,
    kept: Iterable[str],
    sustain_months: int = 6,
    off_benefits_weeks: int = 26,
    **rules,
) -> pd.DataFrame:
    """The progress file as section 10 defines it, one row per family, by ``family_ref`` (tokens aside).

    ``rosters`` maps each roster file's date to its rows (every file known tonight); the roster of R is
    the newest dated on or before R. ``needs`` and ``records`` are everything known tonight (as for
    ``truth_flags``); ``kept`` the people kept as of R; ``rules`` the criteria settings of ``person_flags``.
    Baseline: intervention, the earliest ``attached_date`` of the family's kept members (else the first
    roster file listing the family); comparison, the first roster file listing the family. Sustained:
    no baseline flag at any of the last ``sustain_months`` month-ends on or before R (judged from the same
    rows). Off benefits: a kept member 18+ at the baseline with an out-of-work claim active at it and none
    active in (R - weeks, R]. ``baseline_date`` is a ``YYYY-MM-DD`` string here.
    """
    known = {day: frame for day, frame in rosters.items() if day <= reference_date}
    roster = known[max(known)]
    kept = set(kept)
    people = roster[roster["person_ref"].isin(kept) & roster["programme_status"].isin(("intervention", "comparison"))]
    people = people.drop_duplicates("person_ref")
    if people.empty:
        return pd.DataFrame(columns=list(PROGRESS_COLUMNS))
    status = people.groupby("family_ref")["programme_status"].agg(
        lambda s: "intervention" if (s == "intervention").any() else "comparison")
    first_listed = {}
    for day in sorted(known):
        for ref in set(known[day]["family_ref"]):
            first_listed.setdefault(ref, day)
    attached = _dates(people["attached_date"]).groupby(people["family_ref"]).min()
    baseline: dict[str, date] = {}
    for ref, st in status.items():
        day = attached.get(ref) if st == "intervention" else None
        chosen = day.date() if day is not None and not pd.isna(day) else first_listed.get(ref, reference_date)
        baseline[ref] = min(chosen, reference_date)

    def family_hits(members: pd.DataFrame, on: date) -> dict[str, set[str]]:
        # only these members' rows: the same answer (a flag is a member's own), and much less to merge
        refs = set(members["person_ref"])
        own = {d: f[f["person_ref"].isin(refs)] for d, f in records.items() if f is not None}
        own_needs = needs[needs["person_ref"].isin(refs)]
        if own_needs.empty and all(f.empty for f in own.values()):
            return {flag: set() for flag in FLAGS}
        hits = person_flags(members, own_needs, {d: f for d, f in own.items() if not f.empty}, on, **rules)
        family_of = dict(zip(members["person_ref"], members["family_ref"], strict=True))
        return {flag: {family_of[p] for p in hits[flag] if p in family_of} for flag in FLAGS}

    member_baseline = people["family_ref"].map(baseline)
    at_baseline: dict[str, set[str]] = {flag: set() for flag in FLAGS}
    for day in sorted(set(baseline.values())):
        for flag, families in family_hits(people[member_baseline == day], day).items():
            at_baseline[flag] |= families
    now = family_hits(people, reference_date)

    with_problem = set().union(*at_baseline.values())
    seen_since: dict[str, set[str]] = {flag: set() for flag in FLAGS}
    month_ends = pd.date_range(end=pd.Timestamp(reference_date), periods=sustain_months, freq="ME")
    for end in month_ends:
        for flag, families in family_hits(people[people["family_ref"].isin(with_problem)], end.date()).items():
            seen_since[flag] |= families

    off: set[str] = set()
    ben = records.get("benefits")
    if ben is not None and not ben.empty:
        ben = ben[(ben["out_of_work"] == "Y") & ben["person_ref"].isin(set(people["person_ref"]))]
        ben = ben.drop(columns=["family_ref", "date_of_birth"], errors="ignore").merge(  # age from the roster
            people[["person_ref", "family_ref", "date_of_birth"]], on="person_ref")
        start, end = _dates(ben["claim_start"]), _dates(ben["claim_end"])
        base = pd.to_datetime(ben["family_ref"].map(baseline))
        r = pd.Timestamp(reference_date)
        since = r - pd.Timedelta(weeks=off_benefits_weeks)
        on_at_baseline = (start <= base) & (end.isna() | (end >= base)) & (age_on(_dates(ben["date_of_birth"]), base) >= 18)
        recent = (start <= r) & (end.isna() | (end > since))
        still_on = set(ben.loc[recent, "person_ref"])
        came_off = ben[on_at_baseline & ~ben["person_ref"].isin(still_on)]
        off = set(came_off["family_ref"])

    rows = []
    for ref in sorted(status.index):
        b = {flag: int(ref in at_baseline[flag]) for flag in FLAGS}
        n = {flag: int(ref in now[flag]) for flag in FLAGS}
        sustained = int(sum(b.values()) > 0 and not any(b[f] and ref in seen_since[f] for f in FLAGS))
        rows.append({"family_ref": ref, "programme_status": status[ref], "baseline_date": baseline[ref].isoformat(),
                     **{f"{f}_baseline": b[f] for f in FLAGS}, **{f"{f}_now": n[f] for f in FLAGS},
                     "problems_baseline": sum(b.values()), "problems_now": sum(n.values()),
                     "sustained_progress": sustained, "off_out_of_work_benefits": int(ref in off)})
    return pd.DataFrame(rows, columns=list(PROGRESS_COLUMNS))

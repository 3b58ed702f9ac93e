"""A synthetic local authority: the feeds of contract section 3 and the truth behind them.

The demo, the tests and the benchmarks need data that behaves like a real borough's: varied names
(hyphens, apostrophes, accents), partner copies with the errors partners make (typos, nicknames,
day/month swaps, old postcodes, blanks, sloppy postcode spacing), twins, namesakes, people on no
roster, consent changes, events on the criteria's boundaries and a few deliberately invalid rows.
Section 10's refinements are in it too: victims of asb, families with no child under 18, every need
code, and rent arrears on, above and below a round threshold (and blank).
``truth/`` records what each record really is and what each family's flags really are, so linkage,
validation and criteria can be scored against it.

Everything is drawn from one seed: Faker only fills name pools up front, the rest comes from a
seeded ``random.Random`` (and numpy for shuffles), so the same arguments give byte-identical files.

``truth/records.csv`` lists every row of every partner file in file order. An invalid row breaks
exactly one rule, named in ``broken_rule`` (see ``RULES``). A duplicated ``record_id`` is an exact
copy of an earlier row of someone on no roster: the first copy is listed valid, the later one
``duplicate_record_id``, so the pair appears twice there and the true flags are the same whether a
validator refuses only the later copy or both. Children's-services files (families, needs,
consent) hold no invalid rows. ``recorded_at`` is a naive local ISO datetime, always before the
file date; a tie (same ``recorded_at``) is always given + withdrawn.
"""

from __future__ import annotations

import csv
import gc
import random
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path

import numpy as np

from tfp.feeds import DATASETS, HEALTH_DATASETS, PARTNER_DATASETS, PERSON_COLUMNS, file_name, term_end
from tfp.identifiers import nhs_check_digit, upn_check_letter
from tfp_dev.truth import add_months, write_truth

# The rule each deliberately invalid row breaks (truth/records.csv ``broken_rule``).
MISSING_SURNAME = "missing_surname"
UNPARSEABLE_DATE = "unparseable_date"
DOB_BEFORE_1900 = "dob_before_1900"
CODE_NOT_IN_LIST = "code_not_in_list"
DATE_AFTER_FILE_DATE = "date_after_file_date"
BAD_NINO = "bad_nino"
BAD_UPN_CHECK_LETTER = "bad_upn_check_letter"
BAD_POSTCODE = "bad_postcode"
SESSIONS_MISSED_OVER_POSSIBLE = "sessions_missed_over_possible"
DUPLICATE_RECORD_ID = "duplicate_record_id"
BAD_NHS_NUMBER = "bad_nhs_number"  # the health feed (contract section 10): a wrong modulus-11 check digit
RULES = (MISSING_SURNAME, UNPARSEABLE_DATE, DOB_BEFORE_1900, CODE_NOT_IN_LIST, DATE_AFTER_FILE_DATE,
         BAD_NINO, BAD_UPN_CHECK_LETTER, BAD_POSTCODE, SESSIONS_MISSED_OVER_POSSIBLE, DUPLICATE_RECORD_ID,
         BAD_NHS_NUMBER)

KEY_DATE = {"incidents": "incident_date", "cases": "start_date", "tenancy_events": "event_date",
            "benefits": "claim_start", "attendance": "date_of_birth", "support_attendance": "start_date"}
BAD_CODE = {"incidents": ("category", "burglary"), "cases": ("order_type", "curfew"),
            "tenancy_events": ("event", "noise_complaint"), "benefits": ("benefit", "dla"),
            "attendance": ("sex", "X"), "support_attendance": ("service_type", "counselling_group")}
BAD_POSTCODES = ("Q1 1AA", "E17 1CI", "12345", "E17", "EI7 4AB", "SW1A 1A")
BAD_NINOS = ("AB12345C", "TN123456A", "AB123456E", "D1234567A", "QQ123456C")
RECORD_PREFIX = {"incidents": "INC", "cases": "PRB", "tenancy_events": "TEN", "benefits": "DWP",
                 "attendance": "ATT", "treatment_episodes": "TRT", "mental_health_contacts": "MHC",
                 "support_attendance": "SUP"}
SUBSTANCE_GROUPS = ("opiates", "non_opiates", "alcohol", "alcohol_and_non_opiates")
TREATMENT_TYPES = ("community", "inpatient", "residential", "recovery_support")
SERVICE_TYPES = ("cahms", "adult_community", "crisis", "iapt")

BOROUGH_DISTRICTS = ("E4", "E10", "E11", "E17", "E18", "IG8")
ELSEWHERE_DISTRICTS = ("N17", "N15", "IG1", "RM6", "M14", "B33", "CR0", "SW9", "W1T", "EC1A", "LS6",
                       "BS5", "NG7", "CF24", "G42", "SE15")
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
NINO_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"
NINO_BANNED = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
LA_NUMBER = "320"
SCHOOL_URNS = tuple(str(103000 + 37 * i) for i in range(40))

NICKNAMES = {
    "William": ("Bill", "Will", "Billy"), "Robert": ("Bob", "Rob", "Bobby"), "Richard": ("Rich", "Dick"),
    "James": ("Jim", "Jimmy", "Jamie"), "Thomas": ("Tom", "Tommy"), "Michael": ("Mike", "Mick"),
    "Elizabeth": ("Liz", "Beth", "Lizzie"), "Margaret": ("Maggie", "Peggy"), "Catherine": ("Kate", "Cathy"),
    "Katherine": ("Kate", "Kathy"), "Jennifer": ("Jenny", "Jen"), "Alexander": ("Alex", "Sandy"),
    "Christopher": ("Chris",), "Daniel": ("Dan", "Danny"), "Joseph": ("Joe", "Joey"), "Samuel": ("Sam",),
    "Benjamin": ("Ben",), "Matthew": ("Matt",), "Anthony": ("Tony",), "Edward": ("Ed", "Ted", "Eddie"),
    "Susan": ("Sue", "Susie"), "Patricia": ("Pat", "Trish"), "Rebecca": ("Becky", "Becca"),
    "Victoria": ("Vicky", "Tori"), "Jonathan": ("Jon",), "Nicholas": ("Nick",), "Stephen": ("Steve",),
    "Andrew": ("Andy", "Drew"), "David": ("Dave",), "Charles": ("Charlie",), "Henry": ("Harry",),
    "John": ("Jack", "Johnny"), "Deborah": ("Debbie", "Deb"), "Samantha": ("Sam", "Sammy"),
    "Abigail": ("Abby",), "Frederick": ("Fred", "Freddie"), "Oliver": ("Ollie",), "Jessica": ("Jess",),
    "Eleanor": ("Ellie", "Nell"), "Amelia": ("Millie",), "Isabella": ("Bella", "Izzy"),
    "Charlotte": ("Lottie", "Charlie"), "Gareth": ("Gaz",), "Gary": ("Gaz",), "Kimberley": ("Kim",),
    "Timothy": ("Tim",), "Gregory": ("Greg",), "Leslie": ("Les",), "Terence": ("Terry",),
    "Lawrence": ("Larry",), "Raymond": ("Ray",), "Ronald": ("Ron", "Ronnie"), "Donald": ("Don",),
    "Kenneth": ("Ken", "Kenny"), "Geoffrey": ("Geoff",), "Philip": ("Phil",), "Peter": ("Pete",),
    "Josephine": ("Jo", "Josie"), "Joanne": ("Jo",), "Natalie": ("Nat",), "Jacqueline": ("Jackie",),
    "Gillian": ("Gill",), "Christine": ("Chris",), "Dorothy": ("Dot",), "Hannah": ("Hanna",),
}

# The columns of each partner dataset after record_id and the person columns (what ``add`` takes).
EXTRA_COLUMNS = {d: DATASETS[d].columns[1 + len(PERSON_COLUMNS):] for d in PARTNER_DATASETS}
# the optional support_services source (contract section 10) is drawn only when asked for (``support``),
# after everything else and from a random generator of its own, so every other file stays byte-identical
SUPPORT = "support_attendance"
CORE_DATASETS = tuple(d for d in PARTNER_DATASETS if d != SUPPORT and d not in HEALTH_DATASETS)
SUPPORT_PROVIDERS = ("Family Action", "Barnardo's", "Home-Start", "Citizens Advice", "Mind", "Turning Point",
                     "The Children's Society", "Action for Children", "St Giles Trust", "Local Food Bank")
SUPPORT_SERVICES = ("family_support", "parenting", "mentoring", "youth_work", "employment_support", "debt_advice",
                    "domestic_abuse_support", "mental_wellbeing", "substance_misuse_support", "other")
NEED_CHILD = ("child_in_need", "child_protection_plan", "early_help", "young_carer",
              "section_47", "child_sexual_exploitation", "missing_from_home", "emotional_wellbeing")  # + section 10
NEED_HEALTH = ("mental_health", "substance_misuse", "vulnerable_new_mother", "physical_health")  # + section 10
ASB_ROLES = ("subject", "perpetrator", "offender", "suspect")  # the roles that count (section 10): never victim
ARREARS_EDGE = "500.00"  # some arrears exactly at a round threshold (the criteria tests use min_rent_arrears 500)
TERM_STARTS = {"AUT": (9, 1), "SPR": (1, 1), "SUM": (4, 1)}
TERM_SESSIONS = {"AUT": 146, "SPR": 122, "SUM": 130}


@dataclass(slots=True, eq=False)
class Person:
    ref: str  # "" for someone on no roster
    forename: str
    surname: str
    dob: date
    sex: str
    postcode: str
    old_postcode: str = ""
    nino: str = ""
    upn: str = ""
    pnc: str = ""
    roster_nino: str = ""
    roster_upn: str = ""
    nhs: str = ""  # the health source (contract section 10): drawn only when a borough has it
    roster_nhs: str = ""
    role: str = "adult"
    family: Family | None = None


@dataclass(slots=True, eq=False)
class Family:
    ref: str
    status: str
    attached: str
    uprn: str
    tenancy: str
    members: list[Person] = field(default_factory=list)


class _Random(random.Random):
    """``random.Random`` with a faster ``randrange``/``choice`` (one ``random()`` call each).

    The generator draws millions of small integers; the stdlib's rejection sampling is several
    times slower, and the tiny bias of scaling a float does not matter for synthetic data.
    """

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if stop is None:
            start, stop = 0, start
        return start + int(self.random() * (stop - start))

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]


@cache
def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def typo(r: random.Random, name: str, letters: str = "aeinorst") -> str:
    """One keying slip inside a name (swap, drop, double or replace a letter; never the first or last).

    Shared with the harsher error model of ``tfp_dev.linkage_data``, which replaces from more letters.
    """
    if len(name) < 3:
        return name
    i = r.randrange(1, len(name) - 1)
    op = r.randrange(4)
    if op == 0:
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    if op == 1:
        return name[:i] + name[i + 1:]
    if op == 2:
        return name[:i] + name[i] + name[i:]
    return name[:i] + r.choice(letters) + name[i + 1:]


class _Borough:
    """The state of one generation run: pools, people and the rows drawn so far."""

    def __init__(self, seed: int, on: date, invalid_rate: float) -> None:
        self.r = _Random(seed)
        self.np = np.random.default_rng(abs(seed))
        self.on = on
        self.invalid_rate = invalid_rate
        self.window_start = add_months(on, -12)  # excluded from the window
        self.earliest = add_months(on, -36)
        self.rows: dict[str, list[tuple[Person, tuple[str, ...]]]] = {d: [] for d in PARTNER_DATASETS}
        self.needs: list[tuple[Person, str, date, date | None]] = []
        self.consent: list[tuple[Person, str, str, datetime]] = []
        self._build_pools(seed)
        self._serial = 0
        self._terms: tuple[list[str], str | None] | None = None
        self._ages: dict[Person, int] = {}
        self.progress_rows: dict[str, list[tuple[Person, tuple[str, ...]]]] = {}
        self.health_r = self.r  # health_stories gives the health source a generator of its own
        self.health_rows: dict[str, list[tuple[Person, tuple[str, ...]]]] = {}

    # ---------------------------------------------------------------- pools and identifiers
    def _build_pools(self, seed: int) -> None:
        from faker import Faker

        def drawn(locale: str, n: int, salt: int) -> tuple[list[str], list[str], list[str]]:
            fake = Faker(locale)
            fake.seed_instance(seed * 131 + salt)
            return ([fake.first_name_male() for _ in range(n)], [fake.first_name_female() for _ in range(n)],
                    [fake.last_name() for _ in range(n)])

        self.male, self.female, self.surnames = drawn("en_GB", 1500, 0)
        self.foreign_male: list[str] = []
        self.foreign_female: list[str] = []
        self.foreign_surnames: list[str] = []
        for salt, locale in enumerate(("fr_FR", "pl_PL", "es_ES", "ga_IE", "pt_PT", "de_DE"), start=1):
            m, f, s = drawn(locale, 120, salt)
            self.foreign_male += m
            self.foreign_female += f
            self.foreign_surnames += s
        prefixes = [a + b for a in NINO_FIRST for b in NINO_SECOND if a + b not in NINO_BANNED]
        self.nino_prefixes = prefixes

    def _unique(self) -> int:
        self._serial += 1
        return self._serial

    def nino(self) -> str:
        n = self._unique()
        prefix = self.nino_prefixes[(n * 7919) % len(self.nino_prefixes)]
        return f"{prefix}{(n * 104729 + 314159) % 1_000_000:06d}{'ABCD'[n % 4]}"

    def upn(self) -> str:
        """LA number, DfE school number, year of allocation, serial: unique for six million pupils."""
        n = self._unique()
        body = f"{LA_NUMBER}{2000 + n % 400:04d}{10 + (n // 400) % 15:02d}{(n // 6000) % 1000:03d}"
        return upn_check_letter(body) + body

    def pnc(self, dob: date) -> str:
        return f"{(dob.year + 12) % 100:02d}/{self._unique() % 10_000_000:07d}{self.r.choice('ABCDEFGHJKLMNPRTUVWXYZ')}"

    def postcode(self, districts: tuple[str, ...] = BOROUGH_DISTRICTS) -> str:
        r = self.r
        return f"{r.choice(districts)} {r.randrange(10)}{r.choice(INWARD_LETTERS)}{r.choice(INWARD_LETTERS)}"

    def forename(self, sex: str) -> str:
        r = self.r
        pool = self.male if sex == "M" else self.female
        x = r.random()
        if x < 0.07:
            return r.choice(self.foreign_male if sex == "M" else self.foreign_female)
        if x < 0.09:
            return f"{r.choice(pool)}-{r.choice(pool)}"
        return r.choice(pool)

    def surname(self) -> str:
        r = self.r
        x = r.random()
        if x < 0.08:
            return r.choice(self.foreign_surnames)
        if x < 0.11:
            return f"{r.choice(self.surnames)}-{r.choice(self.surnames)}"
        return r.choice(self.surnames)

    def dob_for_age(self, age: int, on_birthday: bool = False) -> date:
        """A date of birth giving exactly ``age`` completed years on the file date."""
        hi = add_months(self.on, -12 * age)
        if on_birthday:
            return hi
        lo = add_months(self.on, -12 * (age + 1)) + timedelta(days=1)
        return lo + timedelta(days=self.r.randrange((hi - lo).days + 1))

    def age(self, p: Person) -> int:
        """Completed years on the file date (cached: dates of birth are final once families exist)."""
        age = self._ages.get(p)
        if age is None:
            on = self.on
            age = self._ages[p] = on.year - p.dob.year - ((on.month, on.day) < (p.dob.month, p.dob.day))
        return age

    # ---------------------------------------------------------------- dates
    def in_window(self) -> date:
        return self.window_start + timedelta(days=self.r.randrange(1, (self.on - self.window_start).days + 1))

    def before_window(self) -> date:
        return self.earliest + timedelta(days=self.r.randrange((self.window_start - self.earliest).days + 1))

    def any_date(self) -> date:
        return self.earliest + timedelta(days=self.r.randrange((self.on - self.earliest).days + 1))

    # ---------------------------------------------------------------- people
    def person(self, ref: str, age: int, sex: str | None = None, surname: str | None = None,
               postcode: str | None = None) -> Person:
        r = self.r
        sex = sex or ("M" if r.random() < 0.5 else "F")
        p = Person(ref=ref, forename=self.forename(sex), surname=surname or self.surname(),
                   dob=self.dob_for_age(age, on_birthday=r.random() < 0.01), sex=sex,
                   postcode=postcode or self.postcode())
        if age >= 16:
            p.nino = self.nino()
        if 4 <= age <= 17:
            p.upn = self.upn()
        return p

    def families(self, count: int) -> list[Family]:
        r = self.r
        out: list[Family] = []
        person_no = 0
        for i in range(count):
            intervention = r.random() < 0.6
            fam = Family(ref=f"F{i + 1:06d}", status="intervention" if intervention else "comparison",
                         attached=(self.on - timedelta(days=r.randrange(0, 3 * 365))).isoformat()
                         if intervention else "",
                         uprn=str(100_020_000_000 + i * 13 + r.randrange(13)), tenancy=f"T{i + 1:07d}")
            n_adults = 1 if r.random() < 0.3 else 2
            n_children = r.choices(range(6), weights=(8, 25, 30, 20, 10, 7))[0]
            ages = sorted((r.randrange(18, 25) if r.random() < 0.1 else r.randrange(0, 18)
                           for _ in range(n_children)), reverse=True)
            oldest = ages[0] if ages else 0
            postcode = self.postcode()
            old = self.postcode(r.choice((BOROUGH_DISTRICTS, ELSEWHERE_DISTRICTS))) if r.random() < 0.15 else ""
            family_surname = self.surname()
            adults: list[Person] = []
            for a in range(n_adults):
                age = min(70, max(18, oldest + r.randrange(18, 36))) if ages else r.randrange(18, 60)
                if a == 0:
                    sex = "F" if (n_adults == 1 and r.random() < 0.85) or r.random() < 0.5 else "M"
                else:
                    sex = "M" if adults[0].sex == "F" else ("F" if r.random() < 0.9 else "M")
                surname = family_surname if a == 0 or r.random() < 0.65 else self.surname()
                adults.append(self.person("", age, sex, surname, postcode))
            children: list[Person] = []
            for k, age in enumerate(ages):
                surname = family_surname if r.random() < 0.8 else (adults[-1].surname if r.random() < 0.5
                                                                   else f"{adults[0].surname}-{adults[-1].surname}")
                child = self.person("", age, None, surname, postcode)
                if k == 1 and r.random() < 0.06:  # twins: same birthday and surname, another forename
                    child.dob, child.surname = children[0].dob, children[0].surname
                    child.upn = self.upn() if children[0].upn else ""
                    child.nino = self.nino() if children[0].nino else ""
                    while child.forename == children[0].forename:
                        child.forename = self.forename(child.sex)
                children.append(child)
            for p in adults + children:
                person_no += 1
                p.ref = f"P{person_no:07d}"
                p.family = fam
                p.old_postcode = old
                p.role = "adult" if self.age(p) >= 18 else "child"
                p.roster_nino = p.nino if p.nino and r.random() < 0.88 else ""
                p.roster_upn = p.upn if p.upn and r.random() < 0.9 else ""
                fam.members.append(p)
            out.append(fam)
        everyone = [p for f in out for p in f.members]
        for p in everyone:  # namesakes: another family's person with the same names
            if r.random() < 0.02:
                other = r.choice(everyone)
                if other.family is not p.family and other.sex == p.sex:
                    p.forename, p.surname = other.forename, other.surname
        return out

    def strangers(self, fams: list[Family], count: int) -> list[Person]:
        """People on no roster: absent parents, neighbours, namesakes, children from elsewhere."""
        r = self.r
        roster = [p for f in fams for p in f.members]
        out = []
        for _ in range(count):
            x = r.random()
            if x < 0.1:
                p = self.person("", r.randrange(5, 16), postcode=self.postcode(ELSEWHERE_DISTRICTS))
            else:
                p = self.person("", r.randrange(18, 65))
                if x < 0.45 and fams:
                    fam = r.choice(fams)
                    p.surname = fam.members[0].surname
                    p.postcode = fam.members[0].old_postcode or self.postcode()
                elif x < 0.55 and roster:  # a namesake of someone on the roster
                    namesake = r.choice(roster)
                    p.forename, p.surname, p.sex = namesake.forename, namesake.surname, namesake.sex
            out.append(p)
        return out

    # ---------------------------------------------------------------- partner rows
    def add(self, dataset: str, p: Person, **fields: str) -> None:
        """One partner record of ``p``; ``fields`` are the dataset's columns after the person columns."""
        self.rows[dataset].append((p, tuple(fields[c] for c in EXTRA_COLUMNS[dataset])))

    def incident(self, p: Person, when: date, category: str, role: str, proven: str = "") -> None:
        if not p.pnc and role in ("offender", "suspect", "perpetrator"):
            p.pnc = self.pnc(p.dob)
        pnc = p.pnc if p.pnc and self.r.random() < 0.8 else ""
        self.add("incidents", p, pnc_id=pnc, incident_date=when.isoformat(), category=category, role=role,
                 proven=proven)

    def case(self, p: Person, order: str, start: date, end: date | None, release: date | None,
             parenting: str) -> None:
        if not p.pnc:
            p.pnc = self.pnc(p.dob)
        self.add("cases", p, pnc_id=p.pnc if self.r.random() < 0.9 else "",
                 nino=p.nino if p.nino and self.r.random() < 0.85 else "", order_type=order,
                 start_date=start.isoformat(), end_date=end.isoformat() if end else "",
                 release_date=release.isoformat() if release else "", parenting_responsibility=parenting)

    def tenancy(self, p: Person, event: str, when: date) -> None:
        fam = p.family
        arrears = f"{self.r.randrange(150, 4000)}.{self.r.randrange(100):02d}" if event in (
            "rent_arrears", "notice_seeking_possession") else ""
        if event == "rent_arrears":  # section 10's min_rent_arrears: amounts on, above and below an edge, or blank
            x = self.r.random()
            arrears = ARREARS_EDGE if x < 0.1 else ("" if x < 0.15 else arrears)
        self.add("tenancy_events", p, uprn=fam.uprn if fam and self.r.random() < 0.9 else "",
                 tenancy_ref=fam.tenancy if fam else f"T9{self._unique():06d}", event=event,
                 event_date=when.isoformat(), arrears_amount=arrears)

    def benefit(self, p: Person, benefit: str, out_of_work: str, start: date, end: date | None) -> None:
        start = max(start, add_months(p.dob, 16 * 12))
        end = max(end, start) if end else None
        self.add("benefits", p, nino=p.nino if p.nino and self.r.random() < 0.95 else "", benefit=benefit,
                 out_of_work=out_of_work, claim_start=start.isoformat(), claim_end=end.isoformat() if end else "")

    def need(self, p: Person, need: str, start: date, end: date | None) -> None:
        start = max(start, p.dob)
        end = max(end, start) if end else None
        self.needs.append((p, need, start, end))

    def terms(self) -> tuple[list[str], str | None]:
        """The last six terms ended on or before the file date, and the term in progress (if any)."""
        if self._terms is None:
            codes = [f"{y}-{t}" for y in range(self.on.year - 4, self.on.year + 1) for t in ("AUT", "SPR", "SUM")]
            ended = sorted((c for c in codes if term_end(c) <= self.on), key=term_end)[-6:]
            running = None
            for c in codes:
                start = self._term_start(c)
                if start <= self.on < term_end(c):
                    running = c
            self._terms = (ended, running)
        return self._terms

    @staticmethod
    def _term_start(code: str) -> date:
        year, term = int(code[:4]), code[5:]
        return date(year if term == "AUT" else year + 1, *TERM_STARTS[term])

    def attendance(self, p: Person, rates: dict[str, float], exclusions: dict[str, int] | None = None,
                   serious: str | None = None) -> None:
        """One row per term the child was of school age (two rows when they moved school)."""
        r = self.r
        ended, running = self.terms()
        school = r.choice(SCHOOL_URNS)
        for code in ended + ([running] if running else []):
            year, term = int(code[:4]), code[5:]
            age_sept = year - p.dob.year - ((8, 31) < (p.dob.month, p.dob.day))
            if not 4 <= age_sept <= 15:
                continue
            possible = TERM_SESSIONS[term] - r.randrange(0, 6)
            if rates["default"] == 0.10:  # the boundary case: make 10 % exact
                possible -= possible % 10
            if code == running:
                start = self._term_start(code)
                span = (term_end(code) - start).days
                possible = max(2, possible * ((self.on - start).days + 1) // span)
            missed = round(possible * rates.get(code, rates["default"]))
            fte = (exclusions or {}).get(code, 0)
            parts = [(school, possible, missed)]
            if r.random() < 0.03 and possible > 20:  # moved school mid-term
                split = possible // 2
                school = r.choice(SCHOOL_URNS)
                parts = [(parts[0][0], split, missed // 2), (school, possible - split, missed - missed // 2)]
            for urn, poss, miss in parts:
                pe = "Y" if serious == "permanent" and code == ended[-1] else "N"
                ap = "Y" if serious == "alternative" and code == ended[-1] else ("" if r.random() < 0.02 else "N")
                self.add("attendance", p, upn=p.upn if p.upn and r.random() < 0.92 else "", school_urn=urn,
                         term=code, sessions_possible=str(poss), sessions_missed=str(min(miss, poss)),
                         fixed_term_exclusions="" if (fte == 0 and r.random() < 0.2) else str(fte),
                         exclusion_days=f"{fte * 1.5:g}" if fte else "0",
                         permanent_exclusion=pe, alternative_provision=ap)

    # ---------------------------------------------------------------- what happens to a family
    def live(self, fam: Family) -> None:
        r = self.r
        on, ws = self.on, self.window_start
        adults = [p for p in fam.members if self.age(p) >= 18]
        kids = [p for p in fam.members if self.age(p) < 18]
        youth = [p for p in fam.members if 16 <= self.age(p) <= 24]
        school_age = [p for p in kids if 5 <= self.age(p) <= 16]
        teens = [p for p in fam.members if 11 <= self.age(p) <= 18]
        p_problem = 0.42 if fam.status == "intervention" else 0.18
        has = {k: r.random() < p_problem for k in ("crime", "school", "need", "work", "da", "health")}

        # Schooling for every school-age child; some are persistently absent or excluded.
        ended, running = self.terms()
        for child in school_age:
            rates = {"default": r.choice((0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08))}
            exclusions, serious = None, None
            if has["school"] and child is school_age[0]:
                kind = r.random()
                if kind < 0.12:  # missing from education (section 10): a need, usually with no absence on record
                    start = self.in_window() if r.random() < 0.6 else self.before_window()
                    end = None if r.random() < 0.5 else max(start, ws) + timedelta(days=r.randrange(1, 200))
                    self.need(child, "child_missing_education", start, end)
                elif kind < 0.6:
                    rates.update({c: r.uniform(0.11, 0.35) for c in ended[-3:]})
                elif kind < 0.85:
                    exclusions = {ended[-1]: 2, ended[-2]: 1}
                else:
                    serious = r.choice(("permanent", "alternative"))
            elif r.random() < 0.05:  # absent only long ago, or only in the term still running: not counted
                rates.update({c: 0.3 for c in ended[:3]} if r.random() < 0.5 or not running else {running: 0.4})
            elif r.random() < 0.03:  # exactly the threshold over the last three terms: counted
                rates["default"] = 0.10
            self.attendance(child, rates, exclusions, serious)

        if has["crime"]:
            options = ["asb"]
            if any(self._offence_date(t) for t in teens):
                options.append("teen")
            if adults:
                options += ["housing", "probation"]
            kind = r.choice(options)
            if kind == "teen":
                t = next(t for t in teens if self._offence_date(t))
                self.incident(t, self._offence_date(t), "offence", "offender", "Y")
            elif kind == "asb":
                who = r.choice([p for p in fam.members if self.age(p) >= 10] or fam.members)
                self.incident(who, self.in_window(), "asb", r.choice(ASB_ROLES))
            elif kind == "housing":
                self.tenancy(r.choice(adults), r.choice(("asb_warning", "asb_injunction")), self.in_window())
            else:
                self._probation(r.choice(adults), active=True)
        if has["need"] and kids:
            start = self.in_window() if r.random() < 0.5 else self.before_window()
            end = None if r.random() < 0.6 else start + timedelta(days=r.randrange(30, 400))
            if end and end <= ws:
                end = ws + timedelta(days=r.randrange(1, 60))
            self.need(r.choice(kids), r.choice(NEED_CHILD), start, end)
        if has["work"]:
            kind = r.random()
            if youth and kind < 0.2:
                self.need(r.choice(youth), "neet", self.in_window(), None)
            elif adults and kind < 0.85:
                p = r.choice(adults)
                self.benefit(p, r.choice(("jsa", "esa", "is", "uc")), "Y", self.any_date(),
                             None if r.random() < 0.7 else on + timedelta(days=r.randrange(0, 300)))
            elif adults:
                self.tenancy(r.choice(adults), r.choice(("rent_arrears", "notice_seeking_possession", "eviction")),
                             self.in_window())
        if has["da"] and adults:
            if r.random() < 0.6:
                self.incident(r.choice(adults), self.in_window(), "domestic_abuse", r.choice(("victim", "perpetrator")))
            else:
                self.need(r.choice(adults), "domestic_abuse", self.any_date(), None)
        if has["health"]:
            need = r.choice(NEED_HEALTH)
            mothers = [p for p in adults if p.sex == "F" and self.age(p) < 30]
            if need == "vulnerable_new_mother" and not mothers:
                need = "physical_health"
            who = (r.choice(mothers) if need == "vulnerable_new_mother" else
                   r.choice(fam.members) if need == "physical_health" else
                   r.choice([p for p in fam.members if self.age(p) >= 12] or fam.members))
            start = self.any_date()
            end = None if r.random() < 0.5 else max(start, ws) + timedelta(days=r.randrange(1, 200))
            self.need(who, need, start, end)

        self._background(fam, adults, kids)
        if r.random() < 0.15:
            self._boundary(fam, adults, kids)

    def _offence_date(self, p: Person) -> date | None:
        """A day in the window on which ``p`` was aged 10-17 (deterministic per person), or None."""
        first = max(add_months(p.dob, 120), self.window_start + timedelta(days=1))
        last = min(add_months(p.dob, 216) - timedelta(days=1), self.on)
        if first > last:
            return None
        return first + timedelta(days=(p.dob.toordinal() * 37) % ((last - first).days + 1))

    def _probation(self, p: Person, active: bool) -> None:
        """A case that makes the flag for a parent (active) or one over before the window began."""
        r, on = self.r, self.on
        order = r.choice(("licence", "community_order", "suspended_sentence", "custody"))
        if active:
            start = self.any_date()
            if order == "custody":
                self.case(p, order, start, None, on + timedelta(days=r.randrange(1, 330)), "Y")
            else:
                end = None if r.random() < 0.2 else on + timedelta(days=r.randrange(0, 500))
                self.case(p, order, start, end, None, "Y")
            return
        start = self.before_window()
        over = start + timedelta(days=r.randrange(30, 200))
        if order == "custody":
            self.case(p, order, start, None, over, r.choice("YN"))
        else:
            self.case(p, order, start, over, None, r.choice("YN"))

    def _background(self, fam: Family, adults: list[Person], kids: list[Person]) -> None:
        """Events that do not make a flag on their own: in-work claims, old or minor incidents."""
        r, on, ws = self.r, self.on, self.window_start
        for a in adults:
            x = r.random()
            if x < 0.25:
                self.benefit(a, "uc", "N", self.any_date(), None)
            elif x < 0.35:
                self.benefit(a, r.choice(("pip", "carers")), "N", self.any_date(), None)
            elif x < 0.45:
                start = self.before_window()
                self.benefit(a, r.choice(("jsa", "esa", "uc")), "Y", start,
                             min(on - timedelta(days=1), start + timedelta(days=r.randrange(30, 400))))
        older = [p for p in fam.members if self.age(p) >= 13]
        if older and r.random() < 0.12:
            who = r.choice(older)
            self.incident(who, self.before_window(), r.choice(("offence", "asb", "domestic_abuse")),
                          r.choice(("offender", "subject", "victim")), r.choice("YN"))
        if r.random() < 0.08:  # a victim of asb in the window: counts for nothing (section 10)
            self.incident(r.choice(fam.members), self.in_window(), "asb", "victim")
        if kids and r.random() < 0.03:  # missing from education long ago: over before the window
            start = self.before_window()
            self.need(r.choice(kids), "child_missing_education", start, min(ws, start + timedelta(days=r.randrange(30, 300))))
        if r.random() < 0.1:
            who = r.choice(fam.members)
            self.incident(who, self.in_window(), "offence", "victim" if self.age(who) < 11 else r.choice(("victim", "suspect")),
                          "N")
        if kids and r.random() < 0.08:
            start = self.before_window()
            self.need(r.choice(kids), r.choice(NEED_CHILD), start, min(ws, start + timedelta(days=r.randrange(30, 300))))
        if adults and r.random() < 0.04:
            self._probation(r.choice(adults), active=False)
        if adults and r.random() < 0.05:
            self.tenancy(r.choice(adults), "rent_arrears", self.before_window())

    def _boundary(self, fam: Family, adults: list[Person], kids: list[Person]) -> None:
        """One event on an edge of section 5, on either side of it."""
        r, on, ws = self.r, self.on, self.window_start
        inside = r.random() < 0.5
        edge = ws + timedelta(days=1) if inside else ws
        kind = r.choice(("asb_date", "need_end", "claim_end", "release", "order_end", "age_offence", "neet",
                         "housing_on"))
        anyone = r.choice([p for p in fam.members if self.age(p) >= 11] or fam.members)
        if kind == "asb_date":
            self.incident(anyone, edge, "asb", "subject")
        elif kind == "need_end":
            self.need(anyone, r.choice(("domestic_abuse", "mental_health")), self.before_window(), edge)
        elif kind == "claim_end" and adults:
            self.benefit(r.choice(adults), "jsa", "Y", self.before_window(), on if inside else on - timedelta(days=1))
        elif kind == "release" and adults:
            limit = add_months(on, 12)
            self.case(r.choice(adults), "custody", self.before_window(), None,
                      limit if inside else limit + timedelta(days=1), "Y")
        elif kind == "order_end" and adults:
            self.case(r.choice(adults), "community_order", self.before_window(),
                      on if inside else on - timedelta(days=1), None, "Y")
        elif kind == "age_offence":
            for p in fam.members:
                for years, shift in ((18, -1 if inside else 0), (10, 0 if inside else -1)):
                    when = add_months(p.dob, 12 * years) + timedelta(days=shift)
                    if ws < when <= on:
                        self.incident(p, when, "offence", "offender", "Y")
                        return
        elif kind == "neet":
            for p in fam.members:
                if self.age(p) in (15, 16, 24, 25):
                    self.need(p, "neet", edge, None)
                    return
        elif kind == "housing_on" and adults:
            self.tenancy(r.choice(adults), "eviction", on if inside else ws)

    def progress_stories(self, fams: list[Family], seed: int) -> None:
        """Histories for the progress file (contract section 10): intervention families whose problem at the
        baseline (attached_date) has gone and stayed gone, has gone only lately, or came back (a relapse), and
        adults on an out-of-work claim at the baseline who came off it (or came off it too lately, or on the
        edge of off_benefits_weeks).

        Every event here lies outside R's window (before R - 12 months) or ended before R, so R's flags and the
        other files are as before; the rows are drawn with a random generator of their own into
        ``progress_rows`` and appended after each partner file's own rows, so nothing else in a file moves.
        """
        saved = self.r, self.rows
        self.r, self.rows = _Random(seed * 31 + 7), {d: [] for d in CORE_DATASETS}
        try:
            r, on = self.r, self.on
            year_ago = add_months(on, -12)
            off_since = on - timedelta(weeks=26)

            def before(day: date, days: int) -> date:  # up to ``days`` before ``day``, never before the earliest
                return max(min(self.earliest, day), day - timedelta(days=r.randrange(0, days)))

            for fam in fams:
                if fam.status != "intervention" or not fam.attached:
                    continue
                b = date.fromisoformat(fam.attached)
                adults = [p for p in fam.members if p.role == "adult"] or fam.members
                x = r.random()
                if b <= add_months(on, -30) and x < 0.5:  # a relapse: gone for a year, then back lately
                    self.incident(r.choice(adults), before(b, 200), "asb", "subject")
                    self.incident(r.choice(adults), year_ago - timedelta(days=r.randrange(1, 140)), "asb", "subject")
                elif b <= add_months(on, -18) and x < 0.6:  # improved and stayed improved
                    self.tenancy(r.choice(adults), r.choice(("asb_warning", "asb_injunction")),
                                 before(b, 200))
                elif add_months(on, -17) < b <= year_ago and x < 0.6:  # improved, not for long enough yet
                    self.incident(r.choice(adults), before(b, 60), "asb", "subject")
                if b <= add_months(on, -8) and r.random() < 0.35:  # on out-of-work benefits at the baseline
                    y = r.random()
                    if y < 0.6:
                        end = b + timedelta(days=r.randrange(0, max(1, (off_since - b).days)))  # off since
                    elif y < 0.8:
                        end = off_since  # ended on R - 26 weeks: none active in (R - 26 weeks, R]
                    else:
                        end = off_since + timedelta(days=r.randrange(1, 100))  # off too lately
                    self.benefit(r.choice(adults), r.choice(("jsa", "esa", "uc")), "Y",
                                 before(b - timedelta(days=30), 370), min(end, on - timedelta(days=1)))
            self.progress_rows = self.rows
        finally:
            self.r, self.rows = saved

    def support_lives(self, fams: list[Family], strangers: list[Person], seed: int) -> None:
        """support_services attendances (``support``): many intervention families attend, some comparison
        families too (contamination), and a few people on no roster. Some intervention families that attend
        lose their ``attached_date`` on the roster, and some began attending before their attached month, so
        the run report's cross-check has something to find. Drawn with a generator of its own after every
        other file's rows, and the roster changes only here."""
        r, on = _Random(seed * 53 + 17), self.on
        self.r = r
        self.np = np.random.default_rng(abs(seed) * 53 + 17)

        def attend(p: Person, start: date) -> None:
            start = min(start, on)
            end = "" if r.random() < 0.4 else (start + timedelta(days=r.randrange(14, 300))).isoformat()
            self.add(SUPPORT, p, provider=r.choice(SUPPORT_PROVIDERS), service_type=r.choice(SUPPORT_SERVICES),
                     start_date=start.isoformat(), end_date=end)

        for fam in fams:
            chance = 0.55 if fam.status == "intervention" else 0.15
            if r.random() >= chance:
                continue
            for p in r.sample(fam.members, r.randrange(1, min(3, len(fam.members)) + 1)):
                x = r.random()
                if fam.attached and x < 0.15:  # began before the family was attached
                    attached = date.fromisoformat(fam.attached).replace(day=1)
                    attend(p, max(self.earliest, attached - timedelta(days=r.randrange(1, 200))))
                elif x < 0.2:  # long ago, outside the window
                    attend(p, self.before_window())
                else:
                    attend(p, self.in_window())
            if fam.status == "intervention" and r.random() < 0.12:
                fam.attached = ""  # the roster has no attached_date for a family being supported
        for p in strangers:
            if r.random() < 0.1:
                attend(p, self.in_window())

    def progress_file_rows(self, dataset: str, first: int) -> tuple[list[list[str]], list[tuple[str, str, str]]]:
        """The rows of ``progress_stories`` for one partner file, numbered from ``first``, and their truth.
        The person columns are the roster's own, so these records link as surely as the roster allows."""
        rows, truth = [], []
        for i, (p, fields) in enumerate(self.progress_rows.get(dataset, ()), start=first):
            rows.append([f"{RECORD_PREFIX[dataset]}{i:08d}", p.forename, p.surname, p.dob.isoformat(), p.sex,
                         p.postcode, *fields])
            truth.append((p.ref, "Y", ""))
        return rows, truth

    def health_stories(self, fams: list[Family], strangers: list[Person], seed: int) -> None:
        """The optional health source (contract section 10): NHS numbers for everyone, on the roster for
        most, and treatment episodes and mental-health contacts, many on the window's edges.

        Drawn with a random generator of their own after everything else, so that a borough with health
        has the same rows in every other file as one without (only the roster gains its column). A record
        carries its person's own name, date of birth and postcode (as ``progress_file_rows``), and mostly the
        NHS number; ``health_file_rows`` makes a few NHS numbers invalid.
        """
        saved = self.r
        self.r = self.health_r = _Random(seed * 37 + 11)
        try:
            self._health_stories(fams, strangers)
        finally:
            self.r = saved

    def _health_stories(self, fams: list[Family], strangers: list[Person]) -> None:
        r = self.r
        on, ws = self.on, self.window_start
        serial = 0

        def nhs() -> str:
            nonlocal serial
            while True:
                serial += 1
                body = f"{400_000_000 + serial * 7:09d}"
                check = nhs_check_digit(body)
                if check is not None:
                    return body + str(check)

        for fam in fams:
            for p in fam.members:
                p.nhs = nhs()
                p.roster_nhs = p.nhs if r.random() < 0.7 else ""
        for p in strangers:
            p.nhs = nhs()
        self.health_rows = {d: [] for d in HEALTH_DATASETS}

        def spell() -> tuple[date, date | None]:
            kind = r.choice(("open", "ended_before", "ended_on_edge", "ended_day_after_edge", "ends_ahead",
                             "starts_on_r", "in_window"))
            if kind == "open":
                return self.before_window(), None
            if kind == "ended_before":
                return self.earliest, ws - timedelta(days=r.randrange(1, 200))
            if kind == "ended_on_edge":  # end = R - lookback: not active in the window
                return self.earliest, ws
            if kind == "ended_day_after_edge":
                return self.earliest, ws + timedelta(days=1)
            if kind == "ends_ahead":
                return self.in_window(), on + timedelta(days=r.randrange(1, 300))
            if kind == "starts_on_r":
                return on, None
            start = self.in_window()
            return start, start + timedelta(days=r.randrange(0, (on - start).days + 1))

        def add(p: Person) -> None:
            start, end = spell()
            start = max(start, p.dob)
            end = max(end, start) if end else None
            number = p.nhs if r.random() < 0.85 else ""
            if r.random() < 0.5:
                fields = (number, start.isoformat(), end.isoformat() if end else "", r.choice(SUBSTANCE_GROUPS),
                          r.choice(TREATMENT_TYPES))
                self.health_rows["treatment_episodes"].append((p, fields))
            else:
                fields = (number, start.isoformat(), r.choice(SERVICE_TYPES), end.isoformat() if end else "")
                self.health_rows["mental_health_contacts"].append((p, fields))

        for fam in fams:
            if r.random() < 0.3:
                for _ in range(r.randrange(1, 3)):
                    add(r.choice(fam.members))
        for p in strangers:
            if r.random() < 0.2:
                add(p)

    def health_file_rows(self, dataset: str) -> tuple[list[list[str]], list[tuple[str, str, str]]]:
        """The rows of one health file in a shuffled order, and their truth; about 2 % (at least one) carry
        an NHS number whose check digit is wrong (rule ``bad_nhs_number``)."""
        r = self.health_r
        drawn = list(self.health_rows[dataset])
        r.shuffle(drawn)
        rows, truth = [], []
        for i, (p, fields) in enumerate(drawn, start=1):
            rows.append([f"{RECORD_PREFIX[dataset]}{i:08d}", p.forename, p.surname, p.dob.isoformat(), p.sex,
                         p.postcode, *fields])
            truth.append((p.ref, "Y", ""))
        for target in r.sample(range(len(rows)), min(len(rows), max(1, round(len(rows) * 0.02)))):
            right = rows[target][6] or drawn[target][0].nhs
            rows[target][6] = right[:9] + str((int(right[9]) + 1 + r.randrange(8)) % 10)
            truth[target] = (truth[target][0], "N", BAD_NHS_NUMBER)
        return rows, truth

    def stranger_life(self, p: Person) -> None:
        r = self.r
        if self.age(p) < 18:
            self.attendance(p, {"default": r.choice((0.02, 0.05, 0.15))})
            if self.age(p) >= 11 and r.random() < 0.3:
                self.incident(p, self.in_window(), "asb", "subject")
            return
        for _ in range(r.randrange(1, 4)):
            x = r.random()
            if x < 0.4:
                self.incident(p, self.any_date(), r.choice(("offence", "asb", "domestic_abuse")),
                              r.choice(("offender", "suspect", "victim", "perpetrator", "subject")), r.choice("YN"))
            elif x < 0.6:
                self._probation(p, active=r.random() < 0.5)
            elif x < 0.9:
                self.benefit(p, r.choice(("jsa", "uc", "esa", "pip")), r.choice("YN"), self.any_date(), None)
            else:
                self.tenancy(p, r.choice(("asb_warning", "rent_arrears")), self.any_date())

    def consents(self, fam: Family) -> None:
        """tfp_evaluation consent histories (and some service ones, which do not count)."""
        r, on = self.r, self.on
        base = r.choices(("none", "given", "refused", "withdrawn", "regiven", "tie"), weights=(24, 50, 10, 9, 5, 2))[0]

        days = (on - self.earliest).days
        start = datetime.combine(self.earliest, time(8, 0))

        def moment() -> datetime:  # office hours on a day before the file date
            return start + timedelta(days=r.randrange(days), seconds=r.randrange(36000))

        for p in fam.members:
            story = base if r.random() < 0.8 else r.choice(("none", "given", "refused", "withdrawn"))
            first, second = sorted((moment(), moment()))
            if second == first:
                second = first + timedelta(seconds=1)
            if story == "given":
                self.consent.append((p, "tfp_evaluation", "given", first))
            elif story == "refused":
                self.consent.append((p, "tfp_evaluation", "refused", first))
            elif story == "withdrawn":  # given, later withdrawn
                self.consent.append((p, "tfp_evaluation", "given", first))
                self.consent.append((p, "tfp_evaluation", "withdrawn", second))
            elif story == "regiven":  # refused, later given
                self.consent.append((p, "tfp_evaluation", "refused", first))
                self.consent.append((p, "tfp_evaluation", "given", second))
            elif story == "tie":  # given and withdrawn at the same moment: withdrawn wins
                self.consent.append((p, "tfp_evaluation", "given", first))
                self.consent.append((p, "tfp_evaluation", "withdrawn", first))
            if r.random() < 0.15:
                self.consent.append((p, "service", r.choice(("given", "refused", "withdrawn")), moment()))

    # ---------------------------------------------------------------- partner copies
    def copy_of(self, p: Person) -> tuple[str, str, str, str, str]:
        """The person columns as a partner holds them: usually right, sometimes not quite."""
        r, on = self.r, self.on
        fn, sn = p.forename, p.surname
        x = r.random()
        if x < 0.05 and fn in NICKNAMES:
            fn = r.choice(NICKNAMES[fn])
        elif x < 0.09:
            fn = typo(r, fn)
        elif x < 0.11:
            fn = ""
        elif x < 0.15:
            fn = fn.upper()
        if fn and r.random() < 0.5 and fn != _strip_accents(fn):
            fn = _strip_accents(fn)
        x = r.random()
        if x < 0.03:
            sn = typo(r, sn)
        elif x < 0.08:
            sn = sn.upper()
        elif x < 0.10 and "-" in sn:
            sn = sn.split("-")[r.randrange(2)]
        elif x < 0.12 and "'" in sn:
            sn = sn.replace("'", "")
        if r.random() < 0.5 and sn != _strip_accents(sn):
            sn = _strip_accents(sn)
        dob = p.dob
        x = r.random()
        if x < 0.02 and dob.day <= 12 and dob.day != dob.month:
            swapped = date(dob.year, dob.day, dob.month)
            dob = swapped if swapped <= on else dob
        elif x < 0.03:
            shifted = dob + timedelta(days=r.choice((-1, 1, 10, -10)))
            dob = shifted if shifted <= on else dob
        sex = "" if r.random() < 0.03 else p.sex
        pc = p.postcode
        x = r.random()
        if p.old_postcode and x < 0.4:
            pc = p.old_postcode
        elif x < 0.05:
            pc = ""
        x = r.random()
        if pc and x < 0.05:
            pc = pc.lower()
        elif pc and x < 0.10:
            pc = pc.replace(" ", "")
        elif pc and x < 0.12:
            pc = pc.replace(" ", "  ")
        return fn, sn, dob.isoformat(), sex, pc

    # ---------------------------------------------------------------- invalid rows
    def corrupt(self, dataset: str, row: dict[str, str], rule: str) -> None:
        r, on = self.r, self.on
        if rule == MISSING_SURNAME:
            row["surname"] = ""
        elif rule == UNPARSEABLE_DATE:
            column = KEY_DATE[dataset]
            y = row[column][:4]
            row[column] = r.choice((f"{y}-02-30", f"{y}-13-01", f"{y}-00-10"))
        elif rule == DOB_BEFORE_1900:
            row["date_of_birth"] = f"18{r.randrange(50, 100)}{row['date_of_birth'][4:]}".replace("-02-29", "-02-28")
        elif rule == CODE_NOT_IN_LIST:
            column, value = BAD_CODE[dataset]
            row[column] = value
        elif rule == DATE_AFTER_FILE_DATE:
            row[KEY_DATE[dataset]] = (on + timedelta(days=r.randrange(1, 90))).isoformat()
        elif rule == BAD_NINO:
            row["nino"] = r.choice(BAD_NINOS)
        elif rule == BAD_UPN_CHECK_LETTER:
            upn = row["upn"] or self.upn()
            row["upn"] = r.choice([c for c in "ABCDEFGHJKLMNPQRTUVWXYZ" if c != upn[0]]) + upn[1:]
        elif rule == BAD_POSTCODE:
            row["postcode"] = r.choice(BAD_POSTCODES)
        elif rule == SESSIONS_MISSED_OVER_POSSIBLE:
            row["sessions_missed"] = str(int(row["sessions_possible"]) + r.randrange(1, 20))

    def rules_for(self, dataset: str) -> list[str]:
        rules = [MISSING_SURNAME, UNPARSEABLE_DATE, DOB_BEFORE_1900, CODE_NOT_IN_LIST, DATE_AFTER_FILE_DATE,
                 BAD_POSTCODE]
        if "nino" in DATASETS[dataset].columns:
            rules.append(BAD_NINO)
        if dataset == "attendance":
            rules += [BAD_UPN_CHECK_LETTER, SESSIONS_MISSED_OVER_POSSIBLE]
        return rules

    def partner_file(self, dataset: str) -> tuple[list[list[str]], list[tuple[str, str, str]]]:
        """The rows of one partner file in file order, and its truth (person_ref, valid, rule) per row."""
        r = self.r
        drawn = self.rows[dataset]
        order = self.np.permutation(len(drawn))
        rows: list[list[str]] = []
        truth: list[list[str]] = []
        columns = DATASETS[dataset].columns
        # A partner keeps one version of a person and mostly reuses it (a school's roll especially).
        held: dict[Person, tuple[str, ...]] = {}
        fresh = 0.05 if dataset == "attendance" else 0.3
        for i, k in enumerate(order, start=1):
            p, fields = drawn[k]
            copy = held.get(p)
            if copy is None or r.random() < fresh:
                copy = held[p] = self.copy_of(p)
            rows.append([f"{RECORD_PREFIX[dataset]}{i:08d}", *copy, *fields])
            truth.append([p.ref, "Y", ""])
        n_bad = round(len(rows) * self.invalid_rate)
        if not n_bad:
            return rows, [tuple(t) for t in truth]
        rules = self.rules_for(dataset)
        strangers = [i for i, t in enumerate(truth) if not t[0]]
        if strangers:
            rules.append(DUPLICATE_RECORD_ID)
        r.shuffle(rules)
        plan = [rules[j % len(rules)] for j in range(n_bad)]
        targets = r.sample(range(len(rows)), n_bad - plan.count(DUPLICATE_RECORD_ID))
        for target, rule in zip(targets, [p for p in plan if p != DUPLICATE_RECORD_ID], strict=True):
            row = dict(zip(columns, rows[target], strict=True))
            self.corrupt(dataset, row, rule)
            rows[target] = [row[c] for c in columns]
            truth[target][1:] = ["N", rule]
        # A duplicated record_id repeats the row of someone on no roster (the first copy stays valid),
        # so the true flags do not depend on whether a validator refuses the later copy or both.
        taken = set(targets)
        sources = r.sample([s for s in strangers if s not in taken],
                           min(plan.count(DUPLICATE_RECORD_ID), len(strangers) - len(taken & set(strangers))))
        copies: dict[int, list[int]] = {}
        for source in sources:
            copies.setdefault(r.randrange(source, len(rows)), []).append(source)
        final_rows: list[list[str]] = []
        final_truth: list[list[str]] = []
        for i, row in enumerate(rows):
            final_rows.append(row)
            final_truth.append(truth[i])
            for source in copies.get(i, ()):
                final_rows.append(list(rows[source]))
                final_truth.append(["", "N", DUPLICATE_RECORD_ID])
        return final_rows, [tuple(t) for t in final_truth]


def _write(path: Path, columns: tuple[str, ...], rows: list[list[str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
    return len(rows)


def generate(out: Path, families: int, seed: int, on: date, invalid_rate: float = 0.01,
             progress_truth: bool = False, health: bool = False, support: bool = False,
             partners: Mapping[str, Sequence[str]] | None = None) -> dict[str, int]:
    """Write the feeds dated ``on`` under ``out/<source>/`` and the truth under ``out/truth/``.

    ``health`` adds the optional health source (contract section 10): ``out/health/`` and the roster's
    ``nhs_number`` column. Off, the borough is byte for byte what it was before that source existed.

    ``progress_truth`` also writes ``truth/progress_consent.csv`` (the progress file's truth): it judges each
    family at its own baseline date, about 30 ms per distinct date, so it is asked for where it is compared.
    ``support`` also writes the optional support_services feed (``support_services/attendance_<date>.csv``)
    and its cross-check truth (``truth/support_consent.csv``, ``truth/support_public_task.csv``); it blanks
    the attached_date of some intervention families on the roster. Off, every file is as before.

    ``partners`` (off by default) splits a source among several partners (``{"housing": ("clarion",
    "peabody")}``): see :func:`split_partners`. The borough is the same; only who sends which row changes.

    Returns rows written per file (feed files by name, or ``<partner>/<name>`` when split; truth files as
    ``truth/<name>``).
    """
    # Hundreds of thousands of small rows would set the cyclic garbage collector off again and
    # again (a third of the run time); nothing here needs it until the end.
    collecting = gc.isenabled()
    gc.disable()
    try:
        written = _generate(Path(out), families, seed, on, invalid_rate, progress_truth, health, support)
    finally:
        if collecting:
            gc.enable()
    if partners:
        written = split_partners(Path(out), on, partners, written)
    return written


def split_partners(out: Path, on: date, partners: Mapping[str, Sequence[str]],
                   written: dict[str, int] | None = None) -> dict[str, int]:
    """Split each named source's files among its partners: ``out/<source>/<partner>/<dataset>_<date>.csv``,
    the rows of one ``record_id`` to one partner (so a repeated record_id stays a repeat within its file),
    the distinct record_ids dealt in turn in file order. The truth keeps its meaning: the same rows of the same
    people, valid or broken as before; ``truth/records.csv`` names a split record as tfp does downstream,
    ``<partner>:<record_id>``. The roster (children_services) has one partner and is never split."""
    written = dict(written or {})
    moved: dict[tuple[str, str], str] = {}  # (dataset, record_id) -> partner
    for source, ids in partners.items():
        ids = list(ids)
        if source == "children_services" or source not in {d.source for d in DATASETS.values()}:
            raise ValueError(f"cannot split {source} among partners")
        if len(set(ids)) != len(ids) or not ids:
            raise ValueError(f"partner ids of {source} must be distinct and at least one")
        for dataset in (d.name for d in DATASETS.values() if d.source == source):
            name = file_name(dataset, on)
            path = out / source / name
            with path.open(encoding="utf-8", newline="") as handle:
                header, *rows = list(csv.reader(handle))
            turn: dict[str, str] = {}
            for row in rows:
                turn.setdefault(row[0], ids[len(turn) % len(ids)])
            for partner in ids:
                part = [row for row in rows if turn[row[0]] == partner]
                written[f"{partner}/{name}"] = _write(out / source / partner / name, tuple(header), part)
            moved.update({(dataset, record_id): partner for record_id, partner in turn.items()})
            path.unlink()
            written.pop(name, None)
    records = out / "truth" / "records.csv"
    if records.exists():
        with records.open(encoding="utf-8", newline="") as handle:
            header, *rows = list(csv.reader(handle))
        for row in rows:
            partner = moved.get((row[0], row[1]))
            if partner:
                row[1] = f"{partner}:{row[1]}"
        _write(records, tuple(header), rows)
    return written


def _generate(out: Path, families: int, seed: int, on: date, invalid_rate: float,
              progress_truth: bool = False, health: bool = False, support: bool = False) -> dict[str, int]:
    b = _Borough(seed, on, invalid_rate)
    fams = b.families(families)
    strangers = b.strangers(fams, max(1, families * 3 // 10))
    for fam in fams:
        b.live(fam)
        b.consents(fam)
    for p in strangers:
        b.stranger_life(p)
    b.progress_stories(fams, seed)
    if health:
        b.health_stories(fams, strangers, seed)

    written: dict[str, int] = {}
    # every core file's rows are drawn before the support rows, so they do not depend on ``support``
    core = {dataset: b.partner_file(dataset) for dataset in CORE_DATASETS}
    if support:
        b.support_lives(fams, strangers, seed)

    def feed(dataset: str, rows, columns: tuple[str, ...] | None = None) -> None:
        d = DATASETS[dataset]
        written[file_name(dataset, on)] = _write(out / d.source / file_name(dataset, on), columns or d.columns, rows)

    # the roster's optional nhs_number column only in a borough with the health source
    roster_columns = DATASETS["families"].columns if health else tuple(
        c for c in DATASETS["families"].columns if c not in DATASETS["families"].optional)
    feed("families", [[p.ref, p.forename, p.surname, p.dob.isoformat(), p.sex, p.postcode, fam.ref, p.ref,
                       p.role, p.roster_upn, p.roster_nino, fam.uprn, fam.status, fam.attached,
                       *((p.roster_nhs,) if health else ())]
                      for fam in fams for p in fam.members], roster_columns)
    needs = sorted(b.needs, key=lambda n: (n[0].ref, n[2], n[1]))
    feed("needs", [[f"N{i:08d}", p.ref, need, start.isoformat(), end.isoformat() if end else ""]
                   for i, (p, need, start, end) in enumerate(needs, start=1)])
    consent = sorted(b.consent, key=lambda c: (c[0].ref, c[3], c[2]))
    feed("consent", [[f"C{i:08d}", p.ref, purpose, status, at.isoformat()]
                     for i, (p, purpose, status, at) in enumerate(consent, start=1)])
    truth_rows: list[list[str]] = []
    for dataset in (*CORE_DATASETS, *(HEALTH_DATASETS if health else ()), *((SUPPORT,) if support else ())):
        if dataset in HEALTH_DATASETS:
            rows, truth = b.health_file_rows(dataset)
        else:
            rows, truth = core[dataset] if dataset in core else b.partner_file(dataset)
            extra, extra_truth = b.progress_file_rows(dataset, len(b.rows[dataset]) + 1)
            rows, truth = rows + extra, [*truth, *extra_truth]
        feed(dataset, rows)
        truth_rows += [[dataset, row[0], *t] for row, t in zip(rows, truth, strict=True)]
    written["truth/records.csv"] = _write(out / "truth" / "records.csv",
                                          ("dataset", "record_id", "person_ref", "valid", "broken_rule"), truth_rows)
    written.update(write_truth(out, on, progress=progress_truth))
    return written

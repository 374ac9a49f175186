"""The codes of the data contract, in one place.

Every other module takes its code lists from here so that a new code is
added once. Enum orders are deliberate: they are the orders a pack shows.
"""

from __future__ import annotations

import polars as pl

YEAR_GROUPS = ["N1", "N2", "R", *[str(y) for y in range(1, 15)]]
# Numeric year for arithmetic (key stage, "final year group"): N1=-2, N2=-1, R=0.
YEAR_NUMBER = {"N1": -2, "N2": -1, "R": 0, **{str(y): y for y in range(1, 15)}}

SEN_PROVISION = ["N", "K", "E"]
SOCIAL_CARE = ["none", "CIN", "CPP", "CLA"]
SEN_NEED = [
    "SPLD",
    "MLD",
    "SLD",
    "PMLD",
    "SEMH",
    "SLCN",
    "HI",
    "VI",
    "MSI",
    "PD",
    "ASD",
    "OTH",
    "NSA",
]
ENROLMENT_STATUS = ["C", "M", "S"]

DESTINATIONS = [
    "EHE",
    "SCHOOL",
    "SPECIAL",
    "AP",
    "INDEPENDENT",
    "MOVED_AWAY",
    "EMIGRATED",
    "CME",
    "PERM_EXCLUSION",
    "CUSTODY",
    "DECEASED",
    "END_OF_EDUCATION",
    "DUAL_ENDED",
    "OTHER",
]

REASONS = [
    "SCHOOL_PLACE",
    "PREFERENCE_NOT_MET",
    "DISSATISFIED_SEND",
    "DISSATISFIED_BULLYING",
    "DISSATISFIED_GENERAL",
    "HEALTH_PHYSICAL",
    "HEALTH_MENTAL",
    "LIFESTYLE",
    "PHILOSOPHICAL",
    "RELIGIOUS",
    "PERM_EXCLUSION",
    "RISK_OF_EXCLUSION",
    "SCHOOL_PRESSURE",
    "OTHER",
    "NONE_GIVEN",
    "UNKNOWN",
]

PHASES = ["primary", "secondary", "all-through", "special", "ap", "nursery", "16plus"]
SCHOOL_TYPES = ["academy", "maintained", "free", "independent", "other"]

# Grounds (normalised: no spaces, lower case) that decide the destination on their own.
GROUND_DESTINATION = {
    "9(1)(f)": "EHE",
    "8(1)(d)": "EHE",
    "9(1)(h)": "CME",
    "9(1)(i)": "CME",
    "9(1)(j)": "CUSTODY",
    "9(1)(k)": "DECEASED",
    "9(1)(l)": "END_OF_EDUCATION",
    "9(1)(o)": "PERM_EXCLUSION",
}

# Key stage of each year group, for the pack's breakdown.
KEY_STAGE = {
    "N1": "EY",
    "N2": "EY",
    "R": "EY",
    "1": "KS1",
    "2": "KS1",
    "3": "KS2",
    "4": "KS2",
    "5": "KS2",
    "6": "KS2",
    "7": "KS3",
    "8": "KS3",
    "9": "KS3",
    "10": "KS4",
    "11": "KS4",
    "12": "KS5",
    "13": "KS5",
    "14": "KS5",
}
KEY_STAGES = ["EY", "KS1", "KS2", "KS3", "KS4", "KS5"]

YearGroup = pl.Enum(YEAR_GROUPS)
SenProvision = pl.Enum(SEN_PROVISION)
SocialCare = pl.Enum(SOCIAL_CARE)
Destination = pl.Enum(DESTINATIONS)
SchoolType = pl.Enum(SCHOOL_TYPES)
KeyStage = pl.Enum(KEY_STAGES)

# Plain-English names of case-mix levels, for sentences ("disadvantaged pupils left ...").
LEVEL_LABELS: dict[str, dict[str, str]] = {
    "sen_provision": {
        "N": "pupils without SEN",
        "K": "pupils on SEN support",
        "E": "pupils with an EHC plan",
    },
    "social_care": {
        "none": "pupils with no social-care plan",
        "CIN": "children in need",
        "CPP": "children on a child protection plan",
        "CLA": "looked-after children",
    },
    "disadvantaged": {"True": "disadvantaged pupils", "False": "pupils who are not disadvantaged"},
    "fsm": {
        "True": "pupils eligible for free school meals",
        "False": "pupils not eligible for free school meals",
    },
    "in_trust": {
        "True": "pupils at schools in a trust",
        "False": "pupils at schools outside a trust",
    },
    "year_group": {
        "N1": "pupils in Nursery 1",
        "N2": "pupils in Nursery 2",
        "R": "pupils in Reception",
        **{str(y): f"pupils in Year {y}" for y in range(1, 15)},
    },
    "sex": {"F": "girls", "M": "boys"},
    "enrolment_status": {
        "C": "singly registered pupils",
        "M": "dual-registered pupils (main)",
        "S": "dual-registered pupils (subsidiary)",
    },
}

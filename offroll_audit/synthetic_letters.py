"""Synthetic parents' deregistration letters with known answers.

The letters scan (`offroll_audit/letters.py`) must find school-authored
templates among genuine parents' letters, many of which legitimately copy a
public sample letter. This module writes such a mix with the answer kept
aside: each letter's kind (school template, public template, sibling, free
form), which template it came from and which family wrote it.

Planning (who writes, which kind, which format, which dates) is vectorised
with polars/numpy. Rendering is one pass over letters, not pupils: every
letter is one file. Text comes from a phrase grammar expanded by a
`random.Random` seeded per family or per letter from the numpy generator, so
a letter's wording depends only on its seed and the whole output is
byte-identical for one rng seed.

.docx files are assembled from a package skeleton that python-docx builds
once (python-docx takes ~36 ms to load and save one document; 20,000 .docx
letters would take 12 minutes); .pdf files are written by hand (Helvetica,
uncompressed content streams) so no PDF library is needed.
"""

# The phrase tables below keep one sentence per line so the wording can be read
# and reviewed; splitting them to fit 100 columns would hide it.
# ruff: noqa: E501

from __future__ import annotations

import datetime as dt
import functools
import io
import random
import re
import textwrap
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import polars as pl

from offroll_audit.codes import YEAR_NUMBER

LETTER_KINDS = ("school_template", "public_template", "sibling", "free_form")
NO_TEXT_KIND = "no_text"  # the one scanned PDF without a text layer
FORMATS = ("txt", "md", "docx", "pdf")
FORMAT_SHARES = (0.62, 0.03, 0.20, 0.15)

P_LETTER = 0.85  # families that write at all
P_SCHOOL_TEMPLATE = 0.80  # families at a template school handed the school's letter
P_PUBLIC_TEMPLATE = 0.30  # other families who copy a public sample letter
P_JOINT_SIBLING_LETTER = 0.5  # sibling families writing one letter for all children
P_SUBFOLDER = 0.25  # letters filed under a year folder
PUBLIC_TEMPLATE_WEIGHTS = (0.40, 0.30, 0.18, 0.12)
JOINT_LETTER_MAX_SPAN_DAYS = 14

# --------------------------------------------------------------------------- names

GIRL_NAMES = (
    "Amelia",
    "Olivia",
    "Isla",
    "Ava",
    "Mia",
    "Ivy",
    "Lily",
    "Isabella",
    "Rosie",
    "Sophia",
    "Grace",
    "Willow",
    "Freya",
    "Florence",
    "Emily",
    "Ella",
    "Poppy",
    "Evie",
    "Elsie",
    "Charlotte",
    "Evelyn",
    "Sienna",
    "Sofia",
    "Daisy",
    "Phoebe",
    "Sophie",
    "Alice",
    "Harper",
    "Matilda",
    "Ruby",
    "Emilia",
    "Maya",
    "Millie",
    "Isabelle",
    "Eva",
    "Luna",
    "Jessica",
    "Aria",
    "Chloe",
    "Zara",
    "Amber",
    "Erin",
    "Holly",
    "Layla",
    "Aisha",
    "Fatima",
    "Maryam",
    "Hannah",
    "Leah",
    "Jasmine",
    "Megan",
    "Niamh",
    "Orla",
    "Caitlin",
    "Ellie",
    "Lexi",
    "Ayesha",
    "Zainab",
    "Priya",
    "Anaya",
    "Harriet",
    "Imogen",
    "Lucy",
    "Molly",
    "Scarlett",
    "Thea",
    "Violet",
    "Bethany",
    "Courtney",
    "Kayla",
    "Shannon",
    "Tia",
    "Nevaeh",
    "Esme",
    "Lottie",
    "Martha",
    "Nancy",
    "Hollie",
    "Iqra",
    "Eliza",
    "Georgia",
)

BOY_NAMES = (
    "Muhammad",
    "Noah",
    "Oliver",
    "George",
    "Leo",
    "Arthur",
    "Oscar",
    "Harry",
    "Archie",
    "Jack",
    "Henry",
    "Charlie",
    "Freddie",
    "Theodore",
    "Thomas",
    "Finley",
    "Theo",
    "Alfie",
    "Jacob",
    "William",
    "Isaac",
    "Tommy",
    "Teddy",
    "Roman",
    "Lucas",
    "James",
    "Alexander",
    "Joshua",
    "Max",
    "Edward",
    "Mason",
    "Ethan",
    "Harrison",
    "Samuel",
    "Reuben",
    "Albert",
    "Hugo",
    "Louie",
    "Elijah",
    "Daniel",
    "Adam",
    "Ibrahim",
    "Yusuf",
    "Ayaan",
    "Zain",
    "Kai",
    "Rory",
    "Callum",
    "Connor",
    "Liam",
    "Dylan",
    "Kyle",
    "Jayden",
    "Tyler",
    "Brandon",
    "Ryan",
    "Owen",
    "Dominic",
    "Sebastian",
    "Felix",
    "Jude",
    "Louis",
    "Frankie",
    "Ronnie",
    "Stanley",
    "Bobby",
    "Harvey",
    "Riley",
    "Ezra",
    "Jenson",
    "Hamza",
    "Omar",
    "Ali",
    "Rohan",
    "Arjun",
    "Kian",
    "Cameron",
    "Lewis",
)

SURNAMES = (
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Harris",
    "Clarke",
    "Patel",
    "Jackson",
    "Wood",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Lee",
    "King",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
    "Mitchell",
    "Kelly",
    "Cook",
    "Carter",
    "Richardson",
    "Bailey",
    "Collins",
    "Bell",
    "Shaw",
    "Murphy",
    "Miller",
    "Cox",
    "Richards",
    "Khan",
    "Marshall",
    "Anderson",
    "Simpson",
    "Ellis",
    "Adams",
    "Singh",
    "Begum",
    "Wilkinson",
    "Foster",
    "Chapman",
    "Powell",
    "Webb",
    "Rogers",
    "Gray",
    "Mason",
    "Ali",
    "Hunt",
    "Hussain",
    "Campbell",
    "Matthews",
    "Owen",
    "Palmer",
    "Holmes",
    "Mills",
    "Barnes",
    "Knight",
    "Lloyd",
    "Butler",
    "Russell",
    "Barker",
    "Fisher",
    "Stevens",
    "Jenkins",
    "Murray",
    "Dixon",
    "Harvey",
    "Graham",
    "Pearson",
    "Ahmed",
    "Fletcher",
    "Walsh",
    "Kaur",
    "Gibson",
    "Howard",
    "Andrews",
    "Stewart",
    "Elliott",
    "Reynolds",
    "Saunders",
    "Payne",
    "Fox",
    "Ford",
    "Pearce",
    "Day",
    "Brooks",
    "West",
    "Lawrence",
    "Cole",
    "Atkinson",
    "Bradley",
    "Spencer",
    "Gill",
    "Dawson",
    "Ball",
    "Burton",
    "Okafor",
    "Mensah",
    "Nowak",
    "Kowalski",
    "Rahman",
    "Chowdhury",
    "Malik",
    "Osei",
    "Popescu",
)

MOTHER_NAMES = (
    "Sarah",
    "Emma",
    "Laura",
    "Rebecca",
    "Claire",
    "Gemma",
    "Rachel",
    "Nicola",
    "Kelly",
    "Hayley",
    "Jennifer",
    "Lisa",
    "Victoria",
    "Amy",
    "Natalie",
    "Joanne",
    "Michelle",
    "Samantha",
    "Helen",
    "Kirsty",
    "Stacey",
    "Leanne",
    "Zoe",
    "Louise",
    "Danielle",
    "Charlotte",
    "Katie",
    "Lucy",
    "Jade",
    "Shazia",
    "Nadia",
    "Farah",
    "Agnieszka",
    "Joanna",
    "Grace",
    "Abena",
    "Chioma",
    "Aneta",
    "Siobhan",
    "Catherine",
    "Jo",
    "Kerry",
    "Donna",
    "Tracey",
    "Alison",
    "Fiona",
    "Ruth",
    "Beth",
    "Kate",
    "Jess",
)

FATHER_NAMES = (
    "David",
    "James",
    "Mark",
    "Paul",
    "Andrew",
    "Richard",
    "Daniel",
    "Christopher",
    "Michael",
    "Matthew",
    "Stephen",
    "Lee",
    "Craig",
    "Gareth",
    "Wayne",
    "Darren",
    "Neil",
    "Simon",
    "Jason",
    "Ben",
    "Adam",
    "Tom",
    "Imran",
    "Tariq",
    "Asif",
    "Piotr",
    "Tomasz",
    "Kwame",
    "Emeka",
    "Sean",
    "Liam",
    "Gary",
    "Martin",
    "Peter",
    "Rob",
    "Nick",
    "Dean",
    "Carl",
    "Scott",
    "Ian",
)

STAFF_SURNAMES = (
    "Hollis",
    "Ashworth",
    "Pennington",
    "Kaur",
    "Okonjo",
    "Bradshaw",
    "Fairweather",
    "Lindqvist",
    "Marsh",
    "Dunmore",
    "Castell",
    "Whitlock",
    "Prentice",
    "Akhtar",
    "Varley",
    "Sedgwick",
    "Oduya",
    "Trevelyan",
    "Holloway",
    "Radcliffe",
    "Beaumont",
    "Kingsley",
    "Ormerod",
    "Tranter",
    "Sheldrake",
    "Naylor",
    "Brennan",
    "Ferreira",
    "Lockwood",
    "Whitfield",
)

STAFF_ROLES = (
    "Head of Year",
    "Deputy Headteacher",
    "Assistant Headteacher",
    "Pastoral Lead",
    "Attendance Officer",
    "Head of Key Stage 4",
    "Inclusion Manager",
    "Designated Safeguarding Lead",
    "SENCo",
    "Student Support Manager",
)

STREETS = """Church Lane|Station Road|Victoria Road|Park Avenue|Mill Lane|The Crescent|Manor Road|
Kings Road|Queensway|Chapel Street|Elm Grove|Meadow Way|Orchard Close|Highfield Road|New Street|
Albert Road|School Lane|Beech Drive|Springfield Road|Windsor Avenue|Grange Road|Hawthorn Close|
Westfield Drive|Brook Street|Green Lane|Oak Tree Way|Birch Avenue|North Road|Ashford Road|
Longmeadow""".replace("\n", "").split("|")

TOWNS = """Ashbridge|Kettlewell|Marlow Vale|Southmoor|Hatherley|Brindlecombe|Eastwick|Redford|
Thornbury Heath|Oakhampton|Lowfield|Castleton|Farnleigh|Westerby|Millbrook|Stanwick|Northolme|
Harrowgate Green|Dunsford|Bramley Cross""".replace("\n", "").split("|")

HOBBIES = """drawing|coding|football|horse riding|baking|chess|gymnastics|swimming|music production|
animation|gaming design|photography|wildlife|gardening|the guitar|the piano|rock climbing|
dance|drama|writing stories|astronomy|dinosaurs|Lego engineering|cooking|fishing|sewing|
skateboarding|history|languages|mountain biking|karate|sign language|woodwork|birdwatching|
volunteering at the animal rescue|the drums|comics|robotics|singing|knitting""".replace(
    "\n", ""
).split("|")

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# --------------------------------------------------------------------------- phrase grammar
# `{name}` is either a context value (child, he, his, I, my, school, exit, ...) or
# one of these symbols, replaced by one of its alternatives at random. The size of
# the grammar is what keeps two families' free-form letters dissimilar: word
# 3-gram Jaccard well under 0.1 between different families.

FREE_FORM: dict[str, tuple[str, ...]] = {
    "salutation": (
        "Dear {head},",
        "Dear Sir/Madam,",
        "Dear Headteacher,",
        "To whom it may concern,",
        "Dear {head} and team,",
        "Hi {head},",
        "Dear Attendance Officer,",
        "Dear Head of Year,",
        "FAO the Headteacher",
        "Dear Sir or Madam,",
        "Hello,",
        "Dear {head}",
        "Good morning,",
        "Dear Admissions,",
        "Dear {school},",
        "Dear all,",
    ),
    "details": (
        "{child_full}, {dob_label} {dob}, {is} currently in {year}.",
        "For your records, {his} {dob_label} {is} {dob}.",
        "{child} {is} in {year}.",
        "{he} {is} in {year} {now}.",
        "{child}'s {dob_label} {is} {dob}, in case you need it.",
        "({child}, {year}, DOB {dob})",
        "{child} {is} {now} in {year} ({dob}).",
    ),
    "intro": (
        "{I} {am} writing {to_inform} that {I} have {decided} to {withdraw} {child_ref} from {school} {from_when} in order to {home_educate_obj}.",
        "This {letter_word} is {formal_notice} that {child_ref} will no longer be {attending} {school} {from_when}.",
        "After {a_long_time} of {thinking}, {I} have {decided} to take {child} out of school and {home_educate_obj} {from_when}.",
        "Please accept this {letter_word} as {written_notice} that {I} {am} {withdrawing} {child_ref} from {school} to {home_educate_obj}.",
        "{I} would like {to_inform} that {child} {is} leaving {school} {from_when}, as {I} have chosen {home_ed_noun} for {him}.",
        "It is with {mixed_feelings} that {I} {am} writing to {deregister} {child_ref} from {school}.",
        "{I} {am} writing {to_confirm} that {child} will be {home_educated} {from_when}.",
        "As of {exit}, {child_ref} will be {home_educated} and will not be {coming_back} to {school}.",
        "{following_on}, {I} {am} {now} formally {withdrawing} {child_ref} from the school.",
        "You may not be surprised to hear that {I} have {decided} {child} will {learn_at_home} from now on.",
        "{I} have {thought_hard}, and {I} {am} {withdrawing} {child_ref} from school {from_when} so that {I} can {home_educate_obj}.",
        "Just a {short_note} {to_confirm} that {I} will be {home_educating} {child} {from_when}.",
        "{I} {am} writing to ask that {child_full} be taken off the {roll_word}, because {I} will be {home_educating} {him} {from_when}.",
        "{my} family has {reached_a_decision}: {child} will be {home_educated} {from_when}.",
        "Please take this as {written_notice} that {child_full} ({year}) {is} being withdrawn from {school} for {home_ed_noun}.",
        "{I} need to let the school know that {child} won't be {coming_back}, because {I} {am} going to {home_educate_obj}.",
        "Following {recent_events}, {I} have made the {big_decision} to {deregister} {child_ref}.",
        "I'm afraid {child} will not be {coming_back} to {school}; {I} {am} {taking_on} {his} education {myself} {from_when}.",
        "{I} {am} sorry to say that {child} {is} leaving {school}: {I} have {decided} on {home_ed_noun}.",
        "{child}'s last day at {school} {was} {last_day}, and from now on {I} will {home_educate_obj}.",
        "This is to {formally} {tell_you} that {I} {am} {taking_on} {child}'s education at home {from_when}.",
        "{I} {am} {sad_to} be writing this, but {child_ref} will not be {coming_back} to school.",
        "Please could you remove {child_full} from the {roll_word} {from_when}? {I} {am} going to {home_educate_obj}.",
        "{I} have been {thinking} about {home_ed_noun} for a while and {I} {am} {now} ready to {withdraw} {child_ref}.",
    ),
    "to_inform": (
        "to let you know",
        "to inform you",
        "to tell you",
        "to advise you",
        "to notify you",
        "to make you aware",
        "to give you notice",
        "to explain",
    ),
    "tell_you": ("tell you", "let you know", "notify the school", "inform you", "confirm"),
    "to_confirm": (
        "to confirm",
        "to put in writing",
        "to formally confirm",
        "to let you know officially",
        "to make it official",
    ),
    "formally": ("formally", "officially", "properly", ""),
    "decided": (
        "decided",
        "made the decision",
        "come to the decision",
        "chosen",
        "reluctantly decided",
        "finally decided",
        "agreed",
    ),
    "withdraw": ("withdraw", "remove", "take", "deregister"),
    "withdrawing": ("withdrawing", "removing", "deregistering", "taking out"),
    "deregister": ("deregister", "withdraw", "formally remove", "take off roll"),
    "attending": ("attending", "a pupil at", "on roll at", "going to", "coming to"),
    "coming_back": ("coming back", "returning", "back", "going back"),
    "roll_word": ("school roll", "roll", "register", "admission register", "school's register"),
    "short_note": ("short note", "quick note", "brief letter", "quick email", "line"),
    "last_day": ("{exit}", "last Friday", "yesterday", "before half term", "on {exit}"),
    "sad_to": ("sad to", "sorry to", "disappointed to", "relieved to"),
    "child_ref": (
        "{my} {son} {child}",
        "{child}",
        "{my} {son} {child_full}",
        "{child_full}",
        "{child} ({year})",
        "{my} {son}, {child_full},",
    ),
    "from_when": (
        "from {exit}",
        "with effect from {exit}",
        "as of {exit}",
        "from today",
        "with immediate effect",
        "starting {exit}",
        "from {exit} onwards",
        "effective {exit}",
        "from the date of this letter",
        "as from {exit}",
        "starting from {exit}",
        "",
        "",
        "immediately",
        "from Monday",
    ),
    "home_educate_obj": (
        "home educate {him}",
        "educate {him} at home",
        "teach {him} at home",
        "home school {him}",
        "take on {his} education {myself}",
        "educate {him} otherwise than at school",
        "provide {his} education at home",
        "look after {his} learning at home",
        "teach {him} {myself}",
    ),
    "home_educated": (
        "home educated",
        "home-schooled",
        "educated at home",
        "learning at home",
        "electively home educated",
        "taught at home",
    ),
    "home_educating": ("home educating", "home-schooling", "educating", "teaching"),
    "home_ed_noun": (
        "home education",
        "elective home education",
        "home schooling",
        "home-schooling",
        "EHE",
        "education at home",
        "learning at home",
    ),
    "learn_at_home": (
        "learn at home",
        "be educated at home",
        "be home-schooled",
        "do {his} learning at home",
    ),
    "formal_notice": (
        "formal notice",
        "to let you know",
        "my formal notification",
        "official notice",
        "written confirmation",
    ),
    "written_notice": (
        "written notice",
        "notification in writing",
        "formal notification",
        "my written notice",
        "notice",
    ),
    "letter_word": ("letter", "email", "note", "notification"),
    "a_long_time": ("a long time", "many months", "a great deal", "weeks", "a lot", "months"),
    "thinking": (
        "thinking",
        "soul searching",
        "discussion at home",
        "careful thought",
        "worrying",
        "research",
        "reading",
    ),
    "mixed_feelings": (
        "mixed feelings",
        "a heavy heart",
        "some sadness",
        "real regret",
        "great reluctance",
        "relief, in a way,",
    ),
    "following_on": (
        "Following on from our phone call",
        "Further to my email last week",
        "As mentioned at parents' evening",
        "Further to our conversation",
        "As I said on the phone",
        "Following my call to the office",
        "As I mentioned to {his} tutor",
    ),
    "thought_hard": (
        "thought long and hard",
        "gone back and forth",
        "talked it through at length",
        "spent weeks weighing it up",
        "considered every option",
        "looked at every alternative",
    ),
    "reached_a_decision": (
        "reached a decision",
        "talked it over",
        "made up its mind",
        "come to a conclusion",
    ),
    "recent_events": (
        "recent events",
        "everything that has happened this term",
        "the last few months",
        "what happened last week",
        "a very difficult year",
        "a lot of discussion",
    ),
    "big_decision": ("big decision", "difficult decision", "decision", "hard choice", "choice"),
    "taking_on": ("taking on", "taking over", "going to be responsible for", "taking charge of"),
    "now": ("now", "at the moment", "currently", "at present", ""),
    "really": ("", "", "really", "genuinely", "honestly", "truly"),
    "sadly": (
        "",
        "Sadly,",
        "Unfortunately,",
        "To be honest,",
        "In all honesty,",
        "Put simply,",
        "Honestly,",
    ),
    # ---------------------------------------------------------------- reasons
    "reason_mental": (
        "{sadly} {child} {has} been {struggling} with {anxiety} for {some_time}, and school has become {too_much} for {him}.",
        "{his} mental health has {declined} {over_period}, and {I} {am} {really} {worried} about {him}.",
        "Most mornings {he} {is} {physically_unwell} at the thought of going in, and {I} cannot keep {forcing} {him}.",
        "Since {time_point}, {he} {has} been {withdrawn_word}, {sleeping} and {refusing} to talk about school.",
        "{I} {really} believe a {calmer} setting at home will give {him} the chance to {recover}.",
        "The pressure of {pressure_source} has taken {a_heavy_toll} on {his} {wellbeing}.",
        "{he} {has} had panic attacks {where_when}, and {I} do not feel school is a safe place for {him} {right_now}.",
        "{his} {doctor} agrees that {a_break} from the school environment would help.",
        "{child} {has} been on the {waiting_word} for CAMHS for {some_time} and nothing has changed in the meantime.",
        "Watching {him} {dread_verb} every Sunday night has been {heartbreaking}.",
        "{his} attendance has dropped {attendance_drop} because of {anxiety}, and the {attendance_letters} have only made things worse.",
        "{I} have seen {my} {happy_word} child turn into someone {I} hardly recognise.",
        "{he} {has} started {self_harm_word}, and {I} {am} not prepared to wait for things to get worse.",
    ),
    "struggling": ("struggling", "battling", "coping", "living", "suffering"),
    "anxiety": (
        "anxiety",
        "low mood",
        "severe anxiety",
        "anxiety and depression",
        "low self-esteem",
        "school-related anxiety",
        "emotional based school avoidance",
        "panic attacks",
    ),
    "some_time": (
        "some time",
        "over a year",
        "months",
        "most of this year",
        "the last two terms",
        "a long while",
        "ages",
        "eighteen months",
    ),
    "too_much": (
        "too much",
        "overwhelming",
        "unbearable",
        "a constant battle",
        "impossible",
        "a nightmare",
    ),
    "declined": (
        "declined",
        "got steadily worse",
        "deteriorated",
        "suffered badly",
        "gone downhill",
        "taken a real knock",
    ),
    "over_period": (
        "over the last year",
        "since September",
        "this term",
        "since the move to secondary",
        "over the past few months",
        "since Christmas",
        "since Easter",
    ),
    "worried": ("worried", "concerned", "frightened", "anxious", "scared for"),
    "physically_unwell": (
        "physically sick",
        "in tears",
        "shaking",
        "unable to get out of bed",
        "complaining of stomach aches",
        "having headaches",
    ),
    "forcing": ("forcing", "dragging", "pushing", "making", "persuading"),
    "withdrawn_word": (
        "withdrawn",
        "quiet and tearful",
        "angry and upset",
        "very low",
        "shut off from us",
    ),
    "sleeping": (
        "sleeping badly",
        "barely eating",
        "not sleeping",
        "waking at night",
        "staying in {his} room",
    ),
    "refusing": ("refusing", "not wanting", "unable", "too upset"),
    "time_point": (
        "the start of Year {yearnum}",
        "the autumn",
        "last summer",
        "the incident in the spring",
        "February half term",
        "the start of term",
        "the move up to Year {yearnum}",
    ),
    "calmer": ("calmer", "quieter", "gentler", "more flexible", "safer", "less pressured"),
    "recover": (
        "recover",
        "rebuild {his} confidence",
        "feel like {himself} again",
        "heal",
        "get back on an even keel",
        "find {his} feet again",
        "rediscover a love of learning",
    ),
    "pressure_source": (
        "exams",
        "constant testing",
        "the behaviour system",
        "detentions",
        "the sheer size of the school",
        "the noise and crowds",
        "homework",
        "mocks",
    ),
    "a_heavy_toll": ("a heavy toll", "its toll", "a real toll", "a serious toll", "a huge toll"),
    "wellbeing": ("wellbeing", "mental health", "confidence", "happiness", "sleep and mood"),
    "where_when": (
        "in lessons",
        "on the way to school",
        "at the school gate",
        "in assemblies",
        "during break times",
        "in the canteen",
    ),
    "right_now": (
        "right now",
        "at the moment",
        "for the foreseeable future",
        "any more",
        "at present",
    ),
    "doctor": ("GP", "doctor", "therapist", "counsellor", "paediatrician", "psychologist"),
    "a_break": ("a break", "time away", "some distance", "a complete change", "a rest"),
    "waiting_word": ("waiting list", "list", "waiting list", "referral list"),
    "dread_verb": (
        "dread Monday",
        "cry about the week ahead",
        "go quiet",
        "lose sleep",
        "make {himself} ill",
        "beg not to go",
    ),
    "heartbreaking": ("heartbreaking", "awful", "so hard", "exhausting for all of us", "upsetting"),
    "attendance_drop": ("sharply", "below 80%", "to almost nothing", "this year", "week by week"),
    "attendance_letters": (
        "attendance letters",
        "fines threats",
        "phone calls about absence",
        "attendance meetings",
        "warning letters",
    ),
    "happy_word": ("happy", "bubbly", "confident", "easy-going", "cheerful", "sociable"),
    "self_harm_word": (
        "to self harm",
        "saying worrying things",
        "hiding in {his} room",
        "refusing food",
        "having meltdowns",
    ),
    "reason_bullying": (
        "{child} {has} been {bullied} {bully_where} {over_period}, and {I} do not feel it has been {dealt_with}.",
        "Despite {several} {contacts} with staff, the {bully_behaviour} has {carried_on}.",
        "{he} {has} lost {his} confidence and {no_longer} wants to go anywhere near the school.",
        "{I} {am} {disappointed} that {his} complaints were not taken more seriously.",
        "A group of {older} pupils {bully_verb} {him} {bully_where}, and {he} {does} not feel safe.",
        "What happened {bully_event} was the final straw for {me}.",
        "{I} have kept a record of every incident and {I} {am} happy to share it if {it_helps}.",
        "The messages {he} {has} been receiving online have followed {him} into school {daily}.",
        "{he} {has} been {hurt} on more than one occasion and {I} {am} not willing to send {him} back.",
        "It feels as though {his} {bullies} face no consequences while {child} {is} missing out on {his} education.",
        "{child} {has} started {coping_sign} to avoid the people who are {bully_verb_ing} {him}.",
    ),
    "bullied": ("bullied", "picked on", "targeted", "harassed", "singled out", "mocked"),
    "bully_where": (
        "in the corridors",
        "on the bus",
        "online and at school",
        "at lunchtimes",
        "in PE",
        "in {his} form group",
        "on the way home",
    ),
    "dealt_with": (
        "dealt with",
        "handled properly",
        "taken seriously",
        "resolved",
        "addressed",
        "stopped",
    ),
    "several": ("several", "a number of", "many", "repeated", "four or five", "countless"),
    "contacts": ("meetings", "emails", "phone calls", "conversations", "meetings and emails"),
    "carried_on": ("carried on", "continued", "got worse", "not stopped", "escalated"),
    "no_longer": (
        "no longer",
        "simply does not",
        "refuses to say {he}",
        "flatly refuses to say {he}",
    ),
    "disappointed": ("disappointed", "upset", "frustrated", "angry", "let down"),
    "bully_behaviour": (
        "bullying",
        "name calling",
        "unkindness",
        "physical stuff",
        "exclusion from friendship groups",
        "intimidation",
    ),
    "older": ("older", "Year 11", "bigger", "other", "older"),
    "bully_verb": (
        "have been making life hard for",
        "keep following",
        "have threatened",
        "have been tormenting",
        "keep picking on",
    ),
    "bully_verb_ing": ("picking on", "hurting", "upsetting", "threatening"),
    "bully_event": (
        "last week",
        "before half term",
        "on the school trip",
        "in the changing rooms",
        "at the bus stop",
        "on Tuesday",
    ),
    "it_helps": ("it helps", "that is useful", "anyone wants to see it", "needed"),
    "daily": ("every day", "daily", "constantly", "all the time"),
    "hurt": ("hurt", "pushed", "hit", "kicked", "threatened"),
    "bullies": ("bullies", "tormentors", "the pupils involved", "the ringleaders"),
    "coping_sign": (
        "hiding in the toilets",
        "skipping lunch",
        "leaving early",
        "staying in the library",
    ),
    "reason_philosophy": (
        "{I} have always felt that {child} learn{s} best {learning_style}.",
        "{I} {am} not convinced that {school_critique}.",
        "{I} want {him} to follow {his} own interests, at {his} own pace.",
        "{my} approach will be {approach}, built around {his} {love_of} {hobby} and {hobby2}.",
        "{I} have read {a_lot} about {ed_approach}, and {I} think it will suit {him} far better than a classroom of thirty.",
        "School has never {really} fitted the way {child} think{s}.",
        "{I} would rather {he} spent {his} days {doing_real_things} than sitting still for hours.",
        "Childhood is short, and {I} want {him} to {enjoy_learning}.",
        "{I} believe {children_generic} learn more from {real_life} than from worksheets.",
        "{I} have seen other families {thrive} with home education and {I} want the same for {child}.",
        "The one-size-fits-all approach {is_not_for} {my} family.",
    ),
    "learning_style": (
        "through doing",
        "outdoors",
        "one to one",
        "when {he} {is} curious",
        "by following {his} passions",
        "hands on",
        "in short bursts",
    ),
    "school_critique": (
        "the current system suits every child",
        "constant testing helps anyone learn",
        "a six-hour day in a classroom is right for {him}",
        "league tables should shape {his} childhood",
        "a national curriculum suits every child",
    ),
    "approach": (
        "fairly relaxed",
        "child-led",
        "semi-structured",
        "project based",
        "a mix of formal lessons and outings",
        "Charlotte Mason inspired",
        "eclectic",
    ),
    "love_of": ("love of", "interest in", "passion for", "fascination with"),
    "a_lot": ("a great deal", "a lot", "widely", "plenty"),
    "ed_approach": (
        "autonomous education",
        "Montessori ideas",
        "project-based learning",
        "unschooling",
        "the Steiner approach",
        "worldschooling",
    ),
    "doing_real_things": (
        "outdoors",
        "making things",
        "reading widely",
        "out in the world",
        "doing real things",
        "in the workshop with {his} grandad",
        "exploring",
    ),
    "enjoy_learning": (
        "enjoy learning again",
        "love learning",
        "be a child for longer",
        "learn without fear",
        "be curious again",
    ),
    "children_generic": ("children", "young people", "kids", "most children"),
    "real_life": ("real life", "experience", "the world around them", "conversation", "play"),
    "thrive": ("thrive", "flourish", "do really well", "blossom"),
    "is_not_for": ("is not for", "does not suit", "has never worked for", "is wrong for"),
    "reason_send": (
        "{child} {has} {send_need}, and {I} do not feel {his} needs are being met in a {mainstream} classroom.",
        "{I} have been waiting for {ehcp_process} for {some_time}, and {his} support in school has been {inadequate}.",
        "{he} {has} spent {a_lot_of_time} {outside_class}, which is not a real education.",
        "The reduced timetable {he} {has} been on means {he} {is} barely in school {anyway}.",
        "{I} know {his} teachers have tried, but {resource_problem}.",
        "The support set out in {his} {plan_word} {simply} has not happened.",
        "Sensory overload in a busy school means {he} {is} exhausted by {lunchtime}.",
        "{child} masks all day and then falls apart {at_home_time}.",
        "{I} have been asked to collect {him} early {so_often} that {I} have lost count.",
        "{his} {diagnosis_word} came through {over_period}, but nothing {really} changed in class.",
    ),
    "send_need": (
        "autism",
        "ADHD",
        "dyslexia",
        "a diagnosis of autism and ADHD",
        "sensory processing difficulties",
        "a speech and language disorder",
        "dyspraxia",
        "PDA",
    ),
    "mainstream": ("mainstream", "busy", "large", "noisy"),
    "ehcp_process": (
        "an EHCP assessment",
        "the EHC needs assessment",
        "a specialist placement",
        "an educational psychologist",
        "the annual review",
    ),
    "inadequate": ("inadequate", "patchy", "almost non-existent", "not enough", "inconsistent"),
    "a_lot_of_time": ("most days", "a lot of time", "weeks", "far too long", "hours every week"),
    "outside_class": (
        "in the isolation room",
        "in the corridor",
        "in the inclusion unit",
        "out of lessons",
        "in the library on {his} own",
    ),
    "anyway": ("anyway", "as it is", "at all", "these days"),
    "resource_problem": (
        "there just isn't the staffing",
        "the SENCo is stretched too thin",
        "the support isn't there",
        "a class of thirty does not work for {him}",
    ),
    "plan_word": ("plan", "EHCP", "SEN support plan", "one-page profile", "passport"),
    "simply": ("simply", "just", "still", ""),
    "lunchtime": ("lunchtime", "mid-morning", "the end of the day", "break"),
    "at_home_time": ("at home", "the moment {he} get{s} home", "every evening", "after school"),
    "so_often": ("so often", "so many times", "repeatedly", "week after week"),
    "diagnosis_word": ("diagnosis", "assessment", "report", "referral"),
    "reason_health": (
        "{child} {has} {health_condition}, which has meant {a_great_deal_of} time off.",
        "{his} consultant has advised a {gentle_routine}, and home education lets {him} manage {his} health.",
        "{I} {am} {worried} about {his} attendance record, which is {entirely} down to {his} illness.",
        "Fatigue means {he} {is} often only able to manage {few_hours} of learning a day.",
        "{he} {has} {hospital_word} {most_weeks} and keeps falling behind.",
        "At home {he} can rest when {he} need{s} to and learn when {he} {is} well.",
        "{his} immune system is weak, and {I} cannot risk {him} catching every bug going round.",
        "{I} have {medical_evidence} which {I} can share if needed.",
        "{his} {condition_flares} have become {more_frequent}, and a school day {is_too_long} for {him}.",
        "{child} {has} {recently} had {surgery_word} and will need a long recovery.",
        "Being able to {take_breaks} means {he} can learn {on_good_days}.",
    ),
    "condition_flares": ("flare-ups", "seizures", "bad days", "episodes"),
    "more_frequent": ("more frequent", "harder to predict", "more severe", "worse this year"),
    "is_too_long": ("is too long", "is simply too much", "wipes {him} out", "is exhausting"),
    "recently": ("recently", "just", "this term", ""),
    "surgery_word": ("an operation", "surgery", "a long hospital stay", "a new treatment"),
    "take_breaks": ("take breaks", "lie down", "rest", "work in short sessions"),
    "on_good_days": (
        "on good days",
        "when {he} feel{s} able",
        "at {his} own pace",
        "around treatment",
    ),
    "health_condition": (
        "ME/CFS",
        "a long-term heart condition",
        "epilepsy",
        "severe asthma",
        "Crohn's disease",
        "migraines",
        "long Covid",
        "type 1 diabetes",
        "juvenile arthritis",
    ),
    "a_great_deal_of": ("a great deal of", "a lot of", "weeks of", "far too much"),
    "gentle_routine": ("gentler routine", "flexible timetable", "shorter day", "slower pace"),
    "entirely": ("entirely", "mostly", "largely", "completely"),
    "few_hours": ("a few hours", "an hour or two", "short sessions", "a morning"),
    "hospital_word": ("hospital appointments", "therapy sessions", "clinic visits", "treatment"),
    "most_weeks": ("most weeks", "every fortnight", "several times a month", "regularly"),
    "medical_evidence": (
        "letters from {his} consultant",
        "medical evidence",
        "a letter from the GP",
        "the hospital reports",
    ),
    "reason_lifestyle": (
        "{my} work means {I} travel {frequently}, and {I} would like {child} to come with {me}.",
        "{I} {am} planning to spend {time_span} travelling, and home education makes that possible.",
        "{I} run a {family_business}, and {child} {is} keen to learn the trade.",
        "{I} have moved further away and the journey to school is no longer {practical}.",
        "Being at home will let {child} train for {sport} properly.",
        "{my} shift patterns make the school day {very_difficult} to manage.",
        "{I} live on a {boat_word}, and {I} move around {frequently}.",
        "{child} {is} {performing_word}, and the schedule does not fit around school.",
        "{I} {am} {relocating} {relocate_when}, and home education gives {child} {continuity}.",
        "{my} {family_member} is {ill_word}, and {I} want {child} at home with {me} {right_now}.",
        "A slower, {outdoor_word} life suits {my} family, and school {does_not_fit}.",
    ),
    "relocating": ("relocating abroad", "moving house", "moving out of the area", "emigrating"),
    "relocate_when": ("later this year", "in the spring", "soon", "next summer"),
    "continuity": ("continuity", "stability", "some consistency", "a settled routine"),
    "family_member": ("mother", "father", "partner", "grandmother", "youngest"),
    "ill_word": (
        "seriously ill",
        "terminally ill",
        "recovering from surgery",
        "in and out of hospital",
    ),
    "outdoor_word": ("outdoor", "simpler", "rural", "more flexible"),
    "does_not_fit": ("does not fit", "gets in the way", "no longer fits", "feels like a cage"),
    "frequently": ("frequently", "a lot", "for months at a time", "abroad", "around the country"),
    "time_span": ("the next year", "six months", "the spring and summer", "a year or two"),
    "family_business": (
        "family business",
        "small farm",
        "market stall",
        "bakery",
        "riding stables",
        "garage",
    ),
    "practical": ("practical", "realistic", "possible", "sensible"),
    "sport": (
        "{his} tennis",
        "gymnastics",
        "swimming",
        "football",
        "{his} dancing",
        "the county squad",
    ),
    "very_difficult": ("very difficult", "almost impossible", "a struggle", "hard"),
    "boat_word": ("narrowboat", "canal boat", "smallholding", "travelling show"),
    "performing_word": (
        "performing in a touring show",
        "filming",
        "competing nationally",
        "training with an academy",
    ),
    "reason_religious": (
        "{my} faith is {central} to {my} family life, and {I} would like {child}'s education to reflect that.",
        "{I} wish to bring {him} up within {my} faith community and teach {him} at home alongside {faith_activity}.",
        "{I} have not always been comfortable with {curriculum_aspect}, and this way {I} can shape what {he} learn{s}.",
        "{I} believe it is {my} duty {before_god} to guide {his} moral and spiritual education.",
        "{child} will continue {faith_activity} with {my} community.",
        "{I} want {his} days to include {prayer_word} and study of {holy_book}.",
        "Our {faith_word} {shapes} how {I} want {child} to grow up, and school {pulls_against} that.",
        "{child} {is} {memorising} {holy_book} and needs {more_time} for it than school allows.",
        "{I} {am} {not_happy} with the {school_events} {child} {has} been expected to take part in.",
        "Home education will let {my} family {keep_observance} without {conflict_word}.",
    ),
    "faith_word": ("faith", "religion", "church", "belief", "way of life"),
    "shapes": ("shapes", "guides", "governs", "is at the centre of"),
    "pulls_against": ("pulls against", "does not support", "works against", "often clashes with"),
    "memorising": ("memorising", "studying", "learning to recite", "working through"),
    "more_time": ("more time", "hours every day", "a structured routine", "quiet time"),
    "not_happy": ("not happy", "uncomfortable", "unhappy", "concerned"),
    "school_events": ("assemblies", "celebrations", "lessons", "events"),
    "keep_observance": (
        "keep the Sabbath",
        "observe our festivals",
        "pray together",
        "keep our traditions",
    ),
    "conflict_word": (
        "constant conflict",
        "clashes with the timetable",
        "asking permission",
        "missing lessons",
    ),
    "central": ("central", "very important", "at the heart of", "everything"),
    "faith_activity": (
        "Quran classes",
        "church activities",
        "religious studies",
        "Hebrew lessons",
        "scripture study",
        "Sunday school teaching",
    ),
    "curriculum_aspect": (
        "parts of the curriculum",
        "some of the content taught",
        "the values being promoted",
        "aspects of the RSE programme",
    ),
    "before_god": ("before God", "as a parent", "as a family of faith", ""),
    "prayer_word": ("time for prayer", "daily prayer", "worship", "reflection"),
    "holy_book": ("scripture", "the Bible", "the Quran", "the Torah", "our holy texts"),
    # ---------------------------------------------------------------- plans
    "plan": (
        "{I} have {already} arranged {tutor_arrangement}.",
        "{child} will be joining a {group_kind} that meets {frequency_week}.",
        "{I} plan to use {resource} alongside {resource2}.",
        "{he} will be working towards {exams}.",
        "{I} will keep {records} so that {I} can show {his} progress.",
        "Our days will include {activity}, {activity2} and {plenty_of} reading.",
        "{I} {am} happy to talk to the {la_team} when they get in touch.",
        "{I} will be structuring {his} learning around {core}, with {hobby} as {his} project.",
        "{his} {relative} is a retired {profession} and will help with {subject}.",
        "We have a {membership} at {venue} and plan to make good use of it.",
        "{I} have bought {resource} and put together a {weekly} timetable.",
        "{he} {is} already enrolled on {online_course}.",
        "There is a {thriving} home education network in {town}, which {child} {has} visited {visits} already.",
        "{I} will make sure {he} see{s} friends regularly through {club}.",
        "{I} intend to {revisit} the situation {revisit_when}.",
        "Mornings will be for {core} and afternoons for {activity}.",
        "{I} {am} {now} working {part_time} so that {I} can be at home with {him}.",
        "{child} {is} keen to {start_project} and {I} will support {him} with that.",
        "{I} have spoken to {other_parents} who home educate and {they_helped}.",
        "{he} will {still} see {his} {friends_word} at {club} and at weekends.",
        "{I} {am} looking into {college_option} for when {he} {is} older.",
    ),
    "already": ("already", "", "now", "just"),
    "tutor_arrangement": (
        "a maths tutor twice a week",
        "an English tutor",
        "online tutoring",
        "lessons with a qualified teacher",
        "a tutor for science",
        "weekly tutoring",
    ),
    "group_kind": (
        "home education group",
        "forest school",
        "co-op",
        "learning hub",
        "home ed science club",
        "drama group",
        "flexi-learning centre",
    ),
    "frequency_week": (
        "weekly",
        "twice a week",
        "every Wednesday",
        "on Fridays",
        "most weeks",
        "every Monday",
    ),
    "resource": (
        "online courses",
        "workbooks",
        "Oak National Academy lessons",
        "BBC Bitesize",
        "library books",
        "a curriculum we bought",
        "Khan Academy",
    ),
    "resource2": (
        "trips out",
        "a tutor",
        "practical projects",
        "museum visits",
        "educational apps",
        "audiobooks",
        "documentaries",
    ),
    "exams": (
        "GCSEs as a private candidate",
        "iGCSEs through an exam centre",
        "functional skills",
        "a college course at 14",
        "English and maths GCSE in a couple of years",
    ),
    "records": (
        "a portfolio",
        "a diary of what we do",
        "samples of {his} work",
        "a learning journal",
        "a blog",
        "photos and notes",
    ),
    "activity": (
        "nature walks",
        "baking",
        "music practice",
        "museum trips",
        "swimming",
        "art projects",
        "volunteering",
        "visits to the library",
        "coding projects",
    ),
    "activity2": (
        "science experiments",
        "gardening",
        "French on Duolingo",
        "history projects",
        "woodwork",
        "drama",
        "sport",
    ),
    "plenty_of": ("plenty of", "lots of", "daily", "shared"),
    "la_team": (
        "local authority's home education team",
        "council",
        "EHE officer",
        "local authority",
        "home education adviser",
    ),
    "core": (
        "English, maths and science",
        "maths and English",
        "the core subjects",
        "reading, writing and maths",
    ),
    "relative": ("grandmother", "grandad", "aunt", "uncle", "nan", "godmother"),
    "profession": ("teacher", "engineer", "nurse", "accountant", "lecturer", "scientist"),
    "sector": ("education", "childcare", "a primary school", "nursing", "youth work", "training"),
    "subject": ("maths", "science", "reading", "history", "languages", "music"),
    "membership": ("family membership", "annual pass", "season ticket", "membership"),
    "venue": (
        "the science museum",
        "the local museums",
        "English Heritage",
        "the National Trust",
        "the zoo",
        "the leisure centre",
    ),
    "weekly": ("weekly", "loose", "flexible", "daily"),
    "online_course": (
        "an online maths course",
        "a distance-learning programme",
        "an online school for some subjects",
        "a coding course",
    ),
    "thriving": ("thriving", "big", "friendly", "busy", "welcoming"),
    "visits": ("twice", "a few times", "once", "several times"),
    "club": (
        "Scouts",
        "Guides",
        "{his} football club",
        "swimming club",
        "the youth theatre",
        "cadets",
        "church youth group",
    ),
    "revisit": ("review", "look again at", "reconsider", "revisit"),
    "revisit_when": (
        "next year",
        "at the end of the school year",
        "before Year {nextyear}",
        "in a few months",
    ),
    "part_time": ("part time", "from home", "fewer hours", "flexibly"),
    "start_project": (
        "start a YouTube channel about {hobby}",
        "build a website",
        "learn British Sign Language",
        "write a book",
        "grow vegetables",
    ),
    "other_parents": ("other parents", "two families", "a friend", "neighbours"),
    "they_helped": (
        "they have been a great help",
        "it has reassured me",
        "they have lent us resources",
        "we will meet up regularly",
    ),
    "still": ("still", "continue to", "regularly"),
    "friends_word": ("friends", "cousins", "old classmates", "friends from primary"),
    "college_option": ("college courses", "an apprenticeship", "sixth form", "online A levels"),
    # ---------------------------------------------------------------- legal, requests, closing
    "legal": (
        "{I} understand that under section 7 of the Education Act 1996 it is {my} responsibility to make sure {child} receive{s} a suitable education.",
        "{I} believe the school should {now} remove {him} from the register and {let_la_know}.",
        "{I} {am} aware that {I} will be responsible for {his} education from now on, including any exam costs.",
        "{I} understand the {la_team} may contact {me}.",
        "{I} understand you will need to {let_la_know}.",
        "{I} know {I} do not need anyone's permission to do this, but {I} wanted to explain.",
        "As {I} understand the rules, the school must delete {his} {names} once it has this in writing.",
        "{I} {am} aware the {la_team} may ask to see evidence of the education {I} provide.",
        "{I} do not want a meeting about this; this letter is {my} notice.",
    ),
    "let_la_know": (
        "let the local authority know",
        "inform the council",
        "notify the local authority",
        "pass this on to the council",
    ),
    "request": (
        "Could you please confirm once {names_of} been removed from the register?",
        "Please could {his} {belongings} be left at reception for {me} to collect.",
        "{I} would be grateful for a copy of {his} latest {report_kind}.",
        "Please cancel {his} {lunch_thing} from {exit}.",
        "Please let {his} {tutor_role} know, as {he} would like to say goodbye.",
        "{I} would appreciate it if {his} records could be kept up to date and passed on if needed.",
        "Please can you send confirmation {conf_how}.",
        "{I} would like {his} {belongings} returned when convenient.",
        "Could someone let {me} know if there is anything {I} need to sign?",
        "Please remove {me} from the {mailing}.",
        "Any money left on {his} {lunch_thing} can be {refund_word}.",
    ),
    "conf_how": ("to this address", "by email", "by text", "to the address above", "in writing"),
    "mailing": ("parent mailing lists", "ParentMail list", "school app", "text message list"),
    "refund_word": ("refunded", "donated to the PTA", "returned to me", "passed to {his} cousin"),
    "belongings": (
        "PE kit",
        "books and coat",
        "things from {his} locker",
        "art folder",
        "instrument",
        "belongings",
    ),
    "report_kind": ("school report", "assessment data", "reading age", "attendance record", "work"),
    "lunch_thing": (
        "school dinners",
        "lunch account",
        "music lessons",
        "bus pass",
        "breakfast club place",
    ),
    "tutor_role": (
        "form tutor",
        "class teacher",
        "teaching assistant",
        "head of year",
        "key worker",
    ),
    "closing": (
        "Thank you for everything the staff have done for {child}.",
        "{I} would like to thank {his} teachers for their {support_word} {over_years}.",
        "This has not been an easy decision, but {I} {am} confident it is the right one.",
        "Please do not hesitate to contact {me} on {phone} if you need anything further.",
        "{I} hope you understand.",
        "Thanks again for your help.",
        "{I} wish the school all the best.",
        "{child} {has} some lovely memories of {his} time at {school}.",
        "{I} have no complaints about the teaching itself; this is about what is best for {child}.",
        "{I} {am} happy to discuss this further but {my} mind is made up.",
        "Please pass on {my} thanks to {teacher_mention}.",
        "{I} {am} sure {child} will keep in touch with {his} friends.",
        "{I} can be reached on {phone} or at this address.",
        "{I} appreciate {everything_word} you have tried to do.",
        "No doubt {I} will see some of you around {town}.",
        "Please keep this on {his} file.",
        "Sorry it has come to this.",
        "Best of luck to {his} class.",
    ),
    "support_word": ("support", "patience", "kindness", "help", "hard work"),
    "over_years": ("over the years", "this year", "so far", "throughout", ""),
    "everything_word": ("everything", "all", "what", "the little things"),
    "teacher_mention": (
        "Miss {staff_surname}",
        "Mr {staff_surname}",
        "Mrs {staff_surname}",
        "the office staff",
        "the learning support team",
        "{his} form tutor",
    ),
    "personal": (
        "{child} love{s} {hobby}, and {I} want {him} to have {time_for} it.",
        "{he} {has} always been {trait} and {trait2}, and {I} want to {keep_spark}.",
        "{I} {am} lucky that {my} {partner} {works_from_home} and can {share_teaching}.",
        "{he} {is} {excited_word} about {new_chapter}.",
        "{he} read{s} {constantly} and {has} recently {become_obsessed} {hobby2}.",
        "Before having children {I} worked in {sector}, so {I} feel {well_prepared}.",
        "{child}'s {older_relative} was home educated and is now {at_uni}.",
        "At the weekends {he} {is} a completely different {child_noun}: {happy_word}, {trait} and full of ideas.",
        "{child} {is} {good_at} {subject} and {I} want to build on that.",
        "{he} {has} {always} been happiest {happiest_where}.",
        "{I} have {rearranged} {our_work} to make this work.",
        "{child} {has} a younger {sibling_word} at home who is {excited_word} to have {him} around.",
    ),
    "time_for": ("time for", "the freedom to pursue", "room to develop", "more time for"),
    "trait": ("curious", "creative", "sensitive", "bright", "thoughtful", "imaginative", "kind"),
    "trait2": ("chatty", "independent", "determined", "funny", "practical", "gentle"),
    "keep_spark": ("keep that spark alive", "protect that", "nurture it", "give it room"),
    "works_from_home": ("works from home", "is retired", "works part time", "is at home"),
    "share_teaching": (
        "share the teaching",
        "help out",
        "take some of the lessons",
        "cover some days",
    ),
    "excited_word": (
        "very excited",
        "excited",
        "looking forward",
        "really keen",
        "a bit nervous but excited",
    ),
    "new_chapter": (
        "starting this new chapter",
        "this change",
        "learning at home",
        "the projects we have planned",
    ),
    "constantly": ("constantly", "all the time", "every evening", "voraciously"),
    "become_obsessed": ("become obsessed with", "got into", "discovered", "taken up"),
    "well_prepared": ("well prepared", "confident", "ready for this", "able to do this"),
    "older_relative": ("older cousin", "uncle", "friend's daughter", "neighbour's son"),
    "at_uni": ("at university", "doing an apprenticeship", "a doctor", "at college"),
    "good_at": ("very good at", "ahead in", "passionate about", "gifted at"),
    "always": ("always", "", "honestly always", "usually"),
    "happiest_where": ("outdoors", "with animals", "building things", "at home", "in small groups"),
    "rearranged": ("rearranged", "reduced", "changed", "juggled"),
    "our_work": ("our working hours", "our jobs", "shifts", "our week"),
    "sibling_word": ("brother", "sister", "sibling"),
    "signoff": (
        "Yours sincerely,",
        "Yours faithfully,",
        "Kind regards,",
        "Best wishes,",
        "Many thanks,",
        "Regards,",
        "Warm regards,",
        "Thank you,",
        "With thanks,",
        "Best regards,",
        "Thanks,",
        "All the best,",
    ),
}

REASON_SYMBOLS = (
    "reason_mental",
    "reason_bullying",
    "reason_philosophy",
    "reason_send",
    "reason_health",
    "reason_lifestyle",
    "reason_religious",
)

# School-authored templates: written by staff for a parent to sign, so they carry
# the school's voice. Each school's template is one expansion of this grammar;
# {slots} that name a family's details are left in place until a copy is filled.
SCHOOL_TEMPLATE: dict[str, tuple[str, ...]] = {
    "st_addressee": (
        "To: The Headteacher",
        "The Headteacher\n{org}",
        "To the Headteacher and Governors",
        "FAO: Attendance and Admissions",
        "To: {head}, Headteacher",
        "For the attention of the Head of School",
        "To: {org} - Pupil Services",
        "The Principal\n{org}",
    ),
    "st_subject": (
        "Re: {st_removal} of {child_full} from the {st_roll}",
        "RE: {child_full} ({upn}) - Elective Home Education",
        "Subject: {st_notification} of Elective Home Education - {child_full}, Tutor Group {tutor}",
        "Re: {st_removal} from {st_roll} - {child_full} - UPN {upn}",
        "Re: EHE {st_request_noun} for {child_full}, {year} ({tutor})",
        "{st_request_noun_caps} TO REMOVE PUPIL FROM ROLL: {child_full}",
        "Parental {st_notification} - home education - {child_full} ({tutor})",
    ),
    "st_removal": ("Removal", "Withdrawal", "Deletion", "Deregistration"),
    "st_roll": ("school roll", "roll", "admission register", "register"),
    "st_notification": ("Notification", "Confirmation", "Declaration", "Notice"),
    "st_request_noun": ("request", "declaration", "form", "confirmation"),
    "st_request_noun_caps": ("REQUEST", "APPLICATION", "PARENTAL REQUEST"),
    "st_details": (
        "Pupil name: {child_full}\nUPN: {upn}\nTutor group: {tutor}\nYear group: {year}",
        "Student: {child_full}    Form: {tutor}    UPN: {upn}",
        "Name of student: {child_full}\nDate of birth: {dob}\nTutor group: {tutor}",
        "Child's name: {child_full} | Year: {year} | Form: {tutor} | UPN: {upn}",
        "Learner: {child_full}\nReg group: {tutor}\nUnique Pupil Number: {upn}",
        "STUDENT DETAILS\nName: {child_full}   DOB: {dob}   Tutor: {tutor}",
    ),
    "st_salutation": (
        "Dear {head},",
        "Dear Headteacher,",
        "Dear Sir/Madam,",
        "Dear {head}",
        "Dear Principal,",
    ),
    "st_meeting": (
        "Following our meeting with {staff} on {meeting_date}, I confirm that I wish to remove {child} from the school roll to educate {him} at home.",
        "Further to my meeting with {staff} on {meeting_date}, I am writing to confirm my decision to take {child} off roll and educate {him} at home.",
        "As discussed with {staff} at our meeting on {meeting_date}, I would like {child} to be removed from the roll of {org} so that I can home educate {him}.",
        "I met with {staff} on {meeting_date} and, {st_in_line}, I now wish to withdraw {child} from {org} to provide education at home.",
        "Having met with {staff} on {meeting_date}, I confirm my request for {child}'s name to be taken off the admissions register so I can educate {him} at home.",
        "I confirm that on {meeting_date} I met {staff} to discuss {child}'s future at {org} and that I have chosen to home educate {him}.",
        "At the {st_meeting_kind} held on {meeting_date} with {staff}, the option of elective home education was {st_explained}, and I {st_now_wish} to take this up for {child}.",
        "This letter confirms the outcome of the {st_meeting_kind} with {staff} on {meeting_date}: I will be educating {child} at home.",
    ),
    "st_meeting_kind": (
        "meeting",
        "pastoral review",
        "reintegration meeting",
        "parent meeting",
        "attendance panel",
    ),
    "st_explained": ("explained to me", "discussed", "set out", "talked through"),
    "st_now_wish": ("now wish", "have decided", "would like", "have agreed"),
    "st_responsibility": (
        "I understand the school is no longer responsible for {child}'s education from the date {his} name is removed.",
        "I understand that from {exit} {org} will no longer be responsible for {child}'s education, safety or welfare.",
        "I accept that the school will have no further responsibility for {his} education once {his} name has been removed.",
        "I understand that responsibility for {child}'s education {st_passes} me as {his} parent.",
        "I acknowledge that the school has no further duty towards {child}'s education after {exit}.",
        "I understand that {org} is no longer {st_accountable} for {child} once this form is {st_processed}.",
    ),
    "st_passes": ("now passes entirely to", "rests solely with", "will pass to", "now rests with"),
    "st_accountable": ("accountable", "responsible", "answerable"),
    "st_processed": ("processed", "received", "signed", "returned"),
    "st_advised": (
        "The school has advised me that {st_advice}.",
        "I have been advised by the school that {st_advice}.",
        "{st_staff_role} has explained to me that {st_advice}.",
        "It has been made clear to me that {st_advice}.",
        "I have been told that {st_advice}.",
        "I am aware that {st_advice}.",
    ),
    "st_advice": (
        "{child}'s place cannot be held open",
        "if I change my mind I will need to reapply through the local authority admissions team",
        "the local authority will be informed and may contact me",
        "this is my choice and not something the school requires",
        "any outstanding behaviour matters will be closed when {child} leave{s}",
        "I will be responsible for arranging and paying for any examinations",
        "there may not be a place available at {org} if {child} wishes to return",
        "home education is a full-time commitment for the parent",
    ),
    "st_understand": (
        "I understand that:",
        "I confirm that I understand:",
        "By signing this letter I accept that:",
        "Please note (I have been informed that):",
    ),
    "st_staff_role": (
        "The Head of Year",
        "The Deputy Head",
        "The pastoral team",
        "The Attendance Officer",
        "The SENCo",
        "Student Services",
    ),
    "st_in_line": (
        "in line with our discussion",
        "as agreed",
        "in line with what was discussed",
        "as we discussed",
        "as per our conversation",
    ),
    "st_voluntary": (
        "I confirm that this is my own decision and that I have not been pressured by the school.",
        "I am making this decision freely and {st_in_line}.",
        "This decision is mine and I have been given the opportunity to discuss alternatives.",
        "I confirm that I have made this choice voluntarily, {st_in_line}.",
        "I confirm that nobody at the school has asked me to take this step.",
        "I declare that I have chosen elective home education of my own free will.",
    ),
    "st_consequence": (
        "I understand that {child} will not be able to sit {his} exams at the school.",
        "I am aware that {child} may not be able to return to {org} once {his} place has been filled.",
        "I understand that I will need to arrange and pay for any GCSE entries myself.",
        "I understand that {child} will no longer receive school transport or meals from {org}.",
        "I understand that a managed move or alternative provision will no longer be offered.",
        "I understand that {child} will not be included in any school trips or activities from {exit}.",
    ),
    "st_request": (
        "Please remove {child} from the roll with effect from {exit}.",
        "I would be grateful if you could remove {his} name from the register from {exit}.",
        "I ask that {child}'s name is deleted from the admission register from {exit}.",
        "Please treat this letter as my formal notice of withdrawal from {exit}.",
        "I request that {child} {st_be_removed} {st_on_date} {exit}.",
    ),
    "st_be_removed": (
        "be removed from roll",
        "be taken off roll",
        "is removed from the register",
        "is deregistered",
    ),
    "st_on_date": ("on", "from", "with effect from", "as of"),
    "st_closing": (
        "Thank you for your support in this matter.",
        "I would like to thank the school for its help.",
        "Thank you for meeting with me.",
        "I am grateful for the support the school has offered.",
        "Thank you for your understanding.",
        "I appreciate the time staff have given to {child}.",
    ),
    "st_signoff": ("Yours sincerely,", "Yours faithfully,", "Kind regards,", "Signed,"),
    "st_signblock": (
        "Signed: ____________________ (Parent/Carer)\nPrint name: {parent}\nDate: {date}",
        "Parent/Carer signature: ______________\nName: {parent}\nDate: {date}",
        "Signature of parent/carer ______________  Date {date}\nName (please print): {parent}",
        "Signed ______________________\n{parent}\nParent/Carer of {child_full}",
        "Parent name: {parent}\nRelationship to pupil: ____________\nSignature: ____________",
    ),
    "st_office": (
        "For school use: received by ______  Date ______  SIMS updated [ ]",
        "Office use only - copy to LA EHE team / pastoral file",
        "School use: Deletion ground 9(1)(f). Date removed from roll: ________",
        "Admin: Arbor updated ____  LA notified ____",
        "",
        "",
    ),
}

# Words a school's template misspells (the same in every copy); one is picked per
# template from those its text contains.
TEMPLATE_TYPOS = (
    ("responsible", "responsable"),
    ("education", "eduction"),
    ("immediately", "immediatly"),
    ("acknowledge", "acknowlege"),
    ("discussed", "dicussed"),
    ("register", "regsiter"),
    ("meeting", "meeeting"),
    ("opportunity", "oppertunity"),
    ("decision", "decison"),
    ("arrange", "arange"),
    ("advised", "adviced"),
    ("alternatives", "alternitives"),
    ("examinations", "examinaitons"),
    ("behaviour", "behavour"),
    ("removed", "remvoed"),
    ("welfare", "wellfare"),
    ("support", "suport"),
    ("grateful", "greatful"),
)

# Small changes a parent makes when retyping a letter someone else wrote.
RETYPE_EDITS = (
    ("I wish to", "I would like to"),
    ("I confirm that", "I can confirm that"),
    ("I understand", "I do understand"),
    ("Please remove", "Could you please remove"),
    ("Thank you for", "Thanks for"),
    ("I am ", "I'm "),
    ("do not", "don't"),
    ("cannot", "can't"),
    ("educate him at home", "educate him myself at home"),
    ("educate her at home", "teach her at home"),
    ("school roll", "roll"),
    ("formal notice", "notice"),
    ("I would like", "I'd like"),
)

# Sentences a parent adds to a letter they were given (their own voice, short).
PARENT_ADDITIONS = (
    "{child} {is} upset about leaving {his} friends.",
    "I did not really want it to come to this.",
    "I hope {child} can still come to the summer fair.",
    "I will collect {his} things on Friday.",
    "Please can you make sure {his} tutor knows.",
    "{he} {was} doing well in art and I am sad {he} {has} to stop.",
    "I would still like a copy of {his} report.",
    "I am not sure what happens next with the council.",
    "I have not decided yet about exams.",
    "My phone number is {phone} if anyone needs me.",
)

# Public sample letters of the kind home-education charities publish (invented
# wording). A paragraph is a tuple of sentences; a leading "?" marks a sentence a
# parent may leave out.
PUBLIC_TEMPLATES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (
        ("{address_block}",),
        ("{date}",),
        ("Dear {head},",),
        (
            "I am writing to inform you that I am withdrawing my {child_noun} {child_full}, {dob_label} {dob}, from {school} with effect from {exit} in order to educate {him} at home, as is my right under section 7 of the Education Act 1996.",
        ),
        (
            "Please remove {child}'s {names} from the admission register under Regulation 9(1)(f) of the School Attendance (Pupil Registration) (England) Regulations 2024.",
            "?I would be grateful if you could confirm in writing that this has been done.",
            "I understand that you must inform the local authority when a pupil's name is removed from the register.",
        ),
        (
            "I will be providing a suitable and efficient education for {child}, appropriate to {his} age, ability and aptitude and to any special educational needs {he} may have.",
            "?Please forward any school records to the local authority as required.",
        ),
        ("Yours sincerely,",),
        ("{parent}",),
    ),
    (
        ("NOTICE OF ELECTIVE HOME EDUCATION",),
        ("To the Headteacher, {school}\nDate: {date}",),
        ("Child: {child_full}    {dob_label_caps}: {dob}",),
        (
            "I hereby give notice that, from {exit}, my {child_noun} named above will be electively home educated and will cease to attend {school}.",
        ),
        (
            "The legal duty to ensure that a child of compulsory school age receives an efficient, full-time education suitable to their age, ability and aptitude rests with the parent, and the law allows that duty to be met by regular attendance at school or otherwise.",
        ),
        (
            "I am choosing to fulfil my duty otherwise than at school.",
            "Accordingly the school is required to delete the name from its admission register, the ground being Regulation 9(1)(f) of the 2024 pupil registration regulations, and to notify the local authority.",
            "?No meeting is needed for the deletion to take effect, and a decision of this kind does not require the school's agreement.",
        ),
        ("?Kindly send written acknowledgement of this notice to the address below.",),
        ("Signed: {parent}",),
        ("{address_block}",),
    ),
    (
        ("{date}",),
        ("Dear {head},",),
        ("Home education: {child_full} ({year})",),
        (
            "Please accept this as notice that I have decided to home educate my {son}, {child_full} (born {dob}).",
            "{child}'s last day at {school} will be {exit}.",
        ),
        (
            "Parents in England are entitled to educate their children at home, and a school does not need to approve that choice.",
            "Once the school receives written notice from a parent that a child is being educated otherwise than at school, it must take the child off roll under the pupil registration rules (ground 9(1)(f)).",
        ),
        (
            "?A quick reply confirming the date of deletion would be appreciated.",
            "?Thank you for all you have done for {child}.",
        ),
        ("Best wishes,",),
        ("{parent}",),
    ),
    (
        ("{parent}\n{address_block}",),
        ("{date}",),
        ("The Headteacher\n{school}",),
        ("Dear Headteacher,",),
        ("Deregistration of {child_full}, {year}, {dob_label} {dob}",),
        (
            "Kindly treat this letter as written notification that I have taken the decision to educate my {child_noun} at home.",
            "In accordance with Regulation 9(1)(f) of the School Attendance (Pupil Registration) (England) Regulations 2024, I ask that {child}'s {names} be deleted from the admission register from {exit}.",
        ),
        (
            "I am fully aware of my duty as a parent to secure a suitable full-time education for {him}, and I will be discharging that duty myself.",
        ),
        (
            "?I would also ask that the local authority is informed of the deletion in the usual way and that {his} educational records are kept available should they be requested.",
            "?I am happy for this notice to be shared with the local authority's elective home education officer.",
        ),
        ("Yours faithfully,",),
        ("{parent}",),
    ),
)

DOCX_TEMPLATE_NAMES = (
    "EHE withdrawal pro-forma.dotx",
    "Parent EHE letter template.dotx",
    "Off roll request (EHE).dotx",
    "Letterhead 2024.dotx",
    "Pastoral letter template.dotx",
    "Home Education Form.dotx",
)
HELPERS = ("husband", "wife", "partner", "mum", "dad")  # "my ... works from home"
HELPERS_PLURAL = ("nan", "eldest", "grandad", "aunt")  # "our ... works from home"
PARENT_AUTHORS = ("User", "Owner", "HP", "Windows User", "Microsoft Office User", "")
WORD_APPS = (
    "Microsoft Office Word",
    "Microsoft Office Word",
    "Microsoft Macintosh Word",
    "LibreOffice/7.6",
)
PDF_PRODUCERS = (
    "Microsoft: Print To PDF",
    "Microsoft Word for Microsoft 365",
    "macOS Version 14.2 Quartz PDFContext",
    "LibreOffice 7.6",
    "Skia/PDF m120",
    "iOS Version 17.1 Quartz PDFContext",
)

# --------------------------------------------------------------------------- text engine

_SLOT = re.compile(r"\{(\w+)\}")
Grammar = dict[str, tuple[str, ...]]
Paragraphs = list[list[str]]


def expand(text: str, rnd: random.Random, ctx: dict[str, str], grammar: Grammar) -> str:
    """Replace each {slot} by its context value or a random alternative, recursively.

    Context values never consume randomness, so two children of one family get
    the same wording from the same seed. Unknown slots are left for a later pass.
    """

    def pick(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ctx:
            return ctx[name]
        options = grammar.get(name)
        if options is None:
            return match.group(0)
        return _SLOT.sub(pick, options[int(rnd.random() * len(options))])

    return _SLOT.sub(pick, text)


def fill(text: str, ctx: dict[str, str]) -> str:
    """Replace every remaining {slot} from the context; a missing one is a bug."""
    return _SLOT.sub(lambda m: ctx[m.group(1)], text)


def _tidy(sentence: str) -> str:
    """Mend what empty alternatives leave behind and capitalise the first letter."""
    sentence = re.sub(r" {2,}", " ", sentence).strip()
    sentence = re.sub(r" ([,.;:?])", r"\1", sentence).replace(",.", ".").replace(",,", ",")
    return sentence[:1].upper() + sentence[1:]


def _join(paragraphs: Paragraphs) -> str:
    return "\n\n".join(" ".join(p) for p in paragraphs if p and any(p)) + "\n"


def _words(paragraphs: Paragraphs) -> int:
    return sum(len(s.split()) for p in paragraphs for s in p)


def _nth(day: dt.date) -> str:
    """The day of the month as an ordinal: "1st", "12th", "22nd"."""
    n = day.day
    suffix = "th" if 11 <= n <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _month(day: dt.date) -> str:
    return MONTHS[day.month - 1]


# How UK letter writers write a date; a letter picks one style by index.
DATE_FORMATS: tuple[Callable[[dt.date], str], ...] = (
    lambda day: f"{_nth(day)} {_month(day)} {day.year}",
    lambda day: f"{day.day} {_month(day)} {day.year}",
    lambda day: f"{day:%d/%m/%Y}",
    lambda day: f"{day.day}/{day.month}/{day.year}",
    lambda day: f"{WEEKDAYS[day.weekday()]} {_nth(day)} {_month(day)} {day.year}",
    lambda day: f"{_nth(day)} {_month(day)[:3]} {day.year}",
    lambda day: f"{day:%d.%m.%Y}",
    lambda day: f"{day:%d/%m/%y}",
)
DATE_STYLES = len(DATE_FORMATS)


def format_date(day: dt.date, style: int) -> str:
    """A date as UK letter writers write it ("5th November 2024", "05/11/2024", ...)."""
    return DATE_FORMATS[style % DATE_STYLES](day)


# --------------------------------------------------------------------------- file writers

METADATA_KEYS = frozenset(
    {
        "author",
        "last_modified_by",
        "title",
        "comments",
        "revision",
        "created",
        "modified",
        "last_printed",
        "company",
        "template",
        "application",
        "producer",
        "rsid_root",
    }
)
DEFAULT_TIMESTAMP = dt.datetime(2024, 1, 1, 9, 0, 0)


def write_letter_file(
    path: Path,
    text: str,
    fmt: str,
    *,
    header: str | None = None,
    metadata: dict | None = None,
    text_layer: bool = True,
) -> None:
    """Write one letter as txt, md, docx or pdf; identical inputs give identical bytes.

    `header` is a letterhead: the top lines of a txt/md/pdf, the page header of
    a docx. `metadata` keys (see METADATA_KEYS) go to docx core/app properties
    and settings (rsidRoot) or to the PDF info dictionary; txt/md ignore them.
    `text_layer=False` writes a PDF holding only a picture of the page, as a
    scanner would: it has no extractable text.
    """
    metadata = dict(metadata or {})
    unknown = set(metadata) - METADATA_KEYS
    if unknown:
        raise ValueError(f"unknown letter metadata keys: {sorted(unknown)}")
    if fmt in ("txt", "md"):
        body = f"{header}\n\n{text}" if header else text
        data = body.encode("utf-8")
    elif fmt == "docx":
        data = docx_bytes(text, header=header, metadata=metadata)
    elif fmt == "pdf":
        lines = _pdf_lines(text, header)
        data = pdf_bytes(lines, metadata) if text_layer else scanned_pdf_bytes(lines, metadata)
    else:
        raise ValueError(f"unknown letter format {fmt!r}; use one of {FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---- docx: a python-docx package skeleton, filled per letter


@dataclass(frozen=True)
class _DocxSkeleton:
    parts: dict[str, bytes]
    document_head: str  # document.xml up to the body's first paragraph
    document_tail: str  # the section properties and closing tags
    header_name: str
    header_head: str
    app_xml: str
    settings_xml: str


_DROPPED_PARTS = ("docProps/thumbnail.jpeg", "word/stylesWithEffects.xml", "customXml/")


@functools.cache
def _docx_skeleton() -> _DocxSkeleton:
    """A minimal, valid package saved once by python-docx, trimmed of bulky parts."""
    import docx

    document = docx.Document()
    document.sections[0].header.is_linked_to_previous = False  # creates the header part
    buffer = io.BytesIO()
    document.save(buffer)
    with zipfile.ZipFile(buffer) as package:
        parts = {n: package.read(n) for n in package.namelist() if not n.startswith(_DROPPED_PARTS)}
    # python-docx's 430 kB styles part would dominate every letter; its small default will do.
    styles = Path(docx.__file__).parent / "templates" / "default-styles.xml"
    parts["word/styles.xml"] = styles.read_bytes()
    dropped = r"(?:docProps/thumbnail\.jpeg|stylesWithEffects\.xml|\.\./customXml/item1\.xml)"
    for name, pattern in (
        ("_rels/.rels", rf'<Relationship [^>]*Target="{dropped}"/>'),
        ("word/_rels/document.xml.rels", rf'<Relationship [^>]*Target="{dropped}"/>'),
        (
            "[Content_Types].xml",
            r'<Override PartName="/(?:customXml|word/stylesWithEffects)[^>]*/>',
        ),
    ):
        parts[name] = re.sub(pattern, "", parts[name].decode()).encode()
    rels = parts["word/_rels/document.xml.rels"].decode()
    header_name = "word/" + re.search(r'Target="(header\d+\.xml)"', rels).group(1)
    document_xml = parts.pop("word/document.xml").decode()
    document_xml = document_xml.replace('w:w="12240" w:h="15840"', 'w:w="11906" w:h="16838"')  # A4
    body = document_xml.index("<w:body>") + len("<w:body>")
    header_xml = parts.pop(header_name).decode()
    header_open = header_xml.index(">", header_xml.index("<w:hdr")) + 1
    return _DocxSkeleton(
        parts=parts,
        document_head=document_xml[:body],
        document_tail=document_xml[body:],
        header_name=header_name,
        header_head=header_xml[:header_open],
        app_xml=parts.pop("docProps/app.xml").decode(),
        settings_xml=parts.pop("word/settings.xml").decode(),
    )


def _docx_paragraphs(text: str, rsid: str) -> str:
    """WordprocessingML paragraphs: one per blank-line block, line breaks inside."""
    paragraphs = []
    for block in text.strip("\n").split("\n\n"):
        runs = "<w:br/>".join(
            f'<w:t xml:space="preserve">{escape(line)}</w:t>' for line in block.split("\n")
        )
        paragraphs.append(f'<w:p w:rsidR="{rsid}" w:rsidRDefault="{rsid}"><w:r>{runs}</w:r></w:p>')
    return "".join(paragraphs)


def _w3c(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def _core_xml(meta: dict) -> str:
    created = meta.get("created", DEFAULT_TIMESTAMP)
    modified = meta.get("modified", created)
    printed = meta.get("last_printed")
    modified_by = meta.get("last_modified_by", meta.get("author", ""))
    printed_xml = f"<cp:lastPrinted>{_w3c(printed)}</cp:lastPrinted>" if printed else ""
    return (
        "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n"
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/"'
        ' xmlns:dcmitype="http://purl.org/dc/dcmitype/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>{escape(meta.get('title', ''))}</dc:title><dc:subject/>"
        f"<dc:creator>{escape(meta.get('author', ''))}</dc:creator><cp:keywords/>"
        f"<dc:description>{escape(meta.get('comments', ''))}</dc:description>"
        f"<cp:lastModifiedBy>{escape(modified_by)}</cp:lastModifiedBy>"
        f"<cp:revision>{int(meta.get('revision', 1))}</cp:revision>{printed_xml}"
        f'<dcterms:created xsi:type="dcterms:W3CDTF">{_w3c(created)}</dcterms:created>'
        f'<dcterms:modified xsi:type="dcterms:W3CDTF">{_w3c(modified)}</dcterms:modified>'
        "<cp:category/></cp:coreProperties>"
    )


def _app_xml(skeleton: _DocxSkeleton, meta: dict, text: str) -> str:
    words = len(text.split())
    replacements = {
        "Template": meta.get("template", "Normal.dotm"),
        "Application": meta.get("application", "Microsoft Office Word"),
        "Company": meta.get("company", ""),
        "Words": str(words),
        "Characters": str(len(text.replace(" ", "").replace("\n", ""))),
        "CharactersWithSpaces": str(len(text)),
        "Paragraphs": str(text.count("\n\n") + 1),
        "Lines": str(text.count("\n") + 1),
    }
    xml = skeleton.app_xml
    for tag, value in replacements.items():
        xml = re.sub(
            rf"<{tag}>[^<]*</{tag}>|<{tag}/>", f"<{tag}>{escape(value)}</{tag}>", xml, count=1
        )
    return xml


def docx_bytes(text: str, *, header: str | None = None, metadata: dict | None = None) -> bytes:
    """A .docx with `text` as body paragraphs, `header` as page header, and metadata set."""
    meta = metadata or {}
    skeleton = _docx_skeleton()
    default_rsid = re.search(r'<w:rsidRoot w:val="([0-9A-F]+)"', skeleton.settings_xml).group(1)
    rsid = meta.get("rsid_root", default_rsid)
    parts = dict(skeleton.parts)
    parts["word/document.xml"] = (
        skeleton.document_head + _docx_paragraphs(text, rsid) + skeleton.document_tail
    ).encode()
    parts[skeleton.header_name] = (
        skeleton.header_head + _docx_paragraphs(header or "", rsid) + "</w:hdr>"
    ).encode()
    parts["word/settings.xml"] = skeleton.settings_xml.replace(default_rsid, rsid).encode()
    parts["docProps/core.xml"] = _core_xml(meta).encode()
    parts["docProps/app.xml"] = _app_xml(skeleton, meta, text).encode()
    return _zip_bytes(parts, meta.get("modified", meta.get("created", DEFAULT_TIMESTAMP)))


def _zip_bytes(parts: dict[str, bytes], when: dt.datetime) -> bytes:
    """A zip whose bytes depend only on its content: fixed dates and host system."""
    stamp = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    buffer = io.BytesIO()
    names = sorted(parts, key=lambda n: (n != "[Content_Types].xml", n))
    with zipfile.ZipFile(buffer, "w") as package:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 0
            info.external_attr = 0
            package.writestr(info, parts[name], compresslevel=6)
    return buffer.getvalue()


# ---- pdf: written by hand, Helvetica, one text line per Tj

PDF_WIDTH, PDF_HEIGHT = 595, 842  # A4 in points
PDF_LEFT, PDF_TOP, PDF_LEADING, PDF_FONT_SIZE = 56, 786, 14, 10.5
PDF_LINES_PER_PAGE = 52
PDF_WRAP = 90


def _pdf_lines(text: str, header: str | None) -> list[str]:
    """The letter's lines wrapped to ~90 characters, letterhead first."""
    lines: list[str] = []
    source = (f"{header}\n\n{text}" if header else text).rstrip("\n")
    for raw in source.split("\n"):
        lines.extend(textwrap.wrap(raw, PDF_WRAP) or [""])
    return lines


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi: backslash, parentheses and non-ASCII escaped."""
    out = bytearray(b"(")
    for byte in text.encode("cp1252", errors="replace"):
        if byte in b"\\()":
            out += b"\\" + bytes([byte])
        elif byte < 32 or byte > 126:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b")")


def _pdf_date(moment: dt.datetime) -> str:
    return f"D:{moment:%Y%m%d%H%M%S}Z"


def _pdf_info(meta: dict) -> bytes:
    created = meta.get("created", DEFAULT_TIMESTAMP)
    entries = {
        "Title": meta.get("title"),
        "Author": meta.get("author"),
        "Creator": meta.get("application"),
        "Producer": meta.get("producer", "offroll-audit synthetic letters"),
        "CreationDate": _pdf_date(created),
        "ModDate": _pdf_date(meta.get("modified", created)),
    }
    body = b"".join(b"/%s %s " % (k.encode(), _pdf_string(v)) for k, v in entries.items() if v)
    return b"<< " + body + b">>"


def _pdf_stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), extra, data)


def assemble_pdf(objects: list[bytes]) -> bytes:
    """Number the objects from 1 (1 = catalog, 4 = info) and write a correct xref."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _pdf_document(
    page_contents: list[bytes], page_resources: list[bytes], extra: list[bytes], meta: dict
) -> bytes:
    """Catalog, page tree, font, info, then a page and content stream per page, then `extra`."""
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(page_contents)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_contents)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        _pdf_info(meta),
    ]
    for i, (content, resources) in enumerate(zip(page_contents, page_resources, strict=True)):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources %s /Contents %d 0 R >>"
            % (PDF_WIDTH, PDF_HEIGHT, resources, first_page + 2 * i + 1)
        )
        objects.append(_pdf_stream(content))
    return assemble_pdf(objects + extra)


def pdf_bytes(lines: list[str], metadata: dict | None = None) -> bytes:
    """A PDF with a real text layer: each line drawn with Tj, ~52 lines a page."""
    pages = [
        lines[i : i + PDF_LINES_PER_PAGE] for i in range(0, max(len(lines), 1), PDF_LINES_PER_PAGE)
    ]
    contents = []
    for page in pages:
        ops = [
            b"BT /F1 %s Tf %d TL %d %d Td"
            % (str(PDF_FONT_SIZE).encode(), PDF_LEADING, PDF_LEFT, PDF_TOP)
        ]
        ops += [(_pdf_string(line) + b" Tj T*") if line else b"T*" for line in page]
        ops.append(b"ET")
        contents.append(b"\n".join(ops))
    resources = [b"<< /Font << /F1 3 0 R >> >>"] * len(pages)
    return _pdf_document(contents, resources, [], metadata or {})


def scanned_pdf_bytes(lines: list[str], metadata: dict | None = None) -> bytes:
    """A one-page PDF that is only a grey picture of the letter's lines: no text layer."""
    width, height = 298, 421
    image = np.full((height, width), 250, dtype=np.uint8)
    for i, line in enumerate(lines[:52]):
        top = 22 + i * 7
        image[top : top + 3, 28 : 28 + min(len(line) * 27 // 10, width - 40)] = 60
    data = zlib.compress(image.tobytes(), 6)
    image_object = _pdf_stream(
        data,
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter /FlateDecode " % (width, height),
    )
    content = b"q %d 0 0 %d 0 0 cm /Im1 Do Q" % (PDF_WIDTH, PDF_HEIGHT)
    resources = [b"<< /XObject << /Im1 7 0 R >> >>"]  # object 7: after page 5 and content 6
    return _pdf_document([content], resources, [image_object], metadata or {})


# --------------------------------------------------------------------------- people and places

FREE_FORM["staff_surname"] = tuple(STAFF_SURNAMES)
_POSTCODE_AREAS = ("AB", "BD", "CB", "DN", "HX", "LS", "NR", "PO", "SO", "TS", "WF", "YO")
_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


@dataclass(frozen=True)
class SchoolProfile:
    """What a letter needs to know about a school: names, letterhead, staff."""

    urn: str
    name: str
    trust: str | None
    town: str
    head: str
    letterhead: str
    staff: tuple[tuple[str, str], ...]  # (name, role)
    tutors: tuple[str, ...]  # tutor initials, as in "10JH"


@dataclass(frozen=True)
class Family:
    """One household's voice: names, address and writing habits, drawn from its seed."""

    surname: str
    signature: str
    address: str
    phone: str
    plural: bool  # writes as "we"
    helper: str  # who shares the teaching: "my husband", "our nan"
    hobbies: tuple[str, str]
    author: str
    rsid: str
    application: str
    producer: str
    date_style: int


@dataclass(frozen=True)
class LetterTemplate:
    """A letter many families copy: paragraphs of (sentence, may be left out)."""

    template_id: str
    paragraphs: tuple[tuple[tuple[str, bool], ...], ...]
    body: tuple[int, int]  # paragraphs a parent adds to: [start, end)
    header: str | None = None
    metadata: dict = field(default_factory=dict)
    date_style: int = 0
    typos: tuple[tuple[str, str], ...] = ()  # (correct, misspelt)


def _postcode(rnd: random.Random) -> str:
    letters = rnd.choice(_LETTERS) + rnd.choice(_LETTERS)
    return f"{rnd.choice(_POSTCODE_AREAS)}{rnd.randint(1, 29)} {rnd.randint(1, 9)}{letters}"


def _phone(rnd: random.Random) -> str:
    return f"0{rnd.choice(('1', '7'))}{rnd.randint(100, 999)} {rnd.randint(100000, 999999)}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())[:24] or "school"


def _staff_name(rnd: random.Random) -> str:
    return f"{rnd.choice(('Mr', 'Mrs', 'Ms', 'Miss', 'Dr'))} {rnd.choice(STAFF_SURNAMES)}"


def school_profile(urn: str, name: str | None, trust: str | None, seed: int) -> SchoolProfile:
    """A school's letterhead, head, pastoral staff and tutor groups (invented, stable per seed)."""
    rnd = random.Random(seed)
    name = name or f"School {urn}"
    town = rnd.choice(TOWNS)
    head = _staff_name(rnd)
    street = f"{rnd.choice(STREETS)}, {town} {_postcode(rnd)}"
    letterhead = (
        f"{name}\n{street}\nTel: {_phone(rnd)} | office@{_slug(name)}.sch.uk\nHeadteacher: {head}"
    )
    staff = tuple((_staff_name(rnd), rnd.choice(STAFF_ROLES)) for _ in range(3))
    tutors = tuple(rnd.choice(_LETTERS) + rnd.choice(_LETTERS) for _ in range(6))
    return SchoolProfile(urn, name, trust, town, head, letterhead, staff, tutors)


def trust_letterhead(trust: str, seed: int) -> str:
    rnd = random.Random(seed)
    town = rnd.choice(TOWNS)
    return (
        f"{trust}\nCentral Office, {rnd.choice(STREETS)}, {town} {_postcode(rnd)}\n"
        f"Tel: {_phone(rnd)} | www.{_slug(trust)}.org.uk\nChief Executive: {_staff_name(rnd)}"
    )


def family_voice(seed: int) -> tuple[Family, random.Random]:
    """A family drawn from its seed, and the generator its letters continue from."""
    rnd = random.Random(seed)
    surname = rnd.choice(SURNAMES)
    mother = rnd.random() < 0.75
    first = rnd.choice(MOTHER_NAMES if mother else FATHER_NAMES)
    title = rnd.choice(("Mrs", "Ms", "Miss")) if mother else "Mr"
    plural = rnd.random() < 0.3
    if plural:
        other = rnd.choice(FATHER_NAMES if mother else MOTHER_NAMES)
        signature = rnd.choice(
            (f"{first} and {other} {surname}", f"{title} {first} {surname} and {other} {surname}")
        )
    else:
        role = "Mum" if mother else "Dad"
        signature = rnd.choice(
            (
                f"{first} {surname}",
                f"{title} {first} {surname}",
                f"{title} {surname}",
                f"{first} {surname} ({role})",
            )
        )
    address = f"{rnd.randint(1, 180)} {rnd.choice(STREETS)}\n{rnd.choice(TOWNS)}\n{_postcode(rnd)}"
    hobbies = tuple(rnd.sample(HOBBIES, 2))
    author = rnd.choice(
        (f"{first} {surname}", f"{first} {surname}", first.lower(), *PARENT_AUTHORS)
    )
    family = Family(
        surname=surname,
        signature=signature,
        address=address,
        phone=_phone(rnd),
        plural=plural,
        helper=rnd.choice(HELPERS_PLURAL if plural else HELPERS),
        hobbies=hobbies,
        author=author,
        rsid=f"00{rnd.randrange(16**6):06X}",
        application=rnd.choice(WORD_APPS),
        producer=rnd.choice(PDF_PRODUCERS),
        date_style=rnd.randrange(DATE_STYLES),
    )
    return family, rnd


# --------------------------------------------------------------------------- letter context


def _year_label(year_group: str) -> str:
    if year_group == "R":
        return "Reception"
    if year_group in ("N1", "N2"):
        return "Nursery"
    return f"Year {year_group}"


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def letter_context(
    children: list[dict],
    family: Family,
    school: SchoolProfile,
    exit_date: dt.date,
    letter_date: dt.date,
    date_style: int,
    plural_voice: bool,
) -> dict[str, str]:
    """Every {slot} a letter can name: the children, the parent's voice, dates, school."""
    one = len(children) == 1
    names = _and_list([c["first_name"] for c in children])
    female = children[0]["female"]
    if one:
        he, him, his, himself = (
            ("she", "her", "her", "herself") if female else ("he", "him", "his", "himself")
        )
    else:
        he, him, his, himself = "they", "them", "their", "themselves"
    years = [c["year_group"] for c in children]
    number = YEAR_NUMBER.get(years[0], 7)
    year = _year_label(years[0]) if one else "Years " + _and_list([y for y in dict.fromkeys(years)])
    ctx = {
        "child": names,
        "child_full": f"{names} {family.surname}",
        "child_noun": "child" if one else "children",
        "son": ("daughter" if female else "son") if one else "children",
        "he": he,
        "him": him,
        "his": his,
        "himself": himself,
        "is": "is" if one else "are",
        "has": "has" if one else "have",
        "was": "was" if one else "were",
        "does": "does" if one else "do",
        "s": "s" if one else "",
        "names_of": f"{names}'s name has" if one else f"{names}'s names have",
        "names": "name" if one else "names",
        "dob_label": "date of birth" if one else "dates of birth",
        "dob_label_caps": "Date of birth" if one else "Dates of birth",
        "partner": family.helper,
        "year": year,
        "yearnum": str(max(number, 1)),
        "nextyear": str(max(number, 0) + 1),
        "dob": _and_list([format_date(c["dob"], date_style) for c in children]),
        "upn": children[0]["pupil_id"],
        "school": school.name,
        "head": school.head,
        "town": school.town,
        "exit": format_date(exit_date, date_style),
        "date": format_date(letter_date, date_style),
        "parent": family.signature,
        "phone": family.phone,
        "address_block": family.address,
        "hobby": family.hobbies[0],
        "hobby2": family.hobbies[1],
    }
    voice = (
        ("we", "our", "us", "are", "ourselves")
        if plural_voice
        else ("I", "my", "me", "am", "myself")
    )
    ctx.update(zip(("I", "my", "me", "am", "myself"), voice, strict=True))
    return ctx


# --------------------------------------------------------------------------- letter bodies


class _SentencePicker:
    """Draws sentences from a grammar without repeating one within a letter."""

    def __init__(self, rnd: random.Random, ctx: dict[str, str], grammar: Grammar) -> None:
        self.rnd, self.ctx, self.grammar, self.used = rnd, ctx, grammar, set()

    def one(self, symbol: str) -> str | None:
        options = [o for o in self.grammar[symbol] if o not in self.used]
        if not options:
            return None
        choice = options[int(self.rnd.random() * len(options))]
        self.used.add(choice)
        return _tidy(expand(choice, self.rnd, self.ctx, self.grammar))

    def count(self, symbol: str) -> int:
        return len(self.used.intersection(self.grammar[symbol]))

    def some(self, symbol: str, count: int) -> list[str]:
        return [s for s in (self.one(symbol) for _ in range(count)) if s]


def free_form_text(rnd: random.Random, ctx: dict[str, str]) -> str:
    """A parent's own letter: varied openings, reasons, plans and closings, 100-350 words."""
    pick = _SentencePicker(rnd, ctx, FREE_FORM)
    target = int(rnd.triangular(100, 350, 170))
    top: Paragraphs = []
    if rnd.random() < 0.45:
        top.append([ctx["address_block"]])
    if rnd.random() < 0.7:
        top.append([ctx["date"]])
    top.append(pick.some("salutation", 1))
    intro = pick.some("intro", 1) + (pick.some("details", 1) if rnd.random() < 0.5 else [])
    reasons = rnd.sample(REASON_SYMBOLS, 1 + (rnd.random() < 0.45))
    blocks = [pick.some(reason, rnd.randint(1, 3)) for reason in reasons]
    blocks.append(pick.some("plan", rnd.randint(1, 3)))
    for symbol, chance in (("personal", 0.5), ("legal", 0.45), ("request", 0.55)):
        if rnd.random() < chance:
            blocks.append(pick.some(symbol, rnd.randint(1, 2)))
    rnd.shuffle(blocks)
    body = [intro, *blocks, pick.some("closing", rnd.randint(1, 2))]
    _fit_length(rnd, pick, body, target, reasons)
    sign = [[f"{pick.one('signoff')}\n{ctx['parent']}"]]
    return _join(top + body + sign)


def _fit_length(
    rnd: random.Random, pick: _SentencePicker, body: Paragraphs, target: int, reasons: list[str]
) -> None:
    """Grow the letter towards `target` words (more reasons, plans, asides), or trim it."""
    spare = [r for r in REASON_SYMBOLS if r not in reasons]
    for _ in range(12):
        if _words(body) >= target:
            break
        if spare and rnd.random() < 0.35:
            reason = spare.pop(int(rnd.random() * len(spare)))
            body.insert(1 + int(rnd.random() * (len(body) - 1)), pick.some(reason, 2))
            reasons = [*reasons, reason]
            continue
        open_pools = [r for r in reasons if pick.count(r) < 4] + ["plan", "personal"]
        sentence = pick.one(rnd.choice(open_pools))
        if sentence:
            body[1 + int(rnd.random() * (len(body) - 2))].append(sentence)
    while _words(body) > target:
        middle = [p for p in body[1:-1] if p]
        if not middle or (len(middle) == 1 and len(middle[0]) == 1):
            break
        paragraph = rnd.choice(middle)
        paragraph.pop(int(rnd.random() * len(paragraph)))
    body[:] = [p for p in body if p]


EDIT_COUNT_WEIGHTS = (0.35, 0.40, 0.25)  # a copy gets 0, 1 or 2 of a template's edit kinds


def personalise(
    rnd: random.Random,
    template: LetterTemplate,
    ctx: dict[str, str],
    kinds: tuple[str, ...],
    remark_sentences: int = 1,
) -> str:
    """A family's copy of a template: details filled in, and at most two light edits.

    Edit kinds: drop (an optional sentence), add (a short parent sentence),
    remark (a paragraph of the parent's reasons), retype (small rewordings),
    fix_typo (correct one of the template's misspellings).
    """
    count = rnd.choices(range(len(EDIT_COUNT_WEIGHTS)), weights=EDIT_COUNT_WEIGHTS)[0]
    edits = set(rnd.sample(kinds, min(count, len(kinds))))
    paragraphs: Paragraphs = [[s for s, _ in p] for p in template.paragraphs]
    optional = [
        (i, s) for i, p in enumerate(template.paragraphs) for s, is_optional in p if is_optional
    ]
    if "drop" in edits and optional:
        index, sentence = rnd.choice(optional)
        paragraphs[index].remove(sentence)
    start, end = template.body
    if "add" in edits:
        paragraphs[start + int(rnd.random() * (end - start))].append(rnd.choice(PARENT_ADDITIONS))
    if "remark" in edits:
        pick = _SentencePicker(rnd, ctx, FREE_FORM)
        paragraphs.insert(
            end, pick.some(rnd.choice(REASON_SYMBOLS), rnd.randint(1, remark_sentences))
        )
    text = _join([[_tidy(expand(s, rnd, ctx, FREE_FORM)) for s in p] for p in paragraphs])
    if "retype" in edits:
        present = [edit for edit in RETYPE_EDITS if edit[0] in text]
        for old, new in rnd.sample(present, min(len(present), rnd.randint(1, 2))):
            text = text.replace(old, new, 1)
    if "fix_typo" in edits and template.typos:
        correct, typo = rnd.choice(template.typos)
        text = text.replace(typo, correct, 1)
    return text


def school_template(
    rnd: random.Random, template_id: str, org: str, letterhead: str
) -> LetterTemplate:
    """One school's (or trust's) pro-forma: its voice, its typos, its document metadata."""
    ctx = {"org": org}

    def say(symbol: str) -> str:
        return expand("{" + symbol + "}", rnd, ctx, SCHOOL_TEMPLATE)

    paragraphs: list[list[tuple[str, bool]]] = [[(say("st_addressee"), False)], [("{date}", False)]]
    if rnd.random() < 0.8:
        paragraphs.append([(say("st_subject"), False)])
    if rnd.random() < 0.6:
        paragraphs.append([(say("st_details"), False)])
    paragraphs.append([(say("st_salutation"), False)])
    start = len(paragraphs)
    advice = list(dict.fromkeys(say("st_advised") for _ in range(rnd.randint(2, 3))))
    middle = [(s, True) for s in advice]
    if rnd.random() < 0.7:
        middle.append((say("st_consequence"), True))
    if rnd.random() < 0.85:
        middle.append((say("st_voluntary"), False))
    rnd.shuffle(middle)
    paragraphs += [[(say("st_meeting"), False), (say("st_responsibility"), False)], middle]
    if rnd.random() < 0.6:
        points = rnd.sample(SCHOOL_TEMPLATE["st_advice"], 3)
        bullets = "\n".join(f"- {expand(point, rnd, ctx, SCHOOL_TEMPLATE)}" for point in points)
        paragraphs.append([(f"{say('st_understand')}\n{bullets}", False)])
    paragraphs.append([(say("st_request"), False), (say("st_closing"), True)])
    end = len(paragraphs)
    paragraphs += [[(say("st_signoff"), False)], [(say("st_signblock"), False)]]
    office = say("st_office")
    if office:
        paragraphs.append([(office, False)])
    paragraphs, typos = _plant_typos(rnd, paragraphs)
    surname, initial = rnd.choice(STAFF_SURNAMES), rnd.choice(_LETTERS)
    created = dt.datetime(
        2023, rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(8, 17), rnd.randint(0, 59)
    )
    metadata = {
        "author": rnd.choice((f"{initial}. {surname}", f"{initial.lower()}{surname.lower()}")),
        "company": org,
        "template": rnd.choice(DOCX_TEMPLATE_NAMES),
        "rsid_root": f"00{rnd.randrange(16**6):06X}",
        "application": "Microsoft Office Word",
        "producer": rnd.choice(PDF_PRODUCERS[:2]),
        "title": rnd.choice(("EHE letter", "Elective Home Education", "Letter", "")),
        "created": created,
    }
    frozen = tuple(tuple(p) for p in paragraphs if p)
    return LetterTemplate(
        template_id, frozen, (start, end), letterhead, metadata, rnd.randrange(DATE_STYLES), typos
    )


def _plant_typos(
    rnd: random.Random, paragraphs: list[list[tuple[str, bool]]]
) -> tuple[list[list[tuple[str, bool]]], tuple[tuple[str, str], ...]]:
    """Misspell one or two words the template contains, once each, as its author did."""
    text = " ".join(s for p in paragraphs for s, _ in p)
    present = [pair for pair in TEMPLATE_TYPOS if re.search(rf"\b{pair[0]}\b", text)]
    chosen = rnd.sample(present, min(len(present), 1 + (rnd.random() < 0.6)))
    for correct, typo in chosen:
        done = False
        for p in paragraphs:
            for i, (sentence, optional) in enumerate(p):
                if not done and re.search(rf"\b{correct}\b", sentence):
                    p[i] = (re.sub(rf"\b{correct}\b", typo, sentence, count=1), optional)
                    done = True
    return paragraphs, tuple(chosen)


def public_template(index: int) -> LetterTemplate:
    """Public sample letter `index` (0-based); parents add remarks before the sign-off."""
    source = PUBLIC_TEMPLATES[index]
    paragraphs = tuple(tuple((s.lstrip("?"), s.startswith("?")) for s in p) for p in source)
    signoff = next(
        i for i, p in enumerate(source) if p[0].startswith(("Yours", "Best", "Signed", "Kind"))
    )
    return LetterTemplate(f"public-{index + 1}", paragraphs, (signoff - 2, signoff))


# --------------------------------------------------------------------------- planning (vectorised)


def _children(ehe_exits: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One row per EHE exit with a household key, a first name, sex and date of birth."""
    exits = (
        ehe_exits.select(
            pl.col("pupil_id").cast(pl.String),
            pl.col("urn").cast(pl.String),
            pl.col("family_id").cast(pl.String),
            pl.col("exit_date").cast(pl.Date),
            pl.col("year_group").cast(pl.String),
        )
        .with_columns(
            family_key=pl.coalesce(
                "family_id", pl.lit("solo:") + pl.col("pupil_id") + "@" + pl.col("urn")
            )
        )
        .sort("family_key", "pupil_id", "urn", "exit_date")
        .with_row_index("row")
    )
    n = exits.height
    female = rng.random(n) < 0.5
    draw = rng.integers(0, 1 << 30, n)
    girls, boys = np.array(GIRL_NAMES), np.array(BOY_NAMES)
    first = np.where(female, girls[draw % len(girls)], boys[draw % len(boys)])
    second = np.where(female, girls[(draw + 7) % len(girls)], boys[(draw + 7) % len(boys)])
    academic_year = pl.col("exit_date").dt.year() - (pl.col("exit_date").dt.month() < 9).cast(
        pl.Int32
    )
    year_number = pl.col("year_group").replace_strict(YEAR_NUMBER, default=7, return_dtype=pl.Int32)
    return exits.with_columns(
        female=pl.Series(female),
        first_name=pl.Series(first),
        alt_name=pl.Series(second),
        dob=pl.date(academic_year - year_number - 5, 9, 1)
        + pl.duration(days=pl.Series(rng.integers(0, 365, n))),
    ).with_columns(  # siblings never share a first name
        first_name=pl.when(pl.int_range(pl.len()).over("family_key", "first_name") > 0)
        .then("alt_name")
        .otherwise("first_name")
    )


def _kinds(
    children: pl.DataFrame, rng: np.random.Generator, template_urns: list[str]
) -> pl.DataFrame:
    """Each exit's letter kind (null: no letter) and the key of the letter that covers it."""
    families = children.select("family_key").unique().sort("family_key")
    nf = families.height
    families = families.with_columns(
        u_letter=pl.Series(rng.random(nf)),
        u_public=pl.Series(rng.random(nf)),
        public_index=pl.Series(rng.choice(len(PUBLIC_TEMPLATES), nf, p=PUBLIC_TEMPLATE_WEIGHTS)),
        joint=pl.Series(rng.random(nf) < P_JOINT_SIBLING_LETTER),
        family_seed=pl.Series(rng.integers(0, 1 << 62, nf)),
    )
    units = children.select("family_key", "urn").unique().sort("family_key", "urn")
    units = units.with_columns(u_template=pl.Series(rng.random(units.height)))
    planned = children.join(families, on="family_key").join(units, on=["family_key", "urn"])
    handed = pl.col("urn").is_in(template_urns) & (pl.col("u_template") < P_SCHOOL_TEMPLATE)
    first = (
        pl.when(handed)
        .then(pl.lit("school_template"))
        .when(pl.col("u_letter") >= P_LETTER)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit("own"))
    )
    planned = planned.with_columns(kind=first).with_columns(
        own_letters=(pl.col("kind") == "own").sum().over("family_key"),
        span=(pl.col("exit_date").max() - pl.col("exit_date").min()).over("family_key"),
    )
    own_kind = (
        pl.when(pl.col("own_letters") >= 2)
        .then(pl.lit("sibling"))
        .when(pl.col("u_public") < P_PUBLIC_TEMPLATE)
        .then(pl.lit("public_template"))
        .otherwise(pl.lit("free_form"))
    )
    joint = (
        (pl.col("kind") == "sibling")
        & pl.col("joint")
        & (pl.col("span") <= pl.duration(days=JOINT_LETTER_MAX_SPAN_DAYS))
    )
    return (
        planned.with_columns(kind=pl.when(pl.col("kind") == "own").then(own_kind).otherwise("kind"))
        .with_columns(
            letter_key=pl.when(joint)
            .then(pl.col("family_key") + "|" + pl.col("urn"))
            .otherwise(pl.lit("row:") + pl.col("row").cast(pl.String)),
            sibling_public=pl.col("u_public") < P_PUBLIC_TEMPLATE,
        )
        .filter(pl.col("kind").is_not_null())
    )


def _letters(planned: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One row per letter: id, kind, children covered, dates, format and file name."""
    letters = (
        planned.group_by("letter_key")
        .agg(
            pl.col(
                "urn",
                "family_key",
                "family_id",
                "kind",
                "public_index",
                "family_seed",
                "sibling_public",
            ).first(),
            first_exit=pl.col("exit_date").min(),
            children=pl.struct("pupil_id", "first_name", "female", "dob", "year_group").sort_by(
                "row"
            ),
        )
        .sort("first_exit", "urn", "letter_key")
    )
    n = letters.height
    width = max(5, len(str(n)))
    received = pl.col("first_exit") + pl.duration(days=pl.Series(rng.integers(-5, 3, n)))
    letters = letters.with_columns(
        letter_id=pl.format("L{}", pl.int_range(1, n + 1).cast(pl.String).str.zfill(width)),
        received_date=received,
        write_lag=pl.Series(rng.integers(0, 4, n)),
        fmt=pl.Series(np.array(FORMATS)[rng.choice(len(FORMATS), n, p=FORMAT_SHARES)]),
        subfolder=pl.Series(rng.random(n) < P_SUBFOLDER),
        letter_seed=pl.Series(rng.integers(0, 1 << 62, n)),
    )
    return _mark_scanned_letter(letters, rng)


def _mark_scanned_letter(letters: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One parent's letter arrives as a scan with no text layer ("needs OCR")."""
    for kind in ("free_form", "public_template", "sibling"):
        candidates = np.flatnonzero((letters["kind"] == kind).to_numpy())
        if candidates.size:
            chosen = int(candidates[rng.integers(0, candidates.size)])
            is_chosen = pl.int_range(pl.len()) == chosen
            return letters.with_columns(
                kind=pl.when(is_chosen).then(pl.lit(NO_TEXT_KIND)).otherwise("kind"),
                fmt=pl.when(is_chosen).then(pl.lit("pdf")).otherwise("fmt"),
            )
    return letters


def _with_files(letters: pl.DataFrame) -> pl.DataFrame:
    name = pl.col("letter_id") + "." + pl.col("fmt")
    folder = pl.col("received_date").dt.year().cast(pl.String) + "/"
    return letters.with_columns(
        file=pl.when(pl.col("subfolder")).then(folder + name).otherwise(name)
    )


# --------------------------------------------------------------------------- the public entry point


def _school_profiles(
    schools: pl.DataFrame, urns: list[str], rng: np.random.Generator
) -> dict[str, SchoolProfile]:
    known = {
        row["urn"]: row
        for row in schools.select(
            pl.col("urn").cast(pl.String),
            pl.col("name").cast(pl.String),
            pl.col("trust").cast(pl.String),
        ).iter_rows(named=True)
    }
    every = sorted(set(known) | set(urns))
    seeds = rng.integers(0, 1 << 62, len(every))
    return {
        urn: school_profile(
            urn, known.get(urn, {}).get("name"), known.get(urn, {}).get("trust"), int(seed)
        )
        for urn, seed in zip(every, seeds, strict=True)
    }


def _templates(
    profiles: dict[str, SchoolProfile],
    template_schools: list[str],
    trust_template_schools: list[str],
    rng: np.random.Generator,
) -> dict[str, LetterTemplate]:
    """Template per template school; the trust's two schools share one."""
    templates: dict[str, LetterTemplate] = {}
    trust_urns = sorted(u for u in trust_template_schools if u in profiles)
    own_urns = sorted(u for u in set(template_schools) - set(trust_urns) if u in profiles)
    seeds = rng.integers(0, 1 << 62, len(own_urns) + 2)
    if trust_urns:
        first = profiles[trust_urns[0]]
        trust = first.trust or f"{first.town} Learning Trust"
        letterhead = trust_letterhead(trust, int(seeds[-1]))
        shared = school_template(
            random.Random(int(seeds[-2])), f"trust-{_slug(trust)}", trust, letterhead
        )
        templates.update(dict.fromkeys(trust_urns, shared))
    for urn, seed in zip(own_urns, seeds, strict=False):
        profile = profiles[urn]
        templates[urn] = school_template(
            random.Random(int(seed)), f"school-{urn}", profile.name, profile.letterhead
        )
    return templates


def write_letters(
    out: Path,
    ehe_exits: pl.DataFrame,
    schools: pl.DataFrame,
    rng: np.random.Generator,
    template_schools: list[str],
    trust_template_schools: list[str],
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Write parents' letters for ~85% of EHE exits into out/letters/, with known answers.

    ehe_exits: pupil_id, urn, family_id, exit_date (Date), year_group (str).
    schools: urn, name, trust (may be null), phase. template_schools: URNs whose
    families are mostly handed a school-authored letter; trust_template_schools:
    two URNs of one trust sharing the trust's letter.
    Returns (manifest, exit_letters, truth): manifest has the letters.csv columns
    (letter_id, file relative to out/letters/, urn, pupil_id [null for a letter
    covering several children], family_id, received_date); exit_letters links
    (pupil_id, urn) to letter_id; truth maps letter_id to kind, template_id,
    family_id and urn. Kinds are LETTER_KINDS plus one NO_TEXT_KIND scan.
    """
    root = out / "letters"
    root.mkdir(parents=True, exist_ok=True)
    children = _children(ehe_exits, rng)
    profiles = _school_profiles(schools, children["urn"].unique().to_list(), rng)
    templates = _templates(profiles, list(template_schools), list(trust_template_schools), rng)
    planned = _kinds(children, rng, sorted(templates))
    letters = _with_files(_letters(planned, rng))
    truth: dict[str, dict] = {}
    for letter in letters.iter_rows(named=True):
        template_id, text, header, metadata = render_letter(letter, profiles, templates)
        scanned = letter["kind"] == NO_TEXT_KIND
        path = root / letter["file"]
        write_letter_file(
            path, text, letter["fmt"], header=header, metadata=metadata, text_layer=not scanned
        )
        truth[letter["letter_id"]] = {
            "kind": letter["kind"],
            "template_id": template_id,
            "family_id": letter["family_id"],
            "urn": letter["urn"],
        }
    manifest = letters.select(
        "letter_id",
        "file",
        "urn",
        pupil_id=pl.when(pl.col("children").list.len() == 1)
        .then(pl.col("children").list.first().struct.field("pupil_id"))
        .otherwise(pl.lit(None, pl.String)),
        family_id="family_id",
        received_date="received_date",
    )
    exit_letters = (
        letters.select(
            "letter_id",
            "urn",
            pupil_id=pl.col("children").list.eval(pl.element().struct.field("pupil_id")),
        )
        .explode("pupil_id")
        .select("pupil_id", "urn", "letter_id")
    )
    return manifest, exit_letters, truth


# --------------------------------------------------------------------------- rendering one letter


def _letter_moment(rnd: random.Random, day: dt.date) -> dt.datetime:
    return dt.datetime(
        day.year, day.month, day.day, rnd.randint(7, 22), rnd.randint(0, 59), rnd.randint(0, 59)
    )


def render_letter(
    letter: dict, profiles: dict[str, SchoolProfile], templates: dict[str, LetterTemplate]
) -> tuple[str | None, str, str | None, dict]:
    """(template_id, text, docx/pdf header, file metadata) for one planned letter."""
    school = profiles[letter["urn"]]
    letter_date = letter["received_date"] - dt.timedelta(days=letter["write_lag"])
    family, family_rnd = family_voice(letter["family_seed"])
    own = random.Random(letter["letter_seed"])
    kind = letter["kind"]
    if kind == "school_template":
        return _school_copy(letter, templates[letter["urn"]], school, family, own, letter_date)
    use_public = kind == "public_template" or (kind == "sibling" and letter["sibling_public"])
    plural_voice = family.plural and not use_public
    ctx = letter_context(
        letter["children"],
        family,
        school,
        letter["first_exit"],
        letter_date,
        family.date_style,
        plural_voice,
    )
    if use_public:
        template = public_template(letter["public_index"])
        text = personalise(
            family_rnd, template, ctx, ("drop", "remark", "retype"), remark_sentences=2
        )
        template_id: str | None = template.template_id
    else:
        text, template_id = free_form_text(family_rnd, ctx), None
    moment = _letter_moment(own, letter_date)
    metadata = {
        "author": family.author,
        "template": "Normal.dotm",
        "rsid_root": family.rsid,
        "application": family.application,
        "producer": family.producer,
        "created": moment,
        "modified": moment + dt.timedelta(minutes=own.randint(3, 90)),
    }
    return template_id, text, None, metadata


def _school_copy(
    letter: dict,
    template: LetterTemplate,
    school: SchoolProfile,
    family: Family,
    rnd: random.Random,
    letter_date: dt.date,
) -> tuple[str, str, str | None, dict]:
    """A family's filled-in copy of the school's letter, with the school's metadata."""
    style = template.date_style if rnd.random() < 0.8 else family.date_style
    ctx = letter_context(
        letter["children"], family, school, letter["first_exit"], letter_date, style, False
    )
    child = letter["children"][0]
    staff_name, role = school.staff[int(rnd.random() * len(school.staff))]
    year_code = "N" if child["year_group"] in ("N1", "N2") else child["year_group"]
    ctx |= {
        "staff": rnd.choice((staff_name, f"{staff_name} ({role})", f"{staff_name}, {role},")),
        "meeting_date": format_date(letter_date - dt.timedelta(days=rnd.randint(1, 9)), style),
        "tutor": year_code + rnd.choice(school.tutors),
    }
    text = personalise(rnd, template, ctx, ("drop", "add", "remark", "retype", "fix_typo"))
    moment = _letter_moment(rnd, letter_date)
    metadata = dict(template.metadata)
    metadata |= {"modified": moment, "revision": rnd.randint(2, 9)}
    if rnd.random() < 0.3:
        metadata["last_modified_by"] = family.author or "User"
    header = template.header
    if letter["fmt"] != "docx" and rnd.random() < 0.1:
        header = None  # a parent who retyped it without the letterhead
    return template.template_id, text, header, metadata

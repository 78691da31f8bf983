"""Cauda equina red flags written as text: what must match (an asserted sign) and what must not (a
sign that is negated, asked about, or only mentioned in safety-netting advice).

Run through the loaded knowledge, as fact extraction and the relevance filter see it: the text
patterns of cards/valuesets and the NegEx-style context check in cds_service.knowledge.valuesets.
"""

from __future__ import annotations

import time

import pytest

from cds_service.config import DEFAULT_CARDS_DIR
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.valuesets import ValueSetIndex, is_asserted

SADDLE = "saddle-anaesthesia"
RETENTION = "urinary-retention"
FECAL = "fecal-incontinence"
NEUROGENIC = "neurogenic-bladder"
LEG_CROSSING = "habitual-leg-crossing"
RED_FLAG_SETS = (SADDLE, RETENTION, FECAL, NEUROGENIC, "cauda-equina-syndrome")


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(DEFAULT_CARDS_DIR)


@pytest.fixture(scope="module")
def red_flags(knowledge):
    return ValueSetIndex(knowledge.valueset(v) for v in RED_FLAG_SETS)


# ------------------------------------------------------------------------ asserted: must match

ASSERTED = [
    # red team (clinical), missed before
    (SADDLE, "Reduced perianal sensation to pinprick"),
    (SADDLE, "Decreased sensation in saddle area"),
    (SADDLE, "Decreased sensation in saddle area, new urinary hesitancy"),
    (RETENTION, "Urinary retention"),
    (RETENTION, "Retention of urine"),
    (RETENTION, "Unable to void"),
    (RETENTION, "Acute urinary retention"),
    (FECAL, "Faecal incontinence"),
    (FECAL, "Fecal incontinence"),
    (FECAL, "Bowel incontinence"),
    (NEUROGENIC, "Neurogenic bladder"),
    # saddle anaesthesia: region + abnormality, both spellings
    (SADDLE, "Saddle anaesthesia"),
    (SADDLE, "Saddle anesthesia"),
    (SADDLE, "New saddle anaesthesia today"),
    (SADDLE, "Saddle area numbness"),
    (SADDLE, "Saddle hypoaesthesia"),
    (SADDLE, "Saddle hypoesthesia on the left"),
    (SADDLE, "Perineal numbness"),
    (SADDLE, "Perianal paraesthesia"),
    (SADDLE, "Peri-anal paresthesia"),
    (SADDLE, "Perineal hypesthesia"),
    (SADDLE, "S2-S4 paraesthesia"),
    (SADDLE, "Saddle sensory loss"),
    # an examination result
    (SADDLE, "Perianal sensation: reduced"),
    (SADDLE, "Saddle sensation: absent"),
    (SADDLE, "Perineal sensation is decreased to light touch"),
    (SADDLE, "Altered saddle sensation bilaterally"),
    (SADDLE, "Absent perianal sensation"),
    (SADDLE, "Reduced perianal sensation, absent anal wink"),
    (SADDLE, "No sensation in the saddle area"),
    (SADDLE, "Loss of sensation in perineum"),
    (SADDLE, "Reduced genital sensation"),
    (SADDLE, "Reduced sensation to pinprick over the perianal region"),
    (SADDLE, "Numbness around the anus and perineum"),
    (SADDLE, "Paresthesia in the perianal region"),
    # the patient's words
    (SADDLE, "Cannot feel toilet paper when wiping"),
    (SADDLE, "Pt c/o saddle numbness"),
    (SADDLE, "Feels numb when wiping"),
    # urinary retention
    (RETENTION, "Retention of urine, unspecified"),
    (RETENTION, "Drug induced retention of urine"),
    (RETENTION, "Painless retention with overflow"),
    (RETENTION, "Bladder scan 950 ml, patient in retention, catheterised"),
    (RETENTION, "Pt not able to pass urine since last night, bladder scan 900 ml"),
    (RETENTION, "Cannot pass urine"),
    (RETENTION, "No longer able to pass urine"),
    (RETENTION, "Unable to empty her bladder"),
    (RETENTION, "Urinary retention requiring catheter, no fever"),
    (RETENTION, "Urinary retention - no improvement after catheter"),
    (RETENTION, "Urinary retention, nil else"),
    (RETENTION, "Patient should be catheterised for urinary retention"),
    # faecal incontinence
    (FECAL, "Incontinence of feces"),
    (FECAL, "Full incontinence of feces"),
    (FECAL, "Incontinent of faeces overnight"),
    (FECAL, "Loss of bowel control"),
    (FECAL, "Bladder and bowel incontinence"),
    (FECAL, "Double incontinence"),
    # neurogenic bladder
    (NEUROGENIC, "Neuromuscular dysfunction of bladder, unspecified"),
    (NEUROGENIC, "Neuropathic bladder"),
    (NEUROGENIC, "Flaccid bladder on urodynamics"),
    (NEUROGENIC, "Detrusor areflexia"),
    # a negation or advice earlier that no longer governs the finding
    (RETENTION, "Denies fever but reports urinary retention"),
    (SADDLE, "No fever, new saddle anaesthesia"),
    (RETENTION, "Denies fever, chills; urinary retention since yesterday"),
    (SADDLE, "No back pain last week. Now saddle anaesthesia."),
    (RETENTION, "Negative for fever, positive for urinary retention"),
    (SADDLE, "No improvement in saddle numbness"),
    (RETENTION, "Fever: no, urinary retention: yes"),
    (SADDLE, "Saddle anaesthesia, absent ankle reflexes"),
    (RETENTION, "?CES with urinary retention and saddle anaesthesia"),
    (SADDLE, "?CES with urinary retention and saddle anaesthesia"),
    (RETENTION, "Discussed with spinal team re new urinary retention"),
    (RETENTION, "High risk of CES given new urinary retention"),
    (SADDLE, "Given saddle anaesthesia, urgent MRI requested"),
    (SADDLE, "Advised physio. New saddle anaesthesia today"),
    (SADDLE, "Advised physio, o/e reduced perianal sensation"),
    (SADDLE, "No saddle anaesthesia last week; saddle anaesthesia today"),
    (SADDLE, "Patient has no fever and now has saddle anaesthesia"),
]


@pytest.mark.parametrize(("vs_id", "text"), ASSERTED)
def test_asserted_sign_matches(knowledge, red_flags, vs_id: str, text: str):
    vs = knowledge.valueset(vs_id)
    assert vs.matches_text(text)
    # the same text as a free-text Condition.code and as the display of a local code
    assert vs.matches_concept({"text": text})
    assert vs.matches_concept({"coding": [{"system": "urn:oid:1.2.3.4", "code": "77",
                                           "display": text}]})
    assert red_flags.matches_text(text)  # the relevance filter keeps it


# --------------------------------------------------------------- not asserted: must not match

NOT_ASSERTED = [
    # red team (clinical): safety-netting, negation lists, answers after the finding
    "advice given re saddle anaesthesia; attend ED if it develops",
    "CES safety-net advice given re saddle anaesthesia; attend ED if it develops.",
    "Denies fever, urinary retention, saddle anaesthesia.",
    "Denies fever, bowel or bladder incontinence, saddle anaesthesia",
    "Saddle anaesthesia: absent",
    "Saddle anaesthesia - pt denies",
    "no saddle anaesthesia or urinary retention",
    # pre-negation across lists
    "Neither saddle anaesthesia nor urinary retention",
    "Negative for saddle anaesthesia, bladder or bowel dysfunction, urinary retention",
    "No bladder or bowel incontinence, no saddle anaesthesia",
    "Pt denies any urinary retention, faecal incontinence or saddle numbness",
    "Absence of saddle anaesthesia",
    "Free of urinary retention",
    "Ruled out urinary retention",
    "r/o neurogenic bladder",
    "Without saddle anaesthesia",
    "Nil saddle anaesthesia, nil retention",
    "Patient has no saddle anaesthesia",
    "No perianal sensory loss",
    "No sensation loss in the saddle area",
    "Saddle sensation intact, no urinary retention",
    # hypothetical, safety-netting, advice
    "Return to ED if new saddle anaesthesia or urinary retention",
    "Should saddle anaesthesia develop, attend ED",
    "Advised to report any new saddle numbness or urinary retention immediately",
    "Safety netting: advised to return if unable to pass urine",
    "Warning signs explained: saddle anaesthesia, urinary retention, faecal incontinence",
    "Given CES leaflet; explained symptoms of saddle anaesthesia",
    "Discussed red flags re saddle anaesthesia",
    "Regarding urinary retention: see urology letter",
    "Watch for urinary retention after the spinal",
    "Monitor for urinary retention",
    "At risk of urinary retention",
    "In case of urinary retention, attend",
    "?saddle anaesthesia",
    "? urinary retention",
    # post-negation: a checklist answer after the finding (or after the list it ends)
    "Saddle anaesthesia: No",
    "Saddle anaesthesia = no",
    "Urinary retention? No",
    "Saddle anaesthesia (denied)",
    "Urinary retention: none",
    "Urinary retention was ruled out",
    "Urinary retention resolved",
    "Saddle anaesthesia: not present",
    "Retention of urine - negative",
    "bladder or bowel incontinence: denies",
    "Saddle anaesthesia, urinary retention, faecal incontinence: all negative",
    "Saddle anaesthesia/urinary retention: nil",
    # no sign at all
    "Perianal sensation intact",
    "Saddle sensation normal",
    "Saddle block anaesthesia for delivery",
    "Perineal repair under local anaesthesia",
    "Post-void residual volume",
    "Fluid retention",
    "Urinary urgency",
]


@pytest.mark.parametrize("text", NOT_ASSERTED)
def test_not_asserted_sign_does_not_match(knowledge, red_flags, text: str):
    for vs_id in RED_FLAG_SETS:
        vs = knowledge.valueset(vs_id)
        assert not vs.matches_text(text), vs_id
        assert not vs.matches_concept({"text": text}), vs_id
    assert not red_flags.matches_text(text)


# ------------------------------------------------------------------ habitual leg crossing kept


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient crosses her legs", True),
        ("Patient crosses legs for hours at work", True),
        ("Habitual leg crossing", True),
        ("Sits with legs crossed, no back pain", True),
        ("denies leg crossing", False),
        ("Does not cross her legs", False),
        ("No leg crossing, no weight loss", False),
    ],
)
def test_leg_crossing(knowledge, text: str, expected: bool):
    assert knowledge.valueset(LEG_CROSSING).matches_text(text) is expected


# ------------------------------------------------------------------------ the context check


def _span(text: str, phrase: str) -> tuple[int, int]:
    start = text.index(phrase)
    return start, start + len(phrase)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("saddle anaesthesia", True),
        ("No saddle anaesthesia", False),
        ("Denies fever, chills, night sweats, saddle anaesthesia", False),  # across commas
        ("Denies fever. Saddle anaesthesia", True),  # a new sentence
        ("Denies fever; saddle anaesthesia", True),
        ("Denies fever\nSaddle anaesthesia", True),
        ("Denies fever, however saddle anaesthesia", True),  # termination
        ("Denies fever apart from saddle anaesthesia", True),
        ("Denies fever, complains of saddle anaesthesia", True),
        ("Denies fever, presents with saddle anaesthesia", True),
        ("Temp 37.5 no saddle anaesthesia", False),  # a decimal point ends no sentence
        ("Attend if saddle anaesthesia", False),
        ("Return if any new saddle anaesthesia", False),  # "new" does not end advice
        ("Discussed re new saddle anaesthesia", True),  # ... but ends a discussion
        ("Any bladder problems? saddle anaesthesia", True),  # a question mark ending a question
        ("?saddle anaesthesia", False),
        ("saddle anaesthesia: absent", False),
        ("saddle anaesthesia - absent bilaterally", False),
        ("saddle anaesthesia - absent reflexes", True),  # "absent" qualifies the next finding
        ("saddle anaesthesia: no change", True),
        ("saddle anaesthesia, no fever", True),  # "no" after a comma starts another item
    ],
)
def test_is_asserted(text: str, expected: bool):
    assert is_asserted(text, *_span(text.lower(), "saddle anaesthesia")) is expected


def test_every_occurrence_is_tried(knowledge):
    vs = knowledge.valueset(SADDLE)
    assert vs.matches_text("No saddle anaesthesia on Monday. Saddle anaesthesia on Tuesday.")
    assert not vs.matches_text("No saddle anaesthesia on Monday, nor saddle anaesthesia today.")


def test_local_code_with_display_is_a_red_flag(knowledge):
    """Encounter diagnoses with only a local code: the display is read (red team s03, s03b)."""
    retention = {"coding": [{"system": "urn:oid:1.2.840.114350", "code": "12345",
                             "display": "Acute urinary retention"}]}
    assert knowledge.valueset(RETENTION).matches_concept(retention)
    # SNOMED CT 398064005 is not in the value set (not verified in the research file): the
    # display carries the record.
    bladder = {"coding": [{"system": "http://snomed.info/sct", "code": "398064005",
                           "display": "Neurogenic bladder"}]}
    assert knowledge.valueset(NEUROGENIC).matches_concept(bladder)
    assert not knowledge.valueset(NEUROGENIC).matches_concept(
        {"coding": [{"system": "http://snomed.info/sct", "code": "398064005"}]}
    )


def test_long_adversarial_text_is_fast(knowledge, red_flags):
    """No catastrophic backtracking: long notes full of list separators and triggers."""
    texts = [
        "Denies " + ", ".join(["fever"] * 400) + " and saddle anaesthesia",
        "saddle anaesthesia" + ", and or / a" * 300 + ": none",
        "reduced sensation " * 300 + "in the saddle area",
        ("no " * 500) + "urinary retention" + (" - " * 500),
    ]
    start = time.perf_counter()
    for text in texts:
        red_flags.matches_text(text)
        for vs_id in RED_FLAG_SETS:
            knowledge.valueset(vs_id).matches_text(text)
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------ bounded reading (every match of a long text)
def test_the_look_back_is_a_sentence_not_the_whole_text(knowledge):
    """Each match looks back a bounded window: a negation 400 characters earlier, with no
    sentence end between, no longer reaches it (before, every match re-read the whole text, so a
    text of many negated mentions took quadratic time)."""
    saddle = knowledge.valuesets["saddle-anaesthesia"]
    assert not saddle.matches_text("no " + "x" * 200 + " saddle anaesthesia")
    assert saddle.matches_text("no " + "x" * 400 + " saddle anaesthesia")


def test_only_the_start_of_a_very_long_text_is_read(knowledge):
    from cds_service.knowledge.valuesets import MAX_SCANNED_TEXT

    saddle = knowledge.valuesets["saddle-anaesthesia"]
    filler = "Routine review. " * (MAX_SCANNED_TEXT // 16)
    assert saddle.matches_text("Saddle anaesthesia today. " + filler)
    assert not saddle.matches_text(filler + "Saddle anaesthesia today.")


def test_no_text_makes_the_assertion_check_backtrack_for_ever(knowledge):
    """A termination guard, not a performance target: these texts made the labelled-list branch
    of the post-negation check backtrack exponentially (75 s for 49 characters, a killed worker
    for a 67-character code text). Each must now finish at once."""
    import random
    import time

    from cds_service.knowledge.valuesets import is_asserted

    saddle = knowledge.valuesets["saddle-anaesthesia"]
    rng = random.Random(7)
    tokens = [" ", "  ", ",", " ,", "and", "or", " - ", ":", "no", "x", "/", "&", "retention"]
    texts = ["saddle anaesthesia" + (" ," + " " * n) * 6 + "x" for n in range(2, 7)]
    texts += ["saddle anaesthesia" + "".join(rng.choice(tokens) for _ in range(60))
              for _ in range(300)]
    started = time.monotonic()
    for text in texts:
        is_asserted(text, 0, len("saddle anaesthesia"))
        saddle.matches_text(text)
    assert time.monotonic() - started < 10, "catastrophic backtracking is back"

"""Do-not-call lists in the dial decision: listed numbers are passed over, never dialed."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain import states
from shared.domain.call_settings import parse_call_settings
from shared.domain.decisions import DialStep, decide_dial, first_dialable_phone
from shared.domain.phones import numbered
from tests.unit.test_decisions import BATCH, MONDAY_NOON, WEEKDAYS_9_18, job

EXAMPLES = int(os.environ.get("OUTDIAL_PROPERTY_EXAMPLES", "250"))
NUMBERS = numbered("+5696200", 6)
A, B, C = NUMBERS[:3]


def contact(phones, **over):
    return job(contact={"phones": list(phones)}, **over)


def decide(j, listed, *, lang="en", settings_=WEEKDAYS_9_18):
    return decide_dial(j, lease_owner="tok", batch=BATCH, settings=settings_, settings_error=None, now=MONDAY_NOON,
                       listed=frozenset(listed), lang=lang)


def test_a_listed_first_number_is_passed_over_for_the_next():
    d = decide(contact([A, B, C]), {A})
    assert (d.step, d.phone_index, d.dnc_skipped) == (DialStep.PROCEED, 1, 1)
    d = decide(contact([A, B, C]), {A, B})
    assert (d.step, d.phone_index, d.dnc_skipped) == (DialStep.PROCEED, 2, 2)


def test_an_unlisted_contact_is_decided_as_before():
    d = decide(contact([A, B]), {C})
    assert (d.step, d.phone_index, d.dnc_skipped) == (DialStep.PROCEED, 0, 0)


def test_a_listed_later_number_is_not_counted_until_it_is_reached():
    d = decide(contact([A, B], phone_index=0), {B})
    assert (d.step, d.phone_index, d.dnc_skipped) == (DialStep.PROCEED, 0, 0)


def test_every_number_listed_fails_the_contact_for_good():
    d = decide(contact([A, B]), {A, B})
    assert d.step == DialStep.DO_NOT_CALL and d.dnc_skipped == 2
    assert d.reason.code == "do_not_call" and d.reason.text() == "do not call"
    assert decide(contact([A, B]), {A, B}, lang="es").reason.text("es") == "no llamar"


def test_listed_and_invalid_numbers_leave_nothing_to_call():
    d = decide(contact([A, B], invalid_phones=[1]), {A})
    assert d.step == DialStep.DO_NOT_CALL
    # every number invalid: the old reason, whatever the lists say
    assert decide(contact([A, B], invalid_phones=[0, 1]), {A}).step == DialStep.NO_PHONE


def test_the_rest_of_the_round_listed_ends_the_round():
    # the first number was dialed (phone_index moved on); the second was listed since
    d = decide(contact([A, B], phone_index=1, tries=0), {B})
    assert d.step == DialStep.DNC_ROUND_END and "do-not-call" in d.reason.text() and d.dnc_skipped == 1
    # that round was the last one allowed: the contact fails on max attempts
    d = decide(contact([A, B], phone_index=1, tries=3), {B})
    assert d.step == DialStep.MAX_ATTEMPTS


def test_the_next_round_starts_past_listed_numbers():
    d = decide(contact([A, B, C], phone_index=0, tries=1), {A})
    assert (d.step, d.phone_index) == (DialStep.PROCEED, 1)


def test_stale_and_paused_come_before_the_lists():
    assert decide(contact([A], status=states.DIALING), {A}).step == DialStep.STALE
    paused = decide_dial(contact([A]), lease_owner="tok", batch={**BATCH, "status": states.BATCH_PAUSED},
                         settings=WEEKDAYS_9_18, settings_error=None, now=MONDAY_NOON, listed=frozenset({A}))
    assert paused.step == DialStep.PAUSED


def test_outside_the_window_a_listed_number_is_still_passed_over():
    closed = parse_call_settings({"allowed_hours": {"start": "20:00", "end": "21:00"}, "timezone": "America/Santiago"})
    d = decide(contact([A, B]), {A}, settings_=closed)
    assert d.step == DialStep.OUTSIDE_WINDOW and d.dnc_skipped == 1


phone_lists = st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=5)


@settings(max_examples=EXAMPLES, deadline=None)
@given(phones=phone_lists, data=st.data())
def test_a_listed_number_is_never_chosen_and_a_dial_always_has_a_number(phones, data):
    n = len(phones)
    listed = data.draw(st.sets(st.sampled_from(NUMBERS)), label="listed")
    invalid = data.draw(st.sets(st.integers(0, n - 1)), label="invalid")
    index = data.draw(st.integers(0, n - 1), label="phone_index")
    tries = data.draw(st.integers(0, 4), label="tries")
    j = contact(phones, invalid_phones=sorted(invalid), phone_index=index, tries=tries)
    d = decide(j, listed)
    valid = [i for i in range(n) if i not in invalid]
    callable_ = [i for i in valid if phones[i] not in listed]
    chosen = first_dialable_phone(j, frozenset(listed))
    if d.step == DialStep.PROCEED:
        assert d.phone_index == chosen and phones[d.phone_index] not in listed and d.phone_index not in invalid
        assert d.phone_index >= index and tries < WEEKDAYS_9_18.max_attempts
    elif not valid:
        assert d.step == DialStep.NO_PHONE
    elif not callable_:
        assert d.step == DialStep.DO_NOT_CALL and d.reason.code == "do_not_call" and d.reason.text() == "do not call"
    elif chosen is None:
        # numbers are left before phone_index only: the round ends, unless it was already the last one
        remaining = [i for i in valid if i >= index]
        if any(phones[i] in listed for i in remaining):
            assert d.step in (DialStep.DNC_ROUND_END, DialStep.MAX_ATTEMPTS)
            assert (d.step == DialStep.MAX_ATTEMPTS) == (tries >= WEEKDAYS_9_18.max_attempts)
        else:
            assert d.step == DialStep.NO_PHONE
    else:
        assert d.step == DialStep.MAX_ATTEMPTS
    # with no list the decision is the one made before lists existed
    if not listed:
        assert d.dnc_skipped == 0

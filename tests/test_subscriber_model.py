"""The subscriber status-transition table: the rules the store's WHERE clauses are built from."""

from __future__ import annotations

from typing import get_args

import pytest

from digest.model.subscriber import (
    STATUSES,
    SUPPRESSED,
    TRANSITIONS,
    SubscriberEvent,
    allowed_from,
    imported,
    next_status,
    outcome,
    reported,
)

EVENTS: tuple[SubscriberEvent, ...] = get_args(SubscriberEvent)


def test_every_event_leads_to_one_status_and_every_status_is_a_real_one():
    for event in EVENTS:
        assert outcome(event) in STATUSES
        assert {to for (_, on), to in TRANSITIONS.items() if on == event} == {outcome(event)}
    assert {start for start, _ in TRANSITIONS} <= {None, *STATUSES}


def test_only_a_pending_opt_in_is_confirmed():
    assert allowed_from("confirm") == {"pending"}
    assert outcome("confirm") == "active"


def test_a_new_or_unsubscribed_address_subscribes_and_nothing_else_restarts_an_opt_in():
    assert allowed_from("subscribe") == {"unsubscribed"}
    assert next_status(None, "subscribe") == "pending"
    for status in ("pending", "active", "bounced", "complained"):
        assert next_status(status, "subscribe") is None


def test_unsubscribing_keeps_a_bounce_or_a_complaint():
    assert allowed_from("unsubscribe") == {"pending", "active"}


def test_the_operator_never_vouches_over_a_suppression():
    assert next_status(None, "vouch") == "active"
    assert allowed_from("vouch") == {"pending"}


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_the_provider_overrides_anything_but_a_complaint(status):
    # The webhook's old WHERE: status != 'complained' AND status != the reported status.
    assert allowed_from(reported(status)) == set(STATUSES) - {"complained", status}
    assert outcome(reported(status)) == status


def test_the_provider_reports_only_suppressions():
    with pytest.raises(ValueError):
        reported("active")


@pytest.mark.parametrize("row", STATUSES)
def test_an_import_moves_forward_only_and_never_brings_a_suppressed_address_back(row):
    event = imported(row)
    assert next_status(None, event) == row  # a new address takes the file's status
    assert not allowed_from(event) & SUPPRESSED
    assert next_status("active", event) == (row if row in SUPPRESSED else None)
    expected = None if row == "pending" else row
    assert next_status("pending", event) == expected

"""The call model (phone.worker.call.LineCall): one state machine fed by the UA's reports, and
bounded facts whatever a remote INVITE carried."""

import pytest

from phone import actions
from phone.models import CallRecord
from phone.sip.useragent import CallState
from phone.worker.call import LineCall, Phase


def test_it_follows_the_dialog_and_holds_only_on_the_far_ends_yes():
    call = LineCall(id="c1", direction="out", remote="1002", called="1001")
    assert call.phase is Phase.DIALING
    assert not call.on_ua_state(CallState.CALLING, None, "")
    assert call.on_ua_state(CallState.RINGING, 180, "")
    assert call.on_ua_state(CallState.CONNECTED, 200, "") and call.answered_at is not None
    call.request_hold(True)
    assert call.phase is Phase.INCALL and call.pending == "hold"
    call.on_hold_result(held=False, ok=False)  # refused: stays in the call
    assert call.phase is Phase.INCALL and call.pending is None
    call.request_hold(True)
    call.on_hold_result(held=True, ok=True)
    assert call.phase is Phase.HELD
    # A 2xx to some later re-INVITE (a session refresh) does not take the call off hold.
    assert not call.on_ua_state(CallState.CONNECTED, 200, "")
    assert call.phase is Phase.HELD
    assert call.on_ua_state(CallState.TERMINATED, None, "remote-bye")
    assert call.ended and call.reason == "remote-bye"
    assert not call.on_ua_state(CallState.CONNECTED, 200, "")  # nothing revives it


def test_it_logs_unanswered_incoming_calls_as_missed_or_rejected():
    call = LineCall(id="c2", direction="in", remote="0312345678", called="1001")
    call.end("cancelled", 487)
    assert call.history_direction == "missed"
    rejected = LineCall(id="c3", direction="in", remote="0312345678", called="1001")
    rejected.rejected = True
    assert rejected.history_direction == "rejected"


@pytest.mark.django_db
def test_it_bounds_what_a_remote_invite_carried_and_history_keeps_the_row(cast):
    call = LineCall(
        id="x" * 400,
        direction="in",
        remote="0" * 70 + "\x00",
        called="\x00" + "9" * 100,
        remote_name="名" * 300,
    )
    assert len(call.remote) == 64 and "\x00" not in call.remote
    assert len(call.called) == 64 and "\x00" not in call.called
    assert len(call.remote_name) == 100
    call.end("remote-bye")
    record_id = actions.do_open_call(cast.alice.pk, "w1", call.history_fields(cast.alice.pk, "A"))
    actions.do_close_call(cast.alice.pk, record_id, call.history_fields(cast.alice.pk, "A"))
    row = CallRecord.objects.get(pk=record_id)
    assert len(row.sip_call_id) == 255 and row.ended_at is not None and row.worker == ""


@pytest.mark.parametrize(
    ("remote", "shown"),
    [("+81312345678", "03-1234-5678"), ("09012345678", "090-1234-5678"), ("1002", "1002")],
)
def test_the_page_gets_numbers_as_people_read_them_and_as_dialled(remote, shown):
    """Issue 13 item 9: the page shows 03-1234-5678; redial, CTI and history keep the digits."""
    call = LineCall(id="c1", direction="in", remote=remote, called="0311112222")
    for message in (call.message(), call.incoming_message()):
        assert message["remote"] == remote and message["remote_display"] == shown
        assert message["called"] == "0311112222" and message["called_display"] == "03-1111-2222"

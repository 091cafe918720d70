"""Call control on the phone page (issue 9, seed 3-1 … 3-4, 6-1), in the real browser against the
real server, without a PBX: the test plays the server by handing the page server messages
(built and checked by phone.signalling.schema, the contract) and reads what the page sends.

The real end-to-end calls (Kamailio, baresip) are in test_calls.py; these tests pin down what the
page does with each message and each button.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from phone.models import LineButton, ParkGroup
from phone.signalling.schema import parse_client_message, server_message
from tests.e2e.conftest import RECORD_SENT, login, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def phone(cast, portal_server, page):
    """Alice's phone page, attached (the server's first `calls` has arrived), recording what it
    sends; no Content-Security-Policy violation and no script error allowed."""
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message):
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            problems.append(message.text)

    page.on("console", on_console)
    login(page, portal_server, "alice", cast.password)
    wait_until(page, "window.browserPhone && window.browserPhone.ui.synced")
    page.evaluate(RECORD_SENT)
    yield page
    assert not problems


def emit(page, kind, **fields):
    message = server_message(kind, **fields)
    page.evaluate("m => window.browserPhone.socket.emit(m.type, m)", message)


def emit_call(page, call_id, state, **fields):
    defaults = {
        "direction": "in" if state in ("incoming",) else "out",
        "remote": "1003",
        "remote_name": "",
        "called": "1001",
        "held": state == "held",
        "pending": None,
        "reason": "",
        "answered_at": None,
        "transfer": None,
        "line": "",
        "ring": "",
        "park": None,
    }
    if state in ("incall", "held"):
        defaults["answered_at"] = datetime.now(UTC).isoformat()
    emit(page, "call", id=call_id, state=state, **{**defaults, **fields})


def sent(page, kind=None):
    messages = page.evaluate("window.sent")
    for message in messages:  # every command the page sends is valid for the server
        parse_client_message(json.dumps(message))
    return [m for m in messages if kind is None or m["type"] == kind]


def row(page, call_id):
    return page.locator(f'[data-testid="call-row"][data-call-id="{call_id}"]')


def test_it_lists_every_call_and_shows_the_selected_one(phone):
    page = phone
    calls = page.get_by_test_id("calls")
    expect(calls).to_be_hidden()
    emit_call(page, "a", "incoming", remote="1003", remote_name="オフィス花子")
    emit_call(page, "b", "held", remote="1004", direction="in")
    expect(page.get_by_test_id("call-row")).to_have_count(2)
    expect(calls).to_be_visible()
    expect(row(page, "a")).to_have_attribute("data-state", "ringing")
    expect(row(page, "b")).to_have_attribute("data-state", "held")
    expect(row(page, "a")).to_contain_text("オフィス花子")
    expect(row(page, "a")).to_contain_text("着信中")
    expect(row(page, "b")).to_contain_text("保留中")
    # Answer and reject only on the ringing call; hang up on every call.
    expect(row(page, "a").get_by_test_id("call-answer")).to_have_count(1)
    expect(row(page, "b").get_by_test_id("call-answer")).to_have_count(0)
    expect(row(page, "b").get_by_test_id("call-reject")).to_have_count(0)
    expect(row(page, "b").get_by_test_id("call-hangup")).to_have_count(1)
    # The call that rang while nothing was up is the selected one.
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ringing")
    expect(page.get_by_test_id("display")).to_have_text("オフィス花子")
    expect(page.get_by_test_id("display")).to_have_attribute("data-number", "1003")
    row(page, "b").get_by_test_id("call-select").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "held")
    expect(page.get_by_test_id("status")).to_have_text("保留中")
    expect(page.get_by_test_id("display")).to_have_text("1004")
    expect(row(page, "b")).to_have_attribute("aria-current", "true")
    # The selected call ends: the buttons fall back to the best remaining call.
    emit_call(page, "b", "ended", direction="in")
    expect(page.get_by_test_id("call-row")).to_have_count(1)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "ringing")
    # A (re)attach rebuilds the list from `calls`.
    emit(page, "calls", calls=[])
    expect(page.get_by_test_id("call-row")).to_have_count(0)
    expect(calls).to_be_hidden()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "idle")


def test_it_rebuilds_the_list_from_calls_and_falls_back_to_the_best_call(phone):
    page = phone
    answered = datetime.now(UTC).isoformat()

    def call(call_id, state, remote):
        return server_message(
            "call", id=call_id, state=state, direction="in", remote=remote, remote_name="",
            called="1001", held=state == "held", pending=None, reason="",
            answered_at=None if state == "incoming" else answered, transfer=None, line="",
            ring="", park=None,
        )  # fmt: skip

    emit(page, "calls", calls=[call("x", "incoming", "1005"), call("y", "held", "1006"),
                               call("z", "incall", "1007")])  # fmt: skip
    expect(page.get_by_test_id("call-row")).to_have_count(3)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "incall")
    expect(page.get_by_test_id("display")).to_have_text("1007")
    emit_call(page, "z", "ended")
    # held before ringing (issue 9: incall, held, ringing/dialing, incoming)
    expect(page.get_by_test_id("display")).to_have_text("1006")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "held")


def test_the_row_buttons_name_their_own_call(phone):
    page = phone
    emit_call(page, "a", "incoming", remote="1003")
    emit_call(page, "b", "incoming", remote="1004")
    row(page, "b").get_by_test_id("call-answer").click()
    row(page, "a").get_by_test_id("call-reject").click()
    row(page, "a").get_by_test_id("call-hangup").click()
    wait_until(page, "window.sent.length >= 3")
    assert [(m["type"], m["call_id"]) for m in sent(page)] == [
        ("answer", "b"),
        ("reject", "a"),
        ("hangup", "a"),
    ]


def test_the_call_button_answers_but_never_dials_over_a_ringing_or_live_call(phone):
    page = phone
    page.get_by_test_id("dial-input").fill("1002")
    emit_call(page, "a", "incoming")
    page.get_by_test_id("call-btn").click()
    wait_until(page, "window.sent.length >= 1")
    assert sent(page) == [{"type": "answer", "call_id": "a"}]
    for state in ("incall", "dialing", "ringing"):
        emit_call(page, "a", state, direction="in")
        page.get_by_test_id("call-btn").click()
        expect(page.get_by_test_id("notice")).to_have_text(
            "着信中・通話中は発信できません。保留にしてから発信してください。"
        )
    # A call waiting while another is up: still no dial.
    emit_call(page, "a", "incall", direction="in")
    emit_call(page, "b", "incoming", remote="1004")
    page.get_by_test_id("call-btn").click()
    page.wait_for_timeout(200)
    assert sent(page, "dial") == []
    # The page stays on the call that is up; answering the second is the row's button.
    expect(page.get_by_test_id("display")).to_have_text("1003")
    emit_call(page, "b", "ended")
    # Only a held call: dialling starts a consultation on the server.
    emit_call(page, "a", "held", direction="in")
    page.get_by_test_id("call-btn").click()
    wait_until(page, "window.sent.some(m => m.type === 'dial')")
    assert sent(page, "dial") == [{"type": "dial", "number": "1002"}]


def test_hangup_rejects_a_ringing_call_and_hangs_up_a_live_one(phone):
    page = phone
    expect(page.get_by_test_id("hangup-btn")).to_be_hidden()
    emit_call(page, "a", "incoming")
    page.get_by_test_id("hangup-btn").click()
    emit_call(page, "a", "incall", direction="in")
    page.get_by_test_id("hangup-btn").click()
    wait_until(page, "window.sent.length >= 2")
    assert sent(page) == [{"type": "reject", "call_id": "a"}, {"type": "hangup", "call_id": "a"}]


def test_the_keypad_sends_dtmf_during_a_call_and_leaves_the_number_alone(phone):
    page = phone
    emit_call(page, "a", "incall")
    page.get_by_test_id("key-5").click()
    page.keyboard.type("#1")  # the PC keyboard too (focus on the key, not in the input)
    wait_until(page, "window.sent.length >= 3")
    assert sent(page) == [
        {"type": "dtmf", "call_id": "a", "digits": "5"},
        {"type": "dtmf", "call_id": "a", "digits": "#"},
        {"type": "dtmf", "call_id": "a", "digits": "1"},
    ]
    expect(page.get_by_test_id("dial-input")).to_have_value("")
    # Held: the keys type the number to transfer to again.
    emit_call(page, "a", "held")
    page.get_by_test_id("key-7").click()
    expect(page.get_by_test_id("dial-input")).to_have_value("7")
    assert len(sent(page, "dtmf")) == 3


def test_the_call_timer_counts_from_the_answer(phone):
    page = phone
    timer = page.get_by_test_id("call-timer")
    emit_call(page, "a", "dialing")
    expect(timer).to_be_hidden()
    answered = (datetime.now(UTC) - timedelta(seconds=65)).isoformat()
    emit_call(page, "a", "incall", answered_at=answered)
    expect(timer).to_be_visible()
    first = timer.text_content()
    assert first in ("01:05", "01:06")
    expect(timer).not_to_have_text(first, timeout=3000)
    assert timer.text_content() in ("01:06", "01:07", "01:08")
    emit_call(page, "a", "ended")
    expect(timer).to_be_hidden()


def test_a_notice_shows_the_translated_text_for_a_few_seconds(phone):
    page = phone
    notice = page.get_by_test_id("notice")
    expect(notice).to_be_hidden()
    emit(page, "notice", level="error", code="busy", text="486 Busy Here")
    expect(notice).to_be_visible()
    expect(notice).to_have_text("話し中")
    expect(notice).to_have_attribute("data-kind", "error")
    expect(notice).to_be_hidden(timeout=8000)
    # A code the page does not know: the server's text.
    emit(page, "notice", level="info", code="something-new", text="Something new")
    expect(notice).to_have_text("Something new")
    expect(notice).to_have_attribute("data-kind", "info")
    # An error reply is a notice too.
    emit(page, "error", code="slot_busy", message="the park slot is taken", request="park")
    expect(notice).to_have_text("そのパーク保留は使用中です")
    expect(notice).to_have_attribute("data-kind", "error")


def test_park_slots_show_who_parked_and_send_park_and_pickup(cast, portal_server, page):
    group = ParkGroup.objects.create(tenant=cast.tenant_a, name="代表")
    group.members.add(cast.alice, cast.bob)
    login(page, portal_server, "alice", cast.password)
    wait_until(page, "window.browserPhone && window.browserPhone.ui.synced")
    page.evaluate(RECORD_SENT)
    free = {"parked_by": "", "caller": "", "caller_name": ""}
    emit(page, "park.slots", slots=[
        {"slot": 1, "state": "parked", "parked_by": "Bob", "caller": "0312345678",
         "caller_name": "株式会社ABC"},
        {"slot": 2, "state": "mine", "parked_by": "Alice", "caller": "1003", "caller_name": ""},
        *({"slot": n, "state": "free", **free} for n in range(3, 7)),
    ])  # fmt: skip
    one = page.get_by_test_id("park-slot-1")
    expect(one).to_have_attribute("data-state", "parked")
    expect(one).to_have_attribute("data-parked-by", "Bob")
    expect(one).to_have_attribute("data-caller", "0312345678")
    expect(one).to_have_attribute("title", "パーク保留 1: 株式会社ABC 0312345678（Bob さんが保留）")
    expect(page.get_by_test_id("park-slot-2")).to_have_attribute("data-state", "mine")
    expect(page.get_by_test_id("park-slot-3")).to_have_attribute("data-state", "free")
    expect(page.get_by_test_id("park-slot-3")).to_have_attribute("data-caller", "")
    # Free slot without a call: nothing to park.
    page.get_by_test_id("park-slot-3").click()
    expect(page.get_by_test_id("notice")).to_have_text("パーク保留にする通話がありません。")
    emit_call(page, "a", "incall")
    page.get_by_test_id("park-slot-3").click()
    one.click()
    page.get_by_test_id("park-slot-2").click()
    wait_until(page, "window.sent.length >= 3")
    assert sent(page) == [
        {"type": "park", "call_id": "a", "slot": 3},
        {"type": "park.pickup", "slot": 1},
        {"type": "park.pickup", "slot": 2},
    ]
    # A parked call says where it is.
    emit_call(page, "a", "held", park=3)
    expect(row(page, "a")).to_contain_text("パーク保留 3")
    # Freed again.
    emit(page, "park.slots", slots=[{"slot": n, "state": "free", **free} for n in range(1, 7)])
    expect(one).to_have_attribute("data-state", "free")
    expect(one).to_have_attribute("data-parked-by", "")


def test_hold_swap_and_transfer_buttons_act_on_the_right_call(phone):
    page = phone
    # While a hold awaits the far end's answer, 保留 does not send it again.
    emit_call(page, "a", "incall", remote="1003", pending="hold")
    expect(row(page, "a")).to_contain_text("保留中にしています")
    page.get_by_test_id("hold-btn").click()
    emit_call(page, "a", "incall", remote="1003")
    expect(page.get_by_test_id("call-swap")).to_be_hidden()
    page.get_by_test_id("hold-btn").click()
    emit_call(page, "a", "held", remote="1003")
    expect(page.get_by_test_id("hold-btn")).to_have_attribute("data-state", "on")
    page.get_by_test_id("hold-btn").click()
    # Seed 3-3: held, the number typed, 転送 → the consultation call.
    page.get_by_test_id("dial-input").fill("1005")
    page.get_by_test_id("transfer-btn").click()
    emit_call(page, "c", "dialing", remote="1005", transfer={"of": "a"})
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "dialing")
    expect(page.get_by_test_id("display")).to_have_text("1005")
    expect(page.get_by_test_id("transfer-complete-btn")).to_be_hidden()
    page.get_by_test_id("hold-btn").click()  # 保留 stops calling the target (seed 3-3 ②)
    emit_call(page, "c", "incall", remote="1005", transfer={"of": "a"})
    expect(row(page, "c")).to_contain_text("転送先")
    page.get_by_test_id("transfer-complete-btn").click()
    # Call waiting: one up, one held → swap resumes the held one.
    emit_call(page, "c", "ended", transfer={"of": "a"})
    emit_call(page, "b", "incall", remote="1004", direction="in")
    expect(page.get_by_test_id("call-swap")).to_be_visible()
    page.get_by_test_id("call-swap").click()
    # Blind transfer of the selected call to the typed number.
    page.get_by_test_id("dial-input").fill("2000")
    page.get_by_test_id("blind-transfer-btn").click()
    wait_until(page, "window.sent.length >= 7")
    assert sent(page) == [
        {"type": "hold", "call_id": "a"},
        {"type": "unhold", "call_id": "a"},
        {"type": "transfer.start", "call_id": "a", "number": "1005"},
        {"type": "transfer.cancel", "call_id": "c"},
        {"type": "transfer.complete", "call_id": "c"},
        {"type": "swap", "call_id": "a"},
        {"type": "transfer.blind", "call_id": "b", "number": "2000"},
    ]


def test_a_line_button_is_shown_while_chosen_and_dropped_when_refused(cast, phone):
    page = phone
    LineButton.objects.create(
        tenant=cast.tenant_a, position=1, kind="line", number="0311111111", label="総務部",
        ring_tone="2",
    )  # fmt: skip
    page.reload()
    wait_until(page, "window.browserPhone && window.browserPhone.ui.synced")
    page.evaluate(RECORD_SENT)
    chosen = page.get_by_test_id("line-chosen")
    expect(chosen).to_be_hidden()
    page.get_by_test_id("external-toggle").click()
    page.get_by_test_id("line-btn-1").click()
    expect(chosen).to_be_visible()
    expect(chosen).to_contain_text("総務部 (0311111111)")
    expect(page.get_by_test_id("line-btn-1")).to_have_attribute("data-state", "on")
    page.get_by_test_id("dial-input").fill("1002")
    page.get_by_test_id("call-btn").click()
    wait_until(page, "window.sent.length >= 1")
    assert sent(page) == [{"type": "dial", "number": "1002", "line": "0311111111"}]
    emit(page, "error", code="not_allowed", message="not allowed", request="dial")
    expect(chosen).to_be_hidden()
    expect(page.get_by_test_id("line-btn-1")).to_have_attribute("data-state", "off")
    expect(page.get_by_test_id("notice")).to_have_text("この回線は使えません")
    # The clear button, and the server's line-refused notice, drop it too.
    page.get_by_test_id("line-btn-1").click()
    page.get_by_test_id("line-clear").click()
    expect(chosen).to_be_hidden()
    page.get_by_test_id("line-btn-1").click()
    emit(page, "notice", level="error", code="line-refused", text="")
    expect(chosen).to_be_hidden()
    # A call in on that line: the row names the line, and it rings with that line's tone.
    emit_call(page, "a", "incoming", line="0311111111", ring="2")
    emit(page, "incoming", id="a", remote="1003", remote_name="", called="0311111111")
    expect(row(page, "a").get_by_test_id("call-line")).to_have_text("総務部")
    wait_until(page, "window.browserPhone.ui.ringer && window.browserPhone.ui.ringer.tone === '2'")
    row(page, "a").get_by_test_id("call-answer").click()
    emit_call(page, "a", "incall", direction="in", line="0311111111", ring="2")
    wait_until(page, "window.browserPhone.ui.ringer === null")

"""Keyboard shortcuts of the phone page (issue 13, item 7): Enter answers, Esc hangs up, H holds,
M mutes, T transfers, "?" lists them; each presses the phone's own button, and none acts while
the user types in a field. Real browser, real server; the test plays the server's call messages
(phone.signalling.schema, the contract) and reads what the page sends, as test_call_ui does."""

import json
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from phone.signalling.schema import parse_client_message, server_message
from tests.e2e.conftest import htmx_settled, login, wait_until

pytestmark = pytest.mark.e2e

# Record the page's commands instead of sending them, and every control clicked (by testid).
RECORD = """() => {
  const socket = window.browserPhone.socket;
  const send = socket.send.bind(socket);
  window.sent = [];
  socket.send = (type, fields = {}) => {
    if (type.startsWith("webrtc.") || type === "ping") return send(type, fields);
    window.sent.push({ type, ...fields });
  };
  window.clicked = [];
  document.addEventListener("click", (event) => {
    const control = event.target.closest("[data-testid]");
    if (control) window.clicked.push(control.dataset.testid);
  }, true);
}"""
MIC_ENABLED = "window.browserPhone.media.stream.getAudioTracks().map((t) => t.enabled)"


@pytest.fixture
def phone(cast, portal_server, page):
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    login(page, portal_server, "alice", cast.password)
    wait_until(page, "window.browserPhone && window.browserPhone.ui.synced")
    wait_until(page, "window.browserPhone.media.stream !== null")  # the fake microphone
    page.evaluate(RECORD)
    yield page
    assert not problems


def emit_call(page, call_id, state, **fields):
    message = server_message(
        "call",
        **{
            "id": call_id, "state": state, "direction": "in", "remote": "1003",
            "remote_name": "", "called": "1001", "held": state == "held", "pending": None,
            "reason": "", "transfer": None, "line": "", "ring": "", "park": None,
            "answered_at": datetime.now(UTC).isoformat() if state in ("incall", "held") else None,
            **fields,
        },
    )  # fmt: skip
    page.evaluate("m => window.browserPhone.socket.emit(m.type, m)", message)
    expect(page.get_by_test_id("status")).to_have_attribute(
        "data-state",
        {"incoming": "ringing", "incall": "incall", "held": "held", "ended": "idle"}[state],
    )


def sent(page, kind=None):
    messages = page.evaluate("window.sent")
    for message in messages:  # every command the page sends is valid for the server
        parse_client_message(json.dumps(message))
    return [m for m in messages if kind is None or m["type"] == kind]


def clicked(page):
    return page.evaluate("window.clicked")


def press(page, key):
    """A key pressed with nothing focused (the page itself)."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press(key)


def test_it_answers_holds_transfers_and_hangs_up_from_the_keyboard(phone):
    page = phone
    emit_call(page, "c1", "incoming")
    press(page, "Enter")
    wait_until(page, "window.sent.length > 0")
    assert sent(page) == [{"type": "answer", "call_id": "c1"}]
    assert clicked(page) == ["call-btn"]

    emit_call(page, "c1", "incall")
    press(page, "h")
    wait_until(page, "window.sent.length > 1")
    assert sent(page)[-1] == {"type": "hold", "call_id": "c1"}
    assert clicked(page)[-1] == "hold-btn"

    # Held: the digits typed go to the number field (not tones), T transfers to them.
    emit_call(page, "c1", "held")
    for key in "1002":
        page.keyboard.press(key)
    expect(page.get_by_test_id("dial-input")).to_have_value("1002")
    press(page, "T")  # Shift+T: the same key
    wait_until(page, "window.sent.length > 2")
    assert sent(page)[-1] == {"type": "transfer.start", "call_id": "c1", "number": "1002"}
    assert clicked(page)[-1] == "transfer-btn"

    press(page, "Escape")
    wait_until(page, "window.sent.length > 3")
    assert sent(page)[-1] == {"type": "hangup", "call_id": "c1"}
    assert clicked(page)[-1] == "hangup-btn"

    # Esc on a ringing call rejects it (what the red button does then).
    emit_call(page, "c1", "ended")
    emit_call(page, "c2", "incoming")
    press(page, "Escape")
    wait_until(page, "window.sent.length > 4")
    assert sent(page)[-1] == {"type": "reject", "call_id": "c2"}


def test_it_mutes_and_unmutes_the_microphone_with_m(phone):
    page = phone
    mute = page.get_by_test_id("mute-btn")
    expect(mute).to_be_disabled()  # no call: nothing to mute
    press(page, "m")
    assert page.evaluate(MIC_ENABLED) == [True]
    emit_call(page, "c1", "incall")
    expect(mute).to_be_enabled()
    press(page, "m")
    expect(mute).to_have_attribute("data-state", "on")
    expect(mute).to_have_attribute("aria-pressed", "true")
    assert page.evaluate(MIC_ENABLED) == [False]  # the track stays, sending silence
    assert clicked(page) == ["mute-btn"]
    press(page, "M")
    expect(mute).to_have_attribute("data-state", "off")
    assert page.evaluate(MIC_ENABLED) == [True]
    # Muted when the call ends: the next call does not start silent.
    mute.click()
    assert page.evaluate(MIC_ENABLED) == [False]
    emit_call(page, "c1", "ended")
    expect(mute).to_have_attribute("data-state", "off")
    expect(mute).to_be_disabled()
    assert page.evaluate(MIC_ENABLED) == [True]
    assert sent(page) == []  # muting is the browser's own business


def test_nothing_happens_while_typing_in_a_field(phone):
    page = phone
    emit_call(page, "c1", "incall")
    page.get_by_test_id("phonebook-toggle").click()
    search = page.get_by_test_id("phonebook-search")
    search.click()
    page.keyboard.type("htm?")
    for key in ("Shift+H", "m", "t"):
        page.keyboard.press(key)
    expect(search).to_have_value("htm?Hmt")
    page.keyboard.press("Escape")  # in a search field: the browser empties it, nothing else
    expect(page.get_by_test_id("shortcut-help")).to_be_hidden()
    # The dial field is a field too: Esc there does not hang up.
    page.get_by_test_id("dial-input").click()
    page.keyboard.press("Escape")
    page.keyboard.press("h")
    assert sent(page) == []
    assert not {"hangup-btn", "hold-btn", "mute-btn", "transfer-btn"} & set(clicked(page))
    expect(page.get_by_test_id("mute-btn")).to_have_attribute("data-state", "off")
    # Ctrl/Alt combinations belong to the browser.
    page.get_by_test_id("dial-input").blur()
    page.keyboard.press("Control+h")
    page.keyboard.press("Alt+t")
    assert sent(page) == []


def test_enter_calls_after_the_keypad_but_is_a_panel_buttons_own(phone):
    page = phone
    # Keys clicked with the mouse keep the focus; Enter still calls (not "1" once more).
    page.get_by_test_id("key-1").click()
    page.get_by_test_id("key-0").click()
    page.keyboard.press("Enter")
    wait_until(page, "window.sent.length > 0")
    assert sent(page) == [{"type": "dial", "number": "10"}]
    # Outside the phone, Enter presses the focused button (追加する), it does not call.
    page.get_by_test_id("phonebook-toggle").click()
    page.get_by_test_id("contact-add").wait_for()
    htmx_settled(page)
    page.get_by_test_id("contact-add").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("contact-form")).to_be_visible()
    assert len(sent(page)) == 1


def test_question_mark_lists_the_shortcuts(phone, tmp_path):
    page = phone
    emit_call(page, "c1", "incall")
    help_ = page.get_by_test_id("shortcut-help")
    expect(help_).to_be_hidden()
    press(page, "?")
    expect(help_).to_be_visible()
    for key in ("Enter", "Esc", "H", "M", "T", "?"):
        expect(help_.locator("kbd", has_text=key).first).to_be_visible()
    expect(help_).to_contain_text("保留")
    expect(help_).to_contain_text("ミュート")
    page.screenshot(path=str(tmp_path / "shortcut-help.png"))
    # While the list is open the keys are not commands; Esc closes it and hangs nothing up.
    page.keyboard.press("h")
    page.keyboard.press("Escape")
    expect(help_).to_be_hidden()
    assert sent(page) == []
    # The "?" button in the top bar opens it too, its close button closes it.
    page.get_by_test_id("shortcut-help-btn").click()
    expect(help_).to_be_visible()
    page.get_by_test_id("shortcut-help-close").click()
    expect(help_).to_be_hidden()
    press(page, "Escape")  # now it is a command again
    wait_until(page, "window.sent.length > 0")
    assert sent(page) == [{"type": "hangup", "call_id": "c1"}]

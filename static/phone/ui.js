// The phone's face (seed 3-1 … 3-4, 6-1): lamp, status, display, the list of calls, the buttons,
// park slots, line buttons, ringing, notices and notifications.
// Everything it shows comes from server messages; everything it does is a message to the server
// that names the call it acts on (design.md §3): the page keeps a "selected call" for that.

import { devicePreference } from "./devices.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const LABELS = JSON.parse(document.getElementById("phone-labels").textContent);

// server call state → data-state of the status element and of a call row (design.md §5)
const STATUS = {
  dialing: "dialing",
  ringing: "dialing",
  incoming: "ringing",
  incall: "incall",
  held: "held",
};
// When the selected call ends, the buttons move to the best remaining call in this order.
const FALLBACK = ["incall", "held", "ringing", "dialing", "incoming"];
// While any call is in one of these states the page does not dial (a held-only state may: the
// server then makes a consultation call).
const BLOCKS_DIALING = new Set(["incoming", "dialing", "ringing", "incall"]);
const DIALABLE = /[^0-9*#+]/g;
const DTMF = /^[0-9*#]$/;
const NOTICE_MS = 5000;
const RING_SECONDS = 180;

// Ring tones made here with WebAudio (no file to fetch), one per line button's ring value
// (seed 6-1 ライン別鳴動音): a trilled tone, and a cadence of on/off seconds repeated.
export const RING_TONES = {
  "": { freq: 1150, trill: 16, depth: 150, cadence: [1, 2] },
  1: { freq: 1300, trill: 20, depth: 100, cadence: [0.4, 0.2, 0.4, 2] },
  2: { freq: 880, trill: 10, depth: 60, cadence: [1.5, 1.5] },
  3: { freq: 1000, trill: 16, depth: 120, cadence: [0.2, 0.1, 0.2, 0.1, 0.2, 2.2] },
  4: { freq: 650, trill: 12, depth: 200, cadence: [0.8, 0.4, 0.8, 2] },
};

function fill(template, values) {
  return template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/** A number of a call as people read it (03-1234-5678: the server groups it), else as dialled. */
function shown(call, field) {
  return call[`${field}_display`] || call[field] || "";
}

function twoDigits(n) {
  return String(n).padStart(2, "0");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class PhoneUI {
  constructor(socket) {
    this.socket = socket;
    this.calls = new Map(); // id → the latest `call` message, in the server's order
    this.selectedId = null;
    this.ringFor = new Set(); // calls the server asked this tab to ring for (`incoming`)
    this.ringer = null;
    this.line = "";
    this.synced = false; // the first `calls` list has arrived
    this.noticeTimer = null;
    this.bind();
    setInterval(() => this.tick(), 500);
    socket.on("registration", (m) => this.registration(m));
    socket.on("calls", (m) => this.replaceCalls(m.calls || []));
    socket.on("call", (m) => this.updateCall(m));
    socket.on("incoming", (m) => this.incoming(m));
    socket.on("notice", (m) => this.serverNotice(m));
    socket.on("error", (m) => this.serverError(m));
    socket.on("park.slots", (m) => this.parkSlots(m.slots || []));
    socket.on("dial.request", (m) => this.dial(m.number));
    socket.on("cti.popup", (m) => document.dispatchEvent(new CustomEvent("phone:cti", { detail: m })));
    socket.on("settings.changed", (m) => {
      if (m.what === "buttons") window.htmx?.trigger(document.body, "buttons-changed");
      if (m.what === "history") window.htmx?.trigger(document.body, "history-changed");
    });
    socket.on("socket.closed", () => this.lamp("pending", LABELS.reconnecting));
    // The phone service (sipworker) stopped answering: red lamp until it is back and the line
    // has registered again (the server re-attaches this page by itself).
    socket.on("worker", (m) => {
      if (m.state === "lost") this.lamp("fail", LABELS.worker_lost);
      else this.lamp("pending", "");
    });
    socket.on("vm.status", (m) => {
      // 留守電状態 lights while voicemail is waiting (RFC 3842 message-summary).
      const button = $("vm-status-btn");
      if (button) button.dataset.state = m.waiting ? "on" : "off";
    });
  }

  // -- the calls and the selected one ----------------------------------------------------------

  /** The call the buttons act on. */
  get call() {
    return this.calls.get(this.selectedId) || null;
  }

  best() {
    // A parked call is on the shared park button, not on this phone's hold: last among equals.
    const rank = (c) => {
      const index = FALLBACK.indexOf(c.state);
      return (index < 0 ? FALLBACK.length : index) + (c.park != null ? 0.5 : 0);
    };
    return [...this.calls.values()].sort((a, b) => rank(a) - rank(b))[0] || null;
  }

  select(id) {
    if (!this.calls.has(id)) return;
    this.selectedId = id;
    this.render();
  }

  replaceCalls(calls) {
    this.synced = true;
    const had = this.calls.size > 0;
    this.calls.clear();
    calls.forEach((call) => {
      if (call && call.id && call.state !== "ended") this.calls.set(call.id, call);
    });
    this.render(had);
  }

  updateCall(m) {
    const had = this.calls.size > 0;
    const before = this.calls.get(m.id);
    if (m.state === "ended") {
      this.calls.delete(m.id);
    } else {
      this.calls.set(m.id, m);
      const selected = this.call;
      const up = selected && selected.id !== m.id && BLOCKS_DIALING.has(selected.state) && selected.state !== "incoming";
      if (m.state === "incall" && before?.state !== "incall") {
        // Answered, connected, resumed or swapped to: the call that is up is the one to act on.
        this.selectedId = m.id;
      } else if (!before && m.direction === "out") {
        this.selectedId = m.id; // newly dialled (also a consultation call)
      } else if (!before && m.state === "incoming" && !up) {
        // A new call rings and nothing is up: the call button answers it (seed 3-3). While a
        // call is up the buttons stay on it; the row answers the waiting call.
        this.selectedId = m.id;
      }
    }
    this.render(had);
  }

  activeCalls() {
    return [...this.calls.values()].filter((c) => BLOCKS_DIALING.has(c.state));
  }

  /** The consultation call of the selected call (itself when it is one). */
  consultation() {
    const call = this.call;
    if (!call) return null;
    if (call.transfer) return call;
    return [...this.calls.values()].find((c) => c.transfer?.of === call.id) || null;
  }

  /** The held call that call-swap resumes: the selected one if held, else the first held. */
  swapTarget() {
    const calls = [...this.calls.values()];
    if (!calls.some((c) => c.state === "incall")) return null;
    const call = this.call;
    if (call?.state === "held" && call.park == null) return call;
    return calls.find((c) => c.state === "held" && c.park == null) || null;
  }

  // -- buttons ---------------------------------------------------------------------------------

  bind() {
    $("call-btn").addEventListener("click", () => {
      const call = this.call;
      if (call?.state === "incoming") this.socket.send("answer", { call_id: call.id });
      else this.dial($("dial-input").value);
    });
    $("hangup-btn").addEventListener("click", () => {
      const call = this.call;
      if (call?.state === "incoming") this.socket.send("reject", { call_id: call.id });
      else if (call) this.socket.send("hangup", { call_id: call.id });
    });
    $("hold-btn").addEventListener("click", () => {
      const call = this.call;
      // During a consultation 保留 stops calling the transfer target (seed 3-3 ②).
      if (call?.transfer) this.socket.send("transfer.cancel", { call_id: call.id });
      else if (call?.pending) return; // the far end has not answered the last hold/unhold yet
      else if (call?.state === "incall") this.socket.send("hold", { call_id: call.id });
      else if (call?.state === "held") this.socket.send("unhold", { call_id: call.id });
    });
    $("transfer-btn").addEventListener("click", () => {
      // Seed 3-3 (3): the held call, the number typed, 転送 calls the transfer target.
      const call = this.call;
      const number = this.typedNumber();
      if (call?.state !== "held") this.notice("info", LABELS.hold_first);
      else if (!number) this.notice("info", LABELS.enter_number);
      else this.socket.send("transfer.start", { call_id: call.id, number });
    });
    $("transfer-complete-btn").addEventListener("click", () => {
      const consultation = this.consultation();
      if (consultation?.state === "incall") this.socket.send("transfer.complete", { call_id: consultation.id });
    });
    $("blind-transfer-btn").addEventListener("click", () => {
      const call = this.call;
      const number = this.typedNumber();
      if (!call || !["incall", "held"].includes(call.state)) this.notice("info", LABELS.no_call_to_transfer);
      else if (!number) this.notice("info", LABELS.enter_number);
      else this.socket.send("transfer.blind", { call_id: call.id, number });
    });
    $("call-swap").addEventListener("click", () => {
      const held = this.swapTarget();
      if (held) this.socket.send("swap", { call_id: held.id });
    });
    $("calls").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      const row = button?.closest("[data-call-id]");
      if (!row) return;
      const id = row.dataset.callId;
      const action = button.dataset.action;
      if (action === "select") this.select(id);
      else this.socket.send(action, { call_id: id });
    });
    $("notice").addEventListener("click", () => this.hideNotice());
    $("line-clear").addEventListener("click", () => this.chooseLine(""));
    document.querySelectorAll(".park-slot").forEach((button) => {
      button.addEventListener("click", () => this.parkClicked(button));
    });
    document.addEventListener("phone:dial", (event) => this.dial(event.detail.number));
    document.addEventListener("click", (event) => {
      const button = event.target.closest(".pad-btn");
      if (!button) return;
      if (button.dataset.kind === "line") {
        // A line button picks the number shown to the called party (seed 6-1).
        this.chooseLine(this.line === button.dataset.number ? "" : button.dataset.number);
      } else if (button.dataset.number) {
        this.dial(button.dataset.number);
      }
    });
    // The external pad is re-rendered when its buttons change: light the chosen line again,
    // or forget it if its button is gone.
    document.addEventListener("htmx:afterSettle", () => {
      if (this.line && !this.lineButton(this.line)) this.chooseLine("");
      else this.chooseLine(this.line);
    });
  }

  typedNumber() {
    return $("dial-input").value.replace(DIALABLE, "");
  }

  /** A keypad or keyboard key: during a call it is DTMF to the far end and never touches the
   * dial field (seed 3-1 ⑦); returns whether it was used so. */
  keypadDigit(key) {
    const call = this.call;
    if (call?.state !== "incall") return false;
    if (DTMF.test(key)) this.socket.send("dtmf", { call_id: call.id, digits: key });
    return true;
  }

  canDial() {
    return this.activeCalls().length === 0;
  }

  dial(number) {
    const digits = (number || "").replace(DIALABLE, "");
    if (!digits) return false;
    if (!this.canDial()) {
      // Never a second call while one rings or is up: hold it first (seed 3-3).
      this.notice("info", LABELS.cannot_dial);
      return false;
    }
    $("dial-input").value = digits;
    this.socket.send("dial", this.line ? { number: digits, line: this.line } : { number: digits });
    return true;
  }

  // -- line buttons (seed 6-1) -----------------------------------------------------------------

  lineButton(number) {
    if (!number) return null;
    return document.querySelector(`.pad-btn[data-kind="line"][data-number="${CSS.escape(number)}"]`);
  }

  lineLabel(number) {
    const button = this.lineButton(number);
    return (button?.dataset.label || button?.textContent || "").trim() || number;
  }

  chooseLine(number) {
    this.line = number || "";
    document.querySelectorAll('.pad-btn[data-kind="line"]').forEach((b) => {
      b.dataset.state = this.line && b.dataset.number === this.line ? "on" : "off";
    });
    const chosen = $("line-chosen");
    chosen.hidden = !this.line;
    chosen.dataset.number = this.line;
    const label = this.line ? this.lineLabel(this.line) : "";
    $("line-chosen-label").textContent = label && label !== this.line ? `${label} (${this.line})` : this.line;
  }

  // -- park (seed 3-4) -------------------------------------------------------------------------

  parkSlots(slots) {
    slots.forEach((slot) => {
      const button = $(`park-slot-${slot.slot}`);
      if (!button) return;
      const state = ["free", "parked", "mine"].includes(slot.state) ? slot.state : "free";
      button.dataset.state = state;
      button.dataset.parkedBy = state === "free" ? "" : slot.parked_by || "";
      button.dataset.caller = state === "free" ? "" : slot.caller || "";
      button.dataset.callerName = state === "free" ? "" : slot.caller_name || "";
      const caller = slot.caller_name && slot.caller ? `${slot.caller_name} ${slot.caller}` : slot.caller_name || slot.caller || "";
      const template = { free: LABELS.park_free, parked: LABELS.park_parked, mine: LABELS.park_mine }[state];
      button.title = fill(template, { slot: slot.slot, caller, who: slot.parked_by || "" });
      button.setAttribute("aria-label", button.title);
    });
  }

  parkClicked(button) {
    const slot = Number(button.dataset.slot);
    if (button.dataset.state === "parked" || button.dataset.state === "mine") {
      // Take the parked call (or take one's own back, seed 3-4 (2)).
      this.socket.send("park.pickup", { slot });
      return;
    }
    const call = this.call;
    if (call && (call.state === "incall" || call.state === "held")) {
      this.socket.send("park", { call_id: call.id, slot });
    } else {
      this.notice("info", LABELS.nothing_to_park);
    }
  }

  // -- what the server says --------------------------------------------------------------------

  registration(m) {
    const state = { registered: "ok", failed: "fail" }[m.state] || "pending";
    this.lamp(state, m.reason);
    if (m.extension) $("extension").textContent = m.extension;
  }

  lamp(state, reason) {
    const lamp = $("reg-lamp");
    lamp.dataset.state = state;
    lamp.title = { ok: LABELS.registered, fail: LABELS.failed, pending: LABELS.registering }[state];
    const why = $("reg-reason");
    why.hidden = state !== "fail" || !reason;
    why.textContent = state === "fail" ? reason || "" : "";
  }

  serverNotice(m) {
    if (m.code === "line-refused") this.chooseLine("");
    this.notice(m.level, LABELS.notices[m.code] || m.text || m.code);
  }

  serverError(m) {
    if (m.request === "dial" && m.code === "not_allowed" && this.line) {
      // The PBX (or the tenant's settings) refuse this line for this user: stop using it.
      this.chooseLine("");
      this.notice("error", LABELS.notices["line-refused"]);
      return;
    }
    this.notice("error", LABELS.errors[m.code] || m.message || m.code);
  }

  /** Show a text for a few seconds (seed 3-2: why a call failed). */
  notice(level, text) {
    const notice = $("notice");
    notice.dataset.kind = level === "error" ? "error" : "info";
    notice.textContent = text || "";
    notice.hidden = !text;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => this.hideNotice(), NOTICE_MS);
  }

  hideNotice() {
    clearTimeout(this.noticeTimer);
    $("notice").hidden = true;
  }

  // -- drawing ---------------------------------------------------------------------------------

  render(had = this.calls.size > 0) {
    if (!this.calls.has(this.selectedId)) this.selectedId = this.best()?.id ?? null;
    const call = this.call;
    const status = $("status");
    const state = call ? STATUS[call.state] || "idle" : "idle";
    status.dataset.state = state;
    status.textContent = LABELS[state];
    const display = $("display");
    display.textContent = call ? call.remote_name || shown(call, "remote") : "";
    // The number next to a name (CSS shows it; the element's text stays the name).
    display.dataset.number = call && call.remote_name && call.remote_name !== call.remote ? shown(call, "remote") : "";
    $("hangup-btn").hidden = !call;
    const hold = $("hold-btn");
    hold.dataset.state = call && (call.state === "held" || call.transfer) ? "on" : "off";
    hold.setAttribute("aria-busy", String(Boolean(call?.pending)));
    const consultation = this.consultation();
    $("transfer-complete-btn").hidden = consultation?.state !== "incall";
    $("call-swap").hidden = !this.swapTarget();
    this.renderList();
    this.tick();
    document.body.dataset.callState = call ? call.state : "idle";
    // Ring while a call this tab was told about still rings (also while another call is up).
    this.ringFor.forEach((id) => {
      if (this.calls.get(id)?.state !== "incoming") this.ringFor.delete(id);
    });
    if (!this.ringFor.size) this.stopRinging();
    if (had && !this.calls.size) $("dial-input").value = "";
  }

  stateText(call) {
    if (call.park != null) return fill(LABELS.parked, { slot: call.park });
    if (call.pending === "hold") return LABELS.holding;
    if (call.pending === "unhold") return LABELS.resuming;
    return LABELS[STATUS[call.state] || "idle"];
  }

  row(call) {
    const row = element("li", "call-item");
    row.dataset.testid = "call-row";
    row.dataset.callId = call.id;
    row.dataset.state = STATUS[call.state] || "idle";
    row.dataset.direction = call.direction || "";
    if (call.id === this.selectedId) {
      row.dataset.selected = "true";
      row.setAttribute("aria-current", "true");
    }
    const select = element("button", "call-select");
    select.type = "button";
    select.dataset.testid = "call-select";
    select.dataset.action = "select";
    select.title = LABELS.select;
    const name = call.remote_name || shown(call, "remote");
    select.append(element("span", "call-name", name));
    if (call.remote_name && call.remote && call.remote_name !== call.remote) {
      select.append(element("span", "call-number", shown(call, "remote")));
    }
    const details = element("span", "call-details");
    if (call.transfer) details.append(element("span", "call-consult", LABELS.consultation));
    if (call.line) {
      const line = element("span", "call-line", this.lineLabel(call.line));
      line.dataset.testid = "call-line";
      line.title = `${LABELS.line}: ${call.line}`;
      details.append(line);
    }
    details.append(element("span", "call-state", this.stateText(call)));
    select.append(details);
    row.append(select);
    const buttons = element("span", "call-buttons");
    const add = (action, testid, label) => {
      const button = element("button", `call-action ${testid}`, label);
      button.type = "button";
      button.dataset.action = action;
      button.dataset.testid = testid;
      buttons.append(button);
    };
    if (call.state === "incoming") {
      add("answer", "call-answer", LABELS.answer);
      add("reject", "call-reject", LABELS.reject);
    }
    add("hangup", "call-hangup", LABELS.hangup);
    row.append(buttons);
    return row;
  }

  renderList() {
    const list = $("calls");
    list.replaceChildren(...[...this.calls.values()].map((call) => this.row(call)));
    list.hidden = this.calls.size === 0;
  }

  /** The call timer: mm:ss of the selected call since it was answered. */
  tick() {
    const timer = $("call-timer");
    const call = this.call;
    const start = call?.answered_at ? Date.parse(call.answered_at) : NaN;
    if (!call || Number.isNaN(start)) {
      timer.hidden = true;
      timer.textContent = "";
      return;
    }
    const seconds = Math.max(0, Math.floor((Date.now() - start) / 1000));
    const text = `${twoDigits(Math.floor(seconds / 60))}:${twoDigits(seconds % 60)}`;
    if (timer.textContent !== text) timer.textContent = text;
    timer.hidden = false;
  }

  // -- ringing ---------------------------------------------------------------------------------

  incoming(m) {
    if (!this.calls.has(m.id)) {
      // `call` normally comes first; if not, the row shows what `incoming` says.
      this.updateCall({ id: m.id, state: "incoming", direction: "in", remote: m.remote,
        remote_display: m.remote_display, remote_name: m.remote_name, called: m.called,
        called_display: m.called_display, line: "", ring: "", park: null });
    }
    this.ringFor.add(m.id);
    this.startRinging(this.calls.get(m.id)?.ring || "");
    if ("Notification" in window && Notification.permission === "granted") {
      // Seed 3-3 ③: who is calling, and which of our numbers they called.
      const note = new Notification(m.remote_name || shown(m, "remote"), {
        body: `${LABELS.incoming_to} ${shown(m, "called")}`,
        tag: m.id,
      });
      note.onclick = () => window.focus();
    }
  }

  startRinging(ring = "") {
    const key = ring in RING_TONES ? ring : "";
    if (this.ringer?.tone === key) return;
    this.stopRinging();
    const tone = RING_TONES[key];
    const context = new AudioContext();
    const gain = context.createGain();
    const osc = context.createOscillator();
    const trill = context.createOscillator();
    const depth = context.createGain();
    osc.frequency.value = tone.freq;
    trill.frequency.value = tone.trill;
    depth.gain.value = tone.depth;
    trill.connect(depth).connect(osc.frequency);
    osc.connect(gain);
    const out = context.createMediaStreamDestination();
    gain.connect(out);
    const element = new Audio();
    element.srcObject = out.stream;
    const sink = devicePreference("ring");
    if (sink && sink !== "default" && element.setSinkId) element.setSinkId(sink).catch(() => {});
    element.play().catch(() => {});
    const now = context.currentTime;
    gain.gain.setValueAtTime(0, now);
    let t = 0;
    while (t < RING_SECONDS) {
      for (let index = 0; index < tone.cadence.length; index += 1) {
        gain.gain.setValueAtTime(index % 2 === 0 ? 0.2 : 0, now + t);
        t += tone.cadence[index];
      }
    }
    gain.gain.setValueAtTime(0, now + RING_SECONDS);
    osc.start();
    trill.start();
    this.ringer = { context, element, tone: key };
  }

  stopRinging() {
    if (!this.ringer) return;
    this.ringer.element.pause();
    this.ringer.context.close();
    this.ringer = null;
  }
}

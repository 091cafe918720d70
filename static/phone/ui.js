// The phone's face (seed 3-1 … 3-3, 6-1): lamp, status, display, buttons, ringing, notifications.
// Everything it shows comes from server messages; everything it does is a message to the server.

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const LABELS = JSON.parse(document.getElementById("phone-labels").textContent);

// server call state → data-state of the status element (design.md §5) and its label
const STATUS = {
  dialing: "dialing",
  ringing: "dialing",
  incoming: "ringing",
  incall: "incall",
  held: "held",
};

export class PhoneUI {
  constructor(socket) {
    this.socket = socket;
    this.calls = new Map();
    this.line = "";
    this.ringer = null;
    this.bind();
    socket.on("registration", (m) => this.registration(m));
    socket.on("calls", (m) => {
      this.calls.clear();
      m.calls.forEach((call) => this.calls.set(call.id, call));
      this.render();
    });
    socket.on("call", (m) => {
      if (m.state === "ended") this.calls.delete(m.id);
      else this.calls.set(m.id, m);
      this.render();
    });
    socket.on("incoming", (m) => this.incoming(m));
    socket.on("error", (m) => this.flash(m.message));
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

  get call() {
    // The call the buttons act on: a live one first, then one ringing in.
    const order = ["incall", "held", "ringing", "dialing", "incoming"];
    return [...this.calls.values()].sort((a, b) => order.indexOf(a.state) - order.indexOf(b.state))[0];
  }

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
    // Every command names its call: the one this page shows (the server never guesses).
    $("hold-btn").addEventListener("click", () => {
      const call = this.call;
      // During a consultation 保留 stops calling the transfer target (seed 3-3 ②).
      if (call?.transfer) this.socket.send("transfer.cancel", { call_id: call.id });
      else if (call?.state === "incall") this.socket.send("hold", { call_id: call.id });
      else if (call?.state === "held") this.socket.send("unhold", { call_id: call.id });
    });
    $("transfer-btn").addEventListener("click", () => {
      const number = $("dial-input").value.replace(/[^0-9*#+]/g, "");
      const call = this.call;
      if (call?.state === "held" && number) {
        this.socket.send("transfer.start", { call_id: call.id, number });
      }
    });
    $("transfer-complete-btn").addEventListener("click", () => {
      const call = this.call;
      if (call?.transfer) this.socket.send("transfer.complete", { call_id: call.id });
    });
    document.addEventListener("phone:digit", (event) => {
      const call = this.call;
      if (call?.state === "incall") this.socket.send("dtmf", { call_id: call.id, digits: event.detail.key });
    });
    document.addEventListener("phone:dial", (event) => this.dial(event.detail.number));
    document.addEventListener("click", (event) => {
      const button = event.target.closest(".pad-btn");
      if (!button) return;
      if (button.dataset.kind === "line") {
        // A line button picks the number shown to the called party (seed 6-1).
        const on = button.dataset.state !== "on";
        document.querySelectorAll('.pad-btn[data-kind="line"]').forEach((b) => (b.dataset.state = "off"));
        button.dataset.state = on ? "on" : "off";
        this.line = on ? button.dataset.number : "";
      } else if (button.dataset.number) {
        this.dial(button.dataset.number);
      }
    });
  }

  dial(number) {
    const digits = (number || "").replace(/[^0-9*#+]/g, "");
    if (!digits) return;
    $("dial-input").value = digits;
    this.socket.send("dial", this.line ? { number: digits, line: this.line } : { number: digits });
  }

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

  render() {
    const call = this.call;
    const status = $("status");
    const state = call ? STATUS[call.state] || "idle" : "idle";
    status.dataset.state = state;
    status.textContent = LABELS[state];
    $("display").textContent = call ? call.remote_name || call.remote : "";
    $("hangup-btn").hidden = !call;
    const held = [...this.calls.values()].some((c) => c.state === "held");
    $("hold-btn").dataset.state = held ? "on" : "off";
    $("transfer-complete-btn").hidden = !(call?.transfer && call.state === "incall");
    document.body.dataset.callState = call ? call.state : "idle";
    if (call?.state !== "incoming") this.stopRinging();
    if (!call) $("dial-input").value = "";
  }

  incoming(m) {
    this.startRinging();
    if ("Notification" in window && Notification.permission === "granted") {
      // Seed 3-3 ③: who is calling, and which of our numbers they called.
      const note = new Notification(m.remote_name || m.remote, {
        body: `${LABELS.incoming_to} ${m.called}`,
        tag: m.id,
      });
      note.onclick = () => window.focus();
    }
  }

  startRinging() {
    if (this.ringer) return;
    // The ring sound is made here (no file to fetch): 1000/1300 Hz trill, 1 s on, 2 s off.
    const context = new AudioContext();
    const gain = context.createGain();
    const osc = context.createOscillator();
    const trill = context.createOscillator();
    const depth = context.createGain();
    osc.frequency.value = 1150;
    trill.frequency.value = 16;
    depth.gain.value = 150;
    trill.connect(depth).connect(osc.frequency);
    osc.connect(gain);
    const out = context.createMediaStreamDestination();
    gain.connect(out);
    const element = new Audio();
    element.srcObject = out.stream;
    const sink = window.localStorage.getItem("browserphone.device.ring");
    if (sink && sink !== "default" && element.setSinkId) element.setSinkId(sink).catch(() => {});
    element.play().catch(() => {});
    const now = context.currentTime;
    gain.gain.setValueAtTime(0, now);
    for (let t = 0; t < 60; t += 3) {
      gain.gain.setValueAtTime(0.2, now + t);
      gain.gain.setValueAtTime(0, now + t + 1);
    }
    osc.start();
    trill.start();
    this.ringer = { context, element };
  }

  stopRinging() {
    if (!this.ringer) return;
    this.ringer.element.pause();
    this.ringer.context.close();
    this.ringer = null;
  }

  flash(message) {
    const display = $("display");
    display.dataset.error = message;
    display.title = message;
  }
}

// 回線テスト (issue 13, item 4): checks the microphone, the speaker and the path to the server
// without the PBX. The server (the user's line in the sipworker) plays back what this page's
// microphone sends, about a second later, over the page's own peer connection, and reports
// the level it received (`linetest` messages); the page tells the result in plain words.
//
// Results, first match wins: no_permission (getUserMedia refused), ws_down (the WebSocket is
// not open), no_media (the server got no packets: ICE/DTLS failed), silent (packets, but
// nothing above the noise floor), not_registered (audio works, the registration lamp is not
// green), ok. in_call / incoming: a call has priority over the test.

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const CONNECT_WAIT_MS = 5000; // a page just opened may still be connecting its media
const DONE_WAIT_MS = 15000; // the server stops the test after 10 s; then we give up waiting

export function texts() {
  const template = document.getElementById("diagnostics-texts");
  const out = {};
  template?.content.querySelectorAll("[data-key]").forEach((node) => {
    out[node.dataset.key] = node.textContent.trim();
  });
  return out;
}

export class LineTest {
  constructor(socket, media) {
    this.socket = socket;
    this.media = media;
    this.texts = texts();
    this.button = $("line-test-btn");
    this.meter = $("line-test-level");
    this.result = $("line-test-result");
    this.running = false;
    this.micDenied = false;
    this.timer = null;
    if (!this.button) return;
    this.button.addEventListener("click", () => (this.running ? this.stop() : this.start()));
    socket.on("linetest", (m) => this.update(m));
    socket.on("error", (m) => {
      if (m.request !== "linetest.start") return;
      this.finish(m.code === "in_call" ? "in_call" : "no_media");
    });
    socket.on("socket.closed", () => {
      if (this.running) this.finish("ws_down");
    });
    document.addEventListener("phone:mic-denied", () => {
      this.micDenied = true;
    });
    // A call that starts makes the last result old news (an in_call refusal stays readable).
    new MutationObserver(() => {
      const idle = (document.body.dataset.callState || "idle") === "idle";
      if (!idle && !this.running && this.result.dataset.state !== "in_call") this.clear();
    }).observe(document.body, { attributes: true, attributeFilter: ["data-call-state"] });
  }

  clear() {
    this.result.hidden = true;
    this.result.dataset.state = "";
    this.meter.hidden = true;
  }

  socketOpen() {
    return this.socket.ws?.readyState === WebSocket.OPEN;
  }

  async mediaConnected() {
    const deadline = Date.now() + CONNECT_WAIT_MS;
    while (Date.now() < deadline) {
      if (this.media.pc?.connectionState === "connected") return true;
      if (this.media.pc?.connectionState === "failed") return false;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return false;
  }

  async start() {
    this.show("running", "running");
    this.meter.value = 0;
    this.meter.hidden = false;
    if (this.micDenied || !this.media.stream) {
      try {
        if (!this.media.stream) this.media.stream = await this.media.microphone();
      } catch (error) {
        this.finish("no_permission");
        return;
      }
      if (this.micDenied && !this.media.stream) return this.finish("no_permission");
    }
    if (!this.socketOpen()) return this.finish("ws_down");
    if (!(await this.mediaConnected())) return this.finish("no_media");
    this.running = true;
    this.button.dataset.state = "on";
    this.button.textContent = this.texts.stop || this.button.textContent;
    this.socket.send("linetest.start");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.running && this.finish(this.socketOpen() ? "no_media" : "ws_down"), DONE_WAIT_MS);
  }

  stop() {
    if (this.socketOpen()) this.socket.send("linetest.stop");
    else this.finish("ws_down");
  }

  update(m) {
    this.meter.hidden = false;
    this.meter.value = m.level;
    this.meter.dataset.dbfs = String(m.dbfs);
    if (m.state !== "done") return;
    let result = m.result;
    if (result === "ok" && $("reg-lamp")?.dataset.state !== "ok") result = "not_registered";
    this.finish(result);
  }

  finish(result) {
    this.running = false;
    clearTimeout(this.timer);
    this.button.dataset.state = "off";
    this.button.textContent = this.texts.start || this.button.textContent;
    this.show(result, result);
  }

  show(state, key) {
    this.result.dataset.state = state;
    this.result.textContent = this.texts[key] || key;
    this.result.hidden = false;
  }
}

// The WebSocket to /ws/phone/ (design.md §3): JSON messages with a "type", reconnecting with
// backoff. The server keeps calls alive meanwhile; on reconnect it re-sends the line's state.

export class PhoneSocket {
  constructor(path = "/ws/phone/") {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    this.url = `${scheme}://${window.location.host}${path}`;
    this.handlers = new Map();
    this.retry = 500;
    this.queue = [];
    this.open();
  }

  open() {
    this.ws = new WebSocket(this.url);
    this.ws.addEventListener("open", () => {
      this.retry = 500;
      const pending = this.queue.splice(0);
      pending.forEach((text) => this.ws.send(text));
      this.emit("socket.open", {});
    });
    this.ws.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.emit(message.type, message);
    });
    this.ws.addEventListener("close", (event) => {
      this.emit("socket.closed", { code: event.code });
      if (event.code === 4401 || event.code === 4403) return; // logged out: no point retrying
      setTimeout(() => this.open(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    });
  }

  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(handler);
  }

  emit(type, message) {
    (this.handlers.get(type) || []).forEach((handler) => {
      try {
        handler(message);
      } catch (error) {
        console.error(`handler for ${type} failed`, error);
      }
    });
  }

  send(type, fields = {}) {
    const text = JSON.stringify({ type, ...fields });
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    else this.queue.push(text);
  }
}

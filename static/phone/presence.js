// Colleague lamps (BLF), 代理応答 and 応答不可 (issue 13). The server sends `presence` (a snapshot
// on connect, then the lines that changed, own tenant only) and `dnd`; lamps are rendered by
// the phonebook panel and the external pad (templates/phone/_presence_lamp.html) whenever they
// are fetched, so the states are kept here and applied to every lamp present now or later.

const LABELS = JSON.parse(document.getElementById("phone-labels").textContent).presence || {};
const states = new Map(); // extension → idle | ringing | busy | dnd | offline

function paint(root = document) {
  root.querySelectorAll('[data-testid="presence-lamp"]').forEach((lamp) => {
    const state = states.get(lamp.dataset.extension) || "offline";
    if (lamp.dataset.state === state) return;
    lamp.dataset.state = state;
    const label = LABELS[state] || state;
    lamp.title = label;
    lamp.setAttribute("aria-label", label);
  });
  root.querySelectorAll('[data-testid="pickup-btn"]').forEach((button) => {
    button.hidden = states.get(button.dataset.extension) !== "ringing";
  });
}

export function setUpPresence(socket) {
  socket.on("presence", (m) => {
    if (m.full) states.clear();
    (m.entries || []).forEach((entry) => states.set(entry.extension, entry.state));
    paint();
  });
  const dnd = document.querySelector('[data-testid="dnd-btn"]');
  socket.on("dnd", (m) => {
    if (!dnd) return;
    dnd.dataset.state = m.on ? "on" : "off";
    dnd.setAttribute("aria-pressed", String(Boolean(m.on)));
  });
  dnd?.addEventListener("click", () => socket.send("dnd", { on: dnd.dataset.state !== "on" }));
  document.querySelector('[data-testid="group-pickup-btn"]')?.addEventListener("click", () => {
    socket.send("pickup.group");
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest('[data-testid="pickup-btn"]');
    if (!button) return;
    event.preventDefault();
    event.stopPropagation();
    socket.send("pickup", { extension: button.dataset.extension });
  });
  // A panel fetched later (phonebook, the pad after its buttons changed) gets today's lamps.
  document.body.addEventListener("htmx:afterSettle", (event) => paint(event.target));
}

// Phone page behaviour: keypad, keyboard entry, clear, side-panel toggles.
// The call path (WebSocket + WebRTC) attaches to these same elements and to "phone:dial" events.
import "./panels.js";
import "./cti.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

const dialInput = $("dial-input");
const DIALABLE = /^[0-9*#+]$/;

function appendDigit(key) {
  dialInput.value += key;
  dialInput.dispatchEvent(new CustomEvent("phone:digit", { bubbles: true, detail: { key } }));
}

document.querySelectorAll(".keypad .key").forEach((button) => {
  button.addEventListener("click", () => appendDigit(button.dataset.key));
});

$("dial-clear").addEventListener("click", () => {
  dialInput.value = "";
  dialInput.focus();
});

// The PC keyboard dials too (seed 3-1 ④), unless the user is typing in another field.
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement
    || target instanceof HTMLSelectElement || target?.isContentEditable;
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  if (DIALABLE.test(event.key)) {
    appendDigit(event.key);
    event.preventDefault();
  } else if (event.key === "Backspace") {
    dialInput.value = dialInput.value.slice(0, -1);
    event.preventDefault();
  }
});

// Keep only dialable characters when typing straight into the input.
dialInput.addEventListener("input", () => {
  dialInput.value = dialInput.value.replace(/[^0-9*#+]/g, "");
});

const toggles = document.querySelectorAll(".toggles [data-panel]");
export function showPanel(name) {
  toggles.forEach((toggle) => {
    const open = toggle.dataset.panel === name && toggle.getAttribute("aria-expanded") !== "true";
    const section = document.querySelector(`.panel[data-panel-name="${toggle.dataset.panel}"]`);
    toggle.setAttribute("aria-expanded", String(open));
    section.hidden = !open;
    // Panels backed by the server are fetched afresh each time they open.
    if (open && section.dataset.src) {
      window.htmx.ajax("GET", section.dataset.src, { target: section.querySelector(".panel-body"), swap: "innerHTML" });
    }
  });
}
toggles.forEach((toggle) => toggle.addEventListener("click", () => showPanel(toggle.dataset.panel)));

// Until a call can be placed, a number chosen elsewhere lands in the dial input.
document.addEventListener("phone:dial", (event) => {
  dialInput.value = event.detail.number;
});

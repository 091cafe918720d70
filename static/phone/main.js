// Phone page entry: keypad and keyboard entry, side panels, and the call path
// (socket.js → ui.js for signalling, webrtc.js for media).
import "./panels.js";
import "./cti.js";
import { PhoneSocket } from "./socket.js";
import { PhoneUI } from "./ui.js";
import { PhoneMedia } from "./webrtc.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

const dialInput = $("dial-input");
const DIALABLE = /^[0-9*#+]$/;

function appendDigit(key) {
  // During a call the keys are tones to the far end (DTMF) and leave the number alone.
  const dtmf = ui.keypadDigit(key);
  if (!dtmf) dialInput.value += key;
  dialInput.dispatchEvent(new CustomEvent("phone:digit", { bubbles: true, detail: { key, dtmf } }));
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
  } else if (event.key === "Enter") {
    $("call-btn").click();
    event.preventDefault();
  }
});

// Keep only dialable characters when typing straight into the input; Enter calls.
dialInput.addEventListener("input", () => {
  dialInput.value = dialInput.value.replace(/[^0-9*#+]/g, "");
});
dialInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") $("call-btn").click();
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

// Guidance when the browser refuses the microphone or notifications (seed 2-3).
document.addEventListener("phone:mic-denied", () => {
  $("permission-help").hidden = false;
});
if ("Notification" in window && Notification.permission === "default") {
  $("notify-help").hidden = false;
  $("notify-allow").addEventListener("click", async () => {
    await Notification.requestPermission();
    $("notify-help").hidden = Notification.permission !== "default";
  });
} else if ("Notification" in window && Notification.permission === "denied") {
  $("notify-help").hidden = false;
  $("notify-allow").hidden = true;
}

const socket = new PhoneSocket();
const ui = new PhoneUI(socket);
const media = new PhoneMedia(socket, $("remote-audio"));
window.browserPhone = { socket, ui, media }; // for support staff and end-to-end tests

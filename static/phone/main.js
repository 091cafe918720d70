// Phone page entry: keypad and keyboard entry, side panels, and the call path
// (socket.js → ui.js for signalling, webrtc.js for media).
import { DIAL_CHANNEL } from "./panels.js";
import "./cti.js";
import { LineTest } from "./linetest.js";
import { CallQuality } from "./quality.js";
import { setUpPresence } from "./presence.js";
import { isCommandKey, setUpShortcuts } from "./shortcuts.js";
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

// The PC keyboard dials too (seed 3-1 ④), unless the user is typing in another field; Enter
// calls or answers, also right after a key of the phone was clicked (it then has the focus).
// The other shortcuts (Esc, H, M, T, ?) are in shortcuts.js. Enter on a focused button, link or
// row elsewhere (a side panel, the top bar) is that element's own.
const ACTIVATES = "button, a[href], [tabindex], summary, dialog";
const ownsEnter = (target) => Boolean(target.closest?.(ACTIVATES)) && !target.closest(".phone");
document.addEventListener("keydown", (event) => {
  if (!isCommandKey(event) || document.querySelector("dialog[open]")) return;
  if (DIALABLE.test(event.key)) {
    appendDigit(event.key);
    event.preventDefault();
  } else if (event.key === "Backspace") {
    dialInput.value = dialInput.value.slice(0, -1);
    event.preventDefault();
  } else if (event.key === "Enter" && !event.repeat && !ownsEnter(event.target)) {
    $("call-btn").click();
    event.preventDefault();
  }
});

// Keep only dialable characters when typing straight into the input; Enter calls.
dialInput.addEventListener("input", () => {
  dialInput.value = dialInput.value.replace(/[^0-9*#+]/g, "");
});
dialInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.repeat && !event.isComposing) $("call-btn").click();
});

const toggles = document.querySelectorAll(".toggles [data-panel]");
const ONE_COLUMN = window.matchMedia("(max-width: 760px)"); // as phone.css
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
    // On a narrow screen the panel opens below the phone: bring it into view.
    if (open && ONE_COLUMN.matches) section.scrollIntoView({ block: "start" });
  });
}
toggles.forEach((toggle) => toggle.addEventListener("click", () => showPanel(toggle.dataset.panel)));

// A call was logged (the server says `settings.changed` what=history, ui.js turns it into this
// event): an open history panel shows it, with its filter, sort and page kept.
document.body.addEventListener("history-changed", () => {
  const panel = document.getElementById("history-panel");
  if (!panel || panel.closest("[hidden]") || !panel.dataset.url) return;
  window.htmx.ajax("GET", panel.dataset.url, { target: panel, swap: "outerHTML" });
});

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
// 回線テスト and 通話品質 (issue 13, items 4-5)
const lineTest = new LineTest(socket, media);
const quality = new CallQuality(socket, media, ui);
window.browserPhone = { socket, ui, media, lineTest, quality }; // for support staff and end-to-end tests
setUpPresence(socket);

// -- mute (issue 13, item 7) ---------------------------------------------------------------------
// 消音: the microphone's track stays in the call but sends silence (track.enabled = false), so
// nothing is renegotiated and unmuting is instant. Only while there is a call; a call that ends
// unmutes, so the next one never starts silent by surprise.
let muted = false;
const muteButton = (() => {
  const template = document.getElementById("mute-btn-template");
  if (!template) return null;
  const button = template.content.firstElementChild.cloneNode(true);
  $("hold-btn").after(button);
  return button;
})();

function applyMute() {
  media.stream?.getAudioTracks().forEach((track) => {
    track.enabled = !muted;
  });
  if (!muteButton) return;
  muteButton.dataset.state = muted ? "on" : "off";
  muteButton.setAttribute("aria-pressed", String(muted));
}

export function setMuted(value) {
  muted = Boolean(value);
  applyMute();
}

muteButton?.addEventListener("click", () => setMuted(!muted));
// ui.js marks the selected call's state on <body>, webrtc.js the media connection (a new one
// after a failure takes the same stream, but a new stream must be muted too).
new MutationObserver(() => {
  const idle = (document.body.dataset.callState || "idle") === "idle";
  if (muteButton) muteButton.disabled = idle;
  if (idle && muted) setMuted(false);
  else applyMute();
}).observe(document.body, { attributes: true, attributeFilter: ["data-call-state", "data-media"] });

// -- numbers from other windows ------------------------------------------------------------------
// A CRM window's tel: link (panels.js) hands its number over a BroadcastChannel; of several open
// phone pages only the one holding the lock takes it (the next one when that page closes).
function takeDialRequests() {
  const channel = new BroadcastChannel(DIAL_CHANNEL);
  channel.onmessage = (event) => {
    const { type, id, number } = event.data || {};
    if (type !== "dial" || typeof number !== "string") return;
    channel.postMessage({ type: "dial.taken", id });
    window.focus();
    document.dispatchEvent(new CustomEvent("phone:dial", { detail: { number } }));
  };
  return new Promise(() => {}); // held while this page lives
}
if ("BroadcastChannel" in window) {
  if (navigator.locks) navigator.locks.request(DIAL_CHANNEL, takeDialRequests);
  else takeDialRequests();
}

setUpShortcuts();

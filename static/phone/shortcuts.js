// Keyboard shortcuts of the phone page (issue 13, item 7), listed in the help opened with "?".
// A shortcut clicks the phone's own button, so it does exactly what the button does (ui.js
// decides, for the selected call); a hidden or disabled button is left alone.
// The number keys, Backspace and Enter (call / answer) are main.js's, which dials with them.

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

// key (lower case) → the button it presses
export const SHORTCUTS = {
  escape: "hangup-btn",
  h: "hold-btn",
  m: "mute-btn",
  t: "transfer-btn",
};
// Announced to assistive technology on the buttons themselves.
const ARIA = { "call-btn": "Enter", "hangup-btn": "Escape", "hold-btn": "H", "mute-btn": "M", "transfer-btn": "T" };

/** Is the user typing into a field (where keys are text, not commands)? */
export function isTypingTarget(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement
    || target instanceof HTMLSelectElement || Boolean(target?.isContentEditable);
}

/** A key press that may be a command: not typed into a field, no browser shortcut (Ctrl+T opens
 * a tab), not a key held down, not part of an IME composition. */
export function isCommandKey(event) {
  return !(isTypingTarget(event.target) || event.ctrlKey || event.metaKey || event.altKey
    || event.isComposing || event.keyCode === 229 || event.defaultPrevented);
}

function usable(button) {
  return Boolean(button) && !button.disabled && !button.hidden && button.getClientRects().length > 0;
}

const help = () => $("shortcut-help");

export function toggleHelp() {
  const dialog = help();
  if (!dialog) return;
  if (dialog.open) dialog.close();
  else dialog.showModal();
}

document.addEventListener("keydown", (event) => {
  if (!isCommandKey(event)) return;
  const dialog = document.querySelector("dialog[open]");
  if (event.key === "?") {
    // "?" opens the list, and closes it again; never over another dialog (the confirm).
    if (dialog && dialog !== help()) return;
    toggleHelp();
    event.preventDefault();
    return;
  }
  // An open dialog has the keyboard: Esc closes it (the browser does that), nothing else acts.
  if (dialog || event.repeat) return;
  const testid = SHORTCUTS[event.key.toLowerCase()];
  if (!testid) return;
  const button = $(testid);
  if (!usable(button)) return;
  event.preventDefault();
  button.click();
});

function label() {
  Object.entries(ARIA).forEach(([testid, keys]) => $(testid)?.setAttribute("aria-keyshortcuts", keys));
}

// A "?" button in the top bar opens the list for those who look for it with the mouse.
function addHelpButton() {
  const template = document.getElementById("shortcut-help-btn-template");
  const bar = document.querySelector(".topbar");
  if (!template || !bar || $("shortcut-help-btn")) return;
  const button = template.content.firstElementChild.cloneNode(true);
  button.addEventListener("click", toggleHelp);
  const logout = bar.querySelector(".logout");
  if (logout) logout.before(button);
  else bar.append(button);
}

export function setUpShortcuts() {
  addHelpButton();
  label();
}

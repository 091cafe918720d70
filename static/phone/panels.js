// Side-panel behaviour shared by the phone page and the stand-alone panel pages.
import "./devices.js";

const byTestId = (testid) => document.querySelector(`[data-testid="${testid}"]`);

// A promise-returning confirm built on the page's <dialog> (「〇〇に発信しますか?」).
export function confirmDialog(message) {
  const dialog = byTestId("confirm-dialog");
  if (!dialog) return Promise.resolve(window.confirm(message));
  byTestId("confirm-message").textContent = message;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// A button with data-remove-closest="<selector>" removes that ancestor (a new row's Cancel); in
// this file, not an onclick attribute, because the Content-Security-Policy forbids inline script.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-remove-closest]");
  if (button) button.closest(button.dataset.removeClosest)?.remove();
});

// Pages without the phone (the CRM windows, stand-alone panels) hand a number to the user's phone
// page in another tab or window of this browser. One phone page at a time answers (main.js holds
// a Web Lock for it), so two open phone tabs never both dial.
export const DIAL_CHANNEL = "browserphone-dial";
const HANDOFF_MS = 1500;

function showPageNotice(text) {
  const notice = byTestId("page-notice");
  if (!notice) return;
  notice.textContent = text;
  notice.hidden = false;
}

function handOff(number) {
  if (!("BroadcastChannel" in window)) return Promise.resolve(false);
  const channel = new BroadcastChannel(DIAL_CHANNEL);
  const id = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  return new Promise((resolve) => {
    const done = (handled) => {
      clearTimeout(timer);
      channel.close();
      resolve(handled);
    };
    const timer = setTimeout(() => done(false), HANDOFF_MS);
    channel.onmessage = (event) => {
      if (event.data?.type === "dial.taken" && event.data.id === id) done(true);
    };
    channel.postMessage({ type: "dial", id, number });
  });
}

export async function dialNumber(number) {
  if (window.browserPhone) {
    document.dispatchEvent(new CustomEvent("phone:dial", { detail: { number } }));
    return true;
  }
  const handled = await handOff(number);
  const notice = byTestId("page-notice");
  if (!handled && notice) showPageNotice(notice.dataset.noPhone);
  else if (notice) showPageNotice(notice.dataset.dialing);
  return handled;
}

// Any element with data-number and data-confirm (phonebook and history rows, CRM tel links)
// asks first, then hands the number to the phone.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-confirm][data-number]");
  if (!button) return;
  event.preventDefault();
  if (await confirmDialog(button.dataset.confirm)) await dialNumber(button.dataset.number);
});
// The row of the history is a <tr>: Enter on it (it is focusable) asks too.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !event.target.matches?.("tr[data-confirm][data-number]")) return;
  event.preventDefault();
  event.target.click();
});

// hx-confirm="..." (deleting a contact) asks with the same dialog instead of window.confirm.
document.addEventListener("htmx:confirm", (event) => {
  const question = event.detail.question;
  if (!question) return;
  event.preventDefault();
  confirmDialog(question).then((yes) => {
    if (yes) event.detail.issueRequest(true);
  });
});

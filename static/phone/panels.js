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

// Any element with data-number and data-confirm (phonebook and history rows, CRM tel buttons)
// asks first, then hands the number to the phone as a "phone:dial" event.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-confirm][data-number]");
  if (!button) return;
  event.preventDefault();
  if (await confirmDialog(button.dataset.confirm)) {
    document.dispatchEvent(new CustomEvent("phone:dial", { detail: { number: button.dataset.number } }));
  }
});

// Customer screen-pop (seed 5-2). The call path dispatches "phone:cti" with
// {number, called, call_id, phase: "ring" | "answer"}; the server answers 204 when this user's
// settings do not want a popup at that moment.

const body = () => document.getElementById("cti-body");

function showBlocked(root) {
  const note = root.querySelector('[data-testid="cti-popup-blocked"]');
  if (note) note.hidden = false;
}

// window.open returns null when the browser blocked the popup (seed 5-2: then explain how to
// allow it). "noopener" cannot be asked for here, as it makes window.open return null always;
// the opener link is cut by hand instead.
// Only http(s) is ever opened: the server already drops other schemes, and the
// Content-Security-Policy blocks javascript: URLs; this is the third line of defence.
function isWebUrl(url) {
  try {
    return ["http:", "https:"].includes(new URL(url, window.location.href).protocol);
  } catch {
    return false;
  }
}

export function openPopup(url, root = document) {
  if (!isWebUrl(url)) return false;
  const opened = window.open(url, "_blank");
  if (!opened) {
    showBlocked(root);
    return false;
  }
  try {
    opened.opener = null;
  } catch {
    // a cross-origin window may refuse; it then has no access to us either
  }
  return true;
}

export async function showCallerInfo({ number = "", called = "", call_id = "", phase = "" }) {
  const params = new URLSearchParams({ number, called, call_id, phase });
  const response = await fetch(`/cti/popup/?${params}`, { headers: { "HX-Request": "true" } });
  if (response.status !== 200) return false;
  body().innerHTML = await response.text();
  const section = document.querySelector('.panel[data-panel-name="cti"]');
  if (section?.hidden) document.querySelector('[data-panel="cti"]')?.click();
  const popup = body().querySelector('[data-testid="cti-popup"]');
  if (popup?.dataset.autoOpen) openPopup(popup.dataset.autoOpen, popup);
  return true;
}

document.addEventListener("phone:cti", (event) => showCallerInfo(event.detail));

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-popup]");
  if (!link) return;
  event.preventDefault();
  openPopup(link.href, link.closest('[data-testid="cti-popup"]') || document);
});

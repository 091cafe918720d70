// Audio devices (seed 2-4): speaker, microphone and ring device, remembered per browser.
// The call path reads these with devicePreference(kind) and applies them with setSinkId.

const STORAGE_PREFIX = "browserphone.device.";

export function devicePreference(kind) {
  return window.localStorage.getItem(STORAGE_PREFIX + kind) || "default";
}

export function setDevicePreference(kind, deviceId) {
  window.localStorage.setItem(STORAGE_PREFIX + kind, deviceId);
  document.dispatchEvent(new CustomEvent("phone:devices-changed", { detail: { kind, deviceId } }));
}

async function listDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  return navigator.mediaDevices.enumerateDevices();
}

async function fillDeviceForm(form) {
  const devices = await listDevices();
  form.querySelectorAll("select[data-device-kind]").forEach((select) => {
    const kind = select.dataset.deviceKind;
    const listKind = kind === "ring" ? "audiooutput" : kind;
    select.replaceChildren();
    const fallback = new Option(select.closest(".field").querySelector("label").textContent + " (default)", "default");
    select.append(fallback);
    devices.filter((d) => d.kind === listKind && d.deviceId && d.deviceId !== "default").forEach((device, index) => {
      select.append(new Option(device.label || `${listKind} ${index + 1}`, device.deviceId));
    });
    select.value = devicePreference(kind);
    if (select.value === "") select.value = "default";
    select.addEventListener("change", () => setDevicePreference(kind, select.value));
  });
}

function scan(root) {
  if (root.matches?.("form[data-devices]")) fillDeviceForm(root);
  root.querySelectorAll?.("form[data-devices]").forEach((form) => fillDeviceForm(form));
}

// htmx:load fires for every piece of content htmx inserts, and once for the page itself.
document.addEventListener("htmx:load", (event) => scan(event.detail.elt));

// Media between this page and the sipworker: one RTCPeerConnection per page, negotiated once;
// the server connects whichever call is ours to it (design.md §1).

import { devicePreference } from "./devices.js";

const G711 = ["audio/PCMU", "audio/PCMA"];

// The page's "ice-servers" json_script: {iceServers: [RTCIceServer...], refresh?: url}. TURN
// credentials in it expire (portal.turn), so with `refresh` each new peer connection asks for
// fresh ones first, falling back to those of the page.
function pageIceConfig() {
  const node = document.getElementById("ice-servers");
  const config = node ? JSON.parse(node.textContent) : {};
  // An older page carried a bare list of STUN URLs.
  if (Array.isArray(config)) return { iceServers: config.length ? [{ urls: config }] : [] };
  return { iceServers: config.iceServers || [], refresh: config.refresh };
}

async function iceServers() {
  const config = pageIceConfig();
  if (!config.refresh) return config.iceServers;
  try {
    const response = await fetch(config.refresh, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.ok) return (await response.json()).iceServers;
  } catch (error) {
    // offline for a moment: the page's own credentials may still be valid
  }
  return config.iceServers;
}

// Non-trickle: the offer goes out once ICE gathering is complete, candidates included.
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000); // a stuck candidate must not block calling
  });
}

export class PhoneMedia {
  constructor(socket, audioElement) {
    this.socket = socket;
    this.audio = audioElement;
    this.pc = null;
    this.stream = null;
    this.remoteStream = new MediaStream();
    socket.on("webrtc.answer", (message) => this.pc?.setRemoteDescription({ type: "answer", sdp: message.sdp }));
    socket.on("socket.open", () => this.start());
    document.addEventListener("phone:devices-changed", () => this.applyOutput());
  }

  async microphone() {
    const deviceId = devicePreference("audioinput");
    const audio = deviceId && deviceId !== "default" ? { deviceId: { exact: deviceId } } : true;
    try {
      return await navigator.mediaDevices.getUserMedia({ audio });
    } catch (error) {
      document.dispatchEvent(new CustomEvent("phone:mic-denied", { detail: { error: String(error) } }));
      throw error;
    }
  }

  async start() {
    const generation = (this.generation = (this.generation || 0) + 1);
    if (this.pc) this.pc.close();
    this.stream = this.stream || (await this.microphone());
    const servers = await iceServers();
    if (generation !== this.generation) return; // a later start() took over while we fetched
    if (this.pc) this.pc.close();
    const pc = (this.pc = new RTCPeerConnection({ iceServers: servers }));
    const transceiver = pc.addTransceiver(this.stream.getAudioTracks()[0], { direction: "sendrecv" });
    // Prefer G.711 so the server can pass audio through without transcoding.
    const codecs = RTCRtpReceiver.getCapabilities("audio")?.codecs || [];
    const preferred = [
      ...codecs.filter((c) => G711.includes(c.mimeType)),
      ...codecs.filter((c) => !G711.includes(c.mimeType)),
    ];
    if (preferred.length && transceiver.setCodecPreferences) transceiver.setCodecPreferences(preferred);
    pc.addEventListener("track", (event) => {
      this.remoteStream.getTracks().forEach((track) => this.remoteStream.removeTrack(track));
      this.remoteStream.addTrack(event.track);
      this.audio.srcObject = this.remoteStream;
      this.audio.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      document.body.dataset.media = pc.connectionState;
      if (pc.connectionState === "failed") setTimeout(() => this.start(), 1000);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    this.socket.send("webrtc.offer", { sdp: pc.localDescription.sdp });
    this.applyOutput();
  }

  applyOutput() {
    const sink = devicePreference("audiooutput");
    if (this.audio.setSinkId && sink) this.audio.setSinkId(sink === "default" ? "" : sink).catch(() => {});
  }
}

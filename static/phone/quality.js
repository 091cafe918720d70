// 通話品質 (issue 13, item 5): while a call is up the page shows `quality` (data-state
// good|fair|poor): the worse of what the server computes (phone/quality.py: the RTP leg's RTCP
// towards the PBX and these stats) and what this page measures itself with getStats (loss,
// jitter and round-trip time of its own WebRTC leg). The page also sends its summary
// (quality.stats) at most every STATS_EVERY_MS for the history row.
//
// Score: the same simplified ITU-T G.107 E-model as phone/quality.py (Cole & Rosenbluth for
// G.711 with PLC): R = 93.2 - Id - Ie_eff, MOS from R per G.107 Annex B.

import { texts } from "./linetest.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const POLL_MS = 2000;
const STATS_EVERY_MS = 5000;
const RANK = { good: 0, fair: 1, poor: 2 };
const UP = new Set(["incall", "held"]);

export function mos(loss, jitterMs, rttMs) {
  const lossPct = Math.min(1, Math.max(0, loss || 0)) * 100;
  const delay = Math.max(0, rttMs || 0) / 2 + 2 * Math.max(0, jitterMs || 0) + 20;
  const id = 0.024 * delay + (delay > 177.3 ? 0.11 * (delay - 177.3) : 0);
  const ie = (95 * lossPct) / (lossPct + 25.1);
  const r = 93.2 - id - ie;
  if (r <= 0) return 1;
  if (r >= 100) return 4.5;
  return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6;
}

export function qualityState(score) {
  if (score >= 4.0) return "good";
  return score >= 3.6 ? "fair" : "poor";
}

export class CallQuality {
  constructor(socket, media, ui) {
    this.socket = socket;
    this.media = media;
    this.ui = ui;
    this.texts = texts();
    this.node = $("quality");
    this.server = new Map(); // call id → the latest `quality` message
    this.local = null; // {state, loss, jitter, rtt} of this page's leg
    this.previous = null; // the last inbound-rtp counters, for loss over the interval
    this.sentAt = 0;
    if (!this.node) return;
    socket.on("quality", (m) => {
      this.server.set(m.call_id, m);
      this.render();
    });
    socket.on("call", (m) => {
      if (m.state === "ended") this.server.delete(m.id);
      this.render();
    });
    setInterval(() => this.poll(), POLL_MS);
  }

  callUp() {
    return UP.has(document.body.dataset.callState || "idle");
  }

  async poll() {
    const pc = this.media.pc;
    if (!pc || !this.callUp()) {
      this.local = null;
      this.previous = null;
      this.render();
      return;
    }
    let inbound = null;
    let rtt = null;
    const stats = await pc.getStats();
    stats.forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") inbound = report;
      if (report.type === "remote-inbound-rtp" && report.roundTripTime !== undefined) rtt = report.roundTripTime * 1000;
      if (rtt === null && report.type === "candidate-pair" && report.nominated && report.currentRoundTripTime !== undefined) {
        rtt = report.currentRoundTripTime * 1000;
      }
    });
    if (!inbound) return;
    const received = inbound.packetsReceived || 0;
    const lost = Math.max(0, inbound.packetsLost || 0);
    let loss = 0;
    if (this.previous) {
      const got = received - this.previous.received;
      const missed = lost - this.previous.lost;
      loss = got + missed > 0 ? Math.max(0, missed) / (got + missed) : 0;
    }
    this.previous = { received, lost };
    const jitter = (inbound.jitter || 0) * 1000;
    this.local = { loss, jitter, rtt, state: qualityState(mos(loss, jitter, rtt)) };
    this.render();
    const callId = this.ui.selectedId;
    if (callId && Date.now() - this.sentAt >= STATS_EVERY_MS) {
      this.sentAt = Date.now();
      this.socket.send("quality.stats", { call_id: callId, loss, jitter, rtt });
    }
  }

  render() {
    if (!this.callUp()) {
      this.node.hidden = true;
      return;
    }
    const fromServer = this.server.get(this.ui.selectedId);
    const states = [fromServer?.state, this.local?.state].filter(Boolean);
    if (!states.length) {
      this.node.hidden = true;
      return;
    }
    const state = states.reduce((a, b) => (RANK[b] > RANK[a] ? b : a));
    this.node.dataset.state = state;
    if (fromServer) this.node.dataset.mos = String(fromServer.mos);
    this.node.querySelector(".quality-text").textContent = this.texts[state] || state;
    this.node.title = fromServer ? `MOS ${fromServer.mos.toFixed(1)} / ${fromServer.loss}% / ${fromServer.jitter} ms` : "";
    this.node.hidden = false;
  }
}

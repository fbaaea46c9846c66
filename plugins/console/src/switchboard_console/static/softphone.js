// Switchboard console: the browser softphone (docs/softphone.md). Signalling goes over
// the console's WebSocket (/console/softphone); the media is a WebRTC peer connection to
// Switchboard itself, which offers (G.711 first) each time a call rings this agent.
(function () {
  "use strict";
  var panel = document.getElementById("softphone");
  if (!panel) return;
  var $ = function (sel) { return panel.querySelector(sel); };
  var audio = $(".sp-audio");
  var ws = null;
  var retry = 1000;
  var take = false; // ask for the softphone when another tab has it
  var legs = {}; // leg id -> {ring, pc, mic}
  var current = null; // the leg answered (or being answered)
  var ringing = null; // the leg ringing, shown with Answer/Decline
  var started = 0;
  var timer = null;
  var unlocked = false;
  var tone = null;
  var consulting = false; // talking to a colleague first (warm transfer)

  function label(name) { return panel.dataset["l" + name.charAt(0).toUpperCase() + name.slice(1)] || name; }
  function msg(name) { return panel.dataset["m" + name.charAt(0).toUpperCase() + name.slice(1)] || name; }
  function note(text) { $(".sp-note").textContent = text || ""; }
  function state(name) {
    panel.dataset.state = name;
    $(".sp-state").textContent = label(name.replace("-", ""));
    $(".sp-ringing").hidden = name !== "ringing";
    $(".sp-incall").hidden = name !== "incall" && name !== "held";
    $("[data-sp=take]").hidden = name !== "elsewhere";
    if (name !== "ringing") ringtone(false);
    popButtons();
  }
  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  // -- the ringtone: browsers let a page make sound only after the user's first gesture --
  function unlock() {
    if (unlocked) return;
    unlocked = true;
    try { tone = { ctx: new (window.AudioContext || window.webkitAudioContext)(), osc: null }; } catch (e) { tone = null; }
    if (ringing) ringtone(true);
    if (panel.dataset.state === "ringing" && $(".sp-note").textContent === msg("unlock")) note("");
  }
  document.addEventListener("click", unlock, true);
  document.addEventListener("keydown", unlock, true);
  function ringtone(on) {
    if (!on) {
      if (tone && tone.osc) { tone.osc.stop(); tone.osc = null; }
      return;
    }
    if (!unlocked) { note(msg("unlock")); return; }
    if (!tone || tone.osc) return;
    var ctx = tone.ctx, osc = ctx.createOscillator(), gain = ctx.createGain();
    osc.frequency.value = 440;
    gain.gain.value = 0;
    for (var t = 0; t < 60; t += 3) { // 1 s on, 2 s off, for a minute at most
      gain.gain.setValueAtTime(0.2, ctx.currentTime + t);
      gain.gain.setValueAtTime(0, ctx.currentTime + t + 1);
    }
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    tone.osc = osc;
  }

  // -- the call timer -----------------------------------------------------------------
  function clock(on) {
    clearInterval(timer);
    var out = $(".sp-timer");
    if (!on) { out.textContent = ""; return; }
    started = Date.now();
    var show = function () {
      var s = Math.floor((Date.now() - started) / 1000);
      out.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    };
    show();
    timer = setInterval(show, 1000);
  }

  // -- the pop card gains Answer and Decline while its call rings here ----------------
  function popButtons() {
    var pop = document.getElementById("pop");
    if (!pop) return;
    pop.querySelectorAll(".sp-pop").forEach(function (el) { el.remove(); });
    if (!ringing || panel.dataset.state !== "ringing") return;
    var call = legs[ringing] && legs[ringing].ring.call;
    if (!call) return;
    var card = pop.querySelector('[data-call="' + CSS.escape(call) + '"]');
    if (!card) return;
    var box = document.createElement("p");
    box.className = "sp-pop";
    ["answer", "decline"].forEach(function (what) {
      var b = $("[data-sp=" + what + "]").cloneNode(true);
      b.dataset.testid = "pop-" + what;
      b.setAttribute("data-testid", "pop-" + what);
      b.addEventListener("click", what === "answer" ? answer : decline);
      box.appendChild(b);
    });
    card.appendChild(box);
  }
  var pop = document.getElementById("pop");
  if (pop && window.MutationObserver) {
    new MutationObserver(function (changes) {
      if (changes.some(function (c) { return Array.prototype.some.call(c.addedNodes, function (n) { return n.classList && n.classList.contains("pop"); }); })) popButtons();
    }).observe(pop, { childList: true });
  }

  // -- signalling -----------------------------------------------------------------------
  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(scheme + "//" + location.host + "/console/softphone");
    ws.onopen = function () {
      retry = 1000;
      ws.send(JSON.stringify({ type: "hello", csrf: panel.dataset.csrf, take: take }));
    };
    ws.onmessage = function (e) { received(JSON.parse(e.data)); };
    ws.onclose = function () {
      ws = null;
      if (panel.dataset.state !== "elsewhere") {
        // a call whose media still flows goes on; signalling comes back by itself
        if (current) note(msg("reconnecting")); else state("offline");
      }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  function received(m) {
    if (m.type === "ready") {
      take = false;
      if (current) { note(""); } else { state("ready"); note(""); }
    } else if (m.type === "busy" || m.type === "replaced") {
      Object.keys(legs).forEach(drop);
      state("elsewhere");
      note(msg("elsewhere"));
    } else if (m.type === "ring") {
      // the offer follows in a moment (message "offer"); Answer waits for it
      var leg = { ring: m, pc: null, mic: null, offer: null };
      leg.offered = new Promise(function (done) { leg.got = done; });
      legs[m.leg] = leg;
      if (!current) {
        ringing = m.leg;
        $(".sp-caller").textContent = m.caller + (m.number ? " · " + m.number : "");
        state("ringing");
        ringtone(true);
        // the agent's own click-to-call, a supervisor joining a call: their click answered
        if (m.kind === "dial" || m.kind === "supervise") answer();
      }
    } else if (m.type === "offer") {
      if (legs[m.leg]) { legs[m.leg].offer = m; legs[m.leg].got(m); }
    } else if (m.type === "connected") {
      if (m.leg === current) { state("incall"); note(""); clock(true); }
    } else if (m.type === "ended") {
      drop(m.leg);
      note(msg("ended") + (m.reason ? ": " + m.reason : ""));
    } else if (m.type === "done") {
      if (m.action === "hold") { state("held"); press("hold", true); }
      if (m.action === "resume") { state("incall"); press("hold", false); consulting = false; }
      if (m.action === "consult") { consulting = true; press("hold", true); note(msg("consulted")); }
      if (m.action === "transfer") { consulting = false; note(""); }
    } else if (m.type === "error") {
      note(m.message);
    }
  }

  function drop(id) {
    var leg = legs[id];
    if (!leg) return;
    delete legs[id];
    if (leg.pc) leg.pc.close();
    if (leg.mic) leg.mic.getTracks().forEach(function (t) { t.stop(); });
    if (id === current) { current = null; consulting = false; clock(false); audio.srcObject = null; press("mute", false); press("hold", false); }
    if (id === ringing) ringing = null;
    if (!current) {
      var next = Object.keys(legs).find(function (k) { return !legs[k].mic; });
      if (next) { ringing = next; $(".sp-caller").textContent = legs[next].ring.caller; state("ringing"); ringtone(true); }
      else { $(".sp-caller").textContent = ""; state(ws ? "ready" : "offline"); }
    }
  }

  function press(what, on) { $("[data-sp=" + what + "]").setAttribute("aria-pressed", on ? "true" : "false"); }

  // -- answering: the microphone, then the SDP answer (ICE candidates gathered first) ---
  async function answer() {
    var id = ringing, leg = legs[id];
    if (!leg) return;
    unlock();
    if (!window.isSecureContext || !navigator.mediaDevices) { note(msg("insecure")); return; }
    var mic;
    try {
      mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      note(e && e.name === "NotFoundError" ? msg("nomic") : msg("denied"));
      return;
    }
    if (!legs[id]) { mic.getTracks().forEach(function (t) { t.stop(); }); return; } // it ended meanwhile
    leg.mic = mic; current = id; ringing = null;
    panel.dataset.kind = leg.ring.kind || "call"; // a supervisor's leg: no hold, keys, transfer
    state("connecting");
    var offer = await leg.offered;
    if (!legs[id]) return;
    var pc = new RTCPeerConnection({ iceServers: offer.ice_servers || [] });
    leg.pc = pc;
    pc.ontrack = function (e) { audio.srcObject = e.streams[0] || new MediaStream([e.track]); };
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    mic.getTracks().forEach(function (t) { pc.addTrack(t, mic); });
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc, 3000);
    send({ type: "answer", leg: id, sdp: pc.localDescription.sdp });
  }
  function gathered(pc, ms) {
    return new Promise(function (done) {
      if (pc.iceGatheringState === "complete") return done();
      var t = setTimeout(done, ms);
      pc.addEventListener("icegatheringstatechange", function () {
        if (pc.iceGatheringState === "complete") { clearTimeout(t); done(); }
      });
    });
  }
  function decline() {
    var id = ringing;
    if (!id) return;
    send({ type: "decline", leg: id });
    drop(id);
  }

  // -- in a call ------------------------------------------------------------------------
  function callId() { return current && legs[current] ? legs[current].ring.call : null; }
  panel.addEventListener("click", function (e) {
    var b = e.target.closest("button");
    if (!b) return;
    var what = b.dataset.sp, key = b.dataset.key;
    if (key && current) { send({ type: "dtmf", leg: current, digits: key }); return; }
    if (what === "answer") answer();
    else if (what === "decline") decline();
    else if (what === "take") { take = true; send({ type: "take" }); if (!ws) connect(); }
    else if (what === "hangup" && current) { send({ type: "hangup", leg: current }); drop(current); note(msg("ended")); }
    else if (what === "mute" && current) {
      var on = b.getAttribute("aria-pressed") !== "true";
      legs[current].mic.getAudioTracks().forEach(function (t) { t.enabled = !on; });
      press("mute", on);
    } else if (what === "hold" && current) {
      // on hold, or talking to a colleague first: back to the customer
      var back = panel.dataset.state === "held" || consulting;
      send({ type: back ? "resume" : "hold", call: callId() });
    } else if ((what === "transfer" || what === "consult") && current) {
      var to = $("[name=to]").value.trim();
      if (!to) return;
      note(msg(what === "transfer" ? "transferring" : "consulting"));
      send({ type: what, call: callId(), to: to });
    }
  });
  $(".sp-transfer").addEventListener("submit", function (e) { e.preventDefault(); });

  // click-to-call from a card: posted without leaving the page, so that this softphone
  // (the page's WebSocket) is still here when the call rings it first
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.matches || !form.matches('form[action$="/call"]') || !ws) return;
    e.preventDefault();
    unlock();
    fetch(form.action, { method: "POST", body: new FormData(form), headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (r) { note(r.ok ? msg("calling") : r.body.detail); })
      .catch(function (err) { note(String(err)); });
  });

  state("offline");
  connect();
})();

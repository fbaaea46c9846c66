// Switchboard console: the dashboard's "Calls now" (reloaded every 3 s) and the
// supervisor's Listen / Whisper / Barge in buttons (docs/softphone.md).
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) return;
  var list = box.querySelector(".live-list");
  var note = box.querySelector(".live-note");
  var busy = false;
  function reload() {
    if (busy) return;
    fetch("/console/live", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null && !busy) list.innerHTML = html; })
      .catch(function () {});
  }
  setInterval(reload, 3000);
  box.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-supervise]");
    if (!b) return;
    var row = b.closest("[data-call]");
    var body = new FormData();
    body.append("mode", b.dataset.supervise);
    busy = true;
    note.textContent = box.dataset.mJoining;
    fetch("/console/calls/" + encodeURIComponent(row.dataset.call) + "/supervise", {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": box.dataset.csrf, Accept: "application/json" }
    })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
      .then(function (r) { note.textContent = r.ok ? "" : r.j.detail; })
      .catch(function (err) { note.textContent = String(err); })
      .then(function () { busy = false; reload(); });
  });
})();

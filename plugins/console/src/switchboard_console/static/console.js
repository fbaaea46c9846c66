// Switchboard console: the screen pop. Cards arrive rendered (event "pop") on the
// console's own event stream; this script only places them and marks their calls' state.
// Also: a transcript line's time plays the call's recording from there.
document.addEventListener("click", function (e) {
  var button = e.target.closest && e.target.closest("[data-seek]");
  if (!button) return;
  var box = button.closest(".speech");
  var audio = box && box.parentElement.querySelector("audio");
  if (!audio) return;
  audio.currentTime = parseFloat(button.dataset.seek) || 0;
  audio.play();
});
(function () {
  "use strict";
  var pop = document.getElementById("pop");
  if (!pop || !window.EventSource) return;
  var source = new EventSource("/console/events");
  source.addEventListener("pop", function (e) {
    var holder = document.createElement("div");
    holder.innerHTML = e.data; // HTML escaped by the server's templates
    var card = holder.firstElementChild;
    if (!card) return;
    var old = pop.querySelector('[data-call="' + CSS.escape(card.dataset.call) + '"]');
    if (old) old.remove();
    card.dataset.shownAt = String(Date.now());
    var close = card.querySelector("[data-close]");
    if (close) close.addEventListener("click", function () { card.remove(); });
    pop.prepend(card);
  });
  source.addEventListener("call", function (e) {
    var state = JSON.parse(e.data);
    var card = pop.querySelector('[data-call="' + CSS.escape(state.call_id) + '"]');
    if (!card) return;
    card.dataset.state = state.state;
    var label = card.querySelector(".state");
    if (label) label.textContent = pop.dataset["label" + state.state.charAt(0).toUpperCase() + state.state.slice(1)] || state.state;
  });
})();

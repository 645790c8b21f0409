// Corral console: the only script. Pages are complete without it; it adds two things.
// 1. Live parts: an element with data-live="URL" follows that URL's server-sent events;
//    each `html` event replaces its content (or is appended, with data-live-mode="append").
// 2. Forms with data-confirm ask before they submit (the server asks again where it matters).
(function () {
  "use strict";
  function follow(el) {
    var append = el.getAttribute("data-live-mode") === "append";
    var source = new EventSource(el.getAttribute("data-live"));
    source.addEventListener("html", function (e) {
      var html = JSON.parse(e.data).html;
      if (append) { el.insertAdjacentHTML("beforeend", html); } else { el.innerHTML = html; }
      el.setAttribute("data-live-updated", String(Date.now()));
    });
    source.addEventListener("end", function () { source.close(); el.setAttribute("data-live-state", "ended"); });
    source.addEventListener("error", function () {
      // A replacing part reconnects by itself; an appending one would repeat itself.
      if (append) { source.close(); el.setAttribute("data-live-state", "closed"); }
    });
  }
  document.querySelectorAll("[data-live]").forEach(follow);
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
})();

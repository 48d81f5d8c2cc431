/* One date format across the console: "2026-12-07 12:33:38 CET" in the reader's time zone
   (the server writes the same form in UTC; the ISO instant stays in the tooltip). */
(function () {
  "use strict";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function zone(when) {
    try {
      var part = new Intl.DateTimeFormat([], { timeZoneName: "short" }).formatToParts(when)
        .filter(function (p) { return p.type === "timeZoneName"; })[0];
      return part ? " " + part.value : "";
    } catch (e) { return ""; }
  }
  function format(when, timeOnly) {
    var time = pad(when.getHours()) + ":" + pad(when.getMinutes()) + ":" + pad(when.getSeconds());
    if (timeOnly) return time;
    return when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate()) + " " + time + zone(when);
  }
  function render(root, selector) {
    (root || document).querySelectorAll(selector).forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.textContent = format(when, el.getAttribute("data-local") === "time");
      el.title = when.toISOString();
    });
  }
  window.mandateTime = { format: format, render: render };
})();

/* The inbox, the review and request pages, the Agents page: local times, live refresh
   (the inbox's stream of server-sent events, polling elsewhere and as its fallback), the tab
   title's count, desktop notifications, filters, bulk selection, copy buttons and keyboard
   shortcuts. Everything works without this script; it only makes the pages quicker to use. */
(function () {
  "use strict";

  var POLL_MS = 4000;  // the live endpoint is one small query: ask often
  var CLOCK_MS = 15000;
  var NOTIFY_KEY = "mandate.inbox.notify";  // localStorage: "on" once the person opted in

  /* --- times: absolute times in the reader's zone, ages and time left kept current ------- */
  function span(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 45) return "less than a minute";
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + (minutes === 1 ? " minute" : " minutes");
    var hours = Math.floor(minutes / 60);
    if (hours < 24) return hours + (hours === 1 ? " hour" : " hours") + (minutes % 60 ? ", " + (minutes % 60) + " min" : "");
    var days = Math.floor(hours / 24);
    return days + (days === 1 ? " day" : " days") + (hours % 24 ? ", " + (hours % 24) + (hours % 24 === 1 ? " hour" : " hours") : "");
  }

  function renderTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.textContent = window.mandateTime.format(when, el.getAttribute("data-local") === "time");  // time.js
        el.title = when.toISOString();
      }
    });
    root.querySelectorAll("time[data-age]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.textContent = span((Date.now() - when.getTime()) / 1000);
        el.title = window.mandateTime.format(when) + " (" + when.toISOString() + ")";
      }
    });
    root.querySelectorAll("time[data-left]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      var seconds = (when.getTime() - Date.now()) / 1000;
      if (el.getAttribute("data-left") === "past") el.textContent = span(-seconds) + " ago";
      else el.textContent = seconds > 0 ? span(seconds) : "a moment";
      el.title = window.mandateTime.format(when) + " (" + when.toISOString() + ")";
    });
  }

  /* --- filters submit as soon as they change ------------------------------------------- */
  function bindFilters(root) {
    root.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      if (select.dataset.bound) return;
      select.dataset.bound = "1";
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  /* --- bulk acknowledge: select FYI cards ---------------------------------------------- */
  function bindBulk(root) {
    root.querySelectorAll("[data-select-all]").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var boxes = document.querySelectorAll("input[data-fyi-select]");
        var all = Array.prototype.every.call(boxes, function (b) { return b.checked; });
        boxes.forEach(function (b) { b.checked = !all; });
      });
    });
  }

  /* --- copy buttons (Agents page) ------------------------------------------------------ */
  function bindCopy(root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var source = document.querySelector(button.getAttribute("data-copy"));
        if (!source) return;
        var text = source.textContent.trim();
        var done = function () {
          var label = button.textContent;
          button.textContent = "Copied";
          window.setTimeout(function () { button.textContent = label; }, 1500);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
        } else {
          selectText(source);
        }
      });
    });
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  /* --- deciding: reject and request changes need a reason ------------------------------ */
  var armed = null;

  function decisionForm() {
    return document.getElementById("review-form") || document.getElementById("request-form") || document.getElementById("action-form");
  }

  function notesField() { return document.getElementById("id_notes") || document.getElementById("id_comment"); }

  function errorField() { return document.getElementById("notes-error") || document.getElementById("comment-error"); }

  var NEEDS = {
    comment: "Say why: the reason is recorded in the evidence chain and sent to the agent.",
    input: "Write the answer the agent asked for.",
    choice: "Pick one of the options."
  };

  function missing(form, submitter) {
    if (!submitter) return null;
    if (submitter.value === "reject" && submitter.name === "decision") {
      var notes = document.getElementById("id_notes");
      return notes && !notes.value.trim() ? { field: notes, text: "Say why you reject it: the notes are recorded in the evidence chain." } : null;
    }
    var needs = submitter.getAttribute("data-needs");
    if (needs === "comment") {
      var comment = document.getElementById("id_comment");
      if (comment && !comment.value.trim()) return { field: comment, text: NEEDS.comment };
    } else if (needs === "input") {
      var input = document.getElementById("id_input");
      if (input && !input.value.trim()) return { field: input, text: NEEDS.input };
    } else if (needs === "choice") {
      if (!form.querySelector("input[name=choice]:checked")) {
        return { field: form.querySelector("input[name=choice]"), text: NEEDS.choice };
      }
    }
    return null;
  }

  function bindDecisionForm() {
    var form = decisionForm();
    if (!form || form.dataset.bound) return;
    form.dataset.bound = "1";
    form.addEventListener("submit", function (event) {
      var submitter = event.submitter;
      var problem = missing(form, submitter);
      if (problem) {
        event.preventDefault();
        var error = errorField();
        if (error) {
          error.textContent = problem.text;
          error.hidden = false;
        }
        if (problem.field) {
          problem.field.setAttribute("aria-invalid", "true");
          problem.field.focus();
        }
        return;
      }
      form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      if (submitter) {
        var keep = document.createElement("input");
        keep.type = "hidden";
        keep.name = submitter.name;
        keep.value = submitter.value;
        form.appendChild(keep);  // disabled buttons are not submitted
      }
    });
  }

  function actionButton(key) {
    var form = decisionForm();
    if (!form) return null;
    if (form.id === "review-form") {
      return document.getElementById(key === "a" ? "review-approve" : key === "r" ? "review-reject" : "");
    }
    var button = form.querySelector("button[data-key='" + key + "']");
    return button && !button.disabled ? button : null;
  }

  function arm(key) {
    var button = actionButton(key);
    if (!button) return false;
    armed = button;
    decisionForm().querySelectorAll("button[type=submit]").forEach(function (b) {
      b.classList.toggle("review-armed", b === button);
    });
    var needs = button.getAttribute("data-needs") || (button.value === "reject" ? "comment" : "");
    var field = needs === "comment" ? notesField() : needs === "input" ? document.getElementById("id_input") : null;
    if (needs === "choice") field = decisionForm().querySelector("input[name=choice]");
    if (field && !(field.value || "").trim()) field.focus();
    else if (field && needs === "choice") field.focus();
    else button.focus();
    return true;
  }

  /* --- live refresh: new cards, votes and decisions made by someone else --------------- */
  function busyInside(el) {
    // A bulk selection, a chosen option or a written comment is never replaced under you.
    if (el.querySelector("input[type=checkbox]:checked, input[type=radio]:checked")) return true;
    if (Array.prototype.some.call(el.querySelectorAll("textarea"), function (t) { return t.value.trim(); })) return true;
    var active = document.activeElement;
    return Boolean(active && el.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName));
  }

  var refreshing = false;

  function refresh(poller, version) {
    var live = document.querySelectorAll("[data-live]");
    if (!live.length || refreshing) return;
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var skipped = false;
        live.forEach(function (el) {
          var next = fresh.getElementById(el.id);
          if (!next || next.dataset.version === el.dataset.version) return;
          // A decision made elsewhere always shows; a changed list waits while you type or select.
          var always = next.hasAttribute("data-live-always") || el.hasAttribute("data-live-always");
          if (!always && busyInside(el)) { skipped = true; return; }
          var before = decidableCards(el);
          el.innerHTML = next.innerHTML;
          el.dataset.version = next.dataset.version;
          if (next.dataset.waiting !== undefined) {
            el.dataset.waiting = next.dataset.waiting;
            showWaiting(next.dataset.waiting);
          }
          // Without the stream, the page itself says which cards you can decide are new.
          if (!stream.open) {
            notify(decidableCards(el).filter(function (card) { return !before.some(function (b) { return b.id === card.id; }); }));
          }
          if (next.hasAttribute("data-live-always")) el.setAttribute("data-live-always", "");
          el.classList.remove("inbox-updated");
          void el.offsetWidth;  // restart the highlight
          el.classList.add("inbox-updated");
          bindAll(el);
        });
        var freshPoller = fresh.querySelector("[data-live-url]");
        if (poller && !skipped) {
          poller.dataset.liveVersion = version || (freshPoller && freshPoller.dataset.liveVersion) || poller.dataset.liveVersion;
        }
      })
      .catch(function () { /* offline for a moment: try again next time */ })
      .then(function () { refreshing = false; });
  }

  function poll() {
    var poller = document.querySelector("[data-live-url]");
    // A hidden tab polls only for someone waiting for desktop notifications.
    if (!poller || (document.hidden && !notifying())) return;
    fetch(poller.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        var current = poller.dataset.liveVersion || poller.dataset.version;
        if (body && body.version && body.version !== current) refresh(poller, body.version);
      })
      .catch(function () { /* offline for a moment */ });
  }

  /* --- the inbox's stream: server-sent events; polling when it is refused or unsupported - */
  var stream = { open: false, wanted: "" };
  var pollTimer = null;

  function liveMode(mode) {  // "stream" or "poll", for anyone asking how the page stays live
    var poller = document.querySelector("[data-live-url]");
    if (poller) poller.setAttribute("data-live-mode", mode);
  }

  function startPolling() {
    liveMode("poll");
    if (pollTimer === null) pollTimer = window.setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer !== null) {
      window.clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function currentVersion(poller) { return poller.dataset.liveVersion || poller.dataset.version; }

  function listen(poller) {
    var source;
    try {
      source = new EventSource(poller.dataset.streamUrl);
    } catch (error) {
      startPolling();
      return;
    }
    source.addEventListener("open", function () {
      stream.open = true;
      stopPolling();
      liveMode("stream");
    });
    source.addEventListener("inbox", function (event) {
      var body;
      try { body = JSON.parse(event.data); } catch (error) { return; }
      showWaiting(body.waiting);
      notify(body.arrived || []);
      stream.wanted = body.version || "";
      if (stream.wanted && stream.wanted !== currentVersion(poller)) refresh(poller, stream.wanted);
    });
    source.addEventListener("end", function () {  // signed out: the page's own requests say what next
      source.close();
      stream.open = false;
      startPolling();
    });
    source.addEventListener("error", function () {
      // Refused (Django's 204, a 403, not a stream): closed for good. Reconnecting: poll meanwhile.
      stream.open = false;
      startPolling();
    });
    // A refresh skipped (you were typing, or one was already on its way) is tried again.
    window.setInterval(function () {
      if (stream.open && stream.wanted && stream.wanted !== currentVersion(poller)) refresh(poller, stream.wanted);
    }, POLL_MS);
  }

  /* --- the tab title: "(3) Inbox · Mandate" ----------------------------------------------- */
  function showWaiting(count) {
    var n = parseInt(count, 10);
    if (isNaN(n)) return;
    var title = document.title.replace(/^\(\d+\)\s*/, "");
    document.title = (n > 0 ? "(" + n + ") " : "") + title;
  }

  /* --- desktop notifications: opt-in, remembered in localStorage ------------------------- */
  function notificationsSupported() { return "Notification" in window; }

  function stored() {
    try { return window.localStorage.getItem(NOTIFY_KEY); } catch (error) { return null; }
  }

  function store(value) {
    try { window.localStorage.setItem(NOTIFY_KEY, value); } catch (error) { /* private mode */ }
  }

  function notifying() {
    return notificationsSupported() && Notification.permission === "granted" && stored() === "on";
  }

  function paintNotify(button) {
    var on = notifying();
    var blocked = notificationsSupported() && Notification.permission === "denied";
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.textContent = on ? "Notifications on" : blocked ? "Notifications blocked" : "Notify me of new cards";
    button.title = on
      ? "A desktop notification when a card you can decide arrives. Click to turn them off."
      : blocked
        ? "This browser blocks notifications from this site: allow them in its site settings."
        : "Get a desktop notification when a card you can decide arrives.";
  }

  function bindNotify(root) {
    if (!notificationsSupported()) return;  // the button stays hidden
    root.querySelectorAll("[data-notify]").forEach(function (button) {
      button.hidden = false;
      paintNotify(button);
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        if (notifying()) {
          store("off");
          paintNotify(button);
          return;
        }
        Promise.resolve(Notification.requestPermission()).then(function (permission) {
          if ((permission || Notification.permission) === "granted") store("on");
          paintNotify(button);
        });
      });
    });
  }

  var notified = {};

  function notify(cards) {
    if (!notifying()) return;
    cards.forEach(function (card) {
      if (!card.id || notified[card.id]) return;
      notified[card.id] = true;
      var note = new Notification(card.title || "A new card", {
        body: [card.kind, card.summary].filter(Boolean).join(" · "),
        tag: "mandate-card-" + card.id
      });
      note.onclick = function () {
        window.focus();
        if (card.url) window.location.href = card.url;
        note.close();
      };
    });
  }

  function decidableCards(root) {
    return Array.prototype.map.call(root.querySelectorAll("article.inbox-card[data-may-act]"), function (article) {
      var link = article.querySelector("a[data-card]");
      var title = article.querySelector(".inbox-card-title");
      var kind = article.querySelector(".inbox-kind");
      var summary = article.querySelector(".inbox-summary");
      return {
        id: article.getAttribute("data-card-id"),
        title: title ? title.textContent.trim() : "",
        kind: kind ? kind.textContent.trim() : "",
        summary: summary ? summary.textContent.trim() : "",
        url: link ? link.getAttribute("href") : ""
      };
    });
  }

  /* --- keyboard ------------------------------------------------------------------------ */
  function cards() { return Array.prototype.slice.call(document.querySelectorAll("a[data-card]")); }

  function moveCard(step) {
    var list = cards();
    if (!list.length) return false;
    var index = list.indexOf(document.activeElement);
    var next = index < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, index + step));
    list[next].focus();
    list[next].scrollIntoView({ block: "nearest" });
    return true;
  }

  function toggleSelected() {
    var active = document.activeElement;
    var card = active && active.closest ? active.closest("article.inbox-card") : null;
    var box = card ? card.querySelector("input[data-fyi-select]") : null;
    if (!box) return false;
    box.checked = !box.checked;
    return true;
  }

  function follow(key) {
    var link = document.querySelector("a[data-key='" + key + "']");
    if (link) window.location.href = link.href;
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) || target.isContentEditable;
    if (typing) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && armed && decisionForm()) {
        event.preventDefault();
        decisionForm().requestSubmit(armed);
      } else if (event.key === "Escape") {
        target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    switch (event.key) {
      case "j":
      case "n":
        if (!moveCard(1)) follow("j");
        break;
      case "k":
        if (!moveCard(-1)) follow("k");
        break;
      case "u":
        follow("u");
        break;
      case "/":
        var search = document.querySelector("input[data-search]");
        if (!search) return;
        search.focus();
        search.select();
        break;
      case "x":
        if (!toggleSelected()) return;
        break;
      case "a":
      case "r":
      case "c":
      case "w":
        if (!arm(event.key)) return;
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  function bindAll(root) {
    renderTimes(root);
    bindFilters(root);
    bindBulk(root);
    bindCopy(root);
    bindNotify(root);
    bindDecisionForm();
  }

  function start() {
    bindAll(document);
    window.setInterval(function () { renderTimes(document); }, CLOCK_MS);
    var poller = document.querySelector("[data-live-url]");
    if (poller && poller.dataset.streamUrl && window.EventSource) listen(poller);
    else startPolling();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

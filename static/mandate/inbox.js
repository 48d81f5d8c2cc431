/* The inbox, the review and request pages, the Agents page: local times, live refresh,
   filters, bulk selection, copy buttons and keyboard shortcuts. Everything works without
   this script; it only makes the pages quicker to use. */
(function () {
  "use strict";

  var POLL_MS = 4000;  // the live endpoint is one small query: ask often
  var CLOCK_MS = 15000;

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

  function decisionForm() { return document.getElementById("review-form") || document.getElementById("request-form"); }

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
          el.innerHTML = next.innerHTML;
          el.dataset.version = next.dataset.version;
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
    if (!poller || document.hidden) return;
    fetch(poller.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        var current = poller.dataset.liveVersion || poller.dataset.version;
        if (body && body.version && body.version !== current) refresh(poller, body.version);
      })
      .catch(function () { /* offline for a moment */ });
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
    bindDecisionForm();
  }

  function start() {
    bindAll(document);
    window.setInterval(function () { renderTimes(document); }, CLOCK_MS);
    window.setInterval(poll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

/* The inbox and the review page: local times, live refresh, filters, keyboard shortcuts.
   Everything works without this script; it only makes the pages quicker to use. */
(function () {
  "use strict";

  var REFRESH_MS = 15000;

  /* --- times: absolute times in the reader's zone, ages kept current ------------------- */
  function ago(when) {
    var seconds = Math.max(0, Math.round((Date.now() - when.getTime()) / 1000));
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
        el.textContent = el.getAttribute("data-local") === "time"
          ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
          : when.toLocaleString([], {
            year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
          });
        el.title = when.toString();
      }
    });
    root.querySelectorAll("time[data-age]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.textContent = ago(when);
        el.title = when.toLocaleString() + " (" + when.toISOString() + ")";
      }
    });
  }

  /* --- filters submit as soon as they change ------------------------------------------- */
  function bindFilters(root) {
    root.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  /* --- the review form: rejecting needs a reason --------------------------------------- */
  var armed = null;

  function reviewForm() { return document.getElementById("review-form"); }

  function bindReviewForm() {
    var form = reviewForm();
    if (!form || form.dataset.bound) return;
    form.dataset.bound = "1";
    form.addEventListener("submit", function (event) {
      var submitter = event.submitter;
      var notes = document.getElementById("id_notes");
      if (submitter && submitter.value === "reject" && notes && !notes.value.trim()) {
        event.preventDefault();
        var error = document.getElementById("notes-error");
        if (error) {
          error.textContent = "Say why you reject it: the notes are recorded in the evidence chain.";
          error.hidden = false;
        }
        notes.setAttribute("aria-invalid", "true");
        notes.focus();
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

  function arm(decision) {
    var approve = document.getElementById("review-approve");
    var reject = document.getElementById("review-reject");
    if (!approve || !reject) return;
    armed = decision;
    approve.classList.toggle("review-armed", decision === "approve");
    reject.classList.toggle("review-armed", decision === "reject");
    if (decision === "approve") {
      approve.focus();
    } else {
      var notes = document.getElementById("id_notes");
      if (notes && !notes.value.trim()) notes.focus();
      else reject.focus();
    }
  }

  /* --- live refresh: new cards, decisions made by someone else ------------------------- */
  function busyInside(el) {
    var active = document.activeElement;
    if (!active || !el.contains(active)) return false;
    return /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  function refresh() {
    var live = document.querySelectorAll("[data-live]");
    if (!live.length || document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        live.forEach(function (el) {
          var next = fresh.getElementById(el.id);
          if (!next || next.dataset.version === el.dataset.version) return;
          // A decision made elsewhere always shows; a changed inbox waits while you type.
          if (!el.hasAttribute("data-live-always") && busyInside(el)) return;
          el.innerHTML = next.innerHTML;
          el.dataset.version = next.dataset.version;
          el.classList.add("inbox-updated");
          renderTimes(el);
          bindFilters(el);
          bindReviewForm();
        });
        var state = fresh.getElementById("review-state");
        var current = document.getElementById("review-state");
        if (state && current && state.textContent !== current.textContent) current.outerHTML = state.outerHTML;
      })
      .catch(function () { /* offline for a moment: try again next time */ });
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

  function follow(key) {
    var link = document.querySelector("a[data-key='" + key + "']");
    if (link) window.location.href = link.href;
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) || target.isContentEditable;
    if (typing) {
      if (target.id === "id_notes" && event.key === "Enter" && (event.ctrlKey || event.metaKey) && armed) {
        event.preventDefault();
        var button = document.getElementById(armed === "approve" ? "review-approve" : "review-reject");
        if (button) reviewForm().requestSubmit(button);
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
      case "a":
        arm("approve");
        break;
      case "r":
        arm("reject");
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  function start() {
    renderTimes(document);
    bindFilters(document);
    bindReviewForm();
    window.setInterval(function () {
      renderTimes(document);
      refresh();
    }, REFRESH_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

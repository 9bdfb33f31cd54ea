// workflow web UI: the few things a server-rendered page cannot do alone. Plain JS, no library.
// - "/" focuses the search box (from anywhere but a text field);
// - live updates by server-sent events (elements with data-live);
// - actions confirmed in a dialog, then sent without leaving the page (the open page
//   follows the work's status through its live stream).
"use strict";

document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target.isContentEditable;
  if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
    const search = document.getElementById("search");
    if (search) { event.preventDefault(); search.focus(); search.select(); }
  }
});

function text(tag, value, className) {
  const element = document.createElement(tag);
  element.textContent = value == null ? "" : String(value);  // always text, never markup
  if (className) element.className = className;
  return element;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").replace("Z", "Z") : "";
}

function follow(url, handlers) {
  const source = new EventSource(url);
  const state = document.getElementById("live-state");
  source.onopen = () => { if (state) { state.textContent = "live"; state.classList.remove("off"); } };
  source.onerror = () => { if (state) { state.textContent = "reconnecting…"; state.classList.add("off"); } };
  // "ready": the server listens from here on (the tests wait for it instead of sleeping)
  source.addEventListener("ready", () => { document.body.dataset.live = "ready"; });
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (message) => handle(JSON.parse(message.data)));
  }
  window.addEventListener("pagehide", () => source.close());
  return source;
}

function liveCounts(table) {
  follow(table.dataset.live, {
    unavailable(info) {
      const state = document.getElementById("live-state");
      if (state) { state.textContent = "counts unavailable: " + info.error; state.classList.add("off"); }
    },
    counts(pipelines) {
      const state = document.getElementById("live-state");
      if (state) { state.textContent = "live"; state.classList.remove("off"); }
      const body = table.tBodies[0];
      const statuses = [...table.tHead.rows[0].cells].slice(1).map((cell) => cell.textContent);
      for (const [name, counts] of Object.entries(pipelines)) {
        let row = [...body.rows].find((r) => r.dataset.pipeline === name);
        if (!row) {
          body.querySelector("tr.empty")?.remove();
          row = body.insertRow();
          row.dataset.pipeline = name;
          const link = text("a", name);
          link.href = "/works?q=" + encodeURIComponent("pipeline:" + name);
          row.insertCell().append(link);
          for (const status of statuses) {
            const cell = row.insertCell();
            cell.className = "n";
            cell.dataset.status = status;
          }
        }
        for (const cell of row.querySelectorAll("td[data-status]")) {
          cell.textContent = String(counts[cell.dataset.status] ?? 0);
        }
      }
    },
  });
}

// The parts of a work's page that change with its events, swapped for the server's
// rendering of them (the same escaped HTML a reload would bring), so the timeline, the
// results and the plots follow the log too.
const WORK_PARTS = ["fields", "results", "products-section", "timeline"];

async function refreshWorkParts() {
  const response = await fetch(location.pathname, { credentials: "same-origin" });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const id of WORK_PARTS) {
    const now = document.getElementById(id);
    const next = fresh.getElementById(id);
    if (now && next) now.replaceWith(document.importNode(next, true));
  }
}

function liveWork(box) {
  let shown = document.getElementById("status").textContent;
  follow(box.dataset.live, {
    work(state) {
      if (state.status !== shown) { shown = state.status; refreshWorkParts(); }
      const status = document.getElementById("status");
      status.textContent = state.status;
      status.className = "status s-" + state.status;
      for (const cell of document.querySelectorAll("[data-field]")) {
        if (state[cell.dataset.field] !== undefined) cell.textContent = String(state[cell.dataset.field]);
      }
      const show = (id, visible) => { const form = document.getElementById(id); if (form) form.hidden = !visible; };
      show("cancel-form", !state.finished);
      show("requeue-form", state.status === "failure" || state.status === "cancelled");
      show("priority-form", state.status === "queued");
    },
  });
}

function liveFeed(table) {
  const body = table.tBodies[0];
  follow(table.dataset.live, {
    event(item) {
      const row = document.createElement("tr");
      const link = text("a", item.id, "id");
      link.href = "/works/" + encodeURIComponent(item.id);
      const workCell = document.createElement("td");
      workCell.append(link);
      row.append(text("td", when(item.time), "time"), text("td", item.type), text("td", item.pipeline), workCell,
                 text("td", item.by));
      body.prepend(row);
      while (body.rows.length > 500) body.deleteRow(-1);
    },
  });
}

function confirmThen(form) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = form.dataset.confirm;
  const reason = document.getElementById("confirm-reason");
  reason.value = "";
  document.getElementById("confirm-reason-label").hidden = !("reason" in form.dataset);
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "yes") return;
    const data = new URLSearchParams(new FormData(form));
    if ("reason" in form.dataset && reason.value) data.set("reason", reason.value);
    const notice = document.getElementById("action-result");
    const response = await fetch(form.action, {
      method: "POST", body: data, headers: { Accept: "application/json" }, credentials: "same-origin",
    });
    const answer = await response.json().catch(() => ({ error: response.statusText }));
    if (notice) {
      notice.hidden = false;
      notice.textContent = response.ok ? `${answer.action} sent (by ${answer.by})` : `refused: ${answer.error}`;
      notice.classList.toggle("error", !response.ok);
    }
  };
  dialog.showModal();
}

document.addEventListener("DOMContentLoaded", () => {
  const counts = document.getElementById("pipelines");
  if (counts?.dataset.live) liveCounts(counts);
  const work = document.getElementById("work");
  if (work?.dataset.live) liveWork(work);
  const feed = document.getElementById("feed");
  if (feed?.dataset.live) liveFeed(feed);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => { event.preventDefault(); confirmThen(form); });
  }
  if (location.pathname === "/") document.getElementById("search")?.focus();
});

// The replpool web console. No framework: DOM APIs only, and every string from the server
// goes in through textContent (session output is code anyone wrote; the token lives in this
// origin's sessionStorage, so no worker-made HTML may ever run here).
"use strict";

const TOKEN_KEY = "replpool.token";
const REFRESH_MS = 4000;
let current = null; // the session shown in the session view
let running = new AbortController(); // the session view's running cells: aborted when it changes

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// --- the token: sessionStorage only, never a URL, never localStorage -----------------------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

class ApiFailure extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e && e.message ? `${status} ${e.code}: ${e.message}` : `HTTP ${status}`);
    this.status = status;
    this.category = e && e.category;
  }
}

async function api(method, path, body, options) {
  const { background, ...rest } = options || {};
  const opts = { method, headers: authHeaders(), ...rest, background };
  if (body !== undefined && !(body instanceof Blob) && !(body instanceof File)) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  } else if (body !== undefined) {
    opts.body = body;
  }
  const reply = await fetch(path, opts);
  if (reply.status === 401) needToken(!opts.background);
  if (!reply.ok) {
    let parsed = null;
    try { parsed = await reply.json(); } catch (_) { /* not JSON */ }
    throw new ApiFailure(reply.status, parsed);
  }
  return reply;
}

// Focus moves to the token field only after something the user did: the background refresh
// moving it every few seconds would pull a keyboard user out of whatever they were in.
function needToken(moveFocus) {
  $("auth-msg").textContent = "This server needs a token: type one above.";
  if (moveFocus) $("token").focus();
}

function setupToken() {
  $("token").value = token();
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("auth-msg").textContent = "";
    refreshSessions();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
  });
}

// --- status strip ---------------------------------------------------------------------------

async function refreshStatus() {
  try {
    const h = await (await fetch("/healthz")).json();
    const parts = [`status: ${h.status}`];
    if (h.sessions !== undefined) parts.push(`sessions: ${h.sessions}`);
    if (h.pool) parts.push(`pool: ${summary(h.pool)}`);
    if (h.template !== undefined) parts.push(`template: ${summary(h.template)}`);
    const interps = h.interpreters || [];
    if (interps.length) {
      parts.push("python: " + interps.map((i) =>
        `${i.name} ${i.version}${i.default ? " (default)" : ""}${i.pool ? " pool " + summary(i.pool) : ""}`).join(", "));
      const select = $("python");
      if (select.options.length === 1) {
        for (const i of interps) select.append(el("option", { value: i.name, text: `${i.name} (${i.version})` }));
      }
    }
    $("status").textContent = parts.join(" · ");
  } catch (e) {
    $("status").textContent = "status: unreachable (" + e.message + ")";
  }
}

function summary(v) {
  if (v === null || typeof v !== "object") return String(v);
  return Object.entries(v).filter(([, x]) => typeof x !== "object" || x === null)
    .map(([k, x]) => `${k}=${x}`).join(" ");
}

// --- sessions ---------------------------------------------------------------------------------

function age(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function mib(bytes) { return bytes == null ? "–" : (bytes / 1048576).toFixed(1) + " MiB"; }

async function refreshSessions() {
  let sessions;
  try {
    sessions = (await (await api("GET", "/v1/sessions", undefined, { background: true })).json()).sessions;
    $("sessions-msg").textContent = "";
  } catch (e) {
    $("sessions-msg").textContent = "Could not list sessions: " + e.message;
    return;
  }
  const body = $("session-table").tBodies[0];
  // Rebuilding the rows under a keyboard user's focus would throw it back to the top.
  if (body.contains(document.activeElement)) return;
  body.replaceChildren();
  for (const s of sessions) {
    const id = s.session_id;
    const actions = el("td", {},
      button("Open", `Open session ${id}`, () => openSession(id)), " ",
      button("Reset", `Reset session ${id}`, () => act(api("POST", `/v1/sessions/${id}/reset`))), " ",
      button("Delete", `Delete session ${id}`, () => {
        if (!window.confirm(`Delete session ${id}, its variables and its files?`)) return;
        act(api("DELETE", `/v1/sessions/${id}`).then(() => {
          if (current === id) closeSession();
        }));
      }), " ",
      button(".ipynb", `Download session ${id} as a notebook`, () => downloadNotebook(id)));
    const row = el("tr", { class: id === current ? "current" : "" },
      el("td", { text: id }), el("td", { text: s.state }), el("td", { text: String(s.executions ?? s.execution_count) }),
      el("td", { text: mib(s.memory_pss_bytes) }), el("td", { text: age(s.created_at) }), actions);
    body.append(row);
  }
  if (!sessions.length) body.append(el("tr", {}, el("td", { colspan: "6", text: "No sessions yet." })));
}

function button(label, aria, onclick) {
  return el("button", { type: "button", "aria-label": aria, text: label, onclick });
}

async function act(promise) {
  try { await promise; } catch (e) { $("sessions-msg").textContent = e.message; }
  refreshSessions();
}

async function createSession() {
  const python = $("python").value;
  try {
    const info = await (await api("POST", "/v1/sessions", python ? { python } : {})).json();
    await refreshSessions();
    openSession(info.session_id);
  } catch (e) {
    $("sessions-msg").textContent = "Could not create a session: " + e.message;
  }
}

async function downloadBlob(path, filename) {
  const blob = await (await api("GET", path)).blob();
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function downloadNotebook(id) {
  downloadBlob(`/v1/sessions/${id}/notebook`, `${id}.ipynb`)
    .catch((e) => { $("sessions-msg").textContent = "Download failed: " + e.message; });
}

// --- the session view: cells --------------------------------------------------------------

function openSession(id) {
  running.abort();
  running = new AbortController();
  current = id;
  $("view-id").textContent = id;
  $("session-view").hidden = false;
  $("cells").replaceChildren();
  const cell = addCell();
  refreshFiles();
  refreshSessions();
  cell.querySelector("textarea").focus();
}

function closeSession() {
  running.abort();
  running = new AbortController();
  current = null;
  $("session-view").hidden = true;
}

let cellSeq = 0;

function addCell(after) {
  const n = ++cellSeq;
  const editor = el("textarea", { id: `code-${n}`, spellcheck: "false", rows: "3" });
  // The prompt says when a cell is done ("In [3]:"); a screen reader hears that, not each chunk.
  const prompt = el("span", { class: "prompt", text: "In [ ]:", "aria-live": "polite" });
  const run = el("button", { type: "button", text: "Run", "aria-label": `Run cell ${n}` });
  const stop = el("button", { type: "button", text: "Interrupt", "aria-label": `Interrupt cell ${n}`, hidden: "" });
  const output = el("div", { class: "output" });
  const cell = el("div", { class: "cell" },
    el("div", { class: "cell-head" }, el("label", { for: editor.id, text: `Cell ${n}` }), prompt, run, stop),
    editor, output);
  cell.parts = { editor, prompt, run, stop, output };
  run.addEventListener("click", () => runCell(cell));
  stop.addEventListener("click", () => interrupt(cell.dataset.session));
  editor.addEventListener("keydown", (ev) => editorKey(ev, cell));
  // Grows with its code, so that a cell is read whole, not scrolled.
  editor.addEventListener("input", () => { editor.rows = Math.max(3, editor.value.split("\n").length + 1); });
  if (after && after.nextSibling) $("cells").insertBefore(cell, after.nextSibling);
  else $("cells").append(cell);
  return cell;
}

// Tab indents while editing; Escape leaves "editing" so that the next Tab moves focus on
// (a keyboard user is never trapped); typing again re-enters it.
function editorKey(ev, cell) {
  const ed = cell.parts.editor;
  if (ev.key === "Enter" && ev.shiftKey) {
    ev.preventDefault();
    runCell(cell, true);
  } else if (ev.key === "Escape") {
    ed.dataset.tabMoves = "1";
  } else if (ev.key === "Tab" && !ev.shiftKey && !ed.dataset.tabMoves) {
    ev.preventDefault();
    const { selectionStart: a, selectionEnd: b } = ed;
    ed.setRangeText("    ", a, b, "end");
  } else if (ev.key !== "Tab" && ev.key !== "Shift") {
    delete ed.dataset.tabMoves;
  }
}

async function interrupt(id) {
  try { await api("POST", `/v1/sessions/${id}/interrupt`); } catch (e) { $("sessions-msg").textContent = e.message; }
}

async function runCell(cell, advance) {
  const { editor, prompt, run, stop, output } = cell.parts;
  const id = current;
  cell.dataset.session = id;
  output.replaceChildren();
  prompt.textContent = "In [*]:";
  run.disabled = true;
  stop.hidden = false;
  cell.setAttribute("aria-busy", "true");
  if (advance) {
    const next = cell.nextElementSibling || addCell(cell);
    next.parts.editor.focus();
  }
  let streamed = false;
  let ended = false;
  try {
    const reply = await api("POST", `/v1/sessions/${id}/execute?stream=true`, { code: editor.value },
      { headers: authHeaders({ "Accept": "text/event-stream" }), signal: running.signal });
    for await (const ev of sseEvents(reply.body)) {
      // One odd event (session code can display any bundle) costs its own output, never
      // the rest of the cell's.
      try {
        if (ev.event === "stream") {
          streamed = true;
          const d = JSON.parse(ev.data);
          appendText(output, String(d.text ?? ""), d.name === "stderr" ? "stderr" : "stdout");
        } else if (ev.event === "display") {
          streamed = true;
          output.append(renderBundle(JSON.parse(ev.data)));
        } else if (ev.event === "result") {
          ended = true;
          const x = JSON.parse(ev.data);
          prompt.textContent = `In [${Number(x.execution_count) || "?"}]:`;
          if (!streamed) {
            if (x.stdout) appendText(output, String(x.stdout), "stdout");
            if (x.stderr) appendText(output, String(x.stderr), "stderr");
            for (const b of Array.isArray(x.display) ? x.display : []) output.append(renderBundle(b));
          }
          if (x.result) output.append(renderBundle(x.result));
          if (x.error || x.status !== "ok") output.append(renderError(x));
          if (x.truncated) appendText(output, "(output truncated)", "stderr");
          if (x.session_reset) appendText(output, "(the session was reset: earlier variables are gone)", "stderr");
        } else if (ev.event === "error") {
          ended = true;
          const e = JSON.parse(ev.data).error || {};
          prompt.textContent = "In [!]:";
          appendText(output, `${e.code} (${e.category}): ${e.message}`, "error");
        }
      } catch (e) {
        appendText(output, `(an output could not be shown: ${e.message})`, "error");
      }
    }
    if (!ended) {
      prompt.textContent = "In [!]:";
      appendText(output, "the stream ended before the cell's result (the connection was lost)", "error");
    }
  } catch (e) {
    if (e.name === "AbortError") return; // the view moved on: the cell is not shown any more
    prompt.textContent = "In [!]:";
    appendText(output, e.message, "error");
  } finally {
    run.disabled = false;
    stop.hidden = true;
    cell.removeAttribute("aria-busy");
    refreshFiles();
  }
}

// EventSource can neither POST nor send a header: the stream is read from fetch's body.
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    // A `\r\n` may be cut between two chunks: a trailing `\r` waits for the next one.
    buffer = (buffer + value).replace(/\r\n/g, "\n").replace(/\r(?=.)/gs, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const ev = { event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? "" : line.slice(i + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") ev.event = val;
        else if (field === "data") ev.data.push(val);
      }
      if (ev.data.length) yield { event: ev.event, data: ev.data.join("\n") };
    }
  }
  } finally {
    reader.cancel().catch(() => {});
  }
}

const ANSI = /\x1b\[[0-9;?]*[ -\/]*[@-~]/g;

function appendText(output, text, kind) {
  const last = output.lastElementChild;
  if (last && last.tagName === "PRE" && last.className === kind && kind !== "error") {
    last.textContent += text;
  } else {
    output.append(el("pre", { class: kind, text }));
  }
}

function renderError(x) {
  const e = x.error || {};
  const head = `${e.ename || x.status}: ${e.evalue || ""}` + (x.category ? `  [category: ${x.category}]` : "");
  const trace = (e.traceback || []).join("\n").replace(ANSI, "");
  return el("pre", { class: "error", text: head + (trace ? "\n" + trace : "") });
}

// One MIME bundle, richest safe form first. Worker-made HTML never enters this document:
// tables are rebuilt from their data; other HTML is shown in a sandboxed frame (no scripts,
// an opaque origin) only when there is nothing else.
function renderBundle(bundle) {
  if (bundle === null || typeof bundle !== "object") return el("pre", { class: "result", text: String(bundle) });
  const plain = typeof bundle["text/plain"] === "string" ? bundle["text/plain"] : "";
  const table = bundle["application/vnd.dataresource+json"];
  if (table && table.schema && Array.isArray(table.schema.fields) && Array.isArray(table.data)) {
    return renderTable(table);
  }
  if (typeof bundle["image/png"] === "string") {
    return el("img", { src: "data:image/png;base64," + bundle["image/png"].trim(), alt: plain || "plot" });
  }
  if (typeof bundle["image/jpeg"] === "string") {
    return el("img", { src: "data:image/jpeg;base64," + bundle["image/jpeg"].trim(), alt: plain || "image" });
  }
  if (typeof bundle["text/html"] === "string") {
    // An opaque origin, no scripts, and a policy of its own: it cannot even load from here.
    const frame = el("iframe", {
      sandbox: "", title: "HTML output", referrerpolicy: "no-referrer",
      csp: "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    });
    frame.srcdoc = bundle["text/html"];
    return frame;
  }
  if (plain) return el("pre", { class: "result", text: plain });
  return el("pre", { class: "result", text: JSON.stringify(bundle) });
}

function renderTable(resource) {
  const fields = resource.schema.fields.filter((f) => f && typeof f === "object");
  const cell = (row, name) => {
    const v = row && typeof row === "object" && Object.hasOwn(row, name) ? row[name] : null;
    return v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
  };
  const head = el("tr", {}, ...fields.map((f) => el("th", { scope: "col", text: String(f.name) })));
  const rows = resource.data.map((row) =>
    el("tr", {}, ...fields.map((f) => el("td", { text: cell(row, f.name) }))));
  const table = el("table", { class: "dataframe" }, el("thead", {}, head), el("tbody", {}, ...rows));
  const wrap = el("div", { class: "table-wrap" }, table);
  if (resource.truncated) wrap.append(el("p", { text: `(first ${rows.length} of ${resource.total_rows} rows)` }));
  return wrap;
}

// --- files ------------------------------------------------------------------------------------

function filePath(path) { return path.split("/").map(encodeURIComponent).join("/"); }

let filesAsked = 0;

async function refreshFiles() {
  if (!current) return;
  const id = current;
  // Listings cross on the wire (a cell's end and an upload's both ask): only the one asked
  // last may draw, or an older "No files." could cover a newer listing.
  const asked = ++filesAsked;
  let files;
  try {
    files = (await (await api("GET", `/v1/sessions/${id}/files`)).json()).files;
    $("files-msg").textContent = "";
  } catch (e) {
    $("files-msg").textContent = "Could not list files: " + e.message;
    return;
  }
  if (asked !== filesAsked || id !== current) return; // a later listing, or another session
  const list = $("file-list");
  list.replaceChildren();
  for (const f of files) {
    list.append(el("li", {}, el("span", { text: `${f.path} (${f.size} bytes) ` }),
      button("Download", `Download ${f.path}`, () => downloadBlob(`/v1/sessions/${id}/files/${filePath(f.path)}`, f.path.split("/").pop())
        .catch((e) => { $("files-msg").textContent = e.message; })), " ",
      button("Delete", `Delete ${f.path}`, async () => {
        try { await api("DELETE", `/v1/sessions/${id}/files/${filePath(f.path)}`); } catch (e) { $("files-msg").textContent = e.message; }
        refreshFiles();
      })));
  }
  if (!files.length) list.append(el("li", { text: "No files." }));
}

async function upload(fileList) {
  const id = current;
  if (!id) return;
  for (const f of fileList) {
    try {
      await api("PUT", `/v1/sessions/${id}/files/${encodeURIComponent(f.name)}`, f);
    } catch (e) {
      $("files-msg").textContent = `Upload of ${f.name} failed: ${e.message}`;
    }
  }
  refreshFiles();
}

function setupFiles() {
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    upload(ev.dataTransfer.files);
  });
  $("file-input").addEventListener("change", async (ev) => {
    await upload(ev.target.files);
    ev.target.value = "";
  });
}

// --- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  setupFiles();
  $("create").addEventListener("click", createSession);
  $("refresh").addEventListener("click", refreshSessions);
  $("add-cell").addEventListener("click", () => addCell().parts.editor.focus());
  refreshStatus();
  refreshSessions();
  // Paused while the tab is hidden: nobody is looking, and each GET reads /proc per session.
  setInterval(() => {
    if (document.hidden) return;
    refreshStatus();
    refreshSessions();
  }, REFRESH_MS);
});

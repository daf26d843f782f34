// streamgate's chat page: plain JavaScript, no framework, nothing fetched from elsewhere.
// It POSTs the conversation to /api/v1/chat/stream and reads the SSE answer as a stream;
// answers are Markdown (vendor/marked), sanitised (vendor/purify) before they are shown.
// Streams are resumable: a reload or a dropped connection continues the same answer.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  settings: $("settings"), provider: $("provider"), model: $("model"), models: $("models"),
  temperature: $("temperature"), keyField: $("key-field"), key: $("key"), system: $("system"),
  log: $("log"), empty: $("empty"), composer: $("composer"), prompt: $("prompt"),
  send: $("send"), stop: $("stop"), newChat: $("new-chat"), theme: $("theme"),
  effort: $("effort"), showReasoning: $("show-reasoning"),
  attach: $("attach"), image: $("image"), attachments: $("attachments"),
};
let turns = []; // the finished turns: {user: content, reply: a reply's snapshot}
let providers = {}; // from the health endpoint: name → {configured, default_model, models}
let inFlight = null; // the answer streaming now: {abort: AbortController, reply}
let conversation = 0; // "New chat" counts up: a late answer never joins the next history
let attached = []; // data URLs of the images going with the next message
let reading = Promise.resolve(); // the images still being read
let leaving = false; // the tab is unloading: the answer in flight stays saved, to resume

// --- SSE: the WHATWG "event stream interpretation", on text decoded with {stream: true} ---

/** An SSE parser: `push(text)` any piece of the body; `onEvent(type, data, lastId)` runs on
 * each event, dispatched at its blank line (`lastId`: the last `id` field seen, "" before
 * any). Lines end with CRLF, LF or CR; a CR at the end of a piece waits for the next one,
 * which may start with the LF of the same CRLF. */
function sseParser(onEvent) {
  const lineEnd = /\r\n|\r|\n/g;
  let buffer = "", data = [], type = "", lastId = "";

  function line(text) {
    if (text === "") {
      if (data.length) onEvent(type || "message", data.join("\n"), lastId);
      data = [];
      type = "";
    } else if (text[0] !== ":") { // a ":" line is a comment (": keep-alive")
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) lastId = value;
    }
  }

  return {
    push(text, final = false) {
      buffer += text;
      let start = 0;
      lineEnd.lastIndex = 0;
      for (let end; (end = lineEnd.exec(buffer)) !== null;) {
        if (end[0] === "\r" && end.index === buffer.length - 1 && !final) break;
        line(buffer.slice(start, end.index));
        start = lineEnd.lastIndex;
      }
      buffer = buffer.slice(start);
    },
  };
}

/** Read a fetch body to its end, feeding every SSE event to `onEvent`; `signal` aborting
 * cancels the body and throws an `AbortError`. */
async function readEvents(body, onEvent, signal) {
  const reader = body.getReader();
  const cancel = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", cancel);
  const decoder = new TextDecoder(); // one decoder: a character split between reads stays whole
  const parser = sseParser(onEvent);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
  } finally {
    signal?.removeEventListener("abort", cancel);
  }
  signal?.throwIfAborted();
  parser.push(decoder.decode(), true);
}

// --- Markdown, safely ---

const markdown = new marked.Marked({ gfm: true });
/** What an answer's HTML may hold: what Markdown makes, nothing that runs or loads. */
const PURIFY = {
  ALLOWED_TAGS: ["a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul"],
  ALLOWED_ATTR: ["href", "title", "align", "start", "class"],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.hasAttribute("class") && !(node.tagName === "CODE" && /^language-[\w+#.-]+$/.test(node.className))) {
    node.removeAttribute("class"); // only a code block's language: never the page's own classes
  }
});

/** Show `text` as Markdown in `element`; every code block gets a copy button. */
function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(markdown.parse(text).trim(), PURIFY);
  for (const pre of element.querySelectorAll("pre")) {
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy quiet";
    copy.textContent = "Copy";
    pre.append(copy);
  }
}

// --- the conversation on screen ---

/** Keep the newest text in view, unless the reader has scrolled up to read. */
function follow(update) {
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 48;
  update();
  if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}

/** A new message, scrolled into view. */
function addMessage(role, label) {
  ui.empty.hidden = true;
  const article = document.createElement("article");
  article.className = `msg ${role}`;
  article.innerHTML = '<div class="who"></div><div class="text"></div><div class="meta"></div>';
  article.querySelector(".who").textContent = label;
  ui.log.append(article);
  ui.log.scrollTop = ui.log.scrollHeight;
  return article;
}

/** The user's message as typed (plain text, never Markdown) with its images. */
function addUserMessage(content) {
  const article = addMessage("user", "you");
  const parts = typeof content === "string" ? [{ type: "text", text: content }] : content;
  article.querySelector(".text").textContent = parts.filter((p) => p.type === "text").map((p) => p.text).join("\n");
  const images = parts.filter((p) => p.type === "image_url");
  if (images.length) {
    const box = document.createElement("div");
    box.className = "images";
    box.append(...images.map((part) => thumbnail(part.image_url.url)));
    article.querySelector(".text").before(box);
  }
}

function thumbnail(url) {
  const image = document.createElement("img");
  image.className = "thumb";
  image.alt = "attached image";
  image.src = url;
  return image;
}

/** An assistant's message: its text rendered as Markdown as it grows (once per animation
 * frame), reasoning in a collapsed "Thinking" block above it, tool calls below it.
 * `saved` (a `snapshot()`) brings back a message from before a reload. */
function addReply(label, saved = {}) {
  const article = addMessage("assistant", saved.label || label);
  article.dataset.state = saved.state || "waiting";
  article.querySelector(".text").classList.add("md");
  article.insertAdjacentHTML("afterbegin",
    '<details class="thinking" hidden><summary>Thinking</summary><div class="md"></div></details>');
  article.querySelector(".who").after(article.querySelector(".thinking"));
  article.querySelector(".meta").insertAdjacentHTML("beforebegin", '<div class="calls"></div>');
  const [text, thinking, calls, meta] = [".text", ".thinking", ".calls", ".meta"].map((s) => article.querySelector(s));
  const startedAt = performance.now();
  const restored = "content" in saved;
  let firstAt = restored ? -1 : null; // -1: from before a reload, no TTFT to show
  let frames = 0, usage = null, dirty = false;
  const reply = {
    label: saved.label || label, content: saved.content || "", reasoning: saved.reasoning || "",
    calls: saved.calls || [], streamId: saved.streamId || null, lastId: saved.lastId || 0, user: saved.user,
  };

  function showStats() {
    const parts = [];
    if (firstAt !== null && firstAt >= 0) {
      parts.push(`TTFT ${Math.round(firstAt - startedAt)} ms`);
      const seconds = (performance.now() - firstAt) / 1000;
      const tokens = usage ? usage.completion_tokens : frames;
      if (seconds > 0.05 && tokens > 1) parts.push(`${(tokens / seconds).toFixed(1)} tok/s`);
    }
    if (usage) parts.push(`${usage.prompt_tokens} in · ${usage.completion_tokens} out · ${usage.total_tokens} tokens`);
    if (article.dataset.state === "stopped") parts.push("stopped");
    meta.textContent = parts.join("  ·  ");
  }

  function render() {
    dirty = false;
    follow(() => {
      if (reply.reasoning) {
        thinking.hidden = false;
        renderMarkdown(thinking.lastElementChild, reply.reasoning);
        const thinkingNow = article.dataset.state === "streaming" && !reply.content && !reply.calls.length;
        thinking.firstElementChild.textContent = thinkingNow ? "Thinking…" : "Thinking";
      }
      if (reply.content || text.firstChild) renderMarkdown(text, reply.content);
      renderCalls();
      if (firstAt !== null) showStats();
    });
    saveLive(reply);
  }

  function renderCalls() {
    const done = article.dataset.state !== "waiting" && article.dataset.state !== "streaming";
    calls.replaceChildren(...reply.calls.filter(Boolean).map((call) => {
      const box = document.createElement("div");
      box.className = "tool-call";
      const name = document.createElement("div");
      name.className = "tool-name";
      name.textContent = `${call.name}  ·  ${call.id}`;
      const args = document.createElement("pre");
      args.textContent = done ? pretty(call.arguments) : call.arguments;
      box.append(name, args);
      return box;
    }));
  }

  function arrived() {
    if (firstAt === null) firstAt = performance.now();
    article.dataset.state = "streaming";
    frames += 1;
    if (!dirty) { dirty = true; requestAnimationFrame(() => dirty && render()); }
  }

  Object.assign(reply, {
    append(content) { reply.content += content; arrived(); },
    think(reasoning) { reply.reasoning += reasoning; arrived(); },
    call(frame) {
      if (frame.id !== undefined) reply.calls[frame.index] = { id: frame.id, name: frame.name, arguments: "" };
      const call = reply.calls[frame.index];
      if (call) call.arguments += frame.arguments || "";
      arrived();
    },
    finish(chunk) {
      usage = chunk.usage;
      reply.label = `${chunk.provider} · ${chunk.model}`;
      article.querySelector(".who").textContent = reply.label;
      if (chunk.finish_reason !== "error") article.dataset.state = "done";
      if (chunk.finish_reason !== "stop" && chunk.finish_reason !== "error") {
        meta.dataset.reason = chunk.finish_reason; // "length", "content_filter", "tool_calls", …
      }
      render();
    },
    fail(error, status) {
      article.dataset.state = "error";
      reply.error = { ...error, status };
      const box = document.createElement("div");
      box.className = "error";
      box.setAttribute("role", "alert");
      const kind = document.createElement("strong");
      kind.textContent = status ? `${error.type} (HTTP ${status})` : error.type;
      box.append(kind, `: ${error.message}`);
      follow(() => article.append(box));
    },
    stopped() {
      article.dataset.state = "stopped";
      render();
      showStats();
    },
    end() {
      if (article.dataset.state === "waiting" || article.dataset.state === "streaming") {
        reply.fail({ type: "incomplete", message: "the stream ended without a finish reason" });
      }
      if (dirty) render();
      thinking.firstElementChild.textContent = "Thinking";
    },
    /** What a reload needs to show this message again (and to resume it). */
    snapshot() {
      return {
        user: reply.user, label: reply.label, content: reply.content, reasoning: reply.reasoning, calls: reply.calls,
        streamId: reply.streamId, lastId: reply.lastId, state: article.dataset.state, meta: meta.textContent,
        reason: meta.dataset.reason, error: reply.error,
      };
    },
  });

  if (restored) render();
  if (saved.meta) meta.textContent = saved.meta;
  if (saved.reason) meta.dataset.reason = saved.reason;
  if (saved.error) reply.fail(saved.error, saved.error.status);
  return reply;
}

/** A tool call's arguments as indented JSON, or as they came when they are not JSON. */
function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

// --- kept in the tab: the conversation and the answer in flight survive a reload ---

function saveTurns() {
  store("turns", turns);
}

/** The answer in flight, with the id of the last frame it shows: a reload resumes there. */
function saveLive(reply) {
  if (inFlight && inFlight.reply === reply && reply.streamId && !leaving) store("live", reply.snapshot());
}

function store(key, value) {
  try {
    sessionStorage.setItem(key, JSON.stringify(value));
  } catch { /* over the tab's storage quota (large images): the page still works, a reload forgets */ }
}

function load(key) {
  try { return JSON.parse(sessionStorage.getItem(key)); } catch { return null; }
}

function restore() {
  turns = load("turns") || [];
  for (const turn of turns) {
    addUserMessage(turn.user);
    addReply(turn.reply.label, turn.reply).end();
  }
  const live = load("live");
  if (live && live.streamId) {
    addUserMessage(live.user);
    const reply = addReply(live.label, { ...live, state: live.content ? "streaming" : "waiting" });
    streamAnswer(reply, null);
  }
}

// --- talking to the server ---

function headers() {
  const result = { "content-type": "application/json" };
  if (ui.key.value) result.authorization = `Bearer ${ui.key.value}`;
  return result;
}

/** The `{type, message}` of an HTTP error answer (JSON as the contract says, else its text). */
async function errorOf(response) {
  const text = await response.text();
  try {
    const error = JSON.parse(text).error;
    if (error && error.message) return { type: error.type || "error", message: error.message };
  } catch { /* not JSON: show the text */ }
  return { type: "http_error", message: text.slice(0, 500) || response.statusText };
}

function send(content) {
  const provider = ui.provider.value;
  const model = ui.model.value.trim();
  addUserMessage(content);
  const reply = addReply(`${provider} · ${model || ui.model.placeholder}`);
  reply.user = content;
  const system = ui.system.value.trim();
  const history = turns.filter((turn) => turn.reply.content)
    .flatMap((turn) => [{ role: "user", content: turn.user }, { role: "assistant", content: turn.reply.content }]);
  const request = {
    ...(provider === ROUTES ? {} : { provider }),
    messages: [...(system ? [{ role: "system", content: system }] : []), ...history, { role: "user", content }],
    resumable: true,
  };
  if (model) request.model = model;
  else if (provider === ROUTES) request.model = ui.model.placeholder;
  if (ui.temperature.value !== "") request.temperature = Number(ui.temperature.value);
  if (ui.effort.value) request.reasoning_effort = ui.effort.value;
  if (ui.showReasoning.checked) request.include_reasoning = true;
  return streamAnswer(reply, request);
}

const RESUME_TRIES = 5;

/** Stream one answer into `reply`: POST `request` (or, with `request` null, resume the
 * reply's stream), then, while the stream breaks off before its end, resume it from the
 * last frame shown. */
async function streamAnswer(reply, request) {
  const sentIn = conversation;
  const abort = new AbortController();
  inFlight = { abort, reply };
  setBusy(true);
  try {
    for (let tries = 0; ;) {
      const lastId = reply.lastId;
      try {
        if (await connect(reply, request, abort.signal)) break;
      } catch (error) {
        if (error.name === "AbortError" || !reply.streamId || tries >= RESUME_TRIES) throw error;
      }
      if (!reply.streamId) break; // not resumable: `end` shows the answer as incomplete
      tries = reply.lastId > lastId ? 1 : tries + 1;
      request = null;
      await sleep(250 * 2 ** tries, abort.signal);
    }
  } catch (error) {
    if (error.name === "AbortError") reply.stopped();
    else reply.fail({ type: "network_error", message: error.message });
  } finally {
    if (leaving) return; // the next page load resumes it
    inFlight = null;
    setBusy(false);
    reply.end();
    sessionStorage.removeItem("live");
    if (sentIn === conversation) {
      turns.push({ user: reply.user, reply: reply.snapshot() });
      saveTurns();
    }
  }
}

/** One connection for `reply`; true once the stream has reached its end (or an HTTP error
 * ended it), false when the body stopped short. The POST carries no abort signal: Stop
 * before its answer's headers still learns the stream's id, to cancel it. */
async function connect(reply, request, signal) {
  let response;
  if (request) {
    const posted = fetch("api/v1/chat/stream", { method: "POST", headers: headers(), body: JSON.stringify(request) });
    posted.then((late) => {
      if (!signal.aborted) return;
      cancel(late.headers.get("x-stream-id"));
      late.body?.cancel().catch(() => {});
    }, () => {});
    response = await Promise.race([posted, aborted(signal)]);
  } else {
    response = await fetch(`api/v1/chat/stream/${encodeURIComponent(reply.streamId)}`, {
      headers: { ...headers(), "last-event-id": String(reply.lastId) }, signal,
    });
  }
  if (!response.ok) {
    reply.fail(await errorOf(response), response.status);
    if (response.status === 401) ui.keyField.hidden = false;
    return true;
  }
  if (request) {
    reply.streamId = response.headers.get("x-stream-id");
    saveLive(reply);
  }
  return readAnswer(response.body, reply, signal);
}

/** Feed one SSE body's frames to `reply`; true when it reached `data: [DONE]`. */
async function readAnswer(body, reply, signal) {
  let ended = false;
  await readEvents(body, (type, data, lastId) => {
    if (data === "[DONE]") { ended = true; return; }
    if (type === "message") {
      const chunk = JSON.parse(data);
      if (chunk.content) reply.append(chunk.content);
      if (chunk.finish_reason) reply.finish(chunk);
    } else if (type === "reasoning") reply.think(JSON.parse(data).reasoning);
    else if (type === "tool_call") reply.call(JSON.parse(data));
    else if (type === "error") reply.fail(JSON.parse(data).error);
    if (lastId) reply.lastId = Number(lastId);
  }, signal);
  return ended;
}

/** Stop the generation itself, not only this tab's connection to it. */
function cancel(streamId) {
  if (!streamId) return;
  fetch(`api/v1/chat/stream/${encodeURIComponent(streamId)}`, { method: "DELETE", headers: headers(), keepalive: true })
    .catch(() => {});
}

function stop() {
  if (!inFlight) return;
  cancel(inFlight.reply.streamId);
  inFlight.abort.abort();
}

/** A promise that rejects with the signal's `AbortError` when it aborts. */
function aborted(signal) {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

function sleep(ms, signal) {
  return Promise.race([new Promise((resolve) => setTimeout(resolve, ms)), aborted(signal)]);
}

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  if (!busy) ui.prompt.focus();
}

// --- images ---

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/** Read image files into data URLs for the next message, each shown as a thumbnail. */
function attach(files) {
  for (const file of files) {
    if (!IMAGE_TYPES.includes(file.type)) continue;
    reading = reading.then(() => new Promise((resolve) => {
      const reader = new FileReader();
      reader.onload = () => { attached.push(reader.result); showAttached(); resolve(); };
      reader.onerror = () => resolve();
      reader.readAsDataURL(file);
    }));
  }
}

function showAttached() {
  ui.attachments.hidden = attached.length === 0;
  ui.attachments.replaceChildren(...attached.map((url, index) => {
    const item = document.createElement("span");
    item.className = "attachment";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet";
    remove.textContent = "×";
    remove.title = "Remove this image";
    remove.addEventListener("click", () => { attached.splice(index, 1); showAttached(); });
    item.append(thumbnail(url), remove);
    return item;
  }));
}

/** The next message's content: the text, or a text part and image parts. */
function takeContent() {
  const text = ui.prompt.value.trim();
  const images = attached.map((url) => ({ type: "image_url", image_url: { url } }));
  ui.prompt.value = "";
  attached = [];
  showAttached();
  if (!images.length) return text;
  return [...(text ? [{ type: "text", text }] : []), ...images];
}

/** The clipboard API where the page is a secure context (https, localhost), else the old way. */
async function copyText(text) {
  if (navigator.clipboard) return navigator.clipboard.writeText(text);
  const area = document.createElement("textarea");
  area.value = text;
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("the browser refused to copy");
}

// --- pickers, from the health endpoint ---

/** The provider choice whose models are the config file's routes (not a provider name). */
const ROUTES = "routes";

async function loadProviders() {
  const response = await fetch("api/v1/chat/stream/health", { headers: headers() });
  if (response.status === 401) {
    askForKey();
    return;
  }
  if (!response.ok) {
    addReply("streamgate").fail(await errorOf(response), response.status);
    return;
  }
  const health = await response.json();
  providers = health.providers;
  // The config file's routes, offered as the models of one more choice: a request to a
  // route names it as `model` and leaves `provider` out.
  const routes = Object.keys(health.routes || {});
  if (routes.length) providers[ROUTES] = { configured: true, default_model: routes[0], models: routes };
  const saved = localStorage.getItem("provider");
  ui.provider.replaceChildren();
  for (const [name, info] of Object.entries(providers)) {
    const option = new Option(info.configured ? name : `${name} (no key)`, name);
    option.disabled = !info.configured;
    ui.provider.append(option);
  }
  ui.provider.value = providers[saved] && providers[saved].configured ? saved : "echo";
  showModels();
}

/** This gateway needs a key: show the key field, focused, and say so where the providers go. */
function askForKey() {
  ui.keyField.hidden = false;
  ui.provider.replaceChildren(new Option("enter the gateway key first", ""));
  addReply("streamgate").fail({
    type: "unauthorized",
    message: ui.key.value ? "The gateway key is not accepted: enter the right one in “Gateway key” above."
      : "This gateway needs a key: enter it in “Gateway key” above.",
  }, 401);
  ui.key.focus();
}

function showModels() {
  const info = providers[ui.provider.value];
  if (!info) return;
  ui.model.value = "";
  ui.model.placeholder = info.default_model;
  ui.models.replaceChildren(...info.models.map((name) => new Option(name)));
  localStorage.setItem("provider", ui.provider.value);
}

// --- wiring ---

ui.provider.addEventListener("change", showModels);
ui.settings.addEventListener("submit", (event) => event.preventDefault());
ui.composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (inFlight) return;
  await reading;
  if (inFlight || (!ui.prompt.value.trim() && !attached.length)) return;
  send(takeContent());
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.prompt.addEventListener("paste", (event) => {
  const images = [...event.clipboardData.files].filter((file) => IMAGE_TYPES.includes(file.type));
  if (!images.length) return;
  if (!event.clipboardData.getData("text/plain")) event.preventDefault();
  attach(images);
});
ui.attach.addEventListener("click", () => ui.image.click());
ui.image.addEventListener("change", () => { attach(ui.image.files); ui.image.value = ""; });
ui.log.addEventListener("click", (event) => {
  const copy = event.target.closest(".copy");
  if (!copy) return;
  copyText(copy.parentElement.querySelector("code").textContent)
    .then(() => { copy.textContent = "Copied"; }, () => { copy.textContent = "Copy failed"; });
});
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", () => {
  stop();
  conversation += 1;
  turns = [];
  sessionStorage.removeItem("turns");
  sessionStorage.removeItem("live");
  ui.log.replaceChildren(ui.empty);
  ui.empty.hidden = false;
  ui.prompt.focus();
});
addEventListener("pagehide", () => {
  if (inFlight) saveLive(inFlight.reply);
  leaving = true;
});
addEventListener("pageshow", () => { leaving = false; });
ui.key.value = sessionStorage.getItem("key") || "";
ui.key.addEventListener("change", () => { sessionStorage.setItem("key", ui.key.value); loadProviders(); });
ui.theme.addEventListener("click", () => {
  const dark = matchMedia("(prefers-color-scheme: dark)").matches;
  const current = document.documentElement.dataset.theme || (dark ? "dark" : "light");
  document.documentElement.dataset.theme = current === "dark" ? "light" : "dark";
  localStorage.setItem("theme", document.documentElement.dataset.theme);
});
if (localStorage.getItem("theme")) document.documentElement.dataset.theme = localStorage.getItem("theme");
ui.effort.value = localStorage.getItem("effort") || "";
ui.showReasoning.checked = localStorage.getItem("show-reasoning") === "true";
ui.effort.addEventListener("change", () => localStorage.setItem("effort", ui.effort.value));
ui.showReasoning.addEventListener("change", () => localStorage.setItem("show-reasoning", ui.showReasoning.checked));

restore();
loadProviders().catch((error) => addReply("streamgate").fail({ type: "network_error", message: error.message }));
ui.prompt.focus();

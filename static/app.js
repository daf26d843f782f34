// streamgate's chat page: plain JavaScript, no framework, nothing fetched from elsewhere.
// It POSTs the conversation to /api/v1/chat/stream and reads the SSE answer as a stream.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  settings: $("settings"), provider: $("provider"), model: $("model"), models: $("models"),
  temperature: $("temperature"), keyField: $("key-field"), key: $("key"), system: $("system"),
  log: $("log"), empty: $("empty"), composer: $("composer"), prompt: $("prompt"),
  send: $("send"), stop: $("stop"), newChat: $("new-chat"), theme: $("theme"),
};
const history = []; // the turns sent with the next request: {role, content}
let providers = {}; // from the health endpoint: name → {configured, default_model, models}
let controller = null; // aborts the stream in flight
let conversation = 0; // "New chat" counts up: a late answer never joins the next history

// --- SSE: the WHATWG "event stream interpretation", on text decoded with {stream: true} ---

/** An SSE parser: `push(text)` any piece of the body; `onEvent(type, data)` runs on each
 * event, dispatched at its blank line. Lines end with CRLF, LF or CR; a CR at the end of
 * a piece waits for the next one, which may start with the LF of the same CRLF. */
function sseParser(onEvent) {
  const lineEnd = /\r\n|\r|\n/g;
  let buffer = "", data = [], type = "";

  function line(text) {
    if (text === "") {
      if (data.length) onEvent(type || "message", data.join("\n"));
      data = [];
      type = "";
    } else if (text[0] !== ":") { // a ":" line is a comment (": keep-alive")
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
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

/** Read a fetch body to its end, feeding every SSE event to `onEvent`. */
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder(); // one decoder: a character split between reads stays whole
  const parser = sseParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(decoder.decode(value, { stream: true }));
  }
  parser.push(decoder.decode(), true);
}

// --- the conversation on screen ---

/** Keep the newest text in view, unless the reader has scrolled up to read. */
function follow(update) {
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 48;
  update();
  if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}

/** A new message, scrolled into view. */
function addMessage(role, label, text = "") {
  ui.empty.hidden = true;
  const article = document.createElement("article");
  article.className = `msg ${role}`;
  article.innerHTML = '<div class="who"></div><div class="text"></div><div class="meta"></div>';
  article.querySelector(".who").textContent = label;
  article.querySelector(".text").textContent = text;
  ui.log.append(article);
  ui.log.scrollTop = ui.log.scrollHeight;
  return article;
}

/** The assistant's message being streamed: text grows in one text node. */
function addReply(label) {
  const article = addMessage("assistant", label);
  article.dataset.state = "waiting";
  const text = document.createTextNode("");
  article.querySelector(".text").append(text);
  const meta = article.querySelector(".meta");
  const startedAt = performance.now();
  let firstAt = null, chunks = 0, usage = null;

  function showStats() {
    const parts = [];
    if (firstAt !== null) {
      parts.push(`TTFT ${Math.round(firstAt - startedAt)} ms`);
      const seconds = (performance.now() - firstAt) / 1000;
      const tokens = usage ? usage.completion_tokens : chunks;
      if (seconds > 0.05 && tokens > 1) parts.push(`${(tokens / seconds).toFixed(1)} tok/s`);
    }
    if (usage) parts.push(`${usage.prompt_tokens} in · ${usage.completion_tokens} out · ${usage.total_tokens} tokens`);
    meta.textContent = parts.join("  ·  ");
  }

  return {
    get content() { return text.data; },
    append(content) {
      if (firstAt === null) { firstAt = performance.now(); article.dataset.state = "streaming"; }
      chunks += 1;
      follow(() => { text.appendData(content); showStats(); });
    },
    finish(chunk) {
      usage = chunk.usage;
      article.querySelector(".who").textContent = `${chunk.provider} · ${chunk.model}`;
      if (chunk.finish_reason !== "error") article.dataset.state = "done";
      if (chunk.finish_reason !== "stop" && chunk.finish_reason !== "error") {
        meta.dataset.reason = chunk.finish_reason; // "length", "content_filter", …
      }
      showStats();
    },
    fail(error, status) {
      article.dataset.state = "error";
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
      showStats();
      meta.append(meta.textContent ? "  ·  stopped" : "stopped");
    },
    end() {
      if (article.dataset.state === "waiting" || article.dataset.state === "streaming") {
        this.fail({ type: "incomplete", message: "the stream ended without a finish reason" });
      }
    },
  };
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

async function send(prompt) {
  const provider = ui.provider.value;
  const model = ui.model.value.trim();
  const turn = { role: "user", content: prompt };
  addMessage("user", "you", prompt);
  const reply = addReply(`${provider} · ${model || ui.model.placeholder}`);
  const system = ui.system.value.trim();
  const request = {
    provider,
    messages: [...(system ? [{ role: "system", content: system }] : []), ...history, turn],
  };
  if (model) request.model = model;
  if (ui.temperature.value !== "") request.temperature = Number(ui.temperature.value);
  const sentIn = conversation;

  controller = new AbortController();
  setBusy(true);
  try {
    const response = await fetch("api/v1/chat/stream", {
      method: "POST", headers: headers(), body: JSON.stringify(request), signal: controller.signal,
    });
    if (!response.ok) {
      reply.fail(await errorOf(response), response.status);
      if (response.status === 401) ui.keyField.hidden = false;
      return;
    }
    let ended = false;
    await readEvents(response.body, (type, data) => {
      if (type === "error") reply.fail(JSON.parse(data).error);
      else if (data === "[DONE]") ended = true;
      else {
        const chunk = JSON.parse(data);
        if (chunk.content) reply.append(chunk.content);
        if (chunk.finish_reason) reply.finish(chunk);
      }
    });
    if (!ended) reply.end();
  } catch (error) {
    if (error.name === "AbortError") reply.stopped();
    else reply.fail({ type: "network_error", message: error.message });
  } finally {
    controller = null;
    setBusy(false);
    // A turn that produced no text stays on screen but is not sent again.
    if (reply.content && sentIn === conversation) history.push(turn, { role: "assistant", content: reply.content });
  }
}

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  if (!busy) ui.prompt.focus();
}

// --- pickers, from the health endpoint ---

async function loadProviders() {
  const response = await fetch("api/v1/chat/stream/health", { headers: headers() });
  if (!response.ok) {
    if (response.status === 401) ui.keyField.hidden = false;
    addReply("streamgate").fail(await errorOf(response), response.status);
    return;
  }
  providers = (await response.json()).providers;
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
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = ui.prompt.value.trim();
  if (!prompt || controller) return;
  ui.prompt.value = "";
  send(prompt);
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.stop.addEventListener("click", () => controller && controller.abort());
ui.newChat.addEventListener("click", () => {
  if (controller) controller.abort();
  conversation += 1;
  history.length = 0;
  ui.log.replaceChildren(ui.empty);
  ui.empty.hidden = false;
  ui.prompt.focus();
});
ui.key.value = sessionStorage.getItem("key") || "";
ui.key.addEventListener("change", () => { sessionStorage.setItem("key", ui.key.value); loadProviders(); });
ui.theme.addEventListener("click", () => {
  const dark = matchMedia("(prefers-color-scheme: dark)").matches;
  const current = document.documentElement.dataset.theme || (dark ? "dark" : "light");
  document.documentElement.dataset.theme = current === "dark" ? "light" : "dark";
  localStorage.setItem("theme", document.documentElement.dataset.theme);
});
if (localStorage.getItem("theme")) document.documentElement.dataset.theme = localStorage.getItem("theme");

loadProviders().catch((error) => addReply("streamgate").fail({ type: "network_error", message: error.message }));
ui.prompt.focus();

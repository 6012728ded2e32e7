// The web chat page: streams replies over fetch + SSE, keeps the session id in localStorage,
// reloads the history from the gateway, attaches images as data URLs, and shows the plugins'
// context sources and hand-off events. No framework: one file, read top to bottom.
"use strict";

const I18N = {
  en: {
    title: "Clawdbot", newChat: "New chat", send: "Send", placeholder: "Type a message…",
    apiKey: "API key (optional)", attach: "Attach an image", sources: "Sources", handoff: "Handed off to a human agent",
    thinking: "Replying…", ready: "Ready", error: "Error", session: "Session",
  },
  zh: {
    title: "Clawdbot 客服", newChat: "新对话", send: "发送", placeholder: "输入消息…",
    apiKey: "API 密钥（可选）", attach: "添加图片", sources: "参考来源", handoff: "已转接人工客服",
    thinking: "正在回复…", ready: "就绪", error: "错误", session: "会话",
  },
};

const $ = (id) => document.getElementById(id);
const store = window.localStorage;
const state = { model: "", lang: "en", image: null, busy: false };

function t(key) { return (I18N[state.lang] || I18N.en)[key] || key; }

function newSessionId() {
  if (window.crypto && crypto.randomUUID) return "web-" + crypto.randomUUID();
  return "web-" + Date.now().toString(36) + Math.random().toString(36).slice(2);
}

function sessionId() {
  let id = store.getItem("clawdbot.session");
  if (!id) { id = newSessionId(); store.setItem("clawdbot.session", id); }
  return id;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = store.getItem("clawdbot.apiKey");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function applyLanguage(lang) {
  state.lang = I18N[lang] ? lang : "en";
  store.setItem("clawdbot.lang", state.lang);
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  $("lang").value = state.lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  document.querySelectorAll("[data-i18n-title]").forEach((el) => { el.title = t(el.dataset.i18nTitle); });
  setStatus(t("ready"));
}

function setStatus(text) { $("status").textContent = `${text} · ${t("session")} ${sessionId()}`; }

function addMessage(role, text, image) {
  const box = document.createElement("div");
  box.className = `msg ${role}`;
  box.dataset.role = role;
  if (image) { const img = document.createElement("img"); img.src = image; img.alt = ""; box.appendChild(img); }
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text || "";
  box.appendChild(span);
  $("messages").appendChild(box);
  $("messages").scrollTop = $("messages").scrollHeight;
  return box;
}

function showSources(box, sources) {
  if (!sources || !sources.length) return;
  const div = document.createElement("div");
  div.className = "sources";
  div.textContent = t("sources") + ":";
  const list = document.createElement("ul");
  for (const s of sources) {
    const li = document.createElement("li");
    li.textContent = (s.title || s.source || s.plugin) + (s.source && s.title ? ` (${s.source})` : "");
    list.appendChild(li);
  }
  div.appendChild(list);
  box.appendChild(div);
}

function showEvents(box, events) {
  for (const e of events || []) {
    if (e.type !== "handoff") continue;
    const div = document.createElement("div");
    div.className = "events event handoff";
    div.dataset.event = "handoff";
    div.textContent = `⚑ ${t("handoff")}${e.message ? ": " + e.message : ""}`;
    box.appendChild(div);
  }
}

// SSE over fetch: split the byte stream into events, each "data: ..." line a JSON chunk.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    state.model = body.data[0].id;
    $("model").textContent = state.model;
  } catch (err) { setStatus(t("error") + ": " + err); }
}

async function loadHistory() {
  $("messages").replaceChildren();
  const r = await fetch(`/v1/sessions/${encodeURIComponent(sessionId())}/messages`, { headers: headers() });
  if (!r.ok) return;  // a new session has no history yet (404)
  const body = await r.json();
  for (const m of body.data) {
    if (m.role !== "user" && m.role !== "assistant") continue;
    const image = (m.content_parts || []).find((p) => p.type === "image_url");
    addMessage(m.role, m.content, image ? image.image_url.url : null);
  }
}

async function send(text) {
  if (state.busy || (!text && !state.image)) return;
  state.busy = true;
  $("send").disabled = true;
  const image = state.image;
  clearImage();
  addMessage("user", text, image);
  const content = image
    ? [{ type: "text", text: text || "" }, { type: "image_url", image_url: { url: image } }]
    : text;
  const box = addMessage("assistant", "");
  box.classList.add("streaming");
  const span = box.querySelector(".text");
  setStatus(t("thinking"));
  try {
    if (!state.model) await loadModel();
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { ...headers(), "X-Session-Id": sessionId() },
      body: JSON.stringify({ model: state.model, stream: true, messages: [{ role: "user", content }] }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || response.statusText);
    }
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      showSources(box, chunk.sources);
      showEvents(box, chunk.events);
      for (const e of chunk.events || []) {
        // The output plugins changed the reply after it streamed: show what was stored.
        if (e.type === "reply_rewritten" && e.data && typeof e.data.reply === "string") span.textContent = e.data.reply;
      }
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) span.textContent += choice.delta.content;
      }
      $("messages").scrollTop = $("messages").scrollHeight;
    }
    box.dataset.done = "true";
    setStatus(t("ready"));
  } catch (err) {
    addMessage("error", `${t("error")}: ${err.message}`);
    setStatus(t("error"));
  } finally {
    box.classList.remove("streaming");
    state.busy = false;
    $("send").disabled = false;
  }
}

function clearImage() {
  state.image = null;
  $("attachment").hidden = true;
  $("image").value = "";
}

function attachImage(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    state.image = reader.result;
    $("attachment-preview").src = state.image;
    $("attachment").hidden = false;
  };
  reader.readAsDataURL(file);
}

function init() {
  const saved = store.getItem("clawdbot.lang");
  const browserZh = (navigator.language || "en").toLowerCase().startsWith("zh");
  applyLanguage(saved || (browserZh ? "zh" : "en"));
  $("api-key").value = store.getItem("clawdbot.apiKey") || "";
  $("api-key").addEventListener("change", (e) => { store.setItem("clawdbot.apiKey", e.target.value.trim()); });
  $("lang").addEventListener("change", (e) => applyLanguage(e.target.value));
  $("new-chat").addEventListener("click", () => {
    store.setItem("clawdbot.session", newSessionId());
    $("messages").replaceChildren();
    setStatus(t("ready"));
  });
  $("image").addEventListener("change", (e) => attachImage(e.target.files[0]));
  $("attachment-remove").addEventListener("click", clearImage);
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  loadModel();
  loadHistory().catch((err) => setStatus(t("error") + ": " + err));
}

init();

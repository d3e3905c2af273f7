// Shared by both skins: talking to the stand-in server, polling a conversation, small DOM helpers.
// The server owns the conversation; pages only render what /api/conversation/<id> says.
"use strict";
const Standin = {
  async config() {
    const r = await fetch("/api/config", {cache: "no-store"});
    return r.json();
  },
  async submit(skin, conversation, prompt, mode) {
    const r = await fetch("/api/submit", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({skin, conversation, prompt, mode})});
    return {status: r.status, body: await r.json()};
  },
  async load(id) {
    const r = await fetch("/api/conversation/" + encodeURIComponent(id), {cache: "no-store"});
    if (r.status !== 200) return null;
    return r.json();
  },
  // Polls the conversation every 50 ms until every turn is done; render(conv) after each read.
  follow(id, render) {
    if (Standin._following === id) return;
    Standin._following = id;
    const tick = async () => {
      if (Standin._following !== id) return;
      let conv = null;
      try { conv = await Standin.load(id); } catch (e) { conv = null; }
      if (conv) render(conv);
      if (conv && conv.turns.every(t => t.done)) { Standin._following = null; return; }
      setTimeout(tick, 50);
    };
    tick();
  },
  // The sidebar's history list (newest first), refreshed every second; link(item) builds one entry.
  sidebar(list, skin, link) {
    let shown = "";
    const tick = async () => {
      try {
        const r = await fetch("/api/history?skin=" + skin, {cache: "no-store"});
        if (r.status === 200) {
          const items = await r.json();
          const key = JSON.stringify(items);
          if (key !== shown) { shown = key; list.replaceChildren(...items.map(link)); }
        }
      } catch (e) { /* the next tick tries again */ }
      setTimeout(tick, 1000);
    };
    tick();
  },
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c) e.append(c);
    return e;
  },
  show(e, on) { if (e) e.hidden = !on; },
  setText(e, text) { if (e && e.textContent !== text) e.textContent = text; },
  loginRedirect(cfg, next) {
    if (cfg.auto_login) setTimeout(() => { location.href = "/auth/login?next=" + encodeURIComponent(next); }, 600);
  },
  // Enter submits, Shift+Enter is a new line (both real sites do this).
  bindEnter(editor, submit) {
    editor.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); submit(); }
    });
  },
};

// ChatGPT skin of the stand-in: the DOM shapes services/backends/web/sites/chatgpt.toml targets.
"use strict";
(function () {
  const E = Standin.el;
  const MODELS = [
    ["auto", "Auto", "Decides how long to think"],
    ["instant", "Instant", "Answers right away"],
    ["thinking", "Thinking", "Thinks longer for better answers"],
    ["pro", "Pro", "Research-grade intelligence"],
  ];
  const state = {conversation: null, model: "Auto", rendered: 0, cfg: null, busy: false};
  const root = document.getElementById("root");

  function conversationFromPath() {
    const m = location.pathname.match(/^\/c\/([^/]+)$/);
    return m && !m[1].startsWith("WEB:") ? decodeURIComponent(m[1]) : null;
  }

  function loginWall(cfg) {
    // like the real site, a signed-out visitor still gets a composer: only the login buttons tell
    root.append(E("div", {class: "wall"},
      E("h1", {text: "Get smarter responses, upload files and images, and more."}),
      E("a", {href: "/auth/login?next=" + encodeURIComponent(location.pathname)},
        E("button", {"data-testid": "login-button", text: "Log in"})),
      E("button", {"data-testid": "signup-button", text: "Sign up for free"})),
      E("form", {class: "composer"}, E("div", {id: "prompt-textarea", contenteditable: "true", class: "ProseMirror",
        role: "textbox", "aria-label": "Message ChatGPT"}),
        E("button", {"data-testid": "send-button", "aria-label": "Send prompt", type: "button", text: "↑"})));
    Standin.loginRedirect(cfg, location.pathname);
  }

  function buildApp(cfg) {
    const label = E("span", {class: "model-label", text: state.model});
    const opener = E("button", {"data-testid": "model-switcher-dropdown-button", "aria-haspopup": "menu",
      "aria-label": "Model selector, current model is " + state.model, type: "button"}, "ChatGPT ", label);
    const menu = E("div", {role: "menu", hidden: true});
    for (const [id, name, desc] of MODELS) {
      if (id === "pro" && cfg.deep === "missing") continue;
      const disabled = id === "pro" && cfg.deep === "disabled";
      const item = E("div", {role: "menuitem", "data-testid": "model-switcher-" + id, tabindex: "0",
        "aria-disabled": disabled ? "true" : null}, E("span", {text: name}),
        E("div", {class: "desc", text: disabled ? "Upgrade to get " + name : desc}));
      item.addEventListener("click", () => {
        if (disabled) return;
        // deep = "unapplied": the item takes the click, the menu closes, and the model stays as it was
        if (id === "pro" && cfg.deep === "unapplied") { menu.hidden = true; return; }
        state.model = name;
        Standin.setText(label, name);
        opener.setAttribute("aria-label", "Model selector, current model is " + name);
        menu.hidden = true;
      });
      menu.append(item);
    }
    opener.addEventListener("click", () => { menu.hidden = !menu.hidden; });
    // a read-aloud control outside the composer: a document-wide "Stop" match would never finish a turn
    const readAloud = E("button", {type: "button", "aria-label": "Stop", class: "read-aloud", text: "Stop reading"});
    const header = E("header", {}, E("a", {href: "/", "data-testid": "create-new-chat-button", text: "New chat"}),
      opener, menu, readAloud);
    // the history list, like the real sidebar: nav > #history > a[href="/c/<id>"] with the title inside
    const historyList = E("div", {id: "history"});
    Standin.sidebar(historyList, "chatgpt", (c) => E("a", {href: "/c/" + c.id, class: "__menu-item"},
      E("div", {class: "truncate", title: c.title, text: c.title})));
    root.append(E("nav", {"aria-label": "Chat history", class: "sidebar"}, historyList));
    const thread = E("div", {class: "thread", id: "thread"});
    const editor = E("div", {id: "prompt-textarea", contenteditable: "true", class: "ProseMirror", role: "textbox",
      "aria-label": "Message ChatGPT"});
    const fallback = E("textarea", {name: "prompt-textarea", style: "display:none"});
    const send = E("button", {"data-testid": "send-button", id: "composer-submit-button", "aria-label": "Send prompt",
      type: "button", text: "↑"});
    // layout = "changed-after-send": the stop button and the assistant turns (below) are renamed
    const stop = state.v2 ?
      E("button", {"data-testid": "composer-halt", "aria-label": "Halt", type: "button", text: "■", hidden: true}) :
      E("button", {"data-testid": "stop-button", "aria-label": "Stop streaming", type: "button", text: "■", hidden: true});
    const form = E("form", {class: "composer"}, editor, fallback, send, stop);
    form.addEventListener("submit", (ev) => ev.preventDefault());
    send.addEventListener("click", () => submit());
    Standin.bindEnter(editor, () => submit());
    const toasts = E("div", {class: "toast-root", "data-testid": "toast-root"});
    root.append(header, E("main", {}, thread, form), toasts);
    const downgrade = E("div", {role: "status", "data-testid": "model-downgrade-banner",
      text: "Pro isn't available for this message. We've switched you to the latest default model."});
    state.ui = {thread, editor, send, stop, toasts, label, opener, downgrade};
  }

  function setGenerating(on) {
    Standin.show(state.ui.stop, on);
    Standin.show(state.ui.send, !on);
  }

  function turnPair(n, turn) {
    const user = E("article", {"data-testid": "conversation-turn-" + (2 * n + 1), "data-turn": "user"},
      E("div", {"data-message-author-role": "user"}, E("div", {class: "whitespace-pre-wrap", text: turn.prompt})));
    const shimmer = E("div", {class: "thinking"}, E("span", {class: "loading-shimmer"}));
    const progress = E("div", {role: "progressbar", class: "progress", text: "…"});
    const md = E("div", {class: "markdown prose"});
    const err = E("div", {class: "text-token-text-error"});
    const regen = E("button", {type: "button", text: "Regenerate"});
    // like the real action bar, a "Switch model" button naming the model that answered this turn
    const actions = E("div", {class: "turn-actions"},
      E("button", {"data-testid": "copy-turn-action-button", "aria-label": "Copy", type: "button", text: "⧉"}),
      E("button", {"data-testid": "turn-model-button", "aria-label": "Switch model", type: "button",
        text: turn.served || turn.mode || ""}),
      E("button", {"data-testid": "good-response-turn-action-button", "aria-label": "Good response", type: "button", text: "👍"}),
      E("button", {"data-testid": "bad-response-turn-action-button", "aria-label": "Bad response", type: "button", text: "👎"}));
    const assistant = state.v2 ?
      E("section", {"data-turn-v2": "assistant", class: "agent-turn"},
        E("div", {"data-author": "assistant"}, shimmer, progress, md, err, regen), actions) :
      E("article", {"data-testid": "conversation-turn-" + (2 * n + 2), "data-turn": "assistant"},
        E("div", {"data-message-author-role": "assistant"}, shimmer, progress, md, err, regen), actions);
    return {user, assistant, shimmer, progress, md, err, regen, actions, inThread: false};
  }

  function render(conv) {
    const ui = state.ui;
    state.pairs = state.pairs || [];
    conv.turns.forEach((turn, n) => {
      let p = state.pairs[n];
      if (!p) { p = state.pairs[n] = turnPair(n, turn); ui.thread.append(p.user); }
      if (turn.reply && !p.inThread) { ui.thread.append(p.assistant); p.inThread = true; }
      if (!turn.reply && p.inThread) { p.assistant.remove(); p.inThread = false; }
      Standin.show(p.shimmer, !!turn.thinking);
      Standin.setText(p.shimmer.firstChild, turn.thinking || "");
      Standin.show(p.progress, !!turn.progress);
      Standin.setText(p.md, turn.text);
      Standin.show(p.md, !!turn.text);
      Standin.show(p.err, !!turn.error);
      Standin.setText(p.err, turn.error || "");
      Standin.show(p.regen, !!turn.error);
      Standin.show(p.actions, !!turn.bar);
    });
    const last = conv.turns[conv.turns.length - 1];
    // downgrade: the turn was served by another model; like the real site, say so and show it in the picker
    if (last && last.served && last.served !== last.mode && last.done) {
      state.model = last.served;
      Standin.setText(ui.label, last.served);
      ui.opener.setAttribute("aria-label", "Model selector, current model is " + last.served);
      // downgrade_banner false: the label-only downgrade (no banner; only the picker and the turn say Auto)
      if (!ui.downgrade.isConnected && last.downgrade_banner !== false) ui.thread.append(ui.downgrade);
    }
    setGenerating(!!(last && last.stop));
    const banner = last && last.banner;
    ui.toasts.replaceChildren(...(banner ? [E("div", {role: "alert", "data-testid": "toast", text: banner})] : []));
    if (conv.title && document.title !== conv.title) document.title = conv.title;
  }

  async function submit() {
    const ui = state.ui;
    const prompt = ui.editor.innerText.trim();
    if (!prompt || state.busy) return;
    state.busy = true;
    const isNew = !state.conversation;
    const res = await Standin.submit("chatgpt", state.conversation, prompt, state.model);
    state.busy = false;
    if (res.status !== 200) {
      ui.toasts.replaceChildren(E("div", {role: "alert", text: res.status === 401 ?
        "Your session has expired. Please log in again." : "Something went wrong. Unable to load conversation."}));
      return;
    }
    ui.editor.textContent = "";
    setGenerating(true);
    state.conversation = res.body.conversation;
    if (isNew) {
      // like the real site: a transient request route first, the persisted id a moment later
      history.pushState({}, "", "/c/WEB:" + Math.random().toString(16).slice(2, 10));
      setTimeout(() => history.replaceState({}, "", "/c/" + res.body.conversation), 1000 * state.cfg.real_url_after);
    }
    Standin.follow(state.conversation, render);
  }

  async function boot() {
    const cfg = state.cfg = await Standin.config();
    state.v2 = cfg.layout === "changed-after-send";
    if (!cfg.logged_in) return loginWall(cfg);
    buildApp(cfg);
    const id = conversationFromPath();
    if (id) {
      const conv = await Standin.load(id);
      if (!conv || conv.skin !== "chatgpt") {
        history.replaceState({}, "", "/");
        state.ui.toasts.replaceChildren(E("div", {role: "alert", text: "Unable to load conversation " + id}));
        setTimeout(() => state.ui.toasts.replaceChildren(), 1500);
        return;
      }
      state.conversation = id;
      render(conv);
      Standin.follow(id, render);
    }
  }
  boot();
})();

// Gemini skin of the stand-in: the DOM shapes services/backends/web/sites/gemini.toml targets.
"use strict";
(function () {
  const E = Standin.el;
  const TOOLS = ["Deep Research", "Deep Think", "Canvas", "Guided Learning"];
  const state = {conversation: null, deep: false, busy: false, cfg: null};
  const root = document.getElementById("root");

  function conversationFromPath() {
    const m = location.pathname.match(/^\/app\/([^/]+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function loginWall(cfg) {
    root.append(E("div", {class: "wall"},
      E("h1", {text: "Meet Gemini, your personal AI assistant"}),
      E("a", {href: "/auth/login?next=" + encodeURIComponent(location.pathname), "aria-label": "Sign in",
        class: "sign-in-button", text: "Sign in"})));
    Standin.loginRedirect(cfg, location.pathname);
  }

  function buildApp(cfg) {
    const recent = E("conversations-list", {class: "conversation-items-container"});
    Standin.sidebar(recent, "gemini", (c) => E("a", {href: "/app/" + c.id, class: "conversation",
      "data-test-id": "conversation"}, E("div", {class: "conversation-title", text: c.title})));
    const nav = E("side-navigation", {}, E("a", {href: "/app", "data-test-id": "new-chat-button",
      "aria-label": "New chat", text: "New chat"}), recent);
    const history_ = E("div", {class: "chat-history", id: "chat-history"});
    const editor = E("div", {class: "ql-editor textarea", contenteditable: "true", role: "textbox",
      "aria-label": "Enter a prompt here", "data-placeholder": "Ask Gemini"});
    const rich = E("rich-textarea", {}, editor);
    const toolsButton = E("button", {class: "toolbox-drawer-button", "aria-label": "Tools", type: "button", text: "Tools"});
    const menu = E("div", {role: "menu", class: "toolbox-drawer-menu", hidden: true});
    for (const name of TOOLS) {
      if (name === "Deep Think" && cfg.deep === "missing") continue;
      const disabled = name === "Deep Think" && cfg.deep === "disabled";
      const item = E("button", {role: "menuitemcheckbox", type: "button", "aria-checked": "false",
        class: "toolbox-drawer-item-list-button", "aria-disabled": disabled ? "true" : null, text: name});
      item.addEventListener("click", () => {
        if (disabled) return;
        menu.hidden = true;
        // deep = "unapplied": the item takes the click and the menu closes, but no Deep Think chip appears
        if (name === "Deep Think" && cfg.deep !== "unapplied") setDeep(true);
        // deep_limit: Deep Think is picked, and its limit notice comes up as a snack bar over the composer
        if (name === "Deep Think" && cfg.deep_limit) {
          state.ui.snack.replaceChildren(E("div", {role: "alert", class: "mat-mdc-snack-bar-container cover",
            text: cfg.deep_limit}));
        }
      });
      menu.append(item);
    }
    toolsButton.addEventListener("click", () => { menu.hidden = !menu.hidden; });
    const chip = E("button", {class: "toolbox-drawer-item-deselect-button", "aria-label": "Deselect Deep Think",
      type: "button"}, E("span", {text: "Deep Think"}), E("span", {text: " ✕"}));
    const chipBox = E("div", {class: "toolbox-drawer-item-deselect-button-container", hidden: true}, chip);
    chip.addEventListener("click", () => setDeep(false));
    const drawer = E("toolbox-drawer", {}, toolsButton, menu);
    const send = E("button", {class: "send-button submit", "aria-label": "Send message", type: "button", text: "➤"});
    // layout = "changed-after-send": the stop button and the model responses (below) are renamed
    const stop = state.v2 ?
      E("button", {class: "halt-button", "aria-label": "Halt", type: "button", text: "■", hidden: true}) :
      E("button", {class: "send-button stop", "aria-label": "Stop response", type: "button", text: "■", hidden: true});
    send.addEventListener("click", () => submit());
    Standin.bindEnter(editor, () => submit());
    const input = E("input-area-v2", {}, rich, drawer, chipBox, send, stop);
    const snack = E("div", {class: "snack-bar-host"});
    root.append(nav, E("main", {}, history_, input), snack);
    state.ui = {history: history_, editor, send, stop, chipBox, menu, snack, items: menu.querySelectorAll("[role=menuitemcheckbox]")};
  }

  function setDeep(on) {
    state.deep = on;
    Standin.show(state.ui.chipBox, on);
    state.ui.items.forEach(i => { if (i.textContent === "Deep Think") i.setAttribute("aria-checked", on ? "true" : "false"); });
  }

  function setGenerating(on) {
    Standin.show(state.ui.stop, on);
    Standin.show(state.ui.send, !on);
  }

  function container(turn) {
    const query = E("user-query", {}, E("div", {class: "query-text", text: turn.prompt}));
    const progress = E("div", {role: "progressbar", class: "progress", "aria-label": "Loading", text: "…"});
    const thinking = E("div", {class: state.v2 ? "thought-label" : "thinking-label"});
    const md = E("div", {class: "markdown markdown-main-panel"});
    const content = E("message-content", {class: "model-response-text"}, md);
    const footer = E("div", {class: "response-footer"});
    const buttons = [E("button", {"aria-label": "Copy", "data-test-id": "copy-button", type: "button", text: "⧉"}),
      E("button", {"aria-label": "Good response", type: "button", text: "👍"}),
      E("button", {"aria-label": "Bad response", type: "button", text: "👎"}),
      // the mode that answered this response (a downgraded Deep Think prompt reads Fast)
      E("span", {class: "response-mode-chip", text: turn.served || turn.mode || ""})];
    const response = E(state.v2 ? "response-panel" : "model-response", {},
      E("div", {class: "response-container"}, thinking, progress, content, footer));
    const box = E("div", {class: "conversation-container"}, query);
    return {box, response, progress, thinking, md, footer, buttons, inBox: false};
  }

  function render(conv) {
    const ui = state.ui;
    state.boxes = state.boxes || [];
    conv.turns.forEach((turn, n) => {
      let b = state.boxes[n];
      if (!b) { b = state.boxes[n] = container(turn); ui.history.append(b.box); }
      if (turn.reply && !b.inBox) { b.box.append(b.response); b.inBox = true; }
      if (!turn.reply && b.inBox) { b.response.remove(); b.inBox = false; }
      Standin.show(b.progress, !!turn.progress);
      Standin.show(b.thinking, !!turn.thinking);
      Standin.setText(b.thinking, turn.thinking || "");
      Standin.setText(b.md, turn.text || turn.error || "");
      const complete = !!turn.bar;
      if (b.footer.classList.contains("complete") !== complete) {
        b.footer.classList.toggle("complete", complete);
        b.footer.replaceChildren(...(complete ? b.buttons : []));
      }
    });
    const last = conv.turns[conv.turns.length - 1];
    // downgrade: the turn was served in Fast; the Deep Think chip is gone from the composer
    if (last && last.served && last.served !== last.mode && state.deep) setDeep(false);
    setGenerating(!!(last && last.stop));
    const banner = last && last.banner;
    ui.snack.replaceChildren(...(banner ? [E("div", {role: "alert", class: "mat-mdc-snack-bar-container", text: banner})] : []));
    if (conv.title && document.title !== conv.title + " - Gemini") document.title = conv.title + " - Gemini";
  }

  async function submit() {
    const ui = state.ui;
    const prompt = ui.editor.innerText.trim();
    if (!prompt || state.busy) return;
    state.busy = true;
    const isNew = !state.conversation;
    const res = await Standin.submit("gemini", state.conversation, prompt, state.deep ? "Deep Think" : "Fast");
    state.busy = false;
    if (res.status !== 200) {
      ui.snack.replaceChildren(E("div", {role: "alert", text: res.status === 401 ?
        "Sign in to continue" : "Something went wrong. Try again."}));
      return;
    }
    ui.editor.textContent = "";
    setGenerating(true);
    state.conversation = res.body.conversation;
    if (isNew) setTimeout(() => history.pushState({}, "", "/app/" + res.body.conversation), 200);
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
      if (!conv || conv.skin !== "gemini") {
        history.replaceState({}, "", "/app");
        return;
      }
      state.conversation = id;
      render(conv);
      Standin.follow(id, render);
    }
  }
  boot();
})();

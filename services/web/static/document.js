// The Document page's one behaviour: select text in a section and that section's comment form opens with
// the passage filled in (docs/web.md § The research pages). Hooked by data- attributes:
//   data-comment-section="SID"   the rendered text of section SID (where a selection counts)
//   data-comment-form="SID"      the <details> holding SID's comment form (quote and text fields)
(function () {
  "use strict";

  function sectionOf(node) {
    while (node && node.nodeType !== 1) node = node.parentNode;
    return node ? node.closest("[data-comment-section]") : null;
  }

  function onSelect() {
    var sel = window.getSelection();
    if (!sel || sel.isCollapsed || sel.rangeCount === 0) return;
    var text = sel.toString().replace(/\s+/g, " ").trim();
    if (!text) return;
    var start = sectionOf(sel.anchorNode), end = sectionOf(sel.focusNode);
    if (!start || start !== end) return;          // a passage is quoted from one section only
    var sid = start.getAttribute("data-comment-section");
    var box = document.querySelector('[data-comment-form="' + sid + '"]');
    if (!box) return;
    box.open = true;
    box.querySelector('textarea[name="quote"]').value = text.slice(0, 2000);
    box.querySelector('textarea[name="text"]').focus({preventScroll: true});
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-comment-section]").forEach(function (el) {
      el.addEventListener("mouseup", function () { setTimeout(onSelect, 0); });
      el.addEventListener("keyup", function (ev) { if (ev.shiftKey) onSelect(); });
    });
  });
})();

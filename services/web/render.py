"""Markdown with math, as HTML that is safe to put in a page: the panel's one renderer of text an LLM or a
user wrote (answers, insights, reviews, document sections, comments, findings).

Everything such a text holds is untrusted (docs/web.md § Rendering):

* raw HTML is off (markdown-it-py's ``html=False``): a ``<script>``, an ``<img onerror=...>`` or any tag
  is shown as the characters it is made of;
* a link or autolink is a link only when its URL is ``http:``, ``https:`` or ``mailto:``; anything else
  (``javascript:``, ``data:``, ``vbscript:``, a relative path) stays text. Links get
  ``rel="noopener noreferrer nofollow"``;
* images are not rendered (``![alt](url)`` is a link to ``url`` at most): a page never fetches an address
  that an LLM chose, and the panel stays offline;
* ``$...$`` and ``$$...$$`` (mdit-py-plugins' dollarmath) become MathML through latex2mathml, then the
  MathML is rebuilt from an allow-list of MathML elements and presentation attributes, so no attribute
  an author slipped into TeX (``\\href``, a ``style``, an event handler) survives. A formula that does not
  convert is shown as its TeX source, escaped, in ``<code class="math-error">``.

:func:`markdown` returns a ``str`` of HTML; templates use it through the ``md`` filter
(services/web/templating.py: ``{{ insight.text|md }}``), the only HTML made from untrusted text that is
marked safe. It is pure and cached per text, so a page of 50 insights costs 50 dict
lookups on a second view.
"""
from __future__ import annotations

import functools
import html
import re
import xml.etree.ElementTree as ET
from typing import Any

from latex2mathml.converter import convert as _tex_to_mathml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

ALLOWED_SCHEMES = ("http:", "https:", "mailto:")
MAX_CHARS = 200_000          # a longer text is cut (with a note): one answer must not stall a page
CACHE_SIZE = 4096

# MathML presentation elements (MathML Core plus the few latex2mathml emits); anything else is dropped
_MATH_TAGS = frozenset("""
math semantics annotation mrow mi mn mo ms mtext mspace mfrac msqrt mroot mstyle merror mpadded mphantom
msub msup msubsup munder mover munderover mmultiscripts mprescripts none mtable mtr mtd mlabeledtr menclose
""".split())
_MATH_ATTRS = frozenset("""
display mathvariant mathsize stretchy fence separator lspace rspace minsize maxsize movablelimits accent
accentunder largeop symmetric form columnalign rowalign columnspacing rowspacing columnlines rowlines frame
framespacing equalrows equalcolumns displaystyle scriptlevel linethickness width height depth voffset
notation align columnspan rowspan encoding
""".split())
_ATTR_VALUE = re.compile(r"[\w .%#:,+\-]*\Z")   # plain values only: no quotes, parentheses or url(...)
_MATHML_NS = "{http://www.w3.org/1998/Math/MathML}"


def _valid_link(url: str) -> bool:
    # markdown-it normalises the URL before this check; compare its scheme case- and space-insensitively
    # (browsers ignore leading control characters and spaces in a scheme: "  JaVaScRiPt:" is still one)
    head = re.sub(r"[\x00-\x20]+", "", url[:32]).lower()
    return head.startswith(ALLOWED_SCHEMES)


def _clean(node: ET.Element) -> ET.Element | None:
    """A copy of ``node`` with only allowed MathML tags and attributes (None: drop the node)."""
    tag = node.tag.removeprefix(_MATHML_NS) if isinstance(node.tag, str) else ""
    if tag not in _MATH_TAGS:
        return None
    if tag == "annotation":
        return None   # a TeX annotation is only a copy of the source; the page shows no hidden text
    out = ET.Element(tag)
    for name, value in node.attrib.items():
        if name in _MATH_ATTRS and _ATTR_VALUE.match(value):
            out.set(name, value)
    out.text = node.text
    for child in node:
        kept = _clean(child)
        if kept is not None:
            out.append(kept)
        # keep the text that followed a dropped child, attached to the last kept one (or the parent)
        if child.tail:
            if kept is not None:
                kept.tail = child.tail
            elif len(out):
                out[-1].tail = (out[-1].tail or "") + child.tail
            else:
                out.text = (out.text or "") + child.tail
    return out


@functools.lru_cache(maxsize=CACHE_SIZE)
def math(tex: str, display: bool = False) -> str:
    """One formula as sanitised MathML, or its escaped source in ``<code class="math-error">`` if
    latex2mathml cannot convert it."""
    try:
        raw = _tex_to_mathml(tex, display="block" if display else "inline")
        root = _clean(ET.fromstring(raw))
    except Exception:   # noqa: BLE001 - any failure of a third-party converter on untrusted TeX is "not math"
        root = None
    if root is None or root.tag != "math":
        return f'<code class="math-error" title="formula not rendered">{html.escape(tex)}</code>'
    root.set("display", "block" if display else "inline")
    return ET.tostring(root, encoding="unicode", method="xml", short_empty_elements=False)


def _build() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.validateLink = _valid_link    # type: ignore[method-assign]  # markdown-it-py's documented hook
    md.use(dollarmath_plugin, allow_labels=False, allow_space=True, allow_digits=False, double_inline=True)

    # our own math rules (the plugin's put a <div> inside a paragraph for an inline $$...$$, which the
    # browser's parser splits the paragraph around)
    def inline(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        return f'<span class="math">{math(tokens[idx].content, False)}</span>'

    def inline_display(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        return f'<span class="math display">{math(tokens[idx].content, True)}</span>'

    def block(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        return f'<div class="math display">{math(tokens[idx].content, True)}</div>\n'

    def link_open(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        return str(self.renderToken(tokens, idx, options, env))

    md.add_render_rule("math_inline", inline)
    md.add_render_rule("math_inline_double", inline_display)
    md.add_render_rule("math_block", block)
    md.add_render_rule("link_open", link_open)
    return md


_MD = _build()


@functools.lru_cache(maxsize=CACHE_SIZE)
def markdown(text: str | None) -> str:
    """``text`` (Markdown with ``$`` math) as safe HTML; empty for None or an empty text."""
    if not text:
        return ""
    if not isinstance(text, str):
        text = str(text)
    note = ""
    if len(text) > MAX_CHARS:
        text, note = text[:MAX_CHARS], f'<p class="cut">(cut: the text is longer than {MAX_CHARS:,} characters)</p>'
    return str(_MD.render(text)) + note


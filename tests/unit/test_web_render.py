"""services/web/render.py: untrusted Markdown becomes HTML in which nothing can run, and math becomes MathML.

Each payload is checked by parsing the output with html.parser: no element outside the few Markdown makes,
no attribute whose name starts with ``on``, no ``href`` outside http/https/mailto, no ``src`` at all."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from services.web import render as R

SAFE_TAGS = {"p", "em", "strong", "code", "pre", "a", "ul", "ol", "li", "blockquote", "h1", "h2", "h3", "h4", "h5",
             "h6", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "s", "span", "div"} | R._MATH_TAGS


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Tags()
    p.feed(html)
    return p.tags


def assert_inert(html: str) -> None:
    for tag, attrs in tags(html):
        assert tag in SAFE_TAGS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on"), (name, html)
            assert name not in ("src", "style", "srcdoc", "formaction", "xlink:href"), (name, html)
            if name == "href":
                assert (value or "").startswith(("http:", "https:", "mailto:")), (value, html)


PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="https://x.org" onclick="alert(1)">x</a>',
    "<div onmouseover='alert(1)'>hover</div>",
    "<svg onload=alert(1)>",
    "<iframe src='javascript:alert(1)'></iframe>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](java&#x09;script:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    "<javascript:alert(1)>",
    "![x](https://evil.example/track.png)",
    "![x](x\" onerror=\"alert(1))",
    '[t](https://x.org "a\\" onmouseover=\\"alert(1)")',
    '[t](https://x.org "<script>alert(1)</script>")',
    "`<script>alert(1)</script>`",
    "```html\n<script>alert(1)</script>\n```",
    "```\" onload=\"alert(1)\n<b>x</b>\n```",
    "$<script>alert(1)</script>$",
    "$$<img src=x onerror=alert(1)>$$",
    r"$\text{<script>alert(1)</script>}$",
    r"$\href{javascript:alert(1)}{x}$",
    r"$\style{color:red}{x}$",
    r"$\color{red\" onload=\"alert(1)}{x}$",
    "| a | b |\n|---|---|\n| <script>alert(1)</script> | [x](javascript:alert(1)) |",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_untrusted_markup_is_inert(payload):
    html = R.markdown(payload)
    assert_inert(html)
    assert "<script" not in html.lower() and "<img" not in html.lower() and "<iframe" not in html.lower()


def test_raw_html_is_shown_as_text():
    html = R.markdown("before <script>alert(1)</script> after")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_forbidden_link_stays_text_and_an_allowed_one_is_a_link():
    assert R.markdown("[x](javascript:alert(1))") == "<p>[x](javascript:alert(1))</p>\n"
    assert "<a" not in R.markdown("[x](data:text/html,hi)")
    assert "<a" not in R.markdown("[x](/relative/path)")
    html = R.markdown("see [the paper](https://arxiv.org/abs/1 \"a <b>title</b>\") or <mailto:a@b.org>")
    links = [a for t, a in tags(html) if t == "a"]
    assert [a["href"] for a in links] == ["https://arxiv.org/abs/1", "mailto:a@b.org"]
    assert links[0]["title"] == "a <b>title</b>"          # the title is an escaped attribute value
    assert all(a["rel"] == "noopener noreferrer nofollow" for a in links)


def test_images_are_not_fetched():
    html = R.markdown("![a chart](https://example.org/c.png)")
    assert "<img" not in html and "src=" not in html


def test_inline_and_display_math_render_to_mathml():
    html = R.markdown(r"The group $\mathrm{GL}_3(\mathbb{F}_2)$ has order $$168 = 2^3 \cdot 3 \cdot 7$$ here.")
    assert html.count("<math") == 2
    assert '<math display="inline">' in html and '<math display="block">' in html
    assert "<msub>" in html and "<mn>168</mn>" in html
    assert html.startswith("<p>") and "<div" not in html       # inline $$ stays inside its paragraph
    block = R.markdown("$$\n\\frac{7 \\cdot 6}{2}\n$$")
    assert block.startswith('<div class="math display"><math display="block">') and "<mfrac>" in block
    assert_inert(html + block)


def test_html_in_math_is_text():
    html = R.markdown("$a<b$ and $x > y$")
    assert "<mo>&lt;</mo>" in html and "<b>" not in html
    assert_inert(html)


def test_a_formula_that_does_not_convert_is_shown_as_escaped_source():
    html = R.markdown(r"broken $\frac{$ here")
    assert '<code class="math-error"' in html and r"\frac{" in html
    html = R.markdown(r"$\text{<script>}$")
    assert "<script" not in html and ("&lt;script&gt;" in html or "<mtext>&lt;script&gt;</mtext>" in html)


def test_mathml_keeps_only_allowed_attributes():
    # latex2mathml emits attributes for \color and \href; the allow-list drops those it does not know
    html = R.math(r"\href{javascript:alert(1)}{x} + \color{red}{y}")
    assert "href" not in html and "javascript" not in html and "<mi>x</mi>" in html
    assert_inert(html)


def test_dollar_amounts_are_not_math():
    assert "<math" not in R.markdown("it costs $5 and $6 today")


def test_markdown_structure_and_empty_input():
    html = R.markdown("# Title\n\n*a* **b** ~~c~~\n\n- one\n- two\n\n```\ncode <x>\n```")
    assert "<h1>Title</h1>" in html and "<em>a</em>" in html and "<s>c</s>" in html and "<li>two</li>" in html
    assert "<pre><code>code &lt;x&gt;" in html
    assert R.markdown("") == "" and R.markdown(None) == ""


def test_a_huge_text_is_cut():
    html = R.markdown("x" * (R.MAX_CHARS + 10))
    assert 'class="cut"' in html

"""Training contexts of every kind of text people have, for the demo synthesizer (``train.py``).

The raw material is real text that is *not* in the held-out sets (``eval/``): docstrings and
source code of the Python standard library, read with :mod:`ast` (nothing is imported),
leaving out every module the ``docs`` set samples (``make_eval_sets.DOC_MODULES``) and
``pydoc_data`` (the ``prose`` and ``tables`` sets' language reference). No README, Node.js
doc or release table, the other held-out sources, is read. From it, with a seeded
:class:`random.Random`, come contexts of five kinds, each cut to a demo-sized length:

* ``prose``: runs of plain docstring paragraphs;
* ``docs``: whole docstrings (prose, code, backticks, ``>>>`` examples) and source code;
* ``markdown``: documents assembled from those pieces: headings, paragraphs, lists,
  fenced code, inline code, links, emphasis;
* ``html``: the same documents rendered to HTML with escaped entities, as scraped web text
  keeps them;
* ``tables``: markdown pipe tables, reST grid tables and CSV, with a sentence before them,
  whose cells are names, numbers, versions, dates, links and phrases.

Example:
    >>> rng = random.Random(0)
    >>> pieces = Pieces.from_stdlib()
    >>> text = make_context(rng, pieces, "tables")
    >>> "|" in text or "," in text
    True
"""

from __future__ import annotations

import ast
import html
import random
import re
import sysconfig
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from .make_eval_sets import DOC_MODULES

KIND_WEIGHTS = {"prose": 0.22, "docs": 0.22, "markdown": 0.2, "html": 0.16, "tables": 0.2}
MAX_CHARS = 1400  # a little past the held-out sets' 1,200, so their longest texts are not new
HELD_OUT_MODULES = (*DOC_MODULES, "pydoc_data")
SKIPPED_DIRS = {"site-packages", "test", "tests", "idlelib", "pydoc_data", "lib2to3", "turtledemo", "__pycache__"}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _held_out(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in HELD_OUT_MODULES)


@dataclass
class Pieces:
    """The raw material: docstrings, plain paragraphs, sentences, code blocks and names."""

    docstrings: list[str] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_stdlib(cls, root: Path | None = None) -> Pieces:
        """Read the standard library's sources under ``root`` (this interpreter's by default),
        in sorted order so that a seed always gives the same contexts on one Python version."""
        root = Path(root or sysconfig.get_paths()["stdlib"])
        pieces = cls()
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if SKIPPED_DIRS & set(rel.parts) or _held_out(_module_name(path, root)):
                continue
            try:
                source = path.read_text(encoding="utf-8")
                tree = ast.parse(source)
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            pieces._take(tree, source.splitlines())
        return pieces

    def _take(self, tree: ast.AST, lines: list[str]) -> None:
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if not isinstance(node, ast.Module) and not node.name.startswith("__"):
                self.names.append(node.name)
            doc = ast.get_docstring(node)
            if doc and 8 <= len(doc.split()) <= 260:
                self.docstrings.append(doc)
                for para in doc.split("\n\n"):
                    flat = " ".join(para.split())
                    if len(flat.split()) >= 12 and re.fullmatch(r"[A-Z][^>`=\[\]{}|*#]+[.!?]", flat):
                        self.paragraphs.append(flat)
                        self.sentences += [s for s in re.split(r"(?<=[.!?]) ", flat) if 4 <= len(s.split()) <= 30]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                segment = textwrap.dedent("\n".join(lines[node.lineno - 1: node.end_lineno]))
                if 3 <= segment.count("\n") <= 30 and len(segment) <= 1200:
                    self.code.append(_strip_docstring(segment))


def _strip_docstring(code: str) -> str:
    return re.sub(r'\n(\s+)("""|\'\'\').*?\2', "", code, count=1, flags=re.S)


def _cut(text: str, rng: random.Random, limit: int = MAX_CHARS) -> str:
    """At most ``limit`` characters (mostly far fewer, as real rows vary), cut at a line or sentence end."""
    limit = min(limit, rng.choice([200, 400, 600, 800, 1000, limit]))
    if len(text) <= limit:
        return text.strip()
    head = text[:limit]
    cut = max(head.rfind("\n"), head.rfind(". "))
    return (head[: cut + 1] if cut > limit // 3 else head).strip()


def _prose(rng: random.Random, p: Pieces) -> str:
    return " ".join(rng.choice(p.paragraphs) for _ in range(rng.randint(1, 4)))


def _docs(rng: random.Random, p: Pieces) -> str:
    if rng.random() < 0.2:
        return rng.choice(p.code)
    return rng.choice(p.docstrings)


def _phrase(rng: random.Random, p: Pieces) -> str:
    words = rng.choice(p.sentences).rstrip(".!?").split()
    start = rng.randrange(max(1, len(words) - 3))
    return " ".join(words[start:start + rng.randint(1, 6)])


def _inline(rng: random.Random, p: Pieces, sentence: str) -> str:
    """A sentence with some markdown inline markup: code spans, links, emphasis."""
    words = sentence.split(" ")
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(words))
        r = rng.random()
        if r < 0.4:
            words[i] = f"`{rng.choice(p.names)}{'()' if rng.random() < 0.5 else ''}`"
        elif r < 0.7:
            name = rng.choice(p.names)
            words[i] = f"[{name.replace('_', ' ')}]({_url(rng, name)})"
        else:
            words[i] = f"**{words[i]}**" if rng.random() < 0.6 else f"*{words[i]}*"
    return " ".join(words)


def _url(rng: random.Random, name: str) -> str:
    host = rng.choice(["docs.python.org/3/library", "example.org/docs", "github.com/org/project/blob/main",
                       "readthedocs.io/en/latest"])
    return rng.choice([f"https://{host}/{name.lower()}.html", f"{name.lower()}.md", f"#{name.lower().replace('_', '-')}"])


def _markdown_blocks(rng: random.Random, p: Pieces) -> list[tuple[str, str]]:
    """A document as (block kind, content) pairs, rendered by :func:`_to_markdown` or :func:`_to_html`."""
    blocks: list[tuple[str, str]] = []
    if rng.random() < 0.8:
        title = rng.choice([rng.choice(p.names).replace("_", " ").strip().title(), _phrase(rng, p).capitalize()])
        blocks.append((f"h{rng.choice([1, 2, 2, 3])}", title))
    for _ in range(rng.randint(2, 6)):
        r = rng.random()
        if r < 0.4:
            blocks.append(("p", " ".join(_inline(rng, p, rng.choice(p.sentences)) for _ in range(rng.randint(1, 3)))))
        elif r < 0.6:
            kind = rng.choice(["ul", "ol"])
            items = [_inline(rng, p, rng.choice([_phrase(rng, p), rng.choice(p.sentences)]))
                     for _ in range(rng.randint(2, 6))]
            blocks.append((kind, "\n".join(items)))
        elif r < 0.8:
            code = rng.choice(p.code).splitlines()
            start = rng.randrange(max(1, len(code) - 4))
            blocks.append(("code", "\n".join(code[start:start + rng.randint(2, 10)])))
        elif r < 0.9:
            blocks.append((f"h{rng.choice([2, 3, 4])}", _phrase(rng, p).capitalize()))
        else:
            blocks.append(("p", f"```python\n>>> {rng.choice(p.names)}()\n```"))
    return blocks


def _to_markdown(blocks: list[tuple[str, str]], rng: random.Random) -> str:
    out = []
    for kind, content in blocks:
        if kind.startswith("h"):
            out.append("#" * int(kind[1]) + " " + content)
        elif kind in ("ul", "ol"):
            bullet = rng.choice(["- ", "* "])
            out.append("\n".join((f"{i}. " if kind == "ol" else bullet) + item
                                 for i, item in enumerate(content.splitlines(), 1)))
        elif kind == "code":
            out.append(f"```{rng.choice(['python', 'py', ''])}\n{content}\n```")
        else:
            out.append(content)
    return "\n\n".join(out)


_INLINE_HTML = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\[([^\]]+)\]\(([^)]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\*([^*]+)\*"), r"<em>\1</em>"),
]


def _html_inline(text: str) -> str:
    text = html.escape(text, quote=False).replace('"', "&quot;")  # as markdown-it escapes text
    for pattern, repl in _INLINE_HTML:
        text = pattern.sub(repl, text)
    return text


def _to_html(blocks: list[tuple[str, str]], rng: random.Random) -> str:
    out = []
    for kind, content in blocks:
        if kind.startswith("h"):
            out.append(f"<{kind}>{_html_inline(content)}</{kind}>")
        elif kind in ("ul", "ol"):
            items = "\n".join(f"<li>{_html_inline(item)}</li>" for item in content.splitlines())
            out.append(f"<{kind}>\n{items}\n</{kind}>")
        elif kind == "code":
            lang = rng.choice(['', ' class="language-python"'])
            out.append(f"<pre><code{lang}>{html.escape(content)}\n</code></pre>")
        else:
            out.append(f"<p>{_html_inline(content)}</p>")
    return "\n".join(out)


def _cell(rng: random.Random, p: Pieces, column: str) -> str:
    if column == "name":
        return rng.choice(p.names)
    if column == "link":
        name = rng.choice(p.names)
        return f"[{name.replace('_', ' ').title()}]({_url(rng, name)})"
    if column == "number":
        return str(rng.choice([rng.randint(0, 99), rng.randint(100, 99999), round(rng.random() * 100, 2)]))
    if column == "version":
        return ".".join(str(rng.randint(0, 20)) for _ in range(rng.randint(2, 3)))
    if column == "date":
        return f"{rng.randint(1995, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if column == "status":
        return rng.choice(["Stable", "(2) Stable", "(1) Experimental", "Deprecated", "yes", "no", "✓", "-",
                           "Supported", "Legacy", "N/A", "True", "False", "None"])
    if column == "code":
        return f"`{rng.choice(p.names)}{rng.choice(['()', '', '=True', '(x)'])}`"
    return _phrase(rng, p)


def _tables(rng: random.Random, p: Pieces) -> str:
    columns = rng.sample(["name", "link", "number", "version", "date", "status", "code", "phrase", "phrase"],
                         rng.randint(2, 5))
    header = [_phrase(rng, p).split(" ")[0].capitalize() if rng.random() < 0.5 else c.capitalize() for c in columns]
    rows = [[_cell(rng, p, c) for c in columns] for _ in range(rng.randint(2, 12))]
    intro = rng.choice(p.sentences) + "\n\n" if rng.random() < 0.6 else ""
    style = rng.choice(["pipe", "pipe", "grid", "csv"])
    if style == "pipe":
        sep = "|" + "|".join(rng.choice(["---", " --- ", ":---", "---:"]) for _ in columns) + "|"
        lines = ["| " + " | ".join(header) + " |", sep] + ["| " + " | ".join(r) + " |" for r in rows]
        return intro + "\n".join(lines)
    if style == "csv":
        return intro + "\n".join(",".join(r) for r in [[h.lower() for h in header], *rows])
    widths = [max(len(x) for x in col) + 2 for col in zip(header, *rows)]
    rule = lambda ch: "+" + "+".join(ch * w for w in widths) + "+"  # noqa: E731
    line = lambda cells: "|" + "|".join(f" {c}".ljust(w) for c, w in zip(cells, widths)) + "|"  # noqa: E731
    body = [rule("-"), line(header), rule("=")] + [x for r in rows for x in (line(r), rule("-"))]
    return intro + "\n".join(body)


def make_context(rng: random.Random, pieces: Pieces, kind: str | None = None) -> str:
    """One training context of ``kind`` (drawn by :data:`KIND_WEIGHTS` when None), at most
    :data:`MAX_CHARS` characters."""
    kind = kind or rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    if kind == "prose":
        text = _prose(rng, pieces)
    elif kind == "docs":
        text = _docs(rng, pieces)
    elif kind == "markdown":
        text = _to_markdown(_markdown_blocks(rng, pieces), rng)
    elif kind == "html":
        text = _to_html(_markdown_blocks(rng, pieces), rng)
    else:
        text = _tables(rng, pieces)
    return _cut(text, rng)

"""Write the demo synthesizer's held-out evaluation sets, one JSON-lines file per kind of text.

The committed files in ``eval/`` are the evaluation sets; this script records how they were
cut (run once, on CPython 3.11.7 with the test extra installed: other versions of the
standard library or of the installed packages give other texts). None of these texts, nor
anything like their sources, is in the training data (``train.py`` generates its contexts
from a seed), so every figure measured on them is held out. Texts longer than ``MAX_CHARS`` are left out
(a demo-sized context):

* ``prose``: the twelve example paragraphs (``examples/data/paragraphs.jsonl``) and plain
  paragraphs of the Python language reference (``pydoc_data.topics``);
* ``docs``: docstrings of standard-library modules, prose mixed with code, backticks and
  ``>>>`` examples;
* ``markdown``: sections of installed packages' markdown READMEs (headings, lists, code,
  links);
* ``tables``: tables (markdown pipes, reST grids, CSV) with the sentence that introduces
  them, from those READMEs, the language reference, the Node.js API docs and the Debian and
  Ubuntu release tables (``distro-info-data``);
* ``html``: README sections rendered to HTML by markdown-it, as text scraped from the web
  keeps its tags and entities.

Usage::

    python -m hf_instruct_synth.demo.make_eval_sets   # rewrites hf_instruct_synth/demo/eval/*.jsonl
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import random
import re
from pathlib import Path

KINDS = ("prose", "docs", "markdown", "tables", "html")
PER_KIND = 24
MAX_CHARS = 1200  # a demo-sized context
EVAL_DIR = Path(__file__).parent / "eval"
DOC_MODULES = ("textwrap shlex difflib fractions statistics heapq bisect json base64 pathlib functools "
               "string zipfile argparse csv inspect _pydecimal ipaddress urllib.parse fnmatch glob "
               "dataclasses enum calendar pprint").split()
README_PACKAGES = ("datasets transformers huggingface-hub tokenizers accelerate pandas torch numpy pyarrow "
                   "charset-normalizer requests rich typer jinja2 pydantic hypothesis ray fsspec tqdm "
                   "safetensors click pytest filelock mutmut packaging hf-instruct-synth").split()


def _words(text: str) -> int:
    return len(text.split())


def _readme(name: str) -> str:
    try:
        meta = importlib.metadata.metadata(name)
    except importlib.metadata.PackageNotFoundError:
        return ""
    if "markdown" not in (meta.get("Description-Content-Type") or ""):
        return ""
    return meta.get_payload() or meta.get("Description") or ""


def _sections(markdown: str) -> list[str]:
    """A README cut before each heading, blank-line runs squeezed, HTML blocks and images dropped."""
    markdown = re.sub(r"<!--.*?-->", "", markdown, flags=re.S)
    out = []
    for part in re.split(r"\n(?=#{1,4} )", markdown):
        part = re.sub(r"\n{3,}", "\n\n", part).strip()
        if "<" in part and re.search(r"<(p|div|img|a|picture|br|h\d)\b", part):
            continue
        if "![" in part:
            continue
        out.append(part)
    return out


def _docs(rng: random.Random) -> list[dict]:
    found = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        docs = [(name, module.__doc__)]
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            docs.append((f"{name}.{attr}", inspect.getdoc(obj)))
        picked = [(src, inspect.cleandoc(d)) for src, d in docs if d and 35 <= _words(d) <= 220
                  and re.search(r">>>|``|`\w|\w\(|=", d)]
        found += rng.sample(picked, min(2, len(picked)))
    return [{"text": d, "source": f"docstring of {src} (CPython 3.11)"} for src, d in found]


def _readmes(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Markdown sections for ``markdown`` and, from other sections, the ``html`` set."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    markdown, html = [], []
    for name in README_PACKAGES:
        sections = [s for s in _sections(_readme(name)) if 40 <= _words(s) <= 220 and "|--" not in s
                    and "| --" not in s and re.search(r"^(#|[-*] |\d+\. |```)|`|\[", s, re.M)]
        rng.shuffle(sections)
        for s in sections[:2]:
            markdown.append({"text": s, "source": f"README of {name} (PyPI metadata)"})
        for s in sections[2:5]:
            html.append({"text": md.render(s).strip(), "source": f"README of {name}, rendered by markdown-it"})
    return markdown, html


def _tables(rng: random.Random) -> list[dict]:
    import pydoc_data.topics

    found = []
    for name in README_PACKAGES:
        text = _readme(name)
        for m in re.finditer(r"((?:^[^\n|#][^\n]{20,}\n\n?)?)((?:^\|[^\n]*\|[ \t]*\n){3,12})", text, re.M):
            block = (m.group(1) + m.group(2)).strip()
            if 15 <= _words(block) <= 220 and "<" not in block and "![" not in block:
                found.append({"text": block, "source": f"table in the README of {name}"})
    for key, body in sorted(pydoc_data.topics.topics.items()):
        for m in re.finditer(r"((?:^[^\n]{20,}\n)*)\n((?:^ +[+|=][^\n]*\n){4,40})", body, re.M):
            if not re.match(r" +[+=][-=+ ]{10,}$", m.group(2).splitlines()[0]):
                continue
            lines = inspect.cleandoc(m.group(2)).splitlines()
            while _words("\n".join(lines)) > 160:  # a long table: its first rows, up to a rule line
                lines = lines[: max(i for i, line in enumerate(lines[:-1]) if line.startswith("+")) + 1]
            block = inspect.cleandoc(m.group(1)) + "\n\n" + "\n".join(lines)
            if 15 <= _words(block) <= 220:
                found.append({"text": block, "source": f"table in the Python reference, topic {key!r}"})
    for path in sorted(Path("/usr/share/doc/nodejs/api").glob("*.md")):  # Node.js docs (MIT)
        for m in re.finditer(r"((?:^[^\n|#][^\n]{20,}\n\n?)?)((?:^\|[^\n]*\|[ \t]*\n){3,12})",
                             path.read_text(encoding="utf-8"), re.M):
            block = (m.group(1) + m.group(2)).strip()
            if 15 <= _words(block) <= 220 and "<" not in block:
                found.append({"text": block, "source": f"table in the Node.js docs, {path.name}"})
    for path in (Path("/usr/share/distro-info/debian.csv"), Path("/usr/share/distro-info/ubuntu.csv")):
        if path.exists():  # release tables: versions, names, dates
            lines = path.read_text(encoding="utf-8").splitlines()
            for start in range(1, len(lines) - 8, 9):
                found.append({"text": "\n".join([lines[0], *lines[start:start + rng.randint(4, 8)]]),
                              "source": f"rows of {path} (distro-info-data)"})
    rng.shuffle(found)
    by_source: dict[str, int] = {}
    out = []
    for row in found:
        if by_source.get(row["source"], 0) < 4:
            by_source[row["source"]] = by_source.get(row["source"], 0) + 1
            out.append(row)
    return out


def _prose(rng: random.Random) -> list[dict]:
    import pydoc_data.topics

    examples = Path(__file__).resolve().parents[2] / "examples" / "data" / "paragraphs.jsonl"
    rows = [{"text": json.loads(line)["text"], "source": "examples/data/paragraphs.jsonl"}
            for line in examples.read_text().splitlines() if line.strip()]
    paragraphs = []
    for key, body in sorted(pydoc_data.topics.topics.items()):
        for p in body.split("\n\n"):
            p = " ".join(p.split())
            if 40 <= _words(p) <= 160 and not re.search(r"[\"*`=()\[\]{}<>:]|\.\.\.", p) and p[0].isupper() and p.endswith("."):
                paragraphs.append({"text": p, "source": f"Python reference, topic {key!r}"})
    rng.shuffle(paragraphs)
    return rows + paragraphs[: PER_KIND - len(rows)]


def build(seed: int = 0) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    markdown, html = _readmes(rng)
    sets = {"prose": _prose(rng), "docs": _docs(rng), "markdown": markdown, "tables": _tables(rng), "html": html}
    return {kind: _unique([r for r in rows if len(r["text"]) <= MAX_CHARS])[:PER_KIND] for kind, rows in sets.items()}


def _unique(rows: list[dict]) -> list[dict]:
    seen: set[str] = set()
    return [r for r in rows if not (r["text"] in seen or seen.add(r["text"]))]


def load(kind: str) -> list[str]:
    """The texts of one held-out set, e.g. ``load("docs")``."""
    path = EVAL_DIR / f"{kind}.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    EVAL_DIR.mkdir(exist_ok=True)
    for kind, rows in build().items():
        with open(EVAL_DIR / f"{kind}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{kind}: {len(rows)} texts, {sum(_words(r['text']) for r in rows) / max(1, len(rows)):.0f} words on average")


if __name__ == "__main__":
    main()

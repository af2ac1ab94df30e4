"""The dataset card pushed as ``README.md``: how the data was made, and numbers computed from the data.

The card is plain text assembled here, never a template: a sample row holding ``{{ x }}``
or ``{% if %}`` is shown as it is. The generated part of the body sits between two
markers (:data:`BEGIN`, :data:`END`); a re-push replaces only that part and keeps every
line the maintainers wrote around it, and every YAML key we do not set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .stats import SynthesisStats

PAPER = "https://arxiv.org/abs/2406.14491"
BEGIN = "<!-- hf-instruct-synth:begin (generated: a re-push replaces what lies between these markers) -->"
END = "<!-- hf-instruct-synth:end -->"
CITATION = """@inproceedings{cheng2024instruction,
  title={Instruction Pre-Training: Language Models are Supervised Multitask Learners},
  author={Cheng, Daixuan and Gu, Yuxian and Huang, Shaohan and Bi, Junyu and Huang, Minlie and Wei, Furu},
  booktitle={Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
  year={2024}
}"""

# The Hub's accepted size_categories, upper bounds first.
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
          (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a row count.

    Example:
        >>> size_category(12_345), size_category(20_000_000_000), size_category(10**13)
        ('10K<n<100K', '10B<n<100B', 'n>1T')
    """
    return next((label for limit, label in _SIZES if rows < limit), "n>1T")


@dataclass
class DataStats:
    """Numbers a card shows that the data itself tells (so ``num_proc`` and cache hits change nothing).

    Example:
        >>> import pyarrow as pa
        >>> s = DataStats.of([pa.table({"instruction_response_pairs": [[{"instruction": "Q?", "response": "A"}], []]})])
        >>> s.rows, s.pairs, s.rows_without_pairs, sorted(s.pairs_per_row.items())
        (2, 1, 1, [('0', 1), ('1', 1)])
    """

    rows: int = 0  # rows of the published data (chains, with rounds)
    texts: int = 0  # raw texts (links, with rounds)
    pairs: int = 0
    rows_without_pairs: int = 0  # texts without a pair
    question_chars: int = 0
    answer_chars: int = 0
    pairs_per_row: dict[str, int] = field(default_factory=dict)  # per text

    @classmethod
    def of(cls, tables) -> DataStats:
        """Count over Arrow tables (a run's shards, read one column at a time)."""
        out = cls()
        for table in tables:
            out.rows += table.num_rows
            if "links" in table.column_names:
                per_text = [link["instruction_response_pairs"] for chain in table.column("links").to_pylist()
                            for link in chain]
            elif "instruction_response_pairs" in table.column_names:
                per_text = table.column("instruction_response_pairs").to_pylist()
            else:
                per_text = []
            for pairs in per_text:
                pairs = pairs or []
                out.texts += 1
                out.pairs += len(pairs)
                out.rows_without_pairs += not pairs
                out.pairs_per_row[str(len(pairs))] = out.pairs_per_row.get(str(len(pairs)), 0) + 1
                out.question_chars += sum(len(p["instruction"]) for p in pairs)
                out.answer_chars += sum(len(p["response"]) for p in pairs)
        return out


def make_dataset_card(
    repo_id: str,
    *,
    split_stats: dict[str, SynthesisStats],
    generation: dict[str, Any],
    license: str,
    data_stats: dict[str, DataStats] | None = None,
    source_dataset: str | None = None,
    source_revision: str | None = None,
    language: list[str] | None = None,
    samples: list[dict] | None = None,
    hardware: str | None = None,
    columns: list[str] | None = None,
    dataset_info: dict | None = None,
    command: str | None = None,
    existing: str | None = None,
):
    """Build the ``DatasetCard`` (YAML metadata + body) for an augmented dataset.

    ``split_stats`` maps each split to the run's counters (used for what the data cannot
    tell: duplicates removed, truncation, tokens, time); ``data_stats`` to numbers
    computed from the data (rows, pairs, lengths); ``existing`` is the card already on
    the Hub, whose hand-written lines and extra YAML keys are kept.

    Example:
        >>> card = make_dataset_card("user/aug", split_stats={"train": SynthesisStats(rows=2, pairs=3)},
        ...                          generation={"model": "demo"}, license="cc-by-4.0")
        >>> card.data.task_categories, card.data.size_categories
        (['text-generation'], ['n<1K'])
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    total = SynthesisStats()
    for s in split_stats.values():
        total.merge(s)
    data_stats = data_stats or {s: DataStats(rows=st.rows, texts=st.rows, pairs=st.pairs,
                                             rows_without_pairs=st.rows_without_pairs,
                                             pairs_per_row=dict(st.pairs_per_row)) for s, st in split_stats.items()}
    rows = sum(d.rows for d in data_stats.values())
    name = repo_id.split("/")[-1]
    meta: dict[str, Any] = {}
    old_body = ""
    if existing:
        old = DatasetCard(existing, ignore_metadata_errors=True)
        meta = old.data.to_dict()
        old_body = old.text.lstrip("\n")  # the blank line after the YAML is ours to write, not part of the body
    meta.update(
        license=license,
        language=meta.get("language") or language or ["en"],
        pretty_name=meta.get("pretty_name") or f"{name} (instruction-augmented)",
        task_categories=["text-generation"],
        tags=sorted(set(_strings(meta.get("tags"))) | {"synthetic", "instruction-pretraining"}),
        annotations_creators=["machine-generated"],
        size_categories=[size_category(rows)],
        configs=[{"config_name": "default",
                  "data_files": [{"split": split, "path": f"data/{split}-*"} for split in sorted(data_stats)]}],
    )
    if source_dataset:
        meta["source_datasets"] = [source_dataset]
    if dataset_info:
        meta["dataset_info"] = dataset_info
    data = DatasetCardData(**{k: v for k, v in meta.items() if v is not None})
    generated = _body(repo_id, split_stats, total, data_stats, generation, license, source_dataset, source_revision,
                      samples, hardware, columns, command)
    body = _merge_body(old_body, generated, name)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _strings(value: Any) -> list[str]:
    """A hand-written YAML value read as a list of strings (``tags: nlp`` is one tag; numbers and the like are dropped)."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _merge_body(old_body: str, generated: str, name: str) -> str:
    block = f"{BEGIN}\n{generated}\n{END}"
    if BEGIN.split(" (")[0] in old_body and END in old_body:
        head = old_body[:old_body.index(BEGIN.split(" (")[0])]
        tail = old_body[old_body.index(END) + len(END):]
        return head + block + tail
    if old_body.strip():  # a card written by hand: ours goes after it
        return old_body.rstrip() + "\n\n" + block + "\n"
    return f"# {name}\n\n{block}\n"


def _body(repo_id, split_stats, total, data_stats, generation, license, source_dataset, source_revision, samples,
          hardware, columns, command) -> str:
    model = str(generation.get("model", ""))
    model_link = f"[{model}](https://huggingface.co/{model})" if _is_hub_id(model) else model
    src = (f"[{source_dataset}](https://huggingface.co/datasets/{source_dataset})" if source_dataset
           else "local files")
    lines = [
        "Instruction-augmented pre-training data made as in [*Instruction Pre-Training: Language Models are "
        f"Supervised Multitask Learners*]({PAPER}) (Cheng et al., 2024): each raw text is kept and paired with "
        "instruction-response pairs written by a context-based instruction synthesizer "
        f"({model_link}), with [hf-instruct-synth](https://pypi.org/project/hf-instruct-synth/) {__version__}.",
        "",
        "## How it was made",
        "",
        "| | |", "|---|---|",
        f"| source dataset | {src}{f' @ `{source_revision}`' if source_revision else ''} |",
        f"| synthesizer | {model_link} |",
    ]
    lines += [f"| {k.replace('_', ' ')} | {_cell(v)} |" for k, v in generation.items() if k != "model"]
    lines += [f"| hardware | {_cell(hardware or 'not recorded')} |"]
    if command:
        lines += ["", "Reproduce with (the run's `manifest.json` is published beside the data):", "", "```bash",
                  command, "```"]
    lines += ["", _columns_note(columns), ""]
    if license == "other":
        lines += ["**License:** the source data's license was not known when this was published; check the source "
                  "before use.", ""]
    lines += ["## Statistics", "", "Computed from the published data, except where marked *(run)*: counters kept "
              "by the run for what the data cannot show.", ""]
    lines += _stats_table(split_stats, total, data_stats)
    all_data = DataStats()
    for d in data_stats.values():
        for k, v in d.pairs_per_row.items():
            all_data.pairs_per_row[k] = all_data.pairs_per_row.get(k, 0) + v
    lines += ["", "Pairs per text:", "", "| pairs | texts | |", "|---|---|---|"]
    most = max(all_data.pairs_per_row.values(), default=0)
    for k in sorted(all_data.pairs_per_row, key=int):
        n = all_data.pairs_per_row[k]
        lines.append(f"| {k} | {n:,} | {'█' * max(1, round(20 * n / most)) if n else ''} |")
    if samples:
        lines += ["", "## Sample rows", ""]
        for row in samples[:2]:
            text = json.dumps(row, ensure_ascii=False, indent=1, default=str)[:3000]
            fence = "`" * max(3, _longest_backtick_run(text) + 1)
            lines += [f"{fence}json", text, fence]
    lines += ["", "## Use", "", "```python", "from datasets import load_dataset", "",
              f'ds = load_dataset("{repo_id}")', "```", "", "## Citation", "", "```bibtex", CITATION, "```"]
    return "\n".join(lines)


def _longest_backtick_run(text: str) -> int:
    best = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        best = max(best, run)
    return best


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and " " not in name and not name.startswith((".", "/"))


def _columns_note(columns: list[str] | None) -> str:
    if columns and "links" in columns:
        return ("One row per chain of texts synthesized over several rounds: `links` holds each text with its "
                "`instruction_response_pairs` and whether it was prompted with its chain's history (`inherits`); "
                "`augmented_texts` holds the templified pre-training texts, `template_modes` their layouts.")
    note = ("Columns: " + (", ".join(f"`{c}`" for c in columns) + ". " if columns else "")
            + "`instruction_response_pairs` is a list of `{instruction, response}`; "
            "`synthesizer_output` is the synthesizer's raw text.")
    if columns and "augmented_texts" in columns:
        note += (" `augmented_texts` is the pre-training text: the raw text with its pairs templified "
                 "(`template_modes`: the layout drawn).")
    return note


def _stats_table(split_stats: dict[str, SynthesisStats], total: SynthesisStats,
                 data_stats: dict[str, DataStats]) -> list[str]:
    splits = sorted(data_stats)
    columns = splits + (["total"] if len(splits) > 1 else [])
    data_total = DataStats()
    for d in data_stats.values():
        for f in ("rows", "texts", "pairs", "rows_without_pairs", "question_chars", "answer_chars"):
            setattr(data_total, f, getattr(data_total, f) + getattr(d, f))
    data = [data_stats[s] for s in splits] + ([data_total] if len(splits) > 1 else [])
    run = [split_stats.get(s, SynthesisStats()) for s in splits] + ([total] if len(splits) > 1 else [])
    rows = [
        ("rows", lambda d, s: f"{d.rows:,}"),
        ("texts", lambda d, s: f"{d.texts:,}"),
        ("pairs", lambda d, s: f"{d.pairs:,}"),
        ("pairs per text", lambda d, s: f"{d.pairs / d.texts:.2f}" if d.texts else "0"),
        ("texts without a pair", lambda d, s: f"{d.rows_without_pairs:,}"),
        ("mean question length (chars)", lambda d, s: f"{d.question_chars / d.pairs:.0f}" if d.pairs else "-"),
        ("mean answer length (chars)", lambda d, s: f"{d.answer_chars / d.pairs:.0f}" if d.pairs else "-"),
        ("empty texts *(run)*", lambda d, s: f"{s.rows_empty:,}"),
        ("truncated prompts *(run)*", lambda d, s: f"{s.rows_truncated:,}"),
        ("skipped rows, invalid text *(run)*", lambda d, s: f"{s.rows_skipped:,}"),
        ("texts holding markup like `<s>` *(run)*", lambda d, s: f"{s.rows_with_markers:,}"),
        ("duplicate questions removed *(run)*", lambda d, s: f"{s.duplicate_questions:,}"),
        ("pairs dropped as repetition loops *(run)*", lambda d, s: f"{s.repetition_loops:,}"),
        ("generated tokens *(run)*", lambda d, s: f"{s.generated_tokens:,}"),
        ("generated tokens/s *(run)*", lambda d, s: f"{s.generated_tokens_per_s:,.1f}"),
        ("draft tokens accepted / proposed *(run)*",
         lambda d, s: f"{s.draft_tokens_accepted:,} / {s.draft_tokens_proposed:,} ({s.draft_acceptance:.0%})"
         if s.draft_tokens_proposed else "no speculation"),
    ]
    out = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    out += [f"| {name} | " + " | ".join(fmt(d, s) for d, s in zip(data, run)) + " |" for name, fmt in rows]
    return out

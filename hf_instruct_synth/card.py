"""The dataset card pushed as ``README.md``: how the data was made, and the run's real counters."""

from __future__ import annotations

import json
import platform
from typing import Any

from . import __version__
from .stats import SynthesisStats

CITATION = """@inproceedings{cheng2024instruction,
  title={Instruction Pre-Training: Language Models are Supervised Multitask Learners},
  author={Cheng, Daixuan and Gu, Yuxian and Huang, Shaohan and Bi, Junyu and Huang, Minlie and Wei, Furu},
  booktitle={Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
  year={2024}
}"""

_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
          (10_000_000_000, "1B<n<10B")]


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count.

    Example:
        >>> size_category(12_345)
        '10K<n<100K'
    """
    return next((label for limit, label in _SIZES if rows < limit), "n>10B" if rows >= 10_000_000_000 else "n<1K")


def make_dataset_card(
    repo_id: str,
    *,
    split_stats: dict[str, SynthesisStats],
    generation: dict[str, Any],
    license: str,
    source_dataset: str | None = None,
    source_revision: str | None = None,
    language: list[str] | None = None,
    samples: list[dict] | None = None,
    hardware: str | None = None,
    columns: list[str] | None = None,
):
    """Build the ``DatasetCard`` (YAML metadata + body) for an augmented dataset.

    ``split_stats`` maps each split to the transform's counters for it; ``generation``
    holds the synthesizer's settings (model, revision, max_new_tokens, …).

    Example:
        >>> card = make_dataset_card("user/aug", split_stats={"train": SynthesisStats(rows=2, pairs=3)},
        ...                          generation={"model": "demo"}, license="cc-by-4.0")
        >>> card.data.task_categories
        ['text-generation']
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    total = SynthesisStats()
    for s in split_stats.values():
        total.merge(s)
    data = DatasetCardData(
        license=license,
        language=language or ["en"],
        task_categories=["text-generation"],
        tags=["synthetic", "instruction-pretraining"],
        source_datasets=[source_dataset] if source_dataset else None,
        size_categories=[size_category(total.rows)],
        configs=[{"config_name": "default",
                  "data_files": [{"split": split, "path": f"data/{split}-*"} for split in sorted(split_stats)]}],
    )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        "Instruction-augmented pre-training data in the style of *Instruction Pre-Training* (Cheng et al., 2024): "
        "each raw text is kept and paired with instruction-response pairs written by a context-based "
        "instruction synthesizer, made with [hf-instruct-synth](https://pypi.org/project/hf-instruct-synth/) "
        f"{__version__}.",
        "",
        "## How it was made",
        "",
        "| | |", "|---|---|",
        f"| source dataset | {source_dataset or 'local files'}{f' @ {source_revision}' if source_revision else ''} |",
    ]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in generation.items()]
    lines += [f"| hardware | {hardware or platform.platform()} |", "",
              _columns_note(columns), ""]
    if license == "other":
        lines += ["**License:** the source data's license was not known when this was published; check the source "
                  "before use.", ""]
    lines += ["## Synthesis statistics", ""]
    lines += _stats_table(split_stats, total)
    lines += ["", "Pairs per row:", "", "| pairs | rows |", "|---|---|"]
    for k in sorted(total.pairs_per_row, key=int):
        lines.append(f"| {k} | {total.pairs_per_row[k]} |")
    if samples:
        lines += ["", "## Sample rows", ""]
        for row in samples[:2]:
            lines += ["```json", json.dumps(row, ensure_ascii=False, indent=1)[:3000], "```"]
    lines += ["", "## Use", "", "```python", "from datasets import load_dataset", "",
              f'ds = load_dataset("{repo_id}")', "```", "", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return DatasetCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines))


def _columns_note(columns: list[str] | None) -> str:
    if columns and "augmented_texts" in columns:
        return ("One row per chain of texts synthesized over several rounds: `links` holds each text with its "
                "`instruction_response_pairs` and whether it was prompted with its chain's history (`inherits`); "
                "`augmented_texts` holds the templified pre-training texts, `template_modes` their layouts.")
    return ("Columns: " + (", ".join(f"`{c}`" for c in columns) + ". " if columns else "")
            + "`instruction_response_pairs` is a list of `{instruction, response}`; "
            "`synthesizer_output` is the synthesizer's raw text.")


def _stats_table(split_stats: dict[str, SynthesisStats], total: SynthesisStats) -> list[str]:
    columns = list(split_stats) + (["total"] if len(split_stats) > 1 else [])
    stats = [split_stats[s] for s in split_stats] + ([total] if len(split_stats) > 1 else [])
    rows = [
        ("rows", lambda s: f"{s.rows:,}"),
        ("pairs", lambda s: f"{s.pairs:,}"),
        ("pairs per row", lambda s: f"{s.pairs / s.rows:.2f}" if s.rows else "0"),
        ("rows without a pair", lambda s: f"{s.rows_without_pairs:,}"),
        ("empty texts", lambda s: f"{s.rows_empty:,}"),
        ("truncated prompts", lambda s: f"{s.rows_truncated:,}"),
        ("skipped rows (invalid text)", lambda s: f"{s.rows_skipped:,}"),
        ("duplicate questions removed", lambda s: f"{s.duplicate_questions:,}"),
        ("prompt tokens", lambda s: f"{s.prompt_tokens:,}"),
        ("generated tokens", lambda s: f"{s.generated_tokens:,}"),
        ("pad fraction", lambda s: f"{s.pad_fraction:.1%}"),
        ("generation time (s)", lambda s: f"{s.wall_time_s:,.1f}"),
        ("generated tokens/s", lambda s: f"{s.generated_tokens_per_s:,.1f}"),
    ]
    out = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    out += [f"| {name} | " + " | ".join(fmt(s) for s in stats) + " |" for name, fmt in rows]
    return out

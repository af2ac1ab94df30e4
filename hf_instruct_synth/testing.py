"""An engine for tests and examples: writes real ``<QUE> … <ANS> … </END>`` items without a model.

Plug it in through the public seam, ``InstructionSynthesizer(engine=ScriptedEngine())``:
every row gets pairs built from its own text (each question quotes the start of a
sentence, its answer is the rest of that sentence), so a test can check that each row
received its own pairs, in its own place. A text containing ``NOPAIRS`` gets none.
"""

from __future__ import annotations

import re
from typing import Any

from .format import ANS, CON_CLOSE, CON_OPEN, END, QUE
from .stats import SynthesisStats


def scripted_pairs(text: str, limit: int = 3) -> list[dict[str, str]]:
    """The pairs :class:`ScriptedEngine` writes for ``text``: at most ``limit``, one per sentence.

    Example:
        >>> scripted_pairs("The Nile flows north. It is long.")
        [{'instruction': 'What follows "The Nile"?', 'response': 'flows north.'}, {'instruction': 'What follows "It is"?', 'response': 'long.'}]
    """
    if "NOPAIRS" in text:
        return []
    out = []
    for sentence in re.findall(r"[^.!?]+[.!?]", text):
        words = sentence.split()
        if len(words) < 3:
            continue
        out.append({"instruction": f'What follows "{" ".join(words[:2])}"?', "response": " ".join(words[2:])})
        if len(out) == limit:
            break
    return out


class ScriptedEngine:
    """A deterministic stand-in for a model: reads each prompt's text, writes its :func:`scripted_pairs`.

    ``tokenizer`` defaults to the bundled demo synthesizer's. ``calls`` records how many
    prompts each ``generate`` call received.

    Example:
        >>> from hf_instruct_synth import InstructionSynthesizer
        >>> synth = InstructionSynthesizer(model="unused/name", engine=ScriptedEngine())
        >>> synth({"text": ["The Nile flows north."]})["instruction_response_pairs"]
        [[{'instruction': 'What follows "The Nile"?', 'response': 'flows north.'}]]
    """

    name = "scripted"

    def __init__(self, tokenizer: Any = None, limit: int = 3) -> None:
        if tokenizer is None:
            from transformers import AutoTokenizer

            from . import DEMO_MODEL

            tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL)
        self.tokenizer = tokenizer
        self.limit = limit
        self.calls: list[int] = []

    def fingerprint(self) -> str:
        return f"scripted:{self.limit}"

    def generate(self, prompts: list[list[int]], stats: SynthesisStats) -> list[list[int]]:
        self.calls.append(len(prompts))
        out = []
        for ids in prompts:
            prompt = self.tokenizer.decode(ids)
            text = prompt.rsplit(f"{CON_OPEN} ", 1)[-1].rsplit(f" {CON_CLOSE}", 1)[0]
            items = "\n\n".join(f"{QUE} {p['instruction']} {ANS} {p['response']} {END}"
                                for p in scripted_pairs(text, self.limit))
            row = self.tokenizer(items, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            stats.prompt_tokens += len(ids)
            stats.generated_tokens += len(row) + 1
            stats.batches += 1
            out.append(row)
        return out

"""The demo synthesizer's held-out sets of real text, one per kind, and the per-kind report."""

from __future__ import annotations

import json
import random

import pytest

from hf_instruct_synth import DEMO_MODEL
from hf_instruct_synth.demo.make_eval_sets import EVAL_DIR, KINDS, MAX_CHARS, load
from hf_instruct_synth.demo.train import SEED, _quote, evaluate, make_example
from hf_instruct_synth.testing import ScriptedEngine


@pytest.mark.parametrize("kind", KINDS)
def test_held_out_sets_are_real_texts_never_generated_for_training(kind):
    rows = [json.loads(line) for line in (EVAL_DIR / f"{kind}.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = load(kind)
    assert [r["text"] for r in rows] == texts and all(r["source"] for r in rows)
    assert len(texts) >= 20 and len(set(texts)) == len(texts) and max(map(len, texts)) <= MAX_CHARS
    rng = random.Random(SEED)  # training draws its contexts from this seed
    assert not {make_example(rng)[0] for _ in range(6000)} & set(texts)


def test_quote_is_what_the_question_quotes():
    assert _quote('What comes after "a, b" in the text?') == "a, b"
    assert _quote('Continue the text: "say "hi" now ..."') == 'say "hi" now'
    assert _quote("Where was Ada born?") is None


class _Outputs(ScriptedEngine):
    """Writes, for each prompt's text, the output given for it."""

    def __init__(self, outputs: dict[str, str]) -> None:
        super().__init__()
        self.outputs = outputs

    def generate(self, prompts, stats):
        texts = [self.tokenizer.decode(ids).rsplit("<CON> ", 1)[-1].rsplit(" </CON>", 1)[0] for ids in prompts]
        return [self.tokenizer(self.outputs[t], add_special_tokens=False)["input_ids"] for t in texts]


def test_evaluate_counts_exact_spans_loose_matches_and_loops():
    """The measures of the per-kind table, on outputs given per row (no model)."""
    texts = ["Alpha beta, gamma delta.", "One two three."]
    outputs = {texts[0]: '<QUE> What comes after "Alpha beta" in the text? <ANS> gamma  delta </END>\n\n'
                         '<QUE> Continue the text: "Alpha gamma ..." <ANS> Gamma Delta. </END>',
               texts[1]: "<QUE> Q? <ANS> " + "two three " * 8 + "</END>"}
    r = evaluate(DEMO_MODEL, texts, engine=_Outputs(outputs))
    assert r["rows"] == 2 and r["rows_with_pairs"] == 0.5 and r["answers"] == 2 and r["pairs_per_row"] == 1.0
    assert r["exact_spans"] == 0.5  # "gamma  delta" is a span (whitespace runs), "Gamma Delta." is not
    assert r["answers_in_context"] == 1.0  # but is, ignoring case and the final period
    assert r["quotes_exact"] == 0.5 and r["loops_dropped"] == 1

"""Multi-round chains with a scripted generator, and templify's layouts, coverage and determinism."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from datasets import Dataset
from hypothesis import given
from hypothesis import strategies as st

from hf_instruct_synth import InstructionSynthesizer, build_prompt, cook_training_text
from hf_instruct_synth.rounds import build_chains, synthesize_rounds
from hf_instruct_synth.templify import WEIGHTS, WEIGHTS_FEW_PAIRS, classify, templify, templify_with_modes


@given(st.integers(0, 200), st.integers(1, 8))
def test_chains_take_every_row_once_in_slice_order(n, rounds):
    chains = build_chains(n, rounds)
    assert sorted(i for c in chains for i in c) == list(range(n))
    k = len(chains)
    for i, chain in enumerate(chains):
        assert chain == [r * k + i for r in range(len(chain))]


def test_leftover_links_of_a_short_last_slice_are_kept():
    assert build_chains(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert build_chains(3, 5) == [[0, 1, 2]]


class ScriptedSynth:
    """A synthesizer whose engine (plugged in through the public ``engine=`` seam) scripts each output
    from its prompt: no model runs, and every prompt the engine saw is kept in ``seen``."""

    def __init__(self, synth_kwargs, tokenizer):
        self.seen: list[str] = []
        outer = self

        class Engine:
            name = "scripted-rounds"

            def __init__(self):
                self.tokenizer = tokenizer

            def generate(self, prompts, stats):
                outs = []
                for ids in prompts:
                    prompt = tokenizer.decode(ids)
                    outer.seen.append(prompt)
                    last = prompt.rsplit("<CON> ", 1)[1].split(" </CON>")[0]
                    text = "" if "NOPAIRS" in last else f"<QUE> What about {last}? <ANS> {last} </END>"
                    outs.append(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
                return outs

        self.synth = InstructionSynthesizer(model="unused/by-the-fake", engine=Engine(), **synth_kwargs)


def _scripted(tiny_tokenizer, **kw):
    kw.setdefault("max_new_tokens", 16)
    return ScriptedSynth(kw, tiny_tokenizer)


def test_chains_inherit_history_only_after_pairs(tiny_tokenizer):
    texts = ["t zero.", "t one.", "t two.", "NOPAIRS three.", "t four.", "t five.", "t six.", "t seven.", "t eight."]
    fake = _scripted(tiny_tokenizer)
    out = synthesize_rounds(Dataset.from_dict({"text": texts}), fake.synth, rounds=3, seed=1)
    assert out["rows"] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    inherits = [[link["inherits"] for link in chain] for chain in out["links"]]
    assert inherits == [[False, True, False], [False, True, True], [False, True, True]]
    pairs_of = {t: [{"instruction": f"What about {t}?", "response": t}] for t in texts}
    # link 7 saw the whole history of its chain, cooked, then its own prompt
    expected = cook_training_text("t one.", pairs_of["t one."]) + cook_training_text("t four.", pairs_of["t four."]) \
        + build_prompt("t seven.")
    assert expected in fake.seen
    # link 6 follows a link without pairs: fresh prompt
    assert build_prompt("t six.") in fake.seen and not any(p.endswith(build_prompt("t six.")) and p != build_prompt("t six.")
                                                          for p in fake.seen)
    assert fake.synth.stats.rows == 9 and fake.synth.stats.rows_without_pairs == 1


def test_token_budget_decides_inheritance_exactly(tiny_tokenizer):
    texts = ["first text here.", "second text here."]
    history = cook_training_text(texts[0], [{"instruction": f"What about {texts[0]}?", "response": texts[0]}])
    need = len(tiny_tokenizer(history + build_prompt(texts[1]), add_special_tokens=False)["input_ids"])
    for max_len, inherits in ((need + 16, True), (need + 15, False)):
        fake = _scripted(tiny_tokenizer, max_model_len=max_len)
        out = synthesize_rounds(Dataset.from_dict({"text": texts}), fake.synth, rounds=2)
        assert out["links"][0][1]["inherits"] is inherits, max_len


def test_rounds_output_has_templified_texts(tiny_tokenizer):
    texts = [f"text number {i}." for i in range(10)]
    out = synthesize_rounds(Dataset.from_dict({"text": texts}), _scripted(tiny_tokenizer).synth, rounds=2, seed=3)
    assert len(out) == 5 and all(len(t) == 1 for t in out["augmented_texts"])  # both links joined into one text
    for chain, texts_out in zip(out["links"], out["augmented_texts"]):
        for link in chain:
            assert link["text"].strip() in texts_out[0]
    assert out["templify_version"][0].startswith("0.1.0+templates.") and out["templify_version"][0].endswith("+rules.2")


# ------------------------------------------------------------------ templify
PLAIN = {"instruction": "Who founded the society?", "response": "Ada Lovelace"}
MC = {"instruction": "Which river?\nOptions:\n- the Thames\n- the Nile\n- the Seine", "response": "the Nile"}
MC_NONE = {"instruction": "Which year?\nOptions:\n- 1801\n- 1802", "response": "unanswerable"}
COT = {"instruction": "How many books in all?\nLet's think step by step.",
       "response": "She wrote 3 then 4 more.\nTherefore, the answer is 7"}
BAD_COT = {"instruction": "How many?\nLet's think step by step.", "response": "Seven, obviously"}
BAD_MC = {"instruction": "Which?\nOptions:\n- red\n- blue", "response": "green"}


def test_classify():
    assert classify(PLAIN)["kind"] == "plain" and classify(MC)["kind"] == "mc"
    assert classify(COT)["kind"] == "cot" and classify(COT)["answer"] == "7"
    both = {"instruction": "Which?\nOptions:\n- 6\n- 7\nLet's think step by step.",
            "response": "3 + 4.\nTherefore, the answer is 7."}
    assert classify(both)["kind"] == "mc+cot"
    assert classify(BAD_COT) is None and classify(BAD_MC) is None
    assert classify(MC_NONE)["correct"] is None


@pytest.mark.parametrize("seed", range(40))
def test_every_pair_appears_and_malformed_are_dropped(seed):
    chain = [{"text": "Ada Lovelace founded a society by the Nile.", "inherits": False,
              "instruction_response_pairs": [PLAIN, MC, MC_NONE, COT, BAD_COT, BAD_MC]},
             {"text": "A raw link with nothing.", "inherits": False, "instruction_response_pairs": []}]
    out = templify_with_modes(chain, seed)
    assert [o["mode"] for o in out][1] == "raw" and out[1]["text"] == "A raw link with nothing."
    text = out[0]["text"]
    assert "Ada Lovelace founded a society by the Nile." in text
    for piece in ("Who founded the society?", "Ada Lovelace", "Which river?", "the Thames", "the Nile",
                  "the Seine", "Which year?", "1801", "How many books in all?", "She wrote 3 then 4 more.", "7"):
        assert piece in text, (piece, text)
    assert "Seven, obviously" not in text and "green" not in text  # malformed pairs dropped


@pytest.mark.parametrize("pair, correct", [(MC, "the Nile"), (MC_NONE, None)])
def test_mc_answer_is_the_label_of_the_right_option(pair, correct):
    from hf_instruct_synth.templify import _render_pair, templates

    t = templates()
    for seed in range(60):
        question, answer = _render_pair(classify(pair), random.Random(seed))
        lines = question.split("\n")[2:]  # stem, options header, then one line per option
        options = [o for o in ("the Thames", "the Nile", "the Seine", "1801", "1802")
                   if any(line.endswith(" " + o) for line in lines)]
        assert len(lines) == len(options) + (correct is None)
        rendered = None
        for labels in t["option_labels"]:
            for fmt in t["option_format"]:
                if all(fmt.format(l=lab, o=line.split(" ", 1)[1] if " " in line else "") == line or
                       line.startswith(fmt.split("{o}")[0].format(l=lab)) for lab, line in zip(labels, lines)):
                    rendered = labels
                    break
            if rendered:
                break
        assert rendered, question
        target = correct or next(line for line in lines if not any(line.endswith(" " + o) for o in options))
        index = next(i for i, line in enumerate(lines) if line.endswith(target) or line == target)
        option_text = target if correct else next(n for n in t["none_of_the_above"] if lines[index].endswith(n))
        assert answer in {fmt.format(l=rendered[index], o=option_text) for fmt in t["answer_label"]}, (question, answer)


def test_same_seed_same_texts_different_seeds_differ():
    chain = [{"text": "Some passage.", "inherits": False, "instruction_response_pairs": [PLAIN, COT]},
             {"text": "Next passage.", "inherits": True, "instruction_response_pairs": [MC]}]
    assert templify(chain, 7) == templify(chain, 7)
    assert len({templify(chain, s)[0] for s in range(20)}) >= 15


@pytest.mark.parametrize("pairs, weights", [([PLAIN, COT], WEIGHTS), ([PLAIN], WEIGHTS_FEW_PAIRS)])
def test_layout_and_inversion_frequencies_match_the_weights(pairs, weights):
    chain = [{"text": "A passage.", "inherits": False, "instruction_response_pairs": pairs}]
    modes, inverted = Counter(), 0
    for seed in range(5000):
        out = templify_with_modes(chain, seed)[0]
        modes[out["mode"]] += 1
        inverted += out["inverted"]
        assert not out["inverted"] or out["mode"] == "classic"  # the reference inverts only the classic layout
    total = sum(weights.values())
    for mode, weight in weights.items():
        assert abs(modes[mode] / 50 - 100 * weight / total) <= 2, (mode, modes)
    assert set(modes) <= set(weights)
    assert abs(inverted / 50 - 5 * weights["classic"] / total) <= 1.5


def test_layouts_render_differently():
    chain = [{"text": "A passage about rivers.", "inherits": False, "instruction_response_pairs": [PLAIN, COT]}]
    by_mode = {}
    for seed in range(3000):
        out = templify_with_modes(chain, seed)[0]
        by_mode.setdefault((out["mode"], out["inverted"]), out["text"])
    assert {m for m, _ in by_mode} == {"classic", "dialog", "numbered", "inline", "next_turn"}
    inverted = [t for (m, inv), t in by_mode.items() if inv]
    assert inverted and all(t.index("Who founded") < t.index("A passage about rivers.") for t in inverted)

"""The wire format: prompts, parsing (with property tests), cooking training texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_instruct_synth import build_prompt, cook_training_text, parse_pairs
from hf_instruct_synth.format import format_pairs, parse_pairs_counted


def test_build_prompt_exact():
    assert build_prompt("Rivers flow.") == "<s> <CON> Rivers flow. </CON>\n\n"


def test_parse_basic_and_unfinished_last_item_dropped():
    pred = "<QUE> Who? <ANS> Ada. </END>\n\n<QUE> When? <ANS> 1843 </END>\n\n<QUE> Where? <ANS> Lon"
    assert parse_pairs(pred) == [{"instruction": "Who?", "response": "Ada."},
                                 {"instruction": "When?", "response": "1843"}]


def test_parse_rejects_malformed_pieces():
    pred = ("<QUE> two answers <ANS> a <ANS> b </END>"  # two <ANS>
            "no question tag <ANS> x </END>"  # does not start with <QUE>
            "<QUE> empty answer <ANS>    </END>"  # empty answer
            "<QUE>   <ANS> answer to nothing </END>"  # empty question
            "<QUE> no ans at all </END>"
            "<QUE> good <ANS> yes </END>")
    assert parse_pairs(pred) == [{"instruction": "good", "response": "yes"}]


def test_parse_dedupe_case_insensitive_and_counted():
    pred = "<QUE> What is X? <ANS> a </END><QUE> what is x? <ANS> b </END><QUE> WHAT IS X? <ANS> c </END>"
    pairs, dups = parse_pairs_counted(pred)
    assert pairs == [{"instruction": "What is X?", "response": "a"}] and dups == 2
    assert len(parse_pairs(pred, dedupe=False)) == 3


def test_parse_nested_que_tags_are_removed_from_question():
    assert parse_pairs("<QUE> a <QUE> b <ANS> c </END>") == [{"instruction": "a  b", "response": "c"}]


def test_cook_training_text_round_trips_through_parser():
    pairs = [{"instruction": "Q1?", "response": "A1"}, {"instruction": "Q2?", "response": "A2"}]
    cooked = cook_training_text("Some text.", pairs)
    assert cooked == "<s> <CON> Some text. </CON>\n\n<QUE> Q1? <ANS> A1 </END>\n\n<QUE> Q2? <ANS> A2 </END></s>"
    generated = cooked[len(build_prompt("Some text.")):-len("</s>")]
    assert parse_pairs(generated) == pairs


# ---------------------------------------------------------------- property tests
TAGS = ["<QUE>", "<ANS>", "</END>", "<CON>", "</CON>", "<s>", "</s>", "\n\n", " "]
fragment = st.one_of(st.sampled_from(TAGS), st.text(min_size=0, max_size=12))
adversarial = st.lists(fragment, max_size=60).map("".join)
clean_text = st.text(min_size=1, max_size=30).filter(
    lambda s: s.strip() and not any(t in s for t in ("<QUE>", "<ANS>", "</END>")))


@settings(max_examples=400, deadline=None)
@given(adversarial)
def test_parser_invariants_on_adversarial_predictions(pred):
    pairs, dups = parse_pairs_counted(pred)
    keys = [p["instruction"].lower() for p in pairs]
    assert len(keys) == len(set(keys))  # deduplicated
    pieces = pred.split("</END>")[:-1]
    assert len(pairs) + dups <= len(pieces)
    for p in pairs:
        assert p["instruction"] and p["instruction"] == p["instruction"].strip()
        assert p["response"] and p["response"] == p["response"].strip()
        assert "<QUE>" not in p["instruction"] and "<ANS>" not in p["instruction"] + p["response"]
        assert "</END>" not in p["instruction"] + p["response"]
        assert p["response"] in pred


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(clean_text, clean_text), min_size=0, max_size=8), st.text(max_size=20))
def test_parser_recovers_what_was_formatted(items, unfinished_tail):
    pairs = [{"instruction": q.strip(), "response": a.strip()} for q, a in items]
    pred = format_pairs(pairs) + ("\n\n<QUE> " + unfinished_tail.replace("</END>", "") if unfinished_tail else "")
    expected, seen = [], set()
    for p in pairs:
        if p["instruction"].lower() not in seen:
            seen.add(p["instruction"].lower())
            expected.append(p)
    assert parse_pairs(pred) == expected
    assert parse_pairs(pred, dedupe=False) == pairs


def test_parser_handles_very_long_unicode_output():
    item = "<QUE> Qu'est-ce que «ça» — 東京? <ANS> Ça: 東京 🚀 </END>\n\n"
    pred = "".join(item.replace("ça", f"ça{i}") for i in range(20_000)) + "<QUE> cut"
    pairs = parse_pairs(pred)
    assert len(pairs) == 20_000 and pairs[-1]["response"] == "Ça: 東京 🚀"


def test_repetition_loops_are_dropped_and_counted():
    from hf_instruct_synth import InstructionSynthesizer
    from hf_instruct_synth.format import is_repetition_loop

    assert is_repetition_loop("of Nature and of Nature and of Nature and of Nature and of Nature and")
    assert is_repetition_loop("the the the the the the the")
    assert not is_repetition_loop("very very very good, said the old scholar to the queen of the harbour town")
    assert not is_repetition_loop("Paris, Paris, Paris.")  # too short to call a loop
    assert not is_repetition_loop("1, 2, 3, 4, 5, 6, 7, 8, 9 and 10 are the numbers.")

    class Looping:
        name = "looping"

        def __init__(self):
            from hf_instruct_synth.testing import ScriptedEngine

            self.tokenizer = ScriptedEngine().tokenizer

        def generate(self, prompts, stats):
            text = ("<QUE> Who? <ANS> Ada. </END>\n\n<QUE> What? <ANS> " + "of Nature and " * 8 + "</END>\n\n"
                    "<QUE> " + "go on " * 6 + "<ANS> fine. </END>")
            return [self.tokenizer(text, add_special_tokens=False)["input_ids"] for _ in prompts]

    synth = InstructionSynthesizer(model="unused/name", engine=Looping())
    out = synth({"text": ["A text."]})
    assert out["instruction_response_pairs"] == [[{"instruction": "Who?", "response": "Ada."}]]
    assert synth.stats.repetition_loops == 2 and synth.stats.pairs == 1


@pytest.mark.parametrize("text, kwargs, expected", [
    ("a a a a a a", {}, True),  # one word, six times
    ("a a a b c d e f g h", {}, False),  # one word needs four repeats
    ("a a a a b c", {}, False),  # four repeats, but only four words of loop (< 6)
    ("a a a a b c", {"min_words": 4}, True),
    ("x y x y x y", {}, True),  # two words, three times
    ("x y x y p q r s t u", {}, False),  # two repeats are not a loop
    ("x y x y x y " + " ".join(f"w{i}" for i in range(24)), {}, False),  # six looping words of 30: under 30 %
    ("x y x y x y " + " ".join(f"w{i}" for i in range(14)), {}, True),  # six of 20: 30 %
    ("x y x y x y " + " ".join(f"w{i}" for i in range(14)), {"share": 0.31}, False),
    ("one two three four five six seven eight " * 3, {}, True),  # eight-word phrase, three times
    ("one two three four five six seven eight nine " * 3, {}, False),  # nine words: longer than any loop we look for
    ("The answer starts well. " + "and then the " * 4, {}, True),  # a loop after a normal start
    ("b a b a b a", {}, True),
    ("a b c a b c a b", {}, False),  # three words, not three times in full
])
def test_repetition_loop_boundaries(text, kwargs, expected):
    from hf_instruct_synth.format import is_repetition_loop

    assert is_repetition_loop(text, **kwargs) is expected


def test_dedupe_is_lowercase_as_in_the_reference():
    # "ß".lower() stays "ß" but "ß".upper() is "SS": the reference lowercases, so these two stay apart
    out = parse_pairs("<QUE> Wo ist die Straße? <ANS> a </END>\n\n<QUE> WO IST DIE STRASSE? <ANS> b </END>")
    assert len(out) == 2


@pytest.mark.parametrize("text, kwargs, expected", [
    ("a a a b", {"min_words": 3}, False),  # a single word needs four repeats
    ("a a a a b", {"min_words": 3}, True),
    ("x y p q x y r s t u v w", {}, False),  # a bigram seen twice, not back to back
    ("x y x y x y z z", {"min_words": 6, "share": 0.75}, True),  # 6 of 8 words
])
def test_repetition_loop_counts_only_back_to_back_repeats(text, kwargs, expected):
    from hf_instruct_synth.format import is_repetition_loop

    assert is_repetition_loop(text, **kwargs) is expected

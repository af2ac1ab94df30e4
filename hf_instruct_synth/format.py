"""The synthesizer's wire format: prompts in, ``<QUE> … <ANS> … </END>`` items out.

Everything here is plain string work (no torch, no tokenizer), so it is cheap to import
and easy to test. The format is the one of the published
``instruction-pretrain/instruction-synthesizer`` model card:

- prompt: ``"<s>" + " <CON> " + text + " </CON>" + "\\n\\n"``, tokenized with
  ``add_special_tokens=False`` (the literal ``<s>`` is the only BOS);
- output: ``<QUE> question <ANS> answer </END>`` items separated by ``\\n\\n``, ended by
  ``</s>``.
"""

from __future__ import annotations

from typing import TypedDict

BOS = "<s>"
EOS = "</s>"
CON_OPEN = "<CON>"
CON_CLOSE = "</CON>"
QUE = "<QUE>"
ANS = "<ANS>"
END = "</END>"

#: Strings that are control tokens or wire-format tags; inside a text they stay plain characters.
MARKERS = (BOS, EOS, "<pad>", "<unk>", CON_OPEN, CON_CLOSE, QUE, ANS, END)

#: What follows the text in every prompt; truncation keeps it whole.
PROMPT_TAIL = f" {CON_CLOSE}\n\n"
PROMPT_HEAD = f"{BOS} {CON_OPEN} "


class Pair(TypedDict):
    """One instruction-response pair, as stored in the ``instruction_response_pairs`` column."""

    instruction: str
    response: str


def build_prompt(text: str) -> str:
    """Build the synthesizer prompt for one raw text.

    Example:
        >>> build_prompt("The Nile flows north.")
        '<s> <CON> The Nile flows north. </CON>\\n\\n'
    """
    return PROMPT_HEAD + text + PROMPT_TAIL


def parse_pairs_counted(prediction: str, dedupe: bool = True) -> tuple[list[Pair], int]:
    """Like :func:`parse_pairs`, and also return how many duplicate questions were dropped."""
    # Every piece but the last ends with </END>; the last is either empty (the prediction
    # ended with </END>) or unfinished, and is dropped either way.
    pieces = prediction.split(END)[:-1]
    pairs: list[Pair] = []
    seen: set[str] = set()
    duplicates = 0
    for piece in pieces:
        parts = piece.split(ANS)
        if len(parts) != 2:
            continue
        question, answer = parts[0].strip(), parts[1].strip()
        if not question.startswith(QUE) or not answer:
            continue
        question = question.replace(QUE, "").strip()
        if not question:
            continue
        key = question.lower()
        if dedupe and key in seen:
            duplicates += 1
            continue
        seen.add(key)
        pairs.append({"instruction": question, "response": answer})
    return pairs, duplicates


def parse_pairs(prediction: str, dedupe: bool = True) -> list[Pair]:
    """Parse a synthesizer prediction into instruction-response pairs.

    The prediction is cut at every ``</END>``; an unfinished last piece is dropped. A
    piece counts only if it holds exactly one ``<ANS>``, its stripped question part starts
    with ``<QUE>``, and both question and answer are non-empty after stripping. With
    ``dedupe`` (default), a question equal, case-insensitively, to an earlier one is
    dropped.

    Example:
        >>> parse_pairs("<QUE> Who? <ANS> Ada. </END>\\n\\n<QUE> who? <ANS> Bob </END>\\n\\n<QUE> Wh")
        [{'instruction': 'Who?', 'response': 'Ada.'}]
    """
    return parse_pairs_counted(prediction, dedupe)[0]


def format_pairs(pairs: list[Pair]) -> str:
    """Render pairs back into the synthesizer's tag format, ``\\n\\n``-separated.

    Example:
        >>> format_pairs([{"instruction": "Who?", "response": "Ada."}])
        '<QUE> Who? <ANS> Ada. </END>'
    """
    return "\n\n".join(f"{QUE} {p['instruction']} {ANS} {p['response']} {END}" for p in pairs)


def cook_training_text(text: str, pairs: list[Pair]) -> str:
    """The tagged history text of one link, as M-shot rounds feed it back to the synthesizer.

    It is the prompt followed by the pairs in tag format and ``</s>``: exactly what the
    synthesizer read and wrote. It is not the pre-training text a model is trained on:
    that is the templified text (``augmented_texts``; :mod:`hf_instruct_synth.templify`).

    Example:
        >>> cook_training_text("Ada wrote code.", [{"instruction": "Who wrote code?", "response": "Ada"}])
        '<s> <CON> Ada wrote code. </CON>\\n\\n<QUE> Who wrote code? <ANS> Ada </END></s>'
    """
    return build_prompt(text) + format_pairs(pairs) + EOS


def is_repetition_loop(text: str, min_words: int = 6, share: float = 0.3) -> bool:
    """Whether ``text`` degenerates into a loop: one n-gram of 1 to 8 words repeated back to back
    (4 times for a single word, 3 for longer ones) over at least ``min_words`` words and ``share``
    of the text. Such answers come from a model stuck in a loop, not from the text.

    Example:
        >>> is_repetition_loop("of Nature and of Nature and of Nature and of Nature and")
        True
        >>> is_repetition_loop("It rained, it rained, and then the river rose over the old stone bridge.")
        False
    """
    words = text.split()
    if len(words) < min_words:
        return False
    for n in range(1, 9):
        need = 4 if n == 1 else 3
        i = 0
        while i + n * need <= len(words):
            gram = words[i:i + n]
            reps = 1
            while words[i + reps * n:i + (reps + 1) * n] == gram:
                reps += 1
            span = reps * n
            if reps >= need and span >= min_words and span >= share * len(words):
                return True
            i += max(1, (reps - 1) * n) if reps > 1 else 1
    return False

"""The dataset card, built directly (no Hub): every number, link and YAML key a reader relies on.

tests/test_hub.py checks the card as pushed; these pin each part of it fast enough to run
against every mutant of card.py (tests/mutation.py).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from hf_instruct_synth.card import BEGIN, CITATION, END, PAPER, DataStats, make_dataset_card, size_category
from hf_instruct_synth.stats import SynthesisStats


def _pairs(*answers: str) -> list[dict]:
    return [{"instruction": f"Q{i}?", "response": a} for i, a in enumerate(answers)]


def _card(**kw):
    args = {"split_stats": {"train": SynthesisStats(rows=3, pairs=3)}, "generation": {"model": "org/synth"},
            "license": "cc-by-4.0"}
    args.update(kw)
    return make_dataset_card("user/aug", **args)


def _table(card_text: str, label: str) -> list[str]:
    line = next(line for line in card_text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_data_stats_count_rows_pairs_and_lengths():
    table = pa.table({"instruction_response_pairs": [_pairs("abc", "de"), [], None, _pairs("f")]})
    s = DataStats.of([table, table])
    assert (s.rows, s.texts, s.pairs, s.rows_without_pairs) == (8, 8, 6, 4)
    assert s.pairs_per_row == {"2": 2, "0": 4, "1": 2}
    assert s.question_chars == 2 * (3 + 3 + 3) and s.answer_chars == 2 * (3 + 2 + 1)


def test_data_stats_count_texts_inside_chains():
    links = [[{"instruction_response_pairs": _pairs("a")}, {"instruction_response_pairs": []}],
             [{"instruction_response_pairs": _pairs("b", "c")}]]
    s = DataStats.of([pa.table({"links": links, "instruction_response_pairs": [[], []]})])
    assert (s.rows, s.texts, s.pairs, s.rows_without_pairs) == (2, 3, 3, 1)  # the links, not the row column
    assert DataStats.of([pa.table({"text": ["x"]})]) == DataStats(rows=1)


def test_yaml_metadata():
    data_stats = {"train": DataStats(rows=1500, texts=1500, pairs=9, pairs_per_row={"0": 1499, "9": 1}),
                  "test": DataStats(rows=10, texts=10)}
    card = _card(data_stats=data_stats, source_dataset="org/raw", dataset_info={"features": [{"name": "text"}]},
                 split_stats={"train": SynthesisStats(rows=5)})
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["pretty_name"] == "aug (instruction-augmented)"
    assert meta["task_categories"] == ["text-generation"]
    assert meta["tags"] == ["instruction-pretraining", "synthetic"]
    assert meta["annotations_creators"] == ["machine-generated"]
    assert meta["size_categories"] == ["1K<n<10K"]  # 1,510 published rows, not the run's 5
    assert meta["source_datasets"] == ["org/raw"]
    assert meta["dataset_info"] == {"features": [{"name": "text"}]}
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "test", "path": "data/test-*"}, {"split": "train", "path": "data/train-*"}]}]
    assert "source_datasets" not in _card().data.to_dict() and "dataset_info" not in _card().data.to_dict()
    assert _card(language=["de"]).data.language == ["de"]


def test_existing_yaml_keys_and_hand_written_lines_survive():
    existing = ("---\nlicense: mit\nlanguage: [fr]\npretty_name: Mine\ntags: [mine]\nextra_key: kept\n---\n\n"
                f"# Mine\n\nWritten by hand.\n\n{BEGIN}\nold generated\n{END}\n\nFooter by hand.\n")
    card = _card(existing=existing)
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0"  # ours: what this push says
    assert meta["language"] == ["fr"] and meta["pretty_name"] == "Mine" and meta["extra_key"] == "kept"
    assert meta["tags"] == ["instruction-pretraining", "mine", "synthetic"]
    body = card.text.lstrip("\n")
    assert body.startswith("# Mine\n\nWritten by hand.\n\n" + BEGIN) and body.rstrip().endswith(END + "\n\nFooter by hand.")
    assert "old generated" not in body and body.count(BEGIN) == 1


@pytest.mark.parametrize("tags,expected", [("nlp", ["instruction-pretraining", "nlp", "synthetic"]),
                                           ("7", ["instruction-pretraining", "synthetic"]),
                                           ("[a, 3, {x: 1}]", ["a", "instruction-pretraining", "synthetic"]),
                                           ("{x: 1}", ["instruction-pretraining", "synthetic"])])
def test_hand_edited_tags_of_any_shape_are_merged_not_crashed_on(tags, expected):
    assert _card(existing=f"---\ntags: {tags}\n---\n\nBy hand.\n").data.to_dict()["tags"] == expected


def test_hand_written_card_without_markers_keeps_it_first():
    card = _card(existing="---\nlicense: mit\n---\n\nAll by hand.\n")
    assert card.text.lstrip("\n").startswith("All by hand.\n\n" + BEGIN) and card.text.rstrip().endswith(END)
    assert _card().text.lstrip("\n").startswith("# aug\n\n" + BEGIN + "\n")


def test_a_re_push_of_the_same_card_changes_nothing():
    """Rebuilt over itself, the card is byte for byte the same (it once gained a blank line per push)."""
    first = str(_card(existing="---\nlicense: mit\n---\n\nBy hand.\n"))
    assert str(_card(existing=first)) == first
    assert str(_card(existing=str(_card()))) == str(_card())


def test_how_it_was_made():
    text = _card(source_dataset="org/raw", source_revision="abc123", hardware="NVIDIA H100",
                 generation={"model": "org/synth", "max_new_tokens": 400, "note": "a|b\nc"},
                 command="hf-instruct-synth synthesize org/raw --output out/").text
    assert f"]({PAPER})" in text
    assert _table(text, "source dataset") == ["[org/raw](https://huggingface.co/datasets/org/raw) @ `abc123`"]
    assert _table(text, "synthesizer") == ["[org/synth](https://huggingface.co/org/synth)"]
    assert _table(text, "max new tokens") == ["400"]
    assert "| note | a\\|b c |" in text  # a cell cannot break the table
    assert _table(text, "hardware") == ["NVIDIA H100"]
    assert "```bash\nhf-instruct-synth synthesize org/raw --output out/\n```" in text
    plain = _card(generation={"model": "./models/mine"}).text
    assert _table(plain, "synthesizer") == ["./models/mine"]  # not a Hub id: no link
    assert _table(plain, "source dataset") == ["local files"] and _table(plain, "hardware") == ["not recorded"]
    assert "Reproduce with" not in plain


@pytest.mark.parametrize("model,linked", [("org/name", True), ("org/na me", False), ("/abs/path", False),
                                          ("./rel", False), ("a/b/c", False), ("single", False), ("org/", False)])
def test_only_hub_ids_are_linked(model, linked):
    assert (f"](https://huggingface.co/{model})" in _card(generation={"model": model}).text) is linked


def test_statistics_come_from_the_data_and_the_run():
    data = {"train": DataStats(rows=4, texts=4, pairs=6, rows_without_pairs=1, question_chars=60, answer_chars=31,
                               pairs_per_row={"0": 1, "1": 1, "2": 0, "5": 2})}
    run = SynthesisStats(rows=99, rows_empty=1, rows_truncated=2, rows_skipped=3, rows_with_markers=4,
                         duplicate_questions=5, repetition_loops=6, generated_tokens=1234, wall_time_s=2.0)
    text = _card(data_stats=data, split_stats={"train": run}).text
    assert _table(text, "rows") == ["4"] and _table(text, "texts") == ["4"] and _table(text, "pairs") == ["6"]
    assert _table(text, "pairs per text") == ["1.50"] and _table(text, "texts without a pair") == ["1"]
    assert _table(text, "mean question length (chars)") == ["10"]
    assert _table(text, "mean answer length (chars)") == ["5"]
    assert _table(text, "empty texts *(run)*") == ["1"] and _table(text, "truncated prompts *(run)*") == ["2"]
    assert _table(text, "skipped rows, invalid text *(run)*") == ["3"]
    assert _table(text, "texts holding markup like `<s>` *(run)*") == ["4"]
    assert _table(text, "duplicate questions removed *(run)*") == ["5"]
    assert _table(text, "pairs dropped as repetition loops *(run)*") == ["6"]
    assert _table(text, "generated tokens *(run)*") == ["1,234"]
    assert _table(text, "generated tokens/s *(run)*") == [f"{run.generated_tokens_per_s:,.1f}"]
    assert _table(text, "draft tokens accepted / proposed *(run)*") == ["no speculation"]
    histogram = text[text.index("Pairs per text:"):].splitlines()
    assert histogram[4:8] == ["| 0 | 1 | ██████████ |", "| 1 | 1 | ██████████ |", "| 2 | 0 |  |",
                              "| 5 | 2 | ████████████████████ |"]
    empty = _card(data_stats={"train": DataStats(rows=2, texts=2, rows_without_pairs=2)}).text
    assert _table(empty, "pairs per text") == ["0.00"] and _table(empty, "mean answer length (chars)") == ["-"]
    assert _table(_card(data_stats={"train": DataStats()}).text, "pairs per text") == ["0"]
    assert _table(empty, "mean question length (chars)") == ["-"]
    drafted = _card(split_stats={"train": SynthesisStats(draft_tokens_proposed=8, draft_tokens_accepted=6)}).text
    assert _table(drafted, "draft tokens accepted / proposed *(run)*") == ["6 / 8 (75%)"]


def test_splits_get_a_total_column():
    data = {"train": DataStats(rows=3, texts=3, pairs=4, question_chars=40, answer_chars=8),
            "test": DataStats(rows=1, texts=1, pairs=2, question_chars=20, answer_chars=4, rows_without_pairs=1)}
    run = {"train": SynthesisStats(generated_tokens=10), "test": SynthesisStats(generated_tokens=5)}
    text = _card(data_stats=data, split_stats=run).text
    assert "| | test | train | total |" in text
    assert _table(text, "rows") == ["1", "3", "4"] and _table(text, "pairs") == ["2", "4", "6"]
    assert _table(text, "texts without a pair") == ["1", "0", "1"]
    assert _table(text, "mean question length (chars)") == ["10", "10", "10"]
    assert _table(text, "mean answer length (chars)") == ["2", "2", "2"]
    assert _table(text, "generated tokens *(run)*") == ["5", "10", "15"]
    assert "| | train |" in _card().text and "total" not in _card().text.split("## Statistics")[1].split("\n\n")[2]


def test_samples_templates_and_backticks_are_shown_verbatim():
    rows = [{"text": "{{ x }} {% if y %} ```` four", "n": 1}, {"text": "second"}, {"text": "third, never shown"}]
    text = _card(samples=rows).text
    assert "{{ x }} {% if y %}" in text and "third, never shown" not in text and '"second"' in text
    assert "`````json\n" in text  # a fence longer than the longest backtick run inside
    assert "## Sample rows" not in _card().text


def test_license_other_warns_and_citation_and_use_are_there():
    assert "**License:** the source data's license was not known" in _card(license="other").text
    text = _card().text
    assert "**License:**" not in text
    assert f"```bibtex\n{CITATION}\n```" in text
    assert 'ds = load_dataset("user/aug")' in text


def test_columns_note():
    assert ("One row per chain of texts synthesized over several rounds: `links` holds each text with its "
            "`instruction_response_pairs` and whether it was prompted with its chain's history (`inherits`); "
            "`augmented_texts` holds the templified pre-training texts, `template_modes` their layouts.") in \
        _card(columns=["links", "augmented_texts"]).text
    plain = _card(columns=["text", "instruction_response_pairs"]).text
    assert "Columns: `text`, `instruction_response_pairs`." in plain and "`augmented_texts` is the" not in plain
    assert "`augmented_texts` is the pre-training text" in _card(columns=["text", "augmented_texts"]).text


@pytest.mark.parametrize("rows,label", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"),
                                        (10**12 - 1, "100B<n<1T"), (10**12, "n>1T")])
def test_size_category_boundaries(rows, label):
    assert size_category(rows) == label


def test_histogram_merges_splits_sorts_numerically_and_shows_small_counts():
    data = {"a": DataStats(rows=101, texts=101, pairs_per_row={"2": 100, "10": 1}),
            "b": DataStats(rows=3, texts=3, pairs_per_row={"2": 2, "0": 1})}
    text = _card(data_stats=data, split_stats={}).text
    histogram = text[text.index("Pairs per text:"):].split("\n\n")[1].splitlines()[2:]
    assert histogram == ["| 0 | 1 | █ |", "| 2 | 102 | ████████████████████ |", "| 10 | 1 | █ |"]


def test_without_data_stats_the_runs_counters_are_shown():
    run = SynthesisStats(rows=7, pairs=9, rows_without_pairs=2, pairs_per_row={"0": 2, "1": 1, "2": 4})
    text = _card(split_stats={"train": run}).text
    assert _table(text, "rows") == ["7"] and _table(text, "texts") == ["7"] and _table(text, "pairs") == ["9"]
    assert _table(text, "texts without a pair") == ["2"] and "| 2 | 4 | ████████████████████ |" in text


def test_generation_settings_rows_never_repeat_the_model():
    text = _card(generation={"model": "org/synth", "seed": 3}).text
    assert _table(text, "seed") == ["3"] and "| model |" not in text
    assert _table(_card(generation={}).text, "synthesizer") == [""]


def test_sample_rows_are_json_as_written():
    import datetime

    text = _card(samples=[{"text": "café " + "x" * 4000, "when": datetime.date(2024, 1, 2)}]).text
    body = text[text.index("## Sample rows"):].split("\n")
    assert body[2] == "```json"  # no backtick inside: the shortest fence
    shown = body[3:body.index("```", 3)]
    assert shown[0] == "{" and shown[1].startswith(' "text": "café xxx')  # indent 1, not ASCII-escaped
    assert len("\n".join(shown)) == 3000  # cut at 3,000 characters
    dated = _card(samples=[{"when": datetime.date(2024, 1, 2)}]).text
    assert '"when": "2024-01-02"' in dated  # values JSON cannot hold are shown as text
    fenced = _card(samples=[{"t": "a ``` b ```` c"}]).text.split("\n")
    assert "`````json" in fenced and "``````json" not in fenced


def test_markers_of_an_older_wording_are_found_and_lone_markers_ignored():
    older = BEGIN.split(" (")[0] + " (older wording) -->"
    card = _card(existing=f"---\nlicense: mit\n---\n\n<!-- a note by hand -->\nHead.\n{older}\nold\n{END}\nTail.\n")
    body = card.text.lstrip("\n")
    assert body.startswith("<!-- a note by hand -->\nHead.\n" + BEGIN) and body.rstrip().endswith(END + "\nTail.")
    assert "\nold\n" not in body
    lone = _card(existing=f"---\nlicense: mit\n---\n\nBy hand.\n{END}\n").text.lstrip("\n")
    assert lone.startswith(f"By hand.\n{END}\n\n{BEGIN}")  # an END alone is kept as written, ours follows


def test_license_warning_and_notes_keep_the_rest_of_the_card():
    text = _card(license="other", columns=["text", "augmented_texts"]).text
    assert "## How it was made" in text and "**License:**" in text and "## Statistics" in text
    assert "Columns: `text`, `augmented_texts`. `instruction_response_pairs` is a list" in text
    assert "\nColumns: `instruction_response_pairs` is a list of `{instruction, response}`; `synthesizer_output`" \
        in _card(columns=None).text


GOLDEN = __import__("pathlib").Path(__file__).parent / "golden" / "card.md"


def test_the_whole_card_is_as_reviewed():
    """The card a reader sees, every line, for one run with two splits (tests/golden/card.md).
    A deliberate change of wording: rewrite the file with UPDATE_GOLDEN=1 and review the diff."""
    import os

    from hf_instruct_synth import __version__

    data = {"train": DataStats(rows=3, texts=3, pairs=4, rows_without_pairs=1, question_chars=50, answer_chars=20,
                               pairs_per_row={"0": 1, "2": 2}),
            "test": DataStats(rows=1, texts=1, pairs=1, question_chars=9, answer_chars=4, pairs_per_row={"1": 1})}
    run = {"train": SynthesisStats(rows=3, duplicate_questions=1, generated_tokens=300, wall_time_s=3.0),
           "test": SynthesisStats(rows=1, generated_tokens=80, wall_time_s=1.0)}
    card = make_dataset_card(
        "user/aug", split_stats=run, data_stats=data, license="other", source_dataset="org/raw",
        source_revision="abc123", generation={"model": "org/synth", "max_new_tokens": 400, "seed": 0},
        hardware="NVIDIA H100", columns=["text", "augmented_texts"], command="hf-instruct-synth synthesize org/raw",
        samples=[{"text": "A {{ x }} text.", "instruction_response_pairs": [{"instruction": "Q?", "response": "A"}]}])
    text = str(card).replace(f") {__version__}.", ") VERSION.")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")

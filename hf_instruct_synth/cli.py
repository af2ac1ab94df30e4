"""The command line: ``hf-instruct-synth synthesize INPUT --output DIR``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  # offline, on the bundled demo synthesizer and the example paragraphs
  hf-instruct-synth synthesize examples/data/paragraphs.jsonl --model demo --output out/

  # the published 7B synthesizer on a GPU, a Hub dataset, first 10,000 rows, published
  hf-instruct-synth synthesize user/corpus --split train --limit 10000 --push-to-hub user/corpus-augmented
"""


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value}")
    return value


POSITIVE, NON_NEGATIVE = _count(1), _count(0)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as ``prog: error: …``, and exit code 2 (argparse's own)."""

    def error(self, message: str):  # noqa: ANN201 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hf-instruct-synth",
                                     description="Instruction-augmented pre-training corpora (Instruction Pre-Training).",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("synthesize", help="add synthesized instruction-response pairs to every row",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("input", metavar="INPUT",
                   help="a .jsonl/.json/.parquet/.csv/.txt file, a folder of them, a save_to_disk folder, or a Hub dataset id")
    s.add_argument("--output", metavar="DIR",
                   help="write parquet shards, manifest.json and stats.json here (re-run to resume); "
                        "default with --push-to-hub: .hf-instruct-synth/<repo>")
    s.add_argument("--push-to-hub", metavar="REPO_ID", help="then publish the result as this Hub dataset, with a card")
    s.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    s.add_argument("--license", help="with --push-to-hub: the card's license (default: the source Hub dataset's)")
    s.add_argument("--split", help="split of INPUT to use (default: train, or the only one)")
    s.add_argument("--subset", metavar="NAME", help="subset (configuration) of a Hub dataset, datasets' name=")
    s.add_argument("--data-revision", metavar="REV", help="revision of a Hub dataset (branch, tag or commit); "
                   "the commit it resolves to is recorded in the manifest and the card")
    s.add_argument("--encoding", help="encoding of text files (.jsonl/.json/.csv/.txt; default utf-8)")
    s.add_argument("--sample-by", choices=["line", "paragraph", "document"], default="paragraph",
                   help=".txt input: one row per line, per paragraph (blank-line separated; default) or per file; "
                        "blank rows are never made")
    s.add_argument("--text-column", default="text", help="column holding the raw texts (default: text)")
    s.add_argument("--model", default="instruction-pretrain/instruction-synthesizer",
                   help="Hub id or local folder of the synthesizer; 'demo' = the bundled tiny demo model "
                        "(default: %(default)s)")
    s.add_argument("--revision", help="model revision (branch, tag or commit)")
    s.add_argument("--limit", type=NON_NEGATIVE, metavar="N",
                   help="use only the first N rows (a Hub dataset is streamed: only their files are fetched)")
    s.add_argument("--max-new-tokens", type=POSITIVE, default=400, help="tokens generated per text (default: 400)")
    s.add_argument("--max-model-len", type=POSITIVE, default=4096, help="context length (default: 4096)")
    s.add_argument("--max-batch-tokens", type=POSITIVE,
                   help="token budget per sub-batch, rows x (longest prompt + max new tokens); default: from GPU memory")
    s.add_argument("--max-pad-fraction", type=_fraction, default=0.1,
                   help="also cut a sub-batch where padding would pass this share of its prompt positions "
                        "(default 0.1; 1 = budget only)")
    s.add_argument("--engine", choices=["auto", "native", "static", "continuous", "vllm"], default="auto",
                   help="generation back end: native (our loop: continuous batching, speculation), static "
                        "length-sorted batches, transformers' continuous batching, or vLLM (extra 'vllm'); "
                        "auto = vLLM when it imports, else native (see benchmarks/RESULTS.md)")
    s.add_argument("--speculative", choices=["prompt_lookup"],
                   help="draft tokens from each row's own prompt and output, verified in one pass (the synthesizer "
                        "copies from its text); engines native and vllm")
    s.add_argument("--draft-tokens", type=POSITIVE, default=4, help="with --speculative: tokens drafted per step (4)")
    s.add_argument("--ngram", type=_count(2), default=3, help="with --speculative: longest n-gram looked up (3)")
    s.add_argument("--batch-size", type=POSITIVE, default=256,
                   help="rows handed to the static engine at once (default: 256); the native, continuous and "
                        "vLLM engines take a whole shard")
    s.add_argument("--shard-rows", type=POSITIVE, default=10_000, help="rows per output shard (default: 10000)")
    s.add_argument("--rounds", type=POSITIVE, default=1, metavar="M",
                   help="M-shot multi-round synthesis: chain texts in M rounds and templify each chain into "
                        "pre-training texts (column augmented_texts); default 1")
    s.add_argument("--seed", type=int, default=0, help="templify seed (default: 0)")
    s.add_argument("--no-templify", action="store_true",
                   help="write pairs only: no augmented_texts (the templified pre-training texts every run writes)")
    s.add_argument("--history-budget", choices=["tokens", "words"], default="tokens",
                   help="with --rounds: a link is prompted with its chain's history when it fits by real token "
                        "count (tokens, default) or by the reference scripts' estimate, words x 1.5 (words)")
    s.add_argument("--on-invalid", choices=["error", "skip"], default="error",
                   help="a None or non-string text: stop with an error naming the row, or skip it (counted)")
    s.add_argument("--streaming", action="store_true",
                   help="stream INPUT instead of loading it whole (for corpora larger than the disk cache)")
    s.add_argument("--num-gpus", type=POSITIVE, default=1, metavar="N",
                   help="spread shards over N processes, process r on cuda:r (one model per GPU)")
    s.add_argument("--ray-actors", type=POSITIVE, metavar="N",
                   help="run on Ray Data with N synthesizer actors, one GPU each (extra 'ray'; connects to "
                        "RAY_ADDRESS when set, else starts a local Ray)")
    s.add_argument("--overwrite", action="store_true",
                   help="start over: remove an earlier run's own files from DIR (a folder holding anything "
                        "else is refused)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.add_argument("--debug", action="store_true", help="show tracebacks")

    p = sub.add_parser("push", help="publish a finished run's folder on the Hub (resumable; byte for byte)",
                       description="Publish the shards of a finished run as a split of a Hub dataset, with a "
                                   "generated card. Running it again resumes a push that failed.")
    p.add_argument("output", metavar="DIR", help="the run's output folder (holds manifest.json)")
    p.add_argument("repo_id", metavar="REPO_ID", help="the dataset repo, e.g. user/corpus-augmented")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--license", help="the card's license (default: the source Hub dataset's, else the repo card's, "
                                      "else 'other', which the card explains)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args._argv = list(argv) if argv is not None else sys.argv[1:]
    from .inputs import EmptyInputError

    try:
        return _push(args) if args.command == "push" else _synthesize(args)
    except KeyboardInterrupt:
        again = "the same command without --overwrite" if getattr(args, "overwrite", False) else "the same command"
        print(f"interrupted; finished shards are kept: run {again} to resume", file=sys.stderr)
        return 130
    except EmptyInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - one clear line for the user, traceback with --debug
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


def _synthesize(args: argparse.Namespace) -> int:
    import datasets

    from . import DEMO_MODEL
    from .inputs import open_input
    from .run import output_dir_for, run_to_dir
    from .synthesizer import InstructionSynthesizer

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not args.output and not args.push_to_hub:
        raise ValueError("say where the result goes: --output DIR and/or --push-to-hub REPO_ID")
    if args.ray_actors and args.streaming:
        raise ValueError("--ray-actors reads the input itself: drop --streaming")
    output = args.output or str(output_dir_for(args.push_to_hub))
    license_ = None
    if args.push_to_hub:  # before hours of generation, not after
        from .hub import check_push_access

        check_push_access(args.push_to_hub, private=args.private)
        license_ = _license(args)
    src = open_input(args.input, args.split, streaming=args.streaming, subset=args.subset,
                     data_revision=args.data_revision, limit=args.limit, encoding=args.encoding,
                     sample_by=args.sample_by)
    ds = src.dataset
    model = DEMO_MODEL if args.model == "demo" else args.model
    synth = InstructionSynthesizer(model=model, revision=args.revision, text_column=args.text_column,
                                   max_new_tokens=args.max_new_tokens, max_model_len=args.max_model_len,
                                   max_batch_tokens=args.max_batch_tokens, max_pad_fraction=args.max_pad_fraction,
                                   on_invalid=args.on_invalid, engine=args.engine, speculative=args.speculative,
                                   draft_tokens=args.draft_tokens, ngram=args.ngram)
    if ds.column_names is not None and args.text_column not in ds.column_names:
        raise ValueError(f"{args.input} has no column {args.text_column!r}; columns present: {ds.column_names}. "
                         "Pick one with --text-column")
    split = args.split or "train"
    about = {"generation": _generation(synth, args), "command": _command(argv_of(args)),
             "source": {"input": args.input if _is_hub_id(args.input) else Path(args.input).name,
                        "hub_dataset": args.input if _is_hub_id(args.input) else None, "subset": args.subset,
                        "revision": src.hub_commit or args.data_revision, "split": split, "limit": args.limit}}
    start = time.perf_counter()
    if args.ray_actors:
        from .ray import synthesize_with_ray

        outcome = synthesize_with_ray(ds, synth, output, split=split, shard_rows=args.shard_rows,
                                      num_actors=args.ray_actors, batch_size=args.batch_size, rounds=args.rounds,
                                      seed=args.seed, overwrite=args.overwrite, source_id=src.identity,
                                      input_paths=tuple(src.paths), about=about, report=True,
                                      templify=not args.no_templify, history_budget=args.history_budget)
    else:
        outcome = run_to_dir(ds, synth, output, split=split, shard_rows=args.shard_rows,
                             batch_size=args.batch_size, overwrite=args.overwrite,
                             progress=not args.no_progress, rounds=args.rounds, seed=args.seed,
                             num_workers=args.num_gpus, source=src.identity, input_paths=tuple(src.paths),
                             about=about, templify=not args.no_templify, history_budget=args.history_budget)
    print(_summary(outcome, time.perf_counter() - start, output))
    if args.push_to_hub:
        from .hub import PushError, push_output_dir

        try:
            url = push_output_dir(output, args.push_to_hub, private=args.private, license=license_,
                                  progress=not args.no_progress)
        except PushError as err:
            raise PushError(f"{err} The results are safe in {output}; publish them with: hf-instruct-synth push "
                            f"{output} {args.push_to_hub}" + (" --private" if args.private else "")) from None
        print(f"pushed: {outcome.total.rows} rows to {args.push_to_hub} ({url})")
    return 0


def _push(args: argparse.Namespace) -> int:
    from .hub import check_push_access, push_output_dir
    from .shards import read_manifest

    manifest = read_manifest(args.output)
    check_push_access(args.repo_id, private=args.private)
    source = manifest.get("about", {}).get("source", {}).get("hub_dataset")
    license_ = args.license or (_hub_license(source) if source else None)
    url = push_output_dir(args.output, args.repo_id, private=args.private, license=license_,
                          progress=not args.no_progress)
    print(f"pushed: {manifest.get('rows', 0)} rows from {args.output} to {args.repo_id} ({url})")
    return 0


def _summary(outcome, elapsed: float, output: str) -> str:
    total, now = outcome.total, outcome.this_run
    per_row = total.pairs / total.rows if total.rows else 0.0
    whole = (f"{total.rows} rows, {total.pairs} pairs ({per_row:.1f}/row, {total.rows_without_pairs} rows without), "
             f"{total.rows_truncated} truncated, {total.rows_skipped} skipped")
    if outcome.shards_written == 0 and outcome.shards_before:
        return f"already complete: {whole} -> {output} (nothing generated)"
    this = f"{now.generated_tokens} tokens generated in {elapsed:.1f}s"
    if outcome.shards_before:
        return (f"done: resumed; this run {now.rows} rows in {outcome.shards_written} shards, {this}; "
                f"whole job {whole} -> {output}")
    return f"done: {whole}, {this} -> {output}"


def argv_of(args: argparse.Namespace) -> list[str]:
    return getattr(args, "_argv", None) or sys.argv[1:]


def _command(argv: list[str]) -> str:
    """The command as typed, for the card and the manifest: anyone can reproduce the run with it."""
    import shlex

    # local paths are shown by their last part: a card never publishes a machine's folders
    shown = [Path(a).name if "/" in a and Path(a).exists() else a for a in argv]
    return "hf-instruct-synth " + shlex.join(shown)


def _generation(synth, args: argparse.Namespace) -> dict:
    from .templify import templify_version

    info = {**synth.settings(), "rounds": args.rounds}
    if args.rounds > 1:
        info["history_budget"] = args.history_budget
    if not args.no_templify:
        info.update(templify_version=templify_version(), templify_seed=args.seed)
    return info


def _is_hub_id(spec: str) -> bool:
    return not Path(spec).exists() and spec.count("/") == 1 and not Path(spec).suffix


def _hub_license(dataset: str) -> str | None:
    from huggingface_hub import HfApi

    try:
        found = (HfApi().dataset_info(dataset, timeout=10).card_data or {}).get("license")
    except Exception:  # noqa: BLE001 - unknown is handled by the caller
        return None
    return (found if isinstance(found, str) else found[0]) if found else None


def _license(args: argparse.Namespace) -> str:
    if args.license:
        return args.license
    found = _hub_license(args.input) if _is_hub_id(args.input) else None
    if found:
        return found
    print("warning: the source's license is unknown; the card will say 'other' until you pass --license "
          "(e.g. the source data's license)", file=sys.stderr)
    return "other"


if __name__ == "__main__":
    sys.exit(main())

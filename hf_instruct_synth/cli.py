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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-instruct-synth",
                                     description="Instruction-augmented pre-training corpora (Instruction Pre-Training).",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
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
    s.add_argument("--text-column", default="text", help="column holding the raw texts (default: text)")
    s.add_argument("--model", default="instruction-pretrain/instruction-synthesizer",
                   help="Hub id or local folder of the synthesizer; 'demo' = the bundled tiny demo model "
                        "(default: %(default)s)")
    s.add_argument("--revision", help="model revision (branch, tag or commit)")
    s.add_argument("--limit", type=int, metavar="N", help="use only the first N rows")
    s.add_argument("--max-new-tokens", type=int, default=400, help="tokens generated per text (default: 400)")
    s.add_argument("--max-model-len", type=int, default=4096, help="context length (default: 4096)")
    s.add_argument("--max-batch-tokens", type=int,
                   help="token budget per sub-batch, rows x (longest prompt + max new tokens); default: from GPU memory")
    s.add_argument("--max-pad-fraction", type=float, default=0.1,
                   help="also cut a sub-batch where padding would pass this share of its prompt positions "
                        "(default 0.1; 1 = budget only)")
    s.add_argument("--engine", choices=["auto", "static", "continuous", "vllm"], default="auto",
                   help="generation back end: static length-sorted batches, transformers' continuous batching, "
                        "or vLLM (extra 'vllm'); auto = vLLM when it imports, else static (see benchmarks/RESULTS.md)")
    s.add_argument("--batch-size", type=int, default=256, help="rows handed to the transform at once (default: 256)")
    s.add_argument("--shard-rows", type=int, default=10_000, help="rows per output shard (default: 10000)")
    s.add_argument("--rounds", type=int, default=1, metavar="M",
                   help="M-shot multi-round synthesis: chain texts in M rounds and templify each chain into "
                        "pre-training texts (column augmented_texts); default 1")
    s.add_argument("--seed", type=int, default=0, help="templify seed with --rounds (default: 0)")
    s.add_argument("--on-invalid", choices=["error", "skip"], default="error",
                   help="a None or non-string text: stop with an error naming the row, or skip it (counted)")
    s.add_argument("--streaming", action="store_true",
                   help="stream INPUT instead of loading it whole (for corpora larger than the disk cache)")
    s.add_argument("--num-gpus", type=int, default=1, metavar="N",
                   help="spread shards over N processes, process r on cuda:r (one model per GPU)")
    s.add_argument("--ray-actors", type=int, metavar="N",
                   help="run on Ray Data with N synthesizer actors, one GPU each (extra 'ray'; connects to "
                        "RAY_ADDRESS when set, else starts a local Ray)")
    s.add_argument("--overwrite", action="store_true", help="delete what DIR holds and start over")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _synthesize(args)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one clear line for the user, traceback with --debug
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


def _synthesize(args: argparse.Namespace) -> int:
    import datasets

    from . import DEMO_MODEL
    from .inputs import load_input
    from .run import synthesize_to_dir
    from .synthesizer import InstructionSynthesizer

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not args.output and not args.push_to_hub:
        raise ValueError("say where the result goes: --output DIR and/or --push-to-hub REPO_ID")
    output = args.output or str(Path(".hf-instruct-synth") / args.push_to_hub.replace("/", "__"))
    license_ = _license(args) if args.push_to_hub else None  # before hours of generation, not after
    ds = load_input(args.input, args.split, streaming=args.streaming)
    if args.limit is not None:
        ds = ds.take(args.limit) if args.streaming else ds.select(range(min(args.limit, len(ds))))
    model = DEMO_MODEL if args.model == "demo" else args.model
    synth = InstructionSynthesizer(model=model, revision=args.revision, text_column=args.text_column,
                                   max_new_tokens=args.max_new_tokens, max_model_len=args.max_model_len,
                                   max_batch_tokens=args.max_batch_tokens, max_pad_fraction=args.max_pad_fraction,
                                   on_invalid=args.on_invalid, engine=args.engine)
    if ds.column_names is not None and args.text_column not in ds.column_names:
        raise ValueError(f"{args.input} has no column {args.text_column!r}; columns present: {ds.column_names}. "
                         "Pick one with --text-column")
    start = time.perf_counter()
    split = args.split or "train"
    if args.ray_actors:
        if args.streaming:
            raise ValueError("--ray-actors reads the input itself: drop --streaming")
        from .ray import synthesize_with_ray

        stats = synthesize_with_ray(ds, synth, output, split=split, shard_rows=args.shard_rows,
                                    num_actors=args.ray_actors, batch_size=args.batch_size, rounds=args.rounds,
                                    seed=args.seed, overwrite=args.overwrite)
    else:
        stats = synthesize_to_dir(ds, synth, output, split=split, shard_rows=args.shard_rows,
                                  batch_size=args.batch_size, overwrite=args.overwrite,
                                  progress=not args.no_progress, rounds=args.rounds, seed=args.seed,
                                  num_workers=args.num_gpus,
                                  source=f"{args.input}:{split}:{args.limit}" if args.streaming else None)
    elapsed = time.perf_counter() - start
    per_row = stats.pairs / stats.rows if stats.rows else 0.0
    print(f"done: {stats.rows} rows, {stats.pairs} pairs ({per_row:.1f}/row, {stats.rows_without_pairs} rows without), "
          f"{stats.rows_truncated} truncated, {stats.rows_skipped} skipped, {stats.generated_tokens} tokens generated "
          f"in {elapsed:.1f}s -> {output}")
    if args.push_to_hub:
        from .hub import push_augmented_to_hub

        shards = sorted(str(p) for p in (Path(output) / "data").glob(f"{split}-*.parquet"))
        result = datasets.load_dataset("parquet", data_files=shards, split="train")
        url = push_augmented_to_hub(result, args.push_to_hub, private=args.private, split=split, stats=stats,
                                    progress=not args.no_progress,
                                    card_kwargs={"license": license_, "generation": _generation(synth, args),
                                                 "source_dataset": args.input if _is_hub_id(args.input) else None})
        print(f"pushed: {len(result)} rows to {args.push_to_hub} ({url})")
    return 0


def _generation(synth, args: argparse.Namespace) -> dict:
    from .templify import templify_version

    info = {**synth.settings(), "rounds": args.rounds}
    if args.rounds > 1:
        info.update(templify_version=templify_version(), templify_seed=args.seed)
    return info


def _is_hub_id(spec: str) -> bool:
    return not Path(spec).exists() and spec.count("/") == 1 and not Path(spec).suffix


def _license(args: argparse.Namespace) -> str:
    if args.license:
        return args.license
    if _is_hub_id(args.input):
        from huggingface_hub import HfApi

        try:
            found = (HfApi().dataset_info(args.input).card_data or {}).get("license")
        except Exception:  # noqa: BLE001 - unknown is handled below
            found = None
        if found:
            return found if isinstance(found, str) else found[0]
    print("warning: the source's license is unknown; the card will say 'other' until you pass --license "
          "(e.g. the source data's license)", file=sys.stderr)
    return "other"


if __name__ == "__main__":
    sys.exit(main())

"""hf-instruct-synth: instruction-augmented pre-training corpora as a ``datasets`` transform.

Example:
    >>> from datasets import Dataset
    >>> from hf_instruct_synth import InstructionSynthesizer, DEMO_MODEL
    >>> ds = Dataset.from_dict({"text": ["The Danube flows through Vienna."]})
    >>> ds = ds.map(InstructionSynthesizer(model=DEMO_MODEL), batched=True)  # doctest: +SKIP

Importing the package loads no model and imports neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from .format import build_prompt, cook_training_text, parse_pairs  # noqa: E402  (plain Python)

#: Path of the bundled tiny demo synthesizer (a demonstration and test model, not the real one).
DEMO_MODEL: str = str(Path(__file__).parent / "demo")

if TYPE_CHECKING:
    from .stats import SynthesisStats
    from .synthesizer import InstructionSynthesizer

    synthesize: InstructionSynthesizer

__all__ = ["synthesize", "InstructionSynthesizer", "SynthesisStats", "build_prompt", "parse_pairs",
           "cook_training_text", "DEMO_MODEL", "__version__"]


def __getattr__(name: str):
    # Lazy: the transform module (and datasets) are imported on first use only.
    if name == "InstructionSynthesizer":
        from .synthesizer import InstructionSynthesizer

        return InstructionSynthesizer
    if name == "SynthesisStats":
        from .stats import SynthesisStats

        return SynthesisStats
    if name == "synthesize":
        from .synthesizer import synthesize

        globals()["synthesize"] = synthesize
        return synthesize
    raise AttributeError(f"module 'hf_instruct_synth' has no attribute {name!r}")

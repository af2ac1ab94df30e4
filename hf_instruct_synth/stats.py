"""Counters a run keeps, readable after it as ``synth.stats`` and written to ``stats.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class SynthesisStats:
    """What one :class:`~hf_instruct_synth.InstructionSynthesizer` has done so far.

    Example:
        >>> s = SynthesisStats(rows=2, prompt_tokens=90, pad_tokens=10)
        >>> round(s.pad_fraction, 2)
        0.1
    """

    rows: int = 0  # rows seen, every kind
    rows_generated: int = 0  # rows sent to the model
    rows_empty: int = 0  # empty or whitespace-only texts (no model call, no pairs)
    rows_skipped: int = 0  # invalid texts skipped with on_invalid="skip"
    rows_truncated: int = 0  # prompts cut to fit max_model_len - max_new_tokens
    rows_with_markers: int = 0  # texts holding <s>, </s>, <pad>, </CON>, <QUE>… (read as plain characters)
    rows_without_pairs: int = 0  # rows whose output parsed to no pair (empty rows included)
    pairs: int = 0  # pairs kept after parsing
    duplicate_questions: int = 0  # pairs dropped by case-insensitive de-duplication
    repetition_loops: int = 0  # pairs dropped because a question or answer looped (format.is_repetition_loop)
    prompt_tokens: int = 0  # real prompt tokens sent to the model
    pad_tokens: int = 0  # left padding added to prompts
    generated_tokens: int = 0  # tokens generated, up to and including EOS
    batches: int = 0  # sub-batches run on the model (prefill groups for the native engine)
    draft_tokens_proposed: int = 0  # prompt-lookup speculation: tokens drafted
    draft_tokens_accepted: int = 0  # and accepted by the model (greedy verification)
    oom_splits: int = 0  # sub-batches split in two after an out-of-memory error
    wall_time_s: float = 0.0  # time spent inside the transform
    pairs_per_row: dict[str, int] = field(default_factory=dict)  # "0", "1", …: row counts

    @property
    def pad_fraction(self) -> float:
        """Pad tokens over all prompt positions the model processed (pads included)."""
        total = self.prompt_tokens + self.pad_tokens
        return self.pad_tokens / total if total else 0.0

    @property
    def draft_acceptance(self) -> float:
        """Accepted over proposed draft tokens (0 without speculation)."""
        return self.draft_tokens_accepted / self.draft_tokens_proposed if self.draft_tokens_proposed else 0.0

    @property
    def generated_tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_time_s if self.wall_time_s else 0.0

    def merge(self, other: SynthesisStats) -> SynthesisStats:
        """Add another run's counters into this one (shards, processes, actors); return self."""
        for f in fields(self):
            if f.name == "pairs_per_row":
                for k, v in other.pairs_per_row.items():
                    self.pairs_per_row[k] = self.pairs_per_row.get(k, 0) + v
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pad_fraction"] = self.pad_fraction
        d["generated_tokens_per_s"] = self.generated_tokens_per_s
        d["draft_acceptance"] = self.draft_acceptance
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SynthesisStats:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

"""Build tiny Mistral-architecture models and byte-level BPE tokenizers locally, in seconds.

Used by the tests, the benchmarks and ``train.py`` (the bundled demo synthesizer): nothing
is downloaded. The tokenizer knows the wire format: ``<s>``, ``</s>``, ``<pad>`` and
``<unk>`` are special tokens (``skip_special_tokens`` removes them); the tags ``<CON>``,
``</CON>``, ``<QUE>``, ``<ANS>`` and ``</END>`` are ordinary added tokens, kept in decoded text.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
TAG_TOKENS = ["<CON>", "</CON>", "<QUE>", "<ANS>", "</END>"]


def make_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    Example:
        >>> tok = make_tokenizer(["The cat sat on the mat."] * 10, vocab_size=300)
        >>> tok.decode(tok("<s> <CON> cat </CON>\\n\\n", add_special_tokens=False)["input_ids"])
        '<s> <CON> cat </CON>\\n\\n'
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    bpe.add_tokens([AddedToken(t, normalized=False) for t in TAG_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left",
                                   clean_up_tokenization_spaces=False)


def make_mistral(tokenizer, *, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 intermediate_size: int | None = None, max_position_embeddings: int = 2048, seed: int = 0,
                 initializer_range: float = 0.02, tie_word_embeddings: bool = False):
    """A randomly initialised ``MistralForCausalLM`` sized for ``tokenizer``.

    ``tie_word_embeddings`` shares the input embedding with the output head: copy (induction)
    heads then form several times sooner, since copying a token is its own embedding's logit.

    Example:
        >>> model = make_mistral(make_tokenizer(["a b c"] * 5, vocab_size=270))
        >>> model.config.model_type
        'mistral'
    """
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=hidden_size // heads, max_position_embeddings=max_position_embeddings, sliding_window=None,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=tie_word_embeddings, initializer_range=initializer_range,
    )
    return MistralForCausalLM(config).eval()

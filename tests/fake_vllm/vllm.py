"""Stand-in for vLLM's offline API (LLM, SamplingParams), generating with transformers."""
import torch
from transformers import AutoModelForCausalLM

CALLS = []


class SamplingParams:
    def __init__(self, temperature=1.0, max_tokens=16, stop_token_ids=None, skip_special_tokens=True,
                 detokenize=True, **kw):
        self.temperature, self.max_tokens = temperature, max_tokens
        self.stop_token_ids, self.detokenize, self.kw = list(stop_token_ids or []), detokenize, kw


class _Completion:
    def __init__(self, token_ids):
        self.token_ids = token_ids


class _RequestOutput:
    def __init__(self, prompt_token_ids, token_ids):
        self.prompt_token_ids, self.outputs = prompt_token_ids, [_Completion(token_ids)]


class LLM:
    SCRAMBLE = False

    def __init__(self, model, tokenizer=None, **kwargs):
        CALLS.append(("init", model, tokenizer, kwargs))
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        sp = sampling_params
        CALLS.append(("generate", prompts, sp))
        assert sp.temperature == 0.0, "only greedy is simulated"
        outs = []
        for p in prompts:
            ids = list(p["prompt_token_ids"])
            row = []
            with torch.inference_mode():
                for _ in range(sp.max_tokens):
                    nxt = int(self.model(torch.tensor([ids + row])).logits[0, -1].argmax())
                    row.append(nxt)
                    if nxt in sp.stop_token_ids:
                        break
            outs.append(_RequestOutput(ids, row))
        return outs[::-1] if LLM.SCRAMBLE else outs

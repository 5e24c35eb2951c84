"""A causal LM as the evaluator sees it: log-likelihood of a continuation, greedy generation, perplexity.

Tokenization follows lm-eval's convention (and /work/shared/notes/local-cluster.md): a continuation after a
SentencePiece context is scored by encoding `context + continuation` and taking the ids after `encode(context)`.
Encoding the continuation alone would add a dummy "▁" piece and change the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Score:
    logprob: float  # sum over the continuation's tokens
    tokens: int
    greedy: bool  # every continuation token is the argmax


class LM:
    def __init__(self, model_dir: str | Path, batch_size: int = 8, max_length: int | None = None,
                 device: str | None = None, model=None, tokenizer=None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tok = tokenizer or AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        if model is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=dtype)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length or int(self.model.config.max_position_embeddings)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0

    def encode(self, text: str) -> list[int]:
        # verbose=False: longer texts are expected here (perplexity windows them, prompts lose their start)
        return self.tok(text, add_special_tokens=True, verbose=False)["input_ids"]  # BOS first, as in training

    def _split(self, context: str, continuation: str) -> tuple[list[int], int]:
        whole = self.encode(context + continuation)
        n_ctx = len(self.encode(context))
        n_cont = len(whole) - n_ctx
        if n_cont < 1:
            raise ValueError(f"continuation {continuation!r} adds no token after context ...{context[-30:]!r}")
        if n_cont >= self.max_length:
            raise ValueError(f"continuation {continuation[:30]!r}... has {n_cont} tokens, more than max_length {self.max_length}")
        return whole[-(self.max_length + 1):], n_cont  # a long context loses its start, never the continuation

    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[Score]:
        encoded = [self._split(c, x) for c, x in requests]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths share a batch
        out: list[Score | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            inputs = [encoded[i][0][:-1] for i in batch]
            width = max(len(x) for x in inputs)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, x in enumerate(inputs):  # right padding: real positions keep their position ids
                ids[row, : len(x)] = torch.tensor(x)
                mask[row, : len(x)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for row, i in enumerate(batch):
                seq, n_cont = encoded[i]
                length = len(seq) - 1
                target = torch.tensor(seq[-n_cont:], device=logits.device)
                # log-softmax of the continuation's positions only: the context's rows are never needed
                lp = torch.log_softmax(logits[row, length - n_cont: length].float(), dim=-1)
                picked = lp.gather(1, target[:, None])[:, 0]
                out[i] = Score(float(picked.sum()), n_cont, bool((lp.argmax(-1) == target).all()))
        return out  # type: ignore[return-value]

    def generate(self, context: str, max_new_tokens: int, stop: str = "\n") -> str:
        return self.generate_batch([context], max_new_tokens, [stop] if stop else [])[0]

    @torch.no_grad()
    def generate_batch(self, contexts: list[str], max_new_tokens: int, stop: list[str] | tuple = ("\n",)) -> list[str]:
        """Greedy continuations of several contexts per forward (left padding; the attention mask gives each row
        its own positions), each cut at the first stop string. Same tokens as one context at a time, up to
        floating-point ties."""
        out: list[str] = [""] * len(contexts)
        encoded = [self.encode(c)[-(self.max_length - max_new_tokens):] for c in contexts]
        order = sorted(range(len(contexts)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            y = self.model.generate(ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=self.pad_id, eos_token_id=self.tok.eos_token_id)
            for row, i in enumerate(batch):
                text = self.tok.decode(y[row, width:], skip_special_tokens=True)
                cuts = [text.index(s) for s in stop if s in text]
                out[i] = text[: min(cuts)] if cuts else text
        return out

    @torch.no_grad()
    def perplexity(self, texts: list[str]) -> dict:
        """Token-level perplexity and bits per character (comparable across tokenizers) of whole documents,
        each scored in non-overlapping windows of max_length tokens; the BOS token is never scored."""
        nll = 0.0
        n_tokens = n_chars = 0
        for text in texts:
            ids = self.encode(text) + [self.tok.eos_token_id]
            n_chars += len(text)
            for start in range(0, len(ids) - 1, self.max_length):
                window = ids[start: start + self.max_length + 1]
                x = torch.tensor([window[:-1]], device=self.device)
                logits = self.model(input_ids=x).logits.float()
                lp = torch.log_softmax(logits[0], dim=-1)
                target = torch.tensor(window[1:], device=self.device)
                nll -= float(lp.gather(1, target[:, None]).sum())
                n_tokens += len(window) - 1
        return {"documents": len(texts), "tokens": n_tokens, "characters": n_chars,
                "nll_per_token": round(nll / max(n_tokens, 1), 6),
                "perplexity": round(math.exp(nll / max(n_tokens, 1)), 4),
                "bits_per_character": round(nll / math.log(2) / max(n_chars, 1), 6)}

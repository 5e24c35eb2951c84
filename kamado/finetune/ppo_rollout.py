"""What PPO/GRPO samples and scores: prompts (from chat records), rollouts (reproducible sampling), the reward
(a rule or the reward stage's model), the value model, per-token log-probabilities and values."""

from __future__ import annotations

from pathlib import Path

import torch

from kamado.finetune.data import ASSISTANT_HEADER, BOS, BadRecord, Rejected, read_records, record_messages, render_segments
from kamado.finetune.frozen import frozen_model


def load_prompts(paths: list[str], tokenizer, max_prompt_len: int) -> tuple[list[list[int]], Rejected]:
    """Prompt ids ([bos] template … "### 応答:\\n", the generation prompt) from records holding `prompt`,
    `instruction` (+`input`) or `messages` (a trailing assistant turn is dropped). Too-long prompts are counted."""
    prompts, rejected = [], Rejected()
    for path, line_no, rec in read_records(paths):
        where = f"{path}:{line_no}"
        if isinstance(rec.get("prompt"), str):
            msgs = [{"role": "user", "content": rec["prompt"]}]
        elif "messages" in rec or "instruction" in rec:
            if "messages" not in rec:
                rec = {**rec, "output": rec.get("output") or ""}
            msgs = record_messages(rec, where)
            if msgs[-1]["role"] == "assistant":
                msgs = msgs[:-1]
        else:
            raise BadRecord(f"{where}: needs a 'prompt', 'instruction' or 'messages' field")
        if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
            rejected.add("empty_prompt", where)
            continue
        ids = prompt_ids(tokenizer, msgs)
        if len(ids) > max_prompt_len:
            rejected.add("prompt_longer_than_limit", where)
            continue
        prompts.append(ids)
    return prompts, rejected


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    text = "".join(s for s, _ in render_segments(messages) if s is not BOS)
    return [tokenizer.bos_token_id] + tokenizer(text + ASSISTANT_HEADER, add_special_tokens=False)["input_ids"]


class SuffixReward:
    """Rule-based reward: 1 if the response (special tokens removed, whitespace stripped) ends in `suffix`."""

    def __init__(self, tokenizer, suffix: str):
        self.tokenizer, self.suffix = tokenizer, suffix

    def __call__(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return torch.tensor([1.0 if t.strip().endswith(self.suffix) else 0.0 for t in texts])


class ModelReward:
    """The reward stage's scalar-head model on [bos] prompt response [eos] (the format it was trained on)."""

    def __init__(self, path: Path, tokenizer, device, cfg, world_size: int):
        from kamado.finetune.reward import load_reward_model, score_batch, scores

        self.model = frozen_model(load_reward_model(path), cfg, world_size, device)
        self.tokenizer, self.device = tokenizer, device
        self._batch, self._scores = score_batch, scores

    @torch.no_grad()
    def __call__(self, prompts, responses) -> torch.Tensor:
        eos = self.tokenizer.eos_token_id
        rows = [p + r + ([] if r and r[-1] == eos else [eos]) for p, r in zip(prompts, responses)]
        batch = {k: v.to(self.device) for k, v in self._batch(rows, self.tokenizer.pad_token_id).items()}
        return self._scores(self.model, batch).cpu()


def stop_token_ids(tokenizer, stop_text: str) -> set[int]:
    ids = {tokenizer.eos_token_id}
    if stop_text:
        ids |= {i for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))) if piece and stop_text in piece}
    return ids


def load_value_model(source: Path, from_reward: bool):
    """The value model: an LM with a per-token scalar head (no dropout: values must be deterministic). From the
    policy (a fresh head) or, as DeepSpeed-Chat does, from the reward model: its trunk and its scalar head, so the
    value of the last token starts as the reward model's score."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    vcfg = AutoConfig.from_pretrained(str(source), num_labels=1, local_files_only=True)
    # set as attributes: transformers 5 drops config kwargs it does not know, and the head's dropout would be 0.1
    vcfg.classifier_dropout = 0.0
    vcfg.token_classification_bias = not from_reward  # the reward head has no bias: same head, same scores
    model = AutoModelForTokenClassification.from_pretrained(str(source), config=vcfg, local_files_only=True, dtype=torch.float32)
    return model


@torch.no_grad()
def sample_rollouts(module, prompts: list[list[int]], tokenizer, stops: set[int], cfg, seed: int, device,
                    synced_gpus: bool) -> dict:
    """Sample one response per prompt with `module` (left-padded prompts, so every response starts at the same
    column); a response ends at EOS or at the first stop token (both kept). `seed` makes the sampling
    reproducible: a resumed run samples what the straight run would have."""
    pad = tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], attn[i, width - len(p):] = torch.tensor(p), 1
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    module.eval()
    out = module.generate(input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=True,
                          temperature=cfg.temperature, top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
                          pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, synced_gpus=synced_gpus).cpu()
    module.train()
    responses = []
    for row in out[:, width:].tolist():
        resp = []
        for t in row:
            resp.append(t)
            if t in stops:
                break
        responses.append(resp)
    r_width = max(len(r) for r in responses)
    seq = torch.full((len(prompts), width + r_width), pad, dtype=torch.long)
    seq[:, :width] = ids
    mask = torch.zeros((len(prompts), r_width))
    for i, r in enumerate(responses):
        seq[i, width : width + len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    full_attn = torch.cat([attn, mask.long()], dim=1)
    return {"input_ids": seq.to(device), "attention_mask": full_attn.to(device),
            "position_ids": (full_attn.cumsum(-1) - 1).clamp(min=0).to(device),
            "mask": mask.to(device), "prompt_width": width, "prompts": prompts, "responses": responses}


def response_logps(model, b: dict, temperature: float) -> torch.Tensor:
    """log π(response token | everything before it), per response token."""
    w, r = b["prompt_width"], b["mask"].shape[1]
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                   use_cache=False).logits[:, w - 1 : w - 1 + r].float() / temperature
    return torch.gather(logits.log_softmax(-1), 2, b["input_ids"][:, w : w + r].unsqueeze(-1)).squeeze(-1)


def response_values(model, b: dict) -> torch.Tensor:
    """The value of the state before each response token."""
    w, r = b["prompt_width"], b["mask"].shape[1]
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"])
    return out.logits[:, w - 1 : w - 1 + r, 0].float()


def rows(b: dict, sl: slice) -> dict:
    """Rows `sl` of a rollout batch (the per-row tensors; the prompt width is shared)."""
    return {**{k: b[k][sl] for k in ("input_ids", "attention_mask", "position_ids", "mask")}, "prompt_width": b["prompt_width"]}

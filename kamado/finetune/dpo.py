"""DPO (Rafailov et al. 2023): sigmoid loss on the policy/reference log-ratio margin of chosen over rejected.

Reference log-probs are computed once, in a pass before training, from the starting model: no second model
lives beside the policy, and the same pass works under ZeRO-3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kamado.finetune.data import Rejected, encode_example, format_prompt, pad_batch, read_records, write_rejections
from kamado.train.data import SampleOrder
from kamado.train.model import load_model
from kamado.train.worker import worker_main


def sequence_logps(model, batch: dict) -> torch.Tensor:
    """Sum of log-probs of the scored (response) tokens of each row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"]
    mask = labels != -100
    logp = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def dpo_loss(pol_c, pol_r, ref_c, ref_r, beta: float):
    """Returns (loss, chosen_rewards, rejected_rewards) for tensors of per-pair log-probs."""
    chosen = beta * (pol_c - ref_c)
    rejected = beta * (pol_r - ref_r)
    return -F.logsigmoid(chosen - rejected).mean(), chosen.detach(), rejected.detach()


class DPOTask:
    name = "dpo"

    def __init__(self, pairs, ref_logps: torch.Tensor, pad_id: int, beta: float, seed: int):
        self.pairs, self.ref, self.pad_id, self.beta = pairs, ref_logps, pad_id, beta
        self.order = SampleOrder(len(pairs), seed)

    def _rows(self, idx: list[int]) -> dict:
        chosen = [self.pairs[i][0] for i in idx]
        rejected = [self.pairs[i][1] for i in idx]
        batch = pad_batch(chosen + rejected, self.pad_id)
        batch["pair_index"] = torch.tensor(idx)
        return batch

    def batch(self, indices: list[int]) -> dict:
        return self._rows([self.order(i) for i in indices])

    def val_batches(self, micro_batch: int, limit: int = 8):
        return iter(())

    def loss(self, model, batch: dict):
        n = batch["pair_index"].numel()
        logps = sequence_logps(model, batch)
        ref = self.ref[batch["pair_index"].cpu()].to(logps.device)
        loss, rc, rr = dpo_loss(logps[:n], logps[n:], ref[:, 0], ref[:, 1], self.beta)
        return loss, {"reward_chosen": rc.mean().item(), "reward_rejected": rr.mean().item(),
                      "reward_margin": (rc - rr).mean().item(), "reward_accuracy": (rc > rr).float().mean().item()}


def load_pairs(paths: list[str], tokenizer, seq_len: int):
    rejected = Rejected()
    pairs = []
    for _, _, rec in read_records(paths, ("prompt", "chosen", "rejected")):
        if rec["chosen"].strip() == rec["rejected"].strip():
            rejected.add("chosen_equals_rejected")
            continue
        if not rec["chosen"].strip() or not rec["rejected"].strip():
            rejected.add("empty_response")
            continue
        prompt = format_prompt(rec["prompt"])
        c = encode_example(tokenizer, prompt, rec["chosen"], seq_len)
        r = encode_example(tokenizer, prompt, rec["rejected"], seq_len)
        if c is None or r is None:
            rejected.add("prompt_longer_than_seq_len")
            continue
        pairs.append((c, r))
    return pairs, rejected


@torch.no_grad()
def reference_logps(model, pairs, pad_id: int, device, batch_size: int = 8) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = pad_batch([c for c, _ in chunk] + [r for _, r in chunk], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        lp = sequence_logps(model, batch).cpu()
        out.append(torch.stack([lp[: len(chunk)], lp[len(chunk) :]], dim=1))
    model.train()
    return torch.cat(out)


def build(ws, cfg, tokenizer, device):
    pairs, rejected = load_pairs(cfg.data, tokenizer, cfg.seq_len)
    if not pairs:
        raise ValueError(f"dpo: no usable preference pairs in {cfg.data} (rejected: {rejected.counts})")
    write_rejections(ws.stage_dir("dpo") / "data_report.json", rejected, len(pairs))
    model = load_model(ws.model_source("dpo")).to(device)
    ref = reference_logps(model, pairs, tokenizer.pad_token_id, device)
    return model, DPOTask(pairs, ref, tokenizer.pad_token_id, cfg.beta, cfg.seed), {"pairs": len(pairs), "rejected": rejected.counts}


main = worker_main("dpo", build)

if __name__ == "__main__":
    raise SystemExit(main())

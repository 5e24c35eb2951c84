"""DPO (Rafailov et al. 2023): sigmoid loss on the policy/reference log-ratio margin of chosen over rejected;
options: IPO (Azar et al. 2023) and label smoothing (conservative DPO, Mitchell 2023), as TRL defines them.

Reference log-probs (`dpo.reference`): `precomputed` (default) computes them once, in a pass before training,
from the starting model: no second model lives beside the policy, and the same pass works under ZeRO-3 (the model
is still whole on every rank then, TRL #2985); the pass is split across ranks (pair i on rank i mod world) and
all-gathered. `live` keeps a frozen copy of the starting model and runs it on each batch (finetune/frozen.py: a
ZeRO-3 inference engine under ZeRO-3), as TRL and DeepSpeed-Chat do: the memory of a second model for no data
pass, and the choice when the pairs are too many to precompute or change during training. With LoRA on, `live`
needs no second model: the starting model is the policy with its adapters disabled (peft `disable_adapter`), run
in eval mode without gradients, as TRL does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kamado.finetune.data import Rejected, encode_conversation, pad_batch, read_records, write_rejections
from kamado.finetune.frozen import elements_held, frozen_model
from kamado.finetune.lora import maybe_apply_lora
from kamado.finetune.worker import finetune_main
from kamado.train.data import SampleOrder
from kamado.train.model import load_model

LOSS_TYPES = ("sigmoid", "ipo")


def sequence_logps(model, batch: dict, average: bool = False) -> torch.Tensor:
    """Sum (or, with `average`, per-token mean) of log-probs of the scored (response) tokens of each row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"]
    mask = labels != -100
    logp = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (logp * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def dpo_loss(pol_c, pol_r, ref_c, ref_r, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """Returns (loss, chosen_rewards, rejected_rewards) for tensors of per-pair log-probs.

    h = (pol_c - ref_c) - (pol_r - ref_r);
    sigmoid: -(1-ε)·log σ(βh) - ε·log σ(-βh)   (ε = label_smoothing; ε=0 is plain DPO)
    ipo:     (h - 1/(2β))²                      (log-probs are per-token means for IPO, as in TRL)"""
    chosen = beta * (pol_c - ref_c)
    rejected = beta * (pol_r - ref_r)
    h = (pol_c - ref_c) - (pol_r - ref_r)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"dpo.loss_type: unknown loss {loss_type!r} (known: {', '.join(LOSS_TYPES)})")
    return losses.mean(), chosen.detach(), rejected.detach()


class DPOTask:
    """`ref_logps` (pairs × 2, precomputed), `ref_model` (a frozen model run on each batch) or `ref_from_policy`
    (the LoRA policy itself with its adapters disabled): exactly one of the three."""

    name = "dpo"

    def __init__(self, pairs, ref_logps: torch.Tensor | None, pad_id: int, beta: float, seed: int,
                 loss_type: str = "sigmoid", label_smoothing: float = 0.0, ref_model=None, ref_from_policy: bool = False):
        if (ref_logps is not None) + (ref_model is not None) + ref_from_policy != 1:
            raise ValueError("DPOTask needs exactly one of: precomputed reference log-probs, a reference model, "
                             "or the reference from the policy with its adapters disabled")
        self.pairs, self.ref, self.ref_model, self.pad_id, self.beta = pairs, ref_logps, ref_model, pad_id, beta
        self.ref_from_policy = ref_from_policy
        self.loss_type, self.label_smoothing = loss_type, label_smoothing
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

    def reference(self, batch: dict, policy=None) -> torch.Tensor:
        """(pairs in the batch × 2) reference log-probs: looked up, from the live reference model, or from `policy`
        (the engine being trained) with its LoRA adapters disabled."""
        n = batch["pair_index"].numel()
        if self.ref is not None:
            return self.ref[batch["pair_index"].cpu()].to(batch["input_ids"].device)
        average = self.loss_type == "ipo"
        if self.ref_from_policy:
            lp = adapters_disabled_logps(policy, batch, average)
        else:
            with torch.no_grad():
                lp = sequence_logps(self.ref_model, batch, average=average)
        return torch.stack([lp[:n], lp[n:]], dim=1)

    def loss(self, model, batch: dict):
        n = batch["pair_index"].numel()
        # the reference first: with adapters disabled it runs the policy itself in eval mode, then restores its mode
        ref = self.reference(batch, model)
        logps = sequence_logps(model, batch, average=self.loss_type == "ipo")
        ref = ref.to(logps.device)
        loss, rc, rr = dpo_loss(logps[:n], logps[n:], ref[:, 0], ref[:, 1], self.beta, self.loss_type, self.label_smoothing)
        # device scalars: the loop reads them back at log steps, not per micro-batch
        return loss, {"reward_chosen": rc.mean(), "reward_rejected": rr.mean(),
                      "reward_margin": (rc - rr).mean(), "reward_accuracy": (rc > rr).float().mean(),
                      "logp_margin": (logps[:n] - logps[n:]).detach().mean(),
                      "ref_logp_chosen": ref[:, 0].mean(), "ref_logp_rejected": ref[:, 1].mean()}


def adapters_disabled_logps(policy, batch: dict, average: bool) -> torch.Tensor:
    """Log-probs of `policy` (a DeepSpeed engine or module wrapping a peft model) with its adapters disabled: the
    starting model, without a second copy of it. Eval mode so the model's own dropout is off; the policy's mode
    (train in a step, eval in validation) is restored. Under ZeRO-3 the engine's forward gathers the partitioned
    base weights as in any forward, on every rank alike."""
    peft_model = getattr(policy, "module", policy)
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad(), peft_model.disable_adapter():
            return sequence_logps(policy, batch, average)
    finally:
        policy.train(was_training)


def load_pairs(paths: list[str], tokenizer, seq_len: int, with_lines: bool = False):
    """(chosen row, rejected row) per usable record; both rendered with the chat template (one user turn), so a
    DPO or reward model sees exactly the SFT format. `with_lines`: also return each pair's (file, line)."""
    rejected = Rejected()
    pairs, where = [], []
    for path, line_no, rec in read_records(paths, ("prompt", "chosen", "rejected")):
        at = f"{path}:{line_no}"
        if not rec["chosen"].strip() or not rec["rejected"].strip():
            rejected.add("empty_response", at)
            continue
        if rec["chosen"].strip() == rec["rejected"].strip():
            rejected.add("chosen_equals_rejected", at)
            continue
        user = {"role": "user", "content": rec["prompt"]}
        c = encode_conversation(tokenizer, [user, {"role": "assistant", "content": rec["chosen"]}], seq_len)
        r = encode_conversation(tokenizer, [user, {"role": "assistant", "content": rec["rejected"]}], seq_len)
        if c is None or r is None:
            rejected.add("prompt_longer_than_seq_len", at)
            continue
        if c[:2] == r[:2]:  # the responses differ only beyond seq_len: nothing left to prefer
            rejected.add("chosen_equals_rejected_after_truncation", at)
            continue
        if c[2] or r[2]:
            rejected.add_truncated(at)
        pairs.append((c[:2], r[:2]))
        where.append((path, line_no))
    return (pairs, rejected, where) if with_lines else (pairs, rejected)


@torch.no_grad()
def reference_logps_shard(model, pairs, pad_id: int, device, rank: int = 0, world: int = 1, batch_size: int = 8,
                          average: bool = False) -> torch.Tensor:
    """(chosen, rejected) log-probs of pairs rank, rank+world, rank+2·world, ... (this rank's share)."""
    mine = pairs[rank::world]
    model.eval()
    out = [torch.zeros((0, 2))]
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        batch = pad_batch([c for c, _ in chunk] + [r for _, r in chunk], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        lp = sequence_logps(model, batch, average).cpu()
        out.append(torch.stack([lp[: len(chunk)], lp[len(chunk) :]], dim=1))
    model.train()
    return torch.cat(out)


def interleave_shards(shards: list[torch.Tensor], n: int) -> torch.Tensor:
    """Inverse of the rank::world split: shard r row j is pair r + j·world."""
    out = torch.empty((n, 2))
    for r, shard in enumerate(shards):
        out[r::len(shards)] = shard[: len(range(r, n, len(shards)))]
    return out


def reference_logps(model, pairs, pad_id: int, device, batch_size: int = 8, average: bool = False) -> torch.Tensor:
    """Every pair's reference log-probs on every rank: each rank computes its share, then one all_gather."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    shard = reference_logps_shard(model, pairs, pad_id, device, rank, world, batch_size, average)
    if world == 1:
        return shard
    width = -(-len(pairs) // world)  # all_gather needs equal sizes: pad every share to the largest
    padded = torch.zeros((width, 2), dtype=torch.float32, device=device)
    padded[: len(shard)] = shard.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return interleave_shards([g.cpu() for g in gathered], len(pairs))


def build(ws, cfg, tokenizer, device):
    import torch.distributed as dist

    pairs, rejected = load_pairs(cfg.data, tokenizer, cfg.seq_len)
    if not pairs:
        raise ValueError(f"dpo: no usable preference pairs in {cfg.data} (rejected: {rejected.counts})")
    write_rejections(ws.stage_dir("dpo") / "data_report.json", rejected, len(pairs))
    source = ws.model_source("dpo")
    model = load_model(source).to(device)
    average = cfg.loss_type == "ipo"
    ref_logps = ref_model = None
    from_policy = cfg.reference == "live" and cfg.lora.enabled  # the policy with adapters disabled is the reference
    if cfg.reference == "live" and not from_policy:
        ref_model = frozen_model(load_model(source), cfg, dist.get_world_size(), device)
    elif not from_policy:
        ref_logps = reference_logps(model, pairs, tokenizer.pad_token_id, device, average=average)
    model, lora_info = maybe_apply_lora(model, cfg.lora)  # after the reference pass: it needs the plain model only
    model = model.to(device)
    task = DPOTask(pairs, ref_logps, tokenizer.pad_token_id, cfg.beta, cfg.seed, cfg.loss_type, cfg.label_smoothing,
                   ref_model=ref_model, ref_from_policy=from_policy)
    info = {"pairs": len(pairs), "rejected": rejected.counts, "truncated": rejected.truncated,
            "loss_type": cfg.loss_type, "label_smoothing": cfg.label_smoothing, "reference": cfg.reference, **lora_info}
    if cfg.reference == "live":
        info["reference_source"] = "adapters-disabled" if from_policy else "frozen-copy"
    if ref_model is not None:  # what the live reference costs this rank (a partition of it under ZeRO-3)
        info["reference_elements_on_rank0"] = elements_held(ref_model)
    return model, task, info


main = finetune_main("dpo", build)

if __name__ == "__main__":
    raise SystemExit(main())

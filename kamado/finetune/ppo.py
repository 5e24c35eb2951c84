"""RLHF on sampled rollouts: PPO (Schulman et al. 2017, as in Ouyang et al. 2022 / DeepSpeed-Chat step 3) and
GRPO (Shao et al. 2024), on DeepSpeed engines with train/'s checkpoint and metrics helpers.

PPO: a policy engine, a value engine (an LM with a per-token scalar head, started from the policy or, as in
DeepSpeed-Chat, from the reward model: `value_from`), a frozen reference policy and a reward (a rule, or the reward
stage's model). Per step: sample responses, score them, per-token reward = -kl_coef·(log π - log π_ref) plus the
(whitened) score on the last token, GAE advantages (whitened), then `ppo_epochs` passes over the rollouts, each in
`minibatches` optimizer updates of the clipped policy loss and the clipped value loss. KL coefficient fixed or
adaptive. The frozen models are ZeRO-3 inference engines under ZeRO-3 (finetune/frozen.py).
GRPO: `group_size` samples per prompt, advantage = (score - group mean) / group std for every token of a
response, clipped surrogate plus kl_coef · the k3 KL estimate to the reference in the loss; no value model.

This needs its own loop (sampling, several models), not train/loop.py; a step here is one batch of rollouts.
Rollouts are reproducible: the sampling seed is a function of (seed, step, rank), so a resumed run samples
what the straight run would have.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from kamado.finetune.data import ASSISTANT_HEADER, BOS, BadRecord, Rejected, read_records, record_messages, render_segments
from kamado.finetune.frozen import frozen_model

# ------------------------------------------------------------------ prompts and rewards


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


# ------------------------------------------------------------------ math (pure functions, tested)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over response tokens (right-padded; mask 1 on real tokens). The value
    after the last token is 0 (the episode ends). Returns (advantages, returns)."""
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_v = values[:, t + 1] * mask[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def clipped_policy_loss(logp, old_logp, adv, mask, clip: float) -> torch.Tensor:
    ratio = torch.exp(logp - old_logp)
    return masked_mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)), mask)


def clipped_value_loss(v, old_v, returns, mask, clip: float) -> torch.Tensor:
    v_clipped = old_v + (v - old_v).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((v - returns) ** 2, (v_clipped - returns) ** 2), mask)


def k3_kl(logp, ref_logp) -> torch.Tensor:
    """Schulman's unbiased, non-negative KL(π‖π_ref) estimate per token (GRPO's KL term)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def group_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    g = scores.view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).view(-1)


class AdaptiveKL:
    """Ziegler et al. 2019: move the coefficient so the observed KL tracks the target."""

    def __init__(self, coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n: int) -> None:
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.value *= 1 + error * n / self.horizon


# ------------------------------------------------------------------ the trainer


# Every collective here reduces a tensor on the rank's device (the engine's): NCCL rejects CPU tensors, so a
# tensor made without `device=` works under gloo and fails on GPUs (tests/finetune/test_ppo_collectives.py).
def _all_mean(values: list[float], world: int, device) -> list[float]:
    """The mean over ranks of a few floats (step statistics), one all-reduce."""
    x = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(x)
    return (x / world).float().tolist()


def _any_rank(raised: bool, device) -> bool:
    """Whether any rank raised its flag (a stop signal): every rank agrees, so all save and stop together."""
    flag = torch.tensor([1.0 if raised else 0.0], device=device)
    dist.all_reduce(flag)
    return flag.item() > 0


def whiten_global(x: torch.Tensor, mask: torch.Tensor | None, world: int, shift_mean: bool = True) -> torch.Tensor:
    """Normalise over every rank's batch (masked entries excluded): rewards and advantages see one distribution."""
    m = torch.ones_like(x) if mask is None else mask
    stats = torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()]).double()
    if world > 1:
        dist.all_reduce(stats)
    mean = stats[0] / stats[2]
    var = (stats[1] / stats[2] - mean**2).clamp(min=0)
    out = (x - mean) / torch.sqrt(var + 1e-8) if shift_mean else (x - mean) / torch.sqrt(var + 1e-8) + mean
    return out.float() * m


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


def ppo_lr_multiplier(cfg, updates_per_step: int):
    """train/schedule's multiplier over PPO steps: the scheduler advances once per optimizer update, and a PPO step
    makes ppo_epochs × minibatches of them, so warmup and decay are counted in PPO steps as the recipe says."""
    from kamado.train.schedule import lr_multiplier

    per_step = lr_multiplier(cfg)
    return lambda update: per_step(update // updates_per_step)


def minibatch_slices(n: int, k: int) -> list[slice]:
    """k contiguous, nearly equal slices of n rollouts (GRPO groups stay together when n is a multiple of k·group)."""
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


class PPOTrainer:
    """Attributes engine / device / ckpt_dir / cfg / task are what train.worker.export_final reads."""

    def __init__(self, cfg, ws, tokenizer, env, device):
        import deepspeed

        from kamado.finetune.data import write_rejections
        from kamado.train.checkpoint import CheckpointManager
        from kamado.train.data import SampleOrder
        from kamado.train.dsconfig import deepspeed_config
        from kamado.train.loop import StopFlag
        from kamado.train.model import load_model

        self.cfg, self.ws, self.tok, self.env, self.device = cfg, ws, tokenizer, env, device
        self.grpo = cfg.algorithm == "grpo"
        self.task = None
        self.out_dir = ws.stage_dir("ppo")
        max_prompt = max(8, cfg.seq_len - cfg.max_new_tokens)
        self.prompts, self.rejected = load_prompts(cfg.data, tokenizer, max_prompt)
        if not self.prompts:
            raise ValueError(f"ppo: no usable prompts in {cfg.data} (rejected: {self.rejected.counts})")
        rollouts = cfg.micro_batch_size * (cfg.group_size if self.grpo else 1)
        if cfg.minibatches > rollouts:
            raise ValueError(f"ppo.minibatches {cfg.minibatches} exceeds the {rollouts} rollouts per rank per step "
                             f"(micro_batch_size{' × group_size' if self.grpo else ''})")
        if env.rank == 0:
            write_rejections(self.out_dir / "data_report.json", self.rejected, len(self.prompts))
        self.order = SampleOrder(len(self.prompts), cfg.seed)
        self.stops = stop_token_ids(tokenizer, cfg.stop_text)
        source = ws.model_source("ppo")
        self.source = source
        policy = load_model(source).to(device)
        self.ref = frozen_model(load_model(source), cfg, env.world_size, device)
        ds = deepspeed_config(cfg, env.world_size, "ppo")
        if env.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "deepspeed_config.json").write_text(json.dumps(ds, indent=2))
        multiplier = ppo_lr_multiplier(cfg, cfg.ppo_epochs * cfg.minibatches)

        def engine(model, lr):
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                    betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
            return deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds)[0]

        self.engine = engine(policy, cfg.lr)
        ident = {"world_size": env.world_size, "zero_stage": cfg.zero_stage, "algorithm": cfg.algorithm}
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.checkpoints = CheckpointManager(self.ckpt_dir, cfg.keep_checkpoints, env.rank, ident)
        self.value = None
        self.value_source = None
        if not self.grpo:
            from_reward = cfg.value_from == "reward" or (cfg.value_from == "auto" and "reward" in ws.recipe.stages)
            self.value_source = ws.stage_dir("reward") / "hf" if from_reward else source
            critic = load_value_model(self.value_source, from_reward).to(device)
            self.value = engine(critic, cfg.value_lr or cfg.lr)
            self.value_checkpoints = CheckpointManager(self.out_dir / "value_checkpoints", cfg.keep_checkpoints, env.rank, ident)
        if cfg.reward == "model":
            self.reward = ModelReward(ws.stage_dir("reward") / "hf", tokenizer, device, cfg, env.world_size)
        else:
            self.reward = SuffixReward(tokenizer, cfg.reward_suffix)
        self.kl = AdaptiveKL(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
        self.step = 0
        self.stop = StopFlag()

    # -------------------------------------------------------------- rollouts
    def _prompts_for_step(self) -> list[list[int]]:
        from kamado.train.data import batch_indices

        idx = batch_indices(self.step, 0, 1, self.env.rank, self.env.world_size, self.cfg.micro_batch_size)
        prompts = [self.prompts[self.order(i)] for i in idx]
        return [p for p in prompts for _ in range(self.cfg.group_size)] if self.grpo else prompts

    @torch.no_grad()
    def rollout(self, prompts: list[list[int]]) -> dict:
        cfg, pad = self.cfg, self.tok.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: every response starts at column `width`
            ids[i, width - len(p):], attn[i, width - len(p):] = torch.tensor(p), 1
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.step * 1009 + self.env.rank)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        module = self.engine.module
        module.eval()
        out = module.generate(input_ids=ids.to(self.device), attention_mask=attn.to(self.device), do_sample=True,
                              temperature=cfg.temperature, top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
                              pad_token_id=pad, eos_token_id=self.tok.eos_token_id,
                              synced_gpus=cfg.zero_stage == 3 and self.env.world_size > 1).cpu()
        module.train()
        responses = []
        for row in out[:, width:].tolist():
            resp = []
            for t in row:  # a response ends at EOS or at the first stop token (both kept)
                resp.append(t)
                if t in self.stops:
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
        return {"input_ids": seq.to(self.device), "attention_mask": full_attn.to(self.device),
                "position_ids": (full_attn.cumsum(-1) - 1).clamp(min=0).to(self.device),
                "mask": mask.to(self.device), "prompt_width": width, "prompts": prompts, "responses": responses}

    def _logps(self, model, b: dict) -> torch.Tensor:
        w, r = b["prompt_width"], b["mask"].shape[1]
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                       use_cache=False).logits[:, w - 1 : w - 1 + r].float() / self.cfg.temperature
        return torch.gather(logits.log_softmax(-1), 2, b["input_ids"][:, w : w + r].unsqueeze(-1)).squeeze(-1)

    def _values(self, model, b: dict) -> torch.Tensor:
        w, r = b["prompt_width"], b["mask"].shape[1]  # the value of the state before each response token
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"])
        return out.logits[:, w - 1 : w - 1 + r, 0].float()

    # -------------------------------------------------------------- one step
    def train_step(self) -> dict:
        cfg, world = self.cfg, self.env.world_size
        b = self.rollout(self._prompts_for_step())
        mask = b["mask"]
        score = self.reward(b["prompts"], b["responses"]).to(self.device)
        with torch.no_grad():
            self.engine.module.eval()
            old_logp = self._logps(self.engine, b)
            self.engine.module.train()
            ref_logp = self._logps(self.ref, b)
        kl_tok = (old_logp - ref_logp) * mask
        stats = {"reward": score.mean().item(), "kl": (kl_tok.sum(1)).mean().item(), "response_len": mask.sum(1).mean().item()}
        if self.grpo:
            adv = group_advantages(score, cfg.group_size).unsqueeze(1).expand_as(mask) * mask
        else:
            with torch.no_grad():
                old_v = self._values(self.value, b) * mask
            s = whiten_global(score, None, world) if cfg.whiten_rewards else score
            rewards = -self.kl.value * kl_tok
            last = (mask.sum(1) - 1).clamp(min=0).long()
            rewards[torch.arange(len(last)), last] += s
            adv, returns = gae(rewards, old_v, mask, cfg.gamma, cfg.lam)
            adv = whiten_global(adv, mask, world)
        slices = minibatch_slices(len(mask), cfg.minibatches)
        for _ in range(cfg.ppo_epochs):
            policy_losses, value_losses = [], []
            for sl in slices:  # one optimizer update per minibatch of rollouts
                mb, m = _rows(b, sl), mask[sl]
                logp = self._logps(self.engine, mb)
                pg = clipped_policy_loss(logp, old_logp[sl], adv[sl], m, cfg.clip_range)
                loss = pg + cfg.kl_coef * masked_mean(k3_kl(logp, ref_logp[sl]), m) if self.grpo else pg
                self.engine.backward(loss)
                self.engine.step()
                policy_losses.append(pg.item())
                if not self.grpo:
                    v = self._values(self.value, mb)
                    vl = clipped_value_loss(v, old_v[sl], returns[sl], m, cfg.value_clip)
                    self.value.backward(cfg.vf_coef * vl)
                    self.value.step()
                    value_losses.append(vl.item())
            stats["policy_loss"] = sum(policy_losses) / len(policy_losses)  # the last epoch's, over its minibatches
            if value_losses:
                stats["value_loss"] = sum(value_losses) / len(value_losses)
        stats["tokens"] = float(b["attention_mask"].sum().item())
        keys = sorted(stats)
        reduced = _all_mean([stats[k] for k in keys], world, self.device)
        stats = dict(zip(keys, reduced))
        if cfg.adaptive_kl and not self.grpo:
            self.kl.update(stats["kl"], len(mask) * world)
        stats["kl_coef"] = self.kl.value
        return stats

    def save(self) -> None:
        client = {"step": self.step, "kl_coef": self.kl.value}
        # the value model first and unpruned: the policy's `latest` then commits the pair, and a kill in between
        # leaves the value checkpoint of every step the policy can resume from
        if self.value is not None:
            self.value_checkpoints.save(self.value, self.step, client, prune=False)
        self.checkpoints.save(self.engine, self.step, client)
        if self.value is not None:
            self.value_checkpoints.prune()

    def run(self) -> dict:
        from kamado.train.metrics import MetricsWriter, plot_loss_curve

        cfg, env = self.cfg, self.env
        if env.rank == 0:  # a previous run's stop marker; this run writes its own if it stops too
            (self.out_dir / "STOPPED.json").unlink(missing_ok=True)
        client = self.checkpoints.load(self.engine)
        if client is not None:
            if self.value is not None:
                self.value_checkpoints.load(self.value, tag=self.checkpoints.loaded_tag)
            self.step, self.kl.value = int(client["step"]), float(client["kl_coef"])
            if env.rank == 0:
                print(f"[kamado] ppo: resumed at step {self.step}", flush=True)
        metrics = MetricsWriter(self.out_dir, env.rank == 0, resume_step=self.step)
        rewards, stopped = [], None
        while self.step < cfg.max_steps:
            t0 = time.time()
            stats = self.train_step()
            self.step += 1
            rewards.append(stats["reward"])
            if env.rank == 0:
                tok_s = stats["tokens"] * env.world_size / max(time.time() - t0, 1e-9)
                record = {"step": self.step, "loss": round(stats["policy_loss"], 6), "lr": self.engine.get_lr()[0],
                          "tokens_per_s": round(tok_s, 1), "time": time.time(),
                          **{k: round(v, 6) for k, v in stats.items() if k != "policy_loss"}}
                metrics.write(record)
                if self.step % cfg.log_every == 0 or self.step in (1, cfg.max_steps):
                    print(f"[{cfg.algorithm}] step {self.step}/{cfg.max_steps} reward {stats['reward']:.3f} kl {stats['kl']:.4f} "
                          f"len {stats['response_len']:.1f} loss {stats['policy_loss']:.4f}", flush=True)
            if _any_rank(self.stop.raised, self.device):
                stopped = "signal"
                self.save()
                if env.rank == 0:
                    from kamado.durable import write_atomic

                    write_atomic(self.out_dir / "STOPPED.json", json.dumps({"reason": stopped, "step": self.step}))
                break
            if self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps:
                self.save()
        if not stopped:
            self.save()
        if env.rank == 0:
            metrics.close()
            plot_loss_curve(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png", f"{cfg.algorithm} policy loss")
        k = max(1, min(5, len(rewards) // 2))
        return {"steps": self.step, "stopped": stopped, "first_rewards_mean": _mean(rewards[:k]), "last_rewards_mean": _mean(rewards[-k:])}


def _rows(b: dict, sl: slice) -> dict:
    """Rows `sl` of a rollout batch (the per-row tensors; the prompt width is shared)."""
    return {**{k: b[k][sl] for k in ("input_ids", "attention_mask", "position_ids", "mask")}, "prompt_width": b["prompt_width"]}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run(workdir: str) -> int:
    start = time.time()
    from kamado.train.worker import setup_rank

    rank = setup_rank("ppo", workdir)  # rendezvous, device, process group, recipe, seed, tokenizer: as run_worker
    from kamado.train.loop import STOPPED_EXIT_CODE
    from kamado.train.worker import export_final

    env, device, backend, ws, cfg, tokenizer = rank.env, rank.device, rank.backend, rank.ws, rank.cfg, rank.tokenizer
    trainer = PPOTrainer(cfg, ws, tokenizer, env, device)
    if env.rank == 0:
        print(f"[kamado] ppo: {cfg.algorithm}, {len(trainer.prompts)} prompts, reward={cfg.reward}, world size {env.world_size} "
              f"({backend}), ZeRO-{cfg.zero_stage}", flush=True)
    result = trainer.run()
    if result["stopped"]:
        dist.destroy_process_group()
        return STOPPED_EXIT_CODE
    export_final(trainer, ws, "ppo", tokenizer, env)
    if env.rank == 0:
        summary = {**result, "algorithm": cfg.algorithm, "reward": cfg.reward, "prompts": len(trainer.prompts),
                   "rejected": trainer.rejected.counts, "world_size": env.world_size, "zero_stage": cfg.zero_stage,
                   "source": str(trainer.source), "value_source": str(trainer.value_source) if trainer.value_source else None,
                   "ppo_epochs": cfg.ppo_epochs, "minibatches": cfg.minibatches, "seconds": round(time.time() - start, 1)}
        (ws.stage_dir("ppo") / "result.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    dist.barrier()
    dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m kamado.finetune.ppo WORKDIR", file=sys.stderr)
        return 2
    return run(argv[0])


if __name__ == "__main__":
    raise SystemExit(main())

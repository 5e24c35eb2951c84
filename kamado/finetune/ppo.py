"""RLHF on sampled rollouts: PPO (Schulman et al. 2017, as in Ouyang et al. 2022 / DeepSpeed-Chat step 3) and
GRPO (Shao et al. 2024), on DeepSpeed engines, run by the training loop's StepLoop (train/steploop.py): resume, stop
agreement, checkpoints and reporting are the loop's; a step here is one batch of rollouts (the rollout hook).

PPO: a policy engine, a value engine (an LM with a per-token scalar head, started from the policy or, as in
DeepSpeed-Chat, from the reward model: `value_from`), a frozen reference policy and a reward (a rule, or the reward
stage's model). Per step: sample responses, score them, per-token reward = -kl_coef·(log π - log π_ref) plus the
(whitened) score on the last token, GAE advantages (whitened), then `ppo_epochs` passes over the rollouts, each in
`minibatches` optimizer updates of the clipped policy loss and the clipped value loss. KL coefficient fixed or
adaptive. The frozen models are ZeRO-3 inference engines under ZeRO-3 (finetune/frozen.py).
GRPO: `group_size` samples per prompt, advantage = (score - group mean) / group std for every token of a
response, clipped surrogate plus kl_coef · the k3 KL estimate to the reference in the loss; no value model.

The math is in ppo_losses.py, sampling, rewards and the value model in ppo_rollout.py. Rollouts are
reproducible: the sampling seed is a function of (seed, step, rank), so a resumed run samples what the straight
run would have.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from kamado.finetune.frozen import frozen_model
from kamado.finetune.ppo_losses import (AdaptiveKL, all_mean, clipped_policy_loss, clipped_value_loss, gae,
                                        group_advantages, k3_kl, masked_mean, minibatch_slices, whiten_global)
from kamado.finetune.ppo_rollout import (ModelReward, SuffixReward, load_prompts, load_value_model, response_logps,
                                         response_values, rows, sample_rollouts, stop_token_ids)
from kamado.train.callbacks import StepMetrics
from kamado.train.steploop import PendingStep, StepLoop, StepOutput


def ppo_lr_multiplier(cfg, updates_per_step: int):
    """train/schedule's multiplier over PPO steps: the scheduler advances once per optimizer update, and a PPO step
    makes ppo_epochs × minibatches of them, so warmup and decay are counted in PPO steps as the recipe says."""
    from kamado.train.schedule import lr_multiplier

    per_step = lr_multiplier(cfg)
    return lambda update: per_step(update // updates_per_step)


class PPOTrainer(StepLoop):
    """Attributes engine / device / ckpt_dir / cfg / checkpoints are what train.worker.export_final reads."""

    name = "ppo"

    def __init__(self, cfg, ws, tokenizer, env, device):
        import deepspeed

        from kamado.finetune.data import write_rejections
        from kamado.train.checkpoint import CheckpointManager
        from kamado.train.data import SampleOrder
        from kamado.train.dsconfig import deepspeed_config
        from kamado.train.model import load_model

        super().__init__(cfg, ws.stage_dir("ppo"), env, device)
        self.ws, self.tok = ws, tokenizer
        self.grpo = cfg.algorithm == "grpo"
        self.plot_title = f"{cfg.algorithm} policy loss"
        self.task = None
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
        self.rewards: list[float] = []  # each step's mean reward over ranks, for the result

    # -------------------------------------------------------------- the rollout step
    def _prompts_for_step(self) -> list[list[int]]:
        from kamado.train.data import batch_indices

        idx = batch_indices(self.step, 0, 1, self.env.rank, self.env.world_size, self.cfg.micro_batch_size)
        prompts = [self.prompts[self.order(i)] for i in idx]
        return [p for p in prompts for _ in range(self.cfg.group_size)] if self.grpo else prompts

    def rollout(self, prompts: list[list[int]]) -> dict:
        cfg = self.cfg
        return sample_rollouts(self.engine.module, prompts, self.tok, self.stops, cfg,
                               cfg.seed * 100_003 + self.step * 1009 + self.env.rank, self.device,
                               synced_gpus=cfg.zero_stage == 3 and self.env.world_size > 1)

    def train_step(self) -> StepOutput:
        cfg, world, temp = self.cfg, self.env.world_size, self.cfg.temperature
        b = self.rollout(self._prompts_for_step())
        mask = b["mask"]
        score = self.reward(b["prompts"], b["responses"]).to(self.device)
        with torch.no_grad():
            self.engine.module.eval()
            old_logp = response_logps(self.engine, b, temp)
            self.engine.module.train()
            ref_logp = response_logps(self.ref, b, temp)
        kl_tok = (old_logp - ref_logp) * mask
        # device scalars, this rank's: the loop reduces them over ranks at log steps
        stats: dict[str, Any] = {"reward": score.mean(), "kl": kl_tok.sum(1).mean(), "response_len": mask.sum(1).mean()}
        if self.grpo:
            adv = group_advantages(score, cfg.group_size).unsqueeze(1).expand_as(mask) * mask
        else:
            with torch.no_grad():
                old_v = response_values(self.value, b) * mask
            s = whiten_global(score, None, world) if cfg.whiten_rewards else score
            rewards = -self.kl.value * kl_tok
            last = (mask.sum(1) - 1).clamp(min=0).long()
            rewards[torch.arange(len(last)), last] += s
            adv, returns = gae(rewards, old_v, mask, cfg.gamma, cfg.lam)
            adv = whiten_global(adv, mask, world)
        slices = minibatch_slices(len(mask), cfg.minibatches)
        for _ in range(cfg.ppo_epochs):
            policy_loss = torch.zeros((), dtype=torch.float64, device=self.device)
            value_loss = torch.zeros((), dtype=torch.float64, device=self.device)
            for sl in slices:  # one optimizer update per minibatch of rollouts
                mb, m = rows(b, sl), mask[sl]
                logp = response_logps(self.engine, mb, temp)
                pg = clipped_policy_loss(logp, old_logp[sl], adv[sl], m, cfg.clip_range)
                loss = pg + cfg.kl_coef * masked_mean(k3_kl(logp, ref_logp[sl]), m) if self.grpo else pg
                self.engine.backward(loss)
                self.engine.step()
                policy_loss = policy_loss + pg.detach().to(torch.float64)
                if not self.grpo:
                    v = response_values(self.value, mb)
                    vl = clipped_value_loss(v, old_v[sl], returns[sl], m, cfg.value_clip)
                    self.value.backward(cfg.vf_coef * vl)
                    self.value.step()
                    value_loss = value_loss + vl.detach().to(torch.float64)
            stats["policy_loss"] = policy_loss / len(slices)  # the last epoch's, over its minibatches
            if not self.grpo:
                stats["value_loss"] = value_loss / len(slices)
        stats["tokens"] = b["attention_mask"].sum()
        if cfg.adaptive_kl and not self.grpo:  # the coefficient follows the KL every step: a read here
            self.kl.update(all_mean([stats["kl"]], world, self.device)[0], len(mask) * world)
        values = {"loss": stats.pop("policy_loss"), "tokens": stats.pop("tokens"), **{k: stats[k] for k in sorted(stats)}}
        return StepOutput(values, host={"kl_coef": self.kl.value})

    # -------------------------------------------------------------- checkpoints
    def save_state(self) -> str:
        client = {"step": self.step, "kl_coef": self.kl.value}
        # the value model first and unpruned: the policy's `latest` then commits the pair, and a kill in between
        # leaves the value checkpoint of every step the policy can resume from
        if self.value is not None:
            self.value_checkpoints.save(self.value, self.step, client, prune=False)
        tag = self.checkpoints.save(self.engine, self.step, client)
        if self.value is not None:
            self.value_checkpoints.prune()
        return tag

    def load_state(self) -> None:
        client = self.checkpoints.load(self.engine)
        if client is None:
            return
        if self.value is not None:
            self.value_checkpoints.load(self.value, tag=self.checkpoints.loaded_tag)
        self.step, self.kl.value = int(client["step"]), float(client["kl_coef"])
        if self.env.rank == 0:
            print(f"[kamado] ppo: resumed at step {self.step}", flush=True)

    # -------------------------------------------------------------- reporting
    def current_lr(self) -> float:
        return self.engine.get_lr()[0]

    def record(self, p: PendingStep, values: dict[str, float], grad_norm: float | None, tokens: int) -> dict[str, Any]:
        v = {k: float(np.float32(x)) for k, x in values.items()}  # the float32 means PPO has always logged
        self.rewards.append(v["reward"])
        tok_s = v["tokens"] * self.env.world_size / max(p.host["seconds"], 1e-9)
        record = {"step": p.step, "loss": round(v["loss"], 6), "lr": p.host["lr"], "tokens_per_s": round(tok_s, 1),
                  "time": p.host["time"], **{k: round(x, 6) for k, x in v.items() if k != "loss"},
                  "kl_coef": round(p.host["kl_coef"], 6)}
        if "checkpoint_seconds" in p.host:
            record["checkpoint_seconds"] = p.host["checkpoint_seconds"]
        return record

    def console_line(self, m: StepMetrics) -> str:
        r = m.record
        return (f"[{self.cfg.algorithm}] step {m.step}/{self.cfg.max_steps} reward {r['reward']:.3f} kl {r['kl']:.4f} "
                f"len {r['response_len']:.1f} loss {r['loss']:.4f}")


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run(workdir: str) -> int:
    start = time.time()
    from kamado.train.worker import setup_rank

    rank = setup_rank("ppo", workdir)  # rendezvous, device, process group, recipe, seed, tokenizer: as run_worker
    from kamado.train.steploop import STOPPED_EXIT_CODE
    from kamado.train.worker import export_final

    env, device, backend, ws, cfg, tokenizer = rank.env, rank.device, rank.backend, rank.ws, rank.cfg, rank.tokenizer
    trainer = PPOTrainer(cfg, ws, tokenizer, env, device)
    if env.rank == 0:
        print(f"[kamado] ppo: {cfg.algorithm}, {len(trainer.prompts)} prompts, reward={cfg.reward}, world size {env.world_size} "
              f"({backend}), ZeRO-{cfg.zero_stage}", flush=True)
    result = trainer.run()
    if result.stopped:
        dist.destroy_process_group()
        return STOPPED_EXIT_CODE
    export_final(trainer, ws, "ppo", tokenizer, env)
    if env.rank == 0:
        k = max(1, min(5, len(trainer.rewards) // 2))
        summary = {"steps": result.steps, "stopped": result.stopped, "first_rewards_mean": _mean(trainer.rewards[:k]),
                   "last_rewards_mean": _mean(trainer.rewards[-k:]), "checkpoint_seconds": result.checkpoint_seconds,
                   "algorithm": cfg.algorithm, "reward": cfg.reward, "prompts": len(trainer.prompts),
                   "rejected": trainer.rejected.counts, "world_size": env.world_size, "zero_stage": cfg.zero_stage,
                   "source": str(trainer.source), "value_source": str(trainer.value_source) if trainer.value_source else None,
                   "ppo_epochs": cfg.ppo_epochs, "minibatches": cfg.minibatches, "seconds": round(time.time() - start, 1)}
        from kamado.durable import write_atomic

        write_atomic(ws.stage_dir("ppo") / "result.json", json.dumps(summary, indent=2, ensure_ascii=False))
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

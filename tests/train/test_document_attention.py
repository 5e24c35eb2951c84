"""Document attention for packed windows: the loss of a packed window equals the token-weighted losses of its
documents run alone (fp32, real transformers Llama, SDPA with the block-causal mask); the positions and the
FlashAttention varlen boundaries; the task on real token shards; and a short pretrain run with the key on."""

import json

import numpy as np
import pytest
import torch

from kamado.tokenizer.encode import shard_digest, token_dtype, write_token_shard
from kamado.train.attention import SDPA, document_batch, document_position_ids, model_inputs, varlen_kwargs
from kamado.train.data import PretrainTask, causal_lm_loss
from kamado.train.model import PRESETS, build_model, llama_config

EOS, VOCAB = 2, 300


def tiny_model():
    torch.manual_seed(0)
    model = build_model(llama_config(PRESETS["tiny"], VOCAB, 1, EOS, 3))
    model.set_attn_implementation(SDPA)
    return model.eval()


def window(doc_lengths: list[int], tail: int, seed: int) -> torch.Tensor:
    """seq_len + 1 tokens: whole documents (each ending with EOS), then the start of one more."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in doc_lengths:
        parts += [*rng.integers(4, VOCAB, size=n - 1).tolist(), EOS]
    parts += rng.integers(4, VOCAB, size=tail).tolist()
    return torch.tensor(parts)


def documents_alone_loss(model, input_ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Each document of each row run on its own; the summed cross-entropy over all scored tokens / their count."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, lab in zip(input_ids, labels):
            cuts = [0, *[i + 1 for i in range(len(ids)) if ids[i] == EOS and i + 1 < len(ids)], len(ids)]
            for a, b in zip(cuts, cuts[1:]):
                logits = model(input_ids=ids[None, a:b]).logits[0].float()
                total += torch.nn.functional.cross_entropy(logits, lab[a:b], ignore_index=-100, reduction="sum").item()
                count += int((lab[a:b] != -100).sum())
    return total / count


def test_document_packed_window_loss_equals_documents_run_alone():
    model = tiny_model()
    rows = torch.stack([window([7, 12, 5], tail=9, seed=1), window([20, 3], tail=10, seed=2)])  # 34 tokens each
    batch = document_batch(rows[:, :-1], rows[:, 1:], EOS, SDPA)
    with torch.no_grad():
        packed = causal_lm_loss(model, batch, model_inputs(batch, SDPA)).item()
        plain = causal_lm_loss(model, {"input_ids": rows[:, :-1], "labels": batch["labels"]}).item()
    alone = documents_alone_loss(model, batch["input_ids"], batch["labels"])
    assert abs(packed - alone) <= 1e-5, (packed, alone)
    assert abs(plain - alone) > 1e-3  # without document attention the earlier documents leak in


def test_document_positions_labels_and_varlen_boundaries():
    ids = torch.tensor([[5, 6, EOS, 7, EOS, 8, 9, 10], [4, EOS, 5, 6, 7, 8, EOS, 9]])
    assert document_position_ids(ids, EOS).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4, 0]]
    labels = torch.arange(16).reshape(2, 8)
    batch = document_batch(ids, labels, EOS, "flash_attention_2")
    assert batch["labels"][0].tolist() == [0, 1, -100, 3, -100, 5, 6, 7]  # an EOS position does not predict the next doc
    # the flattened (B·S) batch: documents start at 0, 3, 5 | 8, 10, 15 and the last ends at 16
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 8, 10, 15, 16] and batch["max_length_q"] == 5
    assert varlen_kwargs(document_position_ids(ids, EOS))["cu_seq_lens_k"].dtype == torch.int32


def write_tokens(tokens_dir, docs: list[list[int]], eos_id: int = EOS):
    tokens_dir.mkdir(parents=True)
    dtype = token_dtype(VOCAB)
    entries = []
    for split in ("train", "val"):
        name = f"{split}-00000.bin"
        n_tok, n_docs = write_token_shard(tokens_dir / name, docs, eos_id, dtype)
        entries.append({"file": name, "split": split, "tokens": n_tok, "docs": n_docs, "source": "test",
                        "bytes": (tokens_dir / name).stat().st_size, "digest": shard_digest(tokens_dir / name)})
    index = {"dtype": dtype.name, "eos_id": eos_id, "vocab_size": VOCAB, "shards": entries}
    (tokens_dir / "index.json").write_text(json.dumps(index))
    return tokens_dir


def test_document_attention_task_on_real_shards(tmp_path):
    rng = np.random.default_rng(3)
    docs = [rng.integers(4, VOCAB, size=int(n)).tolist() for n in rng.integers(3, 25, size=60)]
    tokens = write_tokens(tmp_path / "tokens", docs)
    model = tiny_model()
    task = PretrainTask([(tokens, 1.0)], seq_len=32, seed=0, document_attention=(EOS, SDPA))
    plain = PretrainTask([(tokens, 1.0)], seq_len=32, seed=0, prefetch=False)
    for step in range(4):  # prefetched batches are the ones built directly
        idx = list(range(4 * step, 4 * step + 4))
        batch, reference = task.batch(idx), plain.batch(idx)
        assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert task._prefetch.hits == 2 and task._prefetch.misses == 2  # the stride is known from the 2nd call on
    with torch.no_grad():
        loss, _ = task.loss(model, batch)
    assert abs(loss.item() - documents_alone_loss(model, batch["input_ids"], batch["labels"])) <= 1e-5
    val = next(task.val_batches(2))
    assert (val["position_ids"] == 0).sum() > 2  # the validation windows are split into documents as well
    with pytest.raises(ValueError, match=r"index.json: eos_id 7 is not the tokenizer's EOS id 2"):
        PretrainTask([(write_tokens(tmp_path / "other", docs, eos_id=7), 1.0)], 32, 0, document_attention=(EOS, SDPA))


@pytest.mark.slow
@pytest.mark.distributed
def test_document_attention_pretrain_run(tmp_path):
    """The real training path: corpus → tokenizer → pretrain (DeepSpeed, 2 CPU ranks) with the key on."""
    from kamado.local import run_stages
    from kamado.stage import Workspace
    from tests.helpers import tiny_recipe

    recipe = tiny_recipe(tmp_path, "pretrain.document_attention=true", "pretrain.max_steps=8", "pretrain.warmup_steps=2",
                         "pretrain.checkpoint_every=1000", "pretrain.log_every=1000")
    run_stages(recipe, ["corpus", "tokenizer", "pretrain"], lambda s: None)
    out = Workspace(recipe).stage_dir("pretrain")
    result = json.loads((out / "result.json").read_text())
    assert result["attention"] == "sdpa (document)"
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 8 and all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["sdpa", "flash_attention_2"])
def test_document_attention_on_gpu(implementation):
    """SDPA with the block mask in fp32 (<= 1e-5) and FlashAttention-2 varlen in bf16 (bf16 tolerance) on a GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if implementation == "flash_attention_2":
        pytest.importorskip("flash_attn")
    dtype, tolerance = (torch.float32, 1e-5) if implementation == SDPA else (torch.bfloat16, 2e-2)
    model = tiny_model().to("cuda", dtype)
    model.set_attn_implementation(implementation)
    rows = torch.stack([window([7, 12, 5], tail=9, seed=1), window([20, 3], tail=10, seed=2)])
    batch = document_batch(rows[:, :-1], rows[:, 1:], EOS, implementation)
    batch = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    with torch.no_grad():
        packed = causal_lm_loss(model, batch, model_inputs(batch, implementation)).item()
    alone = documents_alone_loss(model, batch["input_ids"], batch["labels"])
    assert abs(packed - alone) <= tolerance, (packed, alone)

"""Conversations, the assistant-only loss mask, the stored chat template, packing: on the real tokenizer."""

import pytest
import torch

from kamado.finetune.data import BadRecord, encode_conversation, pack_rows, packed_batch, pad_batch, rendered_text
from kamado.finetune.sft import SFTTask, load_sft_rows, sft_loss
from kamado.train.data import causal_lm_loss
from tests.helpers import write_jsonl

TWO_TURNS = [
    {"role": "user", "content": "日本で一番高い山は何ですか？"},
    {"role": "assistant", "content": "富士山です。"},
    {"role": "user", "content": "二番目に高い山は？"},
    {"role": "assistant", "content": "北岳です。標高は3,193メートルです。"},
]


def _ids(tok, msgs, **kw):
    ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=False, **kw)
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def test_two_turn_mask_is_exactly_the_assistant_tokens(tokenizer):
    inputs, labels, truncated = encode_conversation(tokenizer, TWO_TURNS, max_len=512)
    assert not truncated
    full = _ids(tokenizer, TWO_TURNS)  # the chat template stored with the tokenizer
    assert inputs + labels[-1:] == full  # same ids as the template's own tokenization
    # each assistant turn spans [len(history + generation prompt), len(history + that turn)), its EOS included
    start1 = len(_ids(tokenizer, TWO_TURNS[:1], add_generation_prompt=True))
    end1 = len(_ids(tokenizer, TWO_TURNS[:2]))
    start2 = len(_ids(tokenizer, TWO_TURNS[:3], add_generation_prompt=True))
    end2 = len(full)
    scored_targets = set(range(start1, end1)) | set(range(start2, end2))
    # labels[i] is the target at position i + 1 of the full sequence
    assert {i + 1 for i, t in enumerate(labels) if t != -100} == scored_targets
    assert all(labels[i - 1] == full[i] for i in scored_targets)
    assert full[end1 - 1] == full[end2 - 1] == tokenizer.eos_token_id
    text = tokenizer.decode([t for t in labels if t != -100], skip_special_tokens=True)
    assert text == "富士山です。北岳です。標高は3,193メートルです。"


@pytest.mark.parametrize("msgs", [
    [{"role": "user", "content": "要約してください。", "input": "長い文章。"}, {"role": "assistant", "content": "短い。"}],
    [{"role": "system", "content": "あなたは丁寧な助手です。"}, *TWO_TURNS],
])
def test_rendering_matches_the_stored_template(tokenizer, msgs):
    assert rendered_text(msgs, tokenizer.bos_token, tokenizer.eos_token) == tokenizer.apply_chat_template(msgs, tokenize=False)
    inputs, labels, _ = encode_conversation(tokenizer, msgs, 512)
    assert inputs + labels[-1:] == _ids(tokenizer, msgs)


def test_messages_records_errors_and_truncation(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": TWO_TURNS},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
        {"messages": [*TWO_TURNS[:2], {"role": "user", "content": "続けて。" * 100}, {"role": "assistant", "content": "はい。"}]},
        {"messages": [{"role": "user", "content": "長い。" * 200}, {"role": "assistant", "content": "はい。"}]},
    ])
    first_turn = len(encode_conversation(tokenizer, TWO_TURNS[:2], 512)[0])
    seq_len = first_turn + 8  # the first exchange fits, the second turn does not
    train, val, rejected = load_sft_rows([str(path)], tokenizer, seq_len=seq_len, val_fraction=0.0)
    assert len(train) == 2 and val == []
    assert rejected.counts == {"empty_response": 1, "prompt_longer_than_seq_len": 1}
    assert rejected.truncated == 2  # the first and third: cut at seq_len tokens, their first answer still scored
    assert rejected.where == {"empty_response": [f"{path}:2"], "truncated": [f"{path}:1", f"{path}:3"],
                              "prompt_longer_than_seq_len": [f"{path}:4"]}
    for inputs, labels in train:
        assert len(inputs) == seq_len and any(t != -100 for t in labels)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": TWO_TURNS}, {"messages": [TWO_TURNS[1], TWO_TURNS[0]]}])
    with pytest.raises(BadRecord, match=r"bad.jsonl:2: field 'messages\[0\].role'"):
        load_sft_rows([str(bad)], tokenizer, 64, 0.0)


def test_packing_keeps_examples_independent(tokenizer, tiny_model):
    rows = [encode_conversation(tokenizer, m, 256)[:2] for m in (TWO_TURNS[:2], TWO_TURNS, TWO_TURNS[2:])]
    total = sum(len(r[0]) for r in rows)
    packs = pack_rows(rows, seq_len=total)
    assert [len(p) for p in packs] == [3]
    assert pack_rows(rows, seq_len=len(rows[0][0]) + len(rows[1][0])) == [rows[:2], rows[2:]]
    packed = packed_batch(packs, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = tiny_model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        at = 0
        for x, _ in rows:  # each example alone gives the same logits as inside the packed row
            alone = tiny_model(input_ids=torch.tensor([x])).logits[0]
            assert torch.allclose(logits[at : at + len(x)], alone, atol=1e-5)
            at += len(x)
        # and the loss over the packed row is the token-weighted loss of the examples
        padded = pad_batch(rows, tokenizer.pad_token_id)
        assert sft_loss(tiny_model, packed).item() == pytest.approx(causal_lm_loss(tiny_model, padded).item(), rel=1e-5)


def test_sft_task_packed_batches(tokenizer):
    rows = [encode_conversation(tokenizer, TWO_TURNS, 256)[:2]] * 10
    task = SFTTask(rows, rows[:2], tokenizer.pad_token_id, seed=1, packing_seq_len=256)
    assert len(task.train_rows) < 10  # several examples per packed row
    batch = task.batch([0, 1])
    assert batch["input_ids"].shape[1] <= 256 and "packed" in batch
    assert int(batch["attention_mask"].sum()) == sum(len(r[0]) for i in (0, 1) for r in task.train_rows[task.order(i)])

"""SFT loss mask and DPO loss, on a real SentencePiece/HF tokenizer trained on the sample."""

import math

import pytest
import torch

from kamado.finetune.data import encode_example, format_prompt
from kamado.finetune.dpo import dpo_loss
from kamado.finetune.sft import load_sft_rows
from tests.helpers import write_jsonl


def test_sft_labels_mask_exactly_the_prompt(tokenizer):
    prompt = format_prompt("日本で一番高い山は何ですか？")
    response = "富士山です。"
    inputs, labels = encode_example(tokenizer, prompt, response, max_len=512)
    n_prompt = 1 + len(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # bos + prompt
    resp = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    full = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"] + resp
    assert inputs == full[:-1]
    # labels[i] is the target for position i (the next token): scored exactly where the target is a response token
    assert labels == [-100] * (n_prompt - 1) + resp
    assert tokenizer.decode([t for t in labels if t != -100], skip_special_tokens=True) == response


def test_sft_truncation_and_rejections(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [
        {"instruction": "挨拶してください。", "input": "", "output": "こんにちは。"},
        {"instruction": "空の応答", "input": "", "output": "  "},
        {"instruction": "長い指示。" * 200, "input": "", "output": "はい。"},
    ])
    train, val, rejected = load_sft_rows([str(path)], tokenizer, seq_len=64, val_fraction=0.0)
    assert len(train) == 1 and val == []
    assert rejected.counts == {"empty_response": 1, "prompt_longer_than_seq_len": 1}


def test_sft_missing_field_names_file_and_line(tokenizer, tmp_path):
    from kamado.finetune.data import BadRecord

    path = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "a"}])
    with pytest.raises(BadRecord, match=r"sft.jsonl:2: field 'output'"):
        load_sft_rows([str(path)], tokenizer, 64, 0.0)


def test_dpo_loss_closed_form():
    pol_c, pol_r = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    ref_c, ref_r = torch.tensor([-11.0, -4.5]), torch.tensor([-11.0, -3.5])
    beta = 0.5
    loss, rc, rr = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta)
    margins = [beta * ((-10 + 11) - (-12 + 11)), beta * ((-4 + 4.5) - (-3 + 3.5))]
    expected = sum(-math.log(1 / (1 + math.exp(-m))) for m in margins) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert rc.tolist() == pytest.approx([0.5, 0.25]) and rr.tolist() == pytest.approx([-0.5, 0.25])

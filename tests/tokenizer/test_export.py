"""Hugging Face export: same ids as SentencePiece, fixed special ids, the SFT chat template, loadable offline."""

from __future__ import annotations

import json

import sentencepiece as spm

from kamado.finetune.data import encode_example, format_prompt
from kamado.tokenizer.export import id_mismatches, load_hf
from tests.helpers import EXAMPLES, shared_data
from tests.tokenizer.test_train import TRICKY


def sample_texts() -> list[str]:
    texts = [json.loads(line)["text"] for line in open(EXAMPLES / "corpus" / "prose.jsonl", encoding="utf-8")]
    texts += [json.loads(line)["output"] for line in open(EXAMPLES / "sft" / "instructions.jsonl", encoding="utf-8")]
    return texts + TRICKY + ["<|im_start|>user\nこんにちは<|im_end|>\n", "<|reserved_1|>予約"]


def test_hf_ids_identical_to_sentencepiece(small_model, small_hf):
    sp = spm.SentencePieceProcessor(model_file=str(small_model))
    hf = load_hf(small_hf)
    assert (hf.unk_token_id, hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2, 3)
    for text in sample_texts():
        ids = sp.encode(text)
        assert hf(text, add_special_tokens=False)["input_ids"] == ids, text[:40]
        assert hf.decode(ids) == text
    assert hf("猫")["input_ids"][0] == 1  # BOS added by default, no EOS
    assert (small_hf / "tokenizer.json").is_file() and (small_hf / "tokenizer.model").is_file()
    # a form transformers 4.5x reads too (tests/release/test_portable.py loads a release with 4.57)
    cfg = json.loads((small_hf / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and "extra_special_tokens" not in cfg
    assert [cfg[k] for k in ("unk_token", "bos_token", "eos_token", "pad_token")] == ["<unk>", "<s>", "</s>", "<pad>"]


def test_hf_ids_identical_on_unseen_japanese_evaluation_text(small_model, small_hf):
    """The JGLUE sentences and JSQuAD contexts (real Japanese text the model never saw, rare characters included)."""
    jglue = shared_data("eval", "jglue")
    texts = []
    for line in open(jglue / "jnli-v1.3_valid.json", encoding="utf-8"):
        rec = json.loads(line)
        texts += [rec["sentence1"], rec["sentence2"]]
    squad = json.load(open(jglue / "jsquad-v1.3_valid.json", encoding="utf-8"))["data"]
    texts += [p["context"] for a in squad for p in a["paragraphs"]]
    checked, bad, examples = id_mismatches(small_model, small_hf, texts)
    assert checked == len(texts) > 5000 and bad == 0, examples


def test_chat_template_is_the_sft_prompt(small_hf):
    hf = load_hf(small_hf)
    msgs = [{"role": "user", "content": "日本で一番高い山は？"}]
    bos = hf.bos_token
    assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == bos + format_prompt("日本で一番高い山は？")
    with_input = [{"role": "user", "content": "要約してください。", "input": "長い文章。"}]
    assert hf.apply_chat_template(with_input, tokenize=False, add_generation_prompt=True) == bos + format_prompt("要約してください。", "長い文章。")
    # a full exchange tokenizes to what SFT trains on: [bos] prompt response [eos]
    full = msgs + [{"role": "assistant", "content": "富士山です。"}]
    ids = hf.apply_chat_template(full, tokenize=True, return_dict=False)
    if isinstance(ids, dict):
        ids = ids["input_ids"]
    inputs, labels = encode_example(hf, format_prompt("日本で一番高い山は？"), "富士山です。", max_len=512)
    assert list(ids) == inputs + labels[-1:]

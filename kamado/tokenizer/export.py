"""Export a SentencePiece model as a Hugging Face fast tokenizer and check that ids agree."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import sentencepiece as spm


def export_hf(sp_model: Path, out_dir: Path, chat_template: str | None = None) -> Path:
    """Write tokenizer.json (fast) + tokenizer.model + special tokens (+ a chat template) into out_dir.

    Under transformers 5, `LlamaTokenizer(vocab_file=...)` and `LlamaTokenizer.from_pretrained` mis-convert a
    Unigram model (see shared notes); AutoTokenizer on a folder that holds only tokenizer.model converts it right:
    identity normalizer (" " → "▁", no dummy prefix), user-defined pieces ("\\n", chat tokens) split out first,
    byte fallback. The ids are checked against SentencePiece by `id_mismatches` (the stage refuses a mismatch).
    """
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(sp_model, Path(tmp) / "tokenizer.model")
        tok = AutoTokenizer.from_pretrained(tmp, add_bos_token=True, add_eos_token=False, legacy=False)
        sp = spm.SentencePieceProcessor(model_file=str(sp_model))
        # our models have <pad> (id 3); an extended base without one pads with EOS rather than grow a new id
        tok.pad_token = sp.id_to_piece(sp.pad_id()) if sp.pad_id() >= 0 else tok.eos_token
        tok.model_max_length = 1_000_000
        if chat_template:
            tok.chat_template = chat_template
        out_dir.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out_dir)
    shutil.copy(sp_model, out_dir / "tokenizer.model")
    make_portable(out_dir)
    return out_dir


# Keys transformers 5 writes that transformers 4.x does not understand (a list-valued `extra_special_tokens`
# fails there) or that describe the saving process rather than the tokenizer.
_NOT_PORTABLE = ("backend", "extra_special_tokens", "is_local", "local_files_only", "unk_id", "auto_map")


def make_portable(out_dir: Path, model_max_length: int | None = None) -> dict:
    """Rewrite tokenizer_config.json so transformers 4.5x and 5.x (and vLLM, lm-eval, which pin 4.x) load the
    same tokenizer: the class is `PreTrainedTokenizerFast` (both versions load tokenizer.json as it is; 5.x's
    `TokenizersBackend` is unknown to 4.x, and `LlamaTokenizerFast` would be rebuilt from the SentencePiece
    model in 5.x, mis-converting a Unigram model); special tokens named one by one as strings; the chat template
    inline (4.x before 4.43 reads only this key; chat_template.jinja stays for 5.x); no space clean-up on decode
    (4.x's default would turn "a ." into "a.")."""
    import json

    from kamado.durable import write_atomic

    path = out_dir / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for key in _NOT_PORTABLE:
        cfg.pop(key, None)
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", clean_up_tokenization_spaces=False,
               add_bos_token=True, add_eos_token=False)
    if model_max_length is not None:
        cfg["model_max_length"] = int(model_max_length)
    template = out_dir / "chat_template.jinja"
    if template.is_file() and "chat_template" not in cfg:
        cfg["chat_template"] = template.read_text(encoding="utf-8")
    write_atomic(path, json.dumps(cfg, ensure_ascii=False, indent=2, sort_keys=True))
    return cfg


def load_hf(out_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)


def id_mismatches(sp_model: Path, hf_dir: Path, texts: Iterable[str], batch: int = 256) -> tuple[int, int, list[str]]:
    """Count texts where the HF tokenizer's ids differ from SentencePiece's (no special tokens)."""
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    hf = load_hf(hf_dir)
    texts = list(texts)
    bad = 0
    examples: list[str] = []
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        for text, a, b in zip(chunk, sp.encode(chunk), hf(chunk, add_special_tokens=False)["input_ids"]):
            if a != b:
                bad += 1
                if len(examples) < 5:
                    examples.append(text[:80])
    return len(texts), bad, examples

"""Export a SentencePiece model as a Hugging Face fast tokenizer and check that ids agree."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import sentencepiece as spm


def export_hf(sp_model: Path, out_dir: Path) -> Path:
    """Write tokenizer.json (fast) + tokenizer.model + special tokens into out_dir.

    Under transformers 5, `LlamaTokenizer(vocab_file=...)` and `LlamaTokenizer.from_pretrained` mis-convert a
    Unigram model (see shared notes); AutoTokenizer on a folder that holds only tokenizer.model converts it right.
    """
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(sp_model, Path(tmp) / "tokenizer.model")
        tok = AutoTokenizer.from_pretrained(tmp, add_bos_token=True, add_eos_token=False, legacy=False)
        tok.pad_token = "<pad>"
        tok.model_max_length = 1_000_000
        out_dir.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out_dir)
    shutil.copy(sp_model, out_dir / "tokenizer.model")
    return out_dir


def load_hf(out_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)


def id_mismatches(sp_model: Path, hf_dir: Path, texts: Iterable[str]) -> tuple[int, int, list[str]]:
    """Count texts where the HF tokenizer's ids differ from SentencePiece's (no special tokens)."""
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    hf = load_hf(hf_dir)
    total = bad = 0
    examples: list[str] = []
    for text in texts:
        total += 1
        if sp.encode(text) != hf(text, add_special_tokens=False)["input_ids"]:
            bad += 1
            if len(examples) < 5:
                examples.append(text[:80])
    return total, bad, examples

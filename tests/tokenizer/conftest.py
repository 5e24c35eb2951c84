"""One small SentencePiece model trained on the committed sample (plus a few code lines), shared by the tokenizer
tests so that they stay fast; each test that needs other options trains its own."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from kamado.tokenizer.config import TokenizerConfig
from kamado.tokenizer.train import train_sentencepiece, write_training_text
from tests.helpers import EXAMPLES

CODE = ["def add(a, b):", "    return a + b", "        if a == b:", "            print(a)", "class Foo:", "    pass"]


def sample_docs() -> list[tuple[str, str]]:
    docs = []
    for line in open(EXAMPLES / "corpus" / "prose.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        docs.append(("prose", rec["text"]))
    docs += [("code", "\n".join(CODE)) for _ in range(3)]
    return docs


def train_sample(tmp: Path, cfg: TokenizerConfig, docs=None) -> Path:
    text = tmp / "train.txt"
    write_training_text(docs if docs is not None else sample_docs(), text, cfg)
    return train_sentencepiece(cfg, text, tmp / "spm")


SMALL = TokenizerConfig(vocab_size=2500, special_tokens=["<|im_start|>", "<|im_end|>"], reserved_tokens=2, dedup_lines=False)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    return train_sample(tmp_path_factory.mktemp("spm"), SMALL)


@pytest.fixture(scope="session")
def small_hf(small_model, tmp_path_factory) -> Path:
    from kamado.tokenizer.chat_template import ALPACA_JA
    from kamado.tokenizer.export import export_hf

    return export_hf(small_model, tmp_path_factory.mktemp("hf") / "hf", ALPACA_JA)


def config(**changes) -> TokenizerConfig:
    return replace(SMALL, **changes)

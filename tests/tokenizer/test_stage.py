"""The tokenizer stage with vocabulary extension (a base tokenizer grown with the corpus's Japanese pieces) and with
vocabulary pruning (a larger vocabulary trained, then cut to vocab_size by piece use)."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm

from kamado.recipe import RecipeError
from kamado.local import run_stages
from kamado.stage import Workspace
from kamado.tokenizer.encode import load_index
from kamado.tokenizer.export import load_hf
from tests.helpers import tiny_recipe
from tests.tokenizer.conftest import config, sample_docs, train_sample


def test_stage_extends_a_base_tokenizer_and_keeps_its_ids(tmp_path):
    (tmp_path / "base").mkdir()
    base = train_sample(tmp_path / "base", config(vocab_size=1000, allow_smaller_vocab=True), sample_docs()[::12])
    recipe = tiny_recipe(tmp_path, f"tokenizer.extend_from={base}", "tokenizer.vocab_size=3000")
    run_stages(recipe, ["corpus", "tokenizer"], lambda s: None)
    ws = Workspace(recipe)
    folder = ws.stage_dir("tokenizer")
    ev = json.loads((folder / "eval.json").read_text())
    old = spm.SentencePieceProcessor(model_file=str(base))
    new = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    assert ev["base_vocab_size"] == old.get_piece_size() and ev["added_pieces"] > 1000
    assert ev["vocab_size"] == new.get_piece_size() == old.get_piece_size() + ev["added_pieces"]
    assert all(new.id_to_piece(i) == old.id_to_piece(i) for i in range(old.get_piece_size()))
    assert ev["hf_id_mismatches"].startswith("0/") and ev["round_trip"].split("/")[0] == ev["round_trip"].split("/")[1]
    hf = load_hf(ws.tokenizer_dir())
    assert len(hf) == new.get_piece_size() and hf.pad_token_id == 3 and hf.chat_template
    assert load_index(folder / "tokens")["vocab_size"] == new.get_piece_size()


def test_stage_prunes_a_larger_vocabulary(tmp_path):
    recipe = tiny_recipe(tmp_path, "tokenizer.prune_from_vocab_size=3400", "tokenizer.vocab_size=3000")
    run_stages(recipe, ["corpus", "tokenizer"], lambda s: None)
    ws = Workspace(recipe)
    folder = ws.stage_dir("tokenizer")
    ev = json.loads((folder / "eval.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    assert ev["pruned_from"] == 3400 and ev["pruned_pieces"] == 400 and ev["prune_sample_lines"] > 100
    assert ev["vocab_size"] == sp.get_piece_size() == 3000 and not (folder / "unpruned.model").exists()
    assert ev["hf_id_mismatches"].startswith("0/") and ev["round_trip"].split("/")[0] == ev["round_trip"].split("/")[1]
    assert load_index(folder / "tokens")["vocab_size"] == 3000


def test_prune_keys_are_checked(tmp_path):
    with pytest.raises(RecipeError, match="tokenizer.prune_from_vocab_size"):
        tiny_recipe(tmp_path, "tokenizer.prune_from_vocab_size=2000", "tokenizer.vocab_size=3000")
    with pytest.raises(RecipeError, match="tokenizer.prune_rescoring"):
        tiny_recipe(tmp_path, "tokenizer.prune_from_vocab_size=4000", "tokenizer.prune_rescoring=em")

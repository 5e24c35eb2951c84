"""One chat format (#15): what SFT trains on (kamado.finetune.data) is what the released tokenizer's
`apply_chat_template` gives, for an instruction with `input` and for a chat with a system message, both when
the tokenizer stage stored the template and when the release adds it to a tokenizer that has none."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from kamado.finetune.data import encode_conversation, record_messages, rendered_text
from kamado.release.stage import chat_template
from kamado.local import run_stages
from kamado.stage import Workspace
from tests.helpers import tiny_recipe

WITH_INPUT = {"instruction": "次の文章を要約してください。", "input": "富士山は日本で一番高い山で、標高は3,776メートルです。",
              "output": "富士山は日本一高い山です。"}
WITH_SYSTEM = {"messages": [{"role": "system", "content": "あなたは丁寧な日本語の助手です。"},
                            {"role": "user", "content": "挨拶をしてください。"},
                            {"role": "assistant", "content": "こんにちは。"},
                            {"role": "user", "content": "もう一度。"},
                            {"role": "assistant", "content": "こんにちは、お元気ですか。"}]}


def _same_as_sft(tok, record: dict) -> None:
    msgs = record_messages(record, "test:1")
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == rendered_text(msgs, tok.bos_token, tok.eos_token)
    if "input" in record:  # the input and the default system line for instructions with input are both there
        assert record["input"] in text and "文脈のある入力" in text
    else:
        assert text.startswith(tok.bos_token + msgs[0]["content"])  # the system message replaces the default line
    ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
    inputs, labels, _ = encode_conversation(tok, msgs, 1024)
    assert inputs + labels[-1:] == list(ids["input_ids"] if isinstance(ids, dict) else ids)
    # the generation prompt is exactly SFT's prompt: the released model is asked in the format it learnt
    prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt) and text[len(prompt):] == msgs[-1]["content"] + tok.eos_token


@pytest.fixture(scope="module")
def released_tokenizer(tok_recipe, random_model_dir, tmp_path_factory):
    from tests.release.conftest import make_untrained_release_recipe

    recipe = make_untrained_release_recipe(tok_recipe, random_model_dir, tmp_path_factory.mktemp("chat"))
    run_stages(recipe, ["release"], log=lambda _: None)
    folder = Workspace(recipe).stage_dir("release") / recipe.release.model_name
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


@pytest.mark.parametrize("record", [WITH_INPUT, WITH_SYSTEM], ids=["input", "system"])
def test_sft_rendering_is_the_released_template(released_tokenizer, record):
    _same_as_sft(released_tokenizer, record)


@pytest.mark.parametrize("record", [WITH_INPUT, WITH_SYSTEM], ids=["input", "system"])
def test_the_release_adds_the_same_template_to_a_tokenizer_without_one(tok_recipe, tmp_path, record):
    tok = AutoTokenizer.from_pretrained(str(Workspace(tok_recipe).tokenizer_dir()), local_files_only=True)
    tok.chat_template = None  # as with tokenizer.chat_template=none
    recipe = tiny_recipe(tmp_path)  # stages include sft and dpo: the release adds the template SFT trained on
    tok.chat_template = chat_template(recipe)
    _same_as_sft(tok, record)
    assert chat_template(tiny_recipe(tmp_path, "release.chat_template=false")) is None

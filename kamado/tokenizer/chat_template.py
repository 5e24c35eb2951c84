"""Chat templates shipped with the exported tokenizer (`tokenizer.apply_chat_template`).

`alpaca_ja` renders messages into the Japanese Alpaca-style prompt that kamado's SFT stage trains on
(kamado/finetune/data.py; a test checks both give the same text, so they cannot drift apart): BOS and a system
line (HF templates carry BOS themselves: `apply_chat_template(tokenize=True)` adds no special tokens), then
"### 指示:" (and "### 入力:" when a user message carries an `input` key), then "### 応答:"; an assistant turn
ends with the EOS token, as SFT appends it. A system message replaces the default system line.
"""

from __future__ import annotations

ALPACA_JA = (
    "{%- set ns = namespace(msgs=messages, system='') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system = messages[0]['content'] -%}{%- set ns.msgs = messages[1:] -%}"
    "{%- endif -%}"
    "{%- if not ns.system -%}"
    "{%- if ns.msgs and ns.msgs[0].get('input') -%}"
    "{%- set ns.system = '以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。' -%}"
    "{%- else -%}"
    "{%- set ns.system = '以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。' -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{{ bos_token + ns.system }}"
    "{%- for m in ns.msgs -%}"
    "{%- if m['role'] == 'user' -%}"
    "{{ '\\n\\n### 指示:\\n' + m['content'] }}"
    "{%- if m.get('input') -%}{{ '\\n\\n### 入力:\\n' + m['input'] }}{%- endif -%}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{ '\\n\\n### 応答:\\n' + m['content'] + eos_token }}"
    "{%- else -%}"
    "{{ raise_exception('alpaca_ja chat template: role must be system (first), user or assistant, not ' + m['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n\\n### 応答:\\n' }}{%- endif -%}"
)

TEMPLATES = {"alpaca_ja": ALPACA_JA, "none": None}


def chat_template(name: str) -> str | None:
    if name not in TEMPLATES:
        raise ValueError(f"tokenizer.chat_template: unknown template {name!r} (known: {', '.join(TEMPLATES)})")
    return TEMPLATES[name]

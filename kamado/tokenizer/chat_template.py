"""The one definition of kamado's chat format: the Jinja template shipped with the exported tokenizer
(`tokenizer.apply_chat_template`) and the same format as segments for SFT's loss mask, both built from the
constants below so they cannot drift apart (tests/finetune/test_data.py checks they give the same text and ids).

`alpaca_ja` is the Japanese Alpaca-style prompt of llm-jp-sft and many Japanese instruction sets: BOS and a
system line (HF templates carry BOS themselves: `apply_chat_template(tokenize=True)` adds no special tokens),
then "### 指示:" (and "### 入力:" when a user message carries an `input` key), then "### 応答:"; an assistant
turn ends with the EOS token, as SFT appends it. A system message replaces the default system line.
SFT, DPO and PPO render through `render_segments`; the release ships this template (tokenizer stage, or
release.chat_template when the tokenizer has none); eval's MT-Bench renders with the model's stored template.
"""

from __future__ import annotations

DEFAULT_SYSTEM = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
DEFAULT_SYSTEM_WITH_INPUT = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。"
USER_HEADER, INPUT_HEADER, ASSISTANT_HEADER = "\n\n### 指示:\n", "\n\n### 入力:\n", "\n\n### 応答:\n"
BOS, EOS = object(), object()  # markers for the special-token ids in a segment list


def _lit(text: str) -> str:
    """`text` as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


ALPACA_JA = (
    "{%- set ns = namespace(msgs=messages, system='') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system = messages[0]['content'] -%}{%- set ns.msgs = messages[1:] -%}"
    "{%- endif -%}"
    "{%- if not ns.system -%}"
    "{%- if ns.msgs and ns.msgs[0].get('input') -%}"
    f"{{%- set ns.system = {_lit(DEFAULT_SYSTEM_WITH_INPUT)} -%}}"
    "{%- else -%}"
    f"{{%- set ns.system = {_lit(DEFAULT_SYSTEM)} -%}}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{{ bos_token + ns.system }}"
    "{%- for m in ns.msgs -%}"
    "{%- if m['role'] == 'user' -%}"
    f"{{{{ {_lit(USER_HEADER)} + m['content'] }}}}"
    f"{{%- if m.get('input') -%}}{{{{ {_lit(INPUT_HEADER)} + m['input'] }}}}{{%- endif -%}}"
    "{%- elif m['role'] == 'assistant' -%}"
    f"{{{{ {_lit(ASSISTANT_HEADER)} + m['content'] + eos_token }}}}"
    "{%- else -%}"
    "{{ raise_exception('alpaca_ja chat template: role must be system (first), user or assistant, not ' + m['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    f"{{%- if add_generation_prompt -%}}{{{{ {_lit(ASSISTANT_HEADER)} }}}}{{%- endif -%}}"
)

TEMPLATES = {"alpaca_ja": ALPACA_JA, "none": None}


def chat_template(name: str) -> str | None:
    if name not in TEMPLATES:
        raise ValueError(f"tokenizer.chat_template: unknown template {name!r} (known: {', '.join(TEMPLATES)})")
    return TEMPLATES[name]


def render_segments(messages: list[dict]) -> list[tuple[object, bool]]:
    """`alpaca_ja` as (text | BOS | EOS, scored) segments; scored = assistant content + EOS. SFT tokenizes per
    segment so the scored tokens are what the model emits after the generation prompt."""
    system, body = "", messages
    if messages and messages[0]["role"] == "system":
        system, body = messages[0]["content"], messages[1:]
    if not system:
        system = DEFAULT_SYSTEM_WITH_INPUT if body and body[0].get("input") else DEFAULT_SYSTEM
    segs: list[tuple[object, bool]] = [(BOS, False), (system, False)]
    for m in body:
        if m["role"] == "user":
            segs.append((USER_HEADER + m["content"], False))
            if m.get("input"):
                segs.append((INPUT_HEADER + m["input"], False))
        else:
            segs += [(ASSISTANT_HEADER, False), (m["content"], True), (EOS, True)]
    merged: list[tuple[object, bool]] = []  # adjacent unscored text is one prompt string, as at inference time
    for seg, scored in segs:
        if merged and isinstance(seg, str) and isinstance(merged[-1][0], str) and not scored and not merged[-1][1]:
            merged[-1] = (merged[-1][0] + seg, False)
        else:
            merged.append((seg, scored))
    return merged


def rendered_text(messages: list[dict], bos_token: str, eos_token: str) -> str:
    return "".join(bos_token if s is BOS else eos_token if s is EOS else s for s, _ in render_segments(messages))


def format_prompt(instruction: str, input_text: str = "") -> str:
    """The generation prompt of one instruction (BOS not included): what the model sees before its answer."""
    user = {"role": "user", "content": instruction}
    if input_text.strip():
        user["input"] = input_text
    return rendered_text([user], "", "") + ASSISTANT_HEADER

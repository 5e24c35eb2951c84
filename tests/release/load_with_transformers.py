"""Load a release the way another stack would and print what it sees as JSON (run as a subprocess, possibly
with an older transformers first on PYTHONPATH): tokenizer class, ids, decoded text, chat template, logits."""

import json
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

folder, texts = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
config = AutoConfig.from_pretrained(folder, local_files_only=True)
dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"  # 4.x knows only torch_dtype
model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **{dtype_key: torch.float32}).eval()
ids = [tok(t)["input_ids"] for t in texts]
with torch.no_grad():
    logits = [model(input_ids=torch.tensor([i])).logits[0].tolist() for i in ids]
print(json.dumps({
    "transformers": transformers.__version__, "tokenizer_class": type(tok).__name__, "ids": ids, "logits": logits,
    "decoded": [tok.decode(i, skip_special_tokens=True) for i in ids],
    "special": [tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token], "model_max_length": tok.model_max_length,
    "rope_theta": getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta"),
    "chat": tok.apply_chat_template([{"role": "user", "content": "富士山の高さは？"}], tokenize=False, add_generation_prompt=True)
    if tok.chat_template else None,
}, ensure_ascii=False))

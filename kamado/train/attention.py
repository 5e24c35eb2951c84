"""Document attention for packed pretraining windows: positions restart at each document and attention never
crosses a document boundary.

The token shards hold documents back to back, each ending with EOS (kamado/tokenizer/encode.py), and a window is
a fixed slice of them, so one row usually holds the end of one document, some whole ones and the start of another.
Plain causal attention lets a token attend to the unrelated documents before it in the row; with document attention
each document in the row is computed exactly as if it were run alone (the test checks the losses agree).

Two kernels, chosen once per run (`attention_implementation`):
- "sdpa" (CPU, or GPU without flash-attn): a block-causal boolean mask (B, 1, S, S), built on the device from the
  position ids so no S×S tensor crosses the host link; transformers takes a 4D mask as is.
- "flash_attention_2" (GPU, bf16/fp16, flash_attn installed): `flash_attn_varlen_func` over the flattened batch
  with cumulative document lengths (`cu_seq_lens_*`) computed on the host with the batch, so the kernel needs no
  device→host read to find the documents (transformers would otherwise infer them from position ids, and only
  for batch size 1).

Labels: the label at a document's last position is the first token of the next document. Under document attention
that position sees only its own document, so the prediction carries no signal; it is not scored (-100), which is
also what "each document run alone" means.
"""

from __future__ import annotations

import importlib.util

import torch

SDPA = "sdpa"
FLASH = "flash_attention_2"


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def attention_implementation(device: torch.device, precision: str, document_attention: bool) -> str:
    """FlashAttention-2 varlen for document attention on a GPU in bf16/fp16 when flash_attn is installed (it has no
    fp32 or CPU kernel); SDPA otherwise (with the block mask when document attention is on)."""
    if document_attention and device.type == "cuda" and precision in ("bf16", "fp16") and flash_attn_available():
        return FLASH
    return SDPA


def document_position_ids(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Position of each token within its document; a document starts at the row start and after every EOS."""
    rows, width = input_ids.shape
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = input_ids[:, :-1] == eos_id
    index = torch.arange(width, device=input_ids.device).expand(rows, width)
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - start_index


def document_batch(input_ids: torch.Tensor, labels: torch.Tensor, eos_id: int, implementation: str) -> dict:
    """The model inputs of a packed batch under document attention (host side, with the batch)."""
    positions = document_position_ids(input_ids, eos_id)
    labels = labels.masked_fill(input_ids == eos_id, -100)  # a document's last position would predict the next one
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": positions}
    if implementation == FLASH:
        batch.update(varlen_kwargs(positions))
    return batch


def varlen_kwargs(position_ids: torch.Tensor) -> dict:
    """`cu_seq_lens_*` / `max_length_*` for flash_attn_varlen_func over the flattened (B·S) batch; transformers
    passes them from the model's forward to every attention layer."""
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().reshape(-1)
    cu = torch.cat([starts, torch.tensor([flat.numel()])]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) boolean, True where query i may attend to key j: same document and j <= i."""
    document = (position_ids == 0).cumsum(dim=1)
    width = position_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=position_ids.device).tril()
    return ((document[:, :, None] == document[:, None, :]) & causal)[:, None]


def model_inputs(batch: dict, implementation: str) -> dict:
    """Keyword arguments for the model's forward from a (device-side) batch: the block mask is built here, on
    the batch's device, for SDPA; FlashAttention takes the varlen kwargs and no mask."""
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if implementation == FLASH:
        inputs.update({k: batch[k] for k in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")})
    else:
        inputs["attention_mask"] = block_causal_mask(batch["position_ids"])
    return inputs

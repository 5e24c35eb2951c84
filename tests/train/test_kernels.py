"""Optional kernels behind recipe keys: torch.compile gives the eager model's loss and gradients (tiny Llama,
fp32, forward + backward, with document attention's block mask); Liger's GPU-only kernels are a clear error on CPU."""

import pytest
import torch

from kamado.train.attention import SDPA, document_batch, model_inputs
from kamado.train.data import causal_lm_loss
from kamado.train.kernels import KernelUnavailable, apply_liger, check_liger, compile_model
from kamado.train.model import PRESETS, build_model, llama_config


def tiny_pair():
    torch.manual_seed(0)
    config = llama_config(PRESETS["tiny"], 300, 1, 2, 3)
    eager, compiled = build_model(config), build_model(config)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


@pytest.mark.slow  # 20-35 s on 2 busy cores: Dynamo traces the whole HF forward and AOTAutograd its backward
def test_compile_matches_eager_forward_and_backward():
    # aot_eager: Dynamo's graph capture and AOTAutograd's joint forward/backward graph (where compile changes
    # semantics), without Inductor's C++ build, which takes ~2 minutes here (measured once: grads within 3e-8).
    eager, compiled = tiny_pair()
    compile_model(compiled, backend="aot_eager")
    rows = torch.randint(4, 300, (2, 33), generator=torch.Generator().manual_seed(1))
    rows[:, 10] = 2  # an EOS: two documents per row
    batch = document_batch(rows[:, :-1], rows[:, 1:], 2, SDPA)
    losses = []
    for model in (eager, compiled):
        loss = causal_lm_loss(model, batch, model_inputs(batch, SDPA))
        loss.backward()
        losses.append(loss.item())
    assert compiled._compiled_call_impl is not None  # really compiled, in place (same parameter names)
    assert abs(losses[0] - losses[1]) <= 1e-5
    worst = max((p.grad - q.grad).abs().max().item() for p, q in zip(eager.parameters(), compiled.parameters()))
    assert worst <= 1e-5
    assert list(eager.state_dict()) == list(compiled.state_dict())


def test_liger_kernels_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: Liger can run")
    with pytest.raises(KernelUnavailable, match="pretrain.liger_kernels: .*Triton GPU kernels.*no CUDA device"):
        check_liger(torch.device("cpu"))
    eager, _ = tiny_pair()
    with pytest.raises(KernelUnavailable, match="set pretrain.liger_kernels: false"):
        apply_liger(eager, torch.device("cpu"))


@pytest.mark.gpu
def test_liger_matches_eager_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("liger_kernel")
    from kamado.train.kernels import fused_causal_lm_loss

    eager, fused = tiny_pair()
    eager, fused = eager.cuda(), fused.cuda()
    apply_liger(fused, torch.device("cuda"))
    rows = torch.randint(4, 300, (2, 65), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    batch = {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}
    ref = causal_lm_loss(eager, batch)
    got = fused_causal_lm_loss(fused, {"input_ids": batch["input_ids"]}, batch["labels"])
    ref.backward()
    got.backward()
    assert abs(ref.item() - got.item()) <= 1e-4
    worst = max((p.grad - q.grad).abs().max().item() for p, q in zip(eager.parameters(), fused.parameters()))
    assert worst <= 1e-3

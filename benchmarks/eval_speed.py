"""Items per second of kamado's multiple-choice scorer against lm-evaluation-harness on the same model, the same
JCommonsenseQA items and the same prompt (0-shot "質問：{question}\\n回答：", the five choices as continuations).
Model loading is outside the timings; both run on the same device with the same batch size; best of --repeats
alternating runs. Also prints how many
per-item choices agree (they should all agree: same tokenization convention, same log-probabilities).

    python benchmarks/eval_speed.py                       # random-init tiny model, 200 JGLUE items (or the sample)
    python benchmarks/eval_speed.py --preset 160m --items 200 --batch-size 16
    python benchmarks/eval_speed.py --model DIR           # any HF causal LM folder
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kamado.eval.harness import jcommonsenseqa_task_yaml  # noqa: E402  (after the path above)

JCQA = ROOT.parent / "shared" / "data" / "eval" / "jglue" / "jcommonsenseqa-v1.3_valid.json"
SAMPLE = ROOT / "examples" / "data" / "eval" / "jcommonsenseqa-sample.jsonl"
TEMPLATE = "質問：{question}\n回答："
LM_EVAL_TASK = jcommonsenseqa_task_yaml("kamado_bench_jcommonsenseqa")  # kamado's own prompt, as an lm-eval task


def random_model(preset: str, tmp: Path) -> Path:
    """The demo recipe's corpus and tokenizer (real SentencePiece), and a random-init Llama of `preset` with it."""
    import torch
    from transformers import AutoTokenizer

    from kamado.recipe import load_recipe
    from kamado.local import run_stages
    from kamado.stage import Workspace
    from kamado.train.model import PRESETS, build_model, llama_config

    recipe = load_recipe(ROOT / "recipes" / "tiny-cpu.yaml", [f"workdir={tmp / 'run'}"])
    run_stages(recipe, ["corpus", "tokenizer"], log=lambda _: None)
    tok = AutoTokenizer.from_pretrained(str(Workspace(recipe).tokenizer_dir()), local_files_only=True)
    torch.manual_seed(0)
    model = build_model(llama_config(PRESETS[preset], len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)).eval()
    out = tmp / f"random-{preset}"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF model folder (default: a random-init model of --preset)")
    ap.add_argument("--preset", default="tiny", help="tiny | 160m | 1b ... (default tiny)")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    from lm_eval.models.huggingface import HFLM

    from kamado.eval.config import EvalConfig, EvalTaskConfig
    from kamado.eval.run import evaluate
    from kamado.eval.harness import run_lm_eval
    from kamado.eval.lm import LM

    data = JCQA if JCQA.is_file() else SAMPLE
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = Path(args.model) if args.model else random_model(args.preset, tmp)
        yaml = tmp / "task.yaml"
        yaml.write_text(LM_EVAL_TASK, encoding="utf-8")

        ours_lm = LM(model, batch_size=args.batch_size, device=args.device)
        their_lm = HFLM(pretrained=str(model), device=args.device, batch_size=args.batch_size, add_bos_token=True)
        cfg = EvalConfig(tasks=[EvalTaskConfig(name="jcommonsenseqa", path=str(data), limit=args.items, template=TEMPLATE)])
        ours_s, theirs_s = [], []
        for _ in range(args.repeats):  # alternating runs, best of each: the machine is shared, timings are noisy
            t0 = time.perf_counter()
            ours = evaluate(cfg, model, out_dir=tmp / "kamado", lm=ours_lm, log=lambda _: None)
            ours_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = run_lm_eval(model, [(str(yaml), str(data), None)], tmp, shots=0, limit=args.items, log=lambda _: None,
                                 lm=their_lm)
            theirs_s.append(time.perf_counter() - t0)
        ours_s, theirs_s = min(ours_s), min(theirs_s)

        n = ours["tasks"][0]["items"]
        read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
        a = [r["pred"] for r in read(tmp / "kamado" / "predictions" / "jcommonsenseqa-0shot.jsonl")]
        b = [r["pred"] for r in sorted(read(tmp / "lm-eval" / "predictions" / "kamado_bench_jcommonsenseqa.jsonl"),
                                       key=lambda r: r["doc_id"])]
        n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(str(model)).parameters())
    print(f"model: {args.model or 'random-init ' + args.preset} ({n_params / 1e6:.1f}M parameters), device {args.device}, "
          f"batch size {args.batch_size}, {n} JCommonsenseQA items from {data.name} (5 choices each), torch threads "
          f"{torch.get_num_threads()}")
    print("| scorer | seconds | items/s | accuracy |")
    print("|---|---|---|---|")
    print(f"| kamado | {ours_s:.2f} | {n / ours_s:.1f} | {ours['tasks'][0]['accuracy']:.4f} |")
    acc = theirs["results"]["kamado_bench_jcommonsenseqa"]["acc,none"]
    print(f"| lm-eval 0.4.13 | {theirs_s:.2f} | {n / theirs_s:.1f} | {acc:.4f} |")
    print(f"kamado / lm-eval speed: {theirs_s / ours_s:.2f}x; per-item choices agreeing: {sum(x == y for x, y in zip(a, b))}/{n}")


if __name__ == "__main__":
    main()

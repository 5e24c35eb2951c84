"""Japanese MT-Bench-style generation in FastChat's layout, so FastChat's (or anyone's) judging scripts read it:

    <out>/question.jsonl                       a copy of the questions answered
    <out>/model_answer/<model_id>.jsonl        {"question_id", "answer_id", "model_id", "choices": [{"index": 0,
                                                "turns": [answer 1, answer 2, ...]}], "tstamp"}
    <out>/model_judgment/<judge>_single.jsonl  (optional) {"question_id", "model", "judge": [judge, "single-v1"],
                                                "user_prompt", "judgment", "score", "turn", "tstamp"}

Questions are FastChat's format: {"question_id", "category", "turns": [..], optional "reference": [..]}. Each turn
is rendered with the model's own chat template (earlier turns and the model's answers included), answers are
greedy (reproducible; FastChat samples some categories at temperature 0.7), several questions per forward.
A judge is optional and only ever a local model folder (no API): it grades each turn 1-10 with the single-answer
prompt below; a judgment without a "[[n]]" rating scores -1, as in FastChat.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from kamado.jsonl import iter_jsonl
from kamado.eval.data import EvalDataError
from kamado.eval.lm import LM
from kamado.durable import write_json_durable, write_text_durable

JUDGE_PROMPT = (
    "[指示]\n公平な判定者として、以下に示すユーザーの質問に対するAIアシスタントの応答の質を評価してください。"
    "有用性、関連性、正確性、深さ、創造性、詳細さを考慮し、応答は日本語でなければなりません。"
    "短い説明の後、\"[[評価]]\" の形式で1から10の整数で評価してください。例：\"評価：[[5]]\"\n\n"
    "[質問]\n{question}\n\n[アシスタントの回答の開始]\n{answer}\n[アシスタントの回答の終了]\n"
)


def read_questions(path: Path) -> list[dict]:
    questions = []
    for line_no, rec in iter_jsonl(str(path), EvalDataError):
        where = f"{path}:{line_no}"
        if "question_id" not in rec:
            raise EvalDataError(f"{where}: field 'question_id' missing")
        turns = rec.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise EvalDataError(f"{where}: field 'turns' must be a non-empty list of non-empty strings")
        questions.append(rec)
    if not questions:
        raise EvalDataError(f"{path}: no questions")
    return questions


def _render(lm: LM, messages: list[dict]) -> str:
    if not lm.tok.chat_template:
        raise EvalDataError("mt-bench: the model's tokenizer has no chat template (tokenizer_config.json 'chat_template')")
    text = lm.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = lm.tok.bos_token or ""
    return text[len(bos):] if bos and text.startswith(bos) else text  # LM.encode adds BOS itself


def _write_jsonl(path: Path, records: list[dict]) -> None:
    write_text_durable(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def generate_answers(lm: LM, questions: list[dict], model_id: str, max_new_tokens: int = 512) -> list[dict]:
    """Answer every turn of every question; turn k of all questions is generated as one batched pass."""
    history: list[list[dict]] = [[] for _ in questions]
    answers: list[list[str]] = [[] for _ in questions]
    for k in range(max(len(q["turns"]) for q in questions)):
        active = [i for i, q in enumerate(questions) if k < len(q["turns"])]
        for i in active:
            history[i].append({"role": "user", "content": questions[i]["turns"][k]})
        outputs = lm.generate_batch([_render(lm, history[i]) for i in active], max_new_tokens, [])
        for i, text in zip(active, outputs):
            answers[i].append(text.strip())
            history[i].append({"role": "assistant", "content": text.strip()})
    now = time.time()
    return [{"question_id": q["question_id"], "answer_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{model_id}/{q['question_id']}").hex,
             "model_id": model_id, "choices": [{"index": 0, "turns": a}], "tstamp": now} for q, a in zip(questions, answers)]


def judge_answers(judge: LM, judge_id: str, questions: list[dict], answers: list[dict], max_new_tokens: int = 256) -> list[dict]:
    prompts, keys = [], []
    for q, a in zip(questions, answers):
        for turn, (question, answer) in enumerate(zip(q["turns"], a["choices"][0]["turns"]), start=1):
            prompts.append(JUDGE_PROMPT.format(question=question, answer=answer))
            keys.append((q["question_id"], a["model_id"], turn))
    rendered = [_render(judge, [{"role": "user", "content": p}]) if judge.tok.chat_template else p for p in prompts]
    out = []
    for (qid, model, turn), prompt, judgment in zip(keys, prompts, judge.generate_batch(rendered, max_new_tokens, [])):
        out.append({"question_id": qid, "model": model, "judge": [judge_id, "single-v1"], "user_prompt": prompt,
                    "judgment": judgment, "score": parse_rating(judgment), "turn": turn, "tstamp": time.time()})
    return out


def parse_rating(judgment: str) -> float:
    """FastChat's rule: the first "[[n]]" (or "[n]") in the judgment, 1-10; -1 when there is none."""
    match = re.search(r"\[\[(\d+(?:\.\d+)?)\]\]", judgment) or re.search(r"\[(\d+(?:\.\d+)?)\]", judgment)
    return float(match.group(1)) if match and 1 <= float(match.group(1)) <= 10 else -1


def run_mt_bench(lm: LM, questions_path: Path, out_dir: Path, model_id: str, max_new_tokens: int = 512,
                 judge_dir: Path | None = None, log=print, judge_max_new_tokens: int = 256) -> dict:
    questions = read_questions(questions_path)
    t0 = time.time()
    answers = generate_answers(lm, questions, model_id, max_new_tokens)
    turns = sum(len(q["turns"]) for q in questions)
    _write_jsonl(out_dir / "question.jsonl", questions)
    _write_jsonl(out_dir / "model_answer" / f"{model_id}.jsonl", answers)
    summary = {"task": "mt-bench", "questions": len(questions), "turns": turns, "data": str(questions_path),
               "model_id": model_id, "answers": str(out_dir / "model_answer" / f"{model_id}.jsonl"),
               "generation": f"greedy, up to {max_new_tokens} new tokens per turn, the model's chat template",
               "seconds": round(time.time() - t0, 2)}
    log(f"[kamado] mt-bench: {len(questions)} questions, {turns} turns answered -> {summary['answers']}")
    if judge_dir is not None:
        judge = LM(judge_dir, batch_size=lm.batch_size, device=str(lm.device))
        judge_id = Path(judge_dir).name
        judgments = judge_answers(judge, judge_id, questions, answers, judge_max_new_tokens)
        path = out_dir / "model_judgment" / f"{judge_id}_single.jsonl"
        _write_jsonl(path, judgments)
        scored = [j["score"] for j in judgments if j["score"] >= 0]
        summary.update(judge=judge_id, judgments=str(path), judged=len(scored), unparsed=len(judgments) - len(scored),
                       mean_score=round(sum(scored) / len(scored), 3) if scored else None)
        log(f"[kamado] mt-bench judge {judge_id}: {len(scored)}/{len(judgments)} turns rated, mean {summary['mean_score']}")
    write_json_durable(out_dir / "mt_bench.json", summary)
    return summary


def mt_bench_command(args, cfg, model_dir: Path, out_dir: Path) -> dict:
    """`kamado eval --mt-bench QUESTIONS [--judge DIR] [--model-id NAME] [--max-new-tokens N]`."""
    for flag, path in (("--mt-bench", args.mt_bench), ("--judge", args.judge)):
        if path and not Path(path).exists():
            raise EvalDataError(f"{flag}: not found: {path}")
    lm = LM(model_dir, batch_size=cfg.batch_size, max_length=cfg.max_length)
    return run_mt_bench(lm, Path(args.mt_bench), out_dir / "mt_bench", args.model_id or Path(model_dir).resolve().name,
                        args.max_new_tokens or 512, Path(args.judge) if args.judge else None)

"""What the cleaning did, per shard and merged: drops per reason (docs and characters), rejected records,
PII masked per type, the learned filter's score distribution, and a few dropped documents per reason.

Per shard: `work/report-SSSSS.json` (the shard's done-marker holds the same dict) and `work/rejects-SSSSS.jsonl`
(one line per rejected record: file, line, reason, detail). Merged (called from the stage's `finish`):
extra keys in `report.json`, `drops.txt` (a readable table), `drops.png` (bar chart of drop reasons, and the
score histogram when a quality model ran) and `dropped_samples.json`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

SCORE_BINS = 20  # quality-score histogram: 20 bins over [0, 1]
SAMPLE_CHARS = 600


class CorpusInvariantError(RuntimeError):
    """Every record read must be kept, dropped by a rule, or rejected; counts that do not add up are a bug."""


class ShardStats:
    """Counts one shard's documents as they pass; `as_dict()` is the shard's report."""

    def __init__(self, samples_per_reason: int = 3):
        self.docs_in = self.chars_in = self.kept = self.chars_kept = 0
        self.dropped: Counter = Counter()  # reason -> docs (rejections as "rejected:<reason>")
        self.dropped_chars: Counter = Counter()
        self.pii: Counter = Counter()
        self.per_source: dict[str, dict] = {}
        self.samples: dict[str, list] = {}
        self.scores = [0] * SCORE_BINS
        self.samples_per_reason = samples_per_reason

    def source(self, name: str) -> dict:
        return self.per_source.setdefault(name, {"docs_in": 0, "kept": 0, "dropped": Counter()})

    def read(self, source: str, chars: int) -> None:
        self.docs_in += 1
        self.chars_in += chars
        self.source(source)["docs_in"] += 1

    def drop(self, source: str, reason: str, doc: dict | None, chars: int, where: str = "") -> None:
        self.dropped[reason] += 1
        self.dropped_chars[reason] += chars
        self.source(source)["dropped"][reason] += 1
        bucket = self.samples.setdefault(reason, [])
        if len(bucket) < self.samples_per_reason:
            sample = {"source": source, "where": where}
            if doc is not None:
                sample.update(id=doc["id"], text=doc["text"][:SAMPLE_CHARS])
                for key in ("url", "ng_words", "quality_score"):
                    if key in doc.get("meta", {}):
                        sample[key] = doc["meta"][key]
            bucket.append(sample)

    def keep(self, source: str, chars: int) -> None:
        self.kept += 1
        self.chars_kept += chars
        self.source(source)["kept"] += 1

    def score(self, value: float) -> None:
        self.scores[min(int(value * SCORE_BINS), SCORE_BINS - 1)] += 1

    def as_dict(self) -> dict:
        rejected = {k: v for k, v in self.dropped.items() if k.startswith("rejected:")}
        d = {"docs_in": self.docs_in, "chars_in": self.chars_in, "kept": self.kept, "chars_kept": self.chars_kept,
             "dropped": dict(sorted(self.dropped.items())), "dropped_chars": dict(sorted(self.dropped_chars.items())),
             "docs_rejected": sum(rejected.values()), "pii_masked": dict(sorted(self.pii.items())),
             "per_source": {n: {**v, "dropped": dict(v["dropped"])} for n, v in self.per_source.items()},
             "samples": self.samples, "quality_score_histogram": self.scores if any(self.scores) else None}
        # the invariant, per shard: every record read is kept, dropped by a rule, or rejected
        if d["docs_in"] != d["kept"] + sum(self.dropped.values()):
            raise CorpusInvariantError(f"shard counts do not add up: docs_in {d['docs_in']} != kept {d['kept']} "
                                       f"+ dropped {sum(self.dropped.values())} ({d['dropped']})")
        return d


def merge(shard_stats: list[dict], samples_per_reason: int = 3) -> dict:
    """The cleaning part of the merged report (dedup adds its own keys)."""
    dropped_chars: Counter = Counter()
    rejected: Counter = Counter()
    samples: dict[str, list] = {}
    hist = [0] * SCORE_BINS
    has_hist = False
    for s in shard_stats:
        dropped_chars.update(s.get("dropped_chars", {}))
        rejected.update({k.split(":", 1)[1]: v for k, v in s.get("dropped", {}).items() if k.startswith("rejected:")})
        for reason, items in s.get("samples", {}).items():
            room = samples_per_reason - len(samples.setdefault(reason, []))
            samples[reason].extend(items[:max(room, 0)])
        if s.get("quality_score_histogram"):
            has_hist = True
            hist = [a + b for a, b in zip(hist, s["quality_score_histogram"])]
    return {"dropped_chars": dict(sorted(dropped_chars.items())), "docs_rejected": sum(rejected.values()),
            "rejected": dict(sorted(rejected.items())), "quality_score_histogram": hist if has_hist else None,
            "_samples": samples}


def table(report: dict) -> str:
    """Docs and characters per drop reason, largest first."""
    n_in, c_in = max(report["docs_in"], 1), max(report["chars_in"], 1)
    chars = report.get("dropped_chars", {})
    rows = sorted(report["dropped"].items(), key=lambda kv: -kv[1])
    w = max([len(r) for r, _ in rows] + [20])
    out = [f"{'reason':<{w}} {'docs':>9} {'% docs':>7} {'chars':>13} {'% chars':>8}", "-" * (w + 41)]
    for reason, n in rows:
        c = chars.get(reason)
        cs = f"{c:>13,} {100 * c / c_in:>7.2f}%" if c is not None else f"{'':>13} {'':>8}"
        out.append(f"{reason:<{w}} {n:>9,} {100 * n / n_in:>6.2f}% {cs}")
    out.append("-" * (w + 41))
    out.append(f"{'kept':<{w}} {report['docs_kept']:>9,} {100 * report['docs_kept'] / n_in:>6.2f}% "
               f"{report['chars_out']:>13,} {100 * report['chars_out'] / c_in:>7.2f}%")
    out.append(f"{'read':<{w}} {report['docs_in']:>9,} {'':>7} {report['chars_in']:>13,}")
    return "\n".join(out) + "\n"


def chart(report: dict, path: Path) -> None:
    """drops.png: a bar per drop reason (rejections in red), and the quality-score histogram beside it when a
    quality model ran. Drawn with Pillow (matplotlib's own image library, so always installed), not matplotlib:
    importing and laying out matplotlib took 1-1.5 s, a fifth of a small corpus stage."""
    from PIL import Image, ImageDraw, ImageFont

    rows = sorted(report["dropped"].items(), key=lambda kv: -kv[1])
    hist = report.get("quality_score_histogram")
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: the bitmap font only
        font = ImageFont.load_default()
    line, pad = 22, 12
    label_w = max([ImageDraw.Draw(Image.new("L", (1, 1))).textlength(r, font=font) for r, _ in rows] + [60])
    panel_w = int(label_w) + 380
    height = max(line * len(rows), 200 if hist else 0) + 4 * line + 2 * pad
    img = Image.new("RGB", (panel_w + (420 if hist else 0) + 2 * pad, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), f"drop reasons ({report['docs_kept']:,} of {report['docs_in']:,} kept)", fill="black", font=font)
    x0, top = pad + int(label_w) + 8, pad + 2 * line
    most = max([n for _, n in rows] + [1])
    for i, (reason, n) in enumerate(rows):
        y = top + i * line
        draw.text((x0 - 8, y + line // 2), reason, fill="black", font=font, anchor="rm")
        w = round(300 * n / most)
        draw.rectangle([x0, y + 3, x0 + max(w, 1), y + line - 3], fill="#c44" if reason.startswith("rejected:") else "#47a")
        draw.text((x0 + w + 4, y + line // 2), f"{n:,}", fill="black", font=font, anchor="lm")
    draw.line([x0, top, x0, top + max(len(rows), 1) * line], fill="black")
    draw.text((x0, top + max(len(rows), 1) * line + 6), "documents", fill="black", font=font)
    if hist:
        hx, hw, hh = panel_w + pad + 20, 380, 160
        base = top + hh
        draw.text((hx, pad), "score distribution (documents that reached the model)", fill="black", font=font)
        peak = max(hist) or 1
        for i, n in enumerate(hist):
            bx = hx + i * hw // SCORE_BINS
            draw.rectangle([bx, base - round(hh * n / peak), hx + (i + 1) * hw // SCORE_BINS - 1, base], fill="#4a7")
        draw.line([hx, base, hx + hw, base], fill="black")
        cut = hx + round(hw * report.get("rules", {}).get("min_quality_score", 0.5))
        for y in range(top, base, 8):  # the threshold, dashed
            draw.line([cut, y, cut, min(y + 4, base)], fill="black")
        for v in (0, 0.5, 1):
            draw.text((hx + round(hw * v), base + 4), f"{v:g}", fill="black", font=font, anchor="mt")
        draw.text((hx + hw // 2, base + line + 4), "quality-model score", fill="black", font=font, anchor="mt")
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)


def add_cleaning_report(report: dict, shard_stats: list[dict], folder: Path, samples_per_reason: int = 3) -> dict:
    """Merge the shards' cleaning statistics into `report` and write the table, chart and samples next to it."""
    extra = merge(shard_stats, samples_per_reason)
    samples = extra.pop("_samples")
    report.update(extra)
    report["rejects_files"] = sorted(str(p.relative_to(folder)) for p in (folder / "work").glob("rejects-*.jsonl"))
    (folder / "drops.txt").write_text(table(report), encoding="utf-8")
    (folder / "dropped_samples.json").write_text(json.dumps(samples, ensure_ascii=False, indent=1), encoding="utf-8")
    chart(report, folder / "drops.png")
    return report


# ------------------------------------------------------------------ one rule that drops (almost) a whole source
DOMINANT_SHARE = 0.9
_RULE_KEYS = {  # drop reason → the corpus.rules key(s) whose threshold decides it
    "too_short": "min_chars", "too_long": "max_chars", "low_japanese_fraction": "min_japanese_fraction",
    "low_hiragana_fraction": "min_hiragana_fraction", "high_katakana_fraction": "max_katakana_fraction",
    "ng_words": "max_ng_word_fraction", "short_sentences": "min_avg_sentence_length",
    "long_sentences": "max_avg_sentence_length", "sentence_too_long": "max_sentence_length",
    "ellipsis_lines": "max_ellipsis_line_fraction", "bullet_lines": "max_bullet_line_fraction",
    "duplicate_lines": "max_duplicate_line_fraction", "duplicate_line_chars": "max_duplicate_line_char_fraction",
    "duplicate_paragraphs": "max_duplicate_paragraph_fraction",
    "duplicate_paragraph_chars": "max_duplicate_paragraph_char_fraction",
    "low_compression_ratio": "min_compression_ratio", "low_quality_score": "min_quality_score",
    "blocked_domain": "blocked_domains",
}


def rule_key(reason: str) -> str | None:
    if reason.startswith("top_") and reason.endswith("gram"):
        return f"max_{reason}_char_fraction"  # top_2gram → max_top_2gram_char_fraction
    if reason.startswith("duplicate_") and reason.endswith("gram"):
        return f"max_{reason}_char_fraction"
    return _RULE_KEYS.get(reason)


def dominant_rules(cfg, shard_stats: list[dict], share: float = DOMINANT_SHARE) -> list[str]:
    """One message per (source, rule) where a single rule dropped at least `share` of the source's documents,
    naming the rule, its recipe key and threshold, and what to change (a short-text corpus meets the
    400-character minimum this way)."""
    from kamado.corpus.config import source_rules

    docs_in: Counter = Counter()
    dropped: dict[str, Counter] = {}
    for s in shard_stats:
        for name, v in s.get("per_source", {}).items():
            docs_in[name] += v["docs_in"]
            dropped.setdefault(name, Counter()).update(v.get("dropped", {}))
    messages = []
    for i, source in enumerate(cfg.sources):
        n = docs_in[source.name]
        for reason, k in sorted(dropped.get(source.name, Counter()).items(), key=lambda kv: -kv[1]):
            if n == 0 or k / n < share or reason.startswith("rejected:"):
                continue
            key = rule_key(reason)
            rules = source_rules(cfg, i)
            setting = f"corpus.rules.{key}={getattr(rules, key)!r}" if key and hasattr(rules, key) else "its threshold"
            hint = (" Short texts (snippets, leads, Q&A): lower min_chars and min_avg_sentence_length for this source, "
                    f"e.g. corpus.sources[{i}].rules: {{min_chars: 50, min_avg_sentence_length: 0}} (README: "
                    "short-text corpora).") if reason in ("too_short", "short_sentences") else (
                    f" Loosen it for this source: corpus.sources[{i}].rules: {{{key}: ...}}." if key else "")
            messages.append(f"corpus: rule '{reason}' ({setting}) dropped {k:,} of {n:,} documents "
                            f"({100 * k / n:.0f}%) of source '{source.name}'.{hint}")
    return messages


def warn_dominant_rules(cfg, shard_stats: list[dict]) -> list[str]:
    """Print `dominant_rules` to stderr; when the rules kept no document at all, fail here with them (before
    dedup runs on nothing and the stage ends with a bare 'every document was dropped')."""
    import sys

    messages = dominant_rules(cfg, shard_stats)
    for m in messages:
        print(f"kamado {m}", file=sys.stderr, flush=True)
    kept = sum(s.get("kept", 0) for s in shard_stats)
    docs_in = sum(s.get("docs_in", 0) for s in shard_stats)
    if docs_in and kept == 0 and messages:
        raise RuntimeError(f"corpus: the rules dropped every one of {docs_in:,} documents. " + " ".join(messages))
    return messages

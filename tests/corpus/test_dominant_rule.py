"""Issue 17: when one rule drops ≥ 90% of a source, the stage names the rule, its key and threshold (and a
recipe for short texts) before it fails; with the short-text recipe the same corpus passes."""

from __future__ import annotations

import pytest

from tests.corpus.corpus_helpers import prose, run_corpus
from tests.helpers import write_jsonl


def _snippets(n: int = 30) -> list[dict]:
    """Short, ordinary Japanese snippets (each well under the default 400 characters)."""
    paragraphs = prose()
    return [{"id": f"s{i}", "text": paragraphs[i % len(paragraphs)][:120] + f"（その{i}）"} for i in range(n)]


def test_default_min_chars_on_snippets_fails_with_the_rule_and_threshold(tmp_path, capsys):
    write_jsonl(tmp_path / "snip.jsonl", _snippets())
    with pytest.raises(RuntimeError) as err:
        run_corpus(tmp_path, "    - {name: snippets, paths: [snip.jsonl]}\n", rules="{}")
    message = str(err.value)
    assert "rule 'too_short' (corpus.rules.min_chars=400) dropped 30 of 30 documents (100%) of source 'snippets'" in message
    assert "corpus.sources[0].rules: {min_chars: 50" in message
    assert "min_chars=400" in capsys.readouterr().err  # printed as well, before the stage fails


RULES = "{min_chars: 100, min_hiragana_fraction: 0.1, min_avg_sentence_length: 0}"


def test_dominant_rule_warns_and_short_text_recipe_passes(tmp_path, capsys):
    long_docs = [{"id": "long", "text": "\n".join(prose())}]
    write_jsonl(tmp_path / "snip.jsonl", [dict(d, text=d["text"][-60:]) for d in _snippets()])
    write_jsonl(tmp_path / "long.jsonl", long_docs)
    sources = "    - {name: long, paths: [long.jsonl]}\n    - {name: snippets, paths: [snip.jsonl]}\n"
    report = run_corpus(tmp_path, sources, rules=RULES)  # the long document survives: a warning, no failure
    assert report["docs_kept"] == 1
    assert "rule 'too_short' (corpus.rules.min_chars=100) dropped 30 of 30 documents" in capsys.readouterr().err
    # the README's short-text recipe: per-source rules for the snippets
    (tmp_path / "run").rename(tmp_path / "run-before")
    sources = ("    - {name: long, paths: [long.jsonl]}\n    - {name: snippets, paths: [snip.jsonl], "
               "rules: {min_chars: 20}}\n")
    report = run_corpus(tmp_path, sources, rules=RULES)
    assert report["per_source"]["snippets"]["kept"] >= 25 and "too_short" not in capsys.readouterr().err

"""Corpus stage: readers → normalize → Japanese quality rules → PII masking → exact dedup → writers + report."""

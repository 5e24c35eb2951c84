"""Deduplication of the corpus: exact, MinHash-LSH near duplicates, containment, decontamination.

Runs after the filter shards, as five sharded phases (each a Slurm array in waiting, a process pool here):

    signatures  one task per group of filter shards: fingerprint text (ruby markup and whitespace removed),
                exact hash, character n-gram MinHash, LSH band keys (sorted per band), containment samples,
                eval-set contamination
    buckets     one task per group of (band, key range) units: equal band keys → candidate pairs; equal exact
                hashes → exact pairs; shared containment samples → partial co-occurrence counts
    verify      one task per slice of the pair space: candidate pairs kept when the estimated Jaccard passes,
                containment kept when the small document's samples are found in the large one
    clusters    one task: connected components over the verified edges (docs with an edge only), one keeper
                per cluster (the first in input order), contained documents resolved, removal list per shard
    apply       one task per group of filter shards: drop the removed documents, write the final data shards

Every task writes checksummed outputs and a done-marker (`store.py`); every task checks the checksums of what
it reads and refuses truncated or corrupt input with an error naming the file and the phase that wrote it.
"""

from kamado.corpus.dedup.exact import fingerprint_text
from kamado.corpus.dedup.phases import (PHASES, CorruptInput, apply_results, clusters_summary, num_tasks_for,
                                        run_local, run_phase)

__all__ = ["PHASES", "CorruptInput", "apply_results", "clusters_summary", "fingerprint_text", "num_tasks_for",
           "run_local", "run_phase"]

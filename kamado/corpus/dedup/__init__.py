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

Locally (kamado/local.py, `local_workers`) a small corpus (filter shards under SMALL_INPUT_BYTES) runs every task in the stage's own
process, apply reusing the lines signatures decompressed; a larger one uses a pool of `corpus.workers` processes.
Same tasks, same files, same results either way (tests/corpus/test_dedup_stage.py).

Every task writes checksummed outputs and a done-marker (`store.py`); every task checks the checksums of what
it reads and refuses truncated or corrupt input with an error naming the file and the phase that wrote it.

The report's `duplicates.json` names, for each removed document, `duplicate_of`: the kept document at the end of
its chain of matches (an exact copy of a near duplicate, or a document contained in one that is itself contained,
matched a removed document), and `matched`: the document it matched directly, which `kind` and `similarity`
describe. An auditor opens `duplicate_of`, always a kept document.

Bad input, the rules (each tested in tests/corpus/test_dedup*.py):
- an empty filter shard: every phase writes its (empty) outputs and marker for it; it adds no key and no pair.
- a shard with one document: nothing special; its document is compared with every other shard's.
- a document shorter than the n-gram size: its whole text is its one shingle, so it matches its exact copies
  (and the exact-hash check) and nothing else; an empty fingerprint has no shingle and no band key.
- identical documents in different shards: exact duplicates (same fingerprint hash) found by the exact units,
  which read every shard's keys in their range; the first in input order is kept, the others name it.
- a missing, truncated or corrupt signature file (or any phase output): the next phase stops with CorruptInput
  naming the file and the phase to rerun (missing marker: the task did not finish; size or block checksum that
  differs from the marker: truncated or corrupted after writing); rerunning that phase redoes only the items
  without a marker.
"""

from kamado.corpus.dedup.apply import apply_results, clusters_summary
from kamado.corpus.dedup.exact import fingerprint_text
from kamado.corpus.dedup.layout import forget_kept_lines
from kamado.corpus.dedup.phases import PHASES, local_workers, num_tasks_for, run_phase
from kamado.corpus.dedup.store import CorruptInput

__all__ = ["PHASES", "CorruptInput", "apply_results", "clusters_summary", "fingerprint_text", "num_tasks_for",
           "forget_kept_lines", "local_workers", "run_phase"]

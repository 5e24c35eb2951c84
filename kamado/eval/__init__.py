"""Evaluation of a model (kamado.eval.run), its tasks, formats, harness adapter and contamination check."""

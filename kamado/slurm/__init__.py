"""The Slurm executor: every unfinished stage as submitit jobs chained with afterok dependencies."""

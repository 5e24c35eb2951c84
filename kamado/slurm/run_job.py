"""`python -m kamado.slurm.run_job FOLDER`: what a dry run's job script runs in each task. submitit's runner
(`submitit.core.submission.process_job`) loads `<FOLDER>/<job id>_submitted.pkl`, runs the call and writes the
result pickle, as for a job submitted through submitit's executor (which names its private `_submit` module)."""

from __future__ import annotations

import sys

from submitit.core.submission import process_job

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m kamado.slurm.run_job FOLDER")
    process_job(sys.argv[1])

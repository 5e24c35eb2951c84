"""The slurm section: what every job of `kamado run --executor slurm` asks the cluster for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time_minutes: int = 60
    cpus_per_task: int = 1
    mem_gb: Optional[int] = None
    gpus_per_node: int = 0
    array_parallelism: int = 64  # array tasks of a data stage running at once (the "%N" of --array)
    max_array_tasks: Optional[int] = None  # shards are grouped into at most this many tasks (None: MaxArraySize)
    # corpus dedup phases as job arrays (None: when corpus.dedup.near or decontamination is on; else the finish job
    # runs them, exact dedup being one hash per document) and the array size of the buckets and verify phases,
    # whose work units are known only once the phase before ran (None: corpus.num_shards)
    dedup_arrays: Optional[bool] = None
    dedup_tasks: Optional[int] = None
    max_requeues: int = 3  # a job stops requeueing itself once SLURM_RESTART_COUNT reaches this
    signal_delay_s: int = 120  # training ranks get SIGUSR1 this long before the time limit: checkpoint, requeue
    extra_sbatch: list[str] = field(default_factory=list)  # raw "#SBATCH" lines without the prefix
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load, venv)

    def validate(self, key: str) -> None:
        """Values that reach an sbatch script (kamado/slurm/validate.py says why)."""
        from kamado.slurm.validate import check_name, check_text, parse_extra_sbatch

        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None:
                check_name(f"{key}.{name}", value)
        for i, line in enumerate(self.setup):
            check_text(f"{key}.setup[{i}]", line, allow_tab=True)
        parse_extra_sbatch(self.extra_sbatch, key=key)

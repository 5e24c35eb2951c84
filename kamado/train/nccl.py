"""NCCL settings for multi-node GPU training, and what a run actually has (printed by benchmarks/train_gpu_mfu.py).

kamado sets no NCCL variable itself: the right values depend on the cluster's fabric, so they belong in the job
environment (the Slurm script's `export` lines or the site's module). What to check, in the order problems show up:

Transport (a wrong value here is not an error but a silent 5-10x slowdown or a hang at the first collective):
- NCCL_DEBUG=INFO (with NCCL_DEBUG_SUBSYS=INIT,NET): the first run on a new cluster should show "NET/IB" (or the
  vendor's plugin, e.g. "NET/AWS Libfabric"), not "NET/Socket", for inter-node traffic.
- NCCL_IB_HCA: which InfiniBand/RoCE adapters NCCL uses, e.g. `mlx5_0,mlx5_1,...` (one per GPU on H100 nodes with
  rail-optimised fabrics); leave unset to use all. NCCL_IB_DISABLE=1 forces TCP: never on an IB cluster.
- NCCL_IB_GID_INDEX: RoCE only, the GID of the RoCE v2 address (often 3); InfiniBand needs none.
- NCCL_IB_TIMEOUT / NCCL_IB_RETRY_CNT: the verbs timeout (4.096 us x 2^value) and retries; raise NCCL_IB_TIMEOUT
  (e.g. 22) on large or congested fabrics that show "NET/IB : Got completion with error 12".
- NCCL_SOCKET_IFNAME: the interface for NCCL's bootstrap (and the socket transport), e.g. `ib0`, `bond0` or
  `^lo,docker0` (a leading ^ excludes); a wrong or unreachable one hangs rendezvous. GLOO_SOCKET_IFNAME is the same
  for gloo (CPU collectives).

Failure handling and timeouts (a dead rank must end the job, so Slurm requeues it and kamado resumes):
- TORCH_NCCL_ASYNC_ERROR_HANDLING (the old name NCCL_ASYNC_ERROR_HANDLING is deprecated): PyTorch >= 2.2 defaults
  to 3, which ends the process when a collective fails or times out; 1 also aborts the communicators first. Do not
  set 0: the job would then hang until the Slurm time limit instead of failing and being requeued.
- The collective timeout is the process group's: DeepSpeed's init_distributed default, 30 minutes. A rank that
  waits longer (another rank stuck in a very slow checkpoint write on a shared file system) is ended by the
  watchdog; TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC (default 480 s) bounds how long the watchdog itself may hang.
- TORCH_NCCL_TRACE_BUFFER_SIZE=2000 with TORCH_NCCL_DUMP_ON_TIMEOUT=1 keeps a flight record of the last collectives
  and dumps it on a timeout (which rank did not join which collective).
- TORCH_NCCL_BLOCKING_WAIT=1 makes every wait synchronous on the host: only for debugging, it costs throughput.
"""

from __future__ import annotations

import os

NCCL_VARIABLES = (
    "NCCL_DEBUG", "NCCL_IB_HCA", "NCCL_IB_DISABLE", "NCCL_IB_GID_INDEX", "NCCL_IB_TIMEOUT", "NCCL_IB_RETRY_CNT",
    "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING",
    "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC", "TORCH_NCCL_TRACE_BUFFER_SIZE", "TORCH_NCCL_DUMP_ON_TIMEOUT",
    "TORCH_NCCL_BLOCKING_WAIT",
)


def nccl_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The NCCL/collective variables this process has ("unset" where the library default applies)."""
    env = os.environ if environ is None else environ
    return {name: env.get(name, "unset") for name in NCCL_VARIABLES}


def nccl_warnings(environ: dict[str, str] | None = None) -> list[str]:
    """Settings known to hurt a multi-GPU run, each with the reason."""
    env = os.environ if environ is None else environ
    out = []
    if env.get("NCCL_IB_DISABLE") == "1":
        out.append("NCCL_IB_DISABLE=1: inter-node traffic goes over TCP sockets (several times slower on an IB cluster)")
    for name in ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING"):
        if env.get(name) == "0":
            out.append(f"{name}=0: a failed or timed-out collective hangs the job instead of ending it (no requeue, no resume)")
    if env.get("TORCH_NCCL_BLOCKING_WAIT") == "1":
        out.append("TORCH_NCCL_BLOCKING_WAIT=1: every collective wait blocks the host (debugging only)")
    return out

#!/usr/bin/env bash
# Runs a sweep config on every host of a cluster: one process per host, each
# owning all of that host's accelerators. JAX's distributed runtime joins the
# processes (nst calls jax.distributed.initialize()); the sweep's member axis
# is then sharded over every device of every host, and each host writes the
# images of its own members. WORKDIR must be one directory every host sees
# (NFS, Lustre, a GCS FUSE mount...) for results.csv, the contact sheets and
# index.html (written by process 0) to show every member.
#
#   scripts/launch_sweep.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]
#
# Slurm, N hosts:
#   sbatch --nodes=N --ntasks-per-node=1 --gpus-per-node=8 \
#       scripts/launch_sweep.sh configs/sweeps/fig3.py /shared/runs/fig3
#   (inside the batch script this re-launches itself with srun, one task per
#   host; JAX reads the rest from Slurm's environment)
# Cloud TPU pod slice (every worker runs the same command):
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command \
#       "cd nst && NST_DISTRIBUTED=on scripts/launch_sweep.sh \
#        configs/sweeps/fig3.py /mnt/shared/runs/fig3"
# Anything else: start one process per host with JAX_COORDINATOR_ADDRESS
# (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID set.
#
# One machine with several GPUs needs none of this:
#   python -m nst.run --config configs/sweeps/fig3.py
# shards the members over all its GPUs.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
config=$1 workdir=$2
shift 2
python=${PYTHON:-python}
cmd=("$python" -m nst.run --config "$config" --workdir "$workdir"
     --distributed="${NST_DISTRIBUTED:-auto}" "$@")
if [[ -n "${SLURM_JOB_ID:-}" && -z "${SLURM_STEP_ID:-}" ]]; then
  exec srun --ntasks-per-node=1 "${cmd[@]}"  # from sbatch: one task per host
fi
exec "${cmd[@]}"

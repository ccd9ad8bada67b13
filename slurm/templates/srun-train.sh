#!/usr/bin/env bash
# Shared body of the plain sbatch templates (train-gpu.sbatch, train-cpu.sbatch): runs
# `python -m brainxl.distrib.entry CONFIG [key=value ...]` once per task with srun, one task per
# GPU (or per CPU rank). distrib/env.py reads the rank from SLURM_PROCID/SLURM_LOCALID;
# this script only sets the rendezvous (MASTER_ADDR/MASTER_PORT). DeepSpeed picks the GPU
# from LOCAL_RANK, so CUDA_VISIBLE_DEVICES is left alone.
#
# Time limits: submit with `--signal=B:USR2@SECONDS --requeue`; on USR2 the job requeues
# itself (at most $BRAINXL_MAX_REQUEUES times) and the rerun resumes from the run folder's
# latest checkpoint (the run folder is a hash of the config).
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: sbatch slurm/templates/train-gpu.sbatch CONFIG.yaml [key=value ...]" >&2
    exit 2
fi
PYTHON="${BRAINXL_PYTHON:-python}"
MAX_REQUEUES="${BRAINXL_MAX_REQUEUES:-3}"

master_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
if getent hosts "$master_node" >/dev/null 2>&1; then
    MASTER_ADDR="$master_node"
else  # node names outside DNS (e.g. the local test cluster): use SLURM's NodeAddr
    MASTER_ADDR="$(scontrol show node "$master_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')"
fi
export MASTER_ADDR
export MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
echo "[brainxl] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}: $SLURM_NNODES nodes," \
    "$SLURM_NTASKS ranks, master $MASTER_ADDR:$MASTER_PORT"

requeue() {
    if [ "${SLURM_RESTART_COUNT:-0}" -lt "$MAX_REQUEUES" ]; then
        echo "[brainxl] time limit near: requeueing job $SLURM_JOB_ID (it resumes from its checkpoint)"
        scontrol requeue "$SLURM_JOB_ID"
    else
        echo "[brainxl] time limit near and $MAX_REQUEUES requeues used: not requeueing"
    fi
}
trap requeue USR2

srun --kill-on-bad-exit=1 --cpu-bind=none "$PYTHON" -u -m brainxl.distrib.entry "$@" &
pid=$!
set +e
while true; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || exit "$rc"  # still running: a trapped USR2 woke us up
done

#!/bin/bash
# Language-model pretraining (lm.train, conf/lm_train.yaml) on a Slurm cluster: the same command as
#   torchrun --nproc_per_node=<GPUs> -m lm.train <overrides>
# on every node of the allocation, one torchrun per node (srun), with the c10d rendezvous on the
# first node of the job.
#
# Usage (from the repository root; the run folder must be on a file system every node sees, since
# each process writes its shard of a checkpoint there):
#   sbatch scripts/slurm_lm.sh profile=paper model=lm_flash_stu              # 1 node x 8 GPUs (below)
#   sbatch --nodes=2 scripts/slurm_lm.sh profile=paper model=lm_transformer  # 2 nodes x 8 GPUs
#   sbatch --gpus-per-node=4 scripts/slurm_lm.sh ...                          # GPUS_PER_NODE follows
#   LM_DRY_RUN=1 SLURM_JOB_NODELIST=n1 SLURM_NNODES=1 SLURM_JOB_ID=1 bash scripts/slurm_lm.sh ...  # print, run nothing
# Everything after the script name is passed to lm.train as Hydra overrides. The paper's batch is
# 524,288 tokens a step = micro_batch 1 x 8,192 tokens x accumulation x processes: with 8 GPUs the
# accumulation is 8 (Table XI); lm.train works it out from global_batch_tokens for any GPU count.
#
# Resuming: the run folder (paths.runs/lm/<profile>/<model>/<label>/) keeps checkpoints every
# checkpoint.every steps; submitting the same command again resumes from the latest one, with any
# number of nodes/GPUs. For jobs longer than the time limit, chain them:
#   jid=$(sbatch --parsable scripts/slurm_lm.sh ...); sbatch --dependency=afterany:$jid scripts/slurm_lm.sh ...
# Two minutes before the time limit Slurm signals this script (--signal=B:USR1@120 below); it sends
# SIGTERM to srun, which passes it to torchrun, which passes it to its processes (and kills them 30 s
# later): lm.train then saves a checkpoint at the end of the current step and exits. This is best
# effort (a step plus a checkpoint must fit in those seconds); checkpoint.every is the safety net.
#
# Environment (all optional): PYTHON (the interpreter with torch; default .venv/bin/python, else
# python3), GPUS_PER_NODE (default: Slurm's GPUs on the node, else 8), MASTER_PORT (default 29500),
# FSB_RUNS / FSB_DATA (where runs and token shards live, conf/paths/default.yaml), NCCL_* as usual.
#
#SBATCH --job-name=flash-stu-lm
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=16:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --output=%x-%j.out
set -euo pipefail

# sbatch runs a copy of this script from its spool folder: work from the submission folder
REPO="${FSB_REPO:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
cd "$REPO"
if [ ! -f lm/train.py ]; then
    echo "error: $REPO is not the repository root (no lm/train.py); submit from it or set FSB_REPO" >&2
    exit 1
fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

: "${SLURM_JOB_NODELIST:?not inside a Slurm job (submit with sbatch, or set the SLURM_* variables)}"
NNODES="${SLURM_NNODES:-1}"
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
if command -v scontrol >/dev/null 2>&1; then
    MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
else
    MASTER_ADDR="${SLURM_JOB_NODELIST%%,*}"
fi
MASTER_PORT="${MASTER_PORT:-29500}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

cmd=("$PYTHON" -m torch.distributed.run
     --nnodes="$NNODES" --nproc_per_node="$GPUS_PER_NODE"
     --rdzv_id="${SLURM_JOB_ID:-lm}" --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT"
     -m lm.train "$@")

echo "[slurm_lm] $(date -u +%FT%TZ) job ${SLURM_JOB_ID:-?}: $NNODES node(s) x $GPUS_PER_NODE process(es), rendezvous $MASTER_ADDR:$MASTER_PORT"
echo "[slurm_lm] srun ${cmd[*]}"
if [ -n "${LM_DRY_RUN:-}" ]; then
    exit 0
fi
# one torchrun per node; --kill-on-bad-exit stops the others when one fails
srun --ntasks-per-node=1 --kill-on-bad-exit=1 "${cmd[@]}" &
SRUN_PID=$!
trap 'echo "[slurm_lm] time limit near: asking lm.train to checkpoint and stop"; kill -TERM "$SRUN_PID" 2>/dev/null || true' USR1 TERM
set +e
wait "$SRUN_PID"; rc=$?
if kill -0 "$SRUN_PID" 2>/dev/null; then wait "$SRUN_PID"; rc=$?; fi  # the first wait returns on the trap
exit "$rc"

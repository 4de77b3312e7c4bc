#!/bin/bash
# CCFM on a SLURM cluster: `ccfm extract` on the GPUs of the first node, then `ccfm train` across all nodes.
#
# Every setting is an environment variable with a default (below); sbatch passes your environment on:
#   DATA=/data/norman.h5ad SCGPT=/models/scGPT_human RUN=runs/norman STEPS=200000 \
#     sbatch --nodes 2 --gpus-per-node 4 scripts/slurm_ccfm.sh
# Preemption and time limits: the job requeues itself (--requeue, and USR1 five minutes before the limit), and
# both commands run with --resume: extraction redoes only shards without a completion marker, training restarts
# from checkpoints/last.json. Step logs go to RUN/logs/<step>.<job id>.log; this launcher's to ccfm-<job id>.out.
#
#SBATCH --job-name=ccfm
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --output=ccfm-%j.out
##SBATCH --partition=EDIT-ME       # <- EDIT: your partition and account (remove one '#' to enable)
##SBATCH --account=EDIT-ME

set -euo pipefail

# --- environment: EDIT for your site -------------------------------------------------------------------------------
MODULES=${MODULES:-}              # <- modules to load, e.g. "cuda/12.4 python/3.11" (empty: none)
VENV=${VENV:-}                    # <- virtual environment with `pip install -e .` (empty: ccfm is already on PATH)
if [[ -n "$MODULES" ]]; then
    # shellcheck disable=SC2086  # one module per word
    module load $MODULES
fi
if [[ -n "$VENV" ]]; then
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
fi

# --- what to run -------------------------------------------------------------------------------------------------
cd "${SLURM_SUBMIT_DIR:-.}"
DATA=${DATA:-data/norman.h5ad}                        # perturbation .h5ad
SCGPT=${SCGPT:-models/scGPT_human}                    # checkpoint folder (`ccfm fetch-scgpt --out models/scGPT_human`)
STORE=${STORE:-cache/$(basename "$DATA" .h5ad).zarr}  # latent store: written by extract, streamed by train
RUN=${RUN:-runs/$(basename "$DATA" .h5ad)}            # run folder: checkpoints/, loss.csv, logs/
NODES=${NODES:-${SLURM_JOB_NUM_NODES:-1}}             # nodes for training (extraction uses the first one)
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-4}}  # one process per GPU
GENES=${GENES:-1000}                                  # panel size G
SPLIT=${SPLIT:-additive}                              # ccfm train --split
PRESET=${PRESET:-base}                                # ccfm train --preset
STEPS=${STEPS:-200000}                                # ccfm train --steps
BATCH_SIZE=${BATCH_SIZE:-48}                          # ccfm train --batch-size
EXTRACT_ARGS=${EXTRACT_ARGS:-}                        # more extract options, e.g. "--batch-size 64"
TRAIN_ARGS=${TRAIN_ARGS:-}                            # more train options, e.g. "--checkpoint-every 2000"
PORT=${PORT:-29500}                                   # rendezvous port on the first node
JOB_ID=${SLURM_JOB_ID:-local}
HEAD=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}" | sed -n 1p)  # rendezvous host (sed reads all: no SIGPIPE)
LOGS="$RUN/logs"
mkdir -p "$LOGS" "$(dirname "$STORE")"

# --- requeue and preemption ----------------------------------------------------------------------------------------
step_pid=""
stop_step() {  # end the running step; its work so far is kept (store shards, checkpoints)
    if [[ -n "$step_pid" ]]; then
        kill -TERM "$step_pid" 2>/dev/null || true
        wait "$step_pid" || true
    fi
}
on_usr1() {  # SLURM's warning before the time limit: stop, then queue the job again; --resume continues it
    echo "$(date '+%F %T') time limit near: requeueing job $JOB_ID"
    stop_step
    scontrol requeue "$JOB_ID"
    exit 0
}
on_term() {  # preemption or scancel; with --requeue SLURM queues the job again by itself
    echo "$(date '+%F %T') terminated: stopping the running step"
    stop_step
    exit 143
}
trap on_usr1 USR1
trap on_term TERM

run_step() {  # run_step NAME COMMAND...: in the background (so the traps fire at once), logged in RUN/logs
    local log="$LOGS/$1.$JOB_ID.log"
    shift
    echo "$(date '+%F %T') $*" | tee -a "$log"
    "$@" >>"$log" 2>&1 &
    step_pid=$!
    wait "$step_pid"
    step_pid=""
}

# --- 1. latent store, on the first node's GPUs ---------------------------------------------------------------------
if [[ -f "$STORE/progress/complete.json" ]]; then
    echo "latent store $STORE is complete: skipping extraction (set STORE to another path to extract again)"
else
    # A requeued job may run on other nodes, where the lock its killed predecessor left names a foreign host.
    # SLURM runs one instance of a job at a time, so a lock left while this job id owned the store is stale.
    lock_flag=()
    if [[ -f "$STORE.lock" && "$(cat "$STORE.job" 2>/dev/null)" == "$JOB_ID" ]]; then
        lock_flag=(--break-lock)
    fi
    echo "$JOB_ID" >"$STORE.job"
    # shellcheck disable=SC2086  # EXTRACT_ARGS: one option per word
    run_step extract srun --nodes 1 --ntasks 1 \
        torchrun --standalone --nnodes 1 --nproc-per-node "$GPUS_PER_NODE" \
        --module cli extract "$DATA" --scgpt "$SCGPT" --out "$STORE" --genes "$GENES" --device cuda \
        --resume "${lock_flag[@]}" $EXTRACT_ARGS
fi

# --- 2. training, across all nodes (rendezvous on the first node) --------------------------------------------------
# shellcheck disable=SC2086  # TRAIN_ARGS: one option per word
run_step train srun --nodes "$NODES" --ntasks-per-node 1 \
    torchrun --nnodes "$NODES" --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" --rdzv-id "ccfm-$JOB_ID" \
    --module cli train "$STORE" --data "$DATA" --out "$RUN" --split "$SPLIT" --preset "$PRESET" \
    --steps "$STEPS" --batch-size "$BATCH_SIZE" --device cuda --resume $TRAIN_ARGS

echo "$(date '+%F %T') done: run folder $RUN (next: ccfm generate $RUN, ccfm evaluate $RUN)"

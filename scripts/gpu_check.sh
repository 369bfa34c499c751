#!/usr/bin/env bash
# What only a GPU shows, in one script for a GPU machine with no network (`make gpu-check`):
#   install   the wheels of .whl/ (make gpu-wheels, beforehand, where there is network) into /tmp/site
#   tests     the CUDA fast paths against the plain paths (tests/test_gpu_paths.py) and batched
#             trials on CUDA against one-by-one trials (tests/test_trials.py)
#   table1    Table I's time per train step of the four robotics models on the GPU (paper profile)
#   speed     the speed benchmark at the paper's sizes (mixer time vs length to 64K, bandwidth of
#             the STU convolution, train steps), with a time budget
#   trials    batched trials vs one by one on the GPU (make bench-trials)
#   fig2      Figure 2 at the paper profile, each model's 16 trials batched (trial_batch=16)
# Usage: bash scripts/gpu_check.sh [STEP ...]   (default: every step, in this order). Settings (env):
#   GPU_CHECK_BUDGET_S  seconds for the whole check (0 = none); each step is also capped by its own
#                       limit (TIMEOUT_<STEP>, e.g. TIMEOUT_TABLE1=120), Figure 2 gets the rest
#   SPEED_BUDGET_S      the speed benchmark's own budget (cells after it are "skipped" rows)
#   SPEED_ARGS          extra overrides of the speed benchmark, e.g. "profile.speed.compile=[false]"
# Each step
# writes its results with their records under results/gpu/ and plots/gpu/ (FSB_RESULTS/FSB_PLOTS),
# its log under results/gpu/logs/, and, when $OUT is set (the device tool), everything is packed
# into $OUT/gpu_check.tar.gz to be unpacked in the repository and committed. Without a CUDA device
# every step is skipped with the reason (this is what CI and the tests see).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_PY:-python3}
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(install tests table1 speed trials fig2)
export FSB_RESULTS=${FSB_RESULTS:-$PWD/results/gpu} FSB_PLOTS=${FSB_PLOTS:-$PWD/plots/gpu}
export FSB_RUNS=${FSB_RUNS:-/tmp/fsb_gpu_runs} FSB_OFFLINE=1 PYTHONUNBUFFERED=1
LOGS=$FSB_RESULTS/logs
mkdir -p "$LOGS"
log() { echo "[gpu-check] $*" | tee -a "$LOGS/gpu_check.log"; }

install() {
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { log "install: pip failed"; return 1; }
    # mamba_ssm/__init__ imports the Mamba-1 CUDA extension even when only its Triton (Mamba-2)
    # kernels are used; a stub lets the import succeed and fails loudly if Mamba-1's scan is called
    [ -e /tmp/site/selective_scan_cuda.py ] || printf '%s\n' \
      'def __getattr__(name):' \
      '    raise ImportError("selective_scan_cuda was not built (MAMBA_SKIP_CUDA_BUILD): Mamba-1 scan unavailable")' \
      > /tmp/site/selective_scan_cuda.py
    # mamba_ssm/__init__ also imports its generation utilities, which need names transformers 5 removed
    # (GreedySearchDecoderOnlyOutput); the suite uses only the SSD kernels (mamba_ssm.ops.triton), so the
    # installed copy's __init__ keeps its version and imports the rest only when asked for
    if [ -f /tmp/site/mamba_ssm/__init__.py ] && ! grep -q "imported on demand" /tmp/site/mamba_ssm/__init__.py; then
      v=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' /tmp/site/mamba_ssm/__init__.py)
      printf '%s\n' "__version__ = \"$v\"" \
        '# gpu_check.sh: the top-level names are imported on demand (see scripts/gpu_check.sh)' \
        '_WHERE = {"selective_scan_fn": "mamba_ssm.ops.selective_scan_interface",' \
        '          "mamba_inner_fn": "mamba_ssm.ops.selective_scan_interface",' \
        '          "Mamba": "mamba_ssm.modules.mamba_simple", "Mamba2": "mamba_ssm.modules.mamba2",' \
        '          "MambaLMHeadModel": "mamba_ssm.models.mixer_seq_simple"}' \
        'def __getattr__(name):' \
        '    if name not in _WHERE:' \
        '        raise AttributeError(name)' \
        '    import importlib' \
        '    return getattr(importlib.import_module(_WHERE[name]), name)' > /tmp/site/mamba_ssm/__init__.py
    fi
    log "install: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')into /tmp/site"
  else
    log "install: no .whl/ folder (make gpu-wheels where there is network); using what is installed"
  fi
}
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}

cuda() { "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
# Each step runs under a time limit (seconds; TIMEOUT_<STEP>=N overrides one, 0 = none), so that one slow
# step cannot eat a lease of a few minutes and the results are still packed: a run finished before the
# limit keeps its record, and a cut-off sweep is reported from the records it has.
# GPU_CHECK_BUDGET_S=N (0 = none) caps the whole check: a device lease of a few minutes then still gets
# the packed results of every step that ran (the later steps get what is left; Figure 2 the rest).
BUDGET=${GPU_CHECK_BUDGET_S:-0}
declare -A LIMIT=([tests]=150 [table1]=120 [speed]=$(( ${SPEED_BUDGET_S:-420} + 60 )) [trials]=150 [fig2]=0)
run() {  # run <step> <command...>: its output to the step's log; a failure is logged, the next step goes on
  local name=$1; shift
  local var=TIMEOUT_${name^^}
  local limit=${!var:-${LIMIT[$name]:-0}}
  if [ "$BUDGET" -gt 0 ]; then  # the whole check's budget, less a reserve for packing, caps every step
    local left=$(( BUDGET - SECONDS - 20 ))
    [ $left -lt 10 ] && { log "$name: skipped: the check's budget of $BUDGET s is used up"; return 0; }
    { [ "$limit" -eq 0 ] || [ "$limit" -gt $left ]; } && limit=$left
  fi
  log "$name: $* (time limit: ${limit} s, 0 = none)"
  local t0=$SECONDS
  if [ "$limit" -gt 0 ]; then timeout --signal=INT --kill-after=20 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  else "$@" > "$LOGS/$name.log" 2>&1; fi
  local rc=$?
  [ $rc -eq 124 ] && log "$name: cut off at its time limit of $limit s"
  log "$name: exit $rc after $((SECONDS - t0)) s (log: results/gpu/logs/$name.log)"
  tail -5 "$LOGS/$name.log"
  return 0
}
pack() {
  if [ -n "${OUT:-}" ]; then
    tar -czf "$OUT/gpu_check.tar.gz" -C "$PWD" "$(realpath --relative-to="$PWD" "$FSB_RESULTS")" \
      "$(realpath --relative-to="$PWD" "$FSB_PLOTS")" 2>/dev/null && log "packed into \$OUT/gpu_check.tar.gz"
  fi
}

for step in "${STEPS[@]}"; do
  case $step in
    install) install; [ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} ;;
    tests|table1|speed|trials|fig2)
      if ! cuda; then log "$step: skipped: no CUDA device here (torch.cuda.is_available() is False)"; continue; fi
      case $step in
        tests)  run tests "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_paths.py tests/test_trials.py -k "cuda or gpu or flash or mamba or fft" ;;
        table1) run table1 "$PY" -m benchmarks.reproduce experiment=table1_timing profile=paper device=cuda ;;
        speed)  run speed "$PY" -m benchmarks.reproduce experiment=speed profile=paper device=cuda \
                  profile.speed.time_budget_s=${SPEED_BUDGET_S:-420} ${SPEED_ARGS:-} ;;
        trials) run trials "$PY" -m benchmarks.reproduce experiment=trial_batching profile=paper device=cuda \
                  trial_batching.steps=20 trial_batching.warmup=5 ;;
        fig2)   run fig2 "$PY" -m benchmarks.reproduce experiment=fig2 profile=paper device=cuda trial_batch=16 \
                  batch_trials=true progress=false checkpoint_every=1000 hydra/launcher=basic
                # a sweep cut off at its limit: its finished runs' summary, figure and claim check
                [ -s "$FSB_RESULTS/fig2/paper/records.jsonl" ] && [ ! -s "$FSB_RESULTS/fig2/paper/summary.md" ] && \
                  run fig2_report "$PY" -m benchmarks.report experiment=fig2 profile=paper ;;
      esac ;;
    *) log "unknown step '$step'; valid: install tests table1 speed trials fig2"; exit 2 ;;
  esac
done
pack
exit 0

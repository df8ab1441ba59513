#!/usr/bin/env bash
# The sweeps behind docs/results/, at one training budget, N jobs at a time, into ROOT:
#   bash scripts/run_studies.sh ROOT EPOCHS N_JOBS STUDY...
# STUDY is one of: synthetic, neglect, balance, balance_mfeat, balance_shared, competition, competition_aux,
# real, real_watch, remedy and remedy_methods (its five settings; docs/results/remedy_study).
# EPOCHS is the protocol's budget (50) or twice it (100); the conclusions at both are
# compared in docs/results/README.md. With DEADLINE (seconds since the epoch) set, a sweep that would run
# past it is stopped there; rerunning the same command resumes every unfinished job. EXTRA adds overrides to
# every sweep (EXTRA="balance=none" runs only that column of the balance grids); PYTHON names the interpreter;
# LAUNCHER=stacked trains the jobs of each process as one stacked model (the same numbers, bitwise; joblib by
# default).
# Then: python scripts/aggregate.py ROOT/<study> --out docs/results/<study>_e<EPOCHS> [--cross balance]
set -uo pipefail
root=$1 epochs=$2 jobs=$3
shift 3
common=("hydra/launcher=${LAUNCHER:-joblib}" "hydra.launcher.n_jobs=$jobs" trainer.num_threads=1 trainer.device=cpu logger=none
        "trainer.epochs=$epochs")
sweep() {  # sweep NAME OVERRIDES...: one Hydra multirun into ROOT/NAME
    local name=$1
    shift
    local limit=()
    if [[ -n "${DEADLINE:-}" ]]; then
        local left=$((DEADLINE - $(date +%s)))
        ((left > 10)) || { echo "skipped $name: deadline"; return; }
        limit=(timeout "$left")
    fi
    mkdir -p "$(dirname "$root/$name")"
    echo "== $name ($(date +%T))"
    # shellcheck disable=SC2086  # EXTRA is a list of overrides
    "${limit[@]}" "${PYTHON:-python}" -m mmal.train -m "$@" "${common[@]}" ${EXTRA:-} "hydra.sweep.dir=$root/$name" \
        >"$root/$name.log" 2>&1
    echo "   rc $? ($(date +%T)): $(find "$root/$name" -name summary.json | wc -l) jobs finished"
}
mkdir -p "$root"
for study in "$@"; do
    case $study in
        synthetic) sweep synthetic_study +experiment=synthetic_study ;;
        neglect) sweep neglect +experiment=neglect_study ;;
        balance) sweep balance/synthetic +experiment=balance_study ;;
        balance_mfeat) sweep balance/mfeat +experiment=balance_study_mfeat ;;
        balance_shared)
            sweep balance/synthetic_shared +experiment=balance_study fusion=shared balance=none,mla
            sweep balance/mfeat_shared +experiment=balance_study_mfeat fusion=shared balance=none,mla ;;
        competition) sweep competition +experiment=competition_study ;;
        competition_aux) sweep competition_aux +experiment=competition_study_aux ;;
        real) sweep real +experiment=real_study ;;
        real_watch) sweep real_watch +experiment=real_study_watch ;;
        remedy)
            sweep remedy/competition +experiment=remedy_study pitfall=competition dataset.num_classes=10
            sweep remedy/control +experiment=remedy_study pitfall=none dataset.num_classes=10
            sweep remedy/none +experiment=remedy_study pitfall=none
            sweep remedy/mfeat +experiment=remedy_study dataset=mfeat pitfall=none al.initial_size=10 al.query_size=10
            sweep remedy/watch +experiment=remedy_study dataset=watch pitfall=none ;;
        remedy_methods)  # the training methods beyond modality dropout, with random and BADGE; MMPareto needs the
            # auxiliary heads, a remedy of their own, so it runs beside plain training with them
            m=(balance=opm,umt query=random,badge) h=(balance=none,mmpareto model.aux_heads=true query=random,badge)
            sweep remedy/competition_methods +experiment=remedy_study "${m[@]}" pitfall=competition dataset.num_classes=10
            sweep remedy/competition_heads +experiment=remedy_study "${h[@]}" pitfall=competition dataset.num_classes=10
            sweep remedy/control_methods +experiment=remedy_study "${m[@]}" pitfall=none dataset.num_classes=10
            sweep remedy/control_heads +experiment=remedy_study "${h[@]}" pitfall=none dataset.num_classes=10
            sweep remedy/none_methods +experiment=remedy_study "${m[@]}" pitfall=none
            sweep remedy/mfeat_methods +experiment=remedy_study "${m[@]}" dataset=mfeat pitfall=none \
                al.initial_size=10 al.query_size=10
            sweep remedy/watch_methods +experiment=remedy_study "${m[@]}" dataset=watch pitfall=none ;;
        *) echo "unknown study: $study" >&2; exit 2 ;;
    esac
done

# Shared by scripts/mp_table.sh and scripts/prune_table.sh, sourced once they have set ASSETS,
# OUT, SETS, WHITTLE, THREADS and BATCH and defined `die`: the test sets' manifests, timing of a
# command, and evaluation of a row on every set.

# The manifest of test set $1.
manifest() {
    case $1 in
        real) echo "$ASSETS/data/real.jsonl" ;;
        *) echo "$ASSETS/data/$1/manifest.jsonl" ;;
    esac
}

# Every set of SETS has its manifest.
check_sets() {
    local set
    for set in "${SETS[@]}"; do
        [[ -f $(manifest "$set") ]] || die "no manifest for set $set: run scripts/make_splits.sh"
    done
}

# Time a command into OUT/NAME.seconds (wall) and OUT/NAME.cpu-seconds (user + system CPU of the
# command and its children: less sensitive than wall time to other work on a shared machine),
# only when it succeeds.
timed() { # name command...
    local name=$1 start
    shift
    start=$(date +%s.%N)
    python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
used = resource.getrusage(resource.RUSAGE_CHILDREN)
if rc == 0:
    with open(sys.argv[1], "w") as f:
        f.write(f"{used.ru_utime + used.ru_stime:.1f}\n")
sys.exit(rc)' "$OUT/$name.cpu-seconds" "$@"
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)" \
        >"$OUT/$name.seconds"
}

# Evaluate row $1 (model file or folder $2) on every set into OUT/$1/SET, unless done.
evaluate() { # name model-path
    local set dir
    for set in "${SETS[@]}"; do
        dir=$OUT/$1/$set
        if [[ ! -f $dir/summary.json ]]; then
            echo "   eval $1 on $set" >&2
            "$WHITTLE" --threads "$THREADS" eval "$2" "$(manifest "$set")" --batch-size "$BATCH" --out "$dir" >/dev/null \
                || die "eval $1 on $set failed"
        fi
    done
}

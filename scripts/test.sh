#!/usr/bin/env bash
# The test command from README.md: fetch the cached test assets (Whisper tiny.en, the real
# utterances, the spelling map), then run every test of the workspace. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --models-only
export WHITTLE_REQUIRE_ASSETS=1
export WHITTLE_SPELLINGS="${WHITTLE_ASSETS:-$PWD/.assets}/text/english.json"
cargo test --workspace --release --locked 2>&1

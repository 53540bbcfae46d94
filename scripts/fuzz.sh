#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz, nightly toolchain) of the parsers that
# read outside input: /oauth/token's form, /v1/crypto's JSON, every JWT decoder, the ciphertext
# decoder and the configuration loader. Each target runs SECONDS (default 20) from the committed
# seeds in fuzz/seeds/<target>; what it learns goes to a scratch corpus. A crash fails the run
# and leaves its input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(token_form crypto_json jwt ciphertext config)
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cd fuzz
cargo +nightly fuzz build -s none
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run -s none "$target" "$scratch/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target FAILED (input saved under fuzz/artifacts/$target/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -E '#[0-9]+[[:space:]]+DONE' "$log" | grep -o 'cov: [0-9]*' | tail -n 1 || echo "cov: ?")
  echo "fuzz: $target ok: $runs executions in ${seconds}s, $cov edges"
done

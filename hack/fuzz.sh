#!/usr/bin/env bash
# Coverage-guided fuzzing of the admission path (decode, decide, encode) with libFuzzer.
# usage: hack/fuzz.sh [RUNS]   (default 10,000,000 inputs)
#
# Needs a nightly toolchain (libFuzzer's instrumentation); installs it with rustup and
# cargo-fuzz into the tool cache when missing. Seeds come from fuzz/seeds; what
# libFuzzer finds grows fuzz/corpus (not committed). A crash leaves its input in
# fuzz/artifacts and fails the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-10000000}
cache=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
version=0.13.1

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
	rustup toolchain install nightly --profile minimal
fi
if [[ ! -x $cache/cargo-fuzz-$version/bin/cargo-fuzz ]]; then
	cargo install cargo-fuzz --version "$version" --locked --root "$cache/cargo-fuzz-$version"
fi
export PATH=$cache/cargo-fuzz-$version/bin:$PATH
mkdir -p "$root/fuzz/corpus/admission"
cd "$root/fuzz"
start=$SECONDS
cargo +nightly fuzz run admission corpus/admission seeds/admission -- \
	-runs="$runs" -max_len=262144 -print_final_stats=1 2>&1 | tee /tmp/enclave-fuzz.log | grep -E "Done|stat::|ERROR|panicked|#[0-9]+ +(INITED|DONE)"
echo "fuzz: $runs inputs in $((SECONDS - start)) s (log: /tmp/enclave-fuzz.log)"

#!/bin/sh
# Builds the safetensors libFuzzer target with clang++ (ASan + UBSan) and runs it corpus-less for
# ${1:-20} seconds. Exit status 0 = no crash found. Needs clang and libclang-rt-<ver>-dev.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-20}
out=${FUZZ_OUT:-$(mktemp -d)}
CXX=${CXX_FUZZ:-clang++}
$CXX -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer \
  -I"$root/lib" "$here/fuzz_safetensors.cpp" "$root/lib/latent/safetensors.cpp" \
  $(pkg-config --cflags --libs json-glib-1.0) -o "$out/fuzz_safetensors"
cd "$out"
exec ./fuzz_safetensors -dict="$here/safetensors.dict" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1

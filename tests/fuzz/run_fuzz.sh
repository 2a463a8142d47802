#!/bin/sh
# Builds one libFuzzer target with clang++ (ASan + UBSan) and runs it corpus-less for SECONDS.
#   tests/fuzz/run_fuzz.sh <safetensors|json|protocol|cache_index|workflow|control> [SECONDS=15]
# Exit status 0 = no crash found. Needs clang and libclang-rt-<ver>-dev. FUZZ_OUT keeps the build
# and any crash reproducer (default: a temporary directory).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${1:?usage: run_fuzz.sh <target> [seconds]}
secs=${2:-15}
out=${FUZZ_OUT:-$(mktemp -d)}
CXX=${CXX_FUZZ:-clang++}
# A json-glib/GLib critical (a getter used on the wrong node type) is a bug too: make it a crash.
export G_DEBUG=fatal-criticals
L="$root/lib"
pkgs="json-glib-1.0"
dict=""
case "$target" in
  safetensors) srcs="$L/latent/safetensors.cpp $L/json/json.cpp"; dict="$here/safetensors.dict" ;;
  json)        srcs="$L/json/json.cpp"; dict="$here/json.dict" ;;
  protocol)    srcs="$L/comfy/protocol.cpp $L/comfy/error.cpp $L/json/json.cpp"; dict="$here/json.dict" ;;
  cache_index) srcs="$L/cache/store.cpp $L/image/image.cpp $L/json/json.cpp"; pkgs="$pkgs libpng"; dict="$here/json.dict" ;;
  workflow)    srcs="$L/comfy/workflow.cpp $L/comfy/error.cpp $L/json/json.cpp"; dict="$here/json.dict" ;;
  control)     srcs="$root/tools/dreamwindow/protocol.cpp $L/json/json.cpp"; dict="$here/app.dict" ;;
  *) echo "run_fuzz.sh: unknown target '$target'" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
$CXX -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer \
  -I"$L" "$here/fuzz_$target.cpp" $srcs $(pkg-config --cflags --libs $pkgs) -o "$out/fuzz_$target"
cd "$out"
# libFuzzer exits 77 on a crash by default, which meson reads as "skipped": make a crash a failure.
set -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -error_exitcode=1
[ -n "$dict" ] && set -- -dict="$dict" "$@"
exec "./fuzz_$target" "$@"

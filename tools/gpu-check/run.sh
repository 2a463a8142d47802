#!/usr/bin/env bash
# Builds and measures the GPU path of lib/latent (issue 12). See tools/gpu-check/README.md.
#
#   tools/gpu-check/run.sh [--debs DIR] [--shared DIR] [--build DIR] [--libtorch DIR] [--jobs N]
#       Full run: builds lib/latent (+ lib/interp), its unit tests and bench/latent in a latent-only
#       meson build (-Dlatent_only=true: no GStreamer, no libsoup) against the LibTorch of python3's
#       torch package (a PyTorch wheel) or, without one, the system's (Debian libtorch-dev); then
#       runs the tests and prints the table. --debs: a folder made by prepare.sh (GLib, json-glib,
#       libpng, pkgconf .debs + GoogleTest sources), unpacked under the build dir when the machine
#       lacks them. --shared: the folder holding models/ and images/ (default ../shared).
#   tools/gpu-check/run.sh --prebuilt BUILD [--shared DIR]
#       The same checks on the binaries of an existing full build (CI's CPU dry run; no compiling),
#       plus a configure-only check of the latent-only build.
#
# Without CUDA (a CPU-only LibTorch or no GPU) it is a dry run: the CUDA tests and the GPU memory
# check are skipped, saying so, and the table is measured on the CPU for a small subset (256², batch 1, fp32).
# Exit status: 0 when everything that ran passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
debs="" shared="$root/../shared" build="" libtorch="" prebuilt="" jobs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --debs) debs=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --libtorch) libtorch=$2; shift 2 ;;
    --prebuilt) prebuilt=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
shared=$(cd "$shared" && pwd) || { echo "run.sh: shared folder '$shared' not found (--shared)" >&2; exit 2; }
export DW_SHARED_DIR="$shared"
t_start=$(date +%s)
say() { printf '\n=== %s (%ds)\n' "$*" "$(( $(date +%s) - t_start ))"; }

# ---- the checks, on a set of binaries ----
# run_checks TEST_DIR BENCH
run_checks() {
  local tdir=$1 bench=$2 status=0
  say "unit tests (CUDA tests skip without a CUDA LibTorch + GPU, saying why)"
  for t in test_latent_gpu test_latent test_vfi; do
    [ -x "$tdir/$t" ] || continue
    if [ -n "$prebuilt" ] && [ "$t" != test_latent_gpu ]; then continue; fi  # CI runs those itself
    echo "--- $t"
    "$tdir/$t" --gtest_brief=1 2>&1 | grep -vE '^\[ +(RUN|OK) +\]' || status=1
  done
  if [ ! -x "$bench" ]; then
    echo "run.sh: $bench missing (built without LibTorch?)" >&2
    return 1
  fi
  if "$tdir/test_latent_gpu" --gtest_filter='Cuda.DeviceHonoured' 2>&1 | grep -q '\[  PASSED  \] 1 test'; then
    say "TAEF2 table on cuda:0 (256/512/1024, batch 1/4/16, fp32/fp16/bf16; 10000 decodes)"
    "$bench" --table --device cuda:0 --iters 20 --decodes 10000 || status=1
  else
    say "TAEF2 table: CUDA part skipped (no CUDA in this LibTorch or no GPU): CPU dry run, small subset"
    "$bench" --table --device cpu --sizes 256 --batches 1 --precisions fp32 --warmup 1 --iters 1 --decodes 100 || status=1
  fi
  return $status
}

if [ -n "$prebuilt" ]; then
  prebuilt=$(cd "$prebuilt" && pwd)
  status=0
  run_checks "$prebuilt/tests/unit" "$prebuilt/bench/latent" || status=1
  say "latent-only configure check (-Dlatent_only=true, no GStreamer/libsoup needed)"
  tmp=$(mktemp -d)
  if meson setup "$tmp/b" "$root" -Dlatent_only=true >"$tmp/setup.log" 2>&1; then
    grep -E 'LibTorch|latent' "$tmp/setup.log" | sed 's/^/  /'
    echo "latent-only configure: ok"
  else
    tail -20 "$tmp/setup.log"
    echo "latent-only configure: FAILED" >&2
    status=1
  fi
  rm -rf "$tmp"
  say "done, status $status"
  exit $status
fi

# ---- full run: build ----
build=${build:-$root/build-gpu-check}
mkdir -p "$build"
build=$(cd "$build" && pwd)
prefix="$build/prefix"
jobs=${jobs:-$(nproc)}
# meson and ninja may be pip packages of python3's environment (the GPU machine's venv).
py_bin=$(python3 -c 'import sys, os; print(os.path.dirname(sys.executable))' 2>/dev/null || true)
ninja_bin=$(python3 -c 'import ninja; print(ninja.BIN_DIR)' 2>/dev/null || true)
export PATH="$PATH${py_bin:+:$py_bin}${ninja_bin:+:$ninja_bin}"
meson_cmd=(meson)
command -v meson >/dev/null 2>&1 || meson_cmd=(python3 -m mesonbuild.mesonmain)

# LibTorch: python3's torch package (a wheel holds include/, lib/, share/cmake/Torch) or the system's.
if [ -z "$libtorch" ] && python3 -c 'import torch' >/dev/null 2>&1; then
  libtorch=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
  echo "LibTorch: $libtorch (torch $(python3 -c 'import torch; print(torch.__version__, "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)'))"
fi
abi=1
if [ -n "$libtorch" ]; then
  if python3 -c 'import torch' >/dev/null 2>&1; then
    abi=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  elif nm -D --defined-only "$libtorch/lib/libc10.so" | grep -q __cxx11; then abi=1; else abi=0; fi
  export LD_LIBRARY_PATH="$libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  echo "LibTorch: the system's (no torch package for python3)"
fi

# Carried packages: unpack the .debs under $prefix and point pkg-config there.
if [ -n "$debs" ]; then
  debs=$(cd "$debs" && pwd)
  say "unpacking $(ls "$debs"/*.deb | wc -l) .debs from $debs under $prefix"
  rm -rf "$prefix" && mkdir -p "$prefix"
  for d in "$debs"/*.deb; do
    if command -v dpkg-deb >/dev/null 2>&1; then
      dpkg-deb -x "$d" "$prefix"
    else
      (cd "$prefix" && ar p "$d" "$(ar t "$d" | grep '^data.tar')" | tar -x --auto-compress -f - 2>/dev/null ||
        { echo "run.sh: cannot unpack $d (no dpkg-deb; ar/tar failed)" >&2; exit 1; })
    fi
  done
  pc_dirs="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig:$prefix/usr/lib/pkgconfig"
  # Debian's .pc files say prefix=/usr: make them point into $prefix.
  for pc in "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$prefix"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] && sed -i -e "s|=/usr|=$prefix/usr|g" -e "s| /usr/| $prefix/usr/|g" "$pc"
  done
  libpath="$prefix/usr/lib/x86_64-linux-gnu:$prefix/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LDFLAGS="${LDFLAGS:+$LDFLAGS }-Wl,-rpath-link,$prefix/usr/lib/x86_64-linux-gnu -Wl,-rpath-link,$prefix/lib/x86_64-linux-gnu -Wl,-rpath,$prefix/usr/lib/x86_64-linux-gnu -Wl,-rpath,$prefix/lib/x86_64-linux-gnu"
  export PKG_CONFIG_LIBDIR="$pc_dirs"
  if ! command -v pkg-config >/dev/null 2>&1; then export PKG_CONFIG="$prefix/usr/bin/pkgconf"; fi
  # GoogleTest from Debian's sources, built with this compiler and LibTorch's C++ ABI.
  if [ -d "$debs/googletest" ]; then
    say "building GoogleTest (ABI $abi)"
    g="$prefix/gtest" && mkdir -p "$g/lib"
    for f in gtest-all gtest_main; do
      ${CXX:-c++} -std=c++17 -O2 -fPIC -pthread -D_GLIBCXX_USE_CXX11_ABI=$abi -I"$debs/googletest/include" \
        -I"$debs/googletest" -c "$debs/googletest/src/$f.cc" -o "$g/$f.o" &
    done
    wait
    ar rcs "$g/lib/libgtest.a" "$g/gtest-all.o" && ar rcs "$g/lib/libgtest_main.a" "$g/gtest_main.o"
    mkdir -p "$prefix/usr/lib/x86_64-linux-gnu/pkgconfig"
    printf 'Name: gtest\nDescription: GoogleTest (built by run.sh)\nVersion: 1.12.1\nCflags: -I%s -pthread\nLibs: -L%s -lgtest -pthread\n' \
      "$debs/googletest/include" "$g/lib" >"$prefix/usr/lib/x86_64-linux-gnu/pkgconfig/gtest.pc"
    printf 'Name: gtest_main\nDescription: GoogleTest main\nVersion: 1.12.1\nRequires: gtest\nLibs: -L%s -lgtest_main -pthread\n' \
      "$g/lib" >"$prefix/usr/lib/x86_64-linux-gnu/pkgconfig/gtest_main.pc"
  fi
fi

# The C++ standard LibTorch's headers need (c++17 for 1.13 .. 2.x; newer may ask for c++20).
std=c++17
if [ -n "$libtorch" ]; then
  echo '#include <ATen/ATen.h>' >"$build/std_probe.cpp"
  if ! ${CXX:-c++} -std=c++17 -fsyntax-only -D_GLIBCXX_USE_CXX11_ABI=$abi -I"$libtorch/include" \
      -I"$libtorch/include/torch/csrc/api/include" "$build/std_probe.cpp" 2>"$build/std_probe.log"; then
    std=c++20
    echo "LibTorch headers need more than C++17 ($(head -c 200 "$build/std_probe.log")...): using $std"
  fi
fi

say "configure (latent-only, $std, LibTorch ${libtorch:-system}, cxx11 ABI $abi)"
opts=(-Dlatent_only=true -Dbuildtype=release -Dcpp_std=$std -Dtorch=enabled)
[ -n "$libtorch" ] && opts+=(-Dlibtorch_dir="$libtorch" -Dlibtorch_cxx11_abi=$([ "$abi" = 1 ] && echo true || echo false))
if [ -f "$build/b/build.ninja" ]; then
  "${meson_cmd[@]}" setup --reconfigure "$build/b" "$root" "${opts[@]}" >"$build/setup.log" 2>&1 || { tail -30 "$build/setup.log"; exit 1; }
else
  "${meson_cmd[@]}" setup "$build/b" "$root" "${opts[@]}" >"$build/setup.log" 2>&1 || { tail -30 "$build/setup.log"; exit 1; }
fi
sed -n '/Models/,/^$/p' "$build/setup.log"
say "build (-j$jobs)"
"${meson_cmd[@]}" compile -C "$build/b" -j "$jobs" >"$build/compile.log" 2>&1 || { grep -E 'error|Error' -A3 "$build/compile.log" | head -60; exit 1; }
status=0
run_checks "$build/b/tools/gpu-check" "$build/b/tools/gpu-check/latent" || status=1
say "done, status $status"
exit $status

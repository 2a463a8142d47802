#!/bin/sh
# Kept for old command lines: the safetensors target of run_fuzz.sh, for ${1:-20} seconds.
exec "$(cd "$(dirname "$0")" && pwd)/run_fuzz.sh" safetensors "${1:-20}"

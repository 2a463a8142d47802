#!/usr/bin/env bash
# Records N keyframes of the chain (with the VAE when the TAEF2 weights exist, else blend) into a WebM
# file with vp8enc + webmmux. Needs no display.
#   examples/pipelines/record_webm.sh [builddir] [num-keyframes] [out.webm]
set -euo pipefail
BUILD=${1:-build}
COUNT=${2:-30}
OUT=${3:-dreamwindow.webm}
MODELS=${MODELS:-$(cd "$(dirname "$0")/../.." && pwd)/../shared/models}
export GST_PLUGIN_PATH="$BUILD/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
SIM_LOG=$(mktemp)
"$BUILD/tools/comfy-sim/comfy-sim" --port 0 --latency-ms 200 >"$SIM_LOG" &
SIM_PID=$!
trap 'kill $SIM_PID 2>/dev/null || true; rm -f "$SIM_LOG"' EXIT
for _ in $(seq 100); do URL=$(grep -o 'http://[0-9.:]*' "$SIM_LOG" || true); [ -n "$URL" ] && break; sleep 0.1; done
if [ -f "$MODELS/taef2_encoder.safetensors" ] && [ -f "$MODELS/taef2_decoder.safetensors" ]; then
  VAE="vaeinterp backend=taesd encoder=$MODELS/taef2_encoder.safetensors decoder=$MODELS/taef2_decoder.safetensors"
else
  echo "no TAEF2 weights in $MODELS: using the blend backend"
  VAE="vaeinterp backend=blend"
fi
gst-launch-1.0 -e comfykeyframesrc server="$URL" num-keyframes="$COUNT" width=256 height=256 \
  ! cachetap ! $VAE frames=-1 target-fps=25/1 ! flightbuffer \
  ! videoconvert ! vp8enc deadline=1 ! webmmux ! filesink location="$OUT"
echo "wrote $OUT"

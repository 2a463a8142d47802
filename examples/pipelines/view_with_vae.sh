#!/usr/bin/env bash
# The whole chain with a real VAE (TAEF2 weights from ../shared/models) to a window:
#   comfykeyframesrc ! cachetap ! vaeinterp (taesd) ! flightbuffer ! videoconvert ! autovideosink
#   examples/pipelines/view_with_vae.sh [builddir] [comfy-url]
# Without a comfy-url the built-in simulator is started.
set -euo pipefail
. "$(dirname "$0")/need_window_sink.sh"
BUILD=${1:-build}
MODELS=${MODELS:-$(cd "$(dirname "$0")/../.." && pwd)/../shared/models}
export GST_PLUGIN_PATH="$BUILD/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
URL=${2:-}
if [ -z "$URL" ]; then
  SIM_LOG=$(mktemp)
  "$BUILD/tools/comfy-sim/comfy-sim" --port 0 --latency-ms 500 >"$SIM_LOG" &
  SIM_PID=$!
  trap 'kill $SIM_PID 2>/dev/null || true; rm -f "$SIM_LOG"' EXIT
  for _ in $(seq 100); do URL=$(grep -o 'http://[0-9.:]*' "$SIM_LOG" || true); [ -n "$URL" ] && break; sleep 0.1; done
fi
gst-launch-1.0 -e comfykeyframesrc server="$URL" width=512 height=512 \
  ! cachetap \
  ! vaeinterp backend=taesd encoder="$MODELS/taef2_encoder.safetensors" decoder="$MODELS/taef2_decoder.safetensors" \
      frames=-1 target-fps=25/1 \
  ! flightbuffer prebuffer-time=3000000000 \
  ! videoconvert ! autovideosink

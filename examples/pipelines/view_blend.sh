#!/usr/bin/env bash
# The chain without a VAE to a window: vaeinterp backend=$BACKEND (default blend, a pixel crossfade;
# view_flow.sh runs it with flow).
#   examples/pipelines/view_blend.sh [builddir] [comfy-url]
set -euo pipefail
. "$(dirname "$0")/need_window_sink.sh"
BUILD=${1:-build}
export GST_PLUGIN_PATH="$BUILD/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
URL=${2:-}
if [ -z "$URL" ]; then
  SIM_LOG=$(mktemp)
  "$BUILD/tools/comfy-sim/comfy-sim" --port 0 --latency-ms 300 >"$SIM_LOG" &
  SIM_PID=$!
  trap 'kill $SIM_PID 2>/dev/null || true; rm -f "$SIM_LOG"' EXIT
  for _ in $(seq 100); do URL=$(grep -o 'http://[0-9.:]*' "$SIM_LOG" || true); [ -n "$URL" ] && break; sleep 0.1; done
fi
gst-launch-1.0 -e comfykeyframesrc server="$URL" \
  ! cachetap ! vaeinterp backend="${BACKEND:-blend}" frames=-1 target-fps=25/1 ! flightbuffer \
  ! videoconvert ! autovideosink

#!/usr/bin/env bash
# Starts the built-in ComfyUI simulator and streams keyframes from it:
# to a window when a display is available, otherwise into a WebM file.
#   examples/pipelines/keyframes_from_sim.sh [builddir] [num-keyframes]
set -euo pipefail
. "$(dirname "$0")/need_window_sink.sh"
BUILD=${1:-build}
COUNT=${2:-60}
export GST_PLUGIN_PATH="$BUILD/gst${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
SIM_LOG=$(mktemp)
"$BUILD/tools/comfy-sim/comfy-sim" --port 0 --latency-ms 300 >"$SIM_LOG" &
SIM_PID=$!
trap 'kill $SIM_PID 2>/dev/null || true; rm -f "$SIM_LOG"' EXIT
for _ in $(seq 100); do
  URL=$(grep -o 'http://[0-9.:]*' "$SIM_LOG" || true)
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "${URL:-}" ] || { echo "comfy-sim did not start" >&2; exit 1; }
echo "ComfyUI simulator at $URL"
SRC="comfykeyframesrc server=$URL num-keyframes=$COUNT width=512 height=512"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  gst-launch-1.0 -e $SRC ! videoconvert ! autovideosink
else
  OUT=${OUT:-dreamwindow.webm}
  echo "no display: writing $COUNT keyframes to $OUT"
  gst-launch-1.0 -e $SRC ! videoconvert ! videorate ! video/x-raw,framerate=4/1 ! vp8enc deadline=1 ! webmmux ! filesink location="$OUT"
  echo "wrote $OUT"
fi

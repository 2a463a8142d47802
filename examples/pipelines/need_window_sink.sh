# Sourced by the example pipelines that end in autovideosink: fails with a clear message when no
# window can be shown (autovideosink would otherwise fall back to a sink that shows nothing or
# crashes). Install gstreamer1.0-x and/or gstreamer1.0-gl (.ci/install-deps does); headless: xvfb-run.
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "$(basename "$0"): no DISPLAY or WAYLAND_DISPLAY: run it in a desktop session or under xvfb-run -a" >&2
  exit 2
fi
if ! gst-inspect-1.0 ximagesink >/dev/null 2>&1 && ! gst-inspect-1.0 xvimagesink >/dev/null 2>&1 \
   && ! gst-inspect-1.0 glimagesink >/dev/null 2>&1 && ! gst-inspect-1.0 waylandsink >/dev/null 2>&1; then
  echo "$(basename "$0"): no window video sink installed: apt-get install gstreamer1.0-x gstreamer1.0-gl" >&2
  exit 2
fi

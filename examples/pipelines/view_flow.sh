#!/usr/bin/env bash
# The chain with optical-flow in-betweens (vaeinterp backend=flow: no weights, needs a build with OpenCV) to a window.
#   examples/pipelines/view_flow.sh [builddir] [comfy-url]
exec env BACKEND=flow "$(dirname "$0")/view_blend.sh" "$@"

// dreamwindow: the viewer application. Builds
//   comfykeyframesrc ! [cachetap] ! [vaeinterp] ! [flightbuffer] ! videoconvert ! encoder ! tee
// with one webrtcbin branch per browser viewer (or an autovideosink), serves the viewer page, the
// signalling websocket, a JSON status/control API and Prometheus metrics over libsoup 3, and (with no
// --comfy-url) runs the ComfyUI simulator in-process.
//
// Files: app.cpp (lifecycle), pipeline.cpp (build, bus, supervised restart, pause), status.cpp
// (status, metrics, history), http.cpp (routes, control, auth, signalling), protocol.cpp (the
// GStreamer-free control and signalling parsers), json_writer.h (the one JSON writer).
//
// Supervision: an element error is logged, the viewers are dropped and the pipeline restarts after
// a backoff (2 s doubling to 30 s, reset by the next keyframe); the HTTP server stays up. run()
// returns non-zero only for configuration errors found at start.
//
// Threads: everything in App runs on the GMainContext that run() pushes as thread default (libsoup
// objects, the bus watch, viewer bookkeeping). GStreamer streaming threads and webrtcbin's threads
// only queue work onto that context.
#pragma once

#include <gst/gst.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "egress.h"

namespace dw::sim {
class Simulator;
}

namespace dw::app {

struct Options {
  // HTTP
  std::string listen = "127.0.0.1";
  uint16_t port = 8080;          // 0 = a free port
  std::string token;             // non-empty: required on /ws and /api/control
  unsigned max_viewers = 4;
  // Output
  std::string sink = "";         // "webrtc" (default when built with WebRTC), "auto", "fake"
  std::string codec = "vp8";     // "vp8" or "h264" (openh264enc)
  unsigned bitrate_kbps = 2000;
  std::string pipeline;          // gst-launch description replacing the built-in one
  // Source
  std::string comfy_url;         // empty = embedded simulator; several servers comma-separated
  std::string workflow;
  std::string prompt;
  std::string negative_prompt;
  double denoise = -1;           // < 0 = element default
  int64_t seed = -1;
  int width = 512, height = 512;
  int num_keyframes = -1;        // -1 = endless; EOS (and exit) after this many
  uint32_t sim_latency_ms = 300;
  // Egress (--publish, --hls, --srt): forces H.264 and the encoded tee also with --sink auto/fake
  EgressConfig egress;
  // Processing
  std::string vae_dir;           // vaeinterp model-dir (backend auto); empty = `interpolator`
  std::string interpolator;      // vaeinterp backend without --vae; empty = flow (blend without OpenCV)
  std::vector<std::string> skip; // optional elements not to use (cachetap, vaeinterp, flightbuffer)
  // Process
  bool handle_signals = false;   // SIGINT/SIGTERM -> clean shutdown (main.cpp sets it)
  bool quiet = false;
};

class App {
 public:
  explicit App(Options options);
  ~App();
  App(const App &) = delete;
  App &operator=(const App &) = delete;

  // Builds everything and runs until shutdown() or the end of the stream. Returns the exit code.
  // Pushes its own GMainContext as the calling thread's default while it runs.
  int run();
  // Thread-safe: EOS, then a clean stop (at most ~1 s spent waiting for EOS).
  void shutdown();
  // Thread-safe: blocks until run() is serving (true) or failed to start (false).
  bool wait_ready(unsigned timeout_ms = 10000);
  // After wait_ready(): the viewer URL (http://host:port/), without the token.
  std::string url() const;
  uint16_t port() const;
  // After wait_ready(): an element of the pipeline by factory name (ref'd; nullptr if absent).
  GstElement *element(const std::string &factory) const;
  // The embedded simulator (nullptr with --comfy-url).
  dw::sim::Simulator *simulator() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Whether this build has the WebRTC viewer.
bool have_webrtc();

}  // namespace dw::app

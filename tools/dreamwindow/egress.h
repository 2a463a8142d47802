// Egress: the app's one H.264 encode (its tee "webrtctee") fanned out to the engines that scale:
// RTMP ingest (Twitch, YouTube, nginx-rtmp, any CDN), an HLS directory any web server or CDN can
// serve, and SRT. The browser viewers hang off the same tee: one encode, many outputs.
//
// Isolation (why each output is its own pipeline): an ingest server that goes away makes rtmp2sink /
// srtsink post an ERROR, and an error in the main pipeline would restart the whole stream and drop the
// browser viewers. So the main pipeline only gains `queue (leaky) ! appsink`; each output runs
//   appsrc ! h264parse ! <mux> ! <sink>
// in a pipeline of its own, whose errors are handled here: it is torn down and restarted after a
// capped, jittered backoff (dw::comfy::Backoff, reset once an output has streamed for a while).
// While an output is down its frames are dropped; after a (re)start it waits for the next IDR and
// asks the encoder for one (force-key-unit upstream).
//
// Threads: Egress owns one thread iterating its own GMainContext (bus watches of the output pipelines,
// restart timers). The appsink callback (main pipeline streaming thread) only takes `mutex_` briefly
// to push into the running outputs' appsrcs. Nothing blocks the app's main context.
#pragma once

#include <gst/gst.h>
#include <json-glib/json-glib.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dw::app {

struct EgressConfig {
  std::vector<std::string> rtmp_urls;  // rtmp://host[:port]/app/streamkey (flvmux ! rtmp2sink)
  std::string hls_dir;                 // playlist.m3u8 + segments (hlssink2), and index.html to play it
  std::vector<std::string> srt_uris;   // srt://host:port (mpegtsmux ! srtsink, caller mode)
  unsigned hls_target_duration_s = 2;  // segment length (segments start at IDRs: GOP <= this)
  unsigned hls_playlist_length = 6;    // segments listed in the live playlist
  unsigned hls_max_files = 12;         // segments kept on disk
  uint32_t backoff_initial_ms = 500;
  uint32_t backoff_max_ms = 10000;
  uint32_t healthy_after_ms = 5000;    // streaming this long without error resets the backoff
};

// Checks the configuration (URI schemes, the HLS directory, needed GStreamer elements). "" when fine.
std::string validate_egress(const EgressConfig &config);

class Egress {
 public:
  explicit Egress(EgressConfig config);
  ~Egress();  // detach() + stops the thread
  Egress(const Egress &) = delete;
  Egress &operator=(const Egress &) = delete;

  bool empty() const;
  // Adds `queue ! appsink` on a new request pad of `tee` (which carries H.264 byte-stream) in
  // `pipeline`, and starts every output. Call with the main pipeline built (any state).
  bool attach(GstElement *pipeline, GstElement *tee, std::string *error);
  // Stops the outputs and removes the branch (call before tearing the main pipeline down).
  void detach();

  struct OutputStatus {
    std::string kind;    // rtmp | hls | srt
    std::string target;  // URL (stream key masked) or directory
    std::string state;   // starting | streaming | retrying | stopped
    uint64_t starts = 0, failures = 0, buffers = 0, bytes = 0;
    std::string last_error;
  };
  std::vector<OutputStatus> status() const;
  // {"outputs":[{kind,target,state,starts,failures,buffers,bytes,last-error}, ...]}
  void to_json(JsonBuilder *builder) const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// An RTMP URL with its last path component (the stream key) masked, for logs and status.
std::string mask_stream_key(const std::string &url);

}  // namespace dw::app

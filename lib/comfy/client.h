// Asynchronous ComfyUI client (libsoup 3 + json-glib). It owns no thread: construct it, use it and
// destroy it on the thread that iterates `context` (libsoup 3's rule). Every callback is invoked
// from that context. Protocol: ../shared/comfyui/PROTOCOL.md.
// IMPORTANT (libsoup 3): the thread that iterates `context` must have it pushed as its
// thread-default context (g_main_context_push_thread_default) while it iterates, e.g. a GMainLoop
// thread that pushes it first. libsoup starts internal async work (DNS, connect, websocket I/O) on
// the dispatching thread's default context; iterating `context` without pushing it stalls requests.
//
// A job is a future: submit() returns the client-chosen prompt_id at once, then the job runs
//   [upload input] -> POST /prompt (client_id = the websocket's) -> follow on the websocket
//   (polling /history/{id} when the socket is down or silent) -> fetch the output (/view, or the
//   SaveImageWebsocket binary frame) -> on_done, or on_error with a typed Error.
// Several jobs may be outstanding. The websocket reconnects by itself with a fresh clientId and
// capped, jittered exponential backoff; after a reconnect every outstanding prompt is re-checked.
//
// Health (one Client per server, so a backend pool reads one health per backend):
//   Unknown      nothing heard yet.
//   Ok           the server answered (any HTTP status, or the websocket connected).
//   Unreachable  connection refused (at once), or reset/closed and confirmed by a probe (GET /prompt);
//                a websocket close always triggers that probe, so a killed server shows within ~1 s.
//   Unresponsive TCP accepted but no HTTP answer (headers) or websocket handshake within connect_ms.
//   Degraded     reachable, but the websocket stays silent while our jobs run (nothing at all arrived
//                within ws_silence_ms of queueing): jobs are followed by fast /history polling.
// Entering Unreachable/Unresponsive fails every job already posted at once with ErrorKind::Unreachable
// and Error::retry_free (nothing waits for the execute timeout); jobs not posted yet fail the same way
// on their own requests. Both states are equally transient.
// The first successful contact afterwards reports Ok at once; while down, the client itself retries
// the websocket (or probes, when use_websocket is off) at most every backoff_max_ms.
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comfy/error.h"

namespace dw::comfy {

enum class Health { Unknown, Ok, Unreachable, Unresponsive, Degraded /* ws silent, polling */ };
const char *health_name(Health h);  // "unknown", "ok", "unreachable", "unresponsive", "degraded"

struct HealthEvent {
  Health health = Health::Unknown;
  std::string message;   // why, naming the server: "ComfyUI at http://h:1 is unreachable: ..."
  int64_t since_us = 0;  // g_get_monotonic_time() when this state began
};

struct Timeouts {
  uint32_t connect_ms = 5000;    // TCP connect + websocket handshake / any single HTTP request
  uint32_t queue_ms = 10000;     // upload + POST /prompt answered
  uint32_t execute_ms = 300000;  // queued -> finished (includes waiting behind other jobs)
  uint32_t download_ms = 30000;  // /view answered with the whole image
};

struct ClientConfig {
  std::string server_url = "http://127.0.0.1:8188";  // http://host:port[/prefix]
  Timeouts timeouts;
  uint32_t backoff_initial_ms = 250;
  uint32_t backoff_max_ms = 2000;   // also bounds how late a recovered server is noticed
  // /history polling period while the websocket is down or silent, at most; the client polls faster
  // (every 1/32 of the measured generation time, from 70 % of it on, 5 ms at the fastest) so
  // polling costs little keyframe rate.
  uint32_t poll_interval_ms = 500;
  uint32_t ws_silence_ms = 3000;    // no websocket message for this long with jobs outstanding -> poll
  bool use_websocket = true;        // false: poll /history only
  uint64_t rng_seed = 0;            // 0 = random (clientId, jitter)
};

// Where a server-side image lives.
struct ImageRef {
  std::string filename, subfolder, type;  // type: input | output | temp
  // LoadImage value: "name.png [output]" for outputs, "sub/name.png" for inputs.
  std::string load_image_value() const;
};

struct Progress {
  std::string prompt_id;
  std::string node;   // may be empty
  double value = 0, max = 0;
};

struct JobResult {
  std::string prompt_id;
  std::vector<uint8_t> image;  // encoded bytes as the server sent them (PNG or JPEG)
  ImageRef ref;                // set when the image came from /view (empty for websocket frames)
  bool from_websocket = false;
  std::string node_id;         // output node that produced it
  int64_t submitted_us = 0;    // g_get_monotonic_time() at submit
  int64_t queued_us = 0;       // POST /prompt answered
  int64_t finished_us = 0;     // image fully received
};

struct JobSpec {
  // Input image to upload first (PNG bytes); empty = no upload, use input_value as is.
  std::vector<uint8_t> upload_png;
  std::string upload_name;     // suggested name; the server's returned name is what is used
  std::string input_value;     // LoadImage value when nothing is uploaded (e.g. "x.png [output]")
  // Builds the prompt graph given the LoadImage value; returns a new JsonNode (ownership passes).
  std::function<JsonNode *(const std::string &image_value)> build_prompt;
  // Output nodes to take the image from (first image found wins); empty = any.
  std::vector<std::string> output_nodes;
};

struct JobCallbacks {
  std::function<void(const Progress &)> on_progress;  // optional
  std::function<void(JobResult &&)> on_done;
  std::function<void(const Error &)> on_error;
};

struct ClientStats {
  uint64_t jobs_submitted = 0, jobs_succeeded = 0, jobs_failed = 0;
  uint64_t reconnects = 0;          // websocket connections made after the first
  uint64_t history_polls = 0;
  uint64_t ws_messages = 0;
  bool ws_connected = false;
  std::string client_id;            // of the current websocket connection
  Health health = Health::Unknown;
  std::string health_message;
  uint64_t outages = 0;             // transitions into Unreachable / Unresponsive
  uint64_t jobs_failed_by_outage = 0;  // jobs failed with retry_free because the server went away
  double generation_ms = 0;         // moving average of POST /prompt answered -> result known
  uint32_t poll_period_ms = 0;      // fast /history polling period while the websocket is down/silent/off, else 0
};

class Client {
 public:
  Client(ClientConfig config, GMainContext *context);
  ~Client();  // cancels all requests and jobs; no callback runs after this
  Client(const Client &) = delete;
  Client &operator=(const Client &) = delete;

  // Opens the websocket (and keeps reconnecting). Jobs work without it (polling).
  void start();

  // Starts a job; returns its prompt_id (chosen by the client) immediately.
  std::string submit(JobSpec spec, JobCallbacks callbacks);
  // Forgets a job (no more callbacks); if it is running on the server, optionally interrupts it and
  // deletes it from the pending queue.
  void cancel(const std::string &prompt_id, bool tell_server = true);
  size_t outstanding() const;

  // One-off requests (callbacks on the context).
  void system_stats(std::function<void(JsonNode *stats, const Error &)> callback);
  void interrupt(const std::string &prompt_id /* "" = global */);

  // Connection state changes (connected, or the error that closed / prevented the socket).
  void set_connection_callback(std::function<void(bool connected, const Error &)> callback);

  // Health changes (only changes), called on the context. A dead server is reported within about
  // 2 s (websocket close + failed probe), recovery at the first successful contact. The callback may
  // submit jobs but must not destroy the client.
  void set_health_callback(std::function<void(const HealthEvent &)> callback);
  Health health() const;
  HealthEvent health_event() const;  // current state, its message and since when

  ClientStats stats() const;
  const ClientConfig &config() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dw::comfy

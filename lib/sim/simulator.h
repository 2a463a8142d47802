// A ComfyUI 0.8.0 simulator: a libsoup 3 server speaking the protocol of
// ../shared/comfyui/PROTOCOL.md (same endpoints, websocket messages in the same order, same error
// shapes and validation, one job at a time, caching of identical prompts), executing a workflow's
// image path with a cheap deterministic "dream" transform so a machine without a GPU sees a living
// stream. It runs on its own thread and GMainContext, so tests and the viewer app embed it
// in-process; tools/comfy-sim wraps it as a program. Fault injection and a record of what it
// received are for tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dw::sim {

struct Faults {
  bool refuse_connections = false;   // stop listening (connection refused) until cleared
  int http_500_every = 0;            // every Nth HTTP request answers 500 (0 = never)
  bool http_500_prompt = false;      // POST /prompt answers 500
  bool malformed_json = false;       // JSON responses are truncated garbage
  int execution_error_on_job = 0;    // job N (1-based, counted from start) fails with execution_error
  bool execution_error_always = false;
  int ws_drop_on_job = 0;            // close every websocket abruptly in the middle of job N
  bool silent_websocket = false;     // websockets stay open but receive nothing after the first status
  // A stopped (hung) server: TCP connections are still accepted, but no HTTP request or websocket
  // handshake is answered, open websockets stay open and silent and jobs stand still. Clearing it
  // answers the requests held meanwhile (those whose client has not given up) and resumes jobs.
  bool hang = false;
  uint32_t view_delay_ms = 0;        // /view answers after this delay
  int wrong_width = 0, wrong_height = 0;  // > 0: outputs have this size instead
};

struct Config {
  std::string host = "127.0.0.1";
  uint16_t port = 0;                 // 0 = a free port
  uint32_t latency_ms = 50;          // generation time per job
  uint32_t jitter_ms = 0;            // +- uniform jitter on latency
  std::string data_dir;              // input/ output/ temp/ live here; empty = a fresh temp dir
  uint64_t seed = 1;
  bool verbose = false;              // log requests on stderr
};

struct UploadRecord {
  std::string name;       // name the server answered with
  std::string subfolder;
  std::string type;
  size_t size = 0;
  bool overwrite = false;
};

struct PromptRecord {
  std::string prompt_id;
  std::string client_id;
  std::string body;       // the whole POST /prompt body as received
  int64_t received_us = 0;  // g_get_monotonic_time()
};

class Simulator {
 public:
  explicit Simulator(Config config = {});
  ~Simulator();  // stops the server thread
  Simulator(const Simulator &) = delete;
  Simulator &operator=(const Simulator &) = delete;

  // Starts listening and the server thread. False (and *error) if the port cannot be bound.
  // After stop(), start() again listens on the same port as before (a server restart: queue,
  // history, cache and number are forgotten; files on disk stay).
  bool start(std::string *error = nullptr);
  void stop();
  uint16_t port() const;
  std::string url() const;  // "http://127.0.0.1:PORT"

  // Thread-safe at any time.
  void set_faults(const Faults &faults);
  Faults faults() const;
  void set_latency(uint32_t latency_ms, uint32_t jitter_ms = 0);
  // Forgets queue and history and drops every websocket with no close frame (a restart).
  // number restarts at 0 and the node cache is dropped; files on disk stay unless `wipe_outputs`
  // (a ComfyUI restarted with a clean output directory: see clear_outputs()). The fault job counter
  // (execution_error_on_job, ws_drop_on_job) keeps counting from the first start().
  void simulate_restart(bool wipe_outputs = false);
  // Deletes every file under output/ and temp/ (input/ stays), running or stopped: outputs that
  // later prompts name ("x.png [output]") are then gone, as after a restart with a fresh output dir.
  void clear_outputs();

  std::vector<PromptRecord> prompts() const;
  std::vector<UploadRecord> uploads() const;
  // Jobs that reached a terminal state (success, execution_error or interrupted) since construction.
  uint64_t jobs_completed() const;
  // Of those, the ones that ended with execution_success.
  uint64_t jobs_succeeded() const;
  // The directory holding input/ output/ temp/ (Config.data_dir or the temp dir made at start).
  std::string data_dir() const;
  // Blocks the calling thread (not the server's) until at least n prompts were received.
  bool wait_for_prompts(size_t n, uint32_t timeout_ms) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dw::sim

// Internals of the ComfyUI simulator (lib/sim), shared by its source files; not installed, not for
// users of the library (they include sim/simulator.h). Everything here runs on the simulator's own
// thread and GMainContext unless a member says "under mu".
//
// Files, by concern:
//   values.cpp      Python-like value printing (JSON writer, str()/repr(), int()/float()) and parsing
//   nodespecs.cpp   the node classes the simulator knows (their inputs, outputs, /object_info shape)
//   validation.cpp  POST /prompt validation (execution.py validate_prompt / validate_inputs)
//   routes.cpp      the HTTP routes and reply helpers
//   files.cpp       input/output/temp directories, POST /upload/image, file helpers
//   websocket.cpp   /ws connections, routing of messages, binary image frames
//   executor.cpp    the job queue, caching, node-by-node execution messages, job ends
//   nodes.cpp       what each node class computes
//   history.cpp     /queue, /history, /api/jobs and history entries
//   server.cpp      the thread, listening, restarts, connection hygiene, the public Simulator API
#pragma once

#include <gio/gio.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "image/image.h"
#include "sim/simulator.h"

namespace dw::sim {

// ComfyUI's default --max-upload-size (100 MiB): the body limit of every request and the
// "max_upload_size" the server advertises.
constexpr uint64_t kMaxUploadSize = 104857600;
// aiohttp's default max_msg_size for incoming websocket messages (ComfyUI does not change it).
constexpr uint64_t kMaxWebsocketMessage = 4u << 20;

// ------------------------------------------------------------------------------------------------
// values.cpp: Python-like printing (", " and ": " separators, floats with a ".0") and parsing.

std::string json_escape(const std::string &s);
std::string py_float(double v);

class JW {
 public:
  JW &ob() { pre(); s_ += '{'; st_.push_back({true, false, false}); return *this; }
  JW &oe() { s_ += '}'; st_.pop_back(); return *this; }
  JW &ab() { pre(); s_ += '['; st_.push_back({false, false, false}); return *this; }
  JW &ae() { s_ += ']'; st_.pop_back(); return *this; }
  JW &k(const std::string &key) {
    auto &f = st_.back();
    if (f.has) s_ += ", ";
    f.has = true;
    s_ += json_escape(key);
    s_ += ": ";
    f.after_key = true;
    return *this;
  }
  JW &s(const std::string &v) { pre(); s_ += json_escape(v); return *this; }
  JW &i(int64_t v) { pre(); s_ += std::to_string(v); return *this; }
  JW &u(uint64_t v) { pre(); s_ += std::to_string(v); return *this; }
  JW &d(double v) { pre(); s_ += py_float(v); return *this; }
  JW &b(bool v) { pre(); s_ += v ? "true" : "false"; return *this; }
  JW &null() { pre(); s_ += "null"; return *this; }
  JW &raw(const std::string &json) { pre(); s_ += json.empty() ? "null" : json; return *this; }
  const std::string &str() const { return s_; }

 private:
  struct Frame { bool obj; bool has; bool after_key; };
  void pre() {
    if (st_.empty()) return;
    auto &f = st_.back();
    if (f.obj) {
      f.after_key = false;
      return;
    }
    if (f.has) s_ += ", ";
    f.has = true;
  }
  std::string s_;
  std::vector<Frame> st_;
};

std::string node_to_json(JsonNode *n);
// Python str()/repr()-like rendering of a JSON value (for error messages).
std::string py_str(JsonNode *n);
std::string py_repr(JsonNode *n);
std::string py_list(const std::vector<std::string> &v);
bool is_string(JsonNode *n);
bool is_int(JsonNode *n);
// int(x) / float(x) as Python converts a JSON value; false and *err = Python's message otherwise.
bool py_int(JsonNode *n, int64_t &out, std::string &err);
bool py_float_conv(JsonNode *n, double &out, std::string &err);
// Parses a request body or websocket frame with the limits a real ComfyUI hits (see values.cpp);
// null when the text is not acceptable JSON (the caller answers as aiohttp would: 500).
JsonNode *parse_json(const char *data, size_t len, const char *what);
// ComfyUI's error object {"type", "message", "details", "extra_info"}.
std::string err_obj(const std::string &type, const std::string &message, const std::string &details,
                    const std::string &extra_raw = "{}");

struct JsonNodePtr {
  JsonNode *n = nullptr;
  JsonNodePtr() = default;
  explicit JsonNodePtr(JsonNode *x) : n(x) {}
  JsonNodePtr(const JsonNodePtr &o) : n(o.n ? json_node_copy(o.n) : nullptr) {}
  JsonNodePtr &operator=(const JsonNodePtr &o) {
    if (this != &o) {
      if (n) json_node_unref(n);
      n = o.n ? json_node_copy(o.n) : nullptr;
    }
    return *this;
  }
  ~JsonNodePtr() { if (n) json_node_unref(n); }
};

int64_t now_ms();
std::string hex_sid();

struct Num {
  double v = 0;
  bool is_float = false;
  std::string json() const { return is_float ? py_float(v) : std::to_string(static_cast<int64_t>(v)); }
};

// ------------------------------------------------------------------------------------------------
// files.cpp: file helpers.

bool read_file(const std::string &path, std::string &out);
bool write_file(const std::string &path, const void *data, size_t len);
void remove_tree(const std::string &path);
// Lexical normalisation ("a/./b/../c" -> "a/c"); returns false if it climbs above the root.
bool normalize_rel(const std::string &rel, std::string &out);
// "name.png [output]" -> ("name.png", "output"); no annotation -> type "".
std::pair<std::string, std::string> split_annotation(const std::string &name);

// ------------------------------------------------------------------------------------------------
// nodespecs.cpp: node classes.

struct InSpec {
  std::string name;
  std::string type;  // INT FLOAT STRING BOOLEAN COMBO or a socket type (IMAGE, LATENT, ...)
  bool required = true;
  double fdef = 0, fmin = 0, fmax = 0, fstep = 0;
  int64_t idef = 0, imin = 0;
  uint64_t imax = 0, istep = 1;
  std::string sdef;
  bool multiline = false;
  std::vector<std::string> options;
  bool lenient = false;      // combo accepts any value (model names)
  bool dynamic_files = false;  // LoadImage's list of input files
};

struct NodeSpec {
  std::string name, display, category, description;
  std::vector<InSpec> inputs;
  std::vector<std::string> outputs;
  std::vector<std::string> output_names;
  bool output_node = false;
  bool hidden_prompt = false;
};

const std::map<std::string, NodeSpec> &node_specs();
const NodeSpec *find_spec(const std::string &cls);
// The [type, {options}] list /object_info shows for one input (files: LoadImage's current list).
std::string input_config_json(const InSpec &s, const std::vector<std::string> &files);

// ------------------------------------------------------------------------------------------------
// Validation results and the server's state.

struct PyExc {
  std::string type, msg;
};

struct ValResult {
  bool valid = true;
  std::vector<std::string> errors;  // raw JSON objects
};

struct CacheEntry {
  std::vector<std::shared_ptr<const Image>> outs;
  std::string ui;  // raw JSON {"images": [...]} or empty
};

struct NodeState {
  std::string id;
  double value = 0, max = 1;
  bool ints = false;
  bool finished = false;
};

struct Job {
  uint64_t serial = 0;
  int job_index = 0;  // 1-based count since start()
  Num number;
  uint64_t seq = 0;  // insertion order tie-break
  std::string id, client_id;
  JsonNodePtr prompt;  // object
  std::string prompt_raw, extra_raw;
  std::vector<std::string> outputs;
  int64_t create_time = 0;
  // execution
  std::vector<std::string> order;
  std::set<std::string> cached;
  std::map<std::string, std::string> sigs;
  size_t pos = 0;
  std::vector<std::string> executed;
  std::map<std::string, std::vector<std::shared_ptr<const Image>>> results;
  std::vector<std::pair<std::string, std::string>> outputs_ui;  // node -> raw ui
  std::vector<std::string> messages;                              // raw ["name", {...}]
  std::vector<NodeState> states;
  std::string current_node;
  bool interrupt = false;
  bool dropped = false;
  int64_t start_ms = 0;
};

struct HistEntry {
  std::string id;
  std::string json;  // the entry object
  bool success = false;
  Num number;
  int64_t create_time = 0, start_ms = 0, end_ms = 0;
  size_t outputs_count = 0;
};

struct Ws {
  SoupWebsocketConnection *conn = nullptr;
  std::string sid;
  bool got_first_text = false;
  bool supports_meta = false;
  gulong h_message = 0, h_closed = 0;
  Simulator::Impl *impl = nullptr;
};

// Body of POST /queue and POST /history: {"clear": true} and/or {"delete": [ids]}; anything else
// (no body, not JSON) changes nothing, as on the real server.
struct ClearDelete {
  bool valid = false, clear = false;
  std::vector<std::string> ids;
};

struct JobView {
  std::string id, status;
  Num priority;
  int64_t create_time = 0;
  size_t outputs_count = 0;
  int64_t start = 0, end = 0;
};

// How the server thread reports the outcome of its first listen() to start().
struct StartResult {
  std::mutex m;
  std::condition_variable c;
  bool done = false, ok = false;
  std::string error;
};

struct Simulator::Impl {
  Config cfg;
  std::string data_dir, input_dir, output_dir, temp_dir;
  bool own_data_dir = false;
  // shared, under mu
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  Faults faults;
  uint32_t latency_ms = 0, jitter_ms = 0;
  std::vector<PromptRecord> prompts;
  std::vector<UploadRecord> uploads;
  uint64_t completed = 0, succeeded = 0;
  uint16_t port = 0;
  // thread
  GMainContext *ctx = nullptr;
  GMainLoop *loop = nullptr;
  GThread *thread = nullptr;
  bool running_thread = false;
  // server-thread state
  SoupServer *server = nullptr;
  bool listening = false;
  uint64_t http_count = 0;
  int64_t number_counter = 0;
  uint64_t seq_counter = 0, serial_counter = 0;
  int jobs_started = 0;
  std::vector<std::unique_ptr<Job>> queue;
  std::unique_ptr<Job> running;
  std::vector<HistEntry> history;
  std::map<std::string, CacheEntry> cache;
  std::list<std::unique_ptr<Ws>> sockets;
  std::map<std::string, Ws *> table;
  std::map<SoupServerMessage *, gulong> delayed_views;  // paused /view answers -> "disconnected" handler
  GRand *rand = nullptr;
  bool start_scheduled = false;
  Faults get_faults() const;
  void log(const char *fmt, ...) G_GNUC_PRINTF(2, 3);
  struct Call {
    std::function<void()> fn;
  };
  static gboolean call_cb(gpointer p);
  static void call_free(gpointer p) { delete static_cast<Call *>(p); }
  void schedule(uint32_t ms, std::function<void()> fn);
  // Runs fn on the server thread and waits for it.
  void run_sync(std::function<void()> fn);
  int queue_remaining() const { return static_cast<int>(queue.size()) + (running ? 1 : 0); }
  std::string status_msg(const std::string *sid) const;
  static bool ws_open(Ws *ws);
  void ws_send_text(Ws *ws, const std::string &text, bool force = false);
  void ws_send_binary(Ws *ws, const std::vector<uint8_t> &data);
  void broadcast(const std::string &msg);
  // To the socket of client_id; with no client_id: broadcast if `broadcast_if_none`.
  void send_to(const std::string &client_id, const std::string &msg, bool broadcast_if_none);
  void send_status() { broadcast(status_msg(nullptr)); }
  static std::string typed(const std::string &type, const std::string &data_raw);
  void forget_ws(Ws *ws);
  // Closes every websocket with no close frame (1006 on the client).
  void drop_all_ws();
  static void on_ws_message(SoupWebsocketConnection *, gint type, GBytes *message, gpointer user);
  static void on_ws_closed(SoupWebsocketConnection *, gpointer user);
  static void on_websocket(SoupServer *, SoupServerMessage *msg, const char *, SoupWebsocketConnection *conn, gpointer user);
  static std::string features_json();
  void reply_json(SoupServerMessage *msg, guint status, const std::string &body);
  static void reply_empty(SoupServerMessage *msg, guint status);
  static void reply_500(SoupServerMessage *msg);
  // aiohttp's answer to a body over client_max_size.
  static void reply_413(SoupServerMessage *msg, goffset size);
  static bool origin_ok(SoupServerMessage *msg);
  static std::string body_of(SoupServerMessage *msg);
  static std::string qget(GHashTable *query, const char *key, const char *def = nullptr, bool *present = nullptr);
  std::vector<std::string> list_input_files() const;
  std::string dir_for_type(const std::string &t) const;
  // LoadImage value -> absolute path ("" if it would escape its directory).
  std::string resolve_image_path(const std::string &value) const;
  static void on_ws_path(SoupServer *, SoupServerMessage *msg, const char *, GHashTable *, gpointer user);
  static void on_request(SoupServer *, SoupServerMessage *msg, const char *path_c, GHashTable *query, gpointer user);
  void handle(SoupServerMessage *msg, std::string path, GHashTable *query);
  void route(SoupServerMessage *msg, const std::string &method, const std::string &path, GHashTable *query, const Faults &f);
  void system_stats(SoupServerMessage *msg);
  uint16_t port_now() const;
  std::string class_info_json(const NodeSpec &s) const;
  void object_info(SoupServerMessage *msg, const std::string &path);
  void upload(SoupServerMessage *msg);
  // POST /prompt: number assignment, validation, queueing (server.py post_prompt).
  void post_prompt(SoupServerMessage *msg);
  bool assign_number(JsonObject *jd, Num &number);
  void queue_job(JsonObject *jd, const Num &number, const std::string &prompt_id, const std::string &client_id,
                 const std::vector<std::string> &good);
  bool validate_prompt(JsonNode *prompt_node, const std::vector<std::string> *partial, std::vector<std::string> &good,
                       std::string &error_json, std::string &node_errors_json);
  std::string queue_item(const Job &j) const;
  void get_queue(SoupServerMessage *msg);
  ClearDelete parse_clear_delete(SoupServerMessage *msg);
  void post_queue(SoupServerMessage *msg);
  void get_history(SoupServerMessage *msg, GHashTable *query);
  void get_history_id(SoupServerMessage *msg, const std::string &id_esc);
  void post_history(SoupServerMessage *msg);
  void view(SoupServerMessage *msg, GHashTable *query, const Faults &f);
  // Drops the references held by /view answers still waiting for their delay (their timer
  // never fires once the loop has stopped); the server's disconnect then frees the messages.
  void release_delayed_views();
  void interrupt(SoupServerMessage *msg);
  void free_mem(SoupServerMessage *msg);
  std::vector<JobView> all_jobs() const;
  static std::string job_json(const JobView &j);
  void jobs(SoupServerMessage *msg, GHashTable *query);
  void job(SoupServerMessage *msg, const std::string &id_esc);
  void schedule_start_next();
  uint32_t job_latency();
  JsonObject *node_obj(const Job &j, const std::string &id) const;
  std::string class_of(const Job &j, const std::string &id) const;
  JsonObject *inputs_of(const Job &j, const std::string &id) const;
  // Cache signature: class, inputs (links replaced by the upstream signature), LoadImage file hash.
  std::string signature(Job &j, const std::string &id, int depth = 0);
  void visit(Job &j, const std::string &id, std::set<std::string> &seen);
  std::vector<std::string> prompt_ids(const Job &j) const;
  void add_message(Job &j, const std::string &name, const std::string &data, bool broadcast_if_none);
  std::string progress_state_json(const Job &j) const;
  void send_progress_state(const Job &j) { send_to(j.client_id, typed("progress_state", progress_state_json(j)), true); }
  NodeState &state_of(Job &j, const std::string &id);
  void start_next();
  uint32_t node_delay_ = 0;
  void step(uint64_t serial);
  void node_done(uint64_t serial, const std::string &id);
  std::shared_ptr<const Image> input_image(Job &j, JsonObject *in, const char *name);
  static int64_t in_int(JsonObject *in, const char *name, int64_t def);
  static uint64_t in_u64(JsonObject *in, const char *name);
  static double in_float(JsonObject *in, const char *name, double def);
  static std::string in_str(JsonObject *in, const char *name, const std::string &def);
  Image apply_wrong_size(const Image &img, const Faults &f);
  using NodeOutputs = std::vector<std::shared_ptr<const Image>>;
  // Runs one node of the running job: its outputs into j.results and the cache; false with the
  // Python exception type and message on failure.
  bool execute_node(Job &j, const std::string &id, const std::string &cls, const Faults &f, std::string &etype, std::string &emsg);
  bool load_image_node(JsonObject *in, NodeOutputs &outs, std::string &etype, std::string &emsg);
  bool save_image_node(Job &j, const std::string &id, bool save, JsonObject *in, const Image &out, std::string &etype,
                       std::string &emsg);
  std::shared_ptr<const Image> transform_node(const std::string &cls, JsonObject *in, const std::shared_ptr<const Image> &img);
  NodeOutputs source_node(const std::string &cls, JsonObject *in);
  std::map<std::string, std::string> cache_ui_;
  std::string random_letters(int n);
  static int next_counter(const std::string &dir, const std::string &base);
  void send_ws_image(Job &j, const std::string &id, const Image &img);
  std::string current_outputs_json(Job &j);
  std::string executed_json(const Job &j) const;
  void write_history(Job &j, bool success, const std::string &status_str);
  void clean_cache(Job &j);
  void finish(bool success);
  void finish_success();
  void finish_error(const std::string &id, const std::string &cls, const std::string &etype, const std::string &emsg);
  void finish_interrupted(const std::string &id, const std::string &cls);
  // libsoup 3.2.x never disconnects a keep-alive connection that the client closes while it is idle
  // between requests (fixed upstream by d20c6601 in 3.3.0): the socket stays in CLOSE-WAIT for
  // ever, one per closed client connection. After each keep-alive answer we watch the socket; if it
  // reports end-of-file before the next request starts, we close it ourselves.
  std::map<GSocket *, GSource *> idle_watches;
  void unwatch_idle(GSocket *sock);
  static gboolean on_idle_socket(GSocket *sock, GIOCondition, gpointer user);
  static void on_request_started(SoupServer *, SoupServerMessage *msg, gpointer user);
  static void on_request_finished(SoupServer *, SoupServerMessage *msg, gpointer user);
  void unwatch_all_idle();
  bool listen(std::string *error);
  void apply_refuse(bool refuse);
  // Faults.hang: requests and websocket handshakes that arrive are held paused (never answered
  // while hanging); clearing the fault answers those whose client is still there.
  struct Held {
    SoupServerMessage *msg = nullptr;
    std::string path;
    GHashTable *query = nullptr;
    bool websocket = false;
    gulong on_disconnected = 0;
    std::shared_ptr<bool> gone;
  };
  std::vector<Held> held;
  void hold(SoupServerMessage *msg, const std::string &path, GHashTable *query, bool websocket);
  void release_held(bool answer);
  void wipe_outputs();
  void restart();
  StartResult *start_result = nullptr;
  static gpointer thread_main(gpointer p);
};

}  // namespace dw::sim

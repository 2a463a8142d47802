// Integration tests of the viewer app (tools/dreamwindow) against the in-process ComfyUI simulator:
// /api/status and /metrics agree with the elements' own `stats` (metrics per the Prometheus
// exposition conventions); the control API reaches the simulator, refuses bad tokens and hostile
// bodies; signalling refuses mistyped messages; a pipeline that fails for good is restarted with
// backoff while the HTTP server stays up; the content rate drops when frames repeat; SIGINT stops
// the program cleanly within 2 s; `--sink auto` draws frames in a window under Xvfb.
#include <glib.h>
#include <gst/gst.h>
#include <gtest/gtest.h>
#include <json-glib/json-glib.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "app.h"
#include "dwstats.h"
#include "sim/simulator.h"

namespace {

struct Reply {
  guint status = 0;
  std::string body;
};

// Sends m on a fresh session and reads the whole reply; frees both.
Reply send_and_read(SoupMessage *m) {
  SoupSession *s = soup_session_new();
  GError *err = nullptr;
  GBytes *out = soup_session_send_and_read(s, m, nullptr, &err);
  Reply r;
  r.status = soup_message_get_status(m);
  if (out) {
    gsize n = 0;
    const char *d = static_cast<const char *>(g_bytes_get_data(out, &n));
    r.body.assign(d, n);
    g_bytes_unref(out);
  }
  g_clear_error(&err);
  g_object_unref(m);
  g_object_unref(s);
  return r;
}

Reply http(const char *method, const std::string &url, const std::string &body = "",
           const char *auth = nullptr) {
  SoupMessage *m = soup_message_new(method, url.c_str());
  if (!m) {
    ADD_FAILURE() << "not a URL: " << url;
    return {};
  }
  if (!body.empty()) {
    GBytes *b = g_bytes_new(body.data(), body.size());
    soup_message_set_request_body_from_bytes(m, "application/json", b);
    g_bytes_unref(b);
  }
  if (auth) soup_message_headers_replace(soup_message_get_request_headers(m), "Authorization", auth);
  return send_and_read(m);
}

// POST with a body of unannounced length (Transfer-Encoding: chunked): no Content-Length for the
// server to refuse it by.
Reply http_chunked(const std::string &url, const std::string &body) {
  SoupMessage *m = soup_message_new("POST", url.c_str());
  GBytes *b = g_bytes_new(body.data(), body.size());
  GInputStream *in = g_memory_input_stream_new_from_bytes(b);
  soup_message_set_request_body(m, "application/json", in, -1);
  g_object_unref(in);
  g_bytes_unref(b);
  return send_and_read(m);
}

// Runs an App on its own thread.
struct Running {
  dw::app::App app;
  std::thread thread;
  int rc = -1;
  explicit Running(dw::app::Options o) : app(o) {
    thread = std::thread([this] { rc = app.run(); });
  }
  ~Running() {
    app.shutdown();
    thread.join();
  }
};

dw::app::Options fast_options() {
  dw::app::Options o;
  o.port = 0;
  o.sink = "fake";
  o.sim_latency_ms = 40;
  o.width = o.height = 64;
  o.quiet = true;
  return o;
}

GstStructure *stats_of(GstElement *e) {
  GstStructure *s = nullptr;
  g_object_get(e, "stats", &s, nullptr);
  return s;
}

std::map<std::string, double> parse_metrics(const std::string &text) {
  std::map<std::string, double> m;
  gchar **lines = g_strsplit(text.c_str(), "\n", -1);
  for (gchar **l = lines; *l; ++l) {
    if (**l == '#' || !**l) continue;
    const char *sp = strrchr(*l, ' ');
    if (!sp) continue;
    m[std::string(*l, sp - *l)] = g_ascii_strtod(sp + 1, nullptr);
  }
  g_strfreev(lines);
  return m;
}

// The "# TYPE name type" lines of an exposition.
std::map<std::string, std::string> metric_types(const std::string &text) {
  std::map<std::string, std::string> types;
  gchar **lines = g_strsplit(text.c_str(), "\n", -1);
  for (gchar **l = lines; *l; ++l) {
    if (!g_str_has_prefix(*l, "# TYPE ")) continue;
    gchar **parts = g_strsplit(*l + 7, " ", 2);
    if (parts[0] && parts[1]) {
      EXPECT_EQ(types.count(parts[0]), 0u) << "TYPE given twice for " << parts[0];
      types[parts[0]] = parts[1];
    }
    g_strfreev(parts);
  }
  g_strfreev(lines);
  return types;
}

JsonNode *parse_json(const std::string &text) {
  JsonParser *p = json_parser_new();
  JsonNode *root = nullptr;
  if (json_parser_load_from_data(p, text.c_str(), static_cast<gssize>(text.size()), nullptr))
    root = json_node_copy(json_parser_get_root(p));
  g_object_unref(p);
  return root;
}

// A member of /api/status by path ("buffer.fill_s"); null node if absent.
double status_number(const std::string &body, const std::string &path, bool *present = nullptr) {
  JsonNode *root = parse_json(body);
  JsonNode *n = root;
  gchar **parts = g_strsplit(path.c_str(), ".", -1);
  for (gchar **q = parts; *q && n; ++q)
    n = JSON_NODE_HOLDS_OBJECT(n) && json_object_has_member(json_node_get_object(n), *q)
            ? json_object_get_member(json_node_get_object(n), *q)
            : nullptr;
  g_strfreev(parts);
  const bool ok = n && JSON_NODE_HOLDS_VALUE(n);
  double v = ok ? json_node_get_double(n) : 0;
  if (ok && json_node_get_value_type(n) == G_TYPE_INT64) v = static_cast<double>(json_node_get_int(n));
  if (present) *present = ok;
  if (root) json_node_unref(root);
  return v;
}

std::string status_string(const std::string &body, const std::string &group, const std::string &key) {
  JsonNode *root = parse_json(body);
  std::string out;
  if (root && JSON_NODE_HOLDS_OBJECT(root)) {
    JsonObject *o = json_node_get_object(root);
    if (!group.empty())
      o = json_object_has_member(o, group.c_str()) ? json_object_get_object_member(o, group.c_str()) : nullptr;
    if (o && json_object_has_member(o, key.c_str())) {
      const char *s = json_object_get_string_member(o, key.c_str());
      out = s ? s : "";
    }
  }
  if (root) json_node_unref(root);
  return out;
}

std::string metric_name(const std::string &elem, const std::string &field) {
  std::string n = "dreamwindow_" + elem + "_" + field;
  for (char &c : n)
    if (!g_ascii_isalnum(c) && c != '_') c = '_';
  return n;
}

bool wait_for(const std::function<bool()> &f, int ms) {
  for (int i = 0; i < ms / 50; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return f();
}

guint64 keyframes(GstElement *src) {
  GstStructure *s = stats_of(src);
  guint64 k = 0;
  gst_structure_get_uint64(s, DW_STATS_COMFYKEYFRAMESRC_KEYFRAMES, &k);
  gst_structure_free(s);
  return k;
}

}  // namespace

TEST(App, StatusAndMetricsAgreeWithElementStats) {
  auto o = fast_options();
  o.skip = {"flightbuffer"};  // it repeats frames while paused: its counters never stand still
  Running r(o);
  ASSERT_TRUE(r.app.wait_ready(30000));
  const std::string base = r.app.url();
  GstElement *src = r.app.element("comfykeyframesrc");
  ASSERT_NE(src, nullptr);
  ASSERT_TRUE(wait_for([&] { return keyframes(src) >= 5; }, 15000));
  ASSERT_EQ(http("POST", base + "api/control", "{\"pause\": true}").status, 200u);

  // The elements present, and their stats once they stand still.
  std::vector<std::string> names;
  for (const char *f : {"comfykeyframesrc", "cachetap", "vaeinterp"})
    if (GstElement *e = r.app.element(f)) {
      names.push_back(f);
      gst_object_unref(e);
    }
  auto read_all = [&] {
    std::map<std::string, GstStructure *> m;
    for (auto &n : names) {
      GstElement *e = r.app.element(n);
      m[n] = stats_of(e);
      // Per-backend times (since-last-success) move while paused; the pool has its own test.
      gst_structure_remove_field(m[n], DW_STATS_COMFYKEYFRAMESRC_BACKENDS);
      gst_object_unref(e);
    }
    return m;
  };
  auto free_all = [](std::map<std::string, GstStructure *> &m) {
    for (auto &kv : m) gst_structure_free(kv.second);
    m.clear();
  };
  auto equal = [](std::map<std::string, GstStructure *> &a, std::map<std::string, GstStructure *> &b) {
    for (auto &kv : a)
      if (!gst_structure_is_equal(kv.second, b[kv.first])) return false;
    return true;
  };
  std::map<std::string, GstStructure *> before = read_all(), after;
  bool stable = false;
  for (int i = 0; i < 40 && !stable; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    after = read_all();
    stable = equal(before, after);
    free_all(before);
    before = after;
    after.clear();
  }
  ASSERT_TRUE(stable) << "element stats did not settle while paused";

  Reply status = http("GET", base + "api/status");
  Reply metrics = http("GET", base + "metrics");
  ASSERT_EQ(status.status, 200u);
  ASSERT_EQ(metrics.status, 200u);
  after = read_all();
  ASSERT_TRUE(equal(before, after)) << "stats moved during the requests";
  free_all(after);

  JsonParser *parser = json_parser_new();
  ASSERT_TRUE(json_parser_load_from_data(parser, status.body.c_str(), -1, nullptr));
  JsonObject *root = json_node_get_object(json_parser_get_root(parser));
  JsonObject *els = json_object_get_object_member(root, "elements");
  auto m = parse_metrics(metrics.body);
  auto types = metric_types(metrics.body);
  // Exposition conventions: counters end in _total and are typed counter; every sample has a TYPE.
  for (const auto &t : types) {
    EXPECT_TRUE(t.second == "counter" || t.second == "gauge") << t.first << " " << t.second;
    EXPECT_EQ(t.second == "counter", g_str_has_suffix(t.first.c_str(), "_total")) << t.first << " is " << t.second;
  }
  for (const auto &kv : m) {
    const std::string family = kv.first.substr(0, kv.first.find('{'));
    EXPECT_EQ(types.count(family), 1u) << "no TYPE for " << kv.first;
  }
  EXPECT_EQ(types["dreamwindow_comfykeyframesrc_keyframes_total"], "counter");
  EXPECT_EQ(types["dreamwindow_restarts_total"], "counter");
  EXPECT_EQ(types["dreamwindow_comfykeyframesrc_in_flight"], "gauge");
  int compared = 0;
  for (auto &kv : before) {
    ASSERT_TRUE(json_object_has_member(els, kv.first.c_str())) << kv.first;
    JsonObject *st = json_object_get_object_member(json_object_get_object_member(els, kv.first.c_str()), "stats");
    const GstStructure *s = kv.second;
    for (int i = 0; i < gst_structure_n_fields(s); ++i) {
      const char *f = gst_structure_nth_field_name(s, i);
      const GValue *v = gst_structure_get_value(s, f);
      ASSERT_TRUE(json_object_has_member(st, f)) << kv.first << "." << f;
      JsonNode *n = json_object_get_member(st, f);
      std::string mn = metric_name(kv.first, f);
      if (!m.count(mn) && m.count(mn + "_total")) mn += "_total";
      GType t = G_VALUE_TYPE(v);
      if (t == G_TYPE_UINT64) {
        guint64 x = g_value_get_uint64(v);
        if (x == GST_CLOCK_TIME_NONE) {
          EXPECT_TRUE(JSON_NODE_HOLDS_NULL(n)) << f;
          EXPECT_EQ(m.count(mn), 0u) << mn;
          continue;
        }
        EXPECT_EQ(static_cast<guint64>(json_node_get_int(n)), x) << kv.first << "." << f;
        ASSERT_EQ(m.count(mn), 1u) << mn;
        EXPECT_DOUBLE_EQ(m[mn], static_cast<double>(x)) << mn;
      } else if (t == G_TYPE_UINT || t == G_TYPE_INT || t == G_TYPE_INT64) {
        gint64 x = t == G_TYPE_UINT ? g_value_get_uint(v) : t == G_TYPE_INT ? g_value_get_int(v) : g_value_get_int64(v);
        EXPECT_EQ(json_node_get_int(n), x) << kv.first << "." << f;
        EXPECT_DOUBLE_EQ(m[mn], static_cast<double>(x)) << mn;
      } else if (t == G_TYPE_DOUBLE) {
        double x = g_value_get_double(v);
        EXPECT_NEAR(json_node_get_double(n), x, std::abs(x) * 1e-5 + 1e-9) << kv.first << "." << f;
        EXPECT_NEAR(m[mn], x, std::abs(x) * 1e-5 + 1e-9) << mn;
      } else if (t == G_TYPE_BOOLEAN) {
        EXPECT_EQ(json_node_get_boolean(n), static_cast<bool>(g_value_get_boolean(v))) << f;
        EXPECT_EQ(m[mn], g_value_get_boolean(v) ? 1.0 : 0.0) << mn;
      } else if (t == G_TYPE_STRING) {
        EXPECT_STREQ(json_node_get_string(n), g_value_get_string(v)) << f;
        continue;
      } else {
        continue;
      }
      compared++;
    }
  }
  EXPECT_GT(compared, 10);
  // The summary figures are the stats' own values.
  const GstStructure *src_stats = before["comfykeyframesrc"];
  guint64 ready = 0, mean = 0;
  guint in_flight = 0, ready_u = 0;
  gst_structure_get_uint(src_stats, DW_STATS_COMFYKEYFRAMESRC_READY, &ready_u);
  gst_structure_get_uint(src_stats, DW_STATS_COMFYKEYFRAMESRC_IN_FLIGHT, &in_flight);
  ready = ready_u;
  gst_structure_get_uint64(src_stats, DW_STATS_COMFYKEYFRAMESRC_MEAN_GENERATION_TIME, &mean);
  JsonObject *queues = json_object_get_object_member(root, "queues");
  EXPECT_EQ(json_object_get_int_member(queues, "keyframes"), static_cast<gint64>(ready + in_flight));
  EXPECT_NEAR(json_object_get_double_member(json_object_get_object_member(root, "generation_time"), "mean_ms"),
              mean / 1e6, 1e-3);
  EXPECT_TRUE(json_object_get_boolean_member(root, "paused"));
  EXPECT_EQ(m["dreamwindow_paused"], 1.0);
  EXPECT_EQ(m["dreamwindow_viewers"], 0.0);
  g_object_unref(parser);
  free_all(before);
  gst_object_unref(src);
}

TEST(App, ControlReachesTheSimulatorAndNeedsTheToken) {
  auto o = fast_options();
  o.token = "t0ken";
  Running r(o);
  ASSERT_TRUE(r.app.wait_ready(30000));
  const std::string base = r.app.url();
  dw::sim::Simulator *sim = r.app.simulator();
  ASSERT_NE(sim, nullptr);
  const std::string ctl = base + "api/control";

  EXPECT_EQ(http("POST", ctl, "{\"prompt\":\"nope\"}").status, 401u);
  EXPECT_EQ(http("POST", ctl + "?token=wrong", "{\"prompt\":\"nope\"}").status, 401u);
  EXPECT_EQ(http("POST", ctl, "{\"prompt\":\"nope\"}", "Bearer wrong").status, 401u);
  EXPECT_EQ(http("GET", ctl + "?token=t0ken").status, 405u);
  EXPECT_EQ(http("POST", ctl + "?token=t0ken", "not json").status, 400u);
  EXPECT_EQ(http("POST", ctl + "?token=t0ken", "{\"denoise\": 2}").status, 400u);
  EXPECT_EQ(http("POST", ctl + "?token=t0ken", "{\"seed\": \"x\"}").status, 400u);

  const std::string prompt = "an orchard of glass trees";
  Reply ok = http("POST", ctl, "{\"prompt\":\"" + prompt + "\",\"denoise\":0.35,\"seed\":42}", "Bearer t0ken");
  ASSERT_EQ(ok.status, 200u) << ok.body;
  EXPECT_NE(ok.body.find(prompt), std::string::npos);
  // Applied live: a later job carries it, no restart.
  bool reached = wait_for(
      [&] {
        for (const auto &p : sim->prompts())
          if (p.body.find(prompt) != std::string::npos) return true;
        return false;
      },
      10000);
  EXPECT_TRUE(reached);
  Reply st = http("GET", base + "api/status");
  EXPECT_EQ(status_string(st.body, "prompt", "prompt"), prompt);
  EXPECT_EQ(status_number(st.body, "restarts"), 0.0);
  EXPECT_DOUBLE_EQ(status_number(st.body, "prompt.denoise"), 0.35);

  // Pause stops new jobs; resume brings them back.
  ASSERT_EQ(http("POST", ctl + "?token=t0ken", "{\"action\":\"pause\"}").status, 200u);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  size_t n = sim->prompts().size();
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_LE(sim->prompts().size(), n + 1);  // at most the job already queued
  ASSERT_EQ(http("POST", ctl + "?token=t0ken", "{\"action\":\"resume\"}").status, 200u);
  EXPECT_TRUE(sim->wait_for_prompts(n + 3, 5000));

  // /ws needs the token too (plain 401 before the handshake).
  EXPECT_EQ(http("GET", base + "ws").status, 401u);
  // The debug endpoint exists because the simulator is embedded.
  EXPECT_EQ(http("GET", base + "api/sim/prompts").status, 200u);
}

TEST(App, SigintExitsCleanlyWithinTwoSeconds) {
  const char *exe = g_getenv("DREAMWINDOW_APP");
  ASSERT_NE(exe, nullptr);
  const char *argv[] = {exe, "--port", "0", "--sink", "fake", "--width", "64", "--height", "64", nullptr};
  GPid pid;
  gint out_fd;
  GError *err = nullptr;
  ASSERT_TRUE(g_spawn_async_with_pipes(nullptr, const_cast<gchar **>(argv), nullptr, G_SPAWN_DO_NOT_REAP_CHILD,
                                       nullptr, nullptr, &pid, nullptr, &out_fd, nullptr, &err))
      << (err ? err->message : "");
  // Wait for the "serving"/"open" line, then let it stream a little.
  std::string out;
  auto t0 = std::chrono::steady_clock::now();
  char buf[512];
  while (out.find("http://127.0.0.1:") == std::string::npos || out.find("Ctrl+C") == std::string::npos) {
    ssize_t n = read(out_fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, n);
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20)) << out;
  }
  ASSERT_NE(out.find("Ctrl+C"), std::string::npos) << out;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto sent = std::chrono::steady_clock::now();
  kill(pid, SIGINT);
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() - sent < std::chrono::seconds(3)) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  close(out_fd);
  g_spawn_close_pid(pid);
  ASSERT_TRUE(exited) << "still running 3 s after SIGINT";
  EXPECT_LE(took, 2.0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  printf("SIGINT -> exit in %.3f s\n", took);
}

TEST(App, HostileControlBodiesAreRefusedAndTheAppStaysUp) {
  auto o = fast_options();
  Running r(o);
  ASSERT_TRUE(r.app.wait_ready(30000));
  const std::string base = r.app.url(), ctl = base + "api/control";
  ASSERT_EQ(http("POST", ctl, "{\"prompt\":\"before\"}").status, 200u);

  Reply deep = http("POST", ctl, std::string(75000, '['));
  EXPECT_EQ(deep.status, 400u) << deep.body;
  EXPECT_NE(deep.body.find("nested"), std::string::npos) << deep.body;
  Reply huge = http("POST", ctl, "{\"prompt\":\"" + std::string(10u << 20, 'a') + "\"}");
  EXPECT_EQ(huge.status, 413u) << huge.body.substr(0, 200);
  // The same without a Content-Length: refused too, and never held in memory whole.
  Reply huge_chunked = http_chunked(ctl, "{\"prompt\":\"" + std::string(10u << 20, 'a') + "\"}");
  EXPECT_EQ(huge_chunked.status, 413u) << huge_chunked.body.substr(0, 200);
  EXPECT_NE(huge_chunked.body.find("exceeds the limit"), std::string::npos) << huge_chunked.body.substr(0, 200);
  EXPECT_EQ(http_chunked(ctl, "{\"prompt\":\"before\"}").status, 200u);  // a small one is read whole
  Reply typo = http("POST", ctl, "{\"denosie\":0.5}");
  EXPECT_EQ(typo.status, 400u);
  EXPECT_NE(typo.body.find("denosie"), std::string::npos) << typo.body;
  Reply surrogate = http("POST", ctl, "{\"prompt\":\"\\ud800x\"}");
  EXPECT_EQ(surrogate.status, 400u);
  EXPECT_NE(surrogate.body.find("prompt"), std::string::npos) << surrogate.body;
  Reply nul = http("POST", ctl, "{\"negative_prompt\":\"abc\\u0000def\"}");
  EXPECT_EQ(nul.status, 400u);
  EXPECT_NE(nul.body.find("negative_prompt"), std::string::npos) << nul.body;
  Reply longp = http("POST", ctl, "{\"prompt\":\"" + std::string(5000, 'a') + "\"}");
  EXPECT_EQ(longp.status, 400u) << longp.body.substr(0, 200);

  // Nothing was applied; the status is still valid UTF-8 JSON and the process serves on.
  Reply st = http("GET", base + "api/status");
  ASSERT_EQ(st.status, 200u);
  EXPECT_TRUE(g_utf8_validate(st.body.data(), static_cast<gssize>(st.body.size()), nullptr));
  EXPECT_EQ(status_string(st.body, "prompt", "prompt"), "before");
  EXPECT_GE(status_number(st.body, "control.refused"), 7.0);
}

namespace {

// A websocket client on its own context: connects to /ws, sends one text, collects what comes back
// until the server closes (or the timeout).
struct WsResult {
  bool connected = false, closed = false;
  unsigned short close_code = 0;
  std::vector<std::string> received;
};

WsResult ws_exchange(const std::string &url, const std::string &send_after_hello, int timeout_ms) {
  GMainContext *ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);
  SoupSession *session = soup_session_new();
  SoupMessage *msg = soup_message_new("GET", url.c_str());
  struct State {
    WsResult r;
    SoupWebsocketConnection *ws = nullptr;
    std::string text;
    bool done = false;
  } st;
  st.text = send_after_hello;
  soup_session_websocket_connect_async(
      session, msg, nullptr, nullptr, G_PRIORITY_DEFAULT, nullptr,
      [](GObject *src, GAsyncResult *res, gpointer d) {
        auto *s = static_cast<State *>(d);
        s->ws = soup_session_websocket_connect_finish(SOUP_SESSION(src), res, nullptr);
        if (!s->ws) {
          s->done = true;
          return;
        }
        s->r.connected = true;
        g_signal_connect(s->ws, "message", G_CALLBACK(+[](SoupWebsocketConnection *ws, gint, GBytes *b, gpointer d2) {
                           auto *s2 = static_cast<State *>(d2);
                           gsize n = 0;
                           const char *p = static_cast<const char *>(g_bytes_get_data(b, &n));
                           s2->r.received.emplace_back(p, n);
                           if (s2->r.received.size() == 1) soup_websocket_connection_send_text(ws, s2->text.c_str());
                         }),
                         s);
        g_signal_connect(s->ws, "closed", G_CALLBACK(+[](SoupWebsocketConnection *ws, gpointer d2) {
                           auto *s2 = static_cast<State *>(d2);
                           s2->r.closed = true;
                           s2->r.close_code = soup_websocket_connection_get_close_code(ws);
                           s2->done = true;
                         }),
                         s);
      },
      &st);
  const gint64 end = g_get_monotonic_time() + timeout_ms * 1000;
  while (!st.done && g_get_monotonic_time() < end) g_main_context_iteration(ctx, FALSE), g_usleep(2000);
  if (st.ws) {
    g_signal_handlers_disconnect_by_data(st.ws, &st);
    g_object_unref(st.ws);
  }
  g_object_unref(msg);
  g_object_unref(session);
  while (g_main_context_iteration(ctx, FALSE)) {
  }
  g_main_context_pop_thread_default(ctx);
  g_main_context_unref(ctx);
  return st.r;
}

}  // namespace

TEST(App, SignallingRefusesAMistypedAnswer) {
  if (!dw::app::have_webrtc()) GTEST_SKIP() << "built without WebRTC";
  auto o = fast_options();
  Running r(o);
  ASSERT_TRUE(r.app.wait_ready(30000));
  std::string ws_url = r.app.url();
  ws_url.replace(0, 4, "ws");
  WsResult w = ws_exchange(ws_url + "ws", "{\"type\":\"answer\",\"sdp\":5}", 10000);
  ASSERT_TRUE(w.connected);
  EXPECT_TRUE(w.closed);
  EXPECT_EQ(w.close_code, 1008);
  bool told = false;
  for (const auto &m : w.received) told = told || (m.find("\"error\"") != std::string::npos && m.find("sdp") != std::string::npos);
  EXPECT_TRUE(told) << "no error message naming sdp";
  // Deeply nested signalling is refused the same way.
  w = ws_exchange(ws_url + "ws", std::string(75000, '['), 10000);
  EXPECT_TRUE(w.closed);
  EXPECT_EQ(w.close_code, 1008);
  Reply st = http("GET", r.app.url() + "api/status");
  EXPECT_EQ(st.status, 200u);
  auto m = parse_metrics(http("GET", r.app.url() + "metrics").body);
  EXPECT_EQ(m["dreamwindow_signalling_refused_total"], 2.0);
}

// An element that fails for good: the app logs, restarts with backoff and keeps serving; it never
// exits because of the EOS that follows a streaming error.
TEST(App, SupervisesAPipelineThatFailsForGood) {
  for (const char *desc : {"videotestsrc ! video/x-raw,width=32,height=32 ! identity error-after=3 ! fakesink",
                           "filesrc location=/nonexistent/dreamwindow-test ! fakesink"}) {
    SCOPED_TRACE(desc);
    auto o = fast_options();
    o.pipeline = desc;
    Running r(o);
    ASSERT_TRUE(r.app.wait_ready(30000)) << "a runtime failure must not be fatal";
    const std::string base = r.app.url();
    double restarts = 0;
    ASSERT_TRUE(wait_for(
        [&] {
          Reply st = http("GET", base + "api/status");
          restarts = status_number(st.body, "restarts");
          return st.status == 200 && restarts >= 2;
        },
        15000))
        << "restarts " << restarts;
    EXPECT_EQ(r.rc, -1) << "run() returned";
    Reply st = http("GET", base + "api/status");
    EXPECT_FALSE(status_string(st.body, "restart", "last_error").empty()) << st.body.substr(0, 400);
    auto m = parse_metrics(http("GET", base + "metrics").body);
    EXPECT_GE(m["dreamwindow_restarts_total"], 2.0);
  }
}

TEST(App, ConfigurationErrorsAreFatal) {
  auto o = fast_options();
  o.sink = "bogus";
  dw::app::App app(o);
  EXPECT_EQ(app.run(), 1);
  o = fast_options();
  o.pipeline = "this-element-does-not-exist ! fakesink";
  dw::app::App app2(o);
  EXPECT_EQ(app2.run(), 1);
}

// A repeated frame is never counted as content: paused, flightbuffer repeats its last frame at the
// output rate while the content rate falls to zero.
TEST(App, ContentRateCountsDistinctFramesOnly) {
  auto o = fast_options();
  Running r(o);
  ASSERT_TRUE(r.app.wait_ready(30000));
  GstElement *fb = r.app.element("flightbuffer");
  if (!fb) GTEST_SKIP() << "no flightbuffer";
  gst_object_unref(fb);
  // With no flags the app interpolates with optical flow wherever the build has it.
  if (GstElement *vi = r.app.element("vaeinterp")) {
    GParamSpec *ps = g_object_class_find_property(G_OBJECT_GET_CLASS(vi), "backend");
    const bool have_flow = ps && G_IS_PARAM_SPEC_ENUM(ps) &&
                           g_enum_get_value_by_nick(G_PARAM_SPEC_ENUM(ps)->enum_class, "flow");
    gst_object_unref(vi);
    if (have_flow) {
      std::string b;
      ASSERT_TRUE(wait_for(
          [&] {
            b = status_string(http("GET", r.app.url() + "api/status").body, "", "interpolation_backend");
            return !b.empty();
          },
          15000));
      EXPECT_EQ(b.rfind("flow", 0), 0u) << b;
    }
  }
  const std::string base = r.app.url();
  bool present = false;
  ASSERT_TRUE(wait_for(
      [&] {
        Reply st = http("GET", base + "api/status");
        return status_number(st.body, "content_fps", &present) > 1.0 && present;
      },
      20000));
  Reply st = http("GET", base + "api/status");
  EXPECT_LE(status_number(st.body, "content_fps"), status_number(st.body, "output_fps") * 1.2 + 0.5);
  EXPECT_TRUE(parse_metrics(http("GET", base + "metrics").body).count("dreamwindow_content_fps"));
  ASSERT_EQ(http("POST", base + "api/control", "{\"pause\":true}").status, 200u);
  double content = -1, output = -1;
  EXPECT_TRUE(wait_for(
      [&] {
        Reply s2 = http("GET", base + "api/status");
        content = status_number(s2.body, "content_fps");
        output = status_number(s2.body, "output_fps");
        return content < 0.5 && output > 2.0;
      },
      30000))
      << "content " << content << " output " << output;
  Reply h = http("GET", base + "api/history");
  EXPECT_NE(h.body.find("\"content_fps\""), std::string::npos);
}

// `--sink auto` on a machine set up by .ci/install-deps: under Xvfb autovideosink picks a real
// window sink and frames are drawn (basesink's rendered count grows).
TEST(App, SinkAutoDrawsFramesUnderXvfb) {
  const char *exe = g_getenv("DREAMWINDOW_APP");
  ASSERT_NE(exe, nullptr);
  gchar *xvfb = g_find_program_in_path("Xvfb");
  if (!xvfb) GTEST_SKIP() << "Xvfb is not installed (apt-get install xvfb)";
  // -displayfd: Xvfb picks a free display and writes its number on stdout.
  const char *xargv[] = {xvfb, "-displayfd", "1", "-screen", "0", "320x240x24", "-nolisten", "tcp", nullptr};
  GPid xpid;
  gint xout;
  GError *err = nullptr;
  ASSERT_TRUE(g_spawn_async_with_pipes(nullptr, const_cast<gchar **>(xargv), nullptr, G_SPAWN_DO_NOT_REAP_CHILD,
                                       nullptr, nullptr, &xpid, nullptr, &xout, nullptr, &err))
      << (err ? err->message : "");
  g_free(xvfb);
  std::string num;
  char c;
  while (read(xout, &c, 1) == 1 && c != '\n') num += c;
  ASSERT_FALSE(num.empty()) << "Xvfb gave no display number";
  // The app with the system's video sinks visible (the test env may isolate system plugins).
  gchar **env = g_get_environ();
  env = g_environ_setenv(env, "DISPLAY", (":" + num).c_str(), TRUE);
  env = g_environ_unsetenv(env, "GST_PLUGIN_SYSTEM_PATH_1_0");
  env = g_environ_unsetenv(env, "GST_PLUGIN_SYSTEM_PATH");
  // Its own registry (the system plugins change it), kept between runs so only the first one scans.
  const char *test_reg = g_getenv("GST_REGISTRY_1_0");
  gchar *reg = test_reg ? g_strconcat(test_reg, ".xvfb", nullptr)
                        : g_build_filename(g_get_tmp_dir(), "dw-test-registry.xvfb.bin", nullptr);
  env = g_environ_setenv(env, "GST_REGISTRY_1_0", reg, TRUE);
  const char *argv[] = {exe, "--port", "0", "--sink", "auto", "--width", "64", "--height", "64",
                        "--sim-latency-ms", "60", nullptr};
  GPid pid;
  gint out_fd;
  ASSERT_TRUE(g_spawn_async_with_pipes(nullptr, const_cast<gchar **>(argv), env, G_SPAWN_DO_NOT_REAP_CHILD, nullptr,
                                       nullptr, &pid, nullptr, &out_fd, nullptr, &err))
      << (err ? err->message : "");
  g_strfreev(env);
  std::string out;
  char buf[512];
  auto t0 = std::chrono::steady_clock::now();
  while (out.find("Ctrl+C") == std::string::npos &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    ssize_t n = read(out_fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, n);
  }
  const std::string serving = "serving the status API at ";
  const size_t at = out.find(serving);
  std::string base;
  if (at != std::string::npos) base = out.substr(at + serving.size(), out.find(' ', at + serving.size()) - at - serving.size());
  double rendered = 0;
  std::string element, body;
  if (!base.empty())
    wait_for(
        [&] {
          body = http("GET", base + "api/status").body;
          rendered = status_number(body, "video_sink.rendered");
          element = status_string(body, "video_sink", "element");
          return rendered >= 20;
        },
        30000);
  kill(pid, SIGINT);
  int status = 0;
  for (int i = 0; i < 300 && waitpid(pid, &status, WNOHANG) != pid; ++i) g_usleep(10000);
  if (!WIFEXITED(status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  close(out_fd);
  g_spawn_close_pid(pid);
  kill(xpid, SIGTERM);
  waitpid(xpid, nullptr, 0);
  close(xout);
  g_spawn_close_pid(xpid);
  g_free(reg);
  ASSERT_FALSE(base.empty()) << out;
  EXPECT_GE(rendered, 20.0) << body.substr(0, 600);
  EXPECT_FALSE(element.empty());
  EXPECT_EQ(element.find("fake"), std::string::npos) << element;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  printf("--sink auto under Xvfb :%s: %s drew %.0f frames\n", num.c_str(), element.c_str(), rendered);
}

// A pool of two ComfyUI servers (repeated --comfy-url): per-backend entries in /api/status and
// labelled series in /metrics; one server going down shows as a source warning within seconds and
// its recovery clears it at once.
TEST(App, BackendPoolIsLabelledAndOutagesShowPromptly) {
  dw::sim::Config c1, c2;
  c1.latency_ms = c2.latency_ms = 40;
  dw::sim::Simulator s1(c1), s2(c2);
  ASSERT_TRUE(s1.start());
  ASSERT_TRUE(s2.start());
  auto o = fast_options();
  o.comfy_url = s1.url() + "," + s2.url();
  Running r(o);
  ASSERT_TRUE(r.app.wait_ready(30000));
  const std::string base = r.app.url();
  std::string body;
  ASSERT_TRUE(wait_for(
      [&] {
        body = http("GET", base + "api/status").body;
        return body.find(s1.url()) != std::string::npos && body.find(s2.url()) != std::string::npos &&
               status_number(body, "elements.comfykeyframesrc.stats.keyframes") >= 3;
      },
      20000))
      << body.substr(0, 800);
  const std::string metrics = http("GET", base + "metrics").body;
  const auto types = metric_types(metrics);
  EXPECT_EQ(types.count("dreamwindow_backend_jobs_succeeded_total"), 1u);
  for (const auto *sim : {&s1, &s2})
    EXPECT_NE(metrics.find("dreamwindow_backend_healthy{backend=\"" + sim->url()), std::string::npos) << sim->url();

  s2.stop();
  const auto down = std::chrono::steady_clock::now();
  std::string health;
  EXPECT_TRUE(wait_for(
      [&] {
        health = status_string(http("GET", base + "api/status").body, "health", "comfykeyframesrc");
        return health.rfind("warning", 0) == 0;
      },
      8000))
      << health;
  const double warn_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - down).count();
  ASSERT_TRUE(s2.start());
  const auto up = std::chrono::steady_clock::now();
  EXPECT_TRUE(wait_for(
      [&] {
        health = status_string(http("GET", base + "api/status").body, "health", "comfykeyframesrc");
        return health == "ok";
      },
      10000))
      << health;
  const double ok_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - up).count();
  printf("backend down -> warning in %.1f s; back -> ok in %.1f s\n", warn_s, ok_s);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

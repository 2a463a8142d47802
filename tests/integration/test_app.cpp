// Integration tests of the viewer app (tools/dreamwindow) against the in-process ComfyUI simulator:
// /api/status and /metrics agree with the elements' own `stats`; the control API reaches the
// simulator and refuses bad tokens; SIGINT stops the program cleanly within 2 s.
#include <glib.h>
#include <gst/gst.h>
#include <gtest/gtest.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "app.h"
#include "sim/simulator.h"

namespace {

struct Reply {
  guint status = 0;
  std::string body;
};

Reply http(const char *method, const std::string &url, const std::string &body = "",
           const char *auth = nullptr) {
  SoupSession *s = soup_session_new();
  SoupMessage *m = soup_message_new(method, url.c_str());
  if (!body.empty()) {
    GBytes *b = g_bytes_new(body.data(), body.size());
    soup_message_set_request_body_from_bytes(m, "application/json", b);
    g_bytes_unref(b);
  }
  if (auth) soup_message_headers_replace(soup_message_get_request_headers(m), "Authorization", auth);
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
  gst_structure_get_uint64(s, "keyframes", &k);
  gst_structure_free(s);
  return k;
}

}  // namespace

TEST(App, StatusAndMetricsAgreeWithElementStats) {
  auto o = fast_options();
  o.skip = {"flightbuffer"};  // it repeats frames while paused: its counters never stand still
  Running r(o);
  ASSERT_TRUE(r.app.wait_ready());
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
  gst_structure_get_uint(src_stats, "ready", &ready_u);
  gst_structure_get_uint(src_stats, "in-flight", &in_flight);
  ready = ready_u;
  gst_structure_get_uint64(src_stats, "mean-generation-time", &mean);
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
  ASSERT_TRUE(r.app.wait_ready());
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
  EXPECT_NE(st.body.find("\"prompt\":\"" + prompt + "\""), std::string::npos);
  EXPECT_NE(st.body.find("\"restarts\":0"), std::string::npos);
  EXPECT_NE(st.body.find("\"denoise\":0.35"), std::string::npos);

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

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

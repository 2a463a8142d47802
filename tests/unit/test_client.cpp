// The ComfyUI client against the in-process simulator (lib/sim). Every wait has a deadline so a bug
// fails a test instead of hanging it.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "comfy/client.h"
#include "comfy/protocol.h"
#include "image/image.h"
#include "sim/simulator.h"

using namespace dw::comfy;
using dw::sim::Faults;
using dw::sim::Simulator;

namespace {

// A small PNG whose content depends on `seed` (different seeds -> different files, no caching).
std::vector<uint8_t> test_png(int seed, int w = 32, int h = 32) {
  dw::Image img(w, h, 3);
  for (size_t i = 0; i < img.pixels.size(); i++) img.pixels[i] = static_cast<uint8_t>((i * 7 + seed * 31) & 0xff);
  return dw::encode_png(img, 1);
}

JsonNode *parse_json(const std::string &s) {
  JsonParser *p = json_parser_new();
  JsonNode *n = nullptr;
  if (json_parser_load_from_data(p, s.c_str(), -1, nullptr) && json_parser_get_root(p))
    n = json_node_copy(json_parser_get_root(p));
  g_object_unref(p);
  return n;
}

// LoadImage -> SaveImage (or SaveImageWebsocket), built with JsonBuilder.
JsonNode *graph(const std::string &image_value, const char *saver = "SaveImage", const std::string &prefix = "dwtest") {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "1");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "class_type");
  json_builder_add_string_value(b, "LoadImage");
  json_builder_set_member_name(b, "inputs");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "image");
  json_builder_add_string_value(b, image_value.c_str());
  json_builder_end_object(b);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "2");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "class_type");
  json_builder_add_string_value(b, saver);
  json_builder_set_member_name(b, "inputs");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "images");
  json_builder_begin_array(b);
  json_builder_add_string_value(b, "1");
  json_builder_add_int_value(b, 0);
  json_builder_end_array(b);
  if (std::string(saver) == "SaveImage") {
    json_builder_set_member_name(b, "filename_prefix");
    json_builder_add_string_value(b, prefix.c_str());
  }
  json_builder_end_object(b);
  json_builder_end_object(b);
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  g_object_unref(b);
  return root;
}

struct Outcome {
  std::optional<JobResult> result;
  std::optional<Error> error;
  int calls = 0;
  bool finished() const { return calls > 0; }
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ctx_ = g_main_context_new();
    // libsoup 3 starts internal async work (DNS, connect, websocket I/O) on the thread-default
    // context of the dispatching thread, so the iterating thread must have ctx_ as its default.
    g_main_context_push_thread_default(ctx_);
    dw::sim::Config sc;
    sc.latency_ms = 30;
    sim_ = std::make_unique<Simulator>(sc);
    std::string err;
    ASSERT_TRUE(sim_->start(&err)) << err;
  }
  void TearDown() override {
    client_.reset();
    // Let cancelled operations drain.
    for (int i = 0; i < 50 && g_main_context_iteration(ctx_, FALSE); i++) {
    }
    sim_.reset();
    g_main_context_pop_thread_default(ctx_);
    g_main_context_unref(ctx_);
  }

  ClientConfig config() {
    ClientConfig c;
    c.server_url = sim_->url();
    c.timeouts.connect_ms = 2000;
    c.timeouts.queue_ms = 5000;
    c.timeouts.execute_ms = 15000;
    c.timeouts.download_ms = 5000;
    c.backoff_initial_ms = 50;
    c.backoff_max_ms = 400;
    c.poll_interval_ms = 100;
    c.ws_silence_ms = 500;
    c.rng_seed = 7;
    return c;
  }

  void make_client(ClientConfig c, bool start = true, bool wait_connected = true) {
    client_ = std::make_unique<Client>(std::move(c), ctx_);
    if (start) {
      client_->start();
      if (wait_connected) {
        ASSERT_TRUE(run_until([&] { return client_->stats().ws_connected; })) << "websocket never connected";
      }
    }
  }

  bool run_until(const std::function<bool()> &pred, int timeout_ms = 15000) {
    int64_t deadline = g_get_monotonic_time() + int64_t(timeout_ms) * 1000;
    while (!pred()) {
      if (g_get_monotonic_time() > deadline) return false;
      if (!g_main_context_iteration(ctx_, FALSE)) g_usleep(1000);
    }
    return true;
  }
  void run_for(int ms) {
    run_until([] { return false; }, ms);
  }

  JobSpec spec(std::vector<uint8_t> png, const std::string &name, const char *saver = "SaveImage") {
    JobSpec s;
    s.upload_png = std::move(png);
    s.upload_name = name;
    std::string sv = saver;
    s.build_prompt = [sv](const std::string &v) { return graph(v, sv.c_str()); };
    s.output_nodes = {"2"};
    return s;
  }

  std::string submit(JobSpec s, std::shared_ptr<Outcome> o) {
    JobCallbacks cb;
    cb.on_done = [o](JobResult &&r) {
      o->calls++;
      o->result = std::move(r);
    };
    cb.on_error = [o](const Error &e) {
      o->calls++;
      o->error = e;
    };
    return client_->submit(std::move(s), std::move(cb));
  }

  void expect_png_result(const Outcome &o) {
    ASSERT_TRUE(o.finished());
    ASSERT_FALSE(o.error) << o.error->describe();
    ASSERT_TRUE(o.result);
    EXPECT_EQ(o.calls, 1);
    EXPECT_TRUE(proto::is_png(o.result->image.data(), o.result->image.size()));
    EXPECT_GT(o.result->finished_us, o.result->submitted_us);
  }

  GMainContext *ctx_ = nullptr;
  std::unique_ptr<Simulator> sim_;
  std::unique_ptr<Client> client_;
};

}  // namespace

TEST_F(ClientTest, HappyPathUsesReturnedUploadName) {
  make_client(config());
  auto o = std::make_shared<Outcome>();
  std::string id = submit(spec(test_png(1), "dw_happy.png"), o);
  EXPECT_FALSE(id.empty());
  EXPECT_FALSE(o->finished());  // never called back inside submit
  EXPECT_EQ(client_->outstanding(), 1u);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  expect_png_result(*o);
  EXPECT_EQ(o->result->prompt_id, id);
  EXPECT_EQ(o->result->node_id, "2");
  EXPECT_EQ(o->result->ref.type, "output");
  EXPECT_FALSE(o->result->from_websocket);
  EXPECT_EQ(client_->outstanding(), 0u);

  auto ups = sim_->uploads();
  ASSERT_EQ(ups.size(), 1u);
  EXPECT_TRUE(ups[0].overwrite);
  EXPECT_EQ(ups[0].type, "input");
  auto prompts = sim_->prompts();
  ASSERT_EQ(prompts.size(), 1u);
  EXPECT_EQ(prompts[0].prompt_id, id);
  EXPECT_EQ(prompts[0].client_id, client_->stats().client_id);
  JsonNode *body = parse_json(prompts[0].body);
  ASSERT_TRUE(body);
  JsonObject *p = json_object_get_object_member(json_node_get_object(body), "prompt");
  JsonObject *load = json_object_get_object_member(json_object_get_object_member(p, "1"), "inputs");
  EXPECT_EQ(json_object_get_string_member(load, "image"), ups[0].name);
  json_node_unref(body);
  ClientStats st = client_->stats();
  EXPECT_EQ(st.jobs_submitted, 1u);
  EXPECT_EQ(st.jobs_succeeded, 1u);
  EXPECT_EQ(st.jobs_failed, 0u);
  EXPECT_GT(st.ws_messages, 0u);
  EXPECT_EQ(st.reconnects, 0u);
}

TEST_F(ClientTest, SeveralJobsOutstanding) {
  make_client(config());
  std::vector<std::shared_ptr<Outcome>> outs;
  std::vector<std::string> ids;
  for (int i = 0; i < 4; i++) {
    outs.push_back(std::make_shared<Outcome>());
    ids.push_back(submit(spec(test_png(10 + i), "dw_multi_" + std::to_string(i) + ".png"), outs.back()));
  }
  EXPECT_EQ(client_->outstanding(), 4u);
  ASSERT_TRUE(run_until([&] {
    for (auto &o : outs)
      if (!o->finished()) return false;
    return true;
  }, 30000));
  for (size_t i = 0; i < outs.size(); i++) {
    expect_png_result(*outs[i]);
    EXPECT_EQ(outs[i]->result->prompt_id, ids[i]);
  }
  EXPECT_EQ(client_->stats().jobs_succeeded, 4u);
}

TEST_F(ClientTest, CachedIdenticalJobCompletes) {
  make_client(config());
  auto a = std::make_shared<Outcome>(), b = std::make_shared<Outcome>();
  submit(spec(test_png(3), "dw_cached.png"), a);
  ASSERT_TRUE(run_until([&] { return a->finished(); }));
  expect_png_result(*a);
  submit(spec(test_png(3), "dw_cached.png"), b);  // same bytes, same name, same graph: cached
  ASSERT_TRUE(run_until([&] { return b->finished(); }));
  expect_png_result(*b);
  EXPECT_EQ(b->result->ref.filename, a->result->ref.filename);  // the replayed old filename
  EXPECT_EQ(b->result->image, a->result->image);
}

TEST_F(ClientTest, ExecutionErrorNamesNode) {
  make_client(config());
  Faults f;
  f.execution_error_always = true;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(4), "dw_err.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::ExecutionError) << o->error->describe();
  EXPECT_FALSE(o->error->node_id.empty());
  EXPECT_NE(o->error->message.find("node " + o->error->node_id), std::string::npos) << o->error->message;
  EXPECT_EQ(client_->stats().jobs_failed, 1u);
}

TEST_F(ClientTest, Http500OnPrompt) {
  make_client(config());
  Faults f;
  f.http_500_prompt = true;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(5), "dw_500.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::HttpStatus) << o->error->describe();
  EXPECT_EQ(o->error->http_status, 500);
  EXPECT_TRUE(o->error->transient());
}

TEST_F(ClientTest, MalformedJsonIsProtocolError) {
  make_client(config());
  Faults f;
  f.malformed_json = true;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(6), "dw_garbage.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Protocol) << o->error->describe();
}

TEST_F(ClientTest, ServerDownThenRecovers) {
  make_client(config());
  Faults f;
  f.refuse_connections = true;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(7), "dw_down.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Unreachable) << o->error->describe();
  EXPECT_NE(o->error->message.find(sim_->url()), std::string::npos) << o->error->message;
  sim_->set_faults(Faults());
  auto p = std::make_shared<Outcome>();
  submit(spec(test_png(8), "dw_up.png"), p);
  ASSERT_TRUE(run_until([&] { return p->finished(); }));
  expect_png_result(*p);
}

TEST_F(ClientTest, WebsocketDroppedMidJobReconnectsAndCompletes) {
  sim_->set_latency(400);
  make_client(config());
  Faults f;
  f.ws_drop_on_job = 1;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  std::string first_id = client_->stats().client_id;
  submit(spec(test_png(9), "dw_drop.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 20000));
  expect_png_result(*o);
  ClientStats st = client_->stats();
  EXPECT_GE(st.reconnects, 1u);
  EXPECT_GE(st.history_polls, 1u);
  ASSERT_TRUE(run_until([&] { return client_->stats().ws_connected; }));
  EXPECT_NE(client_->stats().client_id, first_id);  // fresh clientId per connection
}

TEST_F(ClientTest, SilentWebsocketFallsBackToPolling) {
  make_client(config());
  Faults f;
  f.silent_websocket = true;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(11), "dw_silent.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 20000));
  expect_png_result(*o);
  EXPECT_GE(client_->stats().history_polls, 1u);
}

TEST_F(ClientTest, PollingOnlyWithoutWebsocket) {
  ClientConfig c = config();
  c.use_websocket = false;
  make_client(c, true, false);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(12), "dw_poll.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  expect_png_result(*o);
  EXPECT_FALSE(client_->stats().ws_connected);
  EXPECT_GE(client_->stats().history_polls, 1u);
}

TEST_F(ClientTest, SlowViewTimesOutInDownloadPhase) {
  ClientConfig c = config();
  c.timeouts.download_ms = 300;
  make_client(c);
  Faults f;
  f.view_delay_ms = 3000;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(13), "dw_slow.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Timeout) << o->error->describe();
  EXPECT_NE(o->error->message.find("download"), std::string::npos) << o->error->message;
  sim_->set_faults(Faults());
}

TEST_F(ClientTest, SaveImageWebsocketResultFromBinaryFrame) {
  make_client(config());
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(14), "dw_wsout.png", "SaveImageWebsocket"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  expect_png_result(*o);
  EXPECT_TRUE(o->result->from_websocket);
  EXPECT_TRUE(o->result->ref.filename.empty());
}

TEST_F(ClientTest, CancelMeansNoCallback) {
  sim_->set_latency(300);
  make_client(config());
  auto a = std::make_shared<Outcome>(), b = std::make_shared<Outcome>();
  std::string ida = submit(spec(test_png(15), "dw_cancel_a.png"), a);
  client_->cancel(ida, true);  // before anything was sent
  EXPECT_EQ(client_->outstanding(), 0u);
  std::string idb = submit(spec(test_png(16), "dw_cancel_b.png"), b);
  ASSERT_TRUE(run_until([&] {
    for (auto &p : sim_->prompts())
      if (p.prompt_id == idb) return true;
    return false;
  }));
  client_->cancel(idb, true);  // while it runs on the server
  run_for(1500);
  EXPECT_EQ(a->calls, 0);
  EXPECT_EQ(b->calls, 0);
  EXPECT_EQ(client_->outstanding(), 0u);
  // The client is still usable.
  auto c = std::make_shared<Outcome>();
  submit(spec(test_png(17), "dw_after_cancel.png"), c);
  ASSERT_TRUE(run_until([&] { return c->finished(); }));
  expect_png_result(*c);
}

TEST_F(ClientTest, DestroyWithJobsOutstandingNoCallback) {
  sim_->set_latency(200);
  make_client(config());
  auto a = std::make_shared<Outcome>();
  submit(spec(test_png(18), "dw_destroy.png"), a);
  run_for(50);
  client_.reset();
  run_for(800);
  EXPECT_EQ(a->calls, 0);
}

TEST_F(ClientTest, CallbackMayDestroyClient) {
  make_client(config());
  auto o = std::make_shared<Outcome>();
  JobCallbacks cb;
  cb.on_done = [&, o](JobResult &&) {
    o->calls++;
    client_.reset();
  };
  cb.on_error = [&, o](const Error &) {
    o->calls++;
    client_.reset();
  };
  client_->submit(spec(test_png(19), "dw_selfdestruct.png"), std::move(cb));
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  run_for(300);
  EXPECT_EQ(o->calls, 1);
}

TEST_F(ClientTest, SystemStats) {
  make_client(config(), false);
  bool called = false;
  std::string version;
  client_->system_stats([&](JsonNode *stats, const Error &e) {
    called = true;
    ASSERT_FALSE(e) << e.describe();
    ASSERT_TRUE(stats);
    JsonObject *sys = json_object_get_object_member(json_node_get_object(stats), "system");
    if (sys && json_object_has_member(sys, "comfyui_version")) version = json_object_get_string_member(sys, "comfyui_version");
  });
  EXPECT_FALSE(called);
  ASSERT_TRUE(run_until([&] { return called; }));
  EXPECT_FALSE(version.empty());
}

// A restart forgets the queue and history: /history answers {} forever. The client must notice
// (the prompt is neither queued nor finished) long before the execute timeout, with a transient
// error so the caller re-queues.
TEST_F(ClientTest, ServerRestartLosesJobDetectedAsTransient) {
  sim_->set_latency(4000);
  ClientConfig c = config();
  c.timeouts.execute_ms = 120000;
  make_client(c);
  auto o = std::make_shared<Outcome>();
  std::string id = submit(spec(test_png(20), "dw_restart.png"), o);
  ASSERT_TRUE(run_until([&] {
    for (auto &p : sim_->prompts())
      if (p.prompt_id == id) return true;
    return false;
  }));
  run_for(100);
  sim_->simulate_restart();
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 20000));
  ASSERT_TRUE(o->error) << "a job running at the restart cannot succeed";
  EXPECT_EQ(o->error->kind, ErrorKind::Unreachable) << o->error->describe();
  EXPECT_NE(o->error->message.find("no longer known"), std::string::npos) << o->error->message;
  EXPECT_TRUE(o->error->transient());
  ASSERT_TRUE(run_until([&] { return client_->stats().ws_connected; }));
  EXPECT_GE(client_->stats().reconnects, 1u);
}

TEST_F(ClientTest, InvalidServerUrl) {
  ClientConfig c = config();
  c.server_url = "not a url";
  make_client(c, true, false);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(21), "x.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 3000));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Unreachable);
}

TEST_F(ClientTest, UnreachablePortFailsFast) {
  ClientConfig c = config();
  c.server_url = "http://127.0.0.1:1";  // nothing listens there
  make_client(c, true, false);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(22), "x.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 5000));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Unreachable) << o->error->describe();
  EXPECT_NE(o->error->message.find("http://127.0.0.1:1/upload/image"), std::string::npos) << o->error->message;
}

namespace {
// A fixed graph literal with the LoadImage value set through json-glib.
JsonNode *literal_graph(const char *json, const std::string &image_value) {
  JsonNode *n = parse_json(json);
  if (n) {
    JsonObject *inputs = json_object_get_object_member(json_object_get_object_member(json_node_get_object(n), "1"), "inputs");
    json_object_set_string_member(inputs, "image", image_value.c_str());
  }
  return n;
}
}  // namespace

TEST_F(ClientTest, WebsocketOnlyOutputWithSilentSocketFailsClearly) {
  make_client(config());
  Faults f;
  f.silent_websocket = true;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(23), "dw_silent_ws.png", "SaveImageWebsocket"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 20000));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::BadImage) << o->error->describe();
  EXPECT_NE(o->error->message.find("SaveImageWebsocket"), std::string::npos) << o->error->message;
}

TEST_F(ClientTest, RejectedPromptIsInvalidPromptWithSummary) {
  make_client(config());
  auto o = std::make_shared<Outcome>();
  JobSpec s = spec(test_png(24), "dw_400.png");
  s.build_prompt = [](const std::string &v) {
    return literal_graph(R"({"1": {"class_type": "LoadImage", "inputs": {"image": ""}},
      "3": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 99, "sigma": 1.0}},
      "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "dw400"}}})", v);
  };
  s.output_nodes = {"4"};
  submit(std::move(s), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::InvalidPrompt) << o->error->describe();
  EXPECT_EQ(o->error->node_id, "3");
  EXPECT_NE(o->error->message.find("node 3 (ImageBlur) input 'blur_radius'"), std::string::npos) << o->error->message;
}

TEST_F(ClientTest, PartialPromptDroppingOurOutputIsInvalidPrompt) {
  make_client(config());
  const char *g = R"({"1": {"class_type": "LoadImage", "inputs": {"image": ""}},
      "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dwok"}},
      "3": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 99, "sigma": 1.0}},
      "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "dwbad"}}})";
  auto bad = std::make_shared<Outcome>(), good = std::make_shared<Outcome>();
  JobSpec s = spec(test_png(25), "dw_partial.png");
  s.build_prompt = [g](const std::string &v) { return literal_graph(g, v); };
  s.output_nodes = {"4"};  // dropped by the server
  submit(std::move(s), bad);
  ASSERT_TRUE(run_until([&] { return bad->finished(); }));
  ASSERT_TRUE(bad->error);
  EXPECT_EQ(bad->error->kind, ErrorKind::InvalidPrompt) << bad->error->describe();
  EXPECT_NE(bad->error->message.find("blur_radius"), std::string::npos) << bad->error->message;
  JobSpec s2 = spec(test_png(26), "dw_partial2.png");
  s2.build_prompt = [g](const std::string &v) { return literal_graph(g, v); };
  s2.output_nodes = {"2"};  // survives: the job completes
  submit(std::move(s2), good);
  ASSERT_TRUE(run_until([&] { return good->finished(); }));
  expect_png_result(*good);
  EXPECT_EQ(good->result->node_id, "2");
}

TEST_F(ClientTest, ProgressCallbacksAreForOurPrompt) {
  make_client(config());
  auto o = std::make_shared<Outcome>();
  std::vector<Progress> seen;
  JobCallbacks cb;
  cb.on_done = [o](JobResult &&r) {
    o->calls++;
    o->result = std::move(r);
  };
  cb.on_error = [o](const Error &e) {
    o->calls++;
    o->error = e;
  };
  cb.on_progress = [&](const Progress &p) { seen.push_back(p); };
  std::string id = client_->submit(spec(test_png(27), "dw_progress.png"), std::move(cb));
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  expect_png_result(*o);
  for (const auto &p : seen) EXPECT_EQ(p.prompt_id, id);
}

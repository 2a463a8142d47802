// The ComfyUI client against the in-process simulator (lib/sim). Every wait has a deadline so a bug
// fails a test instead of hanging it.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
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
  EXPECT_TRUE(o->error->retry_free) << "the server forgot it: not the job's fault";
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

// ------------------------------------------------------------------------------------------------
// Outages and health (issue 13): a dead server is reported within ~2 s, the job in flight fails at
// once with retry_free, recovery is reported at once; an unresponsive server is transient like a
// dead one; a silent websocket costs (almost) no keyframe rate.

namespace {

struct HealthLog {
  std::vector<HealthEvent> events;
  bool saw(Health h) const {
    for (const auto &e : events)
      if (e.health == h) return true;
    return false;
  }
  int count(Health h) const {
    int n = 0;
    for (const auto &e : events) n += e.health == h;
    return n;
  }
};

std::shared_ptr<HealthLog> watch_health(Client &c) {
  auto log = std::make_shared<HealthLog>();
  c.set_health_callback([log](const HealthEvent &e) { log->events.push_back(e); });
  return log;
}

bool posted(const Simulator &sim, const std::string &id) {
  for (auto &p : sim.prompts())
    if (p.prompt_id == id) return true;
  return false;
}

}  // namespace

TEST_F(ClientTest, HealthOkOnceConnected) {
  client_ = std::make_unique<Client>(config(), ctx_);
  auto log = watch_health(*client_);
  EXPECT_EQ(client_->health(), Health::Unknown);
  client_->start();
  ASSERT_TRUE(run_until([&] { return client_->health() == Health::Ok; }, 5000));
  ASSERT_EQ(log->events.size(), 1u);
  EXPECT_EQ(log->events[0].health, Health::Ok);
  EXPECT_GT(log->events[0].since_us, 0);
  EXPECT_EQ(client_->stats().health, Health::Ok);
}

// The server dies while a job runs (the simulator closes its sockets with no close frame, like a
// killed ComfyUI, and stops listening), then comes back on the same port.
TEST_F(ClientTest, ServerKilledMidJobFailsAtOnceRetryFreeAndRecoveryIsReported) {
  sim_->set_latency(4000);
  ClientConfig c = config();
  c.timeouts.execute_ms = 120000;  // the old behaviour: the job waited for this
  make_client(c);
  auto log = watch_health(*client_);
  auto o = std::make_shared<Outcome>();
  std::string id = submit(spec(test_png(40), "dw_killed.png"), o);
  ASSERT_TRUE(run_until([&] { return posted(*sim_, id); }));
  run_for(200);
  ASSERT_FALSE(o->finished());
  int64_t t0 = g_get_monotonic_time();
  sim_->stop();
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 8000)) << "the job waited for the execute timeout";
  double fail_s = double(g_get_monotonic_time() - t0) / 1e6;
  ASSERT_TRUE(run_until([&] { return client_->health() == Health::Unreachable; }, 8000));
  double report_s = double(g_get_monotonic_time() - t0) / 1e6;
  std::printf("[ figures  ] server killed: job failed after %.2f s, health unreachable after %.2f s\n", fail_s, report_s);
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Unreachable) << o->error->describe();
  EXPECT_TRUE(o->error->retry_free) << o->error->describe();
  EXPECT_TRUE(o->error->transient());
  EXPECT_EQ(o->calls, 1);
  EXPECT_TRUE(log->saw(Health::Unreachable));
  EXPECT_NE(client_->health_event().message.find(sim_->url()), std::string::npos) << client_->health_event().message;
  EXPECT_EQ(client_->stats().outages, 1u);

  // Jobs submitted during the outage fail fast, retry_free too, and never hang.
  auto during = std::make_shared<Outcome>();
  submit(spec(test_png(41), "dw_during.png"), during);
  ASSERT_TRUE(run_until([&] { return during->finished(); }, 8000));
  ASSERT_TRUE(during->error);
  EXPECT_EQ(during->error->kind, ErrorKind::Unreachable) << during->error->describe();
  EXPECT_TRUE(during->error->retry_free);

  // Back on the same port: Ok is reported by the client's own reconnects, with no job needed.
  sim_->set_latency(30);
  std::string err;
  ASSERT_TRUE(sim_->start(&err)) << err;
  int64_t t1 = g_get_monotonic_time();
  ASSERT_TRUE(run_until([&] { return client_->health() == Health::Ok; }, 8000));
  std::printf("[ figures  ] server back: health ok after %.2f s\n", double(g_get_monotonic_time() - t1) / 1e6);
  EXPECT_EQ(log->events.back().health, Health::Ok);
  EXPECT_EQ(log->count(Health::Unreachable), 1) << "one report per outage";
  auto after = std::make_shared<Outcome>();
  submit(spec(test_png(42), "dw_after.png"), after);
  ASSERT_TRUE(run_until([&] { return after->finished(); }));
  expect_png_result(*after);
}

// Polling only (no websocket to notice the close): the failed /history poll reports the outage.
TEST_F(ClientTest, ServerKilledWhilePollingIsReportedToo) {
  sim_->set_latency(4000);
  ClientConfig c = config();
  c.use_websocket = false;
  c.timeouts.execute_ms = 120000;
  make_client(c, true, false);
  auto log = watch_health(*client_);
  auto o = std::make_shared<Outcome>();
  std::string id = submit(spec(test_png(43), "dw_killed_poll.png"), o);
  ASSERT_TRUE(run_until([&] { return posted(*sim_, id); }));
  run_for(200);
  sim_->stop();
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 8000));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Unreachable) << o->error->describe();
  EXPECT_TRUE(o->error->retry_free);
  EXPECT_EQ(client_->health(), Health::Unreachable);
  std::string err;
  ASSERT_TRUE(sim_->start(&err)) << err;
  ASSERT_TRUE(run_until([&] { return client_->health() == Health::Ok; }, 8000)) << "no probe noticed the recovery";
  EXPECT_TRUE(log->saw(Health::Unreachable));
}

// A websocket dropped by a live server (a proxy restart, a network blip) is no outage: the probe
// answers, nothing is failed, the job completes.
TEST_F(ClientTest, WebsocketDropOnALiveServerIsNoOutage) {
  sim_->set_latency(400);
  make_client(config());
  auto log = watch_health(*client_);
  Faults f;
  f.ws_drop_on_job = 1;
  sim_->set_faults(f);
  auto o = std::make_shared<Outcome>();
  submit(spec(test_png(46), "dw_drop_live.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 20000));
  expect_png_result(*o);
  EXPECT_GE(client_->stats().reconnects, 1u);
  EXPECT_FALSE(log->saw(Health::Unreachable));
  EXPECT_FALSE(log->saw(Health::Unresponsive));
  EXPECT_EQ(client_->health(), Health::Ok);
  EXPECT_EQ(client_->stats().outages, 0u);
}

namespace {
// A server that accepts TCP connections and never says a word (a hung process, a wrong port
// behind a proxy): GSocketService on the test's context, holding every connection open.
struct MuteServer {
  GSocketService *service = nullptr;
  std::vector<GSocketConnection *> held;
  uint16_t port = 0;
  MuteServer() {
    service = g_socket_service_new();
    GInetAddress *lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
    GSocketAddress *addr = g_inet_socket_address_new(lo, 0);
    GSocketAddress *effective = nullptr;
    GError *err = nullptr;
    if (g_socket_listener_add_address(G_SOCKET_LISTENER(service), addr, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                                      nullptr, &effective, &err)) {
      port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(effective));
      g_object_unref(effective);
    }
    g_clear_error(&err);
    g_object_unref(addr);
    g_object_unref(lo);
    g_signal_connect(service, "incoming", G_CALLBACK(+[](GSocketService *, GSocketConnection *conn, GObject *,
                                                          gpointer self) -> gboolean {
                       static_cast<MuteServer *>(self)->held.push_back(G_SOCKET_CONNECTION(g_object_ref(conn)));
                       return TRUE;
                     }),
                     this);
    g_socket_service_start(service);
  }
  ~MuteServer() {
    g_socket_service_stop(service);
    g_socket_listener_close(G_SOCKET_LISTENER(service));
    for (auto *c : held) {
      g_io_stream_close(G_IO_STREAM(c), nullptr, nullptr);
      g_object_unref(c);
    }
    g_object_unref(service);
  }
};
}  // namespace

TEST_F(ClientTest, UnresponsiveServerIsTransientLikeUnreachable) {
  MuteServer mute;
  ASSERT_NE(mute.port, 0);
  ClientConfig c = config();
  c.server_url = "http://127.0.0.1:" + std::to_string(mute.port);
  c.timeouts.connect_ms = 800;
  c.timeouts.queue_ms = 20000;  // the old behaviour: the upload waited for this, then a Timeout
  make_client(c, true, false);
  auto log = watch_health(*client_);
  auto o = std::make_shared<Outcome>();
  int64_t t0 = g_get_monotonic_time();
  submit(spec(test_png(44), "dw_mute.png"), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }, 6000)) << "no answer was not noticed within the connect timeout";
  std::printf("[ figures  ] unresponsive server: job failed after %.2f s (connect timeout 0.8 s)\n",
              double(g_get_monotonic_time() - t0) / 1e6);
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::Unreachable) << o->error->describe();
  EXPECT_TRUE(o->error->retry_free);
  EXPECT_TRUE(o->error->transient()) << "same policy as a server that is down";
  EXPECT_NE(o->error->message.find("does not respond"), std::string::npos) << o->error->message;
  ASSERT_TRUE(run_until([&] { return client_->health() == Health::Unresponsive; }, 3000));
  EXPECT_TRUE(log->saw(Health::Unresponsive));
  EXPECT_FALSE(log->saw(Health::Unreachable));
  EXPECT_GE(mute.held.size(), 1u);
  // Still not fatal: the next attempt behaves the same.
  auto again = std::make_shared<Outcome>();
  submit(spec(test_png(45), "dw_mute2.png"), again);
  ASSERT_TRUE(run_until([&] { return again->finished(); }, 6000));
  ASSERT_TRUE(again->error);
  EXPECT_TRUE(again->error->transient());
  EXPECT_TRUE(again->error->retry_free);
}

// Sequential jobs (a feedback loop) with and without a silent websocket, interleaved in rounds so
// that the load of this shared machine hits both modes alike; compares the mean job time.
TEST_F(ClientTest, SilentWebsocketIsDegradedAndKeepsTheKeyframeRate) {
  sim_->set_latency(150);
  make_client(config());
  auto log = watch_health(*client_);
  int seed = 100;
  // Runs one job; returns its duration in ms, or -1.
  auto one_job = [&]() -> double {
    auto o = std::make_shared<Outcome>();
    int64_t t = g_get_monotonic_time();
    submit(spec(test_png(seed++), "dw_rate.png"), o);
    if (!run_until([&] { return o->finished(); }, 10000) || !o->result) return -1;
    return double(g_get_monotonic_time() - t) / 1000.0;
  };
  auto window = [&](int ms, double *total, int *count) {
    int64_t end = g_get_monotonic_time() + int64_t(ms) * 1000;
    while (g_get_monotonic_time() < end) {
      double d = one_job();
      ASSERT_GT(d, 0) << "a job failed";
      *total += d;
      ++*count;
    }
  };
  ASSERT_GT(one_job(), 0);  // warm-up
  double ws_ms = 0, silent_ms = 0;
  int ws_n = 0, silent_n = 0;
  Faults silent;
  silent.silent_websocket = true;
  for (int round = 0; round < 3; round++) {
    sim_->set_faults(Faults());
    ASSERT_GT(one_job(), 0);  // the socket talks again: Ok
    ASSERT_EQ(client_->health(), Health::Ok);
    window(1000, &ws_ms, &ws_n);
    sim_->set_faults(silent);
    ASSERT_GT(one_job(), 0);  // pays ws_silence_ms once per silence
    ASSERT_EQ(client_->health(), Health::Degraded);
    window(1000, &silent_ms, &silent_n);
  }
  ASSERT_GT(ws_n, 0);
  ASSERT_GT(silent_n, 0);
  double ws_mean = ws_ms / ws_n, silent_mean = silent_ms / silent_n;
  double ratio = ws_mean / silent_mean;  // keyframe rate with a silent socket / with a talking one
  std::printf("[ figures  ] job time at 150 ms latency: websocket %.1f ms (%d jobs), silent websocket %.1f ms (%d jobs): "
              "rate ratio %.2f, polling every %u ms\n",
              ws_mean, ws_n, silent_mean, silent_n, ratio, client_->stats().poll_period_ms);
  EXPECT_GE(ratio, 0.7) << "polling costs too much rate";
  EXPECT_EQ(log->count(Health::Degraded), 3) << "one warning per silence, not one per job";
  EXPECT_NE(client_->health_event().message.find("silent"), std::string::npos);
}

// The element's case: a fresh client whose websocket is silent from the start, with the default
// ratio of ws_silence_ms to generation time (here 10x). The first job is seen only when the
// silence is detected; that time must not become the generation estimate that gates polling
// (once: 3x the keyframe period for ~20 keyframes). Bound: half the silence time, while the
// server needs 150 ms, so only a feedback of the detection delay can fail it.
TEST_F(ClientTest, SilentFromTheStartDoesNotSlowTheFollowingJobs) {
  sim_->set_latency(150);
  Faults silent;
  silent.silent_websocket = true;
  sim_->set_faults(silent);
  ClientConfig c = config();
  c.ws_silence_ms = 1500;
  make_client(c);
  int seed = 300;
  auto one_job = [&]() -> double {
    auto o = std::make_shared<Outcome>();
    int64_t t = g_get_monotonic_time();
    submit(spec(test_png(seed++), "dw_silent.png"), o);
    if (!run_until([&] { return o->finished(); }, 10000) || !o->result) return -1;
    return double(g_get_monotonic_time() - t) / 1000.0;
  };
  double first = one_job();
  ASSERT_GT(first, 0);
  ASSERT_EQ(client_->health(), Health::Degraded);
  double total = 0;
  const int n = 5;
  for (int i = 0; i < n; i++) {
    double d = one_job();
    ASSERT_GT(d, 0) << "a job failed";
    total += d;
  }
  std::printf("[ figures  ] silent from the start, 150 ms latency, ws_silence_ms 1500: first job %.0f ms, next %d "
              "jobs %.0f ms each, estimate %.0f ms\n",
              first, n, total / n, client_->stats().generation_ms);
  EXPECT_LT(total / n, c.ws_silence_ms / 2.0) << "the silence-detection delay leaked into the following jobs";
}

// The feedback loop names the previous output; a server restarted with a clean output dir no
// longer has it: MissingInput (transient, re-upload), not a rejected workflow.
TEST_F(ClientTest, MissingLoadImageFileIsMissingInput) {
  make_client(config());
  auto o = std::make_shared<Outcome>();
  JobSpec s;
  s.input_value = "dw_00163_.png [output]";
  s.build_prompt = [](const std::string &v) { return graph(v); };
  s.output_nodes = {"2"};
  submit(std::move(s), o);
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  ASSERT_TRUE(o->error);
  EXPECT_EQ(o->error->kind, ErrorKind::MissingInput) << o->error->describe();
  EXPECT_TRUE(o->error->transient());
  EXPECT_NE(o->error->message.find("dw_00163_.png [output]"), std::string::npos) << o->error->message;
  EXPECT_EQ(client_->health(), Health::Ok);
}

// A callback that throws must not unwind through GLib/libsoup's C frames (std::terminate): the
// client's boundary catches it, logs it, and keeps working.
TEST_F(ClientTest, ThrowingCallbackDoesNotEscapeIntoC) {
  make_client(config());
  auto o = std::make_shared<Outcome>();
  JobCallbacks cb;
  cb.on_done = [o](JobResult &&) {
    o->calls++;
    throw std::runtime_error("callback bug");
  };
  cb.on_error = [o](const Error &) {
    o->calls++;
    throw std::runtime_error("callback bug");
  };
  client_->submit(spec(test_png(50), "dw_throw.png"), std::move(cb));
  ASSERT_TRUE(run_until([&] { return o->finished(); }));
  auto p = std::make_shared<Outcome>();
  submit(spec(test_png(51), "dw_after_throw.png"), p);
  ASSERT_TRUE(run_until([&] { return p->finished(); }));
  expect_png_result(*p);
}

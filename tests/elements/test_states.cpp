// One state-cycling test for every element of the plugin (issue 9 item 6), parametrised by factory
// name: each element runs in a small live pipeline with whatever it needs to start (the in-process
// ComfyUI simulator for comfykeyframesrc, a cache directory for cachetap, the model-free blend
// backend for vaeinterp), is taken NULL -> READY -> PAUSED -> PLAYING -> PAUSED -> READY -> NULL
// several times with data flowing in PLAYING, then cycled fast (no waiting in any state), and must
// leave nothing alive behind: the GStreamer leaks tracer (GST_TRACERS=leaks, set before gst_init)
// tracks every GstObject and GstMiniObject created during the run and reports those never freed.
#include <glib/gstdio.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sim/simulator.h"
#include "sim_test_helpers.h"

namespace {

std::string g_cache_dir;

// The pipeline around the element named "e"; `sim_url` for comfykeyframesrc.
std::string pipeline_for(const std::string &factory, const std::string &sim_url) {
  const std::string live_rgb =
      "videotestsrc is-live=true pattern=ball ! video/x-raw,format=RGB,width=64,height=64,framerate=10/1 ! ";
  if (factory == "comfykeyframesrc")
    return "comfykeyframesrc name=e server=" + sim_url + " workflow=\"" +
           dw_test::source_path("tests/data/tiny_img2img.json") + "\" width=64 height=64 ! fakesink sync=false";
  if (factory == "cachetap") return live_rgb + "cachetap name=e cache-dir=\"" + g_cache_dir + "\" ! fakesink sync=false";
  if (factory == "vaeinterp") return live_rgb + "vaeinterp name=e backend=blend ! fakesink sync=false";
  return live_rgb + "flightbuffer name=e ! fakesink sync=false";
}

// Every ERROR on the bus so far, as text (empty: none).
std::string bus_errors(GstElement *pipeline) {
  std::string out;
  GstBus *bus = gst_element_get_bus(pipeline);
  while (GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
    out += dw_test::error_text(msg) + "\n";
    gst_message_unref(msg);
  }
  gst_object_unref(bus);
  return out;
}

GstTracer *leaks_tracer() {
  GList *tracers = gst_tracing_get_active_tracers();
  GstTracer *found = nullptr;
  for (GList *l = tracers; l; l = l->next)
    if (!found && g_str_equal(G_OBJECT_TYPE_NAME(l->data), "GstLeaksTracer")) found = GST_TRACER(gst_object_ref(l->data));
  g_list_free_full(tracers, gst_object_unref);
  return found;
}

// Objects created minus objects freed since activity-start-tracking, by address (each checkpoint
// reports only what happened since the previous one, so the counts accumulate here).
struct LiveObjects {
  std::map<std::string, int> count;  // address -> created - removed
  std::map<std::string, std::string> type;

  void add_checkpoint(GstTracer *tracer) {
    GstStructure *checkpoint = nullptr;
    g_signal_emit_by_name(tracer, "activity-get-checkpoint", &checkpoint);
    if (!checkpoint) return;
    for (const char *field : {"objects-created-list", "objects-removed-list"}) {
      const GValue *list = gst_structure_get_value(checkpoint, field);
      const int delta = g_str_equal(field, "objects-created-list") ? 1 : -1;
      for (guint i = 0; list && i < gst_value_list_get_size(list); ++i) {
        const GstStructure *o = gst_value_get_structure(gst_value_list_get_value(list, i));
        const gchar *addr = gst_structure_get_string(o, "address");
        const gchar *t = gst_structure_get_string(o, "type-name");
        if (!addr) continue;
        count[addr] += delta;
        if (delta > 0) type[addr] = t ? t : "?";
      }
    }
    gst_structure_free(checkpoint);
  }

  // "GstPad GstBuffer ..." for what is still alive ("" when nothing is).
  std::string alive() const {
    std::string out;
    for (auto &kv : count)
      if (kv.second > 0) out += type.at(kv.first) + " ";
    return out;
  }
};

class ElementStates : public ::testing::TestWithParam<const char *> {
 protected:
  void SetUp() override {
    dw::sim::Config config;
    config.latency_ms = 30;
    sim_ = std::make_unique<dw::sim::Simulator>(config);
    std::string error;
    ASSERT_TRUE(sim_->start(&error)) << error;
  }
  void TearDown() override { sim_.reset(); }

  // Builds the pipeline, runs `cycles` slow and `fast` fast cycles, tears it down; returns the
  // element's reference count just before the pipeline is dropped (1: only the bin holds it).
  void run_cycles(int cycles, int fast, int *element_refs) {
    GError *err = nullptr;
    GstElement *pipeline = gst_parse_launch(pipeline_for(GetParam(), sim_->url()).c_str(), &err);
    ASSERT_EQ(err, nullptr) << err->message;
    GstElement *e = gst_bin_get_by_name(GST_BIN(pipeline), "e");
    ASSERT_NE(e, nullptr);
    const GstState order[] = {GST_STATE_READY, GST_STATE_PAUSED, GST_STATE_PLAYING, GST_STATE_PAUSED, GST_STATE_READY,
                              GST_STATE_NULL};
    for (int c = 0; c < cycles; ++c) {
      for (GstState s : order) {
        ASSERT_NE(gst_element_set_state(pipeline, s), GST_STATE_CHANGE_FAILURE)
            << GetParam() << " -> " << gst_element_state_get_name(s) << ": " << bus_errors(pipeline);
        GstState now = GST_STATE_VOID_PENDING;
        ASSERT_NE(gst_element_get_state(pipeline, &now, nullptr, 10 * GST_SECOND), GST_STATE_CHANGE_FAILURE)
            << GetParam() << " -> " << gst_element_state_get_name(s) << ": " << bus_errors(pipeline);
        if (s == GST_STATE_PLAYING) g_usleep(300 * 1000);  // let data flow (keyframes, in-betweens)
        GstState el = GST_STATE_VOID_PENDING;
        gst_element_get_state(e, &el, nullptr, 0);
        EXPECT_EQ(el, s) << GetParam() << " is not in " << gst_element_state_get_name(s);
      }
    }
    // Fast: no waiting anywhere, including PLAYING -> NULL while a state change is still async.
    for (int c = 0; c < fast; ++c) {
      for (GstState s : {GST_STATE_PLAYING, GST_STATE_NULL, GST_STATE_PAUSED, GST_STATE_READY, GST_STATE_PLAYING,
                         GST_STATE_READY, GST_STATE_NULL})
        ASSERT_NE(gst_element_set_state(pipeline, s), GST_STATE_CHANGE_FAILURE)
            << GetParam() << " fast cycle " << c << ": " << bus_errors(pipeline);
    }
    ASSERT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
    EXPECT_EQ(bus_errors(pipeline), "");
    *element_refs = GST_OBJECT_REFCOUNT_VALUE(e) - 1;  // minus ours
    gst_object_unref(e);
    gst_object_unref(pipeline);
  }

  std::unique_ptr<dw::sim::Simulator> sim_;
};

TEST_P(ElementStates, CyclesCleanlyAndLeavesNothingAlive) {
  GstTracer *tracer = leaks_tracer();
  ASSERT_NE(tracer, nullptr) << "the leaks tracer is not active (GST_TRACERS=leaks must be set before gst_init)";
  int refs = 0;
  // A first round creates what lives for the whole process (class data, caps caches, the system
  // clock, thread pools); only the second round is tracked.
  run_cycles(1, 2, &refs);
  if (HasFatalFailure()) return gst_object_unref(tracer);
  g_signal_emit_by_name(tracer, "activity-start-tracking");
  run_cycles(3, 10, &refs);
  EXPECT_EQ(refs, 1) << GetParam() << ": the bin should hold the only reference before the pipeline is dropped";
  // Streaming threads and GstTask pool threads drop their last references as they wind down.
  LiveObjects live;
  std::string leaked;
  for (int i = 0; i < 50; ++i) {
    live.add_checkpoint(tracer);
    leaked = live.alive();
    if (leaked.empty()) break;
    g_usleep(100 * 1000);
  }
  EXPECT_EQ(leaked, "") << GetParam() << " leaked these objects over 3 slow and 10 fast cycles";
  g_signal_emit_by_name(tracer, "activity-stop-tracking");
  gst_object_unref(tracer);
}

INSTANTIATE_TEST_SUITE_P(AllElements, ElementStates,
                         ::testing::Values("comfykeyframesrc", "cachetap", "vaeinterp", "flightbuffer"),
                         [](const ::testing::TestParamInfo<const char *> &info) { return std::string(info.param); });

}  // namespace

int main(int argc, char **argv) {
  // The leaks tracer must be chosen before gst_init; keep the caller's other tracers.
  const char *tracers = g_getenv("GST_TRACERS");
  std::string want = tracers && *tracers ? std::string(tracers) + ";leaks" : "leaks";
  g_setenv("GST_TRACERS", want.c_str(), TRUE);
  gst_init(&argc, &argv);
  gchar *dir = g_dir_make_tmp("dw-states-XXXXXX", nullptr);
  g_cache_dir = dir;
  g_free(dir);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  std::string cmd = "rm -rf '" + g_cache_dir + "'";
  if (system(cmd.c_str()) != 0) {
  }
  return rc;
}

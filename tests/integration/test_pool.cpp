// comfykeyframesrc with a pool of backends (issue 11): three in-process ComfyUI simulators, one
// stopped and restarted mid-run on the same port. No keyframe index is lost or repeated, jobs carry
// on on the others, the dead backend rejoins; a pool with every backend down behaves like one
// server (warnings, recovery, the gap marked as a discontinuity).
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "dwmeta.h"
#include "dwstats.h"
#include "sim/simulator.h"

namespace {

std::string source_path(const std::string &rel) {
  const char *dir = g_getenv("DW_SOURCE_DIR");
  return std::string(dir ? dir : ".") + "/" + rel;
}

std::string message_text(GstMessage *msg) {
  GError *err = nullptr;
  gchar *debug = nullptr;
  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR)
    gst_message_parse_error(msg, &err, &debug);
  else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_WARNING)
    gst_message_parse_warning(msg, &err, &debug);
  std::string out = std::string(err ? err->message : "") + " | " + (debug ? debug : "");
  g_clear_error(&err);
  g_free(debug);
  return out;
}

struct Pool : public ::testing::Test {
  std::vector<std::unique_ptr<dw::sim::Simulator>> sims;
  GstElement *pipeline = nullptr, *src = nullptr, *sink = nullptr;
  guint64 next_index = 0;
  std::vector<std::string> warnings;  // texts of WARNING messages seen while draining the bus

  void start_sims(int n, uint32_t latency_ms) {
    for (int i = 0; i < n; ++i) {
      dw::sim::Config c;
      c.latency_ms = latency_ms;
      sims.push_back(std::make_unique<dw::sim::Simulator>(c));
      std::string error;
      ASSERT_TRUE(sims.back()->start(&error)) << error;
    }
  }
  std::string server_list() const {
    std::string list;
    for (const auto &s : sims) list += (list.empty() ? "" : ",") + s->url();
    return list;
  }
  void start_pipeline(int max_in_flight) {
    std::string desc = "comfykeyframesrc name=src server=\"" + server_list() + "\" workflow=" +
                       source_path("tests/data/tiny_img2img.json") + " width=64 height=64 max-retries=0 " +
                       "max-in-flight=" + std::to_string(max_in_flight) + " ! appsink name=sink sync=false";
    GError *err = nullptr;
    pipeline = gst_parse_launch(desc.c_str(), &err);
    ASSERT_EQ(err, nullptr) << err->message;
    src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
    sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  }
  void TearDown() override {
    if (pipeline) gst_element_set_state(pipeline, GST_STATE_NULL);
    if (src) gst_object_unref(src);
    if (sink) gst_object_unref(sink);
    if (pipeline) gst_object_unref(pipeline);
    sims.clear();
  }

  // Pulls one keyframe; checks its index is the next one. Returns false on timeout.
  bool pull(bool *discont = nullptr) {
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND);
    if (!sample) return false;
    GstBuffer *buf = gst_sample_get_buffer(sample);
    DwFrameMeta *meta = dw_buffer_get_frame_meta(buf);
    EXPECT_NE(meta, nullptr);
    if (meta) {
      EXPECT_EQ(meta->keyframe_index, next_index) << "a keyframe index was lost or repeated";
    }
    next_index++;
    if (discont) *discont = GST_BUFFER_FLAG_IS_SET(buf, GST_BUFFER_FLAG_DISCONT);
    gst_sample_unref(sample);
    return true;
  }

  // Drains the bus; ERRORs fail the test, WARNINGs are collected. True once a dreamwindow-backend
  // message with `event` for `server` was seen.
  bool drain_bus(const std::string &event = "", const std::string &server = "") {
    GstBus *bus = gst_element_get_bus(pipeline);
    bool seen = false;
    while (GstMessage *msg = gst_bus_pop(bus)) {
      if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) ADD_FAILURE() << message_text(msg);
      if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_WARNING) warnings.push_back(message_text(msg));
      if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT) {
        const GstStructure *s = gst_message_get_structure(msg);
        if (gst_structure_has_name(s, DW_MSG_BACKEND_NAME) &&
            event == (gst_structure_get_string(s, DW_MSG_BACKEND_EVENT) ?: "") &&
            server == (gst_structure_get_string(s, DW_MSG_BACKEND_SERVER) ?: ""))
          seen = true;
      }
      gst_message_unref(msg);
    }
    gst_object_unref(bus);
    return seen;
  }

  std::string stats_text() {
    GstStructure *stats = nullptr;
    g_object_get(src, "stats", &stats, nullptr);
    gchar *text = gst_structure_to_string(stats);
    std::string out(text);
    g_free(text);
    gst_structure_free(stats);
    return out;
  }

  // jobs-succeeded of each backend, from the stats' backends array.
  std::vector<guint64> succeeded_per_backend() {
    GstStructure *stats = nullptr;
    g_object_get(src, "stats", &stats, nullptr);
    std::vector<guint64> out;
    const GValue *array = gst_structure_get_value(stats, DW_STATS_COMFYKEYFRAMESRC_BACKENDS);
    EXPECT_NE(array, nullptr);
    for (guint i = 0; array && i < gst_value_array_get_size(array); ++i) {
      const GstStructure *b = gst_value_get_structure(gst_value_array_get_value(array, i));
      EXPECT_TRUE(gst_structure_has_name(b, DW_STATS_COMFYKEYFRAMESRC_BACKEND_NAME));
      EXPECT_STREQ(gst_structure_get_string(b, DW_STATS_COMFYKEYFRAMESRC_BACKEND_SERVER), sims[i]->url().c_str());
      guint64 n = 0;
      EXPECT_TRUE(gst_structure_get_uint64(b, DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_SUCCEEDED, &n));
      out.push_back(n);
    }
    gst_structure_free(stats);
    return out;
  }
};

TEST_F(Pool, ABackendStoppedAndRestartedMidRunLosesNoKeyframeAndRejoins) {
  start_sims(3, 200);
  start_pipeline(3);
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(pull()) << "keyframe " << i;
  std::vector<guint64> before = succeeded_per_backend();
  ASSERT_EQ(before.size(), 3u);
  for (size_t b = 0; b < 3; ++b) EXPECT_GT(before[b], 0u) << "backend " << b << " got no job with max-in-flight=3";

  // Backend 1 dies with a job on it; the others carry on, its job is re-queued on them.
  sims[1]->stop();
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(pull()) << "keyframe after the stop " << i;
  drain_bus();
  bool warned = false;
  for (const auto &w : warnings)
    if (w.find(sims[1]->url()) != std::string::npos && w.find("unreachable") != std::string::npos) warned = true;
  EXPECT_TRUE(warned) << "no warning named the dead backend " << sims[1]->url();
  std::vector<guint64> during = succeeded_per_backend();
  EXPECT_GT(during[0] + during[2], before[0] + before[2]);

  // It comes back on the same port and rejoins.
  std::string error;
  ASSERT_TRUE(sims[1]->start(&error)) << error;
  bool recovered = false;
  for (int i = 0; i < 60 && !recovered; ++i) {
    ASSERT_TRUE(pull());
    recovered = drain_bus("recovered", sims[1]->url());
  }
  EXPECT_TRUE(recovered) << "the restarted backend was not announced";
  std::vector<guint64> rejoined = succeeded_per_backend();
  for (int i = 0; i < 60 && rejoined[1] <= during[1]; ++i) {
    ASSERT_TRUE(pull());
    rejoined = succeeded_per_backend();
  }
  EXPECT_GT(rejoined[1], during[1]) << "the restarted backend never got a job again; stats: " << stats_text();
  drain_bus();
}

TEST_F(Pool, EveryBackendDownBehavesLikeOneServer) {
  start_sims(2, 100);
  start_pipeline(2);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(pull()) << "keyframe " << i;
  for (auto &s : sims) s->stop();
  // Both are reported down (warnings naming each), then both come back.
  for (int i = 0; i < 150; ++i) {
    drain_bus();
    bool both = true;
    for (const auto &s : sims) {
      bool named = false;
      for (const auto &w : warnings) named |= w.find(s->url()) != std::string::npos;
      both &= named;
    }
    if (both) break;
    g_usleep(100 * 1000);
  }
  for (const auto &s : sims) {
    bool named = false;
    for (const auto &w : warnings) named |= w.find(s->url()) != std::string::npos;
    EXPECT_TRUE(named) << "no warning for " << s->url();
  }
  g_usleep(2 * G_USEC_PER_SEC);  // a gap much longer than the keyframe period
  for (auto &s : sims) {
    std::string error;
    ASSERT_TRUE(s->start(&error)) << error;
  }
  // Keyframes finished before the outage may still be queued; the first one made after is DISCONT.
  bool discont = false;
  int discont_at = -1;
  for (int i = 0; i < 4 && discont_at < 0; ++i) {
    ASSERT_TRUE(pull(&discont)) << "no keyframe after recovery";
    if (discont) discont_at = i;
  }
  EXPECT_GE(discont_at, 0) << "the first keyframe after the outage is not a discontinuity";
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pull(&discont));
    EXPECT_FALSE(discont);
  }
  drain_bus();
}

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// comfykeyframesrc against the in-process ComfyUI simulator: caps and timestamps, the keyframe facts
// on each buffer, live prompt changes, the inject event, server down then up, a server killed
// mid-job (warning, recovery, the gap marked as a discontinuity), a restarted server that lost its
// outputs, max-outage, NULL during a job, invalid URLs and workflows, retries, and the overlap of
// generation with downstream work (checked by order of events).
#include <glib/gstdio.h>
#include <gst/app/gstappsink.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>
#include <json-glib/json-glib.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "dwevents.h"
#include "dwmeta.h"
#include "dwstats.h"
#include "sim/simulator.h"
#include "sim_test_helpers.h"

namespace {

using dw_test::error_text;
using dw_test::image_value_of;
using dw_test::prompt_text_of;
using dw_test::source_path;

std::string tiny_workflow() { return source_path("tests/data/tiny_img2img.json"); }

struct SimFixture : public ::testing::Test {
  std::unique_ptr<dw::sim::Simulator> sim;
  void SetUp() override { start_sim(20); }
  void start_sim(uint32_t latency_ms) {
    dw::sim::Config config;
    config.latency_ms = latency_ms;
    sim = std::make_unique<dw::sim::Simulator>(config);
    std::string error;
    ASSERT_TRUE(sim->start(&error)) << error;
  }
  void TearDown() override { sim.reset(); }
};

// Pops bus messages until one of `type` arrives or the timeout passes.
GstMessage *wait_message(GstElement *pipeline, GstMessageType types, GstClockTime timeout = 20 * GST_SECOND) {
  GstBus *bus = gst_element_get_bus(pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, timeout, types);
  gst_object_unref(bus);
  return msg;
}

GstElement *make_pipeline(const std::string &desc) {
  GError *err = nullptr;
  GstElement *p = gst_parse_launch(desc.c_str(), &err);
  EXPECT_EQ(err, nullptr) << (err ? err->message : "");
  g_clear_error(&err);
  return p;
}

}  // namespace

TEST_F(SimFixture, ProducesKeyframesWithCapsTimestampsMetaAndMessages) {
  std::string desc = "comfykeyframesrc name=src server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 num-keyframes=4 ! appsink name=sink sync=false";
  GstElement *pipeline = make_pipeline(desc);
  ASSERT_TRUE(pipeline);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);

  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
  for (guint64 i = 0; i < 4; ++i) {
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 20 * GST_SECOND);
    ASSERT_NE(sample, nullptr) << "keyframe " << i;
    GstCaps *caps = gst_sample_get_caps(sample);
    GstVideoInfo info;
    ASSERT_TRUE(gst_video_info_from_caps(&info, caps));
    EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 64);
    EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 64);
    EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_RGB);
    EXPECT_EQ(GST_VIDEO_INFO_FPS_N(&info), 0);
    GstBuffer *buf = gst_sample_get_buffer(sample);
    EXPECT_EQ(gst_buffer_get_size(buf), GST_VIDEO_INFO_SIZE(&info));
    ASSERT_TRUE(GST_BUFFER_PTS_IS_VALID(buf));
    if (GST_CLOCK_TIME_IS_VALID(last_pts)) {
      EXPECT_GT(GST_BUFFER_PTS(buf), last_pts);
    }
    last_pts = GST_BUFFER_PTS(buf);
    DwFrameMeta *meta = dw_buffer_get_frame_meta(buf);
    ASSERT_NE(meta, nullptr);
    EXPECT_EQ(meta->kind, DW_FRAME_KIND_KEYFRAME);
    EXPECT_EQ(meta->keyframe_index, i);
    // The keyframe's facts travel with it: seed-mode increment from seed 0 gives seed = job index.
    EXPECT_STREQ(meta->prompt, "a dreamlike landscape, soft light, highly detailed");
    EXPECT_EQ(meta->seed, static_cast<gint64>(i));
    EXPECT_FALSE(meta->injected);
    EXPECT_EQ(GST_BUFFER_FLAG_IS_SET(buf, GST_BUFFER_FLAG_DISCONT), i == 0) << "keyframe " << i;
    gst_sample_unref(sample);
  }
  // Until EOS, one dreamwindow-keyframe message per keyframe, in order.
  GstBus *bus = gst_element_get_bus(pipeline);
  guint64 expected = 0;
  bool eos = false;
  while (GstMessage *msg = gst_bus_timed_pop(bus, 20 * GST_SECOND)) {
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT) {
      const GstStructure *s = gst_message_get_structure(msg);
      if (gst_structure_has_name(s, "dreamwindow-keyframe")) {
        guint64 index = 0;
        EXPECT_TRUE(gst_structure_get_uint64(s, "index", &index));
        EXPECT_EQ(index, expected++);
        EXPECT_TRUE(gst_structure_has_field(s, "generation-time"));
        EXPECT_STRNE(gst_structure_get_string(s, "prompt"), nullptr);
      }
    }
    bool stop = GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS || GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR;
    eos = GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS;
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) ADD_FAILURE() << error_text(msg);
    gst_message_unref(msg);
    if (stop) break;
  }
  gst_object_unref(bus);
  EXPECT_TRUE(eos);
  EXPECT_EQ(expected, 4u);

  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstStructure *stats = nullptr;
  g_object_get(src, "stats", &stats, nullptr);
  ASSERT_NE(stats, nullptr);
  EXPECT_TRUE(gst_structure_has_name(stats, "application/x-comfykeyframesrc-stats"));
  guint64 keyframes = 0, succeeded = 0;
  gst_structure_get_uint64(stats, "keyframes", &keyframes);
  gst_structure_get_uint64(stats, "jobs-succeeded", &succeeded);
  EXPECT_EQ(keyframes, 4u);
  EXPECT_EQ(succeeded, 4u);  // num-keyframes bounds the jobs too: none wasted
  gst_structure_free(stats);
  gst_object_unref(src);

  // The feedback loop: job N+1 uses keyframe N, a server output, as its input.
  auto prompts = sim->prompts();
  ASSERT_EQ(prompts.size(), 4u);
  EXPECT_EQ(image_value_of(prompts[1].body).find("[output]") != std::string::npos, true)
      << image_value_of(prompts[1].body);

  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, PromptChangedInPlayingReachesTheNextJob) {
  std::string desc = "comfykeyframesrc name=src server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 prompt=\"first prompt\" ! appsink name=sink sync=false";
  GstElement *pipeline = make_pipeline(desc);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  gst_element_set_state(pipeline, GST_STATE_PLAYING);

  GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 20 * GST_SECOND);
  ASSERT_NE(sample, nullptr);
  gst_sample_unref(sample);
  const std::string hostile = "a \"quoted\" prompt\nwith a newline, a back\\slash and unicode: 夢 🌙";
  g_object_set(src, "prompt", hostile.c_str(), nullptr);
  size_t changed_at = sim->prompts().size();
  // Two more keyframes: the job queued after the change carries the new prompt.
  for (int i = 0; i < 3; ++i) {
    sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 20 * GST_SECOND);
    ASSERT_NE(sample, nullptr);
    gst_sample_unref(sample);
  }
  auto prompts = sim->prompts();
  ASSERT_GT(prompts.size(), changed_at);
  EXPECT_EQ(prompt_text_of(prompts[0].body), "first prompt");
  EXPECT_EQ(prompt_text_of(prompts.back().body), hostile);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(src);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, InjectEventIsPushedAndFeedsTheNextJob) {
  GstHarness *h = gst_harness_new("comfykeyframesrc");
  g_object_set(h->element, "server", sim->url().c_str(), "workflow", tiny_workflow().c_str(), "width", 64, "height",
               64, nullptr);
  gst_harness_use_systemclock(h);
  gst_harness_play(h);

  GstBuffer *first = gst_harness_pull(h);
  ASSERT_NE(first, nullptr);
  gst_buffer_unref(first);

  // A pure red 32x32 RGBA image: a different size and format than the stream, on purpose.
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_RGBA, 32, 32);
  GstBuffer *red = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
  GstMapInfo map;
  gst_buffer_map(red, &map, GST_MAP_WRITE);
  for (gsize i = 0; i < map.size; i += 4) {
    map.data[i] = 255;
    map.data[i + 1] = 0;
    map.data[i + 2] = 0;
    map.data[i + 3] = 255;
  }
  gst_buffer_unmap(red, &map);
  GstCaps *caps = gst_video_info_to_caps(&info);
  size_t uploads_before = sim->uploads().size();
  size_t prompts_before = sim->prompts().size();
  ASSERT_TRUE(gst_harness_push_upstream_event(h, dw_event_new_inject(red, caps, "test", 0.99)));
  gst_buffer_unref(red);
  gst_caps_unref(caps);

  // The injected keyframe comes out (possibly after one keyframe that was already waiting).
  bool seen = false;
  for (int i = 0; i < 3 && !seen; ++i) {
    GstBuffer *buf = gst_harness_pull(h);
    ASSERT_NE(buf, nullptr);
    DwFrameMeta *meta = dw_buffer_get_frame_meta(buf);
    ASSERT_NE(meta, nullptr);
    if (meta->kind == DW_FRAME_KIND_INJECTED) {
      seen = true;
      EXPECT_TRUE(meta->injected);
      gst_buffer_map(buf, &map, GST_MAP_READ);
      EXPECT_EQ(map.data[0], 255);  // RGB, red
      EXPECT_EQ(map.data[1], 0);
      EXPECT_EQ(map.data[2], 0);
      gst_buffer_unmap(buf, &map);
    }
    gst_buffer_unref(buf);
  }
  EXPECT_TRUE(seen);

  // The next job's input is an upload of the injected image, not the previous server output.
  ASSERT_TRUE(sim->wait_for_prompts(prompts_before + 1, 20000));
  GstBuffer *after = gst_harness_pull(h);  // wait for the job from the injection to land
  ASSERT_NE(after, nullptr);
  gst_buffer_unref(after);
  auto uploads = sim->uploads();
  ASSERT_GT(uploads.size(), uploads_before);
  const std::string injected_name = uploads[uploads_before].name;
  bool used = false;
  for (const auto &p : sim->prompts())
    if (image_value_of(p.body) == injected_name) used = true;
  EXPECT_TRUE(used) << "no prompt used the upload " << injected_name;

  GstStructure *stats = nullptr;
  g_object_get(h->element, "stats", &stats, nullptr);
  guint64 injections = 0;
  gst_structure_get_uint64(stats, "injections", &injections);
  EXPECT_EQ(injections, 1u);
  gst_structure_free(stats);
  gst_harness_teardown(h);
}

TEST_F(SimFixture, ServerDownAtStartWarnsThenRecovers) {
  dw::sim::Faults faults;
  faults.refuse_connections = true;
  sim->set_faults(faults);
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 num-keyframes=2 ! appsink name=sink sync=false";
  GstElement *pipeline = make_pipeline(desc);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  gst_element_set_state(pipeline, GST_STATE_PLAYING);

  GstMessage *warning = wait_message(pipeline, GstMessageType(GST_MESSAGE_WARNING | GST_MESSAGE_ERROR));
  ASSERT_NE(warning, nullptr);
  EXPECT_EQ(GST_MESSAGE_TYPE(warning), GST_MESSAGE_WARNING) << error_text(warning);
  EXPECT_NE(error_text(warning).find("not reachable"), std::string::npos) << error_text(warning);
  gst_message_unref(warning);

  sim->set_faults(dw::sim::Faults());
  for (int i = 0; i < 2; ++i) {
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND);
    ASSERT_NE(sample, nullptr) << "no keyframe after the server came back";
    gst_sample_unref(sample);
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, ServerRestartMidJobIsSurvived) {
  sim->set_latency(1500);
  std::string desc = "comfykeyframesrc name=src server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 num-keyframes=2 ! appsink name=sink sync=false";
  GstElement *pipeline = make_pipeline(desc);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  ASSERT_TRUE(sim->wait_for_prompts(1, 10000));
  g_usleep(200 * 1000);
  sim->simulate_restart();  // forgets the running job and drops the websocket
  sim->set_latency(20);
  for (int i = 0; i < 2; ++i) {
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND);
    ASSERT_NE(sample, nullptr) << "keyframe " << i << " never came after the restart";
    gst_sample_unref(sample);
  }
  GstStructure *stats = nullptr;
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  ASSERT_NE(src, nullptr);
  g_object_get(src, "stats", &stats, nullptr);
  guint64 retried = 0;
  gst_structure_get_uint64(stats, "jobs-retried", &retried);
  EXPECT_GE(retried, 1u) << "the lost job was not re-queued";
  gst_structure_free(stats);
  gst_object_unref(src);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

namespace {

// Pops bus messages until `match` accepts one (returned, caller unrefs) or the timeout passes;
// ERROR messages fail the test unless `match` takes them.
template <typename Match>
GstMessage *wait_for(GstElement *pipeline, Match match, GstClockTime timeout = 30 * GST_SECOND) {
  GstBus *bus = gst_element_get_bus(pipeline);
  gint64 deadline = g_get_monotonic_time() + static_cast<gint64>(timeout / GST_USECOND);
  GstMessage *found = nullptr;
  while (!found) {
    gint64 left = deadline - g_get_monotonic_time();
    if (left <= 0) break;
    GstMessage *msg = gst_bus_timed_pop(bus, left * GST_USECOND);
    if (!msg) break;
    if (match(msg)) {
      found = msg;
      break;
    }
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) ADD_FAILURE() << error_text(msg);
    gst_message_unref(msg);
  }
  gst_object_unref(bus);
  return found;
}

bool is_element_message(GstMessage *msg, const char *name) {
  return GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT && gst_structure_has_name(gst_message_get_structure(msg), name);
}

}  // namespace

TEST_F(SimFixture, EmptyHostInServerUrlFailsAtStartNamingIt) {
  for (const std::string server : {"http://", "http://127.0.0.1:8188,ftp://x"}) {
    std::string desc = "comfykeyframesrc server=\"" + server + "\" workflow=" + tiny_workflow() + " ! fakesink";
    GstElement *pipeline = make_pipeline(desc);
    ASSERT_TRUE(pipeline);
    EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE) << server;
    GstMessage *msg = wait_message(pipeline, GST_MESSAGE_ERROR, 5 * GST_SECOND);
    ASSERT_NE(msg, nullptr) << server;
    GError *err = nullptr;
    gst_message_parse_error(msg, &err, nullptr);
    EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS)) << error_text(msg);
    g_clear_error(&err);
    const std::string bad = server.find(',') == std::string::npos ? server : "ftp://x";
    EXPECT_NE(error_text(msg).find("'" + bad), std::string::npos) << error_text(msg);
    gst_message_unref(msg);
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(pipeline);
  }
}

// Issue 13: a server killed mid-job is reported within seconds (not after the 300 s execute
// timeout), its job is re-queued without spending a retry (max-retries=0), the recovery is
// announced, and the first keyframe after the gap is a discontinuity. Indices stay contiguous.
TEST_F(SimFixture, ServerKilledMidJobWarnsRecoversAndMarksTheGap) {
  sim->set_latency(300);
  std::string desc = "comfykeyframesrc name=src server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 max-retries=0 ! appsink name=sink sync=false";
  GstElement *pipeline = make_pipeline(desc);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  guint64 expected = 0;
  auto pull = [&](bool *discont) {
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND);
    if (!sample) return false;
    GstBuffer *buf = gst_sample_get_buffer(sample);
    DwFrameMeta *meta = dw_buffer_get_frame_meta(buf);
    EXPECT_NE(meta, nullptr);
    if (meta) {
      EXPECT_EQ(meta->keyframe_index, expected) << "a keyframe index was lost or repeated";
    }
    expected++;
    *discont = GST_BUFFER_FLAG_IS_SET(buf, GST_BUFFER_FLAG_DISCONT);
    gst_sample_unref(sample);
    return true;
  };
  bool discont = false;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(pull(&discont)) << "keyframe " << i;
  EXPECT_FALSE(discont);

  size_t before = sim->prompts().size();
  ASSERT_TRUE(sim->wait_for_prompts(before + 1, 10000));
  g_usleep(100 * 1000);  // the job is running
  gint64 killed = g_get_monotonic_time();
  sim->stop();
  GstMessage *warning = wait_for(pipeline, [](GstMessage *m) { return GST_MESSAGE_TYPE(m) == GST_MESSAGE_WARNING; });
  ASSERT_NE(warning, nullptr) << "no warning after the server died";
  gint64 warn_ms = (g_get_monotonic_time() - killed) / 1000;
  EXPECT_NE(error_text(warning).find("unreachable"), std::string::npos) << error_text(warning);
  EXPECT_NE(error_text(warning).find(sim->url()), std::string::npos) << error_text(warning);
  gst_message_unref(warning);
  // Generous bound for a shared machine; before the fix this took the whole execute timeout (300 s).
  EXPECT_LT(warn_ms, 15000) << "the outage was reported after " << warn_ms << " ms";

  g_usleep(3 * G_USEC_PER_SEC);  // a gap much longer than the ~0.3 s keyframe period
  std::string error;
  sim->set_latency(20);
  ASSERT_TRUE(sim->start(&error)) << error;
  GstMessage *recovered = wait_for(pipeline, [](GstMessage *m) {
    if (!is_element_message(m, DW_MSG_BACKEND_NAME)) return false;
    return g_strcmp0(gst_structure_get_string(gst_message_get_structure(m), DW_MSG_BACKEND_EVENT), "recovered") == 0;
  });
  ASSERT_NE(recovered, nullptr) << "recovery was not announced";
  const GstStructure *rs = gst_message_get_structure(recovered);
  EXPECT_STREQ(gst_structure_get_string(rs, DW_MSG_BACKEND_SERVER), sim->url().c_str());
  guint64 down_time = 0;
  EXPECT_TRUE(gst_structure_get_uint64(rs, DW_MSG_BACKEND_DOWN_TIME, &down_time));
  EXPECT_GT(down_time, 2 * GST_SECOND);
  gst_message_unref(recovered);

  // A keyframe finished before the kill may still be queued; the first one made after is DISCONT.
  int discont_at = -1;
  for (int i = 0; i < 3 && discont_at < 0; ++i) {
    ASSERT_TRUE(pull(&discont)) << "no keyframe after the server came back";
    if (discont) discont_at = i;
  }
  EXPECT_GE(discont_at, 0) << "the first keyframe after the gap is not marked DISCONT";
  ASSERT_TRUE(pull(&discont));
  EXPECT_FALSE(discont) << "only the first keyframe after the gap is a discontinuity";

  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstStructure *stats = nullptr;
  g_object_get(src, "stats", &stats, nullptr);
  guint64 retried = 0, outages = 0;
  gst_structure_get_uint64(stats, DW_STATS_COMFYKEYFRAMESRC_JOBS_RETRIED, &retried);
  gst_structure_get_uint64(stats, DW_STATS_COMFYKEYFRAMESRC_OUTAGES, &outages);
  EXPECT_GE(retried, 1u);
  EXPECT_GE(outages, 1u);
  gst_structure_free(stats);
  gst_object_unref(src);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

// Issue 13: ComfyUI restarted with a clean output dir. The running job named the previous output
// ("x.png [output]"), which is gone: the element re-uploads its own copy and carries on, even with
// max-retries=0.
TEST_F(SimFixture, RestartWithACleanOutputDirReuploadsTheKeyframe) {
  sim->set_latency(800);
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 max-retries=0 ! appsink name=sink sync=false";
  GstElement *pipeline = make_pipeline(desc);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND);
  ASSERT_NE(sample, nullptr);
  gst_sample_unref(sample);
  ASSERT_TRUE(sim->wait_for_prompts(2, 10000));
  ASSERT_NE(image_value_of(sim->prompts()[1].body).find("[output]"), std::string::npos);
  sim->stop();
  const std::string out_dir = sim->data_dir() + "/output";
  GDir *dir = g_dir_open(out_dir.c_str(), 0, nullptr);
  ASSERT_NE(dir, nullptr) << out_dir;
  while (const gchar *name = g_dir_read_name(dir)) g_remove((out_dir + "/" + name).c_str());
  g_dir_close(dir);
  size_t uploads_before = sim->uploads().size();
  std::string error;
  sim->set_latency(20);
  ASSERT_TRUE(sim->start(&error)) << error;
  for (int i = 0; i < 2; ++i) {
    sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND);
    ASSERT_NE(sample, nullptr) << "keyframe " << i + 1 << " after the restart never came";
    gst_sample_unref(sample);
  }
  EXPECT_GT(sim->uploads().size(), uploads_before) << "the keyframe was not re-uploaded";
  GstMessage *err = wait_message(pipeline, GST_MESSAGE_ERROR, 100 * GST_MSECOND);
  EXPECT_EQ(err, nullptr) << (err ? error_text(err) : "");
  if (err) gst_message_unref(err);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, MaxOutageMakesALongOutageAnError) {
  dw::sim::Faults faults;
  faults.refuse_connections = true;
  sim->set_faults(faults);
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 max-outage=2 ! fakesink";
  GstElement *pipeline = make_pipeline(desc);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstMessage *msg = wait_message(pipeline, GST_MESSAGE_ERROR, 60 * GST_SECOND);
  ASSERT_NE(msg, nullptr) << "max-outage=2 never gave up";
  EXPECT_NE(error_text(msg).find("max-outage"), std::string::npos) << error_text(msg);
  gst_message_unref(msg);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, NullDuringAJobIsPrompt) {
  sim->set_latency(8000);
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 ! fakesink";
  GstElement *pipeline = make_pipeline(desc);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  ASSERT_TRUE(sim->wait_for_prompts(1, 10000));
  gint64 start = g_get_monotonic_time();
  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gint64 elapsed_ms = (g_get_monotonic_time() - start) / 1000;
  // The job runs for 8 s: anything near that means the stop waited for the server.
  EXPECT_LT(elapsed_ms, 2000);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, MissingWorkflowFailsAtStartNamingTheFile) {
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=/nonexistent/flow.json ! fakesink";
  GstElement *pipeline = make_pipeline(desc);
  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  GstMessage *msg = wait_message(pipeline, GST_MESSAGE_ERROR, 5 * GST_SECOND);
  ASSERT_NE(msg, nullptr);
  EXPECT_NE(error_text(msg).find("/nonexistent/flow.json"), std::string::npos) << error_text(msg);
  gst_message_unref(msg);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, WorkflowRejectedByServerIsAnError) {
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" +
                     source_path("tests/data/unknown_node.json") + " width=64 height=64 ! fakesink";
  GstElement *pipeline = make_pipeline(desc);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstMessage *msg = wait_message(pipeline, GST_MESSAGE_ERROR);
  ASSERT_NE(msg, nullptr);
  EXPECT_NE(error_text(msg).find("NoSuchSampler"), std::string::npos) << error_text(msg);
  gst_message_unref(msg);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, ExecutionErrorsAreRetriedThenFatal) {
  dw::sim::Faults faults;
  faults.execution_error_always = true;
  sim->set_faults(faults);
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 max-retries=2 ! fakesink";
  GstElement *pipeline = make_pipeline(desc);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  int warnings = 0;
  GstMessage *msg = nullptr;
  while ((msg = wait_message(pipeline, GstMessageType(GST_MESSAGE_WARNING | GST_MESSAGE_ERROR)))) {
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) break;
    warnings++;
    gst_message_unref(msg);
  }
  ASSERT_NE(msg, nullptr);
  EXPECT_NE(error_text(msg).find("execution"), std::string::npos) << error_text(msg);
  gst_message_unref(msg);
  EXPECT_EQ(warnings, 2);
  EXPECT_EQ(sim->prompts().size(), 3u);  // the first attempt and two retries
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, WrongSizeIsScaledOrRefusedByProperty) {
  dw::sim::Faults faults;
  faults.wrong_width = 40;
  faults.wrong_height = 30;
  sim->set_faults(faults);
  {
    std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                       " width=64 height=64 num-keyframes=1 ! appsink name=sink sync=false";
    GstElement *pipeline = make_pipeline(desc);
    GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 20 * GST_SECOND);
    ASSERT_NE(sample, nullptr);
    GstVideoInfo info;
    gst_video_info_from_caps(&info, gst_sample_get_caps(sample));
    EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 64);
    EXPECT_EQ(gst_buffer_get_size(gst_sample_get_buffer(sample)), GST_VIDEO_INFO_SIZE(&info));
    gst_sample_unref(sample);
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(sink);
    gst_object_unref(pipeline);
  }
  {
    std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                       " width=64 height=64 size-mismatch=error ! fakesink";
    GstElement *pipeline = make_pipeline(desc);
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    GstMessage *msg = wait_message(pipeline, GST_MESSAGE_ERROR);
    ASSERT_NE(msg, nullptr);
    EXPECT_NE(error_text(msg).find("40x30"), std::string::npos) << error_text(msg);
    gst_message_unref(msg);
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(pipeline);
  }
}

// The point of the product: ComfyUI already works on keyframe N+1 while N is still being processed
// downstream. A probe makes downstream slow and records when it finished each keyframe; the
// simulator records when each job arrived. Order of events only, no thresholds.
TEST_F(SimFixture, NextJobIsQueuedBeforeDownstreamFinishes) {
  sim->set_latency(100);
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 num-keyframes=4 ! identity name=slow ! fakesink sync=false";
  GstElement *pipeline = make_pipeline(desc);
  GstElement *slow = gst_bin_get_by_name(GST_BIN(pipeline), "slow");
  GstPad *pad = gst_element_get_static_pad(slow, "src");
  static std::mutex mutex;
  static std::vector<gint64> finished;
  finished.clear();
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER,
                    [](GstPad *, GstPadProbeInfo *, gpointer) -> GstPadProbeReturn {
                      g_usleep(300 * 1000);  // downstream cost D = 300 ms > G = 100 ms
                      std::lock_guard<std::mutex> lock(mutex);
                      finished.push_back(g_get_monotonic_time());
                      return GST_PAD_PROBE_OK;
                    },
                    nullptr, nullptr);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstMessage *msg = wait_message(pipeline, GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR), 60 * GST_SECOND);
  ASSERT_NE(msg, nullptr);
  EXPECT_EQ(GST_MESSAGE_TYPE(msg), GST_MESSAGE_EOS) << error_text(msg);
  gst_message_unref(msg);
  auto prompts = sim->prompts();
  std::lock_guard<std::mutex> lock(mutex);
  ASSERT_EQ(finished.size(), 4u);
  ASSERT_EQ(prompts.size(), 4u);
  for (size_t n = 0; n + 1 < 4; ++n)
    EXPECT_LT(prompts[n + 1].received_us, finished[n]) << "job for keyframe " << n + 1
                                                       << " arrived after downstream finished keyframe " << n;
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pad);
  gst_object_unref(slow);
  gst_object_unref(pipeline);
}

TEST_F(SimFixture, StateCyclingLeavesNothingBehind) {
  std::string desc = "comfykeyframesrc server=" + sim->url() + " workflow=" + tiny_workflow() +
                     " width=64 height=64 ! fakesink";
  GstElement *pipeline = make_pipeline(desc);
  const GstState states[] = {GST_STATE_READY, GST_STATE_PAUSED, GST_STATE_PLAYING, GST_STATE_PAUSED,
                             GST_STATE_PLAYING, GST_STATE_READY, GST_STATE_PLAYING, GST_STATE_NULL};
  for (GstState s : states) {
    GstStateChangeReturn ret = gst_element_set_state(pipeline, s);
    EXPECT_NE(ret, GST_STATE_CHANGE_FAILURE);
    if (ret == GST_STATE_CHANGE_ASYNC) gst_element_get_state(pipeline, nullptr, nullptr, 5 * GST_SECOND);
    g_usleep(50 * 1000);
  }
  gst_object_unref(pipeline);
}

TEST(ComfyKeyframeSrc, InspectPageIsComplete) {
  GstElementFactory *factory = gst_element_factory_find("comfykeyframesrc");
  ASSERT_NE(factory, nullptr);
  EXPECT_STREQ(gst_element_factory_get_metadata(factory, GST_ELEMENT_METADATA_KLASS), "Source/Video/Network");
  GstElement *element = gst_element_factory_create(factory, nullptr);
  guint n = 0;
  GParamSpec **specs = g_object_class_list_properties(G_OBJECT_GET_CLASS(element), &n);
  for (guint i = 0; i < n; ++i) {
    if (specs[i]->owner_type != G_OBJECT_TYPE(element)) continue;
    EXPECT_GT(strlen(g_param_spec_get_blurb(specs[i])), 10u) << g_param_spec_get_name(specs[i]);
  }
  g_free(specs);
  gst_object_unref(element);
  gst_object_unref(factory);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// cachetap: state cycling, start errors, pass-through that never waits for a slow analysis, warm
// start and a corrupt index, the monitor message, injection on a frozen stream (harness), and the
// whole loop against the in-process ComfyUI simulator: comfykeyframesrc ! cachetap ! appsink with a
// workflow that returns the same image every time (denoise 0, fixed seed).
#include <gst/app/gstappsink.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>
#include <json-glib/json-glib.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "latent/codec.h"
#include "config.h"
#include "dwevents.h"
#include "dwmeta.h"
#include "image/image.h"
#include "sim/simulator.h"
#include "sim_test_helpers.h"

namespace {

using dw_test::error_text;
using dw_test::image_value_of;

std::string source_path(const std::string &rel) {
  const char *dir = g_getenv("DW_SOURCE_DIR");
  return std::string(dir ? dir : DW_SOURCE_DIR) + "/" + rel;
}

std::string shared_dir() {
  const char *d = g_getenv("DW_SHARED_DIR");
  return d ? d : DW_SHARED_DIR;
}

dw::Image shared_image(const std::string &name, int size = 64) {
  gchar *data = nullptr;
  gsize len = 0;
  const std::string path = shared_dir() + "/images/" + name + ".png";
  EXPECT_TRUE(g_file_get_contents(path.c_str(), &data, &len, nullptr)) << path;
  dw::Image img;
  std::string err;
  EXPECT_TRUE(dw::decode_png(reinterpret_cast<uint8_t *>(data), len, img, &err)) << err;
  g_free(data);
  if (img.channels != 3) img = dw::convert_channels(img, 3);
  return dw::resize_bilinear(img, size, size);
}

struct TempDir {
  std::string path;
  TempDir() {
    gchar *p = g_dir_make_tmp("cachetap-XXXXXX", nullptr);
    path = p;
    g_free(p);
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    if (system(cmd.c_str()) != 0) {
    }
  }
  void put_png(const std::string &name, const dw::Image &img) const {
    auto png = dw::encode_png(img);
    ASSERT_TRUE(g_file_set_contents((path + "/" + name).c_str(), reinterpret_cast<const gchar *>(png.data()),
                                    static_cast<gssize>(png.size()), nullptr));
  }
  size_t count_pngs() const {
    size_t n = 0;
    GDir *d = g_dir_open(path.c_str(), 0, nullptr);
    while (const gchar *name = g_dir_read_name(d))
      if (g_str_has_suffix(name, ".png")) n++;
    g_dir_close(d);
    return n;
  }
};

GstBuffer *buffer_of(const dw::Image &img, guint64 index, DwFrameKind kind = DW_FRAME_KIND_KEYFRAME) {
  GstBuffer *buf = gst_buffer_new_allocate(nullptr, img.pixels.size(), nullptr);
  gst_buffer_fill(buf, 0, img.pixels.data(), img.pixels.size());
  GST_BUFFER_PTS(buf) = index * GST_SECOND;
  dw_buffer_add_frame_meta(buf, kind, index, 0.0);
  return buf;
}

GstHarness *new_harness(const std::string &dir, const std::string &extra_props = "") {
  std::string desc = "cachetap cache-dir=\"" + dir + "\" " + extra_props;
  GstHarness *h = gst_harness_new_parse(desc.c_str());
  gst_harness_set_src_caps_str(h, "video/x-raw,format=RGB,width=64,height=64,framerate=0/1");
  return h;
}

GstStructure *stats_of(GstElement *e) {
  GstStructure *s = nullptr;
  g_object_get(e, "stats", &s, nullptr);
  return s;
}

guint64 stat_u64(GstElement *e, const char *field) {
  GstStructure *s = stats_of(e);
  guint64 v = 0;
  if (!gst_structure_get_uint64(s, field, &v)) {
    guint u = 0;
    if (gst_structure_get_uint(s, field, &u)) v = u;
  }
  gst_structure_free(s);
  return v;
}

// Polls until cond() or the timeout.
template <typename F>
bool wait_until(F cond, int timeout_ms = 10000) {
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    if (cond()) return true;
    g_usleep(10 * 1000);
  }
  return cond();
}

GstElement *harness_element(GstHarness *h) {
  // new_parse wraps the element in a bin; the stats live on cachetap itself.
  if (GST_IS_BIN(h->element)) {
    GstElement *e = nullptr;
    GstIterator *it = gst_bin_iterate_elements(GST_BIN(h->element));
    GValue v = G_VALUE_INIT;
    if (gst_iterator_next(it, &v) == GST_ITERATOR_OK) e = GST_ELEMENT(g_value_get_object(&v));
    g_value_unset(&v);
    gst_iterator_free(it);
    return e;  // borrowed (the bin holds it)
  }
  return h->element;
}

}  // namespace

TEST(CacheTap, StateCycling) {
  TempDir dir;
  for (int round = 0; round < 2; ++round) {
    GstElement *e = gst_element_factory_make("cachetap", nullptr);
    ASSERT_NE(e, nullptr);
    g_object_set(e, "cache-dir", dir.path.c_str(), nullptr);
    for (GstState s : {GST_STATE_READY, GST_STATE_PAUSED, GST_STATE_PLAYING, GST_STATE_PAUSED, GST_STATE_READY,
                       GST_STATE_PAUSED, GST_STATE_READY, GST_STATE_NULL})
      EXPECT_NE(gst_element_set_state(e, s), GST_STATE_CHANGE_FAILURE);
    gst_object_unref(e);
  }
  EXPECT_TRUE(g_file_test((dir.path + "/index.json").c_str(), G_FILE_TEST_EXISTS));
}

TEST(CacheTap, UnwritableCacheDirFailsAtStartNamingIt) {
  TempDir dir;
  const std::string file = dir.path + "/not-a-directory";
  ASSERT_TRUE(g_file_set_contents(file.c_str(), "x", 1, nullptr));
  const std::string bad = file + "/cache";
  GstElement *pipeline = gst_parse_launch(("fakesrc ! cachetap cache-dir=\"" + bad + "\" ! fakesink").c_str(), nullptr);
  ASSERT_NE(pipeline, nullptr);
  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  GstBus *bus = gst_element_get_bus(pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, 5 * GST_SECOND, GST_MESSAGE_ERROR);
  ASSERT_NE(msg, nullptr);
  EXPECT_NE(error_text(msg).find(bad), std::string::npos) << error_text(msg);
  gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

TEST(CacheTap, BuffersPassAtOnceWhileAnalysisIsSlow) {
  TempDir dir;
  GstHarness *h = new_harness(dir.path, "analysis-delay=100 max-queue=2 monitor-interval=0");
  GstElement *tap = harness_element(h);
  gst_harness_play(h);
  const dw::Image img = shared_image("chelsea");
  const int n = 30;
  const gint64 start = g_get_monotonic_time();
  for (int i = 0; i < n; ++i) {
    GstBuffer *in = buffer_of(img, static_cast<guint64>(i));
    GstBuffer *expected = in;
    ASSERT_EQ(gst_harness_push(h, in), GST_FLOW_OK);
    GstBuffer *out = gst_harness_pull(h);
    ASSERT_NE(out, nullptr);
    EXPECT_EQ(out, expected) << "not passed through untouched";
    gst_buffer_unref(out);
  }
  const double elapsed_ms = (g_get_monotonic_time() - start) / 1000.0;
  printf("[ figures  ] %d keyframes through cachetap with a 100 ms analysis: %.1f ms\n", n, elapsed_ms);
  // 30 analyses take 3 s; the stream must not have waited for them.
  EXPECT_LT(elapsed_ms, 1000.0);
  ASSERT_TRUE(wait_until([&] { return stat_u64(tap, "analysed") + stat_u64(tap, "analyses-skipped") == n; }));
  EXPECT_EQ(stat_u64(tap, "keyframes"), static_cast<guint64>(n));
  EXPECT_GE(stat_u64(tap, "analyses-skipped"), static_cast<guint64>(n - 10));
  printf("[ figures  ] analysed %" G_GUINT64_FORMAT ", skipped %" G_GUINT64_FORMAT "\n", stat_u64(tap, "analysed"),
         stat_u64(tap, "analyses-skipped"));
  gst_harness_teardown(h);
}

TEST(CacheTap, PopulatesWarmStartsAndMonitors) {
  TempDir dir;
  std::vector<dw::Image> imgs = {shared_image("chelsea"), shared_image("astronaut"), shared_image("motorcycle_left")};
  {
    GstHarness *h = new_harness(dir.path, "monitor-interval=3");
    GstElement *tap = harness_element(h);
    GstBus *bus = gst_bus_new();
    gst_element_set_bus(tap, bus);
    gst_harness_play(h);
    guint64 i = 0;
    for (auto &img : imgs) gst_buffer_unref(gst_harness_push_and_pull(h, buffer_of(img, i++)));
    ASSERT_TRUE(wait_until([&] { return stat_u64(tap, "analysed") == 3; }));
    // The monitor runs when the worker is idle after every 3rd keyframe.
    GstMessage *msg = nullptr;
    while ((msg = gst_bus_timed_pop_filtered(bus, 5 * GST_SECOND, GST_MESSAGE_ELEMENT))) {
      if (gst_structure_has_name(gst_message_get_structure(msg), "dreamwindow-cache")) break;
      gst_message_unref(msg);
    }
    ASSERT_NE(msg, nullptr) << "no dreamwindow-cache message";
    const GstStructure *s = gst_message_get_structure(msg);
    guint entries = 0, clusters = 0;
    gdouble diversity = 0;
    EXPECT_TRUE(gst_structure_get_uint(s, "entries", &entries));
    EXPECT_TRUE(gst_structure_get_uint(s, "clusters", &clusters));
    EXPECT_TRUE(gst_structure_get_double(s, "diversity", &diversity));
    EXPECT_EQ(entries, 3u);
    EXPECT_EQ(clusters, 3u);
    EXPECT_GT(diversity, 0.3);
    gst_message_unref(msg);
    EXPECT_EQ(stat_u64(tap, "added"), 3u);
    // The same image again is not diverse: not added.
    gst_buffer_unref(gst_harness_push_and_pull(h, buffer_of(imgs[0], i++)));
    ASSERT_TRUE(wait_until([&] { return stat_u64(tap, "analysed") == 4; }));
    EXPECT_EQ(stat_u64(tap, "rejected"), 1u);
    // An injected keyframe is never added.
    gst_buffer_unref(gst_harness_push_and_pull(h, buffer_of(shared_image("motorcycle_right"), i++, DW_FRAME_KIND_INJECTED)));
    ASSERT_TRUE(wait_until([&] { return stat_u64(tap, "analysed") == 5; }));
    EXPECT_EQ(stat_u64(tap, "entries"), 3u);
    gst_element_set_bus(tap, nullptr);
    gst_object_unref(bus);
    gst_harness_teardown(h);
  }
  EXPECT_EQ(dir.count_pngs(), 3u);
  {
    GstHarness *h = new_harness(dir.path);
    GstElement *tap = harness_element(h);
    gst_harness_play(h);
    EXPECT_EQ(stat_u64(tap, "warm-entries"), 3u);
    gst_harness_teardown(h);
  }
}

// The prompt recorded with a cached keyframe is that keyframe's own (its DwFrameMeta, contract 3),
// not whatever an upstream element's property says when the worker gets to it.
TEST(CacheTap, PromptComesFromTheKeyframesMeta) {
  TempDir dir;
  GstHarness *h = new_harness(dir.path);
  GstElement *tap = harness_element(h);
  gst_harness_play(h);
  const char *prompts[] = {"a lighthouse at dusk", "an astronaut in a field of tulips"};
  const char *images[] = {"chelsea", "astronaut"};
  for (guint64 i = 0; i < 2; ++i) {
    GstBuffer *buf = buffer_of(shared_image(images[i]), i);
    gst_buffer_remove_meta(buf, GST_META_CAST(dw_buffer_get_frame_meta(buf)));
    dw_buffer_add_keyframe_meta(buf, i, prompts[i], 1000 + static_cast<gint64>(i), FALSE);
    gst_buffer_unref(gst_harness_push_and_pull(h, buf));
  }
  ASSERT_TRUE(wait_until([&] { return stat_u64(tap, "analysed") == 2; }));
  EXPECT_EQ(stat_u64(tap, "added"), 2u);
  gst_harness_teardown(h);
  gchar *text = nullptr;
  ASSERT_TRUE(g_file_get_contents((dir.path + "/index.json").c_str(), &text, nullptr, nullptr));
  const std::string index(text);
  g_free(text);
  for (const char *p : prompts) EXPECT_NE(index.find(p), std::string::npos) << "index.json lacks \"" << p << "\"";
}

TEST(CacheTap, CorruptIndexWarnsAndIsRebuilt) {
  TempDir dir;
  dir.put_png("chelsea.png", shared_image("chelsea"));
  dir.put_png("astronaut.png", shared_image("astronaut"));
  ASSERT_TRUE(g_file_set_contents((dir.path + "/index.json").c_str(), "{ not json", -1, nullptr));
  GstElement *tap = gst_element_factory_make("cachetap", nullptr);
  g_object_set(tap, "cache-dir", dir.path.c_str(), nullptr);
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(tap, bus);
  ASSERT_NE(gst_element_set_state(tap, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, 5 * GST_SECOND, GST_MESSAGE_WARNING);
  ASSERT_NE(msg, nullptr);
  EXPECT_NE(error_text(msg).find("corrupt"), std::string::npos) << error_text(msg);
  gst_message_unref(msg);
  EXPECT_EQ(stat_u64(tap, "warm-entries"), 2u);
  gst_element_set_state(tap, GST_STATE_NULL);
  gst_element_set_bus(tap, nullptr);
  gst_object_unref(bus);
  gst_object_unref(tap);
  EXPECT_EQ(dir.count_pngs(), 2u);
  EXPECT_TRUE(g_file_test((dir.path + "/index.json.corrupt").c_str(), G_FILE_TEST_EXISTS));
}

TEST(CacheTap, FrozenStreamGetsAnInjectEventUpstream) {
  TempDir dir;
  dir.put_png("astronaut.png", shared_image("astronaut"));
  GstHarness *h = new_harness(dir.path, "collapse-window=4 injection-cooldown=3 injection-strength=1.0");
  GstElement *tap = harness_element(h);
  gst_harness_play(h);
  const dw::Image still = shared_image("chelsea");
  GstEvent *event = nullptr;
  guint64 pushed = 0;
  for (; pushed < 12 && !event; ++pushed) {
    gst_buffer_unref(gst_harness_push_and_pull(h, buffer_of(still, pushed)));
    wait_until([&] { return stat_u64(tap, "analysed") == pushed + 1; });
    while (!event && (event = gst_harness_try_pull_upstream_event(h))) {
      if (!dw_event_is_inject(event)) {
        gst_event_unref(event);
        event = nullptr;
      }
    }
  }
  ASSERT_NE(event, nullptr) << "no inject event after " << pushed << " identical keyframes";
  EXPECT_EQ(pushed, 4u);  // as soon as the window (4) is full
  GstBuffer *image = nullptr;
  GstCaps *caps = nullptr;
  gchar *reason = nullptr;
  gdouble similarity = 1;
  ASSERT_TRUE(dw_event_parse_inject(event, &image, &caps, &reason, &similarity));
  EXPECT_NE(std::string(reason).find("severe"), std::string::npos) << reason;
  EXPECT_LT(similarity, 0.8);
  // Strength 1: the injected image is the cached astronaut (at the stream's size).
  GstVideoInfo info;
  ASSERT_TRUE(gst_video_info_from_caps(&info, caps));
  EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 64);
  const dw::Image astro = shared_image("astronaut");
  GstMapInfo map;
  gst_buffer_map(image, &map, GST_MAP_READ);
  EXPECT_EQ(map.data[3 * 64 * 10 + 30], astro.pixels[3 * 64 * 10 + 30]);
  gst_buffer_unmap(image, &map);
  gst_buffer_unref(image);
  gst_caps_unref(caps);
  g_free(reason);
  gst_event_unref(event);
  EXPECT_EQ(stat_u64(tap, "injections"), 1u);

  // Cooldown: the still stream collapses again at once, but no event before 3 more keyframes...
  guint64 events_during_cooldown = 0;
  for (int i = 0; i < 2; ++i, ++pushed) {
    gst_buffer_unref(gst_harness_push_and_pull(h, buffer_of(still, pushed)));
    wait_until([&] { return stat_u64(tap, "analysed") == pushed + 1; });
  }
  while (GstEvent *ev = gst_harness_try_pull_upstream_event(h)) {
    if (dw_event_is_inject(ev)) events_during_cooldown++;
    gst_event_unref(ev);
  }
  EXPECT_EQ(events_during_cooldown, 0u);
  // ...and with injection off, never.
  g_object_set(tap, "injection", FALSE, nullptr);
  for (int i = 0; i < 6; ++i, ++pushed) {
    gst_buffer_unref(gst_harness_push_and_pull(h, buffer_of(still, pushed)));
    wait_until([&] { return stat_u64(tap, "analysed") == pushed + 1; });
  }
  EXPECT_EQ(stat_u64(tap, "injections"), 1u);
  EXPECT_GT(stat_u64(tap, "collapses-severe"), 0u);
  gst_harness_teardown(h);
}

// With the shared VAE (taesd, the files vaeinterp would load): the blend is a latent slerp and the
// stats name the codec. Skipped in builds without LibTorch.
TEST(CacheTap, InjectsALatentBlendWithTheSharedVae) {
  if (!dw::latent::torch_available()) GTEST_SKIP() << "built without LibTorch (-Dtorch=disabled)";
  TempDir dir;
  dir.put_png("astronaut.png", shared_image("astronaut"));
  const std::string enc = shared_dir() + "/models/taef2_encoder.safetensors";
  const std::string dec = shared_dir() + "/models/taef2_decoder.safetensors";
  GstHarness *h = new_harness(dir.path, "collapse-window=3 injection-strength=0.5 encoder=\"" + enc +
                                            "\" decoder=\"" + dec + "\"");
  GstElement *tap = harness_element(h);
  GstBus *bus = gst_bus_new();
  gst_element_set_bus(tap, bus);
  if (gst_element_set_state(h->element, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
    std::string why = msg ? error_text(msg) : "?";
    if (msg) gst_message_unref(msg);
    gst_element_set_bus(tap, nullptr);
    gst_object_unref(bus);
    gst_harness_teardown(h);
    GTEST_SKIP() << "no model backend: " << why;
  }
  gst_harness_play(h);
  GstStructure *st = stats_of(tap);
  const std::string embedding = gst_structure_get_string(st, "embedding");
  gst_structure_free(st);
  EXPECT_NE(embedding.find("taesd"), std::string::npos) << embedding;
  const dw::Image still = shared_image("chelsea");
  GstEvent *event = nullptr;
  for (guint64 i = 0; i < 8 && !event; ++i) {
    gst_buffer_unref(gst_harness_push_and_pull(h, buffer_of(still, i)));
    wait_until([&] { return stat_u64(tap, "analysed") == i + 1; }, 20000);
    while (!event && (event = gst_harness_try_pull_upstream_event(h)))
      if (!dw_event_is_inject(event)) {
        gst_event_unref(event);
        event = nullptr;
      }
  }
  ASSERT_NE(event, nullptr);
  GstBuffer *image = nullptr;
  GstCaps *caps = nullptr;
  ASSERT_TRUE(dw_event_parse_inject(event, &image, &caps, nullptr, nullptr));
  GstVideoInfo info;
  ASSERT_TRUE(gst_video_info_from_caps(&info, caps));
  EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 64);
  EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&info), 64);
  // Halfway between the two: differs from both.
  GstMapInfo map;
  gst_buffer_map(image, &map, GST_MAP_READ);
  const dw::Image astro = shared_image("astronaut");
  double d_still = 0, d_astro = 0;
  for (size_t i = 0; i < map.size && i < still.pixels.size(); ++i) {
    d_still += std::abs(int(map.data[i]) - int(still.pixels[i]));
    d_astro += std::abs(int(map.data[i]) - int(astro.pixels[i]));
  }
  gst_buffer_unmap(image, &map);
  printf("[ figures  ] latent blend at 0.5: mean abs difference to current %.1f, to cached %.1f\n",
         d_still / still.pixels.size(), d_astro / astro.pixels.size());
  EXPECT_GT(d_still / still.pixels.size(), 5.0);
  EXPECT_GT(d_astro / astro.pixels.size(), 5.0);
  gst_buffer_unref(image);
  gst_caps_unref(caps);
  gst_event_unref(event);
  gst_element_set_bus(tap, nullptr);
  gst_object_unref(bus);
  gst_harness_teardown(h);
}

// The whole loop against the simulator: denoise 0 and a fixed seed make every keyframe a copy of
// the previous one, a frozen loop; cachetap injects a pre-cached image and comfykeyframesrc uses it
// as the next job's input.
TEST(CacheTap, EndToEndInjectionSteersTheSimulatedLoop) {
  dw::sim::Config config;
  config.latency_ms = 20;
  dw::sim::Simulator sim(config);
  std::string error;
  ASSERT_TRUE(sim.start(&error)) << error;
  TempDir dir;
  dir.put_png("chelsea.png", shared_image("chelsea"));
  dir.put_png("astronaut.png", shared_image("astronaut"));

  const guint cooldown = 5;
  std::string desc = "comfykeyframesrc name=src server=" + sim.url() + " workflow=" +
                     source_path("tests/data/tiny_img2img.json") +
                     " width=64 height=64 denoise=0 seed-mode=fixed ! cachetap name=tap cache-dir=\"" + dir.path +
                     "\" collapse-window=4 injection-cooldown=" + std::to_string(cooldown) +
                     " ! appsink name=sink sync=false max-buffers=64 drop=true";
  GError *err = nullptr;
  GstElement *pipeline = gst_parse_launch(desc.c_str(), &err);
  ASSERT_EQ(err, nullptr) << (err ? err->message : "");
  GstElement *tap = gst_bin_get_by_name(GST_BIN(pipeline), "tap");
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);

  GstBus *bus = gst_element_get_bus(pipeline);
  std::vector<guint64> injected_at;
  std::vector<std::string> entries;
  const gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
  while (injected_at.size() < 2 && g_get_monotonic_time() < deadline) {
    GstMessage *msg = gst_bus_timed_pop(bus, GST_SECOND);
    if (!msg) continue;
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      ADD_FAILURE() << error_text(msg);
      gst_message_unref(msg);
      break;
    }
    const GstStructure *s = gst_message_get_structure(msg);
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT && gst_structure_has_name(s, "dreamwindow-injection")) {
      guint64 index = 0;
      gdouble similarity = 0;
      EXPECT_TRUE(gst_structure_get_uint64(s, "keyframe-index", &index));
      EXPECT_TRUE(gst_structure_get_double(s, "similarity", &similarity));
      EXPECT_NE(gst_structure_get_string(s, "reason"), nullptr);
      entries.push_back(gst_structure_get_string(s, "entry") ? gst_structure_get_string(s, "entry") : "");
      printf("[ figures  ] injection at keyframe %" G_GUINT64_FORMAT ": %s, entry %s, similarity %.3f\n", index,
             gst_structure_get_string(s, "reason"), entries.back().c_str(), similarity);
      injected_at.push_back(index);
    }
    gst_message_unref(msg);
  }
  ASSERT_EQ(injected_at.size(), 2u) << "injections seen: " << injected_at.size();
  EXPECT_GE(injected_at[1] - injected_at[0], cooldown) << "cooldown not respected";
  // Wait for the job that used the second injection, then look at what the server received.
  const size_t prompts_now = sim.prompts().size();
  ASSERT_TRUE(sim.wait_for_prompts(prompts_now + 1, 10000));
  gst_element_set_state(pipeline, GST_STATE_NULL);

  // uploads[0] is the bootstrap image; every later upload is an injected image, and a job used it.
  auto uploads = sim.uploads();
  auto prompts = sim.prompts();
  ASSERT_GE(uploads.size(), 2u);
  for (size_t u = 1; u < uploads.size(); ++u) {
    bool used = false;
    for (const auto &p : prompts)
      if (image_value_of(p.body) == uploads[u].name) used = true;
    EXPECT_TRUE(used) << "no prompt used the injected upload " << uploads[u].name;
  }
  EXPECT_GE(stat_u64(tap, "injections"), 2u);
  EXPECT_GE(stat_u64(tap, "warm-entries"), 2u);
  // The comfy source counted them too.
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstStructure *ss = stats_of(src);
  guint64 src_injections = 0;
  gst_structure_get_uint64(ss, "injections", &src_injections);
  EXPECT_GE(src_injections, 2u);
  gst_structure_free(ss);
  gst_object_unref(src);
  gst_object_unref(bus);
  gst_object_unref(tap);
  gst_object_unref(pipeline);
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// bench/keyframe_overlap: does generation overlap with downstream work?
//
// For a simulator generation latency G and a downstream cost D per keyframe it measures the
// keyframe period P of
//   - comfykeyframesrc ! identity(+D) ! fakesink            (the element: job N+1 queued before N is pushed)
//   - a sequential loop with the same client: job, wait, D, next job   (what the prototype did)
// and prints P / max(G, D) for both, and P / max(G', D) with G' the generation time the element
// measured (simulator latency plus HTTP, PNG and scheduling). Goal for the element: <= 1.05; the sequential loop is ~ (G+D)/max(G,D).
//
// Usage: keyframe_overlap [keyframes-per-case (default 12)]
#include <gst/gst.h>
#include <json-glib/json-glib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "feedback_loop.h"
#include "comfy/client.h"
#include "comfy/workflow.h"
#include "dwstats.h"
#include "image/image.h"
#include "sim/simulator.h"

#ifndef DW_PLUGIN_BUILD_DIR
#define DW_PLUGIN_BUILD_DIR ""
#endif

namespace {

constexpr int kSize = 256;
constexpr int kWarmup = 2;

// The shipped SD-Turbo workflow with its ImageScale (node 5) set to the benchmark size, so the
// simulator produces kSize images and no time goes into making and shrinking 512x512 ones.
std::string workflow_path() {
  static std::string path;
  if (!path.empty()) return path;
  const char *dir = g_getenv("DW_SOURCE_DIR");
  const std::string example = std::string(dir ? dir : DW_SOURCE_DIR) + "/examples/workflows/sdturbo_img2img.json";
  JsonParser *parser = json_parser_new();
  GError *err = nullptr;
  if (!json_parser_load_from_file(parser, example.c_str(), &err)) {
    fprintf(stderr, "cannot read %s: %s\n", example.c_str(), err->message);
    exit(1);
  }
  JsonObject *graph = json_node_get_object(json_parser_get_root(parser));
  JsonObject *scale = json_object_get_object_member(json_object_get_object_member(graph, "5"), "inputs");
  json_object_set_int_member(scale, "width", kSize);
  json_object_set_int_member(scale, "height", kSize);
  gchar *text = json_to_string(json_parser_get_root(parser), TRUE);
  path = std::string(g_get_tmp_dir()) + "/dw_keyframe_overlap_" + std::to_string(kSize) + ".json";
  if (!g_file_set_contents(path.c_str(), text, -1, &err)) {
    fprintf(stderr, "cannot write %s: %s\n", path.c_str(), err->message);
    exit(1);
  }
  g_free(text);
  g_object_unref(parser);
  return path;
}

struct ProbeData {
  std::mutex mutex;
  std::vector<gint64> pushed;  // when downstream received each keyframe
  guint cost_ms = 0;
};

GstPadProbeReturn slow_probe(GstPad *, GstPadProbeInfo *, gpointer user_data) {
  auto *data = static_cast<ProbeData *>(user_data);
  {
    std::lock_guard<std::mutex> lock(data->mutex);
    data->pushed.push_back(g_get_monotonic_time());
  }
  g_usleep(data->cost_ms * 1000);
  return GST_PAD_PROBE_OK;
}

double mean_period_ms(const std::vector<gint64> &t) {
  if (t.size() < static_cast<size_t>(kWarmup) + 2) return -1;
  return (t.back() - t[kWarmup]) / 1000.0 / static_cast<double>(t.size() - 1 - kWarmup);
}

double run_element(dw::sim::Simulator &sim, guint cost_ms, int keyframes, double *generation_ms) {
  ProbeData data;
  data.cost_ms = cost_ms;
  std::string desc = "comfykeyframesrc name=src server=" + sim.url() + " workflow=" + workflow_path() +
                     " width=" + std::to_string(kSize) + " height=" + std::to_string(kSize) +
                     " num-keyframes=" + std::to_string(keyframes) +
                     " post-messages=false ! identity name=slow ! fakesink sync=false";
  GError *err = nullptr;
  GstElement *pipeline = gst_parse_launch(desc.c_str(), &err);
  if (!pipeline) {
    fprintf(stderr, "cannot build pipeline: %s\n", err ? err->message : "?");
    exit(1);
  }
  GstElement *slow = gst_bin_get_by_name(GST_BIN(pipeline), "slow");
  GstPad *pad = gst_element_get_static_pad(slow, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, slow_probe, &data, nullptr);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipeline);
  GstMessage *msg = gst_bus_timed_pop_filtered(bus, 300 * GST_SECOND,
                                               GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  if (!msg || GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
    fprintf(stderr, "pipeline failed\n");
    exit(1);
  }
  gst_message_unref(msg);
  gst_object_unref(bus);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstStructure *stats = nullptr;
  g_object_get(src, "stats", &stats, nullptr);
  guint64 mean_ns = 0;
  gst_structure_get_uint64(stats, DW_STATS_COMFYKEYFRAMESRC_MEAN_GENERATION_TIME, &mean_ns);
  *generation_ms = mean_ns / 1e6;
  gst_structure_free(stats);
  gst_object_unref(src);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pad);
  gst_object_unref(slow);
  gst_object_unref(pipeline);
  return mean_period_ms(data.pushed);
}

// The same work done one step after the other with the same client and workflow.
double run_sequential(dw::sim::Simulator &sim, guint cost_ms, int keyframes) {
  std::vector<gint64> pushed;
  dw_bench::SequentialLoop loop(sim.url(), workflow_path(), kSize, "bench_seq.png");
  for (int i = 0; i < keyframes; ++i) {
    loop.next(i);
    pushed.push_back(g_get_monotonic_time());
    g_usleep(cost_ms * 1000);  // downstream work, not overlapped
  }
  return mean_period_ms(pushed);
}

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (*DW_PLUGIN_BUILD_DIR) gst_registry_scan_path(gst_registry_get(), DW_PLUGIN_BUILD_DIR);
  GstElementFactory *factory = gst_element_factory_find("comfykeyframesrc");
  if (factory) gst_object_unref(factory);
  if (!factory) {
    fprintf(stderr, "comfykeyframesrc not found (set GST_PLUGIN_PATH to <builddir>/gst)\n");
    return 1;
  }
  int keyframes = argc > 1 ? atoi(argv[1]) : 12;
  if (keyframes < kWarmup + 3) keyframes = kWarmup + 3;

  struct Case { guint g_ms, d_ms; };
  const Case cases[] = {{200, 100}, {200, 200}, {100, 200}, {300, 50}};
  printf("keyframe_overlap: %dx%d, %d keyframes per case (%d warm-up), simulator on loopback\n", kSize, kSize,
         keyframes, kWarmup);
  printf("G = simulator latency, G' = generation time the element measured (submit -> image received,\n"
         "HTTP and PNG included), D = downstream cost, P = mean keyframe period\n");
  printf("%6s %6s %6s | %12s %8s %8s | %12s %8s\n", "G ms", "G' ms", "D ms", "element P ms", "P/max", "P/max'",
         "sequential P", "P/max");
  for (const Case &c : cases) {
    dw::sim::Config config;
    config.latency_ms = c.g_ms;
    dw::sim::Simulator sim(config);
    std::string error;
    if (!sim.start(&error)) {
      fprintf(stderr, "simulator: %s\n", error.c_str());
      return 1;
    }
    double g_measured = 0;
    double p_elem = run_element(sim, c.d_ms, keyframes, &g_measured);
    double p_seq = run_sequential(sim, c.d_ms, keyframes);
    double ideal = std::max(c.g_ms, c.d_ms);
    double ideal_measured = std::max<double>(g_measured, c.d_ms);
    printf("%6u %6.1f %6u | %12.1f %8.3f %8.3f | %12.1f %8.3f\n", c.g_ms, g_measured, c.d_ms, p_elem, p_elem / ideal,
           p_elem / ideal_measured, p_seq, p_seq / ideal);
    fflush(stdout);
  }
  return 0;
}

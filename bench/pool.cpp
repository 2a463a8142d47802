// bench/pool: keyframe rate of comfykeyframesrc against a pool of 1, 2, 3 ComfyUI simulators at a
// fixed generation latency, with max-in-flight = number of backends. Prints per case the rate, the
// ratio to k x the single-backend rate (target >= 0.9), how the jobs spread over the backends, and
// what it does to the feedback chain: the mean lag index - parent-index (1 = a strict chain, each
// keyframe made from the previous one; with k jobs in flight each starts from the newest keyframe
// available when it was queued, about k behind).
//
// Usage: pool [keyframes-per-case (default 24)] [latency-ms (default 300)]
#include <gst/gst.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "dwstats.h"
#include "sim/simulator.h"

#ifndef DW_PLUGIN_BUILD_DIR
#define DW_PLUGIN_BUILD_DIR ""
#endif
#ifndef DW_SOURCE_DIR
#define DW_SOURCE_DIR "."
#endif

namespace {

constexpr int kWarmup = 3;

struct Result {
  double seconds = 0, rate = 0, mean_lag = 0;
  std::vector<uint64_t> jobs_per_backend;
  bool ok = false;
};

Result run_case(int backends, int keyframes, uint32_t latency_ms) {
  Result r;
  std::vector<std::unique_ptr<dw::sim::Simulator>> sims;
  std::string list;
  for (int i = 0; i < backends; ++i) {
    dw::sim::Config c;
    c.latency_ms = latency_ms;
    sims.push_back(std::make_unique<dw::sim::Simulator>(c));
    std::string error;
    if (!sims.back()->start(&error)) {
      fprintf(stderr, "simulator: %s\n", error.c_str());
      return r;
    }
    list += (list.empty() ? "" : ",") + sims.back()->url();
  }
  const char *dir = g_getenv("DW_SOURCE_DIR");
  std::string workflow = std::string(dir ? dir : DW_SOURCE_DIR) + "/tests/data/tiny_img2img.json";
  std::string desc = "comfykeyframesrc server=\"" + list + "\" workflow=" + workflow +
                     " width=64 height=64 max-in-flight=" + std::to_string(backends) +
                     " num-keyframes=" + std::to_string(kWarmup + keyframes) + " ! fakesink sync=false";
  GError *err = nullptr;
  GstElement *pipeline = gst_parse_launch(desc.c_str(), &err);
  if (!pipeline || err) {
    fprintf(stderr, "pipeline: %s\n", err ? err->message : "?");
    g_clear_error(&err);
    if (pipeline) gst_object_unref(pipeline);
    return r;
  }
  GstBus *bus = gst_element_get_bus(pipeline);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  int seen = 0;
  gint64 t0 = 0, t1 = 0;
  double lag_sum = 0;
  int lag_n = 0;
  while (GstMessage *msg = gst_bus_timed_pop(bus, 60 * GST_SECOND)) {
    GstMessageType type = GST_MESSAGE_TYPE(msg);
    if (type == GST_MESSAGE_ELEMENT && gst_structure_has_name(gst_message_get_structure(msg), DW_MSG_KEYFRAME_NAME)) {
      const GstStructure *s = gst_message_get_structure(msg);
      guint64 index = 0;
      gint64 parent = -1;
      gst_structure_get_uint64(s, DW_MSG_KEYFRAME_INDEX, &index);
      gst_structure_get_int64(s, DW_MSG_KEYFRAME_PARENT, &parent);
      seen++;
      if (seen == kWarmup) t0 = g_get_monotonic_time();
      if (seen > kWarmup) {
        t1 = g_get_monotonic_time();
        if (parent >= 0) lag_sum += static_cast<double>(index) - static_cast<double>(parent), lag_n++;
      }
    }
    bool stop = type == GST_MESSAGE_EOS || type == GST_MESSAGE_ERROR;
    if (type == GST_MESSAGE_ERROR) {
      GError *e = nullptr;
      gst_message_parse_error(msg, &e, nullptr);
      fprintf(stderr, "error: %s\n", e ? e->message : "?");
      g_clear_error(&e);
    }
    gst_message_unref(msg);
    if (stop) break;
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(pipeline);
  for (const auto &s : sims) r.jobs_per_backend.push_back(s->jobs_succeeded());
  if (seen < kWarmup + keyframes || t1 <= t0) return r;
  r.seconds = (t1 - t0) / 1e6;
  r.rate = keyframes / r.seconds;
  r.mean_lag = lag_n ? lag_sum / lag_n : 0;
  r.ok = true;
  return r;
}

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (*DW_PLUGIN_BUILD_DIR) gst_registry_scan_path(gst_registry_get(), DW_PLUGIN_BUILD_DIR);
  GstElementFactory *f = gst_element_factory_find("comfykeyframesrc");
  if (!f) {
    fprintf(stderr, "comfykeyframesrc not found (set GST_PLUGIN_PATH to <builddir>/gst)\n");
    return 1;
  }
  gst_object_unref(f);
  int keyframes = argc > 1 ? std::atoi(argv[1]) : 24;
  uint32_t latency = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 300;
  if (keyframes < 2) keyframes = 2;

  printf("comfykeyframesrc backend pool: %d keyframes per case after %d warm-up, simulator latency %u ms, "
         "max-in-flight = backends, 64x64\n\n",
         keyframes, kWarmup, latency);
  printf("| backends | seconds | keyframes/s | k x single | ratio | jobs per backend | mean index - parent |\n");
  printf("|---|---|---|---|---|---|---|\n");
  double single = 0;
  int failures = 0;
  for (int k = 1; k <= 3; ++k) {
    Result r = run_case(k, keyframes, latency);
    if (!r.ok) {
      printf("| %d | failed | | | | | |\n", k);
      failures++;
      continue;
    }
    if (k == 1) single = r.rate;
    std::string spread;
    for (uint64_t n : r.jobs_per_backend) spread += (spread.empty() ? "" : " / ") + std::to_string(n);
    double target = single * k;
    printf("| %d | %.2f | %.2f | %.2f | %.2f | %s | %.2f |\n", k, r.seconds, r.rate, target,
           target > 0 ? r.rate / target : 0.0, spread.c_str(), r.mean_lag);
    fflush(stdout);
  }
  printf("\nratio target >= 0.9; index - parent = 1 is a strict feedback chain, ~k means k interleaved chains\n");
  return failures ? 1 : 0;
}

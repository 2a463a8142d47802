// bench/flightbuffer: pacing quality on a real clock.
//
// appsrc (live) pushes bursts: one keyframe interval's worth of frames (11 frames of 1/11 s content
// at once, alternately slightly early and late around every 1 s) into
//   flightbuffer output-fps=30/1 ! fakesink sync=false
// A probe on flightbuffer's src pad records when each buffer is pushed (pipeline clock, running
// time) and its PTS. Jitter = push time - (grid time of that buffer + latency); the figures are
// p50/p99/max of |jitter| and of the push-interval error against 1/fps, plus the CPU time (getrusage,
// whole process) per output frame.
//
// Usage: flightbuffer [seconds (default 60)]
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#ifndef DW_PLUGIN_BUILD_DIR
#define DW_PLUGIN_BUILD_DIR ""
#endif

namespace {

struct Probe {
  std::mutex mutex;
  std::vector<gint64> push_rt;  // running time at push
  std::vector<gint64> pts;
  GstElement *element = nullptr;
};

GstPadProbeReturn on_buffer(GstPad *, GstPadProbeInfo *info, gpointer data) {
  auto *p = static_cast<Probe *>(data);
  GstClock *clock = gst_element_get_clock(p->element);
  if (!clock) return GST_PAD_PROBE_OK;
  gint64 rt = static_cast<gint64>(gst_clock_get_time(clock) - gst_element_get_base_time(p->element));
  gst_object_unref(clock);
  std::lock_guard<std::mutex> lock(p->mutex);
  p->push_rt.push_back(rt);
  p->pts.push_back(static_cast<gint64>(GST_BUFFER_PTS(GST_PAD_PROBE_INFO_BUFFER(info))));
  return GST_PAD_PROBE_OK;
}

double cpu_seconds() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::min<double>(v.size() - 1, std::floor(p * (v.size() - 1) + 0.5)));
  return v[i];
}

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (*DW_PLUGIN_BUILD_DIR) gst_registry_scan_path(gst_registry_get(), DW_PLUGIN_BUILD_DIR);
  int seconds = argc > 1 ? atoi(argv[1]) : 60;
  if (seconds < 3) seconds = 3;

  GError *err = nullptr;
  GstElement *pipeline = gst_parse_launch(
      "appsrc name=src is-live=true format=time do-timestamp=true "
      "caps=video/x-raw,format=RGBA,width=64,height=64,framerate=0/1 ! "
      "flightbuffer name=fb output-fps=30/1 prebuffer-time=1000000000 target-fill=1500000000 stats-interval=0 ! "
      "fakesink sync=false",
      &err);
  if (!pipeline) {
    fprintf(stderr, "pipeline: %s (set GST_PLUGIN_PATH to <builddir>/gst)\n", err ? err->message : "?");
    return 1;
  }
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstElement *fb = gst_bin_get_by_name(GST_BIN(pipeline), "fb");
  Probe probe;
  probe.element = fb;
  GstPad *srcpad = gst_element_get_static_pad(fb, "src");
  gst_pad_add_probe(srcpad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &probe, nullptr);
  gst_object_unref(srcpad);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  gst_element_get_state(pipeline, nullptr, nullptr, 5 * GST_SECOND);

  const double cpu0 = cpu_seconds();
  const gint64 t0 = g_get_monotonic_time();
  const gint64 end = t0 + static_cast<gint64>(seconds) * G_USEC_PER_SEC;
  GstClockTime content_pts = 0;
  for (int burst = 0; g_get_monotonic_time() < end; ++burst) {
    for (int i = 0; i < 11; ++i) {
      GstBuffer *b = gst_buffer_new_allocate(nullptr, 64 * 64 * 4, nullptr);
      GST_BUFFER_DURATION(b) = GST_SECOND / 11;
      content_pts += GST_SECOND / 11;
      gst_app_src_push_buffer(GST_APP_SRC(src), b);
    }
    // Next burst around 1 s later, +-150 ms (a generation time that wobbles).
    gint64 next = t0 + (burst + 1) * G_USEC_PER_SEC + ((burst % 2) ? 150000 : -150000);
    gint64 now = g_get_monotonic_time();
    if (next > now) g_usleep(static_cast<gulong>(next - now));
  }
  const double cpu = cpu_seconds() - cpu0;

  GstStructure *stats = nullptr;
  g_object_get(fb, "stats", &stats, nullptr);
  gst_element_set_state(pipeline, GST_STATE_NULL);

  std::vector<double> jitter, interval_err;
  const double period = 1e9 / 30.0;
  gint64 latency = 0;
  {
    std::lock_guard<std::mutex> lock(probe.mutex);
    // Latency the element waited with: the smallest push - pts over the run.
    latency = probe.push_rt.empty() ? 0 : probe.push_rt[0] - probe.pts[0];
    for (size_t i = 0; i < probe.push_rt.size(); ++i) latency = std::min(latency, probe.push_rt[i] - probe.pts[i]);
    for (size_t i = 0; i < probe.push_rt.size(); ++i) {
      jitter.push_back(std::fabs(static_cast<double>(probe.push_rt[i] - probe.pts[i] - latency)) / 1e3);
      if (i > 0) {
        double d = static_cast<double>(probe.push_rt[i] - probe.push_rt[i - 1]);
        interval_err.push_back(std::fabs(d - period) / 1e3);
      }
    }
  }
  const size_t frames = jitter.size();
  guint64 underruns = 0, repeated = 0;
  double rate = 0;
  if (stats) {
    gst_structure_get_uint64(stats, "underruns", &underruns);
    gst_structure_get_uint64(stats, "frames-repeated", &repeated);
    gst_structure_get_double(stats, "playback-rate", &rate);
    gst_structure_free(stats);
  }
  printf("flightbuffer: %d s real clock, bursts of 11 frames (1 s content) every 1 s +-150 ms, output 30 fps\n",
         seconds);
  printf("frames pushed            %zu\n", frames);
  printf("push vs grid   |jitter|  p50 %.1f us  p99 %.1f us  max %.1f us\n", percentile(jitter, 0.5),
         percentile(jitter, 0.99), percentile(jitter, 1.0));
  printf("push interval  |error|   p50 %.1f us  p99 %.1f us  max %.1f us\n", percentile(interval_err, 0.5),
         percentile(interval_err, 0.99), percentile(interval_err, 1.0));
  printf("cpu per frame            %.1f us (process total %.3f s)\n", frames ? cpu / frames * 1e6 : 0.0, cpu);
  printf("underruns %" G_GUINT64_FORMAT ", repeated %" G_GUINT64_FORMAT ", final playback-rate %.3f\n", underruns,
         repeated, rate);
  gst_object_unref(src);
  gst_object_unref(fb);
  gst_object_unref(pipeline);
  return 0;
}

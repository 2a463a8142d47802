// Soak: the viewer app's whole pipeline (comfykeyframesrc ! [cachetap] ! [vaeinterp] ! [flightbuffer] !
// videoconvert ! vp8enc ! tee ! fakesink) on the in-process simulator at ~0 latency with small frames,
// for 1000 keyframes. Prints RSS at start, after warm-up, in the middle and at the end (goal: < 5 %
// growth after warm-up), underruns and errors.
//   soak [keyframes]
#include <gst/gst.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "app.h"
#include "dwstats.h"

namespace {

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

guint64 u64(GstElement *e, const char *field) {
  if (!e) return 0;
  GstStructure *s = nullptr;
  g_object_get(e, "stats", &s, nullptr);
  guint64 v = 0;
  if (s && !gst_structure_get_uint64(s, field, &v)) {
    guint u = 0;
    if (gst_structure_get_uint(s, field, &u)) v = u;
  }
  if (s) gst_structure_free(s);
  return v;
}

// Open file descriptors of this process (a leaked socket per keyframe shows here).
long open_fds() {
  long n = 0;
  if (GDir *d = g_dir_open("/proc/self/fd", 0, nullptr)) {
    while (g_dir_read_name(d)) n++;
    g_dir_close(d);
  }
  return n;
}

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
#ifdef DW_PLUGIN_BUILD_DIR
  if (!g_getenv("GST_PLUGIN_PATH") && !g_getenv("GST_PLUGIN_PATH_1_0"))
    gst_registry_scan_path(gst_registry_get(), DW_PLUGIN_BUILD_DIR);
#endif
  const guint64 total = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1000;
  dw::app::Options o;
  o.port = 0;
  o.sink = "fake";
  o.sim_latency_ms = 0;
  o.width = o.height = 64;
  o.num_keyframes = static_cast<int>(total);
  o.quiet = true;
  const long rss_start = rss_kib(), fds_start = open_fds();
  dw::app::App app(o);
  int rc = -1;
  auto t0 = std::chrono::steady_clock::now();
  std::thread runner([&] { rc = app.run(); });
  if (!app.wait_ready(20000)) {
    std::fprintf(stderr, "soak: the app did not start\n");
    runner.join();
    return 1;
  }
  GstElement *src = app.element("comfykeyframesrc");
  GstElement *interp = app.element("vaeinterp");
  GstElement *buffer = app.element("flightbuffer");
  const guint64 warm = std::max<guint64>(1, total / 10), middle = total / 2;
  long rss_warm = -1, rss_mid = -1, rss_end = -1, rss_max = 0;
  guint64 k = 0;
  while (k < total) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    k = u64(src, DW_STATS_COMFYKEYFRAMESRC_KEYFRAMES);
    long r = rss_kib();
    rss_max = std::max(rss_max, r);
    if (rss_warm < 0 && k >= warm) rss_warm = r;
    if (rss_mid < 0 && k >= middle) rss_mid = r;
    if (std::chrono::steady_clock::now() - t0 > std::chrono::minutes(9)) {
      std::fprintf(stderr, "soak: timed out at %" G_GUINT64_FORMAT " keyframes\n", k);
      break;
    }
  }
  rss_end = rss_kib();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const guint64 underruns = u64(buffer, DW_STATS_FLIGHTBUFFER_UNDERRUNS),
                failed = u64(src, DW_STATS_COMFYKEYFRAMESRC_JOBS_FAILED),
                retried = u64(src, DW_STATS_COMFYKEYFRAMESRC_JOBS_RETRIED),
                interp_errors = u64(interp, DW_STATS_VAEINTERP_ERRORS),
                frames_out = buffer ? u64(buffer, DW_STATS_FLIGHTBUFFER_FRAMES_OUT)
                                    : u64(interp, DW_STATS_VAEINTERP_FRAMES_OUT);
  const long fds_end = open_fds();
  runner.join();  // EOS after num-keyframes ends run()
  for (GstElement *e : {src, interp, buffer})
    if (e) gst_object_unref(e);
  const double growth = rss_warm > 0 ? 100.0 * (rss_end - rss_warm) / rss_warm : 0;
  std::printf("soak: %" G_GUINT64_FORMAT " keyframes in %.1f s (%.1f keyframes/s), %" G_GUINT64_FORMAT
              " frames out\n", k, secs, k / secs, frames_out);
  std::printf("soak: RSS start %ld KiB, after warm-up (%" G_GUINT64_FORMAT " kf) %ld KiB, middle %ld KiB, end %ld KiB,"
              " max %ld KiB\n", rss_start, warm, rss_warm, rss_mid, rss_end, rss_max);
  std::printf("soak: RSS growth after warm-up %.2f %% (goal < 5 %%)\n", growth);
  std::printf("soak: open file descriptors at start %ld, at the end %ld\n", fds_start, fds_end);
  std::printf("soak: underruns %" G_GUINT64_FORMAT "%s, jobs failed %" G_GUINT64_FORMAT ", retried %" G_GUINT64_FORMAT
              ", vaeinterp errors %" G_GUINT64_FORMAT ", app exit code %d\n",
              underruns, buffer ? "" : " (no flightbuffer)", failed, retried, interp_errors, rc);
  const bool ok = k >= total && growth < 5.0 && failed == 0 && interp_errors == 0 && rc == 0;
  std::printf("soak: %s\n", ok ? "goal met" : "GOAL NOT MET");
  return ok ? 0 : 1;
}

// bench/pipeline: does generation overlap with real latent interpolation?
//
// For a simulator generation latency G and real TAEF2 interpolation at 256x256 (F in-betweens per
// keyframe pair, batch-size 4, CPU), it measures the keyframe period P of
//   - comfykeyframesrc ! vaeinterp ! fakesink sync=false   (the elements: generation of keyframe N+1,
//     interpolation of pair (N-1, N) and everything else run on their own threads)
//   - a sequential loop in one thread with the same client and the same shared codec:
//     job, wait, decode PNG, encode, interpolate + decode F frames, next job   (what the prototype did)
// and prints P / max(G', I) for both, with G' the measured generation time (simulator latency plus
// HTTP, PNG and scheduling: comfykeyframesrc's mean-generation-time for the element, submit -> image
// for the loop) and I the measured interpolation time per pair (encode of B + decode of the F
// in-betweens: from the dreamwindow-interp messages for the element, timed directly for the loop).
// Goal for the element: ~1 (<= 1.05); the sequential loop is ~ (G'+I)/max(G',I), i.e. ~2 when I ~ G.
// "out fps" is frames leaving per second in steady state: (F+1) frames per keyframe period.
//
// F is chosen per case so that I ~ G on this machine (from a short calibration run of the same
// pipeline with a 50 ms simulator and 4 in-betweens per pair), unless
// given on the command line.
//
// Usage: pipeline [keyframes-per-case (default 10)] [frames F (default: auto, I ~ G)]
// DW_BENCH_VERBOSE=1 prints encode/decode times per pair on stderr.
// Models: $DW_SHARED_DIR/models/taef2_{encoder,decoder}.safetensors (default <source root>/../shared).
#include <gst/gst.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "feedback_loop.h"
#include "comfy/client.h"
#include "comfy/workflow.h"
#include "image/image.h"
#include "latent/codec.h"
#include "sim/simulator.h"
#include "dwmeta.h"

#ifndef DW_PLUGIN_BUILD_DIR
#define DW_PLUGIN_BUILD_DIR ""
#endif
#ifndef DW_SOURCE_DIR
#define DW_SOURCE_DIR "."
#endif
#ifndef DW_SHARED_DIR
#define DW_SHARED_DIR "../shared"
#endif

namespace {

constexpr int kSize = 256;
constexpr int kWarmup = 2;     // keyframes (and pairs) ignored at the start
constexpr int kBatch = 4;

std::string workflow_path() {
  const char *dir = g_getenv("DW_SOURCE_DIR");
  return std::string(dir ? dir : DW_SOURCE_DIR) + "/examples/workflows/sdturbo_img2img.json";
}

std::string shared_dir() {
  const char *dir = g_getenv("DW_SHARED_DIR");
  return dir ? dir : DW_SHARED_DIR;
}
std::string encoder_path() { return shared_dir() + "/models/taef2_encoder.safetensors"; }
std::string decoder_path() { return shared_dir() + "/models/taef2_decoder.safetensors"; }

// The config vaeinterp builds from encoder=/decoder=/backend=taesd (same ModelRegistry key, so the
// element and the sequential loop share one loaded model).
dw::latent::CodecConfig codec_config() {
  dw::latent::CodecConfig config;
  config.backend = dw::latent::Backend::Taesd;
  config.encoder_path = encoder_path();
  config.decoder_path = decoder_path();
  return config;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<double> inbetween_ts(int frames) {
  std::vector<double> ts;
  for (int i = 1; i <= frames; ++i) ts.push_back(static_cast<double>(i) / (frames + 1));
  return ts;
}

double mean_of(const std::vector<double> &v, size_t skip) {
  if (v.size() <= skip) return v.empty() ? -1 : v.back();
  double sum = 0;
  for (size_t i = skip; i < v.size(); ++i) sum += v[i];
  return sum / static_cast<double>(v.size() - skip);
}

struct Result {
  double period_ms = -1;   // mean keyframe period after warm-up
  double fps = -1;         // frames out per second, same window
  double generation_ms = -1;  // G'
  double interp_ms = -1;      // I = encode + decode per pair, after warm-up
  double encode_ms = -1, decode_ms = -1;  // its two parts
};

// Keyframe output times k (all frames' times in `frames`): the window runs from keyframe kWarmup to
// the last keyframe but one (the last is pushed alone at EOS, right after the last pair).
void steady_state(const std::vector<double> &keyframes, const std::vector<double> &frames, Result *r) {
  if (keyframes.size() < static_cast<size_t>(kWarmup) + 3) return;
  const double t0 = keyframes[kWarmup];
  const double t1 = keyframes[keyframes.size() - 2];
  const size_t periods = keyframes.size() - 2 - kWarmup;
  r->period_ms = (t1 - t0) / static_cast<double>(periods);
  size_t n = 0;
  for (double t : frames)
    if (t >= t0 && t < t1) ++n;
  r->fps = n / ((t1 - t0) / 1000.0);
}

struct ProbeData {
  std::mutex mutex;
  std::vector<double> keyframes;  // fakesink arrival of each keyframe (ms)
  std::vector<double> frames;     // every frame
};

GstPadProbeReturn sink_probe(GstPad *, GstPadProbeInfo *info, gpointer user_data) {
  auto *data = static_cast<ProbeData *>(user_data);
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER(info);
  DwFrameMeta *meta = dw_buffer_get_frame_meta(buffer);
  const double t = now_ms();
  std::lock_guard<std::mutex> lock(data->mutex);
  data->frames.push_back(t);
  if (meta && meta->kind != DW_FRAME_KIND_INBETWEEN) data->keyframes.push_back(t);
  return GST_PAD_PROBE_OK;
}

Result run_element(dw::sim::Simulator &sim, int frames, int keyframes) {
  ProbeData data;
  std::string desc = "comfykeyframesrc name=src server=" + sim.url() + " workflow=\"" + workflow_path() +
                     "\" width=" + std::to_string(kSize) + " height=" + std::to_string(kSize) +
                     " num-keyframes=" + std::to_string(keyframes) +
                     " post-messages=false ! vaeinterp name=interp backend=taesd encoder=\"" + encoder_path() +
                     "\" decoder=\"" + decoder_path() + "\" frames=" + std::to_string(frames) +
                     " batch-size=" + std::to_string(kBatch) + " ! fakesink name=sink sync=false";
  GError *err = nullptr;
  GstElement *pipeline = gst_parse_launch(desc.c_str(), &err);
  if (!pipeline || err) {
    fprintf(stderr, "cannot build pipeline: %s\n", err ? err->message : "?");
    exit(1);
  }
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  GstPad *pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, sink_probe, &data, nullptr);
  if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    fprintf(stderr, "pipeline does not start\n");
    exit(1);
  }
  GstBus *bus = gst_element_get_bus(pipeline);
  std::vector<double> pair_ms, encode_ms, decode_ms;  // per pair, from dreamwindow-interp
  for (;;) {
    GstMessage *msg = gst_bus_timed_pop_filtered(
        bus, 300 * GST_SECOND, GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT));
    if (!msg) {
      fprintf(stderr, "pipeline timed out\n");
      exit(1);
    }
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      GError *e = nullptr;
      gst_message_parse_error(msg, &e, nullptr);
      fprintf(stderr, "pipeline failed: %s\n", e ? e->message : "?");
      exit(1);
    }
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) {
      gst_message_unref(msg);
      break;
    }
    const GstStructure *s = gst_message_get_structure(msg);
    if (s && gst_structure_has_name(s, "dreamwindow-interp")) {
      double enc = 0, dec = 0;
      gst_structure_get_double(s, "encode-ms", &enc);
      gst_structure_get_double(s, "decode-ms", &dec);
      pair_ms.push_back(enc + dec);
      encode_ms.push_back(enc);
      decode_ms.push_back(dec);
      if (g_getenv("DW_BENCH_VERBOSE")) fprintf(stderr, "element pair: encode %.1f decode %.1f ms\n", enc, dec);
    }
    gst_message_unref(msg);
  }
  gst_object_unref(bus);

  Result r;
  {
    std::lock_guard<std::mutex> lock(data.mutex);
    steady_state(data.keyframes, data.frames, &r);
  }
  r.interp_ms = mean_of(pair_ms, kWarmup);
  r.encode_ms = mean_of(encode_ms, kWarmup);
  r.decode_ms = mean_of(decode_ms, kWarmup);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstStructure *stats = nullptr;
  g_object_get(src, "stats", &stats, nullptr);
  guint64 mean_ns = 0;
  if (stats) {
    gst_structure_get_uint64(stats, "mean-generation-time", &mean_ns);
    gst_structure_free(stats);
  }
  r.generation_ms = mean_ns / 1e6;
  gst_object_unref(src);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pad);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
  return r;
}

// The same work done one step after the other in one thread, with the same client, workflow and
// (shared) codec: job -> decode PNG -> encode -> interpolate+decode F frames -> "push" -> next job.
Result run_sequential(dw::sim::Simulator &sim, dw::latent::SharedCodec &codec, int frames, int keyframes) {
  const std::vector<double> ts = inbetween_ts(frames);
  std::vector<double> keyframe_times, frame_times, generation, pair_ms;
  {
    dw_bench::SequentialLoop loop(sim.url(), workflow_path(), kSize, "bench_pipeline_seq.png");
    std::shared_ptr<const dw::latent::Latent> previous;
    for (int i = 0; i < keyframes; ++i) {
      const double submitted = now_ms();
      dw::Image image = loop.next(i);
      // As comfykeyframesrc does: the simulator answers at the workflow's size, scaled to width x height.
      if (image.width != kSize || image.height != kSize) image = dw::resize_bilinear(image, kSize, kSize);
      generation.push_back(now_ms() - submitted);
      // Interpolation, not overlapped: encode B once, then the in-betweens of (A, B).
      const double t0 = now_ms();
      std::shared_ptr<const dw::latent::Latent> latent;
      std::vector<dw::Image> inbetweens;
      codec.with([&](dw::latent::Codec &c) {
        latent = c.encode(image);
        if (g_getenv("DW_BENCH_VERBOSE"))
          fprintf(stderr, "sequential: %dx%dx%d encode %.1f ms\n", image.width, image.height, image.channels, now_ms() - t0);
        if (previous && frames > 0) inbetweens = c.interpolate(*previous, *latent, ts, kBatch);
        return 0;
      });
      const double t1 = now_ms();
      if (previous) {
        pair_ms.push_back(t1 - t0);
        // A and its in-betweens leave now (as vaeinterp pushes A once B is encoded).
        keyframe_times.push_back(t1);
        for (size_t k = 0; k <= inbetweens.size(); ++k) frame_times.push_back(t1);
      }
      previous = latent;
    }
    // The last keyframe, pushed alone.
    keyframe_times.push_back(now_ms());
    frame_times.push_back(keyframe_times.back());
  }
  Result r;
  steady_state(keyframe_times, frame_times, &r);
  r.generation_ms = mean_of(generation, 0);
  r.interp_ms = mean_of(pair_ms, kWarmup);
  return r;
}

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (*DW_PLUGIN_BUILD_DIR) gst_registry_scan_path(gst_registry_get(), DW_PLUGIN_BUILD_DIR);
  for (const char *name : {"comfykeyframesrc", "vaeinterp"}) {
    GstElementFactory *factory = gst_element_factory_find(name);
    if (!factory) {
      fprintf(stderr, "%s not found (set GST_PLUGIN_PATH to <builddir>/gst)\n", name);
      return 1;
    }
    gst_object_unref(factory);
  }
  int keyframes = argc > 1 ? atoi(argv[1]) : 10;
  if (keyframes < kWarmup + 4) keyframes = kWarmup + 4;
  const int fixed_frames = argc > 2 ? atoi(argv[2]) : -1;

  // Held for the whole run: vaeinterp gets the same loaded model from the registry.
  std::shared_ptr<dw::latent::SharedCodec> codec;
  try {
    codec = dw::latent::ModelRegistry::acquire(codec_config());
  } catch (const std::exception &e) {
    fprintf(stderr, "codec: %s (set DW_SHARED_DIR to the directory holding models/)\n", e.what());
    return 1;
  }
  // Calibration: the elements with a fast simulator (50 ms) and kBatch in-betweens per pair give the
  // encode time per keyframe and the decode time per in-between on this machine, as the cases see them.
  double encode_ms = 0, decode_frame_ms = 0;
  {
    dw::sim::Config config;
    config.latency_ms = 50;
    dw::sim::Simulator sim(config);
    std::string error;
    if (!sim.start(&error)) {
      fprintf(stderr, "simulator: %s\n", error.c_str());
      return 1;
    }
    Result r = run_element(sim, kBatch, kWarmup + 5);
    encode_ms = r.encode_ms;
    decode_frame_ms = r.decode_ms / kBatch;
  }

  printf("pipeline: %dx%d, %s, batch-size %d, %d keyframes per case (%d warm-up), simulator on loopback\n",
         kSize, kSize, codec->codec().describe().c_str(), kBatch, keyframes, kWarmup);
  printf("calibration (vaeinterp frames=%d, simulator 50 ms): encode %.1f ms/keyframe, decode %.1f ms/in-between\n", kBatch, encode_ms, decode_frame_ms);
  printf("G = simulator latency, F = in-betweens per pair (chosen so that I ~ G unless given),\n"
         "G' = measured generation time (submit -> image, HTTP and PNG included),\n"
         "I = measured interpolation time per pair (encode B + decode F in-betweens),\n"
         "P = mean keyframe period at the output, fps = output frames/s, P/max = P / max(G', I)\n");
  printf("%6s %3s | %7s %7s %8s %6s %6s | %7s %7s %8s %6s %6s\n", "", "", "element", "", "", "", "", "sequent",
         "", "", "", "");
  printf("%6s %3s | %7s %7s %8s %6s %6s | %7s %7s %8s %6s %6s\n", "G ms", "F", "G' ms", "I ms", "P ms", "P/max",
         "fps", "G' ms", "I ms", "P ms", "P/max", "fps");
  const guint cases[] = {300, 1000};
  for (guint g_ms : cases) {
    int frames = fixed_frames;
    if (frames < 0)
      frames = std::clamp(static_cast<int>(std::lround((g_ms - encode_ms) / decode_frame_ms)), 1, 64);
    dw::sim::Config config;
    config.latency_ms = g_ms;
    dw::sim::Simulator sim(config);
    std::string error;
    if (!sim.start(&error)) {
      fprintf(stderr, "simulator: %s\n", error.c_str());
      return 1;
    }
    Result e = run_element(sim, frames, keyframes);
    Result s = run_sequential(sim, *codec, frames, keyframes);
    printf("%6u %3d | %7.1f %7.1f %8.1f %6.3f %6.2f | %7.1f %7.1f %8.1f %6.3f %6.2f\n", g_ms, frames,
           e.generation_ms, e.interp_ms, e.period_ms, e.period_ms / std::max(e.generation_ms, e.interp_ms), e.fps,
           s.generation_ms, s.interp_ms, s.period_ms, s.period_ms / std::max(s.generation_ms, s.interp_ms), s.fps);
    fflush(stdout);
  }
  return 0;
}

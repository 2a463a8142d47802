/* vaeinterp
 *
 * Turns a stream of keyframes (variable framerate, e.g. from comfykeyframesrc) into a smooth stream:
 * for each new keyframe B, with the previous keyframe A, it pushes A and then the frames in between
 * A and B, decoded from slerp(latent(A), latent(B), t) by a dw::latent::Codec (TAESD, a TorchScript
 * VAE, or a plain pixel crossfade with backend=blend). B then opens the next pair (or is pushed at
 * EOS).
 *
 * Threads and locks (see docs/architecture.md and docs/elements/vaeinterp.md):
 *  - chain() only enqueues the keyframe into a bounded queue (max-pending keyframes) and returns; it
 *    blocks while the queue is full (backpressure) and a flush or state change unblocks it at once.
 *  - the src pad task (the worker, started in READY->PAUSED like gstqueue) takes the items in order,
 *    encodes each keyframe once (the previous latent is kept), decodes the in-betweens in batches of
 *    batch-size and pushes them. It is the only thread that touches the codec, so the source's
 *    thread is free while pair (A, B) is interpolated.
 *  - priv->lock guards the queue, the flushing/EOS/flow state and the stats; it is never held while
 *    encoding, decoding, pushing or posting. The codec has its own lock (dw::latent::SharedCodec),
 *    shared with other elements using the same model; its wait time is in the stats.
 *  - settings are guarded by the object lock; the worker takes a snapshot per keyframe.
 *
 * Example:
 *   gst-launch-1.0 comfykeyframesrc ! vaeinterp model-dir=models frames=-1 target-fps=24 ! \
 *       videoconvert ! autovideosink
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstvaeinterp.h"

#include <gst/video/video.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dwmeta.h"
#include "gstdreamwindowelements.h"
#include "image/image.h"
#include "latent/codec.h"

GST_DEBUG_CATEGORY_STATIC(vaeinterp_debug);
GST_DEBUG_CATEGORY_STATIC(vaeinterp_dataflow_debug);
#define GST_CAT_DEFAULT vaeinterp_debug

#define DEFAULT_ENCODER nullptr
#define DEFAULT_DECODER nullptr
#define DEFAULT_MODEL_DIR nullptr
#define DEFAULT_BACKEND GST_VAE_INTERP_BACKEND_AUTO
#define DEFAULT_DEVICE "cpu"
#define DEFAULT_PRECISION GST_VAE_INTERP_PRECISION_AUTO
#define DEFAULT_FRAMES 7
#define FRAMES_AUTO (-1)
#define MAX_FRAMES 240
#define DEFAULT_TARGET_FPS_N 0
#define DEFAULT_TARGET_FPS_D 1
#define DEFAULT_BATCH_SIZE 4
#define DEFAULT_THREADS 0
#define DEFAULT_MAX_PENDING 2
#define DEFAULT_MAX_ERRORS 0
#define DEFAULT_POST_MESSAGES TRUE
/* The measured keyframe period is an exponential moving average with this weight per new period. */
#define PERIOD_EMA_WEIGHT 0.3
/* A latency message is posted when the measured period moves this much from the reported one. */
#define LATENCY_CHANGE_RATIO 0.2

enum {
  PROP_0,
  PROP_ENCODER,
  PROP_DECODER,
  PROP_MODEL_DIR,
  PROP_BACKEND,
  PROP_DEVICE,
  PROP_PRECISION,
  PROP_FRAMES,
  PROP_TARGET_FPS,
  PROP_BATCH_SIZE,
  PROP_THREADS,
  PROP_MAX_PENDING,
  PROP_MAX_ERRORS,
  PROP_POST_MESSAGES,
  PROP_STATS,
};

GType gst_vae_interp_backend_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_VAE_INTERP_BACKEND_AUTO, "taesd for .safetensors, torchscript for .pt, blend without model files",
       "auto"},
      {GST_VAE_INTERP_BACKEND_TAESD, "Native TAESD family (.safetensors)", "taesd"},
      {GST_VAE_INTERP_BACKEND_TORCHSCRIPT, "TorchScript encoder/decoder module pair (.pt)", "torchscript"},
      {GST_VAE_INTERP_BACKEND_BLEND, "Pixel crossfade, no model", "blend"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstVaeInterpBackend", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

GType gst_vae_interp_precision_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_VAE_INTERP_PRECISION_AUTO, "bf16 on CPUs with native bf16, fp16 on CUDA, else fp32", "auto"},
      {GST_VAE_INTERP_PRECISION_FP32, "32-bit float", "fp32"},
      {GST_VAE_INTERP_PRECISION_FP16, "16-bit float", "fp16"},
      {GST_VAE_INTERP_PRECISION_BF16, "bfloat16", "bf16"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstVaeInterpPrecision", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

namespace {

struct Settings {
  std::string encoder;
  std::string decoder;
  std::string model_dir;
  GstVaeInterpBackend backend = DEFAULT_BACKEND;
  std::string device = DEFAULT_DEVICE;
  GstVaeInterpPrecision precision = DEFAULT_PRECISION;
  gint frames = DEFAULT_FRAMES;
  gint target_fps_n = DEFAULT_TARGET_FPS_N;
  gint target_fps_d = DEFAULT_TARGET_FPS_D;
  guint batch_size = DEFAULT_BATCH_SIZE;
  guint threads = DEFAULT_THREADS;
  guint max_pending = DEFAULT_MAX_PENDING;
  gint max_errors = DEFAULT_MAX_ERRORS;
  gboolean post_messages = DEFAULT_POST_MESSAGES;

  double target_fps() const { return target_fps_n > 0 && target_fps_d > 0 ? double(target_fps_n) / target_fps_d : 0.0; }
};

struct Stats {
  guint64 keyframes_in = 0;       // accepted by chain()
  guint64 keyframes_encoded = 0;  // encoded by the worker
  guint64 keyframes_out = 0;
  guint64 inbetweens_out = 0;
  guint64 pairs = 0;             // pairs interpolated
  guint64 pairs_restarted = 0;   // pairs dropped: caps/size change, flush, invalid timestamps, errors
  guint64 errors = 0;            // codec failures
  double encode_ms_last = 0, encode_ms_total = 0;
  double decode_ms_last = 0, decode_ms_total = 0;  // per pair (all batches)
  guint64 decode_pairs = 0;
  double interp_fps_last = 0;
  guint frames_last = 0;                 // in-betweens of the last pair
  GstClockTime period = GST_CLOCK_TIME_NONE;  // measured keyframe period (EMA)
  gint64 backpressure_us = 0;            // time chain() waited for room
};

/* A keyframe held by the worker until the next one arrives. */
struct Held {
  GstBuffer *buffer = nullptr;  // owned; pushed when its pair is complete
  std::shared_ptr<const dw::latent::Latent> latent;  // null: encoding failed, the next pair starts afresh
  std::vector<uint8_t> alpha;   // RGBA input only
  int width = 0, height = 0;
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  DwFrameKind kind = DW_FRAME_KIND_KEYFRAME;
  guint64 index = 0;
};

}  // namespace

struct GstVaeInterpPrivate {
  /* Property values; GST_OBJECT_LOCK. */
  Settings settings;

  /* Shared by chain, events, the worker and get_property; `lock`. */
  GMutex lock;
  GCond item_add;    // worker waits for an item
  GCond item_del;    // chain waits for room
  GCond query_done;  // a serialized query waits for the worker
  std::deque<GstMiniObject *> queue;  // buffers, serialized events and queries, in order
  guint pending = 0;                  // keyframe buffers in the queue
  guint max_pending = DEFAULT_MAX_PENDING;
  bool flushing = true;
  bool eos = false;
  bool reset_pair = false;        // set by FLUSH_STOP: the worker drops its held keyframe
  bool last_query_result = false;
  GstQuery *last_query = nullptr;  // a serialized query waiting for the worker
  bool query_taken = false;        // the worker is answering it: its thread must wait, even when flushing
  GstFlowReturn srcresult = GST_FLOW_FLUSHING;
  Stats stats;
  GstClockTime reported_latency = 0;
  std::shared_ptr<dw::latent::SharedCodec> codec;  // set in READY->PAUSED, dropped in PAUSED->READY
  std::string backend_description;

  /* Worker only (the src pad task; flush-stop only sets reset_pair). */
  GstVideoInfo in_info;
  bool have_info = false;
  GstCaps *out_caps = nullptr;
  gint out_fps_n = 0, out_fps_d = 1;
  GstSegment segment;
  std::optional<Held> held;
  guint64 keyframe_counter = 0;
  GstClockTime last_spacing = GST_CLOCK_TIME_NONE;
  bool error_posted = false;
};

struct _GstVaeInterp {
  GstElement parent;
  GstPad *sinkpad;
  GstPad *srcpad;
  GstVaeInterpPrivate *priv;
};

#define gst_vae_interp_parent_class parent_class
G_DEFINE_TYPE(GstVaeInterp, gst_vae_interp, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE(vaeinterp, "vaeinterp", GST_RANK_NONE, GST_TYPE_VAE_INTERP,
                                      GST_DEBUG_CATEGORY_INIT(vaeinterp_debug, "vaeinterp", 0,
                                                              "latent keyframe interpolation");
                                      GST_DEBUG_CATEGORY_INIT(vaeinterp_dataflow_debug, "vaeinterp_dataflow", 0,
                                                              "vaeinterp per-buffer logs"));

#define VAEINTERP_CAPS                                                                   \
  "video/x-raw, format = (string) { RGB, RGBA, RGBx }, width = (int) [ 1, 16384 ], " \
  "height = (int) [ 1, 16384 ], framerate = (fraction) [ 0/1, MAX ]"

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(VAEINTERP_CAPS));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(VAEINTERP_CAPS));

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                          */

static Settings settings_snapshot(GstVaeInterp *self) {
  GST_OBJECT_LOCK(self);
  Settings s = self->priv->settings;
  GST_OBJECT_UNLOCK(self);
  return s;
}

static double ms_since(gint64 start_us) { return (g_get_monotonic_time() - start_us) / 1000.0; }

/* Queue contents are buffers, events or queries (like gstqueue). */
static void free_queue_locked(GstVaeInterpPrivate *priv) {
  for (GstMiniObject *obj : priv->queue) {
    if (GST_IS_QUERY(obj)) continue;  // owned by the thread waiting for it
    gst_mini_object_unref(obj);
  }
  priv->queue.clear();
  priv->pending = 0;
  g_cond_broadcast(&priv->item_del);
  g_cond_broadcast(&priv->query_done);
}

static void drop_held(GstVaeInterpPrivate *priv) {
  if (priv->held) {
    gst_buffer_unref(priv->held->buffer);
    priv->held.reset();
  }
}

/* Framerate transform between the pads: the sink accepts any rate; the src announces target-fps or
 * 0/1 (variable). */
static GstCaps *transform_caps(GstCaps *caps, bool to_src, gint fps_n, gint fps_d) {
  GstCaps *out = gst_caps_copy(caps);
  for (guint i = 0; i < gst_caps_get_size(out); ++i) {
    GstStructure *s = gst_caps_get_structure(out, i);
    if (to_src)
      gst_structure_set(s, "framerate", GST_TYPE_FRACTION, fps_n > 0 ? fps_n : 0, fps_n > 0 ? fps_d : 1, nullptr);
    else
      gst_structure_remove_field(s, "framerate");
  }
  return out;
}

/* RGB copy of a frame (the codec input) and its alpha plane for RGBA. */
static bool frame_to_image(const GstVideoInfo *info, GstBuffer *buffer, dw::Image *rgb, std::vector<uint8_t> *alpha) {
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, const_cast<GstVideoInfo *>(info), buffer, GST_MAP_READ)) return false;
  const int w = GST_VIDEO_FRAME_WIDTH(&frame), h = GST_VIDEO_FRAME_HEIGHT(&frame);
  const int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0);
  const auto *data = static_cast<const uint8_t *>(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0));
  const GstVideoFormat fmt = GST_VIDEO_FRAME_FORMAT(&frame);
  *rgb = dw::Image(w, h, 3);
  alpha->clear();
  if (fmt == GST_VIDEO_FORMAT_RGBA) alpha->resize(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y) {
    const uint8_t *src = data + static_cast<size_t>(stride) * y;
    uint8_t *dst = rgb->row(y);
    if (fmt == GST_VIDEO_FORMAT_RGB) {
      memcpy(dst, src, static_cast<size_t>(w) * 3);
    } else {
      for (int x = 0; x < w; ++x) {
        dst[3 * x + 0] = src[4 * x + 0];
        dst[3 * x + 1] = src[4 * x + 1];
        dst[3 * x + 2] = src[4 * x + 2];
      }
      if (fmt == GST_VIDEO_FORMAT_RGBA)
        for (int x = 0; x < w; ++x) (*alpha)[static_cast<size_t>(y) * w + x] = src[4 * x + 3];
    }
  }
  gst_video_frame_unmap(&frame);
  return true;
}

/* A new output buffer from a decoded image (RGB or RGBA, resized if the codec returned another
 * size); RGBA output gets alpha lerped between the keyframes' alpha planes. */
static GstBuffer *image_to_buffer(const GstVideoInfo *info, const dw::Image &decoded, const std::vector<uint8_t> &alpha_a,
                                  const std::vector<uint8_t> &alpha_b, double t) {
  const int w = GST_VIDEO_INFO_WIDTH(info), h = GST_VIDEO_INFO_HEIGHT(info);
  dw::Image resized;
  const dw::Image *img = &decoded;
  if (decoded.width != w || decoded.height != h) {
    resized = dw::resize_bilinear(decoded, w, h);
    img = &resized;
  }
  GstBuffer *buffer = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(info), nullptr);
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, const_cast<GstVideoInfo *>(info), buffer, GST_MAP_WRITE)) {
    gst_buffer_unref(buffer);
    return nullptr;
  }
  const int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0);
  auto *data = static_cast<uint8_t *>(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0));
  const GstVideoFormat fmt = GST_VIDEO_FRAME_FORMAT(&frame);
  const int c = img->channels;
  const size_t n = static_cast<size_t>(w) * h;
  const bool lerp_alpha = fmt == GST_VIDEO_FORMAT_RGBA && alpha_a.size() == n && alpha_b.size() == n;
  for (int y = 0; y < h; ++y) {
    const uint8_t *src = img->row(y);
    uint8_t *dst = data + static_cast<size_t>(stride) * y;
    if (fmt == GST_VIDEO_FORMAT_RGB && c == 3) {
      memcpy(dst, src, static_cast<size_t>(w) * 3);
      continue;
    }
    const int oc = fmt == GST_VIDEO_FORMAT_RGB ? 3 : 4;
    for (int x = 0; x < w; ++x) {
      dst[oc * x + 0] = src[c * x + 0];
      dst[oc * x + 1] = src[c * x + 1];
      dst[oc * x + 2] = src[c * x + 2];
      if (oc == 4) {
        uint8_t a = 255;
        if (lerp_alpha) {
          const size_t i = static_cast<size_t>(y) * w + x;
          a = static_cast<uint8_t>(std::lround(alpha_a[i] + (alpha_b[i] - alpha_a[i]) * t));
        }
        dst[4 * x + 3] = a;
      }
    }
  }
  gst_video_frame_unmap(&frame);
  return buffer;
}

/* Number of in-betweens for a keyframe interval: the frames property, or with frames=-1 (auto) so
 * that the interval plays at target-fps: round(interval * fps) - 1. */
static guint pick_frames(const Settings &s, GstClockTime interval) {
  if (s.frames >= 0) return static_cast<guint>(s.frames);
  const double fps = s.target_fps();
  if (fps <= 0 || !GST_CLOCK_TIME_IS_VALID(interval)) return DEFAULT_FRAMES;
  const double frames = std::round(static_cast<double>(interval) / GST_SECOND * fps) - 1.0;
  return static_cast<guint>(std::clamp(frames, 0.0, static_cast<double>(MAX_FRAMES)));
}

/* ------------------------------------------------------------------------------------------------ */
/* Stats and messages                                                                               */

static GstStructure *build_stats(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  const Stats st = priv->stats;
  const guint depth = priv->pending;
  const guint max_pending = priv->max_pending;
  const std::string backend = priv->backend_description;
  std::shared_ptr<dw::latent::SharedCodec> codec = priv->codec;
  g_mutex_unlock(&priv->lock);
  dw::latent::SharedCodec::LockStats ls;
  if (codec) ls = codec->lock_stats();
  const double decode_s = st.decode_ms_total / 1000.0;
  guint64 inbetweens_decoded = st.inbetweens_out;
  return gst_structure_new(
      "application/x-vaeinterp-stats",
      "keyframes", G_TYPE_UINT64, st.keyframes_in,
      "keyframes-encoded", G_TYPE_UINT64, st.keyframes_encoded,
      "keyframes-out", G_TYPE_UINT64, st.keyframes_out,
      "inbetweens-out", G_TYPE_UINT64, st.inbetweens_out,
      "frames-out", G_TYPE_UINT64, st.keyframes_out + st.inbetweens_out,
      "pairs", G_TYPE_UINT64, st.pairs,
      "pairs-restarted", G_TYPE_UINT64, st.pairs_restarted,
      "errors", G_TYPE_UINT64, st.errors,
      "encode-ms-last", G_TYPE_DOUBLE, st.encode_ms_last,
      "encode-ms-mean", G_TYPE_DOUBLE, st.keyframes_encoded ? st.encode_ms_total / st.keyframes_encoded : 0.0,
      "decode-ms-last", G_TYPE_DOUBLE, st.decode_ms_last,
      "decode-ms-mean", G_TYPE_DOUBLE, st.decode_pairs ? st.decode_ms_total / st.decode_pairs : 0.0,
      "interp-fps-last", G_TYPE_DOUBLE, st.interp_fps_last,
      "interp-fps-mean", G_TYPE_DOUBLE, decode_s > 0 ? inbetweens_decoded / decode_s : 0.0,
      "frames-last", G_TYPE_UINT, st.frames_last,
      "keyframe-period", G_TYPE_UINT64, static_cast<guint64>(st.period),
      "queue-depth", G_TYPE_UINT, depth,
      "max-pending", G_TYPE_UINT, max_pending,
      "backpressure-ms", G_TYPE_DOUBLE, st.backpressure_us / 1000.0,
      "lock-acquisitions", G_TYPE_UINT64, static_cast<guint64>(ls.acquisitions),
      "lock-wait-ms-total", G_TYPE_DOUBLE, ls.total_wait_us / 1000.0,
      "lock-wait-ms-max", G_TYPE_DOUBLE, ls.max_wait_us / 1000.0,
      "backend", G_TYPE_STRING, backend.c_str(),
      nullptr);
}

/* ------------------------------------------------------------------------------------------------ */
/* Worker (src pad task)                                                                            */

/* Raises a codec failure: a warning while errors <= max-errors, else an element error. Returns the
 * flow to continue with. Called without locks. */
static GstFlowReturn codec_failure(GstVaeInterp *self, const Settings &s, const char *what, const std::string &why) {
  GstVaeInterpPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  const guint64 errors = ++priv->stats.errors;
  priv->stats.pairs_restarted++;
  g_mutex_unlock(&priv->lock);
  if (s.max_errors >= 0 && errors > static_cast<guint64>(s.max_errors)) {
    priv->error_posted = true;
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Latent interpolation failed while %s: %s", what, why.c_str()),
                      ("error %" G_GUINT64_FORMAT " (max-errors %d)", errors, s.max_errors));
    return GST_FLOW_ERROR;
  }
  GST_ELEMENT_WARNING(self, STREAM, FAILED, ("Latent interpolation failed while %s: %s", what, why.c_str()),
                      ("error %" G_GUINT64_FORMAT " of max-errors %d; the pair is skipped", errors, s.max_errors));
  return GST_FLOW_OK;
}

/* Pushes the held keyframe A (its pair is complete or abandoned). */
static GstFlowReturn push_held(GstVaeInterp *self, GstClockTime duration) {
  GstVaeInterpPrivate *priv = self->priv;
  if (!priv->held) return GST_FLOW_OK;
  GstBuffer *buf = gst_buffer_make_writable(priv->held->buffer);
  priv->held->buffer = nullptr;
  if (GST_CLOCK_TIME_IS_VALID(duration)) GST_BUFFER_DURATION(buf) = duration;
  DwFrameMeta *meta = dw_buffer_get_frame_meta(buf);
  if (!meta) meta = dw_buffer_add_frame_meta(buf, priv->held->kind, priv->held->index, 0.0);
  meta->kind = priv->held->kind;
  meta->keyframe_index = priv->held->index;
  meta->position = 0.0;
  GST_CAT_LOG_OBJECT(vaeinterp_dataflow_debug, self, "keyframe %" G_GUINT64_FORMAT " pts %" GST_TIME_FORMAT,
                     priv->held->index, GST_TIME_ARGS(GST_BUFFER_PTS(buf)));
  GstFlowReturn ret = gst_pad_push(self->srcpad, buf);
  g_mutex_lock(&priv->lock);
  priv->stats.keyframes_out++;
  g_mutex_unlock(&priv->lock);
  return ret;
}

/* Pushes the held keyframe alone and forgets it (EOS, caps change). */
static GstFlowReturn flush_held(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  if (!priv->held) return GST_FLOW_OK;
  GstClockTime duration = GST_BUFFER_DURATION(priv->held->buffer);
  if (!GST_CLOCK_TIME_IS_VALID(duration)) duration = priv->last_spacing;
  GstFlowReturn ret = push_held(self, duration);
  priv->held.reset();
  return ret;
}

static bool worker_flushing(GstVaeInterp *self) {
  g_mutex_lock(&self->priv->lock);
  bool f = self->priv->flushing;
  g_mutex_unlock(&self->priv->lock);
  return f;
}

/* (Re)announces the src caps: input caps with framerate = target-fps or 0/1. */
static bool push_out_caps(GstVaeInterp *self, const Settings &s) {
  GstVaeInterpPrivate *priv = self->priv;
  GstCaps *in_caps = gst_video_info_to_caps(&priv->in_info);
  GstCaps *caps = transform_caps(in_caps, true, s.target_fps_n, s.target_fps_d);
  gst_caps_unref(in_caps);
  priv->out_fps_n = s.target_fps_n > 0 ? s.target_fps_n : 0;
  priv->out_fps_d = s.target_fps_n > 0 ? s.target_fps_d : 1;
  if (priv->out_caps && gst_caps_is_equal(priv->out_caps, caps)) {
    gst_caps_unref(caps);
    return true;
  }
  gst_caps_replace(&priv->out_caps, caps);
  GST_DEBUG_OBJECT(self, "src caps %" GST_PTR_FORMAT, caps);
  bool ok = gst_pad_push_event(self->srcpad, gst_event_new_caps(caps));
  gst_caps_unref(caps);
  if (!ok && !worker_flushing(self)) {
    gst_caps_replace(&priv->out_caps, nullptr);
    return false;
  }
  return true;
}

static void update_latency(GstVaeInterp *self, GstClockTime interval) {
  GstVaeInterpPrivate *priv = self->priv;
  bool post = false;
  g_mutex_lock(&priv->lock);
  Stats &st = priv->stats;
  if (!GST_CLOCK_TIME_IS_VALID(st.period))
    st.period = interval;
  else
    st.period = static_cast<GstClockTime>((1.0 - PERIOD_EMA_WEIGHT) * st.period + PERIOD_EMA_WEIGHT * interval);
  const double reported = static_cast<double>(priv->reported_latency);
  if (reported <= 0 || std::fabs(static_cast<double>(st.period) - reported) > LATENCY_CHANGE_RATIO * reported) {
    priv->reported_latency = st.period;
    post = true;
  }
  g_mutex_unlock(&priv->lock);
  if (post) gst_element_post_message(GST_ELEMENT(self), gst_message_new_latency(GST_OBJECT(self)));
}

/* One keyframe B: push A (its duration known from B's timestamp), encode B, decode and push the
 * in-betweens batch by batch; B becomes the held keyframe. */
static GstFlowReturn handle_keyframe(GstVaeInterp *self, GstBuffer *buffer) {
  GstVaeInterpPrivate *priv = self->priv;
  const Settings s = settings_snapshot(self);
  if (!priv->have_info) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Keyframe before caps"), (nullptr));
    priv->error_posted = true;
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (priv->out_fps_n != (s.target_fps_n > 0 ? s.target_fps_n : 0) ||
      (s.target_fps_n > 0 && priv->out_fps_d != s.target_fps_d)) {
    if (!push_out_caps(self, s)) return GST_FLOW_NOT_NEGOTIATED;
  }

  g_mutex_lock(&priv->lock);
  std::shared_ptr<dw::latent::SharedCodec> codec = priv->codec;
  g_mutex_unlock(&priv->lock);

  Held b;
  b.buffer = buffer;
  b.pts = GST_BUFFER_PTS(buffer);
  b.width = GST_VIDEO_INFO_WIDTH(&priv->in_info);
  b.height = GST_VIDEO_INFO_HEIGHT(&priv->in_info);
  if (DwFrameMeta *meta = dw_buffer_get_frame_meta(buffer)) {
    b.kind = meta->kind == DW_FRAME_KIND_INBETWEEN ? DW_FRAME_KIND_KEYFRAME : meta->kind;
    b.index = meta->keyframe_index;
  } else {
    b.index = priv->keyframe_counter;
  }
  priv->keyframe_counter = b.index + 1;

  /* The pair A -> B, if there is one to interpolate. */
  bool pair = priv->held && priv->held->latent && priv->held->width == b.width && priv->held->height == b.height;
  const GstClockTime a_pts = priv->held ? priv->held->pts : GST_CLOCK_TIME_NONE;
  GstClockTime interval = GST_CLOCK_TIME_NONE;
  if (GST_CLOCK_TIME_IS_VALID(a_pts) && GST_CLOCK_TIME_IS_VALID(b.pts) && b.pts > a_pts) interval = b.pts - a_pts;
  if (priv->held && !GST_CLOCK_TIME_IS_VALID(interval) && (GST_CLOCK_TIME_IS_VALID(a_pts) || GST_CLOCK_TIME_IS_VALID(b.pts))) {
    GST_WARNING_OBJECT(self, "keyframe timestamps not increasing (%" GST_TIME_FORMAT " -> %" GST_TIME_FORMAT
                       "): no in-betweens for this pair", GST_TIME_ARGS(a_pts), GST_TIME_ARGS(b.pts));
    pair = false;
  }
  if (GST_CLOCK_TIME_IS_VALID(interval)) update_latency(self, interval);
  const guint n = pair ? (GST_CLOCK_TIME_IS_VALID(interval) || s.frames >= 0 ? pick_frames(s, interval) : 0) : 0;
  const GstClockTime spacing = GST_CLOCK_TIME_IS_VALID(interval) ? interval / (n + 1) : GST_CLOCK_TIME_NONE;
  if (GST_CLOCK_TIME_IS_VALID(spacing)) priv->last_spacing = spacing;
  if (priv->held && !pair) {
    g_mutex_lock(&priv->lock);
    priv->stats.pairs_restarted++;
    g_mutex_unlock(&priv->lock);
  }

  /* A goes downstream first: nothing that follows can change it. */
  GstFlowReturn ret = GST_FLOW_OK;
  std::optional<Held> a;
  if (priv->held) {
    GstClockTime a_duration = GST_CLOCK_TIME_IS_VALID(spacing) ? spacing : GST_BUFFER_DURATION(priv->held->buffer);
    ret = push_held(self, a_duration);
    a = std::move(priv->held);
    priv->held.reset();
    if (ret != GST_FLOW_OK) {
      gst_buffer_unref(b.buffer);
      return ret;
    }
  }

  /* Encode B once; its latent is kept for the next pair. */
  dw::Image rgb;
  if (!frame_to_image(&priv->in_info, b.buffer, &rgb, &b.alpha)) {
    const gsize size = gst_buffer_get_size(b.buffer);
    gst_buffer_unref(b.buffer);
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Failed to map a keyframe (size %" G_GSIZE_FORMAT ", expected %" G_GSIZE_FORMAT ")",
                      size, GST_VIDEO_INFO_SIZE(&priv->in_info)), (nullptr));
    priv->error_posted = true;
    return GST_FLOW_ERROR;
  }
  gint64 t0 = g_get_monotonic_time();
  try {
    b.latent = codec->with([&](dw::latent::Codec &c) { return c.encode(rgb); });
  } catch (const std::exception &e) {
    b.latent.reset();
    pair = false;
    ret = codec_failure(self, s, "encoding a keyframe", e.what());
  }
  const double encode_ms = ms_since(t0);
  g_mutex_lock(&priv->lock);
  if (b.latent) {
    priv->stats.keyframes_encoded++;
    priv->stats.encode_ms_last = encode_ms;
    priv->stats.encode_ms_total += encode_ms;
  }
  g_mutex_unlock(&priv->lock);
  GST_CAT_DEBUG_OBJECT(vaeinterp_dataflow_debug, self, "encoded keyframe %" G_GUINT64_FORMAT " in %.1f ms", b.index,
                       encode_ms);
  const guint64 b_index = b.index;
  priv->held = std::move(b);
  if (ret != GST_FLOW_OK) return ret;
  if (!pair || n == 0) return GST_FLOW_OK;

  /* Decode the in-betweens batch by batch, pushing each batch as soon as it is ready. */
  std::vector<double> ts(n);
  for (guint i = 0; i < n; ++i) ts[i] = static_cast<double>(i + 1) / (n + 1);
  const guint batch = std::max(1u, s.batch_size);
  const dw::latent::SharedCodec::LockStats lock_before = codec->lock_stats();
  double decode_ms = 0;
  guint pushed = 0;
  for (guint first = 0; first < n && ret == GST_FLOW_OK; first += batch) {
    if (worker_flushing(self)) return GST_FLOW_FLUSHING;
    std::vector<double> chunk(ts.begin() + first, ts.begin() + std::min(n, first + batch));
    std::vector<dw::Image> images;
    t0 = g_get_monotonic_time();
    try {
      images = codec->with([&](dw::latent::Codec &c) {
        return c.interpolate(*a->latent, *priv->held->latent, chunk, static_cast<int>(batch));
      });
      if (images.size() != chunk.size())
        throw dw::latent::Error("codec returned " + std::to_string(images.size()) + " images for " +
                                std::to_string(chunk.size()) + " positions");
    } catch (const std::exception &e) {
      return codec_failure(self, s, "decoding in-betweens", e.what());
    }
    decode_ms += ms_since(t0);
    for (size_t k = 0; k < images.size() && ret == GST_FLOW_OK; ++k) {
      const guint i = first + static_cast<guint>(k);
      GstBuffer *out = image_to_buffer(&priv->in_info, images[k], a->alpha, priv->held->alpha, ts[i]);
      if (!out) {
        GST_ELEMENT_ERROR(self, RESOURCE, FAILED, ("Failed to map an output buffer"), (nullptr));
        priv->error_posted = true;
        return GST_FLOW_ERROR;
      }
      GST_BUFFER_PTS(out) = GST_CLOCK_TIME_IS_VALID(interval) ? a_pts + gst_util_uint64_scale(interval, i + 1, n + 1)
                                                              : GST_CLOCK_TIME_NONE;
      if (GST_CLOCK_TIME_IS_VALID(interval))
        GST_BUFFER_DURATION(out) = a_pts + gst_util_uint64_scale(interval, i + 2, n + 1) - GST_BUFFER_PTS(out);
      dw_buffer_add_frame_meta(out, DW_FRAME_KIND_INBETWEEN, a->index, ts[i]);
      GST_CAT_LOG_OBJECT(vaeinterp_dataflow_debug, self, "in-between %u/%u t=%.3f pts %" GST_TIME_FORMAT, i + 1, n,
                         ts[i], GST_TIME_ARGS(GST_BUFFER_PTS(out)));
      ret = gst_pad_push(self->srcpad, out);
      if (ret == GST_FLOW_OK) pushed++;
    }
  }

  const dw::latent::SharedCodec::LockStats lock_after = codec->lock_stats();
  const double lock_wait_ms = (lock_after.total_wait_us - lock_before.total_wait_us) / 1000.0;
  const double fps = decode_ms > 0 ? n / (decode_ms / 1000.0) : 0.0;
  g_mutex_lock(&priv->lock);
  Stats &st = priv->stats;
  st.inbetweens_out += pushed;
  st.pairs++;
  st.decode_pairs++;
  st.decode_ms_last = decode_ms;
  st.decode_ms_total += decode_ms;
  st.interp_fps_last = fps;
  st.frames_last = n;
  const guint depth = priv->pending;
  const std::string backend = priv->backend_description;
  g_mutex_unlock(&priv->lock);

  if (s.post_messages) {
    GstClockTime running_time = GST_CLOCK_TIME_NONE;
    if (priv->segment.format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID(a_pts))
      running_time = gst_segment_to_running_time(&priv->segment, GST_FORMAT_TIME, a_pts);
    GstStructure *m = gst_structure_new(
        "dreamwindow-interp", "keyframe-index", G_TYPE_UINT64, a->index, "next-keyframe-index", G_TYPE_UINT64, b_index,
        "inbetweens", G_TYPE_UINT, n, "interval", G_TYPE_UINT64, static_cast<guint64>(interval), "running-time",
        G_TYPE_UINT64, static_cast<guint64>(running_time), "encode-ms", G_TYPE_DOUBLE, encode_ms, "decode-ms",
        G_TYPE_DOUBLE, decode_ms, "interp-fps", G_TYPE_DOUBLE, fps, "lock-wait-ms", G_TYPE_DOUBLE, lock_wait_ms,
        "queue-depth", G_TYPE_UINT, depth, "backend", G_TYPE_STRING, backend.c_str(), nullptr);
    gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), m));
  }
  return ret;
}

/* A serialized event in stream order. Events that end or change the stream push the held keyframe
 * first. */
static GstFlowReturn handle_event(GstVaeInterp *self, GstEvent *event) {
  GstVaeInterpPrivate *priv = self->priv;
  GstFlowReturn ret = GST_FLOW_OK;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_CAPS: {
      GstCaps *caps = nullptr;
      gst_event_parse_caps(event, &caps);
      GstVideoInfo info;
      if (!gst_video_info_from_caps(&info, caps)) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Invalid caps %" GST_PTR_FORMAT, caps), (nullptr));
        priv->error_posted = true;
        gst_event_unref(event);
        return GST_FLOW_NOT_NEGOTIATED;
      }
      if (priv->have_info && !gst_video_info_is_equal(&info, &priv->in_info)) {
        /* Another size or format: A leaves alone under its own caps, the next keyframe starts afresh. */
        if (priv->held) {
          g_mutex_lock(&priv->lock);
          priv->stats.pairs_restarted++;
          g_mutex_unlock(&priv->lock);
        }
        ret = flush_held(self);
      }
      priv->in_info = info;
      priv->have_info = true;
      gst_event_unref(event);
      if (ret != GST_FLOW_OK) return ret;
      if (!push_out_caps(self, settings_snapshot(self))) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Downstream refused the caps"), (nullptr));
        priv->error_posted = true;
        return GST_FLOW_NOT_NEGOTIATED;
      }
      return GST_FLOW_OK;
    }
    case GST_EVENT_SEGMENT:
      ret = flush_held(self);
      gst_event_copy_segment(event, &priv->segment);
      break;
    case GST_EVENT_EOS:
    case GST_EVENT_STREAM_START:
    case GST_EVENT_SEGMENT_DONE:
    case GST_EVENT_GAP:
      ret = flush_held(self);
      break;
    default:
      break;
  }
  const bool is_eos = GST_EVENT_TYPE(event) == GST_EVENT_EOS;
  if (ret != GST_FLOW_OK) {
    gst_event_unref(event);
    return ret;
  }
  gst_pad_push_event(self->srcpad, event);
  return is_eos ? GST_FLOW_EOS : GST_FLOW_OK;
}

static void gst_vae_interp_loop(GstPad *pad) {
  auto *self = GST_VAE_INTERP(GST_PAD_PARENT(pad));
  GstVaeInterpPrivate *priv = self->priv;
  GstFlowReturn ret = GST_FLOW_OK;

  g_mutex_lock(&priv->lock);
  while (priv->queue.empty() && !priv->flushing) g_cond_wait(&priv->item_add, &priv->lock);
  if (priv->flushing) {
    ret = priv->srcresult;
    g_mutex_unlock(&priv->lock);
    goto out_flushing;
  }
  {
    GstMiniObject *obj = priv->queue.front();
    priv->queue.pop_front();
    if (GST_IS_BUFFER(obj)) {
      priv->pending--;
      g_cond_broadcast(&priv->item_del);
    } else if (GST_IS_QUERY(obj)) {
      priv->query_taken = true;
    }
    const bool reset = priv->reset_pair;
    priv->reset_pair = false;
    g_mutex_unlock(&priv->lock);
    if (reset) drop_held(priv);

    try {
      if (GST_IS_BUFFER(obj)) {
        ret = handle_keyframe(self, GST_BUFFER_CAST(obj));
      } else if (GST_IS_EVENT(obj)) {
        ret = handle_event(self, GST_EVENT_CAST(obj));
      } else if (GST_IS_QUERY(obj)) {
        GstQuery *query = GST_QUERY_CAST(obj);
        if (GST_QUERY_TYPE(query) == GST_QUERY_DRAIN) ret = flush_held(self);
        const bool res = gst_pad_peer_query(self->srcpad, query);
        g_mutex_lock(&priv->lock);
        if (priv->last_query == query) {
          priv->last_query_result = res;
          priv->last_query = nullptr;
        }
        priv->query_taken = false;
        g_cond_broadcast(&priv->query_done);
        g_mutex_unlock(&priv->lock);
      }
    } catch (const std::exception &e) {
      /* Nothing should get here (codec calls catch their own); never let it escape into C. */
      GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Unexpected failure: %s", e.what()), (nullptr));
      priv->error_posted = true;
      ret = GST_FLOW_ERROR;
    }
  }
  if (ret == GST_FLOW_OK) return;

  g_mutex_lock(&priv->lock);
  if (!priv->flushing) priv->srcresult = ret;
  ret = priv->srcresult;
  g_cond_broadcast(&priv->item_del);
  g_cond_broadcast(&priv->query_done);
  g_mutex_unlock(&priv->lock);

out_flushing:
  GST_DEBUG_OBJECT(self, "pausing task, reason %s", gst_flow_get_name(ret));
  gst_pad_pause_task(self->srcpad);
  if (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS) {
    if (!priv->error_posted) GST_ELEMENT_FLOW_ERROR(self, ret);
    gst_pad_push_event(self->srcpad, gst_event_new_eos());
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Sink pad                                                                                         */

static GstFlowReturn gst_vae_interp_chain(GstPad *pad, GstObject *parent, GstBuffer *buffer) {
  auto *self = GST_VAE_INTERP(parent);
  GstVaeInterpPrivate *priv = self->priv;
  GstFlowReturn ret;
  g_mutex_lock(&priv->lock);
  if (priv->pending >= priv->max_pending && !priv->flushing && priv->srcresult == GST_FLOW_OK && !priv->eos) {
    const gint64 start = g_get_monotonic_time();
    while (priv->pending >= priv->max_pending && !priv->flushing && priv->srcresult == GST_FLOW_OK)
      g_cond_wait(&priv->item_del, &priv->lock);
    priv->stats.backpressure_us += g_get_monotonic_time() - start;
  }
  if (priv->flushing || priv->srcresult != GST_FLOW_OK) {
    ret = priv->srcresult;
    g_mutex_unlock(&priv->lock);
    GST_DEBUG_OBJECT(self, "refusing keyframe: %s", gst_flow_get_name(ret));
    gst_buffer_unref(buffer);
    return ret;
  }
  if (priv->eos) {
    g_mutex_unlock(&priv->lock);
    gst_buffer_unref(buffer);
    return GST_FLOW_EOS;
  }
  priv->queue.push_back(GST_MINI_OBJECT_CAST(buffer));
  priv->pending++;
  priv->stats.keyframes_in++;
  g_cond_signal(&priv->item_add);
  g_mutex_unlock(&priv->lock);
  return GST_FLOW_OK;
}

static gboolean gst_vae_interp_sink_event(GstPad *pad, GstObject *parent, GstEvent *event) {
  auto *self = GST_VAE_INTERP(parent);
  GstVaeInterpPrivate *priv = self->priv;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_FLUSH_START: {
      gst_pad_push_event(self->srcpad, event);
      g_mutex_lock(&priv->lock);
      priv->flushing = true;
      priv->srcresult = GST_FLOW_FLUSHING;
      g_cond_broadcast(&priv->item_add);
      g_cond_broadcast(&priv->item_del);
      g_cond_broadcast(&priv->query_done);
      g_mutex_unlock(&priv->lock);
      /* Waits for the worker's current iteration (at most one decode batch). */
      gst_pad_pause_task(self->srcpad);
      return TRUE;
    }
    case GST_EVENT_FLUSH_STOP: {
      gst_pad_push_event(self->srcpad, event);
      g_mutex_lock(&priv->lock);
      free_queue_locked(priv);
      priv->flushing = false;
      priv->eos = false;
      priv->srcresult = GST_FLOW_OK;
      priv->reset_pair = true;
      priv->error_posted = false;
      if (gst_pad_is_active(self->srcpad))
        gst_pad_start_task(self->srcpad, (GstTaskFunction)gst_vae_interp_loop, self->srcpad, nullptr);
      g_mutex_unlock(&priv->lock);
      return TRUE;
    }
    default:
      break;
  }
  if (!GST_EVENT_IS_SERIALIZED(event)) return gst_pad_event_default(pad, parent, event);

  g_mutex_lock(&priv->lock);
  if (priv->flushing) {
    g_mutex_unlock(&priv->lock);
    gst_event_unref(event);
    return FALSE;
  }
  if (GST_EVENT_TYPE(event) == GST_EVENT_STREAM_START || GST_EVENT_TYPE(event) == GST_EVENT_SEGMENT) {
    /* A new stream after EOS: accept data again. */
    if (priv->eos && priv->srcresult == GST_FLOW_EOS) {
      priv->eos = false;
      priv->srcresult = GST_FLOW_OK;
      gst_pad_start_task(self->srcpad, (GstTaskFunction)gst_vae_interp_loop, self->srcpad, nullptr);
    }
  }
  if (priv->srcresult != GST_FLOW_OK) {
    const GstFlowReturn r = priv->srcresult;
    g_mutex_unlock(&priv->lock);
    GST_DEBUG_OBJECT(self, "refusing event %s: %s", GST_EVENT_TYPE_NAME(event), gst_flow_get_name(r));
    /* Sticky events still reach the pad so that a later restart sees them. */
    if (GST_EVENT_IS_STICKY(event) && GST_EVENT_TYPE(event) != GST_EVENT_EOS && r != GST_FLOW_FLUSHING)
      gst_pad_store_sticky_event(self->srcpad, event);
    gst_event_unref(event);
    return FALSE;
  }
  if (GST_EVENT_TYPE(event) == GST_EVENT_EOS) priv->eos = true;
  priv->queue.push_back(GST_MINI_OBJECT_CAST(event));
  g_cond_signal(&priv->item_add);
  g_mutex_unlock(&priv->lock);
  return TRUE;
}

static gboolean gst_vae_interp_sink_query(GstPad *pad, GstObject *parent, GstQuery *query) {
  auto *self = GST_VAE_INTERP(parent);
  GstVaeInterpPrivate *priv = self->priv;
  switch (GST_QUERY_TYPE(query)) {
    case GST_QUERY_CAPS: {
      GstCaps *filter = nullptr;
      gst_query_parse_caps(query, &filter);
      const Settings s = settings_snapshot(self);
      GstCaps *down_filter = filter ? transform_caps(filter, true, s.target_fps_n, s.target_fps_d) : nullptr;
      GstCaps *peer = gst_pad_peer_query_caps(self->srcpad, down_filter);
      if (down_filter) gst_caps_unref(down_filter);
      GstCaps *templ = gst_pad_get_pad_template_caps(pad);
      GstCaps *result;
      if (peer) {
        GstCaps *t = transform_caps(peer, false, 0, 1);
        result = gst_caps_intersect_full(templ, t, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref(t);
        gst_caps_unref(peer);
        gst_caps_unref(templ);
      } else {
        result = templ;
      }
      if (filter) {
        GstCaps *f = gst_caps_intersect_full(filter, result, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref(result);
        result = f;
      }
      gst_query_set_caps_result(query, result);
      gst_caps_unref(result);
      return TRUE;
    }
    case GST_QUERY_ALLOCATION:
      /* In-betweens are allocated here and keyframes are forwarded as they are: nothing to propose. */
      return FALSE;
    default:
      break;
  }
  if (!GST_QUERY_IS_SERIALIZED(query)) return gst_pad_query_default(pad, parent, query);

  /* Serialized queries (DRAIN, ...) are answered in stream order by the worker, like gstqueue. */
  g_mutex_lock(&priv->lock);
  if (priv->flushing || priv->srcresult != GST_FLOW_OK || priv->last_query) {
    g_mutex_unlock(&priv->lock);
    return FALSE;
  }
  priv->last_query = query;
  priv->last_query_result = false;
  priv->queue.push_back(GST_MINI_OBJECT_CAST(query));
  g_cond_signal(&priv->item_add);
  while (priv->last_query == query &&
         (priv->query_taken || (!priv->flushing && priv->srcresult == GST_FLOW_OK)))
    g_cond_wait(&priv->query_done, &priv->lock);
  bool res = false;
  if (priv->last_query == query) {
    /* Flushed or failed before the worker got to it: take it back out of the queue. */
    auto it = std::find(priv->queue.begin(), priv->queue.end(), GST_MINI_OBJECT_CAST(query));
    if (it != priv->queue.end()) priv->queue.erase(it);
    priv->last_query = nullptr;
  } else {
    res = priv->last_query_result;
  }
  g_mutex_unlock(&priv->lock);
  return res;
}

static gboolean gst_vae_interp_sink_activate_mode(GstPad *pad, GstObject *parent, GstPadMode mode, gboolean active) {
  auto *self = GST_VAE_INTERP(parent);
  GstVaeInterpPrivate *priv = self->priv;
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (active) {
    g_mutex_lock(&priv->lock);
    priv->eos = false;
    g_mutex_unlock(&priv->lock);
    return TRUE;
  }
  g_mutex_lock(&priv->lock);
  priv->flushing = true;
  priv->srcresult = GST_FLOW_FLUSHING;
  g_cond_broadcast(&priv->item_del);
  g_cond_broadcast(&priv->query_done);
  g_mutex_unlock(&priv->lock);
  /* Wait for a chain() in progress to leave. */
  GST_PAD_STREAM_LOCK(pad);
  g_mutex_lock(&priv->lock);
  free_queue_locked(priv);
  g_mutex_unlock(&priv->lock);
  GST_PAD_STREAM_UNLOCK(pad);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------------ */
/* Src pad                                                                                          */

static gboolean gst_vae_interp_src_activate_mode(GstPad *pad, GstObject *parent, GstPadMode mode, gboolean active) {
  auto *self = GST_VAE_INTERP(parent);
  GstVaeInterpPrivate *priv = self->priv;
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (active) {
    g_mutex_lock(&priv->lock);
    priv->flushing = false;
    priv->eos = false;
    priv->srcresult = GST_FLOW_OK;
    priv->error_posted = false;
    gboolean ok = gst_pad_start_task(pad, (GstTaskFunction)gst_vae_interp_loop, pad, nullptr);
    g_mutex_unlock(&priv->lock);
    return ok;
  }
  g_mutex_lock(&priv->lock);
  priv->flushing = true;
  priv->srcresult = GST_FLOW_FLUSHING;
  g_cond_broadcast(&priv->item_add);
  g_cond_broadcast(&priv->item_del);
  g_cond_broadcast(&priv->query_done);
  g_mutex_unlock(&priv->lock);
  /* Joins the worker; it checks the flushing flag between decode batches. */
  gboolean ok = gst_pad_stop_task(pad);
  /* Worker state, now that the worker is gone. */
  drop_held(priv);
  priv->have_info = false;
  gst_caps_replace(&priv->out_caps, nullptr);
  priv->out_fps_n = 0;
  priv->out_fps_d = 1;
  gst_segment_init(&priv->segment, GST_FORMAT_UNDEFINED);
  priv->keyframe_counter = 0;
  priv->last_spacing = GST_CLOCK_TIME_NONE;
  return ok;
}

static gboolean gst_vae_interp_src_query(GstPad *pad, GstObject *parent, GstQuery *query) {
  auto *self = GST_VAE_INTERP(parent);
  GstVaeInterpPrivate *priv = self->priv;
  switch (GST_QUERY_TYPE(query)) {
    case GST_QUERY_LATENCY: {
      if (!gst_pad_peer_query(self->sinkpad, query)) return FALSE;
      gboolean live;
      GstClockTime min, max;
      gst_query_parse_latency(query, &live, &min, &max);
      g_mutex_lock(&priv->lock);
      const GstClockTime period = priv->stats.period;
      const guint max_pending = priv->max_pending;
      priv->reported_latency = period;
      g_mutex_unlock(&priv->lock);
      /* A keyframe leaves when the next one arrives: one keyframe period of delay; the queue can hold
       * max-pending more. */
      if (GST_CLOCK_TIME_IS_VALID(period)) {
        min += period;
        if (GST_CLOCK_TIME_IS_VALID(max)) max += period * (max_pending + 1);
      }
      GST_DEBUG_OBJECT(self, "latency live %d min %" GST_TIME_FORMAT " max %" GST_TIME_FORMAT, live,
                       GST_TIME_ARGS(min), GST_TIME_ARGS(max));
      gst_query_set_latency(query, live, min, max);
      return TRUE;
    }
    case GST_QUERY_CAPS: {
      GstCaps *filter = nullptr;
      gst_query_parse_caps(query, &filter);
      const Settings s = settings_snapshot(self);
      GstCaps *up_filter = filter ? transform_caps(filter, false, 0, 1) : nullptr;
      GstCaps *peer = gst_pad_peer_query_caps(self->sinkpad, up_filter);
      if (up_filter) gst_caps_unref(up_filter);
      GstCaps *templ = gst_pad_get_pad_template_caps(pad);
      GstCaps *result;
      if (peer) {
        GstCaps *t = transform_caps(peer, true, s.target_fps_n, s.target_fps_d);
        result = gst_caps_intersect_full(t, templ, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref(t);
        gst_caps_unref(peer);
        gst_caps_unref(templ);
      } else {
        result = transform_caps(templ, true, s.target_fps_n, s.target_fps_d);
        gst_caps_unref(templ);
      }
      if (filter) {
        GstCaps *f = gst_caps_intersect_full(filter, result, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref(result);
        result = f;
      }
      gst_query_set_caps_result(query, result);
      gst_caps_unref(result);
      return TRUE;
    }
    default:
      return gst_pad_query_default(pad, parent, query);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Start / stop                                                                                     */

static bool file_exists(const std::string &path) { return g_file_test(path.c_str(), G_FILE_TEST_IS_REGULAR); }

/* Validates the settings and loads (or shares) the model. Posts the error itself. */
static bool gst_vae_interp_start(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  const Settings s = settings_snapshot(self);
  if (s.frames == FRAMES_AUTO && s.target_fps() <= 0) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("frames=-1 (auto) needs target-fps"),
                      ("set target-fps (e.g. 24/1) or a fixed number of frames"));
    return false;
  }
  const bool model_backend = s.backend != GST_VAE_INTERP_BACKEND_BLEND;
  if (model_backend) {
    for (const auto &[role, path] : {std::pair<const char *, const std::string &>{"encoder", s.encoder},
                                     std::pair<const char *, const std::string &>{"decoder", s.decoder}}) {
      if (!path.empty() && !file_exists(path)) {
        GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("%s file '%s' does not exist", role, path.c_str()),
                          ("property %s", role));
        return false;
      }
    }
    if (!s.model_dir.empty() && !g_file_test(s.model_dir.c_str(), G_FILE_TEST_IS_DIR)) {
      GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("model-dir '%s' is not a directory", s.model_dir.c_str()),
                        (nullptr));
      return false;
    }
    const bool have_files = (!s.encoder.empty() && !s.decoder.empty()) || !s.model_dir.empty();
    if (s.backend != GST_VAE_INTERP_BACKEND_AUTO && !have_files) {
      GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                        ("backend %s needs encoder and decoder files (or model-dir)",
                         s.backend == GST_VAE_INTERP_BACKEND_TAESD ? "taesd" : "torchscript"),
                        (nullptr));
      return false;
    }
    if (s.backend == GST_VAE_INTERP_BACKEND_AUTO && (s.encoder.empty() != s.decoder.empty()) && s.model_dir.empty()) {
      GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Both encoder and decoder are needed (only %s is set)",
                                                   s.encoder.empty() ? "decoder" : "encoder"),
                        (nullptr));
      return false;
    }
  }

  dw::latent::CodecConfig config;
  switch (s.backend) {
    case GST_VAE_INTERP_BACKEND_AUTO: config.backend = dw::latent::Backend::Auto; break;
    case GST_VAE_INTERP_BACKEND_TAESD: config.backend = dw::latent::Backend::Taesd; break;
    case GST_VAE_INTERP_BACKEND_TORCHSCRIPT: config.backend = dw::latent::Backend::TorchScript; break;
    case GST_VAE_INTERP_BACKEND_BLEND: config.backend = dw::latent::Backend::Blend; break;
  }
  switch (s.precision) {
    case GST_VAE_INTERP_PRECISION_AUTO: config.precision = dw::latent::Precision::Auto; break;
    case GST_VAE_INTERP_PRECISION_FP32: config.precision = dw::latent::Precision::Fp32; break;
    case GST_VAE_INTERP_PRECISION_FP16: config.precision = dw::latent::Precision::Fp16; break;
    case GST_VAE_INTERP_PRECISION_BF16: config.precision = dw::latent::Precision::Bf16; break;
  }
  config.encoder_path = s.encoder;
  config.decoder_path = s.decoder;
  config.model_dir = s.model_dir;
  config.device = s.device;
  config.threads = static_cast<int>(s.threads);

  std::shared_ptr<dw::latent::SharedCodec> codec;
  try {
    codec = dw::latent::ModelRegistry::acquire(config);
  } catch (const std::exception &e) {
    if (model_backend && s.backend != GST_VAE_INTERP_BACKEND_AUTO && !dw::latent::torch_available())
      GST_ELEMENT_ERROR(self, LIBRARY, INIT, ("Cannot load the model: %s", e.what()), (nullptr));
    else
      GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Cannot load the model: %s", e.what()),
                        ("encoder '%s', decoder '%s', model-dir '%s', device %s", s.encoder.c_str(), s.decoder.c_str(),
                         s.model_dir.c_str(), s.device.c_str()));
    return false;
  }
  const std::string description = codec->codec().describe();
  GST_INFO_OBJECT(self, "codec: %s", description.c_str());
  g_mutex_lock(&priv->lock);
  priv->codec = std::move(codec);
  priv->backend_description = description;
  priv->stats = Stats();
  priv->reported_latency = 0;
  priv->max_pending = s.max_pending;
  g_mutex_unlock(&priv->lock);
  return true;
}

static void gst_vae_interp_stop(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  std::shared_ptr<dw::latent::SharedCodec> codec;
  g_mutex_lock(&priv->lock);
  codec = std::move(priv->codec);
  priv->codec.reset();
  g_mutex_unlock(&priv->lock);
  codec.reset();  // frees the model if nobody else holds it, outside our lock
}

static GstStateChangeReturn gst_vae_interp_change_state(GstElement *element, GstStateChange transition) {
  auto *self = GST_VAE_INTERP(element);
  try {
    if (transition == GST_STATE_CHANGE_READY_TO_PAUSED && !gst_vae_interp_start(self))
      return GST_STATE_CHANGE_FAILURE;
    GstStateChangeReturn ret = GST_ELEMENT_CLASS(parent_class)->change_state(element, transition);
    if (ret == GST_STATE_CHANGE_FAILURE && transition == GST_STATE_CHANGE_READY_TO_PAUSED) gst_vae_interp_stop(self);
    if (transition == GST_STATE_CHANGE_PAUSED_TO_READY) gst_vae_interp_stop(self);
    return ret;
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, LIBRARY, INIT, ("State change failed: %s", e.what()), (nullptr));
    return GST_STATE_CHANGE_FAILURE;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* GObject                                                                                          */

static void gst_vae_interp_set_property(GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec) {
  auto *self = GST_VAE_INTERP(object);
  GstVaeInterpPrivate *priv = self->priv;
  auto str = [](const GValue *v) { return std::string(g_value_get_string(v) ? g_value_get_string(v) : ""); };
  GST_OBJECT_LOCK(self);
  Settings &s = priv->settings;
  switch (prop_id) {
    case PROP_ENCODER: s.encoder = str(value); break;
    case PROP_DECODER: s.decoder = str(value); break;
    case PROP_MODEL_DIR: s.model_dir = str(value); break;
    case PROP_BACKEND: s.backend = static_cast<GstVaeInterpBackend>(g_value_get_enum(value)); break;
    case PROP_DEVICE: s.device = g_value_get_string(value) ? g_value_get_string(value) : DEFAULT_DEVICE; break;
    case PROP_PRECISION: s.precision = static_cast<GstVaeInterpPrecision>(g_value_get_enum(value)); break;
    case PROP_FRAMES: s.frames = g_value_get_int(value); break;
    case PROP_TARGET_FPS:
      s.target_fps_n = gst_value_get_fraction_numerator(value);
      s.target_fps_d = gst_value_get_fraction_denominator(value);
      break;
    case PROP_BATCH_SIZE: s.batch_size = g_value_get_uint(value); break;
    case PROP_THREADS: s.threads = g_value_get_uint(value); break;
    case PROP_MAX_PENDING: s.max_pending = g_value_get_uint(value); break;
    case PROP_MAX_ERRORS: s.max_errors = g_value_get_int(value); break;
    case PROP_POST_MESSAGES: s.post_messages = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  const guint max_pending = s.max_pending;
  GST_OBJECT_UNLOCK(self);
  if (prop_id == PROP_MAX_PENDING) {
    g_mutex_lock(&priv->lock);
    priv->max_pending = max_pending;
    g_cond_broadcast(&priv->item_del);
    g_mutex_unlock(&priv->lock);
  }
}

static void gst_vae_interp_get_property(GObject *object, guint prop_id, GValue *value, GParamSpec *pspec) {
  auto *self = GST_VAE_INTERP(object);
  if (prop_id == PROP_STATS) {
    g_value_take_boxed(value, build_stats(self));
    return;
  }
  auto opt = [](const std::string &v) { return v.empty() ? nullptr : v.c_str(); };
  GST_OBJECT_LOCK(self);
  const Settings &s = self->priv->settings;
  switch (prop_id) {
    case PROP_ENCODER: g_value_set_string(value, opt(s.encoder)); break;
    case PROP_DECODER: g_value_set_string(value, opt(s.decoder)); break;
    case PROP_MODEL_DIR: g_value_set_string(value, opt(s.model_dir)); break;
    case PROP_BACKEND: g_value_set_enum(value, s.backend); break;
    case PROP_DEVICE: g_value_set_string(value, s.device.c_str()); break;
    case PROP_PRECISION: g_value_set_enum(value, s.precision); break;
    case PROP_FRAMES: g_value_set_int(value, s.frames); break;
    case PROP_TARGET_FPS: gst_value_set_fraction(value, s.target_fps_n, s.target_fps_d); break;
    case PROP_BATCH_SIZE: g_value_set_uint(value, s.batch_size); break;
    case PROP_THREADS: g_value_set_uint(value, s.threads); break;
    case PROP_MAX_PENDING: g_value_set_uint(value, s.max_pending); break;
    case PROP_MAX_ERRORS: g_value_set_int(value, s.max_errors); break;
    case PROP_POST_MESSAGES: g_value_set_boolean(value, s.post_messages); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_vae_interp_finalize(GObject *object) {
  auto *self = GST_VAE_INTERP(object);
  GstVaeInterpPrivate *priv = self->priv;
  drop_held(priv);
  gst_caps_replace(&priv->out_caps, nullptr);
  g_mutex_lock(&priv->lock);
  free_queue_locked(priv);
  g_mutex_unlock(&priv->lock);
  g_mutex_clear(&priv->lock);
  g_cond_clear(&priv->item_add);
  g_cond_clear(&priv->item_del);
  g_cond_clear(&priv->query_done);
  delete priv;
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_vae_interp_init(GstVaeInterp *self) {
  auto *priv = new GstVaeInterpPrivate();
  self->priv = priv;
  g_mutex_init(&priv->lock);
  g_cond_init(&priv->item_add);
  g_cond_init(&priv->item_del);
  g_cond_init(&priv->query_done);
  gst_video_info_init(&priv->in_info);
  gst_segment_init(&priv->segment, GST_FORMAT_UNDEFINED);

  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_vae_interp_chain));
  gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_vae_interp_sink_event));
  gst_pad_set_query_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_vae_interp_sink_query));
  gst_pad_set_activatemode_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_vae_interp_sink_activate_mode));
  GST_PAD_SET_PROXY_ALLOCATION(self->sinkpad);
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_vae_interp_src_query));
  gst_pad_set_activatemode_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_vae_interp_src_activate_mode));
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);
}

static void gst_vae_interp_class_init(GstVaeInterpClass *klass) {
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);

  gobject_class->set_property = gst_vae_interp_set_property;
  gobject_class->get_property = gst_vae_interp_get_property;
  gobject_class->finalize = gst_vae_interp_finalize;
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_vae_interp_change_state);

  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);

  /**
   * GstVaeInterp:encoder:
   * Encoder weights: a TAESD-family .safetensors (backend taesd) or a TorchScript .pt (torchscript).
   */
  g_object_class_install_property(gobject_class, PROP_ENCODER,
      g_param_spec_string("encoder", "Encoder file",
                          "Encoder weights (.safetensors for taesd, .pt for torchscript); NULL = from model-dir",
                          DEFAULT_ENCODER, rw_ready));
  /**
   * GstVaeInterp:decoder:
   * Decoder weights, same kind as the encoder.
   */
  g_object_class_install_property(gobject_class, PROP_DECODER,
      g_param_spec_string("decoder", "Decoder file",
                          "Decoder weights (.safetensors for taesd, .pt for torchscript); NULL = from model-dir",
                          DEFAULT_DECODER, rw_ready));
  /**
   * GstVaeInterp:model-dir:
   * A directory holding *encoder* and *decoder* files (used for whichever of encoder/decoder is unset).
   */
  g_object_class_install_property(gobject_class, PROP_MODEL_DIR,
      g_param_spec_string("model-dir", "Model directory",
                          "Directory with *encoder*/*decoder* .safetensors or .pt files, used when encoder/decoder "
                          "are not set; NULL = none",
                          DEFAULT_MODEL_DIR, rw_ready));
  /**
   * GstVaeInterp:backend:
   * The latent codec. auto: taesd for .safetensors, torchscript for .pt, blend without model files.
   */
  g_object_class_install_property(gobject_class, PROP_BACKEND,
      g_param_spec_enum("backend", "Backend",
                        "Latent codec (auto = taesd for .safetensors, torchscript for .pt, blend when no model "
                        "file is set)",
                        GST_TYPE_VAE_INTERP_BACKEND, DEFAULT_BACKEND, rw_ready));
  /**
   * GstVaeInterp:device:
   * Where the model runs.
   */
  g_object_class_install_property(gobject_class, PROP_DEVICE,
      g_param_spec_string("device", "Device", "Device the model runs on: cpu, cuda or cuda:N", DEFAULT_DEVICE,
                          rw_ready));
  /**
   * GstVaeInterp:precision:
   * Model precision.
   */
  g_object_class_install_property(gobject_class, PROP_PRECISION,
      g_param_spec_enum("precision", "Precision",
                        "Model precision (auto = bf16 on CPUs with native bf16, fp16 on CUDA, else fp32)",
                        GST_TYPE_VAE_INTERP_PRECISION, DEFAULT_PRECISION, rw_ready));
  /**
   * GstVaeInterp:frames:
   * In-betweens per keyframe pair; -1 = auto from the measured keyframe interval and target-fps.
   */
  g_object_class_install_property(gobject_class, PROP_FRAMES,
      g_param_spec_int("frames", "Frames between keyframes",
                       "In-betweens per keyframe pair (0 = pass keyframes only; -1 = auto: "
                       "round(interval * target-fps) - 1, so each interval plays at target-fps; needs target-fps)",
                       FRAMES_AUTO, MAX_FRAMES, DEFAULT_FRAMES, rw_playing));
  /**
   * GstVaeInterp:target-fps:
   * Output frame rate announced in the caps and used by frames=-1; 0/1 = none (variable).
   */
  g_object_class_install_property(gobject_class, PROP_TARGET_FPS,
      gst_param_spec_fraction("target-fps", "Target frame rate (fps)",
                              "Output rate announced on the src caps and used by frames=-1 (auto); 0/1 = none "
                              "(src framerate 0/1, variable)",
                              0, 1, 1000, 1, DEFAULT_TARGET_FPS_N, DEFAULT_TARGET_FPS_D, rw_playing));
  /**
   * GstVaeInterp:batch-size:
   * In-betweens decoded per codec call.
   */
  g_object_class_install_property(gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint("batch-size", "Batch size (frames)",
                        "In-betweens decoded per codec call; each batch is pushed as soon as it is decoded", 1, 64,
                        DEFAULT_BATCH_SIZE, rw_playing));
  /**
   * GstVaeInterp:threads:
   * Intra-op threads of the model.
   */
  g_object_class_install_property(gobject_class, PROP_THREADS,
      g_param_spec_uint("threads", "Threads", "Intra-op threads for the model (0 = number of cores)", 0, 1024,
                        DEFAULT_THREADS, rw_ready));
  /**
   * GstVaeInterp:max-pending:
   * Keyframes waiting for the worker before chain() blocks.
   */
  g_object_class_install_property(gobject_class, PROP_MAX_PENDING,
      g_param_spec_uint("max-pending", "Max pending keyframes",
                        "Keyframes queued for the worker; chain() blocks while this many wait (backpressure)", 1,
                        1024, DEFAULT_MAX_PENDING, rw_playing));
  /**
   * GstVaeInterp:max-errors:
   * Codec failures tolerated (as warnings, the pair skipped) before an error.
   */
  g_object_class_install_property(gobject_class, PROP_MAX_ERRORS,
      g_param_spec_int("max-errors", "Max errors",
                       "Codec failures tolerated as warnings (the pair is skipped) before an error; 0 = the first "
                       "is fatal, -1 = never fatal",
                       -1, G_MAXINT, DEFAULT_MAX_ERRORS, rw_playing));
  /**
   * GstVaeInterp:post-messages:
   * Post a dreamwindow-interp element message per interpolated keyframe pair.
   */
  g_object_class_install_property(gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean("post-messages", "Post messages",
                           "Post a dreamwindow-interp element message per interpolated keyframe pair",
                           DEFAULT_POST_MESSAGES, rw_playing));
  /**
   * GstVaeInterp:stats:
   * application/x-vaeinterp-stats, see docs/elements/vaeinterp.md.
   */
  g_object_class_install_property(gobject_class, PROP_STATS,
      g_param_spec_boxed("stats", "Statistics",
                         "application/x-vaeinterp-stats: keyframes, keyframes-encoded, keyframes-out, inbetweens-out, "
                         "frames-out, pairs, pairs-restarted, errors, encode-ms-last/-mean, decode-ms-last/-mean "
                         "(per pair), interp-fps-last/-mean, frames-last, keyframe-period (ns), queue-depth, "
                         "max-pending, backpressure-ms, lock-acquisitions, lock-wait-ms-total/-max, backend",
                         GST_TYPE_STRUCTURE, static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "Latent keyframe interpolator", "Filter/Effect/Video",
      "Fills the gaps between keyframes with frames decoded from slerped VAE latents (TAESD, TorchScript) or a "
      "crossfade, on its own thread so interpolation overlaps with keyframe generation",
      "gst-dreamwindow developers");

  gst_type_mark_as_plugin_api(GST_TYPE_VAE_INTERP_BACKEND, static_cast<GstPluginAPIFlags>(0));
  gst_type_mark_as_plugin_api(GST_TYPE_VAE_INTERP_PRECISION, static_cast<GstPluginAPIFlags>(0));
}

/* vaeinterp
 *
 * Turns a stream of keyframes (variable framerate, e.g. from comfykeyframesrc) into a smooth stream:
 * for each new keyframe B, with the previous keyframe A, it pushes A (bit-exact) and then the frames
 * in between, made by a dw::interp::PairInterpolator; B then opens the next pair (or is pushed at EOS).
 *
 * What it delegates where (this file is glue: pads, caps, properties, the worker, messages):
 *  - lib/interp/plan.h: PairPlanner decides per pair how many in-betweens, their t, timestamps and
 *    durations, whether the pair is a discontinuity (DISCONT keyframe or a gap much longer than the
 *    keyframe period: a short transition of max-gap-transition instead of seconds of interpolation),
 *    and the keyframe period behind the latency query.
 *  - lib/interp/backend.h: which backend `backend=auto` means, whether the settings can work, and
 *    making it: flow (flow.h, OpenCV DIS optical flow), vfi (vfi.h, a RIFE/FILM TorchScript model),
 *    or the latent codecs of lib/latent (taesd, torchscript, blend) through latent_pair.h with
 *    residual carry.
 *  - gst/dwframe.h: GstBuffer <-> dw::Image; gst/dwmeta.h: keyframe facts; gst/dwstats.h: names.
 *
 * Threads and locks (see docs/architecture.md and docs/elements/vaeinterp.md):
 *  - chain() only enqueues the keyframe into a bounded queue (max-pending keyframes) and returns; it
 *    blocks while the queue is full (backpressure) and a flush or state change unblocks it at once.
 *  - the src pad task (the worker, started in READY->PAUSED like gstqueue) takes the items in order,
 *    hands each pair to the interpolator and pushes the in-betweens batch by batch. It is the only
 *    thread that touches the interpolator and the held keyframe (FLUSH_STOP and deactivation drop
 *    the held keyframe while the task is paused or stopped), so the source's thread is free while a
 *    pair is interpolated.
 *  - priv->lock guards the queue, srcresult (gstqueue's: FLUSHING while flushing, the worker's last
 *    flow otherwise), eos, the serialized-query hand-off and the stats; it is never held while
 *    interpolating, pushing or posting. A latent model has its own lock (dw::latent::SharedCodec),
 *    shared with other elements using the same model; its wait time is in the stats.
 *  - settings are guarded by the object lock; the worker takes a snapshot per keyframe.
 *  - every vfunc and the task catch std::exception (c10::Error and cv::Exception derive from it) and
 *    turn it into an element error.
 *
 * Example:
 *   gst-launch-1.0 comfykeyframesrc ! vaeinterp backend=flow frames=-1 target-fps=24 ! \
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

#include "dwframe.h"
#include "dwmeta.h"
#include "dwstats.h"
#include "gstdreamwindowelements.h"
#include "image/image.h"
#include "interp/backend.h"
#include "interp/latent_pair.h"
#include "interp/plan.h"
#include "latent/codec.h"
#ifdef DW_INTERP_HAVE_VFI
#include "interp/vfi.h"
#endif

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
#define MAX_FRAMES dw::interp::kMaxFrames
#define DEFAULT_TARGET_FPS_N 0
#define DEFAULT_TARGET_FPS_D 1
#define DEFAULT_BATCH_SIZE 4
#define DEFAULT_THREADS 0
#define DEFAULT_MAX_PENDING 2
#define DEFAULT_MAX_ERRORS 0
#define DEFAULT_POST_MESSAGES TRUE
#define DEFAULT_RESIDUAL_CARRY TRUE
#define DEFAULT_MOTION_COMPENSATION TRUE
#define DEFAULT_FLOW_PRESET GST_VAE_INTERP_FLOW_PRESET_FAST
#define DEFAULT_VFI_MODEL nullptr
#define DEFAULT_MAX_GAP_TRANSITION (500 * GST_MSECOND)
#define DEFAULT_MAX_GPU_MEMORY 0
#define DEFAULT_RELEASE_INTERVAL 0

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
  PROP_RESIDUAL_CARRY,
  PROP_MOTION_COMPENSATION,
  PROP_FLOW_PRESET,
  PROP_VFI_MODEL,
  PROP_MAX_GAP_TRANSITION,
  PROP_MAX_GPU_MEMORY,
  PROP_RELEASE_INTERVAL,
  PROP_STATS,
};

/* flow and vfi exist only in builds that have them, so "has the nick flow" tells a caller (the app)
 * that backend=flow works. */
GType gst_vae_interp_backend_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_VAE_INTERP_BACKEND_AUTO,
       "taesd/torchscript when model files are set, else flow (OpenCV builds), else blend", "auto"},
      {GST_VAE_INTERP_BACKEND_TAESD, "Native TAESD family (.safetensors), latent slerp", "taesd"},
      {GST_VAE_INTERP_BACKEND_TORCHSCRIPT, "TorchScript encoder/decoder module pair (.pt), latent slerp",
       "torchscript"},
      {GST_VAE_INTERP_BACKEND_BLEND, "Pixel crossfade, no model", "blend"},
#ifdef DW_INTERP_HAVE_FLOW
      {GST_VAE_INTERP_BACKEND_FLOW, "Optical flow (OpenCV DIS), both keyframes warped to t", "flow"},
#endif
#ifdef DW_INTERP_HAVE_VFI
      {GST_VAE_INTERP_BACKEND_VFI, "Frame-interpolation model (RIFE/FILM TorchScript, vfi-model)", "vfi"},
#endif
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

GType gst_vae_interp_flow_preset_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_VAE_INTERP_FLOW_PRESET_ULTRAFAST, "DIS ultrafast on a half-size image: large frames, slow CPUs",
       "ultrafast"},
      {GST_VAE_INTERP_FLOW_PRESET_FAST, "DIS fast at full size", "fast"},
      {GST_VAE_INTERP_FLOW_PRESET_MEDIUM, "DIS medium: best quality, slowest", "medium"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstVaeInterpFlowPreset", values);
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
  gboolean residual_carry = DEFAULT_RESIDUAL_CARRY;
  gboolean motion_compensation = DEFAULT_MOTION_COMPENSATION;
  GstVaeInterpFlowPreset flow_preset = DEFAULT_FLOW_PRESET;
  std::string vfi_model;
  guint64 max_gap_transition = DEFAULT_MAX_GAP_TRANSITION;
  gint max_gpu_memory = DEFAULT_MAX_GPU_MEMORY;  // MiB
  guint release_interval = DEFAULT_RELEASE_INTERVAL;

  double target_fps() const { return target_fps_n > 0 && target_fps_d > 0 ? double(target_fps_n) / target_fps_d : 0.0; }
  dw::interp::PlanSettings plan() const {
    dw::interp::PlanSettings p;
    p.frames = frames;
    p.target_fps = target_fps();
    p.max_gap_transition = static_cast<int64_t>(std::min<guint64>(max_gap_transition, G_MAXINT64));
    return p;
  }
};

struct Stats {
  guint64 keyframes_in = 0;       // accepted by chain()
  guint64 keyframes_encoded = 0;  // pairs set up (set_pair: flow computed / keyframe encoded)
  guint64 keyframes_out = 0;
  guint64 inbetweens_out = 0;
  guint64 pairs = 0;             // pairs interpolated
  guint64 pairs_restarted = 0;   // pairs dropped: caps/size change, flush, invalid timestamps, errors
  guint64 transitions = 0;       // pairs planned as a short transition (discontinuity)
  guint64 errors = 0;            // interpolator failures
  double encode_ms_last = 0, encode_ms_total = 0;  // set_pair per pair
  double decode_ms_last = 0, decode_ms_total = 0;  // in-betweens per pair (all batches)
  guint64 decode_pairs = 0;
  double interp_fps_last = 0;
  guint frames_last = 0;                 // in-betweens of the last pair
  GstClockTime period = GST_CLOCK_TIME_NONE;  // measured keyframe period (EMA, lib/interp PairPlanner)
  gint64 backpressure_us = 0;            // time chain() waited for room
  guint64 vfi_model_calls = 0;
  guint64 vfi_peak_live = 0;
  guint64 motion_pairs = 0;
  guint64 morph_pairs = 0;
};

/* The keyframe held by the worker until the next one arrives (the one owner of its buffer). */
struct Held {
  GstBuffer *buffer = nullptr;  // owned; pushed when its pair is complete
  dw::Image rgb;                // what the interpolator gets
  std::vector<uint8_t> alpha;   // formats with alpha only
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  DwFrameKind kind = DW_FRAME_KIND_KEYFRAME;
  guint64 index = 0;
  bool discont = false;
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
  bool eos = false;
  bool last_query_result = false;
  GstQuery *last_query = nullptr;  // a serialized query waiting for the worker
  bool query_taken = false;        // the worker is answering it: its thread must wait, even when flushing
  GstFlowReturn srcresult = GST_FLOW_FLUSHING;  // FLUSHING = flushing (gstqueue)
  Stats stats;
  GstClockTime reported_latency = 0;
  std::string backend_description;
  std::shared_ptr<dw::latent::SharedCodec> codec;  // latent backends: for the lock stats

  /* Created in READY->PAUSED, destroyed in PAUSED->READY; used by the worker only. */
  std::unique_ptr<dw::interp::PairInterpolator> interp;
  dw::interp::LatentPairInterpolator *latent_pair = nullptr;  // interp, when a latent backend
#ifdef DW_INTERP_HAVE_VFI
  dw::interp::VfiInterpolator *vfi = nullptr;  // interp, when backend=vfi
#endif

  /* Worker only (the src pad task; also touched while it is paused or stopped). */
  GstVideoInfo in_info;
  bool have_info = false;
  GstCaps *out_caps = nullptr;
  gint out_fps_n = 0, out_fps_d = 1;
  GstSegment segment;
  std::optional<Held> held;
  guint64 keyframe_counter = 0;
  dw::interp::PairPlanner planner;
  std::optional<guint64> last_b_index;  // b of the last pair handed to the interpolator
  bool error_posted = false;  // this element already posted the error behind a fatal flow
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
                                                              "keyframe pair interpolation");
                                      GST_DEBUG_CATEGORY_INIT(vaeinterp_dataflow_debug, "vaeinterp_dataflow", 0,
                                                              "vaeinterp per-buffer logs"));

#define VAEINTERP_CAPS                                                              \
  "video/x-raw, format = (string) " DW_FRAME_FORMATS ", width = (int) [ 1, 16384 ], " \
  "height = (int) [ 1, 16384 ], framerate = (fraction) [ 0/1, MAX ]"

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(VAEINTERP_CAPS));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(VAEINTERP_CAPS));

static void gst_vae_interp_loop(GstPad *pad);

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                          */

static Settings settings_snapshot(GstVaeInterp *self) {
  GST_OBJECT_LOCK(self);
  Settings s = self->priv->settings;
  GST_OBJECT_UNLOCK(self);
  return s;
}

static double ms_since(gint64 start_us) { return (g_get_monotonic_time() - start_us) / 1000.0; }

static int64_t to_plan_time(GstClockTime t) {
  return GST_CLOCK_TIME_IS_VALID(t) ? static_cast<int64_t>(t) : dw::interp::kNoTime;
}
static GstClockTime to_clock_time(int64_t t) {
  return t == dw::interp::kNoTime ? GST_CLOCK_TIME_NONE : static_cast<GstClockTime>(t);
}

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

/* Forgets the held keyframe and the interpolator's cached pair. Worker context, or the task is
 * paused/stopped. */
static void reset_pair(GstVaeInterpPrivate *priv) {
  if (priv->held) {
    if (priv->held->buffer) gst_buffer_unref(priv->held->buffer);
    priv->held.reset();
  }
  if (priv->interp) priv->interp->reset();
  priv->last_b_index.reset();
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
  return gst_structure_new(
      DW_STATS_VAEINTERP_NAME,
      DW_STATS_VAEINTERP_KEYFRAMES, G_TYPE_UINT64, st.keyframes_in,
      DW_STATS_VAEINTERP_KEYFRAMES_ENCODED, G_TYPE_UINT64, st.keyframes_encoded,
      DW_STATS_VAEINTERP_KEYFRAMES_OUT, G_TYPE_UINT64, st.keyframes_out,
      DW_STATS_VAEINTERP_INBETWEENS_OUT, G_TYPE_UINT64, st.inbetweens_out,
      DW_STATS_VAEINTERP_FRAMES_OUT, G_TYPE_UINT64, st.keyframes_out + st.inbetweens_out,
      DW_STATS_VAEINTERP_PAIRS, G_TYPE_UINT64, st.pairs,
      DW_STATS_VAEINTERP_PAIRS_RESTARTED, G_TYPE_UINT64, st.pairs_restarted,
      DW_STATS_VAEINTERP_TRANSITIONS, G_TYPE_UINT64, st.transitions,
      DW_STATS_VAEINTERP_ERRORS, G_TYPE_UINT64, st.errors,
      DW_STATS_VAEINTERP_ENCODE_MS_LAST, G_TYPE_DOUBLE, st.encode_ms_last,
      DW_STATS_VAEINTERP_ENCODE_MS_MEAN, G_TYPE_DOUBLE, st.keyframes_encoded ? st.encode_ms_total / st.keyframes_encoded : 0.0,
      DW_STATS_VAEINTERP_DECODE_MS_LAST, G_TYPE_DOUBLE, st.decode_ms_last,
      DW_STATS_VAEINTERP_DECODE_MS_MEAN, G_TYPE_DOUBLE, st.decode_pairs ? st.decode_ms_total / st.decode_pairs : 0.0,
      DW_STATS_VAEINTERP_INTERP_FPS_LAST, G_TYPE_DOUBLE, st.interp_fps_last,
      DW_STATS_VAEINTERP_INTERP_FPS_MEAN, G_TYPE_DOUBLE, decode_s > 0 ? st.inbetweens_out / decode_s : 0.0,
      DW_STATS_VAEINTERP_FRAMES_LAST, G_TYPE_UINT, st.frames_last,
      DW_STATS_VAEINTERP_KEYFRAME_PERIOD, G_TYPE_UINT64, static_cast<guint64>(st.period),
      DW_STATS_VAEINTERP_QUEUE_DEPTH, G_TYPE_UINT, depth,
      DW_STATS_VAEINTERP_MAX_PENDING, G_TYPE_UINT, max_pending,
      DW_STATS_VAEINTERP_BACKPRESSURE_MS, G_TYPE_DOUBLE, st.backpressure_us / 1000.0,
      DW_STATS_VAEINTERP_LOCK_ACQUISITIONS, G_TYPE_UINT64, static_cast<guint64>(ls.acquisitions),
      DW_STATS_VAEINTERP_LOCK_WAIT_MS_TOTAL, G_TYPE_DOUBLE, ls.total_wait_us / 1000.0,
      DW_STATS_VAEINTERP_LOCK_WAIT_MS_MAX, G_TYPE_DOUBLE, ls.max_wait_us / 1000.0,
      DW_STATS_VAEINTERP_VFI_MODEL_CALLS, G_TYPE_UINT64, st.vfi_model_calls,
      DW_STATS_VAEINTERP_VFI_PEAK_LIVE, G_TYPE_UINT64, st.vfi_peak_live,
      DW_STATS_VAEINTERP_MOTION_PAIRS, G_TYPE_UINT64, st.motion_pairs,
      DW_STATS_VAEINTERP_MORPH_PAIRS, G_TYPE_UINT64, st.morph_pairs,
      DW_STATS_VAEINTERP_BACKEND, G_TYPE_STRING, backend.c_str(),
      nullptr);
}

/* ------------------------------------------------------------------------------------------------ */
/* Worker (src pad task)                                                                            */

/* Raises an interpolator failure: a warning while errors <= max-errors, else an element error.
 * Returns the flow to continue with. Called without locks. */
static GstFlowReturn interp_failure(GstVaeInterp *self, const Settings &s, const char *what, const std::string &why) {
  GstVaeInterpPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  const guint64 errors = ++priv->stats.errors;
  priv->stats.pairs_restarted++;
  g_mutex_unlock(&priv->lock);
  if (s.max_errors >= 0 && errors > static_cast<guint64>(s.max_errors)) {
    priv->error_posted = true;
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Interpolation failed while %s: %s", what, why.c_str()),
                      ("error %" G_GUINT64_FORMAT " (max-errors %d)", errors, s.max_errors));
    return GST_FLOW_ERROR;
  }
  GST_ELEMENT_WARNING(self, STREAM, FAILED, ("Interpolation failed while %s: %s", what, why.c_str()),
                      ("error %" G_GUINT64_FORMAT " of max-errors %d; the pair is skipped", errors, s.max_errors));
  return GST_FLOW_OK;
}

static GstFlowReturn fatal(GstVaeInterp *self, GstFlowReturn ret) {
  self->priv->error_posted = true;
  return ret;
}

/* Pushes the held keyframe A (its pair is complete or abandoned) and forgets it: the buffer goes
 * downstream unchanged except for its duration and the frame meta. */
static GstFlowReturn push_held(GstVaeInterp *self, GstClockTime duration, Held *taken = nullptr) {
  GstVaeInterpPrivate *priv = self->priv;
  if (!priv->held) return GST_FLOW_OK;
  Held a = std::move(*priv->held);
  priv->held.reset();
  GstBuffer *buf = gst_buffer_make_writable(a.buffer);
  a.buffer = nullptr;
  if (GST_CLOCK_TIME_IS_VALID(duration)) GST_BUFFER_DURATION(buf) = duration;
  DwFrameMeta *meta = dw_buffer_get_frame_meta(buf);
  if (!meta) meta = dw_buffer_add_frame_meta(buf, a.kind, a.index, 0.0);
  meta->kind = a.kind;
  meta->keyframe_index = a.index;
  meta->position = 0.0;
  GST_CAT_LOG_OBJECT(vaeinterp_dataflow_debug, self, "keyframe %" G_GUINT64_FORMAT " pts %" GST_TIME_FORMAT, a.index,
                     GST_TIME_ARGS(GST_BUFFER_PTS(buf)));
  GstFlowReturn ret = gst_pad_push(self->srcpad, buf);
  g_mutex_lock(&priv->lock);
  priv->stats.keyframes_out++;
  g_mutex_unlock(&priv->lock);
  if (taken) *taken = std::move(a);  // its pixels, for the pair it opens
  return ret;
}

/* Pushes the held keyframe alone (EOS, caps change, segment). */
static GstFlowReturn flush_held(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  if (!priv->held) return GST_FLOW_OK;
  GstClockTime duration = GST_BUFFER_DURATION(priv->held->buffer);
  if (!GST_CLOCK_TIME_IS_VALID(duration)) duration = to_clock_time(priv->planner.last_spacing());
  return push_held(self, duration);
}

static bool is_flushing(GstVaeInterp *self) {
  g_mutex_lock(&self->priv->lock);
  const bool f = self->priv->srcresult == GST_FLOW_FLUSHING;
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
  if (!ok && !is_flushing(self)) {
    gst_caps_replace(&priv->out_caps, nullptr);
    return false;
  }
  return true;
}

/* Publishes the planner's period; posts a latency message when it moved (after unlocking). */
static void note_period(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  const GstClockTime period = to_clock_time(priv->planner.period());
  g_mutex_lock(&priv->lock);
  priv->stats.period = period;
  const bool post = dw::interp::latency_moved(priv->planner.period(), static_cast<int64_t>(priv->reported_latency));
  if (post) priv->reported_latency = period;
  g_mutex_unlock(&priv->lock);
  if (post) gst_element_post_message(GST_ELEMENT(self), gst_message_new_latency(GST_OBJECT(self)));
}

/* A keyframe buffer as the worker holds it: facts from its meta, RGB pixels, alpha plane. Takes the
 * buffer; on failure posts the error and returns nullopt. */
static std::optional<Held> read_keyframe(GstVaeInterp *self, GstBuffer *buffer) {
  GstVaeInterpPrivate *priv = self->priv;
  Held b;
  b.buffer = buffer;
  b.pts = GST_BUFFER_PTS(buffer);
  b.discont = GST_BUFFER_FLAG_IS_SET(buffer, GST_BUFFER_FLAG_DISCONT);
  if (DwFrameMeta *meta = dw_buffer_get_frame_meta(buffer)) {
    b.kind = meta->kind == DW_FRAME_KIND_INBETWEEN ? DW_FRAME_KIND_KEYFRAME : meta->kind;
    b.index = meta->keyframe_index;
  } else {
    b.index = priv->keyframe_counter;
  }
  priv->keyframe_counter = b.index + 1;
  dw::Image img;
  std::string why;
  if (!dw_image_from_buffer(buffer, &priv->in_info, &img, &why, DwImageChannels::Native)) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Failed to read a keyframe: %s", why.c_str()), (nullptr));
    return std::nullopt;
  }
  if (img.channels == 4) {
    const size_t n = static_cast<size_t>(img.width) * img.height;
    b.alpha.resize(n);
    for (size_t i = 0; i < n; ++i) b.alpha[i] = img.pixels[4 * i + 3];
    b.rgb = dw::convert_channels(img, 3);
  } else {
    b.rgb = std::move(img);
  }
  return b;
}

/* An output buffer for an in-between (resized if the backend returned another size); formats with
 * alpha get it lerped between the keyframes' alpha planes. */
static GstBuffer *inbetween_buffer(GstVaeInterp *self, dw::Image &&img, const Held &a, const Held &b, double t) {
  const GstVideoInfo *info = &self->priv->in_info;
  const int w = GST_VIDEO_INFO_WIDTH(info), h = GST_VIDEO_INFO_HEIGHT(info);
  if (img.width != w || img.height != h) img = dw::resize_bilinear(img, w, h);
  const size_t n = static_cast<size_t>(w) * h;
  if (a.alpha.size() == n && b.alpha.size() == n) {
    dw::Image rgba = dw::convert_channels(img, 4);
    for (size_t i = 0; i < n; ++i)
      rgba.pixels[4 * i + 3] = static_cast<uint8_t>(std::lround(a.alpha[i] + (b.alpha[i] - a.alpha[i]) * t));
    img = std::move(rgba);
  }
  std::string why;
  GstBuffer *out = dw_buffer_from_image_full(img, info, &why);
  if (!out) GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Failed to make an in-between: %s", why.c_str()), (nullptr));
  return out;
}

/* Timing of one pair, for the stats and the element message. */
struct PairTiming {
  double setup_ms = 0, frames_ms = 0;
  guint pushed = 0;
  bool failed = false;  // a tolerated failure (max-errors): the pair was skipped
};

/* Makes and pushes the planned in-betweens of (a, b) batch by batch, each batch as soon as it is
 * made. Checks for a flush between batches. */
static GstFlowReturn push_inbetweens(GstVaeInterp *self, const Settings &s, const dw::interp::PairPlan &plan,
                                     const Held &a, const Held &b, PairTiming *timing) {
  GstVaeInterpPrivate *priv = self->priv;
  const size_t n = plan.count();
  const size_t batch = std::max(1u, s.batch_size);
  GstFlowReturn ret = GST_FLOW_OK;
  for (size_t first = 0; first < n && ret == GST_FLOW_OK; first += batch) {
    if (is_flushing(self)) return GST_FLOW_FLUSHING;
    const std::vector<double> chunk(plan.ts.begin() + first, plan.ts.begin() + std::min(n, first + batch));
    std::vector<dw::Image> images;
    const gint64 t0 = g_get_monotonic_time();
    try {
      images = priv->interp->frames(chunk);
      if (images.size() != chunk.size())
        throw dw::interp::Error("backend returned " + std::to_string(images.size()) + " images for " +
                                std::to_string(chunk.size()) + " positions");
    } catch (const std::exception &e) {
      timing->failed = true;
      return interp_failure(self, s, "making in-betweens", e.what());
    }
    timing->frames_ms += ms_since(t0);
    for (size_t k = 0; k < images.size() && ret == GST_FLOW_OK; ++k) {
      const size_t i = first + k;
      GstBuffer *out = inbetween_buffer(self, std::move(images[k]), a, b, plan.ts[i]);
      if (!out) return fatal(self, GST_FLOW_ERROR);
      GST_BUFFER_PTS(out) = to_clock_time(plan.pts[i]);
      GST_BUFFER_DURATION(out) = to_clock_time(plan.durations[i]);
      dw_buffer_add_frame_meta(out, DW_FRAME_KIND_INBETWEEN, a.index, plan.ts[i]);
      GST_CAT_LOG_OBJECT(vaeinterp_dataflow_debug, self, "in-between %zu/%zu t=%.3f pts %" GST_TIME_FORMAT, i + 1, n,
                         plan.ts[i], GST_TIME_ARGS(GST_BUFFER_PTS(out)));
      ret = gst_pad_push(self->srcpad, out);
      if (ret == GST_FLOW_OK) timing->pushed++;
    }
  }
  return ret;
}

/* Stats and the dreamwindow-interp message for a completed pair. Called without locks. */
static void finish_pair(GstVaeInterp *self, const Settings &s, const dw::interp::PairPlan &plan, const Held &a,
                        guint64 b_index, const PairTiming &tm, double lock_wait_ms) {
  GstVaeInterpPrivate *priv = self->priv;
  const guint n = static_cast<guint>(plan.count());
  const double fps = tm.frames_ms > 0 ? n / (tm.frames_ms / 1000.0) : 0.0;
  g_mutex_lock(&priv->lock);
  Stats &st = priv->stats;
  st.inbetweens_out += tm.pushed;
  st.pairs++;
  st.decode_pairs++;
  st.decode_ms_last = tm.frames_ms;
  st.decode_ms_total += tm.frames_ms;
  st.interp_fps_last = fps;
  st.frames_last = n;
#ifdef DW_INTERP_HAVE_VFI
  if (priv->vfi) {
    const dw::interp::VfiStats vs = priv->vfi->stats();
    st.vfi_model_calls = vs.model_calls;
    st.vfi_peak_live = vs.peak_live_intermediates;
  }
#endif
  if (priv->latent_pair) {
    const dw::interp::LatentPairStats ls = priv->latent_pair->stats();
    st.motion_pairs = ls.aligned_pairs;
    st.morph_pairs = ls.morph_pairs;
  }
  const guint depth = priv->pending;
  const std::string backend = priv->backend_description;
  g_mutex_unlock(&priv->lock);
  if (!s.post_messages) return;
  GstClockTime running_time = GST_CLOCK_TIME_NONE;
  if (priv->segment.format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID(a.pts))
    running_time = gst_segment_to_running_time(&priv->segment, GST_FORMAT_TIME, a.pts);
  GstStructure *m = gst_structure_new(
      DW_MSG_INTERP_NAME, DW_MSG_INTERP_KEYFRAME_INDEX, G_TYPE_UINT64, a.index, DW_MSG_INTERP_NEXT_KEYFRAME_INDEX,
      G_TYPE_UINT64, b_index, DW_MSG_INTERP_INBETWEENS, G_TYPE_UINT, n, DW_MSG_INTERP_INTERVAL, G_TYPE_UINT64,
      static_cast<guint64>(to_clock_time(plan.interval)), DW_MSG_INTERP_RUNNING_TIME, G_TYPE_UINT64,
      static_cast<guint64>(running_time), DW_MSG_INTERP_ENCODE_MS, G_TYPE_DOUBLE, tm.setup_ms, DW_MSG_INTERP_DECODE_MS,
      G_TYPE_DOUBLE, tm.frames_ms, DW_MSG_INTERP_INTERP_FPS, G_TYPE_DOUBLE, fps, DW_MSG_INTERP_LOCK_WAIT_MS,
      G_TYPE_DOUBLE, lock_wait_ms, DW_MSG_INTERP_QUEUE_DEPTH, G_TYPE_UINT, depth, DW_MSG_INTERP_BACKEND, G_TYPE_STRING,
      backend.c_str(), DW_MSG_INTERP_KIND, G_TYPE_STRING, dw::interp::pair_kind_name(plan.kind), nullptr);
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), m));
}

/* Hands pair (a, b) to the interpolator (flow computed / keyframes encoded). */
static GstFlowReturn setup_pair(GstVaeInterp *self, const Settings &s, const Held &a, const Held &b, PairTiming *tm) {
  GstVaeInterpPrivate *priv = self->priv;
  if (priv->latent_pair) {
    priv->latent_pair->set_residual_carry(s.residual_carry);
    priv->latent_pair->set_motion_compensated_latents(s.motion_compensation);
  }
  const gint64 t0 = g_get_monotonic_time();
  try {
    priv->interp->set_pair(a.rgb, b.rgb);
  } catch (const std::exception &e) {
    tm->failed = true;
    return interp_failure(self, s, "setting up a keyframe pair", e.what());
  }
  const double ms = tm->setup_ms = ms_since(t0);
  /* Backends reuse the previous pair's b as this pair's a: one keyframe set up per pair, two after
   * a restart. */
  const bool chained = priv->last_b_index && *priv->last_b_index == a.index;
  priv->last_b_index = b.index;
  g_mutex_lock(&priv->lock);
  priv->stats.keyframes_encoded += chained ? 1 : 2;
  priv->stats.encode_ms_last = ms;
  priv->stats.encode_ms_total += ms;
  g_mutex_unlock(&priv->lock);
  return GST_FLOW_OK;
}

/* One keyframe B: plan the pair (A, B) (lib/interp/plan.h), push A with its duration, make and push
 * the in-betweens; B becomes the held keyframe. A keyframe held keeps its buffer in priv->held only. */
static GstFlowReturn handle_keyframe(GstVaeInterp *self, GstBuffer *buffer) {
  GstVaeInterpPrivate *priv = self->priv;
  const Settings s = settings_snapshot(self);
  if (!priv->have_info) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Keyframe before caps"), (nullptr));
    return fatal(self, GST_FLOW_NOT_NEGOTIATED);
  }
  if (priv->out_fps_n != (s.target_fps_n > 0 ? s.target_fps_n : 0) ||
      (s.target_fps_n > 0 && priv->out_fps_d != s.target_fps_d)) {
    if (!push_out_caps(self, s)) {
      gst_buffer_unref(buffer);
      return GST_FLOW_NOT_NEGOTIATED;
    }
  }
  std::optional<Held> b = read_keyframe(self, buffer);
  if (!b) return fatal(self, GST_FLOW_ERROR);

  dw::interp::PairInput in;
  in.have_a = priv->held.has_value();
  in.a_usable = in.have_a && priv->held->rgb.width == b->rgb.width && priv->held->rgb.height == b->rgb.height;
  in.a_pts = in.have_a ? to_plan_time(priv->held->pts) : dw::interp::kNoTime;
  in.a_duration = in.have_a ? to_plan_time(GST_BUFFER_DURATION(priv->held->buffer)) : dw::interp::kNoTime;
  in.b_pts = to_plan_time(b->pts);
  in.b_discont = b->discont;
  priv->planner.set_settings(s.plan());
  const dw::interp::PairPlan plan = priv->planner.plan(in);
  note_period(self);
  if (plan.kind == dw::interp::PairKind::First) {
    priv->held = std::move(b);
    return GST_FLOW_OK;
  }
  if (plan.kind == dw::interp::PairKind::Restart || plan.kind == dw::interp::PairKind::Transition) {
    GST_INFO_OBJECT(self, "pair %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT ": %s (%s), %zu in-betweens",
                    priv->held->index, b->index, dw::interp::pair_kind_name(plan.kind), plan.reason.c_str(),
                    plan.count());
    g_mutex_lock(&priv->lock);
    (plan.kind == dw::interp::PairKind::Restart ? priv->stats.pairs_restarted : priv->stats.transitions)++;
    g_mutex_unlock(&priv->lock);
  }

  /* A leaves before any work on the pair: nothing that follows can change it. */
  Held a;  // A's facts and pixels; its buffer is downstream
  GstFlowReturn ret = push_held(self, to_clock_time(plan.a_duration), &a);
  priv->held = std::move(b);
  if (ret != GST_FLOW_OK || plan.count() == 0) return ret;

  /* After an outage the previous pair's cached work is stale (source's contract: DISCONT). */
  if (plan.kind == dw::interp::PairKind::Transition && priv->held->discont) {
    priv->interp->reset();
    priv->last_b_index.reset();
  }
  PairTiming tm;
  const auto lock_before = priv->codec ? priv->codec->lock_stats() : dw::latent::SharedCodec::LockStats();
  ret = setup_pair(self, s, a, *priv->held, &tm);
  if (ret != GST_FLOW_OK || tm.failed) return ret;
  ret = push_inbetweens(self, s, plan, a, *priv->held, &tm);
  if (ret != GST_FLOW_OK || tm.failed) return ret;
  const double lock_wait_ms =
      priv->codec ? (priv->codec->lock_stats().total_wait_us - lock_before.total_wait_us) / 1000.0 : 0.0;
  finish_pair(self, s, plan, a, priv->held->index, tm, lock_wait_ms);
  return GST_FLOW_OK;
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
      if (!gst_video_info_from_caps(&info, caps) || !dw_frame_format_supported(GST_VIDEO_INFO_FORMAT(&info))) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Invalid caps %" GST_PTR_FORMAT, caps), (nullptr));
        gst_event_unref(event);
        return fatal(self, GST_FLOW_NOT_NEGOTIATED);
      }
      if (priv->have_info && !gst_video_info_is_equal(&info, &priv->in_info)) {
        /* Another size or format: A leaves alone under its own caps, the next keyframe starts afresh. */
        if (priv->held) {
          g_mutex_lock(&priv->lock);
          priv->stats.pairs_restarted++;
          g_mutex_unlock(&priv->lock);
        }
        ret = flush_held(self);
        reset_pair(priv);
      }
      priv->in_info = info;
      priv->have_info = true;
      gst_event_unref(event);
      if (ret != GST_FLOW_OK) return ret;
      if (!push_out_caps(self, settings_snapshot(self))) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Downstream refused the caps"), (nullptr));
        return fatal(self, GST_FLOW_NOT_NEGOTIATED);
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
  while (priv->queue.empty() && priv->srcresult != GST_FLOW_FLUSHING) g_cond_wait(&priv->item_add, &priv->lock);
  if (priv->srcresult == GST_FLOW_FLUSHING) {
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
    g_mutex_unlock(&priv->lock);

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
      /* Nothing should get here (backend calls catch their own); never let it escape into C. */
      GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Unexpected failure: %s", e.what()), (nullptr));
      ret = fatal(self, GST_FLOW_ERROR);
    }
  }
  if (ret == GST_FLOW_OK) return;

  g_mutex_lock(&priv->lock);
  if (priv->srcresult != GST_FLOW_FLUSHING) priv->srcresult = ret;
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
  if (priv->pending >= priv->max_pending && priv->srcresult == GST_FLOW_OK && !priv->eos) {
    const gint64 start = g_get_monotonic_time();
    while (priv->pending >= priv->max_pending && priv->srcresult == GST_FLOW_OK)
      g_cond_wait(&priv->item_del, &priv->lock);
    priv->stats.backpressure_us += g_get_monotonic_time() - start;
  }
  if (priv->srcresult != GST_FLOW_OK) {
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
      priv->eos = false;
      priv->srcresult = GST_FLOW_OK;
      priv->error_posted = false;
      /* The task is paused (FLUSH_START): the worker's pair state can be dropped here, like gstqueue. */
      reset_pair(priv);
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
  if (priv->srcresult == GST_FLOW_FLUSHING) {
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
  if (priv->srcresult != GST_FLOW_OK || priv->last_query) {
    g_mutex_unlock(&priv->lock);
    return FALSE;
  }
  priv->last_query = query;
  priv->last_query_result = false;
  priv->queue.push_back(GST_MINI_OBJECT_CAST(query));
  g_cond_signal(&priv->item_add);
  while (priv->last_query == query &&
         (priv->query_taken || (priv->srcresult == GST_FLOW_OK)))
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
    priv->eos = false;
    priv->srcresult = GST_FLOW_OK;
    priv->error_posted = false;
    gboolean ok = gst_pad_start_task(pad, (GstTaskFunction)gst_vae_interp_loop, pad, nullptr);
    g_mutex_unlock(&priv->lock);
    return ok;
  }
  g_mutex_lock(&priv->lock);
  priv->srcresult = GST_FLOW_FLUSHING;
  g_cond_broadcast(&priv->item_add);
  g_cond_broadcast(&priv->item_del);
  g_cond_broadcast(&priv->query_done);
  g_mutex_unlock(&priv->lock);
  /* Joins the worker; it checks the flushing flag between decode batches. */
  gboolean ok = gst_pad_stop_task(pad);
  /* Worker state, now that the worker is gone. */
  reset_pair(priv);
  priv->have_info = false;
  gst_caps_replace(&priv->out_caps, nullptr);
  priv->out_fps_n = 0;
  priv->out_fps_d = 1;
  gst_segment_init(&priv->segment, GST_FORMAT_UNDEFINED);
  priv->keyframe_counter = 0;
  priv->planner.reset();
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

/* The element's settings as lib/interp/backend.h sees them. */
static dw::interp::BackendSettings backend_settings(const Settings &s) {
  dw::interp::BackendSettings b;
  static const dw::interp::BackendKind kinds[] = {dw::interp::BackendKind::Auto, dw::interp::BackendKind::Taesd,
                                                  dw::interp::BackendKind::TorchScript, dw::interp::BackendKind::Blend,
                                                  dw::interp::BackendKind::Flow, dw::interp::BackendKind::Vfi};
  b.kind = kinds[std::clamp<int>(s.backend, 0, 5)];
  b.encoder = s.encoder;
  b.decoder = s.decoder;
  b.model_dir = s.model_dir;
  b.vfi_model = s.vfi_model;
  b.device = s.device;
  b.precision = s.precision == GST_VAE_INTERP_PRECISION_FP32   ? dw::latent::Precision::Fp32
                : s.precision == GST_VAE_INTERP_PRECISION_FP16 ? dw::latent::Precision::Fp16
                : s.precision == GST_VAE_INTERP_PRECISION_BF16 ? dw::latent::Precision::Bf16
                                                               : dw::latent::Precision::Auto;
  b.threads = static_cast<int>(std::min<guint>(s.threads, 1024));
  b.batch_size = static_cast<int>(std::clamp(s.batch_size, 1u, 64u));
  b.residual_carry = s.residual_carry;
  b.motion_compensation = s.motion_compensation;
  b.max_gpu_memory_mb = s.max_gpu_memory;
  b.release_interval = static_cast<int>(std::min<guint>(s.release_interval, G_MAXINT));
  b.flow_preset = s.flow_preset == GST_VAE_INTERP_FLOW_PRESET_ULTRAFAST ? dw::interp::FlowPreset::Ultrafast
                  : s.flow_preset == GST_VAE_INTERP_FLOW_PRESET_MEDIUM  ? dw::interp::FlowPreset::Medium
                                                                        : dw::interp::FlowPreset::Fast;
  return b;
}

/* Validates the settings and creates the backend (lib/interp/backend.h; a latent model is loaded
 * or shared). Posts the error naming the problem. */
static bool gst_vae_interp_start(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  const Settings s = settings_snapshot(self);
  if (s.frames == FRAMES_AUTO && s.target_fps() <= 0) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("frames=-1 (auto) needs target-fps"),
                      ("set target-fps (e.g. 24/1) or a fixed number of frames"));
    return false;
  }
  const dw::interp::BackendSettings bs = backend_settings(s);
  const dw::interp::BackendKind kind = dw::interp::resolve_backend(bs);
  if (auto problem = dw::interp::check_backend_settings(bs, kind)) {
    if (problem->kind == dw::interp::SettingsProblem::Kind::NotFound)
      GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("%s", problem->message.c_str()), (nullptr));
    else
      GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("%s", problem->message.c_str()), (nullptr));
    return false;
  }
  dw::interp::Backend backend;
  try {
    backend = dw::interp::create_backend(bs, kind);
  } catch (const std::exception &e) {
    if ((dw::interp::backend_needs_torch(kind) && !dw::latent::torch_available()) || kind == dw::interp::BackendKind::Flow)
      GST_ELEMENT_ERROR(self, LIBRARY, INIT,
                        ("Cannot create the %s backend: %s", dw::interp::backend_kind_name(kind), e.what()), (nullptr));
    else
      GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Cannot load the model: %s", e.what()),
                        ("encoder '%s', decoder '%s', model-dir '%s', vfi-model '%s', device %s", s.encoder.c_str(),
                         s.decoder.c_str(), s.model_dir.c_str(), s.vfi_model.c_str(), s.device.c_str()));
    return false;
  }
  const std::string description = backend.interp->describe();
  GST_INFO_OBJECT(self, "backend %s: %s", dw::interp::backend_kind_name(kind), description.c_str());
  priv->interp = std::move(backend.interp);
  priv->latent_pair = backend.latent;
#ifdef DW_INTERP_HAVE_VFI
  priv->vfi = backend.vfi;
#endif
  g_mutex_lock(&priv->lock);
  priv->codec = std::move(backend.codec);
  priv->backend_description = description;
  priv->stats = Stats();
  priv->reported_latency = 0;
  priv->max_pending = s.max_pending;
  g_mutex_unlock(&priv->lock);
  return true;
}

/* After the worker is stopped: frees the interpolator (and the model if nobody else holds it). */
static void gst_vae_interp_stop(GstVaeInterp *self) {
  GstVaeInterpPrivate *priv = self->priv;
  priv->latent_pair = nullptr;
#ifdef DW_INTERP_HAVE_VFI
  priv->vfi = nullptr;
#endif
  priv->interp.reset();
  g_mutex_lock(&priv->lock);
  std::shared_ptr<dw::latent::SharedCodec> codec = std::move(priv->codec);
  priv->codec.reset();
  g_mutex_unlock(&priv->lock);
  codec.reset();  // outside our lock
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
    case PROP_RESIDUAL_CARRY: s.residual_carry = g_value_get_boolean(value); break;
    case PROP_MOTION_COMPENSATION: s.motion_compensation = g_value_get_boolean(value); break;
    case PROP_FLOW_PRESET: s.flow_preset = static_cast<GstVaeInterpFlowPreset>(g_value_get_enum(value)); break;
    case PROP_VFI_MODEL: s.vfi_model = str(value); break;
    case PROP_MAX_GAP_TRANSITION: s.max_gap_transition = g_value_get_uint64(value); break;
    case PROP_MAX_GPU_MEMORY: s.max_gpu_memory = g_value_get_int(value); break;
    case PROP_RELEASE_INTERVAL: s.release_interval = g_value_get_uint(value); break;
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
    case PROP_RESIDUAL_CARRY: g_value_set_boolean(value, s.residual_carry); break;
    case PROP_MOTION_COMPENSATION: g_value_set_boolean(value, s.motion_compensation); break;
    case PROP_FLOW_PRESET: g_value_set_enum(value, s.flow_preset); break;
    case PROP_VFI_MODEL: g_value_set_string(value, opt(s.vfi_model)); break;
    case PROP_MAX_GAP_TRANSITION: g_value_set_uint64(value, s.max_gap_transition); break;
    case PROP_MAX_GPU_MEMORY: g_value_set_int(value, s.max_gpu_memory); break;
    case PROP_RELEASE_INTERVAL: g_value_set_uint(value, s.release_interval); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_vae_interp_finalize(GObject *object) {
  auto *self = GST_VAE_INTERP(object);
  GstVaeInterpPrivate *priv = self->priv;
  reset_pair(priv);
  priv->interp.reset();
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

/* Model files and where the model runs: fixed from READY->PAUSED on. */
static void install_model_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);

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
   * GstVaeInterp:max-gpu-memory:
   * Latent backends on CUDA: cap on what this process may allocate on the device.
   */
  g_object_class_install_property(gobject_class, PROP_MAX_GPU_MEMORY,
      g_param_spec_int("max-gpu-memory", "Max GPU memory (MiB)",
                       "Latent backends on CUDA: cap on device memory this process may allocate, and the cached "
                       "memory is trimmed when a decode leaves more reserved (0 = no cap; ignored on CPU)",
                       0, G_MAXINT, DEFAULT_MAX_GPU_MEMORY, rw_ready));
  /**
   * GstVaeInterp:release-interval:
   * Latent backends on CUDA: decoded frames between cache trims.
   */
  g_object_class_install_property(gobject_class, PROP_RELEASE_INTERVAL,
      g_param_spec_uint("release-interval", "Release interval (frames)",
                        "Latent backends on CUDA: decoded frames between CUDA cache trims (0 = only when over "
                        "max-gpu-memory; ignored on CPU)",
                        0, G_MAXINT, DEFAULT_RELEASE_INTERVAL, rw_ready));
}

/* Which backend and its options. */
static void install_backend_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);

  /**
   * GstVaeInterp:backend:
   * How in-betweens are made. auto: taesd (.safetensors) or torchscript (.pt) when model files are set,
   * else flow in builds with OpenCV, else blend. flow and vfi are listed only in builds that have them.
   */
  g_object_class_install_property(gobject_class, PROP_BACKEND,
      g_param_spec_enum("backend", "Backend",
                        "How in-betweens are made (auto = taesd/torchscript when model files are set, else flow "
                        "when built with OpenCV, else blend; see docs/elements/vaeinterp.md, choosing a backend)",
                        GST_TYPE_VAE_INTERP_BACKEND, DEFAULT_BACKEND, rw_ready));
  /**
   * GstVaeInterp:threads:
   * Intra-op threads of the model.
   */
  g_object_class_install_property(gobject_class, PROP_THREADS,
      g_param_spec_uint("threads", "Threads", "Intra-op threads for the model, OpenCV threads for flow (0 = number of cores; flow: 2)", 0, 1024,
                        DEFAULT_THREADS, rw_ready));
  /**
   * GstVaeInterp:flow-preset:
   * Speed/quality of the optical flow (backend=flow).
   */
  g_object_class_install_property(gobject_class, PROP_FLOW_PRESET,
      g_param_spec_enum("flow-preset", "Flow preset",
                        "backend=flow: DIS optical-flow preset (ultrafast = half-size flow for big frames on slow "
                        "CPUs, fast, medium = best quality); OpenCV threads = threads (0 = 2)",
                        GST_TYPE_VAE_INTERP_FLOW_PRESET, DEFAULT_FLOW_PRESET, rw_ready));
  /**
   * GstVaeInterp:vfi-model:
   * backend=vfi: a frame-interpolation TorchScript model (RIFE/FILM export).
   */
  g_object_class_install_property(gobject_class, PROP_VFI_MODEL,
      g_param_spec_string("vfi-model", "VFI model file",
                          "backend=vfi: TorchScript frame-interpolation model, forward(img0, img1, t) or midpoint-only "
                          "forward(img0, img1) on [0,1] NCHW RGB (RIFE/FILM exports); NULL = none",
                          DEFAULT_VFI_MODEL, rw_ready));
  /**
   * GstVaeInterp:residual-carry:
   * Latent backends: add the keyframes' VAE residuals back, weighted (1 - t, t), so in-betweens are as
   * sharp as the keyframes around them (no pulse at each keyframe). Keyframes are bit-exact either way.
   */
  g_object_class_install_property(gobject_class, PROP_RESIDUAL_CARRY,
      g_param_spec_boolean("residual-carry", "Residual carry",
                           "Latent backends (taesd, torchscript): add (1-t)(A - D(zA)) + t(B - D(zB)) to each "
                           "decoded in-between so it matches the keyframes' sharpness (one extra decode per "
                           "keyframe); ignored by flow and vfi",
                           DEFAULT_RESIDUAL_CARRY, rw_playing));
  /**
   * GstVaeInterp:motion-compensation:
   * Latent backends in OpenCV builds: make the latent morph in each keyframe's geometry and move it
   * along the pair's optical flow, so in-betweens of camera motion move instead of crossfading two
   * poses (no pop on zoom/rotate). Pairs whose flow does not explain the change stay a plain morph.
   */
  g_object_class_install_property(gobject_class, PROP_MOTION_COMPENSATION,
      g_param_spec_boolean("motion-compensation", "Motion compensation",
                           "Latent backends (taesd, torchscript), OpenCV builds: morph each keyframe towards the "
                           "other aligned along the pair's optical flow, then warp the morphs to t (two extra "
                           "encodes per pair, two decodes per in-between); pairs the flow does not explain stay "
                           "a plain latent morph; takes effect at the next pair; ignored by flow, vfi and blend",
                           DEFAULT_MOTION_COMPENSATION, rw_playing));
}


/* How the stream is interpolated: changeable while playing (read per keyframe). */
static void install_stream_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);

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
   * In-betweens made per backend call.
   */
  g_object_class_install_property(gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint("batch-size", "Batch size (frames)",
                        "In-betweens made per backend call; each batch is pushed as soon as it is made", 1, 64,
                        DEFAULT_BATCH_SIZE, rw_playing));
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
   * Backend failures tolerated (as warnings, the pair skipped) before an error.
   */
  g_object_class_install_property(gobject_class, PROP_MAX_ERRORS,
      g_param_spec_int("max-errors", "Max errors",
                       "Backend failures tolerated as warnings (the pair is skipped) before an error; 0 = the first "
                       "is fatal, -1 = never fatal",
                       -1, G_MAXINT, DEFAULT_MAX_ERRORS, rw_playing));
  /**
   * GstVaeInterp:max-gap-transition:
   * After a discontinuity (DISCONT keyframe, or a gap much longer than the keyframe period), the
   * in-betweens fill only this much time before the new keyframe.
   */
  g_object_class_install_property(gobject_class, PROP_MAX_GAP_TRANSITION,
      g_param_spec_uint64("max-gap-transition", "Max gap transition (ns)",
                          "After a discontinuity (a keyframe flagged DISCONT, or an interval over 4x the recent "
                          "keyframe period and over 2 s) the previous keyframe is held and only this long a "
                          "transition is interpolated before the new one; 0 = cut",
                          0, 60 * GST_SECOND, DEFAULT_MAX_GAP_TRANSITION, rw_playing));
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
                         "frames-out, pairs, pairs-restarted, transitions, errors, encode-ms-last/-mean (pair set-up), "
                         "decode-ms-last/-mean (in-betweens per pair), interp-fps-last/-mean, frames-last, keyframe-period (ns), queue-depth, "
                         "max-pending, backpressure-ms, lock-acquisitions, lock-wait-ms-total/-max, vfi-model-calls, "
                         "vfi-peak-live-intermediates, backend",
                         GST_TYPE_STRUCTURE, static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

}

static void gst_vae_interp_class_init(GstVaeInterpClass *klass) {
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);

  gobject_class->set_property = gst_vae_interp_set_property;
  gobject_class->get_property = gst_vae_interp_get_property;
  gobject_class->finalize = gst_vae_interp_finalize;
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_vae_interp_change_state);

  install_model_properties(gobject_class);
  install_backend_properties(gobject_class);
  install_stream_properties(gobject_class);

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "Keyframe interpolator", "Filter/Effect/Video",
      "Fills the gaps between keyframes with in-betweens from optical flow, a frame-interpolation model, slerped "
      "VAE latents (TAESD, TorchScript) or a crossfade, on its own thread so interpolation overlaps with keyframe "
      "generation",
      "gst-dreamwindow developers");

  gst_type_mark_as_plugin_api(GST_TYPE_VAE_INTERP_BACKEND, static_cast<GstPluginAPIFlags>(0));
  gst_type_mark_as_plugin_api(GST_TYPE_VAE_INTERP_PRECISION, static_cast<GstPluginAPIFlags>(0));
  gst_type_mark_as_plugin_api(GST_TYPE_VAE_INTERP_FLOW_PRESET, static_cast<GstPluginAPIFlags>(0));
}

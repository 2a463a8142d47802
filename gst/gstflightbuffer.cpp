/* flightbuffer
 *
 * The display end of the pipeline: a queue measured in time and buffers, shaped like queue2, whose
 * src pad task paces frames onto a steady output grid against the pipeline clock.
 *
 * What lives where: every decision that needs no GStreamer is dw::pacing::Playout
 * (lib/pacing/playout.h): when output starts (pre-buffer, timeout, full, EOS), which queued frame
 * each tick shows and how many it uses up, underrun hold/pause, overrun dropping, late ticks, the
 * adaptive playback rate (RateController), the output framerate and grid, discontinuities after an
 * outage, and the input / output / distinct-frame rates. This file is glue: pads, caps, events,
 * the clock waits, the buffers and events queued beside the Playout's frames (same order), stats
 * and messages.
 *
 *  - chain() only enqueues and signals. It never blocks while pre-buffering or below the limits;
 *    above max-size-time / max-size-buffers it blocks (backpressure) or drops in-betweens first
 *    (overrun-policy=drop-inbetween).
 *  - The src task pre-buffers (never waiting on the application), then waits for each output tick
 *    with a single-shot clock id at running_time + base_time + latency and pushes what the plan
 *    says.
 *
 * Threads: the upstream streaming thread runs chain() and serialized events; the src pad task runs
 * the loop; the application thread changes state and reads `stats`. Locking: priv->lock guards the
 * Playout, the queue and all streaming state; task_cond wakes the src task, chain_cond wakes a
 * blocked chain(). Property values live under GST_OBJECT_LOCK and are copied (settings_snapshot)
 * before priv->lock is taken; priv->lock is never taken inside the object lock. Every function
 * states its lock rule; the one that takes the lock releases it. Messages, warnings and errors are
 * built under priv->lock (Pending) and posted after releasing it. C++ exceptions stop at the pad
 * functions and the task (element error).
 *
 * Example:
 *   gst-launch-1.0 videotestsrc is-live=true ! video/x-raw,framerate=10/1 ! flightbuffer output-fps=25/1 ! autovideosink
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstflightbuffer.h"

#include <gst/video/video.h>

#include <algorithm>
#include <deque>
#include <exception>
#include <string>
#include <vector>

#include "dwmeta.h"
#include "dwstats.h"
#include "gstdreamwindowelements.h"
#include "pacing/playout.h"

GST_DEBUG_CATEGORY_STATIC(flightbuffer_debug);
#define GST_CAT_DEFAULT flightbuffer_debug

#define DEFAULT_MAX_SIZE_TIME (15 * GST_SECOND)
#define DEFAULT_MAX_SIZE_BUFFERS 0
#define DEFAULT_PREBUFFER_TIME (3 * GST_SECOND)
#define DEFAULT_PREBUFFER_TIMEOUT (5 * GST_SECOND)
#define DEFAULT_REBUFFER_TIME (1 * GST_SECOND)
#define DEFAULT_OUTPUT_FPS_N 25
#define DEFAULT_OUTPUT_FPS_D 1
#define DEFAULT_ADAPTIVE TRUE
#define DEFAULT_TARGET_FILL (4 * GST_SECOND)
#define DEFAULT_MIN_RATE 0.5
#define DEFAULT_MAX_RATE 1.5
#define DEFAULT_MAX_RATE_CHANGE 0.05
#define DEFAULT_UNDERRUN_POLICY GST_FLIGHT_BUFFER_UNDERRUN_HOLD
#define DEFAULT_OVERRUN_POLICY GST_FLIGHT_BUFFER_OVERRUN_BLOCK
#define DEFAULT_BATCH_SIZE 1
#define DEFAULT_STATS_INTERVAL (1 * GST_SECOND)
#define DEFAULT_POST_MESSAGES TRUE
/* Fill-error correction time of the controller (see docs/elements). */
#define CORRECTION_TIME_S 8.0

enum {
  PROP_0,
  PROP_MAX_SIZE_TIME,
  PROP_MAX_SIZE_BUFFERS,
  PROP_PREBUFFER_TIME,
  PROP_PREBUFFER_TIMEOUT,
  PROP_REBUFFER_TIME,
  PROP_OUTPUT_FPS,
  PROP_ADAPTIVE,
  PROP_TARGET_FILL,
  PROP_MIN_RATE,
  PROP_MAX_RATE,
  PROP_MAX_RATE_CHANGE,
  PROP_UNDERRUN_POLICY,
  PROP_OVERRUN_POLICY,
  PROP_BATCH_SIZE,
  PROP_STATS_INTERVAL,
  PROP_POST_MESSAGES,
  PROP_STATS,
};

GType gst_flight_buffer_underrun_policy_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_FLIGHT_BUFFER_UNDERRUN_HOLD, "Repeat the last frame at the output rate (counted)", "hold"},
      {GST_FLIGHT_BUFFER_UNDERRUN_PAUSE, "Stop output until rebuffer-time of content is queued again", "pause"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstFlightBufferUnderrunPolicy", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

GType gst_flight_buffer_overrun_policy_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_FLIGHT_BUFFER_OVERRUN_BLOCK, "Block upstream until there is room (backpressure)", "block"},
      {GST_FLIGHT_BUFFER_OVERRUN_DROP_INBETWEEN,
       "Drop the oldest in-between frame; keyframes (and frames without DwFrameMeta) only when no "
       "in-between is left",
       "drop-inbetween"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstFlightBufferOverrunPolicy", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

namespace {

struct Settings {
  guint64 max_size_time = DEFAULT_MAX_SIZE_TIME;
  guint max_size_buffers = DEFAULT_MAX_SIZE_BUFFERS;
  guint64 prebuffer_time = DEFAULT_PREBUFFER_TIME;
  guint64 prebuffer_timeout = DEFAULT_PREBUFFER_TIMEOUT;
  guint64 rebuffer_time = DEFAULT_REBUFFER_TIME;
  gint fps_n = DEFAULT_OUTPUT_FPS_N;
  gint fps_d = DEFAULT_OUTPUT_FPS_D;
  gboolean adaptive = DEFAULT_ADAPTIVE;
  guint64 target_fill = DEFAULT_TARGET_FILL;
  gdouble min_rate = DEFAULT_MIN_RATE;
  gdouble max_rate = DEFAULT_MAX_RATE;
  gdouble max_rate_change = DEFAULT_MAX_RATE_CHANGE;
  GstFlightBufferUnderrunPolicy underrun_policy = DEFAULT_UNDERRUN_POLICY;
  GstFlightBufferOverrunPolicy overrun_policy = DEFAULT_OVERRUN_POLICY;
  guint batch_size = DEFAULT_BATCH_SIZE;
  guint64 stats_interval = DEFAULT_STATS_INTERVAL;
  gboolean post_messages = DEFAULT_POST_MESSAGES;
};

/* One queued buffer, at the same index as its dw::pacing::QueuedFrame in the Playout. */
struct Slot {
  GstBuffer *buffer = nullptr;
  std::vector<GstEvent *> before;  // serialized events that came before this frame
};

/* What one task iteration hands downstream, in order. */
struct Item {
  GstEvent *event = nullptr;
  GstBuffer *buffer = nullptr;
};

struct Pending {
  std::vector<GstMessage *> messages;
  std::string warning;  // non-empty: post GST_ELEMENT_WARNING
};

/* A batch planned under the lock, pushed after releasing it. */
struct Batch {
  std::vector<Item> items;
  bool eos = false;
};

/* Takes priv->lock for a scope; wait_until() may drop and retake it inside. */
class Locked {
 public:
  explicit Locked(GMutex *m) : m_(m) { g_mutex_lock(m_); }
  ~Locked() { g_mutex_unlock(m_); }
  Locked(const Locked &) = delete;
  Locked &operator=(const Locked &) = delete;

 private:
  GMutex *m_;
};

}  // namespace

struct GstFlightBufferPrivate {
  /* Property values; GST_OBJECT_LOCK. */
  Settings settings;

  /* Streaming state; lock. */
  GMutex lock;
  GCond task_cond;
  GCond chain_cond;
  GstFlowReturn srcresult = GST_FLOW_FLUSHING;
  bool playing = false;
  dw::pacing::Playout playout;
  std::deque<Slot> slots;               // parallel to the Playout's frames
  std::vector<GstEvent *> tail_events;  // serialized events after the last queued frame
  GstBuffer *last_frame = nullptr;
  GstClockID clock_id = nullptr;
  GstClockTime last_stats_rt = GST_CLOCK_TIME_NONE;
  bool segment_sent = false;
  bool discont = true;
  /* Used only when the element has no clock while PLAYING. */
  GstClock *fallback_clock = nullptr;
  GstClockTime fallback_base = GST_CLOCK_TIME_NONE;
};

struct _GstFlightBuffer {
  GstElement parent;
  GstPad *sinkpad;
  GstPad *srcpad;
  GstFlightBufferPrivate *priv;
};

#define gst_flight_buffer_parent_class parent_class
G_DEFINE_TYPE(GstFlightBuffer, gst_flight_buffer, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE(flightbuffer, "flightbuffer", GST_RANK_NONE, GST_TYPE_FLIGHT_BUFFER,
                                      GST_DEBUG_CATEGORY_INIT(flightbuffer_debug, "flightbuffer", 0,
                                                              "Pre-buffering, pacing, adaptive-rate queue"));

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS("video/x-raw(ANY)"));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS("video/x-raw(ANY)"));

/* ------------------------------------------------------------------------------------------------ */
/* Helpers (the ones taking `priv` expect priv->lock held)                                          */

static Settings settings_snapshot(GstFlightBuffer *self) {
  GST_OBJECT_LOCK(self);
  Settings s = self->priv->settings;
  GST_OBJECT_UNLOCK(self);
  return s;
}

/* The Playout's view of the properties (the one place they are mapped). */
static dw::pacing::PlayoutParams playout_params(const Settings &s) {
  dw::pacing::PlayoutParams p;
  p.prebuffer_ns = static_cast<int64_t>(s.prebuffer_time);
  p.prebuffer_timeout_ns = static_cast<int64_t>(s.prebuffer_timeout);
  p.rebuffer_ns = static_cast<int64_t>(s.rebuffer_time);
  p.max_size_ns = static_cast<int64_t>(std::min<guint64>(s.max_size_time, G_MAXINT64));
  p.max_size_frames = s.max_size_buffers;
  p.pause_on_underrun = s.underrun_policy == GST_FLIGHT_BUFFER_UNDERRUN_PAUSE;
  p.drop_inbetweens = s.overrun_policy == GST_FLIGHT_BUFFER_OVERRUN_DROP_INBETWEEN;
  p.adaptive = s.adaptive;
  p.controller.target_fill_s = static_cast<double>(s.target_fill) / GST_SECOND;
  p.controller.min_rate = s.min_rate;
  p.controller.max_rate = s.max_rate;
  p.controller.max_change_per_s = s.max_rate_change;
  p.controller.correction_time_s = CORRECTION_TIME_S;
  p.batch = std::max(1u, s.batch_size);
  return p;
}

/* A valid running time as the Playout's int64 (-1 = unknown). */
static int64_t ns(GstClockTime t) { return GST_CLOCK_TIME_IS_VALID(t) ? static_cast<int64_t>(t) : -1; }

/* Current running time on the element's clock, NONE without one. Any lock. */
static GstClockTime running_time_now(GstFlightBuffer *self) {
  GstClock *clock = gst_element_get_clock(GST_ELEMENT(self));
  if (!clock) return GST_CLOCK_TIME_NONE;
  GstClockTime now = gst_clock_get_time(clock);
  gst_object_unref(clock);
  GstClockTime base = gst_element_get_base_time(GST_ELEMENT(self));
  if (!GST_CLOCK_TIME_IS_VALID(now) || !GST_CLOCK_TIME_IS_VALID(base) || now < base) return GST_CLOCK_TIME_NONE;
  return now - base;
}

/* Same, falling back to the fallback clock (lock held). */
static GstClockTime running_time_now_locked(GstFlightBuffer *self) {
  GstFlightBufferPrivate *priv = self->priv;
  GstClockTime rt = running_time_now(self);
  if (GST_CLOCK_TIME_IS_VALID(rt) || !priv->fallback_clock) return rt;
  GstClockTime now = gst_clock_get_time(priv->fallback_clock);
  return now >= priv->fallback_base ? now - priv->fallback_base : 0;
}

/* The framerate of a caps structure, the one place it is read (false when absent or 0/1). */
static bool structure_framerate(const GstStructure *st, gint *n, gint *d) {
  const GValue *v = st ? gst_structure_get_value(st, "framerate") : nullptr;
  if (!v || !GST_VALUE_HOLDS_FRACTION(v)) return false;
  *n = gst_value_get_fraction_numerator(v);
  *d = gst_value_get_fraction_denominator(v);
  return *n > 0 && *d > 0;
}

static void wake_task(GstFlightBufferPrivate *priv) {
  if (priv->clock_id) gst_clock_id_unschedule(priv->clock_id);
  g_cond_broadcast(&priv->task_cond);
}

/* FLUSHING, and every wait woken to see it (takes and releases the lock). */
static void set_flushing(GstFlightBufferPrivate *priv) {
  Locked lock(&priv->lock);
  priv->srcresult = GST_FLOW_FLUSHING;
  wake_task(priv);
  g_cond_broadcast(&priv->chain_cond);
}

static void free_slot(Slot &slot) {
  for (GstEvent *e : slot.before) gst_event_unref(e);
  slot.before.clear();
  gst_clear_buffer(&slot.buffer);
}

/* Empties the queue and resets everything a flush or a stop resets (not the settings; lock held). */
static void reset_queue(GstFlightBuffer *self, bool reset_stats) {
  GstFlightBufferPrivate *priv = self->priv;
  for (Slot &slot : priv->slots) free_slot(slot);
  priv->slots.clear();
  for (GstEvent *e : priv->tail_events) gst_event_unref(e);
  priv->tail_events.clear();
  gst_clear_buffer(&priv->last_frame);
  priv->playout.reset(reset_stats);
  priv->last_stats_rt = GST_CLOCK_TIME_NONE;
  priv->segment_sent = false;
  priv->discont = true;
}

/* The stats structure (lock held). */
static GstStructure *build_stats(GstFlightBuffer *self, const char *name, const Settings &s, GstClockTime now) {
  const dw::pacing::Playout &pl = self->priv->playout;
  const int64_t t = GST_CLOCK_TIME_IS_VALID(now) ? ns(now) : 0;
  std::optional<double> in = pl.input_rate(t);
  const dw::pacing::PlayoutCounters &c = pl.counters();
  return gst_structure_new(
      name, DW_STATS_FLIGHTBUFFER_STATE, G_TYPE_STRING, dw::pacing::playout_state_name(pl.state()),
      DW_STATS_FLIGHTBUFFER_FILL_TIME, G_TYPE_UINT64, static_cast<guint64>(pl.fill()),
      DW_STATS_FLIGHTBUFFER_FILL_FRAMES, G_TYPE_UINT, static_cast<guint>(pl.size()),
      DW_STATS_FLIGHTBUFFER_PREBUFFER_TIME, G_TYPE_UINT64, s.prebuffer_time, DW_STATS_FLIGHTBUFFER_TARGET_FILL,
      G_TYPE_UINT64, s.target_fill, DW_STATS_FLIGHTBUFFER_MAX_SIZE_TIME, G_TYPE_UINT64, s.max_size_time,
      DW_STATS_FLIGHTBUFFER_INPUT_RATE, G_TYPE_DOUBLE, in ? *in : -1.0, DW_STATS_FLIGHTBUFFER_OUTPUT_RATE,
      G_TYPE_DOUBLE, pl.output_rate(t), DW_STATS_FLIGHTBUFFER_DISTINCT_RATE, G_TYPE_DOUBLE, pl.distinct_rate(t),
      DW_STATS_FLIGHTBUFFER_OUTPUT_FPS, G_TYPE_DOUBLE, static_cast<double>(pl.fps_n()) / pl.fps_d(),
      DW_STATS_FLIGHTBUFFER_PLAYBACK_RATE, G_TYPE_DOUBLE, pl.playback_rate(), DW_STATS_FLIGHTBUFFER_FRAMES_IN,
      G_TYPE_UINT64, c.frames_in, DW_STATS_FLIGHTBUFFER_FRAMES_OUT, G_TYPE_UINT64, c.frames_out,
      DW_STATS_FLIGHTBUFFER_FRAMES_DISTINCT, G_TYPE_UINT64, c.frames_distinct, DW_STATS_FLIGHTBUFFER_FRAMES_REPEATED,
      G_TYPE_UINT64, c.frames_repeated, DW_STATS_FLIGHTBUFFER_FRAMES_SKIPPED, G_TYPE_UINT64, c.frames_skipped,
      DW_STATS_FLIGHTBUFFER_UNDERRUNS, G_TYPE_UINT64, c.underruns, DW_STATS_FLIGHTBUFFER_DROPS, G_TYPE_UINT64,
      c.dropped_inbetweens + c.dropped_keyframes, DW_STATS_FLIGHTBUFFER_DROPPED_INBETWEENS, G_TYPE_UINT64,
      c.dropped_inbetweens, DW_STATS_FLIGHTBUFFER_DROPPED_KEYFRAMES, G_TYPE_UINT64, c.dropped_keyframes,
      DW_STATS_FLIGHTBUFFER_LATE_TICKS, G_TYPE_UINT64, c.late_ticks, DW_STATS_FLIGHTBUFFER_PREBUFFER_INCOMPLETE,
      G_TYPE_UINT64, c.prebuffer_incomplete, DW_STATS_FLIGHTBUFFER_DISCONTINUITIES, G_TYPE_UINT64,
      c.discontinuities, DW_STATS_FLIGHTBUFFER_RUNNING_TIME, G_TYPE_UINT64, now, nullptr);
}

/* A dreamwindow-buffer element message (lock held; built now, posted later). */
static void add_message(GstFlightBuffer *self, Pending &p, const Settings &s, const char *event, GstClockTime now,
                        const char *reason = nullptr) {
  if (!s.post_messages) return;
  GstStructure *st = build_stats(self, DW_MSG_BUFFER_NAME, s, now);
  gst_structure_set(st, DW_MSG_BUFFER_EVENT, G_TYPE_STRING, event, nullptr);
  if (reason) gst_structure_set(st, DW_MSG_BUFFER_REASON, G_TYPE_STRING, reason, nullptr);
  p.messages.push_back(gst_message_new_element(GST_OBJECT(self), st));
}

/* The periodic stats message when stats-interval has passed (lock held). */
static void maybe_stats_message(GstFlightBuffer *self, Pending &p, const Settings &s, GstClockTime now) {
  GstFlightBufferPrivate *priv = self->priv;
  if (!s.post_messages || s.stats_interval == 0 || !GST_CLOCK_TIME_IS_VALID(now)) return;
  if (GST_CLOCK_TIME_IS_VALID(priv->last_stats_rt) && now < priv->last_stats_rt + s.stats_interval) return;
  priv->last_stats_rt = now;
  add_message(self, p, s, "stats", now);
}

/* Posts what was built under the lock (lock NOT held). */
static void flush_pending(GstFlightBuffer *self, Pending &p) {
  if (!p.warning.empty()) {
    GST_ELEMENT_WARNING(self, STREAM, FAILED, ("%s", p.warning.c_str()), (nullptr));
  }
  for (GstMessage *m : p.messages) gst_element_post_message(GST_ELEMENT(self), m);
  p.messages.clear();
}

/* Waits (unlocked) until running time `rt` on the element's clock. Called and returns with the lock
 * held; flush, stop, pause and new data (while buffering) unschedule it. */
static GstClockReturn wait_until(GstFlightBuffer *self, GstClockTime rt) {
  GstFlightBufferPrivate *priv = self->priv;
  GstClock *clock = gst_element_get_clock(GST_ELEMENT(self));
  GstClockTime base = gst_element_get_base_time(GST_ELEMENT(self));
  if (!clock) {
    if (!priv->fallback_clock) {
      priv->fallback_clock = gst_system_clock_obtain();
      priv->fallback_base = gst_clock_get_time(priv->fallback_clock);
    }
    clock = GST_CLOCK(gst_object_ref(priv->fallback_clock));
    base = priv->fallback_base;
  }
  GstClockID id = gst_clock_new_single_shot_id(clock, rt + base);
  priv->clock_id = id;
  g_mutex_unlock(&priv->lock);
  GstClockTimeDiff jitter = 0;
  GstClockReturn ret = gst_clock_id_wait(id, &jitter);
  g_mutex_lock(&priv->lock);
  if (priv->clock_id == id) priv->clock_id = nullptr;
  gst_clock_id_unref(id);
  gst_object_unref(clock);
  return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* Caps (no lock)                                                                                   */

/* The output caps for `in`: its framerate replaced by the one downstream fixes, else output-fps. */
static GstCaps *output_caps_for(GstFlightBuffer *self, GstCaps *in, const Settings &s) {
  gint n = s.fps_n, d = s.fps_d;
  GstCaps *peer = gst_pad_peer_query_caps(self->srcpad, nullptr);
  if (peer && !gst_caps_is_any(peer) && !gst_caps_is_empty(peer)) {
    GstCaps *tmp = gst_caps_copy(in);
    gst_caps_set_simple(tmp, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1, G_MAXINT, 1, nullptr);
    GstCaps *inter = gst_caps_intersect(peer, tmp);
    gint pn = 0, pd = 1;
    if (!gst_caps_is_empty(inter) && structure_framerate(gst_caps_get_structure(inter, 0), &pn, &pd)) {
      n = pn;
      d = pd;
    }
    gst_caps_unref(inter);
    gst_caps_unref(tmp);
  }
  if (peer) gst_caps_unref(peer);
  GstCaps *out = gst_caps_copy(in);
  gst_caps_set_simple(out, "framerate", GST_TYPE_FRACTION, n, d, nullptr);
  return out;
}

/* Caps with the framerate opened up (what any framerate on the other side maps to). */
static GstCaps *open_framerate(GstCaps *caps) {
  GstCaps *res = gst_caps_copy(caps);
  for (guint i = 0; i < gst_caps_get_size(res); ++i) {
    GstStructure *st = gst_caps_get_structure(res, i);
    if (gst_structure_has_field(st, "framerate"))
      gst_structure_set(st, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1, G_MAXINT, 1, nullptr);
  }
  return res;
}

/* CAPS query on either pad: the other side's caps with the framerate opened up (the element
 * re-times frames, so any input rate can become any output rate), within the pad template. */
static gboolean answer_caps_query(GstPad *pad, GstPad *other, GstQuery *query) {
  GstCaps *filter = nullptr;
  gst_query_parse_caps(query, &filter);
  GstCaps *tmpl = gst_pad_get_pad_template_caps(pad);
  GstCaps *peer = gst_pad_peer_query_caps(other, nullptr);
  GstCaps *opened = open_framerate(peer);
  GstCaps *res = gst_caps_intersect(opened, tmpl);
  if (filter) {
    GstCaps *f = gst_caps_intersect_full(filter, res, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(res);
    res = f;
  }
  gst_query_set_caps_result(query, res);
  gst_caps_unref(res);
  gst_caps_unref(opened);
  gst_caps_unref(peer);
  gst_caps_unref(tmpl);
  return TRUE;
}

/* A CAPS event going out sets the output framerate; the grid rebases at `at` (lock held). */
static void apply_caps_framerate(GstFlightBufferPrivate *priv, GstEvent *event, GstClockTime at) {
  if (!event || GST_EVENT_TYPE(event) != GST_EVENT_CAPS) return;
  GstCaps *caps = nullptr;
  gst_event_parse_caps(event, &caps);
  gint n = 0, d = 1;
  if (caps && !gst_caps_is_empty(caps) && structure_framerate(gst_caps_get_structure(caps, 0), &n, &d))
    priv->playout.set_framerate(n, d, ns(at));
}

/* ------------------------------------------------------------------------------------------------ */
/* Src task                                                                                         */

/* FLUSH_START from either side: wake the task and a blocked chain(), then pause the task (queue's
 * sequence; the lock is not held while pausing, the task needs it to finish its iteration). Takes
 * and releases the lock. */
static void start_flushing(GstFlightBuffer *self) {
  set_flushing(self->priv);
  gst_pad_pause_task(self->srcpad);
}

/* Leaves pre-buffering / re-buffering (lock held). */
static void start_output(GstFlightBuffer *self, Pending &p, const Settings &s, const char *reason, GstClockTime now) {
  const dw::pacing::StartInfo info = self->priv->playout.start(reason, ns(now));
  if (info.incomplete) {
    gchar *text = g_strdup_printf("Pre-buffer incomplete (%s): starting with %.1fs of %.1fs", reason,
                                  static_cast<double>(info.fill) / GST_SECOND,
                                  static_cast<double>(info.threshold) / GST_SECOND);
    p.warning = text;
    g_free(text);
  }
  GST_INFO_OBJECT(self, "output starts (%s) with %" GST_TIME_FORMAT " queued, grid origin %" GST_TIME_FORMAT, reason,
                  GST_TIME_ARGS(info.fill), GST_TIME_ARGS(info.origin));
  add_message(self, p, s, info.first ? "started" : "rebuffered", now, reason);
}

/* One iteration while pre-buffering or re-buffering: start, or sleep until woken, the timeout or
 * the next stats message (lock held; wait_until drops it while sleeping). */
static void buffering_step(GstFlightBuffer *self, Pending &p, const Settings &s) {
  GstFlightBufferPrivate *priv = self->priv;
  const GstClockTime now = running_time_now_locked(self);
  const dw::pacing::BufferingPlan plan = priv->playout.plan_buffering(ns(now));
  if (plan.start_reason) {
    start_output(self, p, s, plan.start_reason, now);
    return;
  }
  maybe_stats_message(self, p, s, now);
  GstClockTime deadline = plan.wake_at >= 0 ? static_cast<GstClockTime>(plan.wake_at) : GST_CLOCK_TIME_NONE;
  if (s.post_messages && s.stats_interval > 0 && GST_CLOCK_TIME_IS_VALID(priv->last_stats_rt)) {
    GstClockTime next = priv->last_stats_rt + s.stats_interval;
    deadline = GST_CLOCK_TIME_IS_VALID(deadline) ? std::min(deadline, next) : next;
  }
  if (!GST_CLOCK_TIME_IS_VALID(deadline)) {
    g_cond_wait(&priv->task_cond, &priv->lock);
  } else {
    wait_until(self, deadline);
  }
}

/* Moves the events queued before slots [0, upto] into `items`, in order (lock held). */
static void take_events(GstFlightBufferPrivate *priv, size_t upto, std::vector<Item> &items) {
  for (size_t i = 0; i <= upto && i < priv->slots.size(); ++i) {
    for (GstEvent *e : priv->slots[i].before) items.push_back({e, nullptr});
    priv->slots[i].before.clear();
  }
}

/* Grid stamps on an outgoing buffer (lock held). */
static GstBuffer *stamp_buffer(GstFlightBufferPrivate *priv, GstBuffer *out, const dw::pacing::TickPlan &plan) {
  out = gst_buffer_make_writable(out);
  GST_BUFFER_PTS(out) = static_cast<GstClockTime>(plan.pts);
  GST_BUFFER_DTS(out) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION(out) = static_cast<GstClockTime>(plan.duration);
  const guint64 n = priv->playout.counters().frames_out;  // already counts this one
  GST_BUFFER_OFFSET(out) = n - 1;
  GST_BUFFER_OFFSET_END(out) = n;
  if (priv->discont)
    GST_BUFFER_FLAG_SET(out, GST_BUFFER_FLAG_DISCONT);
  else
    GST_BUFFER_FLAG_UNSET(out, GST_BUFFER_FLAG_DISCONT);
  GST_BUFFER_FLAG_UNSET(out, GST_BUFFER_FLAG_GAP);
  priv->discont = false;
  return out;
}

/* Applies one tick's plan to the queued buffers and events: what goes out, in order (lock held). */
static void apply_tick(GstFlightBufferPrivate *priv, const dw::pacing::TickPlan &plan, std::vector<Item> &items) {
  using Action = dw::pacing::TickPlan::Action;
  const GstClockTime next = static_cast<GstClockTime>(plan.pts + plan.duration);
  const size_t first_item = items.size();
  GstBuffer *out = nullptr;
  if (plan.action == Action::Show) {
    take_events(priv, std::max(plan.show, plan.consumed ? plan.consumed - 1 : 0), items);
    out = gst_buffer_ref(priv->slots[plan.show].buffer);
    gst_buffer_replace(&priv->last_frame, out);
    for (size_t i = 0; i < plan.consumed; ++i) {
      free_slot(priv->slots.front());
      priv->slots.pop_front();
    }
    g_cond_broadcast(&priv->chain_cond);
  } else {
    /* Queue empty: the events after the last frame go out now. */
    for (GstEvent *e : priv->tail_events) items.push_back({e, nullptr});
    priv->tail_events.clear();
    if (plan.action == Action::Repeat && priv->last_frame) out = gst_buffer_ref(priv->last_frame);
  }
  /* Caps going out with this tick set the framerate from the next tick on. */
  for (size_t i = first_item; i < items.size(); ++i) apply_caps_framerate(priv, items[i].event, next);
  if (out) items.push_back({nullptr, stamp_buffer(priv, out, plan)});
}

/* Plans up to batch-size ticks at `now` (lock held). */
static void plan_batch(GstFlightBuffer *self, Pending &p, const Settings &s, GstClockTime now, Batch &batch) {
  GstFlightBufferPrivate *priv = self->priv;
  using Action = dw::pacing::TickPlan::Action;
  const guint n = std::max(1u, s.batch_size);
  for (guint k = 0; k < n; ++k) {
    /* Caps that go out with this tick set its framerate: rebase the grid here, before planning. */
    const GstClockTime at = static_cast<GstClockTime>(priv->playout.next_tick_time());
    for (GstEvent *e : priv->slots.empty() ? priv->tail_events : priv->slots.front().before)
      apply_caps_framerate(priv, e, at);
    const dw::pacing::TickPlan plan = priv->playout.plan_tick(ns(now));
    apply_tick(priv, plan, batch.items);
    if (plan.event) {
      GST_DEBUG_OBJECT(self, "%s at %" GST_TIME_FORMAT, plan.event, GST_TIME_ARGS(plan.pts));
      add_message(self, p, s, plan.event, now);
    }
    if (plan.action == Action::Eos) {
      batch.eos = true;
      break;
    }
    if (priv->playout.buffering()) break;
  }
  maybe_stats_message(self, p, s, now);
}

/* Pushes a planned batch in order; consecutive buffers go out as one list when batch-size > 1
 * (lock NOT held). */
static GstFlowReturn push_batch(GstFlightBuffer *self, Batch &batch, guint batch_size) {
  GstFlowReturn ret = GST_FLOW_OK;
  GstBufferList *list = nullptr;
  auto flush_list = [&]() {
    if (!list) return;
    GstBufferList *l = list;
    list = nullptr;
    if (ret == GST_FLOW_OK)
      ret = gst_pad_push_list(self->srcpad, l);
    else
      gst_buffer_list_unref(l);
  };
  for (Item &it : batch.items) {
    if (it.event) {
      flush_list();
      if (ret == GST_FLOW_OK || GST_EVENT_IS_STICKY(it.event)) {
        GST_DEBUG_OBJECT(self, "pushing %" GST_PTR_FORMAT, it.event);
        gst_pad_push_event(self->srcpad, it.event);
      } else {
        gst_event_unref(it.event);
      }
    } else if (batch_size > 1) {
      if (!list) list = gst_buffer_list_new_sized(batch_size);
      gst_buffer_list_add(list, it.buffer);
    } else if (ret == GST_FLOW_OK) {
      ret = gst_pad_push(self->srcpad, it.buffer);
    } else {
      gst_buffer_unref(it.buffer);
    }
  }
  batch.items.clear();
  flush_list();
  if (batch.eos && ret == GST_FLOW_OK) ret = GST_FLOW_EOS;
  return ret;
}

/* After a push that did not return OK: record it, pause the task, and error out on a fatal flow
 * (queue's sequence; takes and releases the lock). */
static void pause_on_flow(GstFlightBuffer *self, GstFlowReturn ret, bool eos_pushed) {
  GstFlightBufferPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  if (priv->srcresult == GST_FLOW_OK) priv->srcresult = ret;
  g_cond_broadcast(&priv->chain_cond);
  g_mutex_unlock(&priv->lock);
  GST_DEBUG_OBJECT(self, "pausing task: %s", gst_flow_get_name(ret));
  gst_pad_pause_task(self->srcpad);
  if (!eos_pushed && (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS)) {
    GST_ELEMENT_FLOW_ERROR(self, ret);
    gst_pad_push_event(self->srcpad, gst_event_new_eos());
  }
}

/* What the task does this iteration, decided under the lock. */
enum class Step { Pause, Idle, Buffered, Push };

/* Runs the locked part of one iteration: waits for the state, buffers, or waits for the next tick
 * and plans it (takes and releases the lock). */
static Step locked_iteration(GstFlightBuffer *self, Pending &p, const Settings &s, Batch &batch) {
  GstFlightBufferPrivate *priv = self->priv;
  Locked lock(&priv->lock);
  priv->playout.set_params(playout_params(s));
  if (priv->srcresult != GST_FLOW_OK) return Step::Pause;
  if (!priv->playing || priv->playout.state() == dw::pacing::PlayoutState::Done) {
    g_cond_wait(&priv->task_cond, &priv->lock);
    return Step::Idle;
  }
  if (priv->playout.buffering()) {
    buffering_step(self, p, s);
    return Step::Buffered;
  }
  const GstClockReturn wret = wait_until(self, static_cast<GstClockTime>(priv->playout.next_tick_deadline()));
  if (priv->srcresult != GST_FLOW_OK || !priv->playing || wret == GST_CLOCK_UNSCHEDULED) return Step::Idle;
  plan_batch(self, p, s, running_time_now_locked(self), batch);
  return Step::Push;
}

static void gst_flight_buffer_loop(GstPad *pad) {
  auto *self = GST_FLIGHT_BUFFER(GST_PAD_PARENT(pad));
  const Settings s = settings_snapshot(self);
  Pending p;
  Batch batch;
  Step step = Step::Pause;
  try {
    step = locked_iteration(self, p, s, batch);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Pacing failed: %s", e.what()), (nullptr));
    pause_on_flow(self, GST_FLOW_ERROR, true);
    return;
  }
  if (step == Step::Pause) {
    GST_DEBUG_OBJECT(self, "pausing task");
    gst_pad_pause_task(pad);
    return;
  }
  flush_pending(self, p);
  if (step != Step::Push) return;
  const GstFlowReturn ret = push_batch(self, batch, std::max(1u, s.batch_size));
  if (ret != GST_FLOW_OK) pause_on_flow(self, ret, batch.eos);
}

/* ------------------------------------------------------------------------------------------------ */
/* Sink pad                                                                                         */

/* The Playout's description of an incoming buffer: duration, keyframe, discontinuity, identity. */
static dw::pacing::QueuedFrame describe(GstBuffer *buffer) {
  dw::pacing::QueuedFrame f;
  f.pts = ns(GST_BUFFER_PTS(buffer));
  if (GST_BUFFER_DURATION_IS_VALID(buffer) && GST_BUFFER_DURATION(buffer) > 0)
    f.duration = static_cast<int64_t>(std::min<guint64>(GST_BUFFER_DURATION(buffer), G_MAXINT64));
  f.discont = GST_BUFFER_FLAG_IS_SET(buffer, GST_BUFFER_FLAG_DISCONT);
  /* Same memory = same picture (a buffer pushed again, or a shallow copy of it). */
  if (gst_buffer_n_memory(buffer) > 0)
    f.key.identity = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(gst_buffer_peek_memory(buffer, 0)));
  if (const DwFrameMeta *meta = dw_buffer_get_frame_meta(buffer)) {
    f.keyframe = meta->kind != DW_FRAME_KIND_INBETWEEN;
    f.key.has_meta = true;
    f.key.kind = meta->kind;
    f.key.index = meta->keyframe_index;
    f.key.position = meta->position;
  }
  return f;
}

/* Makes room (drop-inbetween) or blocks while the queue is full (lock held; g_cond_wait drops it).
 * Returns OK to enqueue, a flow to return, or GST_FLOW_CUSTOM_SUCCESS when the incoming buffer is
 * the one dropped. */
static GstFlowReturn wait_for_room(GstFlightBuffer *self, bool keyframe) {
  GstFlightBufferPrivate *priv = self->priv;
  using Action = dw::pacing::OverrunPlan::Action;
  while (priv->playout.full()) {
    if (priv->playout.buffering()) {
      /* Never wait for a pre-buffer the queue cannot hold: start with what there is. */
      priv->playout.mark_full_while_buffering();
      wake_task(priv);
    }
    const dw::pacing::OverrunPlan plan = priv->playout.on_full(keyframe);
    if (plan.action == Action::DropIncoming) return GST_FLOW_CUSTOM_SUCCESS;
    if (plan.action == Action::DroppedQueued) {
      /* Its events still go out, before the next frame. */
      Slot &gone = priv->slots[plan.index];
      auto &next = plan.index + 1 < priv->slots.size() ? priv->slots[plan.index + 1].before : priv->tail_events;
      next.insert(next.begin(), gone.before.begin(), gone.before.end());
      gone.before.clear();
      free_slot(gone);
      priv->slots.erase(priv->slots.begin() + static_cast<std::ptrdiff_t>(plan.index));
      continue;
    }
    GST_LOG_OBJECT(self, "full: blocking upstream");
    g_cond_wait(&priv->chain_cond, &priv->lock);
    if (priv->srcresult != GST_FLOW_OK) return priv->srcresult;
  }
  return GST_FLOW_OK;
}

/* Enqueues `buffer` (takes it) once there is room (takes and releases the lock). */
static GstFlowReturn enqueue(GstFlightBuffer *self, GstBuffer *buffer, const Settings &s, GstClockTime now) {
  GstFlightBufferPrivate *priv = self->priv;
  dw::pacing::QueuedFrame f = describe(buffer);
  Locked lock(&priv->lock);
  priv->playout.set_params(playout_params(s));
  GstFlowReturn ret = priv->srcresult;
  if (ret == GST_FLOW_OK && priv->playout.eos()) ret = GST_FLOW_EOS;
  if (ret == GST_FLOW_OK) {
    priv->playout.admit(f, ns(now));
    ret = wait_for_room(self, f.keyframe);
  }
  if (ret != GST_FLOW_OK) {
    GST_LOG_OBJECT(self, "not queueing buffer: %s", gst_flow_get_name(ret));
    gst_buffer_unref(buffer);
    return ret == GST_FLOW_CUSTOM_SUCCESS ? GST_FLOW_OK : ret;
  }
  priv->playout.push(f, ns(now));
  Slot slot;
  slot.buffer = buffer;
  slot.before = std::move(priv->tail_events);
  priv->tail_events.clear();
  priv->slots.push_back(std::move(slot));
  if (priv->playout.buffering()) wake_task(priv);
  return GST_FLOW_OK;
}

static GstFlowReturn gst_flight_buffer_chain(GstPad *pad, GstObject *parent, GstBuffer *buffer) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  try {
    return enqueue(self, buffer, settings_snapshot(self), running_time_now(self));
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Queueing failed: %s", e.what()), (nullptr));
    return GST_FLOW_ERROR;
  }
}

static void start_task_if_active(GstFlightBuffer *self) {
  if (gst_pad_is_active(self->srcpad))
    gst_pad_start_task(self->srcpad, reinterpret_cast<GstTaskFunction>(gst_flight_buffer_loop), self->srcpad,
                       nullptr);
}

/* Caps with the output framerate for a CAPS event (no lock: queries downstream). */
static GstEvent *output_caps_event(GstFlightBuffer *self, GstEvent *event, const Settings &s) {
  GstCaps *in = nullptr;
  gst_event_parse_caps(event, &in);
  GstCaps *out = output_caps_for(self, in, s);
  GstEvent *ev = gst_event_new_caps(out);
  gst_event_set_seqnum(ev, gst_event_get_seqnum(event));
  gst_caps_unref(out);
  gst_event_unref(event);
  return ev;
}

/* Queues a serialized event behind the frames already queued (takes and releases the lock). The
 * first segment becomes one TIME segment from 0 (output is re-timestamped in running time); later
 * ones are dropped. */
static gboolean queue_serialized_event(GstFlightBuffer *self, GstEvent *event) {
  GstFlightBufferPrivate *priv = self->priv;
  if (GST_EVENT_TYPE(event) == GST_EVENT_CAPS) event = output_caps_event(self, event, settings_snapshot(self));
  Locked lock(&priv->lock);
  if (priv->srcresult != GST_FLOW_OK || priv->playout.eos()) {
    GST_DEBUG_OBJECT(self, "refusing %" GST_PTR_FORMAT, event);
    gst_event_unref(event);
    return FALSE;
  }
  if (GST_EVENT_TYPE(event) == GST_EVENT_SEGMENT) {
    if (priv->segment_sent) {
      gst_event_unref(event);
      return TRUE;
    }
    GstSegment seg;
    gst_segment_init(&seg, GST_FORMAT_TIME);
    GstEvent *ev = gst_event_new_segment(&seg);
    gst_event_set_seqnum(ev, gst_event_get_seqnum(event));
    gst_event_unref(event);
    event = ev;
    priv->segment_sent = true;
  } else if (GST_EVENT_TYPE(event) == GST_EVENT_EOS) {
    priv->playout.set_eos();
  }
  priv->tail_events.push_back(event);
  wake_task(priv);
  return TRUE;
}

static gboolean gst_flight_buffer_sink_event(GstPad *pad, GstObject *parent, GstEvent *event) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  GstFlightBufferPrivate *priv = self->priv;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_FLUSH_START:
      gst_pad_push_event(self->srcpad, event);
      start_flushing(self);
      return TRUE;
    case GST_EVENT_FLUSH_STOP: {
      gst_pad_push_event(self->srcpad, event);
      g_mutex_lock(&priv->lock);
      reset_queue(self, false);
      priv->srcresult = GST_FLOW_OK;
      g_mutex_unlock(&priv->lock);
      start_task_if_active(self);
      return TRUE;
    }
    default:
      break;
  }
  if (!GST_EVENT_IS_SERIALIZED(event)) return gst_pad_push_event(self->srcpad, event);
  try {
    return queue_serialized_event(self, event);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Queueing an event failed: %s", e.what()), (nullptr));
    return FALSE;
  }
}

static gboolean gst_flight_buffer_sink_query(GstPad *pad, GstObject *parent, GstQuery *query) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  if (GST_QUERY_TYPE(query) == GST_QUERY_CAPS) return answer_caps_query(pad, self->srcpad, query);
  return gst_pad_query_default(pad, parent, query);
}

static gboolean gst_flight_buffer_sink_activate_mode(GstPad *pad, GstObject *parent, GstPadMode mode,
                                                     gboolean active) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  GstFlightBufferPrivate *priv = self->priv;
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (!active) {
    set_flushing(priv);
    /* Wait for a running chain() to leave. */
    GST_PAD_STREAM_LOCK(pad);
    GST_PAD_STREAM_UNLOCK(pad);
  }
  return TRUE;
}

/* ------------------------------------------------------------------------------------------------ */
/* Src pad                                                                                          */

static gboolean gst_flight_buffer_src_activate_mode(GstPad *pad, GstObject *parent, GstPadMode mode,
                                                    gboolean active) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  GstFlightBufferPrivate *priv = self->priv;
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (active) {
    g_mutex_lock(&priv->lock);
    priv->srcresult = GST_FLOW_OK;
    g_mutex_unlock(&priv->lock);
    return gst_pad_start_task(pad, reinterpret_cast<GstTaskFunction>(gst_flight_buffer_loop), pad, nullptr);
  }
  set_flushing(priv);
  return gst_pad_stop_task(pad);
}

static gboolean gst_flight_buffer_src_event(GstPad *pad, GstObject *parent, GstEvent *event) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  GstFlightBufferPrivate *priv = self->priv;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_FLUSH_START: {
      gboolean ret = gst_pad_push_event(self->sinkpad, event);
      start_flushing(self);
      return ret;
    }
    case GST_EVENT_FLUSH_STOP: {
      gboolean ret = gst_pad_push_event(self->sinkpad, event);
      g_mutex_lock(&priv->lock);
      bool restart = priv->srcresult == GST_FLOW_FLUSHING;
      if (restart) priv->srcresult = GST_FLOW_OK;
      g_mutex_unlock(&priv->lock);
      if (restart) start_task_if_active(self);
      return ret;
    }
    case GST_EVENT_LATENCY: {
      GstClockTime latency = 0;
      gst_event_parse_latency(event, &latency);
      g_mutex_lock(&priv->lock);
      priv->playout.set_latency(static_cast<int64_t>(latency));
      g_mutex_unlock(&priv->lock);
      GST_DEBUG_OBJECT(self, "pipeline latency %" GST_TIME_FORMAT, GST_TIME_ARGS(latency));
      return gst_pad_push_event(self->sinkpad, event);
    }
    default:
      return gst_pad_push_event(self->sinkpad, event);
  }
}

static gboolean gst_flight_buffer_src_query(GstPad *pad, GstObject *parent, GstQuery *query) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  GstFlightBufferPrivate *priv = self->priv;
  switch (GST_QUERY_TYPE(query)) {
    case GST_QUERY_LATENCY: {
      const Settings s = settings_snapshot(self);
      gboolean live = FALSE;
      GstClockTime min = 0, max = GST_CLOCK_TIME_NONE;
      GstQuery *up = gst_query_new_latency();
      if (gst_pad_peer_query(self->sinkpad, up)) gst_query_parse_latency(up, &live, &min, &max);
      gst_query_unref(up);
      /* The pre-buffer is latency we add; we pace against the clock, so we answer as live. */
      min += s.prebuffer_time;
      if (GST_CLOCK_TIME_IS_VALID(max) && s.max_size_time > 0)
        max += std::max<guint64>(s.max_size_time, s.prebuffer_time);
      else
        max = GST_CLOCK_TIME_NONE;
      gst_query_set_latency(query, TRUE, min, max);
      return TRUE;
    }
    case GST_QUERY_POSITION: {
      GstFormat format;
      gst_query_parse_position(query, &format, nullptr);
      if (format != GST_FORMAT_TIME) return FALSE;
      g_mutex_lock(&priv->lock);
      const int64_t pos = priv->playout.last_pts();
      g_mutex_unlock(&priv->lock);
      if (pos < 0) return FALSE;
      gst_query_set_position(query, GST_FORMAT_TIME, pos);
      return TRUE;
    }
    case GST_QUERY_SEGMENT: {
      gst_query_set_segment(query, 1.0, GST_FORMAT_TIME, 0, -1);
      return TRUE;
    }
    case GST_QUERY_CAPS:
      return answer_caps_query(pad, self->sinkpad, query);
    default:
      return gst_pad_query_default(pad, parent, query);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Element                                                                                          */

static GstStateChangeReturn gst_flight_buffer_change_state(GstElement *element, GstStateChange transition) {
  auto *self = GST_FLIGHT_BUFFER(element);
  GstFlightBufferPrivate *priv = self->priv;
  switch (transition) {
    case GST_STATE_CHANGE_READY_TO_PAUSED: {
      const Settings s = settings_snapshot(self);
      if (s.min_rate > s.max_rate) {
        GST_ELEMENT_ERROR(self, LIBRARY, SETTINGS, ("min-rate (%g) is above max-rate (%g)", s.min_rate, s.max_rate),
                          (nullptr));
        return GST_STATE_CHANGE_FAILURE;
      }
      if (s.max_size_time > 0 && s.prebuffer_time > s.max_size_time)
        GST_WARNING_OBJECT(self, "prebuffer-time is above max-size-time: output will start when the queue is full");
      g_mutex_lock(&priv->lock);
      reset_queue(self, true);
      priv->playout.set_params(playout_params(s));
      priv->playout.set_framerate(s.fps_n, s.fps_d);
      priv->playout.set_latency(0);
      g_mutex_unlock(&priv->lock);
      break;
    }
    case GST_STATE_CHANGE_PAUSED_TO_PLAYING:
      g_mutex_lock(&priv->lock);
      priv->playing = true;
      wake_task(priv);
      g_mutex_unlock(&priv->lock);
      break;
    case GST_STATE_CHANGE_PLAYING_TO_PAUSED:
      g_mutex_lock(&priv->lock);
      priv->playing = false;
      wake_task(priv);
      g_mutex_unlock(&priv->lock);
      break;
    default:
      break;
  }

  GstStateChangeReturn ret = GST_ELEMENT_CLASS(parent_class)->change_state(element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) return ret;

  switch (transition) {
    case GST_STATE_CHANGE_READY_TO_PAUSED:
    case GST_STATE_CHANGE_PLAYING_TO_PAUSED:
      /* Output is paced on the clock in PLAYING only, like a live source. */
      ret = GST_STATE_CHANGE_NO_PREROLL;
      break;
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      g_mutex_lock(&priv->lock);
      reset_queue(self, false);
      if (priv->fallback_clock) gst_object_unref(priv->fallback_clock);
      priv->fallback_clock = nullptr;
      g_mutex_unlock(&priv->lock);
      break;
    default:
      break;
  }
  return ret;
}

static void gst_flight_buffer_set_property(GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec) {
  auto *self = GST_FLIGHT_BUFFER(object);
  Settings &s = self->priv->settings;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_MAX_SIZE_TIME: s.max_size_time = g_value_get_uint64(value); break;
    case PROP_MAX_SIZE_BUFFERS: s.max_size_buffers = g_value_get_uint(value); break;
    case PROP_PREBUFFER_TIME: s.prebuffer_time = g_value_get_uint64(value); break;
    case PROP_PREBUFFER_TIMEOUT: s.prebuffer_timeout = g_value_get_uint64(value); break;
    case PROP_REBUFFER_TIME: s.rebuffer_time = g_value_get_uint64(value); break;
    case PROP_OUTPUT_FPS:
      s.fps_n = gst_value_get_fraction_numerator(value);
      s.fps_d = gst_value_get_fraction_denominator(value);
      break;
    case PROP_ADAPTIVE: s.adaptive = g_value_get_boolean(value); break;
    case PROP_TARGET_FILL: s.target_fill = g_value_get_uint64(value); break;
    case PROP_MIN_RATE: s.min_rate = g_value_get_double(value); break;
    case PROP_MAX_RATE: s.max_rate = g_value_get_double(value); break;
    case PROP_MAX_RATE_CHANGE: s.max_rate_change = g_value_get_double(value); break;
    case PROP_UNDERRUN_POLICY: s.underrun_policy = static_cast<GstFlightBufferUnderrunPolicy>(g_value_get_enum(value)); break;
    case PROP_OVERRUN_POLICY: s.overrun_policy = static_cast<GstFlightBufferOverrunPolicy>(g_value_get_enum(value)); break;
    case PROP_BATCH_SIZE: s.batch_size = g_value_get_uint(value); break;
    case PROP_STATS_INTERVAL: s.stats_interval = g_value_get_uint64(value); break;
    case PROP_POST_MESSAGES: s.post_messages = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
  /* A blocked chain() re-checks the limits; a waiting task re-checks the pre-buffer. */
  GstFlightBufferPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  g_cond_broadcast(&priv->chain_cond);
  if (priv->playout.buffering()) wake_task(priv);
  g_mutex_unlock(&priv->lock);
}

static void gst_flight_buffer_get_property(GObject *object, guint prop_id, GValue *value, GParamSpec *pspec) {
  auto *self = GST_FLIGHT_BUFFER(object);
  if (prop_id == PROP_STATS) {
    const Settings s = settings_snapshot(self);
    GstClockTime now = running_time_now(self);
    g_mutex_lock(&self->priv->lock);
    GstStructure *st = build_stats(self, DW_STATS_FLIGHTBUFFER_NAME, s, now);
    g_mutex_unlock(&self->priv->lock);
    g_value_take_boxed(value, st);
    return;
  }
  const Settings &s = self->priv->settings;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_MAX_SIZE_TIME: g_value_set_uint64(value, s.max_size_time); break;
    case PROP_MAX_SIZE_BUFFERS: g_value_set_uint(value, s.max_size_buffers); break;
    case PROP_PREBUFFER_TIME: g_value_set_uint64(value, s.prebuffer_time); break;
    case PROP_PREBUFFER_TIMEOUT: g_value_set_uint64(value, s.prebuffer_timeout); break;
    case PROP_REBUFFER_TIME: g_value_set_uint64(value, s.rebuffer_time); break;
    case PROP_OUTPUT_FPS: gst_value_set_fraction(value, s.fps_n, s.fps_d); break;
    case PROP_ADAPTIVE: g_value_set_boolean(value, s.adaptive); break;
    case PROP_TARGET_FILL: g_value_set_uint64(value, s.target_fill); break;
    case PROP_MIN_RATE: g_value_set_double(value, s.min_rate); break;
    case PROP_MAX_RATE: g_value_set_double(value, s.max_rate); break;
    case PROP_MAX_RATE_CHANGE: g_value_set_double(value, s.max_rate_change); break;
    case PROP_UNDERRUN_POLICY: g_value_set_enum(value, s.underrun_policy); break;
    case PROP_OVERRUN_POLICY: g_value_set_enum(value, s.overrun_policy); break;
    case PROP_BATCH_SIZE: g_value_set_uint(value, s.batch_size); break;
    case PROP_STATS_INTERVAL: g_value_set_uint64(value, s.stats_interval); break;
    case PROP_POST_MESSAGES: g_value_set_boolean(value, s.post_messages); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_flight_buffer_finalize(GObject *object) {
  auto *self = GST_FLIGHT_BUFFER(object);
  GstFlightBufferPrivate *priv = self->priv;
  reset_queue(self, true);
  if (priv->fallback_clock) gst_object_unref(priv->fallback_clock);
  g_mutex_clear(&priv->lock);
  g_cond_clear(&priv->task_cond);
  g_cond_clear(&priv->chain_cond);
  delete priv;
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_flight_buffer_init(GstFlightBuffer *self) {
  self->priv = new GstFlightBufferPrivate();
  g_mutex_init(&self->priv->lock);
  g_cond_init(&self->priv->task_cond);
  g_cond_init(&self->priv->chain_cond);

  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_flight_buffer_chain));
  gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_flight_buffer_sink_event));
  gst_pad_set_query_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_flight_buffer_sink_query));
  gst_pad_set_activatemode_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_flight_buffer_sink_activate_mode));
  GST_PAD_SET_PROXY_ALLOCATION(self->sinkpad);
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_event_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_flight_buffer_src_event));
  gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_flight_buffer_src_query));
  gst_pad_set_activatemode_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_flight_buffer_src_activate_mode));
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);
}

/* Queue and buffering properties. */
static void install_queue_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);

  /* max-size-time: content queued above which chain() blocks or drops (overrun-policy). */
  g_object_class_install_property(gobject_class, PROP_MAX_SIZE_TIME,
      g_param_spec_uint64("max-size-time", "Max. size (ns)",
                          "Content queued (ns) above which upstream blocks or frames are dropped "
                          "(overrun-policy); 0 = no time limit",
                          0, G_MAXUINT64, DEFAULT_MAX_SIZE_TIME, rw_playing));
  /* max-size-buffers: frame count limit. */
  g_object_class_install_property(gobject_class, PROP_MAX_SIZE_BUFFERS,
      g_param_spec_uint("max-size-buffers", "Max. size (frames)",
                        "Frames queued above which upstream blocks or frames are dropped; 0 = no frame limit", 0,
                        G_MAXUINT, DEFAULT_MAX_SIZE_BUFFERS, rw_playing));
  /* prebuffer-time: content to queue before output starts. */
  g_object_class_install_property(gobject_class, PROP_PREBUFFER_TIME,
      g_param_spec_uint64("prebuffer-time", "Pre-buffer (ns)",
                          "Content (ns) to queue before output starts; also the latency this element reports. "
                          "Output starts earlier (with a warning) on EOS, after prebuffer-timeout without data, "
                          "or when the queue is full; 0 = start with the first frame",
                          0, G_MAXUINT64, DEFAULT_PREBUFFER_TIME, rw_ready));
  /* prebuffer-timeout: no-data time after which buffering gives up and starts with what it has. */
  g_object_class_install_property(gobject_class, PROP_PREBUFFER_TIMEOUT,
      g_param_spec_uint64("prebuffer-timeout", "Pre-buffer timeout (ns)",
                          "Running time (ns) without new data after which pre-buffering (or re-buffering) "
                          "gives up and output starts with what is queued",
                          GST_MSECOND, G_MAXUINT64, DEFAULT_PREBUFFER_TIMEOUT, rw_playing));
  /* rebuffer-time: underrun-policy=pause resumes once this much is queued again. */
  g_object_class_install_property(gobject_class, PROP_REBUFFER_TIME,
      g_param_spec_uint64("rebuffer-time", "Re-buffer (ns)",
                          "With underrun-policy=pause: content (ns) to queue again before output resumes "
                          "after an underrun",
                          0, G_MAXUINT64, DEFAULT_REBUFFER_TIME, rw_playing));
}

/* Output, rate and reporting properties. */
static void install_output_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);
  /* output-fps: the output grid. */
  g_object_class_install_property(gobject_class, PROP_OUTPUT_FPS,
      gst_param_spec_fraction("output-fps", "Output rate (frames/s)",
                              "Output frame rate (the grid frames are re-timestamped onto), unless downstream caps "
                              "fix a framerate; applies at the next caps",
                              1, 1, 240, 1, DEFAULT_OUTPUT_FPS_N, DEFAULT_OUTPUT_FPS_D, rw_ready));
  /* adaptive: playback-rate control on/off. */
  g_object_class_install_property(gobject_class, PROP_ADAPTIVE,
      g_param_spec_boolean("adaptive", "Adaptive rate",
                           "Steer the playback rate (content seconds per second) to hold target-fill; "
                           "false = always 1.0",
                           DEFAULT_ADAPTIVE, rw_playing));
  /* target-fill: fill level the controller holds. */
  g_object_class_install_property(gobject_class, PROP_TARGET_FILL,
      g_param_spec_uint64("target-fill", "Target fill (ns)", "Fill level (ns of content) the adaptive rate holds",
                          0, G_MAXUINT64, DEFAULT_TARGET_FILL, rw_playing));
  /* min-rate / max-rate: playback-rate clamp. */
  g_object_class_install_property(gobject_class, PROP_MIN_RATE,
      g_param_spec_double("min-rate", "Min. rate (x)", "Lowest playback rate (1.0 = real time); must be <= max-rate",
                          0.1, 1.0, DEFAULT_MIN_RATE, rw_playing));
  g_object_class_install_property(gobject_class, PROP_MAX_RATE,
      g_param_spec_double("max-rate", "Max. rate (x)", "Highest playback rate (1.0 = real time); must be >= min-rate",
                          1.0, 4.0, DEFAULT_MAX_RATE, rw_playing));
  /* max-rate-change: slew limit. */
  g_object_class_install_property(gobject_class, PROP_MAX_RATE_CHANGE,
      g_param_spec_double("max-rate-change", "Max. rate change (1/s)",
                          "Largest change of the playback rate per second of running time (keeps it gentle)", 0.0001,
                          1.0, DEFAULT_MAX_RATE_CHANGE, rw_playing));
  /* underrun-policy */
  g_object_class_install_property(gobject_class, PROP_UNDERRUN_POLICY,
      g_param_spec_enum("underrun-policy", "Underrun policy",
                        "What to do when the queue runs dry after output started: hold = repeat the last frame at "
                        "the output rate; pause = stop until rebuffer-time is queued",
                        GST_TYPE_FLIGHT_BUFFER_UNDERRUN_POLICY, DEFAULT_UNDERRUN_POLICY, rw_playing));
  /* overrun-policy */
  g_object_class_install_property(gobject_class, PROP_OVERRUN_POLICY,
      g_param_spec_enum("overrun-policy", "Overrun policy",
                        "What to do when the queue is full: block = backpressure upstream; drop-inbetween = drop "
                        "in-between frames (DwFrameMeta) before ever dropping a keyframe",
                        GST_TYPE_FLIGHT_BUFFER_OVERRUN_POLICY, DEFAULT_OVERRUN_POLICY, rw_playing));
  /* batch-size */
  g_object_class_install_property(gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint("batch-size", "Batch size (frames)",
                        "Frames per push; > 1 pushes a GstBufferList of that many frames every batch-size ticks "
                        "(each still stamped on the grid)",
                        1, 256, DEFAULT_BATCH_SIZE, rw_playing));
  /* stats-interval */
  g_object_class_install_property(gobject_class, PROP_STATS_INTERVAL,
      g_param_spec_uint64("stats-interval", "Stats interval (ns)",
                          "Running time (ns) between periodic dreamwindow-buffer messages; 0 = only on events "
                          "(start, underrun, recovery)",
                          0, G_MAXUINT64, DEFAULT_STATS_INTERVAL, rw_playing));
  g_object_class_install_property(gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean("post-messages", "Post messages",
                           "Post dreamwindow-buffer element messages (periodic stats and state events)",
                           DEFAULT_POST_MESSAGES, rw_playing));
  g_object_class_install_property(gobject_class, PROP_STATS,
      g_param_spec_boxed("stats", "Statistics",
                         "application/x-flightbuffer-stats: state (prebuffering/playing/underrun/eos), fill-time "
                         "(ns), fill-frames, prebuffer-time, target-fill, max-size-time (ns), input-rate (content "
                         "s/s, -1 unknown), output-rate (frames/s), distinct-rate (new pictures/s: repeats not "
                         "counted), output-fps, playback-rate, frames-in, frames-out, frames-distinct, "
                         "frames-repeated, frames-skipped, underruns, drops, dropped-inbetweens, "
                         "dropped-keyframes, late-ticks, prebuffer-incomplete, discontinuities, running-time",
                         GST_TYPE_STRUCTURE, static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));
}

static void gst_flight_buffer_class_init(GstFlightBufferClass *klass) {
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);

  gobject_class->set_property = gst_flight_buffer_set_property;
  gobject_class->get_property = gst_flight_buffer_get_property;
  gobject_class->finalize = gst_flight_buffer_finalize;
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_flight_buffer_change_state);

  install_queue_properties(gobject_class);
  install_output_properties(gobject_class);

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "Flight buffer", "Generic/Video",
      "Pre-buffers frames, paces them onto a steady output grid against the pipeline clock and adapts the playback "
      "rate to hold its fill level; never waits forever for a pre-buffer",
      "gst-dreamwindow developers");

  gst_type_mark_as_plugin_api(GST_TYPE_FLIGHT_BUFFER_UNDERRUN_POLICY, static_cast<GstPluginAPIFlags>(0));
  gst_type_mark_as_plugin_api(GST_TYPE_FLIGHT_BUFFER_OVERRUN_POLICY, static_cast<GstPluginAPIFlags>(0));
}

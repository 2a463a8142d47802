/* flightbuffer
 *
 * The display end of the pipeline: a queue measured in time and buffers, shaped like queue2, whose
 * src pad task paces frames onto a steady output grid against the pipeline clock.
 *
 *  - chain() only enqueues and signals. It never blocks while pre-buffering or below the limits;
 *    above max-size-time / max-size-buffers it blocks (backpressure) or drops in-betweens first
 *    (overrun-policy=drop-inbetween).
 *  - The src task pre-buffers until prebuffer-time of content is queued, or starts anyway (with a
 *    warning and a dreamwindow-buffer message) on EOS, when nothing arrived for prebuffer-timeout,
 *    or when the queue is full before the pre-buffer is reached. It never waits on the application.
 *  - Each output tick n is at grid time origin + n / fps (running time), waited for with a
 *    single-shot clock id at running_time + base_time + latency. The frame shown covers the content
 *    cursor, which advances by playback-rate / fps per tick; dw::pacing::RateController steers the
 *    playback rate so the fill level holds target-fill (adaptive=true).
 *
 * Locking: priv->lock guards the queue and all streaming state; task_cond wakes the src task,
 * chain_cond wakes a blocked chain(). Property values live under GST_OBJECT_LOCK and are copied
 * (settings_snapshot) before priv->lock is taken; priv->lock is never taken inside the object lock.
 * Messages, warnings and errors are built under priv->lock and posted after releasing it.
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
#include <cmath>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "dwmeta.h"
#include "gstdreamwindowelements.h"
#include "pacing/pacing.h"

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
/* Input-rate window and fill-error correction time of the controller (see docs/elements). */
#define RATE_WINDOW_S 10.0
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

enum class State {
  PREBUFFERING,  // waiting for prebuffer-time before the first output
  PLAYING,
  UNDERRUN,     // underrun-policy=hold: repeating the last frame
  REBUFFERING,  // underrun-policy=pause: waiting for rebuffer-time (reported as "underrun")
  DONE,         // EOS pushed
};

const char *state_name(State s) {
  switch (s) {
    case State::PREBUFFERING: return "prebuffering";
    case State::PLAYING: return "playing";
    case State::UNDERRUN:
    case State::REBUFFERING: return "underrun";
    case State::DONE: return "eos";
  }
  return "unknown";
}

struct Frame {
  GstBuffer *buffer = nullptr;
  gint64 duration = 0;      // content (ns)
  bool provisional = false;  // duration guessed (no DURATION); fixed by the next frame's PTS
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  bool keyframe = true;
  bool shown = false;
  std::vector<GstEvent *> before;  // serialized events that came before this frame
};

/* What one task iteration hands downstream, in order. */
struct Item {
  GstEvent *event = nullptr;
  GstBuffer *buffer = nullptr;
};

struct Stats {
  guint64 frames_in = 0;
  guint64 frames_out = 0;
  guint64 frames_repeated = 0;  // hold-policy repeats during underrun
  guint64 frames_skipped = 0;   // used up without being shown (playback rate > 1)
  guint64 underruns = 0;
  guint64 dropped_inbetweens = 0;
  guint64 dropped_keyframes = 0;
  guint64 late_ticks = 0;
  guint64 prebuffer_incomplete = 0;
};

struct Pending {
  std::vector<GstMessage *> messages;
  std::string warning;  // non-empty: post GST_ELEMENT_WARNING
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
  bool eos = false;  // EOS received (queued at the tail)
  bool start_full = false;
  State state = State::PREBUFFERING;
  std::deque<Frame> frames;
  std::vector<GstEvent *> tail_events;  // serialized events after the last queued frame
  gint64 total = 0;                     // content queued (ns), including the used-up offset
  gint64 offset = 0;                    // content of frames.front() already used up
  GstBuffer *last_frame = nullptr;
  GstClockID clock_id = nullptr;
  GstClockTime last_input_rt = GST_CLOCK_TIME_NONE;
  GstClockTime last_pushed_pts = GST_CLOCK_TIME_NONE;
  GstClockTime last_stats_rt = GST_CLOCK_TIME_NONE;
  GstClockTime pipeline_latency = 0;
  bool have_latency = false;
  bool segment_sent = false;
  bool discont = true;
  gint fps_n = DEFAULT_OUTPUT_FPS_N;  // output rate in use (from the caps pushed last)
  gint fps_d = DEFAULT_OUTPUT_FPS_D;
  dw::pacing::RateEstimator input_rate{RATE_WINDOW_S};
  dw::pacing::RateEstimator output_rate{RATE_WINDOW_S, 0.0};
  dw::pacing::RateController controller;
  dw::pacing::OutputGrid grid;
  guint64 tick = 0;
  double rate = 1.0;
  Stats stats;
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

static double to_s(gint64 ns) { return static_cast<double>(ns) / GST_SECOND; }

/* Current running time on the element's clock (or the fallback clock), NONE without either. */
static GstClockTime running_time_now(GstFlightBuffer *self) {
  GstClock *clock = gst_element_get_clock(GST_ELEMENT(self));
  if (!clock) return GST_CLOCK_TIME_NONE;
  GstClockTime now = gst_clock_get_time(clock);
  gst_object_unref(clock);
  GstClockTime base = gst_element_get_base_time(GST_ELEMENT(self));
  if (!GST_CLOCK_TIME_IS_VALID(now) || !GST_CLOCK_TIME_IS_VALID(base) || now < base) return GST_CLOCK_TIME_NONE;
  return now - base;
}

static GstClockTime running_time_now_locked(GstFlightBuffer *self) {
  GstFlightBufferPrivate *priv = self->priv;
  GstClockTime rt = running_time_now(self);
  if (GST_CLOCK_TIME_IS_VALID(rt) || !priv->fallback_clock) return rt;
  GstClockTime now = gst_clock_get_time(priv->fallback_clock);
  return now >= priv->fallback_base ? now - priv->fallback_base : 0;
}

static gint64 fill_of(GstFlightBufferPrivate *priv) { return std::max<gint64>(0, priv->total - priv->offset); }

static bool is_full(GstFlightBufferPrivate *priv, const Settings &s) {
  if (s.max_size_time > 0 && static_cast<guint64>(fill_of(priv)) >= s.max_size_time) return true;
  if (s.max_size_buffers > 0 && priv->frames.size() >= s.max_size_buffers) return true;
  return false;
}

static bool buffering(State s) { return s == State::PREBUFFERING || s == State::REBUFFERING; }

static GstClockTime wait_latency(GstFlightBufferPrivate *priv) { return priv->have_latency ? priv->pipeline_latency : 0; }

static void wake_task(GstFlightBufferPrivate *priv) {
  if (priv->clock_id) gst_clock_id_unschedule(priv->clock_id);
  g_cond_broadcast(&priv->task_cond);
}

static void free_frame(Frame &f) {
  for (GstEvent *e : f.before) gst_event_unref(e);
  f.before.clear();
  gst_clear_buffer(&f.buffer);
}

/* Empties the queue and resets everything a flush or a stop resets (not the settings). */
static void reset_queue(GstFlightBuffer *self, bool reset_stats) {
  GstFlightBufferPrivate *priv = self->priv;
  for (Frame &f : priv->frames) free_frame(f);
  priv->frames.clear();
  for (GstEvent *e : priv->tail_events) gst_event_unref(e);
  priv->tail_events.clear();
  gst_clear_buffer(&priv->last_frame);
  priv->total = 0;
  priv->offset = 0;
  priv->eos = false;
  priv->start_full = false;
  priv->state = State::PREBUFFERING;
  priv->last_input_rt = GST_CLOCK_TIME_NONE;
  priv->last_pushed_pts = GST_CLOCK_TIME_NONE;
  priv->last_stats_rt = GST_CLOCK_TIME_NONE;
  priv->segment_sent = false;
  priv->discont = true;
  priv->input_rate.reset();
  priv->output_rate.reset();
  priv->controller.reset(1.0);
  priv->rate = 1.0;
  priv->tick = 0;
  if (reset_stats) priv->stats = Stats();
}

static GstStructure *build_stats(GstFlightBuffer *self, const char *name, const Settings &s, GstClockTime now) {
  GstFlightBufferPrivate *priv = self->priv;
  const double t = GST_CLOCK_TIME_IS_VALID(now) ? to_s(now) : 0.0;
  std::optional<double> in = priv->input_rate.rate(t);
  std::optional<double> out = priv->output_rate.rate(t);
  const Stats &st = priv->stats;
  return gst_structure_new(
      name, "state", G_TYPE_STRING, state_name(priv->state), "fill-time", G_TYPE_UINT64,
      static_cast<guint64>(fill_of(priv)), "fill-frames", G_TYPE_UINT, static_cast<guint>(priv->frames.size()),
      "prebuffer-time", G_TYPE_UINT64, s.prebuffer_time, "target-fill", G_TYPE_UINT64, s.target_fill,
      "max-size-time", G_TYPE_UINT64, s.max_size_time, "input-rate", G_TYPE_DOUBLE, in ? *in : -1.0, "output-rate",
      G_TYPE_DOUBLE, out ? *out : 0.0, "output-fps", G_TYPE_DOUBLE,
      static_cast<double>(priv->fps_n) / priv->fps_d, "playback-rate", G_TYPE_DOUBLE, priv->rate, "frames-in",
      G_TYPE_UINT64, st.frames_in, "frames-out", G_TYPE_UINT64, st.frames_out, "frames-repeated", G_TYPE_UINT64,
      st.frames_repeated, "frames-skipped", G_TYPE_UINT64, st.frames_skipped, "underruns", G_TYPE_UINT64,
      st.underruns, "drops", G_TYPE_UINT64, st.dropped_inbetweens + st.dropped_keyframes, "dropped-inbetweens",
      G_TYPE_UINT64, st.dropped_inbetweens, "dropped-keyframes", G_TYPE_UINT64, st.dropped_keyframes, "late-ticks",
      G_TYPE_UINT64, st.late_ticks, "prebuffer-incomplete", G_TYPE_UINT64, st.prebuffer_incomplete, "running-time",
      G_TYPE_UINT64, now, nullptr);
}

/* A dreamwindow-buffer element message (built under the lock, posted later). */
static void add_message(GstFlightBuffer *self, Pending &p, const Settings &s, const char *event, GstClockTime now,
                        const char *reason = nullptr) {
  if (!s.post_messages) return;
  GstStructure *st = build_stats(self, "dreamwindow-buffer", s, now);
  gst_structure_set(st, "event", G_TYPE_STRING, event, nullptr);
  if (reason) gst_structure_set(st, "reason", G_TYPE_STRING, reason, nullptr);
  p.messages.push_back(gst_message_new_element(GST_OBJECT(self), st));
}

static void maybe_stats_message(GstFlightBuffer *self, Pending &p, const Settings &s, GstClockTime now) {
  GstFlightBufferPrivate *priv = self->priv;
  if (!s.post_messages || s.stats_interval == 0 || !GST_CLOCK_TIME_IS_VALID(now)) return;
  if (GST_CLOCK_TIME_IS_VALID(priv->last_stats_rt) && now < priv->last_stats_rt + s.stats_interval) return;
  priv->last_stats_rt = now;
  add_message(self, p, s, "stats", now);
}

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

/* The output caps for `in`: its framerate replaced by the one downstream fixes, else output-fps. */
static GstCaps *output_caps_for(GstFlightBuffer *self, GstCaps *in, const Settings &s) {
  gint n = s.fps_n, d = s.fps_d;
  GstCaps *peer = gst_pad_peer_query_caps(self->srcpad, nullptr);
  if (peer && !gst_caps_is_any(peer) && !gst_caps_is_empty(peer)) {
    GstCaps *tmp = gst_caps_copy(in);
    gst_caps_set_simple(tmp, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1, G_MAXINT, 1, nullptr);
    GstCaps *inter = gst_caps_intersect(peer, tmp);
    if (!gst_caps_is_empty(inter)) {
      const GValue *v = gst_structure_get_value(gst_caps_get_structure(inter, 0), "framerate");
      if (v && GST_VALUE_HOLDS_FRACTION(v) && gst_value_get_fraction_numerator(v) > 0) {
        n = gst_value_get_fraction_numerator(v);
        d = gst_value_get_fraction_denominator(v);
      }
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
/* FLUSH_START from either side: wake the task and a blocked chain(), then pause the task (queue's
 * sequence; the lock is not held while pausing, the task needs it to finish its iteration). */
static void start_flushing(GstFlightBuffer *self) {
  GstFlightBufferPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  priv->srcresult = GST_FLOW_FLUSHING;
  wake_task(priv);
  g_cond_broadcast(&priv->chain_cond);
  g_mutex_unlock(&priv->lock);
  gst_pad_pause_task(self->srcpad);
}

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

/* ------------------------------------------------------------------------------------------------ */
/* Src task                                                                                         */

/* Leaves pre-buffering / re-buffering (lock held). */
static void start_output(GstFlightBuffer *self, Pending &p, const Settings &s, const char *reason, GstClockTime now) {
  GstFlightBufferPrivate *priv = self->priv;
  const State prev = priv->state;
  const guint64 threshold = prev == State::PREBUFFERING ? s.prebuffer_time : s.rebuffer_time;
  const gint64 fill = fill_of(priv);
  priv->state = State::PLAYING;
  priv->start_full = false;
  if (prev == State::PREBUFFERING) {
    priv->controller.reset(1.0);
    priv->rate = 1.0;
  }
  if (prev == State::PREBUFFERING && static_cast<guint64>(fill) < threshold && !priv->frames.empty()) {
    priv->stats.prebuffer_incomplete++;
    gchar *text = g_strdup_printf("Pre-buffer incomplete (%s): starting with %.1fs of %.1fs", reason, to_s(fill),
                                  to_s(threshold));
    p.warning = text;
    g_free(text);
  }
  /* Grid origin: the output starts now on the sink's timeline (it renders at pts + latency). */
  const GstClockTime lat = wait_latency(priv);
  GstClockTime origin = (GST_CLOCK_TIME_IS_VALID(now) && now > lat) ? now - lat : 0;
  if (GST_CLOCK_TIME_IS_VALID(priv->last_pushed_pts)) {
    GstClockTime after = priv->last_pushed_pts + gst_util_uint64_scale_int(GST_SECOND, priv->fps_d, priv->fps_n);
    origin = std::max(origin, after);
  }
  priv->grid.reset(priv->fps_n, priv->fps_d, static_cast<gint64>(origin));
  priv->tick = 0;
  GST_INFO_OBJECT(self, "output starts (%s) with %" GST_TIME_FORMAT " queued, grid origin %" GST_TIME_FORMAT, reason,
                  GST_TIME_ARGS(fill), GST_TIME_ARGS(origin));
  add_message(self, p, s, prev == State::PREBUFFERING ? "started" : "rebuffered", now, reason);
}

/* One iteration while pre-buffering or re-buffering (lock held). */
static void buffering_step(GstFlightBuffer *self, Pending &p, const Settings &s) {
  GstFlightBufferPrivate *priv = self->priv;
  GstClockTime now = running_time_now_locked(self);
  if (!priv->frames.empty() && !GST_CLOCK_TIME_IS_VALID(priv->last_input_rt)) priv->last_input_rt = now;
  const guint64 threshold = priv->state == State::PREBUFFERING ? s.prebuffer_time : s.rebuffer_time;
  const char *reason = nullptr;
  if (priv->eos) {
    reason = "eos";
  } else if (priv->start_full || (!priv->frames.empty() && is_full(priv, s))) {
    reason = "full";
  } else if (!priv->frames.empty() && static_cast<guint64>(fill_of(priv)) >= threshold) {
    reason = priv->state == State::PREBUFFERING ? "prebuffered" : "rebuffered";
  } else if (!priv->frames.empty() && GST_CLOCK_TIME_IS_VALID(now) &&
             GST_CLOCK_TIME_IS_VALID(priv->last_input_rt) && now >= priv->last_input_rt + s.prebuffer_timeout) {
    reason = "timeout";
  }
  if (reason) {
    start_output(self, p, s, reason, now);
    return;
  }
  maybe_stats_message(self, p, s, now);
  GstClockTime deadline = GST_CLOCK_TIME_NONE;
  if (!priv->frames.empty() && GST_CLOCK_TIME_IS_VALID(priv->last_input_rt))
    deadline = priv->last_input_rt + s.prebuffer_timeout;
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

/* Takes the serialized events of frames [0, upto] (in order). */
static void take_events(GstFlightBufferPrivate *priv, size_t upto, std::vector<Item> &items) {
  for (size_t i = 0; i <= upto && i < priv->frames.size(); ++i) {
    for (GstEvent *e : priv->frames[i].before) items.push_back({e, nullptr});
    priv->frames[i].before.clear();
  }
}

/* A framerate change in pushed caps rebases the grid at `next_pts` (lock held). */
static bool apply_caps_fps(GstFlightBufferPrivate *priv, GstEvent *event, GstClockTime next_pts) {
  if (GST_EVENT_TYPE(event) != GST_EVENT_CAPS) return false;
  GstCaps *caps = nullptr;
  gst_event_parse_caps(event, &caps);
  gint n = 0, d = 1;
  if (!caps || gst_caps_is_empty(caps) ||
      !gst_structure_get_fraction(gst_caps_get_structure(caps, 0), "framerate", &n, &d) || n <= 0 || d <= 0)
    return false;
  if (n == priv->fps_n && d == priv->fps_d) return false;
  priv->fps_n = n;
  priv->fps_d = d;
  priv->grid.reset(n, d, static_cast<gint64>(next_pts));
  priv->tick = 0;
  return true;
}

/* One output tick (or batch of ticks); lock held on entry, released on return. */
static void tick_step(GstFlightBuffer *self, Pending &p, const Settings &s) {
  GstFlightBufferPrivate *priv = self->priv;
  const GstClockTime lat = wait_latency(priv);
  GstClockTime target = static_cast<GstClockTime>(priv->grid.time(priv->tick)) + lat;
  GstClockReturn wret = wait_until(self, target);
  if (priv->srcresult != GST_FLOW_OK || !priv->playing || wret == GST_CLOCK_UNSCHEDULED) {
    g_mutex_unlock(&priv->lock);
    return;
  }
  GstClockTime now = running_time_now_locked(self);
  /* More than a tick late (downstream blocked us): skip to the current tick, content stays. */
  if (GST_CLOCK_TIME_IS_VALID(now) && now > target + priv->grid.duration(priv->tick)) {
    guint64 cur = priv->grid.index_at_or_after(static_cast<gint64>(now - lat));
    if (cur > priv->tick + 1) {
      priv->stats.late_ticks += cur - 1 - priv->tick;
      priv->tick = cur - 1;
    }
  }

  std::vector<Item> items;
  bool push_eos_done = false;
  const guint batch = std::max(1u, s.batch_size);
  const double now_s = GST_CLOCK_TIME_IS_VALID(now) ? to_s(now) : 0.0;
  for (guint k = 0; k < batch; ++k) {
    /* Caps that go out with this tick set its framerate: rebase the grid here, before stamping. */
    for (GstEvent *e : priv->frames.empty() ? priv->tail_events : priv->frames.front().before)
      apply_caps_fps(priv, e, static_cast<GstClockTime>(priv->grid.time(priv->tick)));
    const GstClockTime pts = static_cast<GstClockTime>(priv->grid.time(priv->tick));
    const GstClockTime dur = static_cast<GstClockTime>(priv->grid.duration(priv->tick));
    GstBuffer *out = nullptr;
    bool rebased = false;
    if (priv->frames.empty()) {
      for (GstEvent *e : priv->tail_events) {
        rebased |= apply_caps_fps(priv, e, pts + dur);
        items.push_back({e, nullptr});
      }
      priv->tail_events.clear();
      if (priv->eos) {
        priv->state = State::DONE;
        push_eos_done = true;
        break;
      }
      if (priv->state == State::PLAYING) {
        priv->stats.underruns++;
        priv->state = s.underrun_policy == GST_FLIGHT_BUFFER_UNDERRUN_PAUSE ? State::REBUFFERING : State::UNDERRUN;
        GST_DEBUG_OBJECT(self, "underrun at %" GST_TIME_FORMAT, GST_TIME_ARGS(pts));
        add_message(self, p, s, "underrun", now);
      }
      if (priv->state == State::REBUFFERING) break;
      if (priv->last_frame) {
        out = gst_buffer_ref(priv->last_frame);
        priv->stats.frames_repeated++;
      }
    } else {
      if (priv->state == State::UNDERRUN) {
        priv->state = State::PLAYING;
        add_message(self, p, s, "recovered", now);
      }
      if (s.adaptive) {
        dw::pacing::ControllerParams cp;
        cp.target_fill_s = to_s(s.target_fill);
        cp.min_rate = s.min_rate;
        cp.max_rate = s.max_rate;
        cp.max_change_per_s = s.max_rate_change;
        cp.correction_time_s = CORRECTION_TIME_S;
        priv->controller.set_params(cp);
        priv->rate = priv->controller.update(to_s(dur), to_s(fill_of(priv)), priv->input_rate.rate(now_s));
      } else {
        priv->controller.reset(1.0);
        priv->rate = 1.0;
      }
      const gint64 advance = std::llround(priv->rate * static_cast<double>(dur));
      dw::pacing::Step step = dw::pacing::plan_step(
          priv->frames.size(), [priv](size_t i) { return priv->frames[i].duration; }, priv->offset, advance);
      take_events(priv, step.show, items);
      for (const Item &it : items) rebased |= it.event && apply_caps_fps(priv, it.event, pts + dur);
      Frame &shown = priv->frames[step.show];
      out = gst_buffer_ref(shown.buffer);
      shown.shown = true;
      gst_buffer_replace(&priv->last_frame, shown.buffer);
      for (size_t i = 0; i < step.consumed; ++i) {
        Frame &f = priv->frames.front();
        if (!f.shown) priv->stats.frames_skipped++;
        priv->total -= f.duration;
        for (GstEvent *e : f.before) items.push_back({e, nullptr});  // none left (taken above) unless skipped past
        f.before.clear();
        free_frame(f);
        priv->frames.pop_front();
      }
      priv->offset = priv->frames.empty() ? 0 : step.offset;
      if (priv->frames.empty()) priv->total = 0;
      g_cond_broadcast(&priv->chain_cond);
    }
    if (out) {
      out = gst_buffer_make_writable(out);
      GST_BUFFER_PTS(out) = pts;
      GST_BUFFER_DTS(out) = GST_CLOCK_TIME_NONE;
      GST_BUFFER_DURATION(out) = dur;
      GST_BUFFER_OFFSET(out) = priv->stats.frames_out;
      GST_BUFFER_OFFSET_END(out) = priv->stats.frames_out + 1;
      if (priv->discont)
        GST_BUFFER_FLAG_SET(out, GST_BUFFER_FLAG_DISCONT);
      else
        GST_BUFFER_FLAG_UNSET(out, GST_BUFFER_FLAG_DISCONT);
      GST_BUFFER_FLAG_UNSET(out, GST_BUFFER_FLAG_GAP);
      priv->discont = false;
      priv->stats.frames_out++;
      priv->output_rate.add(now_s, 1.0);
      priv->last_pushed_pts = pts;
      items.push_back({nullptr, out});
    }
    if (!rebased) priv->tick++;
  }
  maybe_stats_message(self, p, s, now);
  g_mutex_unlock(&priv->lock);

  /* Push in order; consecutive buffers of a batch go out as one list. */
  GstFlowReturn ret = GST_FLOW_OK;
  GstBufferList *list = nullptr;
  auto flush_list = [&]() {
    if (!list) return;
    GstBufferList *l = list;
    list = nullptr;
    if (ret == GST_FLOW_OK) {
      ret = gst_pad_push_list(self->srcpad, l);
    } else {
      gst_buffer_list_unref(l);
    }
  };
  for (Item &it : items) {
    if (it.event) {
      flush_list();
      if (ret == GST_FLOW_OK || GST_EVENT_IS_STICKY(it.event)) {
        GST_DEBUG_OBJECT(self, "pushing %" GST_PTR_FORMAT, it.event);
        gst_pad_push_event(self->srcpad, it.event);
      } else {
        gst_event_unref(it.event);
      }
    } else if (batch > 1) {
      if (!list) list = gst_buffer_list_new_sized(batch);
      gst_buffer_list_add(list, it.buffer);
    } else if (ret == GST_FLOW_OK) {
      ret = gst_pad_push(self->srcpad, it.buffer);
    } else {
      gst_buffer_unref(it.buffer);
    }
  }
  flush_list();
  if (push_eos_done && ret == GST_FLOW_OK) ret = GST_FLOW_EOS;

  if (ret != GST_FLOW_OK) {
    g_mutex_lock(&priv->lock);
    if (priv->srcresult == GST_FLOW_OK) priv->srcresult = ret;
    g_cond_broadcast(&priv->chain_cond);
    g_mutex_unlock(&priv->lock);
    GST_DEBUG_OBJECT(self, "pausing task: %s", gst_flow_get_name(ret));
    gst_pad_pause_task(self->srcpad);
    if (!push_eos_done && (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS)) {
      GST_ELEMENT_FLOW_ERROR(self, ret);
      gst_pad_push_event(self->srcpad, gst_event_new_eos());
    }
  }
}

static void gst_flight_buffer_loop(GstPad *pad) {
  auto *self = GST_FLIGHT_BUFFER(GST_PAD_PARENT(pad));
  GstFlightBufferPrivate *priv = self->priv;
  const Settings s = settings_snapshot(self);
  Pending p;
  g_mutex_lock(&priv->lock);
  if (priv->srcresult != GST_FLOW_OK) {
    g_mutex_unlock(&priv->lock);
    GST_DEBUG_OBJECT(self, "pausing task: %s", gst_flow_get_name(priv->srcresult));
    gst_pad_pause_task(pad);
    return;
  }
  if (!priv->playing || priv->state == State::DONE) {
    g_cond_wait(&priv->task_cond, &priv->lock);
    g_mutex_unlock(&priv->lock);
    return;
  }
  if (buffering(priv->state)) {
    buffering_step(self, p, s);
    g_mutex_unlock(&priv->lock);
  } else {
    tick_step(self, p, s);  // unlocks
  }
  flush_pending(self, p);
}

/* ------------------------------------------------------------------------------------------------ */
/* Sink pad                                                                                         */

/* Overrun with drop-inbetween: drops one frame (lock held). Returns true when the incoming frame
 * itself is the one to drop. */
static bool drop_one(GstFlightBuffer *self, bool incoming_keyframe) {
  GstFlightBufferPrivate *priv = self->priv;
  auto remove_at = [priv](size_t i) {
    Frame &f = priv->frames[i];
    /* Its events still go out, before the next frame. */
    if (i + 1 < priv->frames.size()) {
      auto &next = priv->frames[i + 1].before;
      next.insert(next.begin(), f.before.begin(), f.before.end());
    } else {
      priv->tail_events.insert(priv->tail_events.begin(), f.before.begin(), f.before.end());
    }
    f.before.clear();
    if (i == 0) {
      priv->total -= priv->offset;
      priv->offset = 0;
    }
    priv->total -= f.duration;
    free_frame(f);
    priv->frames.erase(priv->frames.begin() + static_cast<long>(i));
  };
  /* The head may be on screen now: prefer later frames. */
  for (size_t i = 1; i < priv->frames.size(); ++i) {
    if (!priv->frames[i].keyframe) {
      remove_at(i);
      priv->stats.dropped_inbetweens++;
      return false;
    }
  }
  if (!priv->frames.empty() && !priv->frames[0].keyframe) {
    remove_at(0);
    priv->stats.dropped_inbetweens++;
    return false;
  }
  if (!incoming_keyframe) {
    priv->stats.dropped_inbetweens++;
    return true;
  }
  if (priv->frames.size() > 1) {
    remove_at(1);
  } else if (!priv->frames.empty()) {
    remove_at(0);
  } else {
    priv->stats.dropped_keyframes++;
    return true;
  }
  priv->stats.dropped_keyframes++;
  return false;
}

static GstFlowReturn gst_flight_buffer_chain(GstPad *pad, GstObject *parent, GstBuffer *buffer) {
  auto *self = GST_FLIGHT_BUFFER(parent);
  GstFlightBufferPrivate *priv = self->priv;
  const Settings s = settings_snapshot(self);
  const GstClockTime now = running_time_now(self);

  DwFrameMeta *meta = dw_buffer_get_frame_meta(buffer);
  const bool keyframe = !meta || meta->kind != DW_FRAME_KIND_INBETWEEN;
  const GstClockTime pts = GST_BUFFER_PTS(buffer);

  g_mutex_lock(&priv->lock);
  if (priv->srcresult != GST_FLOW_OK) goto out_flushing;
  if (priv->eos) goto out_eos;

  /* The previous frame's content ends where this one starts (when it had no duration). */
  if (!priv->frames.empty()) {
    Frame &tail = priv->frames.back();
    if (tail.provisional && GST_CLOCK_TIME_IS_VALID(pts) && GST_CLOCK_TIME_IS_VALID(tail.pts) && pts > tail.pts) {
      gint64 d = static_cast<gint64>(pts - tail.pts);
      if (s.max_size_time > 0) d = std::min<gint64>(d, static_cast<gint64>(s.max_size_time));
      priv->total += d - tail.duration;
      tail.duration = d;
      tail.provisional = false;
    }
  }

  while (is_full(priv, s)) {
    if (buffering(priv->state)) {
      /* Never wait for a pre-buffer the queue cannot hold: start with what there is. */
      priv->start_full = true;
      wake_task(priv);
    }
    if (s.overrun_policy == GST_FLIGHT_BUFFER_OVERRUN_DROP_INBETWEEN) {
      if (drop_one(self, keyframe)) {
        GST_LOG_OBJECT(self, "full: dropping incoming frame");
        g_mutex_unlock(&priv->lock);
        gst_buffer_unref(buffer);
        return GST_FLOW_OK;
      }
      continue;
    }
    GST_LOG_OBJECT(self, "full: blocking upstream");
    g_cond_wait(&priv->chain_cond, &priv->lock);
    if (priv->srcresult != GST_FLOW_OK) goto out_flushing;
  }

  {
    Frame f;
    f.buffer = buffer;
    f.pts = pts;
    f.keyframe = keyframe;
    if (GST_BUFFER_DURATION_IS_VALID(buffer) && GST_BUFFER_DURATION(buffer) > 0) {
      f.duration = static_cast<gint64>(GST_BUFFER_DURATION(buffer));
    } else {
      f.duration = static_cast<gint64>(gst_util_uint64_scale_int(GST_SECOND, priv->fps_d, priv->fps_n));
      f.provisional = true;
    }
    f.before = std::move(priv->tail_events);
    priv->tail_events.clear();
    priv->total += f.duration;
    priv->stats.frames_in++;
    if (GST_CLOCK_TIME_IS_VALID(now)) {
      priv->input_rate.add(to_s(now), to_s(f.duration));
      priv->last_input_rt = now;
    }
    priv->frames.push_back(std::move(f));
  }
  if (buffering(priv->state)) wake_task(priv);
  g_mutex_unlock(&priv->lock);
  return GST_FLOW_OK;

out_flushing : {
  GstFlowReturn ret = priv->srcresult;
  g_mutex_unlock(&priv->lock);
  GST_LOG_OBJECT(self, "refusing buffer: %s", gst_flow_get_name(ret));
  gst_buffer_unref(buffer);
  return ret;
}
out_eos:
  g_mutex_unlock(&priv->lock);
  gst_buffer_unref(buffer);
  return GST_FLOW_EOS;
}

static void start_task_if_active(GstFlightBuffer *self) {
  if (gst_pad_is_active(self->srcpad))
    gst_pad_start_task(self->srcpad, reinterpret_cast<GstTaskFunction>(gst_flight_buffer_loop), self->srcpad,
                       nullptr);
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

  const Settings s = settings_snapshot(self);
  if (GST_EVENT_TYPE(event) == GST_EVENT_CAPS) {
    GstCaps *in = nullptr;
    gst_event_parse_caps(event, &in);
    GstCaps *out = output_caps_for(self, in, s);
    GstEvent *ev = gst_event_new_caps(out);
    gst_event_set_seqnum(ev, gst_event_get_seqnum(event));
    gst_caps_unref(out);
    gst_event_unref(event);
    event = ev;
  }

  g_mutex_lock(&priv->lock);
  if (priv->srcresult != GST_FLOW_OK || priv->eos) {
    g_mutex_unlock(&priv->lock);
    GST_DEBUG_OBJECT(self, "refusing %" GST_PTR_FORMAT, event);
    gst_event_unref(event);
    return FALSE;
  }
  if (GST_EVENT_TYPE(event) == GST_EVENT_SEGMENT) {
    /* Output is re-timestamped in running time: one TIME segment from 0 replaces the input's. */
    if (priv->segment_sent) {
      g_mutex_unlock(&priv->lock);
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
    priv->eos = true;
  }
  priv->tail_events.push_back(event);
  wake_task(priv);
  g_mutex_unlock(&priv->lock);
  return TRUE;
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
    g_mutex_lock(&priv->lock);
    priv->srcresult = GST_FLOW_FLUSHING;
    wake_task(priv);
    g_cond_broadcast(&priv->chain_cond);
    g_mutex_unlock(&priv->lock);
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
  g_mutex_lock(&priv->lock);
  priv->srcresult = GST_FLOW_FLUSHING;
  wake_task(priv);
  g_cond_broadcast(&priv->chain_cond);
  g_mutex_unlock(&priv->lock);
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
      priv->pipeline_latency = latency;
      priv->have_latency = true;
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
      GstClockTime pos = priv->last_pushed_pts;
      g_mutex_unlock(&priv->lock);
      if (!GST_CLOCK_TIME_IS_VALID(pos)) return FALSE;
      gst_query_set_position(query, GST_FORMAT_TIME, static_cast<gint64>(pos));
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
      priv->fps_n = s.fps_n;
      priv->fps_d = s.fps_d;
      priv->have_latency = false;
      priv->pipeline_latency = 0;
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
  if (buffering(priv->state)) wake_task(priv);
  g_mutex_unlock(&priv->lock);
}

static void gst_flight_buffer_get_property(GObject *object, guint prop_id, GValue *value, GParamSpec *pspec) {
  auto *self = GST_FLIGHT_BUFFER(object);
  if (prop_id == PROP_STATS) {
    const Settings s = settings_snapshot(self);
    GstClockTime now = running_time_now(self);
    g_mutex_lock(&self->priv->lock);
    GstStructure *st = build_stats(self, "application/x-flightbuffer-stats", s, now);
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

static void gst_flight_buffer_class_init(GstFlightBufferClass *klass) {
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);

  gobject_class->set_property = gst_flight_buffer_set_property;
  gobject_class->get_property = gst_flight_buffer_get_property;
  gobject_class->finalize = gst_flight_buffer_finalize;
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_flight_buffer_change_state);

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
                         "s/s, -1 unknown), output-rate (frames/s), output-fps, playback-rate, frames-in, "
                         "frames-out, frames-repeated, frames-skipped, underruns, drops, dropped-inbetweens, "
                         "dropped-keyframes, late-ticks, prebuffer-incomplete, running-time",
                         GST_TYPE_STRUCTURE, static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

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

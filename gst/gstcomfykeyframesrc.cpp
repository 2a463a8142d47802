/* comfykeyframesrc
 *
 * A live source whose buffers are keyframes made by ComfyUI servers, each one from a previous
 * keyframe (img2img feedback loop). `server` may list several servers: a backend pool.
 *
 * This file is glue: properties, the client thread, libsoup clients, messages and buffers. It
 * delegates every decision to lib/:
 *  - lib/comfy/scheduler.h (dw::comfy::Scheduler): admission and backpressure, prompt/seed per job,
 *    which backend runs each job, retries (all paced by dw::comfy::Backoff), outages and max-outage,
 *    re-uploads of its own copy of the newest keyframe, injection resets, discontinuities;
 *  - lib/comfy/client.h: one dw::comfy::Client per backend (HTTP, websocket, health);
 *  - lib/comfy/url.h: the server list; lib/comfy/sourcesetup.h: bindings, the bootstrap image;
 *  - gst/dwframe.h: GstBuffer <-> dw::Image; gst/dwmeta.h: the keyframe facts on each buffer;
 *    gst/dwstats.h: stats and message field names.
 *
 * Threads (see docs/architecture.md):
 *  - the client thread runs its own GMainContext; the clients and the scheduler live there (libsoup 3
 *    objects stay on the thread whose context made them). Job futures complete there, and the moment
 *    keyframe N lands the next job is submitted from there, before N is handed to the streaming
 *    thread, so ComfyUI works on N+1 while N travels downstream. Other threads reach it only through
 *    g_main_context_invoke.
 *  - the streaming thread (create()) only waits for the next finished keyframe.
 * Lock rule: `lock` guards what both threads share (ready queue, fatal error, stats copy); every
 * function takes it briefly itself and nothing is posted, emitted or submitted while holding it.
 *
 * Example:
 *   gst-launch-1.0 comfykeyframesrc server=http://127.0.0.1:8188 num-keyframes=10 ! videoconvert ! autovideosink
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstcomfykeyframesrc.h"

#include <gio/gio.h>
#include <gst/video/video.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "comfy/client.h"
#include "comfy/scheduler.h"
#include "comfy/sourcesetup.h"
#include "comfy/url.h"
#include "comfy/workflow.h"
#include "dwevents.h"
#include "dwframe.h"
#include "dwmeta.h"
#include "dwstats.h"
#include "gstdreamwindowelements.h"
#include "image/image.h"

GST_DEBUG_CATEGORY_STATIC(comfykeyframesrc_debug);
#define GST_CAT_DEFAULT comfykeyframesrc_debug

using dw::comfy::Error;
using dw::comfy::ErrorKind;
using dw::comfy::Failure;
using dw::comfy::Health;
using dw::comfy::health_name;

#define DEFAULT_SERVER "http://127.0.0.1:8188"
#define DEFAULT_PROMPT "a dreamlike landscape, soft light, highly detailed"
#define DEFAULT_NEGATIVE_PROMPT "blurry, low quality, watermark, text"
#define DEFAULT_PROMPT_INTERVAL 8
#define DEFAULT_SEED 0
#define DEFAULT_SEED_MODE GST_COMFY_SEED_MODE_INCREMENT
#define DEFAULT_DENOISE 0.5
#define DEFAULT_STEPS -1
#define DEFAULT_CFG -1.0
#define DEFAULT_WIDTH 512
#define DEFAULT_HEIGHT 512
#define DEFAULT_MAX_IN_FLIGHT 1
#define DEFAULT_NUM_KEYFRAMES -1
#define DEFAULT_CONNECT_TIMEOUT 5000
#define DEFAULT_QUEUE_TIMEOUT 10000
#define DEFAULT_EXECUTE_TIMEOUT 300000
#define DEFAULT_DOWNLOAD_TIMEOUT 30000
#define DEFAULT_MAX_RETRIES 3
#define DEFAULT_MAX_OUTAGE 0
#define DEFAULT_SIZE_MISMATCH GST_COMFY_SIZE_MISMATCH_SCALE
#define DEFAULT_USE_WEBSOCKET TRUE
#define DEFAULT_POST_MESSAGES TRUE
/* Keyframes are stamped with the running time at which they became available; this much slack lets
 * a sink show them although they reach it a few milliseconds later. */
#define KEYFRAME_LATENCY (100 * GST_MSECOND)
/* The built-in workflow used when the workflow property is not set (embedded GResource). */
#define BUILTIN_WORKFLOW_RESOURCE "/org/dreamwindow/workflows/sdturbo_img2img.json"

enum {
  PROP_0,
  PROP_SERVER,
  PROP_WORKFLOW,
  PROP_BINDINGS,
  PROP_PROMPT,
  PROP_NEGATIVE_PROMPT,
  PROP_PROMPTS,
  PROP_PROMPT_INTERVAL,
  PROP_SEED,
  PROP_SEED_MODE,
  PROP_DENOISE,
  PROP_STEPS,
  PROP_CFG,
  PROP_WIDTH,
  PROP_HEIGHT,
  PROP_MAX_IN_FLIGHT,
  PROP_NUM_KEYFRAMES,
  PROP_SEED_IMAGE,
  PROP_CONNECT_TIMEOUT,
  PROP_QUEUE_TIMEOUT,
  PROP_EXECUTE_TIMEOUT,
  PROP_DOWNLOAD_TIMEOUT,
  PROP_MAX_RETRIES,
  PROP_MAX_OUTAGE,
  PROP_SIZE_MISMATCH,
  PROP_USE_WEBSOCKET,
  PROP_POST_MESSAGES,
  PROP_STATS,
};

GType gst_comfy_seed_mode_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_COMFY_SEED_MODE_FIXED, "The same seed for every job", "fixed"},
      {GST_COMFY_SEED_MODE_INCREMENT, "seed + job index", "increment"},
      {GST_COMFY_SEED_MODE_RANDOM, "A random seed per job", "random"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstComfySeedMode", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

GType gst_comfy_size_mismatch_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_COMFY_SIZE_MISMATCH_SCALE, "Scale the image to width x height", "scale"},
      {GST_COMFY_SIZE_MISMATCH_ERROR, "Fail with an error", "error"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstComfySizeMismatch", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

namespace {

struct Settings {
  std::string server = DEFAULT_SERVER;
  std::string workflow;  // empty = built-in
  std::string bindings;
  std::string prompt = DEFAULT_PROMPT;
  std::string negative_prompt = DEFAULT_NEGATIVE_PROMPT;
  std::vector<std::string> prompts;
  guint prompt_interval = DEFAULT_PROMPT_INTERVAL;
  gint64 seed = DEFAULT_SEED;
  GstComfySeedMode seed_mode = DEFAULT_SEED_MODE;
  gdouble denoise = DEFAULT_DENOISE;
  gint steps = DEFAULT_STEPS;
  gdouble cfg = DEFAULT_CFG;
  gint width = DEFAULT_WIDTH;
  gint height = DEFAULT_HEIGHT;
  guint max_in_flight = DEFAULT_MAX_IN_FLIGHT;
  gint num_keyframes = DEFAULT_NUM_KEYFRAMES;
  std::string seed_image;
  guint connect_timeout = DEFAULT_CONNECT_TIMEOUT;
  guint queue_timeout = DEFAULT_QUEUE_TIMEOUT;
  guint execute_timeout = DEFAULT_EXECUTE_TIMEOUT;
  guint download_timeout = DEFAULT_DOWNLOAD_TIMEOUT;
  guint max_retries = DEFAULT_MAX_RETRIES;
  guint max_outage = DEFAULT_MAX_OUTAGE;
  GstComfySizeMismatch size_mismatch = DEFAULT_SIZE_MISMATCH;
  gboolean use_websocket = DEFAULT_USE_WEBSOCKET;
  gboolean post_messages = DEFAULT_POST_MESSAGES;
};

/* A finished keyframe waiting for the streaming thread, with the facts that travel with it. */
struct Keyframe {
  dw::Image image;  // already at width x height
  bool injected = false;
  bool discont = false;
  std::string reason, prompt, server;
  gint64 seed = -1;
  gint64 parent = -1;  // keyframe index it was made from (-1: seed image, or injected)
  GstClockTime generation_time = GST_CLOCK_TIME_NONE;
  GstClockTime available_running_time = GST_CLOCK_TIME_NONE;
};

/* What the client thread publishes for the stats property. */
struct Stats {
  guint64 keyframes = 0;
  GstClockTime server_wait_time = 0;  // time create() spent waiting for a keyframe
  dw::comfy::SchedulerStats sched;
  std::vector<dw::comfy::BackendStats> backends;
  std::vector<dw::comfy::ClientStats> clients;
};

}  // namespace

struct GstComfyKeyframeSrcPrivate {
  /* Property values; GST_OBJECT_LOCK. */
  Settings settings;

  /* Shared between the client thread and the streaming thread; `lock` + `cond`. */
  GMutex lock;
  GCond cond;
  std::deque<Keyframe> ready;
  bool flushing = false;
  bool fatal = false;
  GQuark fatal_domain = 0;
  gint fatal_code = 0;
  std::string fatal_message, fatal_debug;
  guint64 pushed = 0;
  Stats stats;
  GMainContext *client_context = nullptr;  // valid while the client thread runs

  /* Fixed while running (set in start()). */
  std::unique_ptr<dw::comfy::Workflow> workflow;
  std::vector<dw::comfy::ServerUrl> servers;
  std::vector<uint8_t> first_png;  // seed-image, or the generated bootstrap image
  bool bootstrap = false;
  std::string upload_prefix;
  GThread *client_thread = nullptr;
  GMainLoop *client_loop = nullptr;

  /* Client thread only. */
  std::vector<std::unique_ptr<dw::comfy::Client>> clients;  // one per backend, same order as servers
  std::unique_ptr<dw::comfy::Scheduler> scheduler;
  guint timer_source = 0;

  /* Streaming thread only. */
  GstVideoInfo info;
  GstClockTime last_pts = GST_CLOCK_TIME_NONE;
};

struct _GstComfyKeyframeSrc {
  GstPushSrc parent;
  GstComfyKeyframeSrcPrivate *priv;
};

#define gst_comfy_keyframe_src_parent_class parent_class
G_DEFINE_TYPE(GstComfyKeyframeSrc, gst_comfy_keyframe_src, GST_TYPE_PUSH_SRC);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE(comfykeyframesrc, "comfykeyframesrc", GST_RANK_NONE,
                                      GST_TYPE_COMFY_KEYFRAME_SRC,
                                      GST_DEBUG_CATEGORY_INIT(comfykeyframesrc_debug, "comfykeyframesrc", 0,
                                                              "ComfyUI keyframe source"));

static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS,
                            GST_STATIC_CAPS("video/x-raw, format = (string) { RGB, RGBA }, "
                                            "width = (int) [ 8, 8192 ], height = (int) [ 8, 8192 ], "
                                            "framerate = (fraction) 0/1"));

/* ------------------------------------------------------------------------------------------------ */
/* Helpers (any thread; each takes the lock it needs itself)                                         */

static Settings settings_snapshot(GstComfyKeyframeSrc *self) {
  GST_OBJECT_LOCK(self);
  Settings s = self->priv->settings;
  GST_OBJECT_UNLOCK(self);
  return s;
}

static GstClockTime current_running_time(GstComfyKeyframeSrc *self) {
  GstClock *clock = gst_element_get_clock(GST_ELEMENT(self));
  if (!clock) return GST_CLOCK_TIME_NONE;
  GstClockTime now = gst_clock_get_time(clock);
  gst_object_unref(clock);
  GstClockTime base = gst_element_get_base_time(GST_ELEMENT(self));
  if (!GST_CLOCK_TIME_IS_VALID(base) || now < base) return GST_CLOCK_TIME_NONE;
  return now - base;
}

/* Records a fatal error for the streaming thread to raise (it posts it without holding locks). */
static void set_fatal(GstComfyKeyframeSrc *self, GQuark domain, gint code, const std::string &message,
                      const std::string &debug) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  if (!priv->fatal) {
    priv->fatal = true;
    priv->fatal_domain = domain;
    priv->fatal_code = code;
    priv->fatal_message = message;
    priv->fatal_debug = debug;
  }
  g_cond_broadcast(&priv->cond);
  g_mutex_unlock(&priv->lock);
}

/* The exception boundary of every GLib/libsoup callback: nothing escapes into C. */
template <typename F>
static void guarded(GstComfyKeyframeSrc *self, const char *what, F &&fn) {
  try {
    fn();
  } catch (const std::exception &e) {
    set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, what, e.what());
  }
}

static dw::comfy::LoopParams loop_params(const Settings &s) {
  dw::comfy::LoopParams p;
  p.prompt = s.prompt;
  p.prompts = s.prompts;
  p.prompt_interval = s.prompt_interval;
  p.seed = s.seed;
  p.seed_mode = static_cast<dw::comfy::SeedMode>(s.seed_mode);
  p.denoise = s.denoise;
  p.max_in_flight = s.max_in_flight;
  p.num_keyframes = s.num_keyframes;
  p.max_retries = s.max_retries;
  p.max_outage_s = s.max_outage;
  return p;
}

/* ------------------------------------------------------------------------------------------------ */
/* Client thread                                                                                    */

static void drive(GstComfyKeyframeSrc *self, size_t extra_ready = 0);

static bool is_fatal(GstComfyKeyframeSrc *self) {
  g_mutex_lock(&self->priv->lock);
  bool fatal = self->priv->fatal;
  g_mutex_unlock(&self->priv->lock);
  return fatal;
}

static void publish_stats(GstComfyKeyframeSrc *self) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  std::vector<dw::comfy::ClientStats> clients;
  for (const auto &c : priv->clients) clients.push_back(c->stats());
  dw::comfy::SchedulerStats sched = priv->scheduler->stats();
  std::vector<dw::comfy::BackendStats> backends = priv->scheduler->backend_stats();
  g_mutex_lock(&priv->lock);
  priv->stats.sched = sched;
  priv->stats.backends = std::move(backends);
  priv->stats.clients = std::move(clients);
  g_mutex_unlock(&priv->lock);
}

/* A keyframe for the streaming thread. */
static void hand_over(GstComfyKeyframeSrc *self, Keyframe kf) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  priv->ready.push_back(std::move(kf));
  g_cond_broadcast(&priv->cond);
  g_mutex_unlock(&priv->lock);
}

static void on_job_done(GstComfyKeyframeSrc *self, guint64 ticket, size_t backend, dw::comfy::JobResult &&result);
static void on_job_error(GstComfyKeyframeSrc *self, guint64 ticket, const Error &error);

static void submit_plan(GstComfyKeyframeSrc *self, const Settings &s, dw::comfy::JobPlan plan) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  dw::comfy::JobParams base;
  base.negative_prompt = s.negative_prompt;
  if (s.steps >= 0) base.steps = s.steps;
  if (s.cfg >= 0) base.cfg = s.cfg;
  dw::comfy::JobSpec spec = dw::comfy::make_job_spec(plan, priv->workflow.get(), base);

  dw::comfy::JobCallbacks callbacks;
  guint64 ticket = plan.ticket;
  size_t backend = plan.backend;
  callbacks.on_done = [self, ticket, backend](dw::comfy::JobResult &&r) {
    guarded(self, "Failed to process a keyframe", [&] { on_job_done(self, ticket, backend, std::move(r)); });
  };
  callbacks.on_error = [self, ticket](const Error &e) {
    guarded(self, "Failed to handle a job error", [&] { on_job_error(self, ticket, e); });
  };
  callbacks.on_progress = [self](const dw::comfy::Progress &p) {
    GST_LOG_OBJECT(self, "progress %s node %s %.0f/%.0f", p.prompt_id.c_str(), p.node.c_str(), p.value, p.max);
  };
  std::string id = priv->clients[backend]->submit(std::move(spec), std::move(callbacks));
  priv->scheduler->started(ticket, id);
  GST_DEBUG_OBJECT(self, "job %" G_GUINT64_FORMAT " (attempt %u) on %s as %s, prompt '%s', seed %" G_GINT64_FORMAT
                   ", denoise %.2f, input %s",
                   plan.job_index, plan.attempt, priv->servers[backend].base().c_str(), id.c_str(),
                   plan.prompt.c_str(), plan.seed, plan.denoise,
                   plan.input_value.empty() ? plan.upload_name.c_str() : plan.input_value.c_str());
}

static void post_notice(GstComfyKeyframeSrc *self, const dw::comfy::Notice &n) {
  const std::string server = self->priv->servers[n.backend].base();
  const char *event = n.health == Health::Ok ? "recovered" : n.health == Health::Degraded ? "degraded" : "down";
  if (n.health == Health::Unreachable)
    GST_ELEMENT_WARNING(self, RESOURCE, OPEN_READ,
                        ("ComfyUI server %s is unreachable (not reachable); retrying", server.c_str()),
                        ("%s", n.message.c_str()));
  else if (n.health == Health::Unresponsive)
    GST_ELEMENT_WARNING(self, RESOURCE, READ,
                        ("ComfyUI server %s is unresponsive (connects but does not answer); retrying", server.c_str()),
                        ("%s", n.message.c_str()));
  else if (n.health == Health::Degraded)
    GST_ELEMENT_WARNING(self, RESOURCE, READ,
                        ("ComfyUI server %s: websocket silent, following jobs by polling", server.c_str()),
                        ("%s", n.message.c_str()));
  else
    GST_INFO_OBJECT(self, "ComfyUI server %s is back after %.1f s", server.c_str(), n.down_us / 1e6);
  GstStructure *st = gst_structure_new(DW_MSG_BACKEND_NAME, DW_MSG_BACKEND_SERVER, G_TYPE_STRING, server.c_str(),
                                       DW_MSG_BACKEND_INDEX, G_TYPE_UINT, static_cast<guint>(n.backend),
                                       DW_MSG_BACKEND_EVENT, G_TYPE_STRING, event, DW_MSG_BACKEND_HEALTH,
                                       G_TYPE_STRING, health_name(n.health), DW_MSG_BACKEND_MESSAGE, G_TYPE_STRING,
                                       n.message.c_str(), DW_MSG_BACKEND_DOWN_TIME, G_TYPE_UINT64,
                                       static_cast<guint64>(std::max<int64_t>(0, n.down_us)) * GST_USECOND, nullptr);
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), st));
}

static gboolean timer_cb(gpointer data);

static void rearm_timer(GstComfyKeyframeSrc *self) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (priv->timer_source) {
    GSource *old = g_main_context_find_source_by_id(priv->client_context, priv->timer_source);
    if (old) g_source_destroy(old);
    priv->timer_source = 0;
  }
  gint64 wake = priv->scheduler->next_wakeup_us();
  if (wake < 0) return;
  gint64 delay_ms = std::max<gint64>(0, (wake - g_get_monotonic_time() + 999) / 1000);
  GSource *source = g_timeout_source_new(static_cast<guint>(std::min<gint64>(delay_ms, G_MAXUINT)));
  g_source_set_callback(source, timer_cb, self, nullptr);
  priv->timer_source = g_source_attach(source, priv->client_context);
  g_source_unref(source);
}

/* After every event: forget jobs the scheduler moved, announce backend changes, submit what the
 * scheduler admits (counting `extra_ready` keyframes about to be handed over), publish stats. */
static void drive(GstComfyKeyframeSrc *self, size_t extra_ready) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (!priv->scheduler) return;
  for (const dw::comfy::Cancel &c : priv->scheduler->take_cancels())
    if (!c.prompt_id.empty()) priv->clients[c.backend]->cancel(c.prompt_id, c.tell_server);
  for (const dw::comfy::Notice &n : priv->scheduler->take_notices()) post_notice(self, n);
  if (!is_fatal(self)) {
    Settings s = settings_snapshot(self);
    priv->scheduler->set_params(loop_params(s));
    dw::comfy::Downstream d;
    g_mutex_lock(&priv->lock);
    d.ready = priv->ready.size() + extra_ready;
    d.pushed = priv->pushed;
    g_mutex_unlock(&priv->lock);
    for (dw::comfy::JobPlan &plan : priv->scheduler->plan(g_get_monotonic_time(), d))
      submit_plan(self, s, std::move(plan));
  }
  rearm_timer(self);
  publish_stats(self);
}

static gboolean timer_cb(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  self->priv->timer_source = 0;
  guarded(self, "Failed to retry a job", [&] { drive(self); });
  return G_SOURCE_REMOVE;
}

static gboolean schedule_cb(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  guarded(self, "Failed to queue a job", [&] { drive(self); });
  return G_SOURCE_REMOVE;
}

static void on_job_error(GstComfyKeyframeSrc *self, guint64 ticket, const Error &error) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  Failure f = priv->scheduler->failed(ticket, g_get_monotonic_time(), error);
  const std::string server = priv->servers[f.backend].base();
  if (f.action == Failure::Action::Retry && f.counted) {
    GST_ELEMENT_WARNING(self, STREAM, FAILED,
                        ("ComfyUI job for keyframe %" G_GUINT64_FORMAT " failed; retry %u of %u", f.job_index,
                         f.attempt, f.max_retries),
                        ("%s (server %s, next attempt in %u ms)", f.message.c_str(), server.c_str(), f.delay_ms));
  } else if (f.action == Failure::Action::Retry) {
    GST_INFO_OBJECT(self, "job %" G_GUINT64_FORMAT " re-queued in %u ms (no retry spent): %s", f.job_index,
                    f.delay_ms, f.message.c_str());
  } else if (f.fatal == Failure::Fatal::Rejected) {
    Settings s = settings_snapshot(self);
    set_fatal(self, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
              "ComfyUI rejected the workflow " + (s.workflow.empty() ? std::string("(built-in)") : s.workflow),
              f.message + " (server " + server + ")");
  } else if (f.fatal == Failure::Fatal::RetriesExhausted) {
    set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
              "ComfyUI job for keyframe " + std::to_string(f.job_index) + " failed " + std::to_string(f.attempt + 1) +
                  " times",
              f.message + " (server " + server + ")");
  } else if (f.fatal == Failure::Fatal::OutageTooLong) {
    set_fatal(self, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ,
              "No ComfyUI server answered for longer than max-outage (" +
                  std::to_string(settings_snapshot(self).max_outage) + " s)",
              f.message + " (last tried " + server + ")");
  }
  drive(self);
}

static void on_job_done(GstComfyKeyframeSrc *self, guint64 ticket, size_t backend, dw::comfy::JobResult &&result) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  Settings s = settings_snapshot(self);
  dw::Image image;
  std::string decode_error;
  if (!dw::decode_png(result.image.data(), result.image.size(), image, &decode_error)) {
    on_job_error(self, ticket,
                 Error(ErrorKind::BadImage, "output of " + result.prompt_id + " is not a PNG: " + decode_error));
    return;
  }
  if (image.width != s.width || image.height != s.height) {
    if (s.size_mismatch == GST_COMFY_SIZE_MISMATCH_ERROR) {
      set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
                "ComfyUI returned a " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                    " image, expected " + std::to_string(s.width) + "x" + std::to_string(s.height),
                "size-mismatch=error; set size-mismatch=scale or match width/height to the workflow");
      return;
    }
    GST_DEBUG_OBJECT(self, "scaling %dx%d -> %dx%d", image.width, image.height, s.width, s.height);
    image = dw::resize_bilinear(image, s.width, s.height);
  }
  int64_t generation_us = std::max<int64_t>(0, result.finished_us - result.submitted_us);
  std::string server_value = result.ref.filename.empty() ? std::string() : result.ref.load_image_value();
  dw::comfy::Delivery d = priv->scheduler->succeeded(ticket, g_get_monotonic_time(), std::move(result.image),
                                                     server_value, generation_us);
  if (!d.accepted) return;  // made stale (injection) while it was being fetched

  Keyframe kf;
  kf.image = std::move(image);
  kf.prompt = d.prompt;
  kf.seed = d.seed;
  kf.discont = d.discont;
  kf.parent = d.parent;
  kf.server = priv->servers[backend].base();
  kf.generation_time = static_cast<GstClockTime>(generation_us) * GST_USECOND;
  GstState state = GST_STATE(self);  // racy read is fine: only picks how to stamp
  kf.available_running_time = state == GST_STATE_PLAYING ? current_running_time(self) : GST_CLOCK_TIME_NONE;
  if (d.discont) GST_INFO_OBJECT(self, "first keyframe after an outage gap: marked as a discontinuity");
  /* Queue the next job first (counting this keyframe as waiting), then hand this one over. */
  drive(self, 1);
  hand_over(self, std::move(kf));
}

struct InjectRequest {
  GstComfyKeyframeSrc *self;
  dw::Image image;
  std::string reason;
};

static void apply_injection(InjectRequest *req) {
  GstComfyKeyframeSrc *self = req->self;
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (!priv->scheduler) return;
  Settings s = settings_snapshot(self);
  dw::Image image = req->image;
  if (image.width != s.width || image.height != s.height) image = dw::resize_bilinear(image, s.width, s.height);

  /* Jobs running from the old lineage would overwrite the injection: forget them. */
  std::vector<dw::comfy::Cancel> cancels = priv->scheduler->inject(dw::encode_png(image, 1));
  for (const dw::comfy::Cancel &c : cancels)
    if (!c.prompt_id.empty()) priv->clients[c.backend]->cancel(c.prompt_id, c.tell_server);

  Keyframe kf;
  kf.image = std::move(image);
  kf.injected = true;
  kf.reason = req->reason;
  kf.generation_time = 0;
  kf.prompt = priv->scheduler->next_prompt();
  kf.available_running_time = GST_STATE(self) == GST_STATE_PLAYING ? current_running_time(self) : GST_CLOCK_TIME_NONE;
  GST_INFO_OBJECT(self, "injected keyframe (%s); %zu stale job(s) discarded", req->reason.c_str(), cancels.size());
  drive(self, 1);
  hand_over(self, std::move(kf));
}

static gboolean inject_cb(gpointer data) {
  auto *req = static_cast<InjectRequest *>(data);
  guarded(req->self, "Failed to inject a keyframe", [&] { apply_injection(req); });
  return G_SOURCE_REMOVE;
}

static void on_health(GstComfyKeyframeSrc *self, size_t backend, const dw::comfy::HealthEvent &e) {
  GST_DEBUG_OBJECT(self, "backend %zu health %s: %s", backend, health_name(e.health), e.message.c_str());
  self->priv->scheduler->health_changed(backend, e.health, g_get_monotonic_time(), e.message);
  drive(self);
}

static gboolean shutdown_cb(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  guarded(self, "Failed to stop the ComfyUI clients", [&] {
    if (priv->timer_source) {
      GSource *src = g_main_context_find_source_by_id(priv->client_context, priv->timer_source);
      if (src) g_source_destroy(src);
      priv->timer_source = 0;
    }
    priv->clients.clear();  // cancels every request; no callback after this (callbacks use the scheduler)
    priv->scheduler.reset();
  });
  g_main_loop_quit(priv->client_loop);
  return G_SOURCE_REMOVE;
}

/* One client per backend, all on this thread's context. */
static void start_clients(GstComfyKeyframeSrc *self, const Settings &s) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  dw::comfy::SchedulerConfig config;
  config.backends = priv->servers.size();
  config.bootstrap = priv->bootstrap;
  config.upload_prefix = priv->upload_prefix;
  priv->scheduler = std::make_unique<dw::comfy::Scheduler>(config, loop_params(s), priv->first_png);
  for (size_t b = 0; b < priv->servers.size(); ++b) {
    dw::comfy::ClientConfig cc;
    cc.server_url = priv->servers[b].base();
    cc.timeouts.connect_ms = s.connect_timeout;
    cc.timeouts.queue_ms = s.queue_timeout;
    cc.timeouts.execute_ms = s.execute_timeout;
    cc.timeouts.download_ms = s.download_timeout;
    cc.use_websocket = s.use_websocket;
    auto client = std::make_unique<dw::comfy::Client>(cc, priv->client_context);
    client->set_connection_callback([self, b](bool connected, const Error &error) {
      guarded(self, "Failed to handle a connection change", [&] {
        GST_INFO_OBJECT(self, "backend %zu websocket %s %s", b, connected ? "connected" : "down",
                        connected ? "" : error.describe().c_str());
        publish_stats(self);
      });
    });
    client->set_health_callback([self, b](const dw::comfy::HealthEvent &e) {
      guarded(self, "Failed to handle a health change", [&] { on_health(self, b, e); });
    });
    priv->clients.push_back(std::move(client));
  }
  for (auto &c : priv->clients) c->start();
}

static gpointer client_thread_func(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  GMainContext *context = priv->client_context;
  g_main_context_push_thread_default(context);
  guarded(self, "Failed to start the ComfyUI clients", [&] {
    start_clients(self, settings_snapshot(self));
    drive(self);
  });
  g_main_loop_run(priv->client_loop);
  priv->clients.clear();
  priv->scheduler.reset();
  /* Cancelled requests complete from idle sources on this context: dispatch them now, or their
   * GTasks (holding the SoupSession, messages and connections) are never released. */
  while (g_main_context_iteration(context, FALSE)) {
  }
  g_main_context_pop_thread_default(context);
  return nullptr;
}

/* ------------------------------------------------------------------------------------------------ */
/* GstBaseSrc                                                                                       */

static bool load_workflow(GstComfyKeyframeSrc *self, const Settings &s) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  dw::comfy::BindingOverrides overrides;
  std::string binding_error;
  if (!dw::comfy::parse_bindings(s.bindings, &overrides, &binding_error)) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Invalid bindings property: %s", binding_error.c_str()), (nullptr));
    return false;
  }
  Error error;
  if (s.workflow.empty()) {
    GError *gerr = nullptr;
    GBytes *bytes = g_resources_lookup_data(BUILTIN_WORKFLOW_RESOURCE, G_RESOURCE_LOOKUP_FLAGS_NONE, &gerr);
    if (!bytes) {
      GST_ELEMENT_ERROR(self, LIBRARY, INIT, ("Built-in workflow missing"), ("%s", gerr->message));
      g_clear_error(&gerr);
      return false;
    }
    gsize size = 0;
    const char *data = static_cast<const char *>(g_bytes_get_data(bytes, &size));
    priv->workflow = dw::comfy::Workflow::load_string(std::string(data, size), overrides, &error,
                                                      "built-in sdturbo_img2img.json");
    g_bytes_unref(bytes);
  } else {
    priv->workflow = dw::comfy::Workflow::load_file(s.workflow, overrides, &error);
  }
  if (!priv->workflow) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Invalid workflow: %s", error.message.c_str()),
                      ("workflow=%s", s.workflow.empty() ? "(built-in)" : s.workflow.c_str()));
    return false;
  }
  GST_INFO_OBJECT(self, "workflow %s:\n%s", priv->workflow->origin().c_str(), priv->workflow->describe().c_str());

  /* A setting the workflow cannot take would be silently ignored: say so once. */
  std::string ignored = dw::comfy::unbound_settings(*priv->workflow, s.steps >= 0, s.cfg >= 0);
  if (!ignored.empty())
    GST_ELEMENT_WARNING(self, RESOURCE, SETTINGS, ("Workflow %s cannot take some settings; they are ignored",
                                                   priv->workflow->origin().c_str()),
                        ("%s", ignored.c_str()));
  return true;
}

/* The server list; a bad entry fails here, naming it. */
static bool parse_servers(GstComfyKeyframeSrc *self, const Settings &s) {
  std::string why;
  self->priv->servers = dw::comfy::parse_server_list(s.server, &why);
  if (self->priv->servers.empty()) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Invalid server '%s': %s", s.server.c_str(), why.c_str()),
                      ("expected http://host:port[/prefix], or a comma-separated list of them"));
    return false;
  }
  return true;
}

/* The first job's input: seed-image, or a generated gradient (bootstrap, denoise 1.0). */
static bool load_first_input(GstComfyKeyframeSrc *self, const Settings &s) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  priv->bootstrap = s.seed_image.empty();
  if (priv->bootstrap) {
    priv->first_png = dw::encode_png(dw::comfy::make_bootstrap_image(s.width, s.height, s.seed), 1);
    return true;
  }
  gchar *contents = nullptr;
  gsize length = 0;
  GError *gerr = nullptr;
  if (!g_file_get_contents(s.seed_image.c_str(), &contents, &length, &gerr)) {
    GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("Cannot read seed-image '%s'", s.seed_image.c_str()),
                      ("%s", gerr->message));
    g_clear_error(&gerr);
    return false;
  }
  dw::Image image;
  std::string decode_error;
  bool ok = dw::decode_png(reinterpret_cast<const uint8_t *>(contents), length, image, &decode_error);
  if (ok) priv->first_png.assign(contents, contents + length);
  g_free(contents);
  if (!ok)
    GST_ELEMENT_ERROR(self, RESOURCE, READ, ("seed-image '%s' is not a usable PNG", s.seed_image.c_str()),
                      ("%s", decode_error.c_str()));
  return ok;
}

static void reset_shared_state(GstComfyKeyframeSrc *self) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  priv->ready.clear();
  priv->flushing = false;
  priv->fatal = false;
  priv->fatal_message.clear();
  priv->pushed = 0;
  priv->stats = Stats();
  g_mutex_unlock(&priv->lock);
  priv->last_pts = GST_CLOCK_TIME_NONE;
}

static gboolean gst_comfy_keyframe_src_start(GstBaseSrc *src) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  Settings s = settings_snapshot(self);
  try {
    if (!parse_servers(self, s) || !load_workflow(self, s) || !load_first_input(self, s)) {
      priv->workflow.reset();
      return FALSE;
    }
    GST_INFO_OBJECT(self, "%zu backend(s), first %s", priv->servers.size(), priv->servers[0].base().c_str());
    reset_shared_state(self);
    gchar *uuid = g_uuid_string_random();
    priv->upload_prefix = std::string("dreamwindow_") + std::string(uuid).substr(0, 8) + "_";
    g_free(uuid);

    GMainContext *context = g_main_context_new();
    priv->client_loop = g_main_loop_new(context, FALSE);
    g_mutex_lock(&priv->lock);
    priv->client_context = context;
    g_mutex_unlock(&priv->lock);
    priv->client_thread = g_thread_new("comfykeyframesrc-client", client_thread_func, self);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, LIBRARY, INIT, ("Failed to start: %s", e.what()), (nullptr));
    return FALSE;
  }
  return TRUE;
}

static gboolean gst_comfy_keyframe_src_stop(GstBaseSrc *src) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (priv->client_thread) {
    g_main_context_invoke(priv->client_context, shutdown_cb, self);
    g_thread_join(priv->client_thread);
    priv->client_thread = nullptr;
  }
  g_mutex_lock(&priv->lock);
  GMainContext *context = priv->client_context;
  priv->client_context = nullptr;
  priv->ready.clear();
  g_mutex_unlock(&priv->lock);
  if (priv->client_loop) {
    g_main_loop_unref(priv->client_loop);
    priv->client_loop = nullptr;
  }
  if (context) g_main_context_unref(context);
  priv->workflow.reset();
  priv->first_png.clear();
  return TRUE;
}

static GstCaps *gst_comfy_keyframe_src_get_caps(GstBaseSrc *src, GstCaps *filter) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  GST_OBJECT_LOCK(self);
  gint width = self->priv->settings.width, height = self->priv->settings.height;
  GST_OBJECT_UNLOCK(self);
  GstCaps *caps = gst_caps_from_string("video/x-raw, format = (string) { RGB, RGBA }");
  gst_caps_set_simple(caps, "width", G_TYPE_INT, width, "height", G_TYPE_INT, height, "framerate", GST_TYPE_FRACTION,
                      0, 1, "pixel-aspect-ratio", GST_TYPE_FRACTION, 1, 1, nullptr);
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(caps);
    caps = tmp;
  }
  return caps;
}

static gboolean gst_comfy_keyframe_src_set_caps(GstBaseSrc *src, GstCaps *caps) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  GstVideoInfo info;
  if (!gst_video_info_from_caps(&info, caps)) {
    GST_ERROR_OBJECT(self, "cannot parse caps %" GST_PTR_FORMAT, caps);
    return FALSE;
  }
  self->priv->info = info;
  GST_DEBUG_OBJECT(self, "negotiated %" GST_PTR_FORMAT, caps);
  return TRUE;
}

static gboolean gst_comfy_keyframe_src_unlock(GstBaseSrc *src) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  g_mutex_lock(&self->priv->lock);
  self->priv->flushing = true;
  g_cond_broadcast(&self->priv->cond);
  g_mutex_unlock(&self->priv->lock);
  return TRUE;
}

static gboolean gst_comfy_keyframe_src_unlock_stop(GstBaseSrc *src) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  g_mutex_lock(&self->priv->lock);
  self->priv->flushing = false;
  g_mutex_unlock(&self->priv->lock);
  return TRUE;
}

static gboolean gst_comfy_keyframe_src_query(GstBaseSrc *src, GstQuery *query) {
  if (GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    gst_query_set_latency(query, TRUE, KEYFRAME_LATENCY, GST_CLOCK_TIME_NONE);
    return TRUE;
  }
  return GST_BASE_SRC_CLASS(parent_class)->query(src, query);
}

/* dreamwindow-inject: the image goes to the client thread, which resets the lineage. */
static gboolean handle_inject(GstComfyKeyframeSrc *self, GstEvent *event) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  GstBuffer *buffer = nullptr;
  GstCaps *caps = nullptr;
  gchar *reason = nullptr;
  gdouble similarity = 0;
  if (!dw_event_parse_inject(event, &buffer, &caps, &reason, &similarity)) {
    GST_WARNING_OBJECT(self, "malformed %s event ignored", DW_EVENT_INJECT_NAME);
    return FALSE;
  }
  auto *req = new InjectRequest{self, dw::Image(), reason ? reason : ""};
  g_free(reason);
  GstVideoInfo info;
  std::string error = "caps are not raw video";
  bool ok = gst_video_info_from_caps(&info, caps) && dw_image_from_buffer(buffer, &info, &req->image, &error);
  gst_buffer_unref(buffer);
  gst_caps_unref(caps);
  if (!ok) {
    GST_ELEMENT_WARNING(self, STREAM, FORMAT, ("Injected image ignored: %s", error.c_str()), (nullptr));
    delete req;
    return FALSE;
  }
  g_mutex_lock(&priv->lock);
  GMainContext *context = priv->client_context ? g_main_context_ref(priv->client_context) : nullptr;
  g_mutex_unlock(&priv->lock);
  if (!context) {
    GST_DEBUG_OBJECT(self, "not running, inject event dropped");
    delete req;
    return FALSE;
  }
  GST_DEBUG_OBJECT(self, "inject event (%s, similarity %.3f)", req->reason.c_str(), similarity);
  g_main_context_invoke_full(context, G_PRIORITY_DEFAULT, inject_cb, req,
                             [](gpointer d) { delete static_cast<InjectRequest *>(d); });
  g_main_context_unref(context);
  return TRUE;
}

static gboolean gst_comfy_keyframe_src_event(GstBaseSrc *src, GstEvent *event) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  if (dw_event_is_inject(event)) {
    try {
      return handle_inject(self, event);
    } catch (const std::exception &e) {
      GST_ELEMENT_WARNING(self, STREAM, FAILED, ("Injected image ignored"), ("%s", e.what()));
      return FALSE;
    }
  }
  return GST_BASE_SRC_CLASS(parent_class)->event(src, event);
}

static GstStructure *backend_structure(const dw::comfy::ServerUrl &url, const dw::comfy::BackendStats &b,
                                       const dw::comfy::ClientStats &c) {
  gint64 since = b.last_success_us < 0 ? -1 : (g_get_monotonic_time() - b.last_success_us) * GST_USECOND;
  gint64 gen = b.generation_us < 0 ? -1 : b.generation_us * GST_USECOND;
  return gst_structure_new(
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_NAME, DW_STATS_COMFYKEYFRAMESRC_BACKEND_SERVER, G_TYPE_STRING,
      url.base().c_str(), DW_STATS_COMFYKEYFRAMESRC_BACKEND_HEALTH, G_TYPE_STRING, health_name(b.health),
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_AVAILABLE, G_TYPE_BOOLEAN, b.available,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_CONNECTED, G_TYPE_BOOLEAN, c.ws_connected,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_ERROR_STREAK, G_TYPE_UINT, b.error_streak,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_SINCE_SUCCESS, G_TYPE_INT64, since,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_GENERATION_TIME, G_TYPE_INT64, gen, DW_STATS_COMFYKEYFRAMESRC_BACKEND_RUNNING,
      G_TYPE_UINT, b.running, DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_SUCCEEDED, G_TYPE_UINT64, b.jobs_succeeded,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_FAILED, G_TYPE_UINT64, b.jobs_failed,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_REQUEUED, G_TYPE_UINT64, b.jobs_requeued,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_RECONNECTS, G_TYPE_UINT64, c.reconnects, nullptr);
}

static GstStructure *build_stats(GstComfyKeyframeSrc *self) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  Stats st = priv->stats;
  std::vector<dw::comfy::ServerUrl> servers = priv->servers;  // fixed while running
  guint ready = static_cast<guint>(priv->ready.size());
  g_mutex_unlock(&priv->lock);
  const dw::comfy::SchedulerStats &j = st.sched;
  GstClockTime last = j.last_generation_us < 0 ? GST_CLOCK_TIME_NONE : j.last_generation_us * GST_USECOND;
  GstClockTime mean = j.jobs_succeeded ? j.total_generation_us * GST_USECOND / j.jobs_succeeded : GST_CLOCK_TIME_NONE;
  guint64 reconnects = 0;
  gboolean connected = FALSE;
  GValue array = G_VALUE_INIT;
  gst_value_array_init(&array, st.backends.size());
  for (size_t b = 0; b < st.backends.size() && b < servers.size(); ++b) {
    dw::comfy::ClientStats c = b < st.clients.size() ? st.clients[b] : dw::comfy::ClientStats();
    reconnects += c.reconnects;
    connected |= c.ws_connected;
    GValue v = G_VALUE_INIT;
    g_value_init(&v, GST_TYPE_STRUCTURE);
    g_value_take_boxed(&v, backend_structure(servers[b], st.backends[b], c));
    gst_value_array_append_and_take_value(&array, &v);
  }
  GstStructure *s = gst_structure_new(
      DW_STATS_COMFYKEYFRAMESRC_NAME, DW_STATS_COMFYKEYFRAMESRC_KEYFRAMES, G_TYPE_UINT64, st.keyframes,
      DW_STATS_COMFYKEYFRAMESRC_JOBS_QUEUED, G_TYPE_UINT64, j.jobs_queued, DW_STATS_COMFYKEYFRAMESRC_JOBS_SUCCEEDED,
      G_TYPE_UINT64, j.jobs_succeeded, DW_STATS_COMFYKEYFRAMESRC_JOBS_FAILED, G_TYPE_UINT64, j.jobs_failed,
      DW_STATS_COMFYKEYFRAMESRC_JOBS_RETRIED, G_TYPE_UINT64, j.jobs_retried, DW_STATS_COMFYKEYFRAMESRC_JOBS_DISCARDED,
      G_TYPE_UINT64, j.jobs_discarded, DW_STATS_COMFYKEYFRAMESRC_INJECTIONS, G_TYPE_UINT64, j.injections,
      DW_STATS_COMFYKEYFRAMESRC_LAST_GENERATION_TIME, G_TYPE_UINT64, last, DW_STATS_COMFYKEYFRAMESRC_MEAN_GENERATION_TIME,
      G_TYPE_UINT64, mean, DW_STATS_COMFYKEYFRAMESRC_SERVER_WAIT_TIME, G_TYPE_UINT64, st.server_wait_time,
      DW_STATS_COMFYKEYFRAMESRC_IN_FLIGHT, G_TYPE_UINT, j.in_flight, DW_STATS_COMFYKEYFRAMESRC_PENDING, G_TYPE_UINT,
      j.pending, DW_STATS_COMFYKEYFRAMESRC_READY, G_TYPE_UINT, ready, DW_STATS_COMFYKEYFRAMESRC_RECONNECTS,
      G_TYPE_UINT64, reconnects, DW_STATS_COMFYKEYFRAMESRC_CONNECTED, G_TYPE_BOOLEAN, connected,
      DW_STATS_COMFYKEYFRAMESRC_OUTAGE, G_TYPE_BOOLEAN, static_cast<gboolean>(j.outage),
      DW_STATS_COMFYKEYFRAMESRC_OUTAGES, G_TYPE_UINT64, j.outages, nullptr);
  gst_structure_take_value(s, DW_STATS_COMFYKEYFRAMESRC_BACKENDS, &array);
  return s;
}

/* Waits for the next keyframe; raises a recorded fatal error (without holding the lock). */
static GstFlowReturn wait_keyframe(GstComfyKeyframeSrc *self, const Settings &s, Keyframe *kf, guint64 *index) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  if (s.num_keyframes >= 0 && priv->pushed >= static_cast<guint64>(s.num_keyframes)) {
    g_mutex_unlock(&priv->lock);
    GST_INFO_OBJECT(self, "num-keyframes (%d) reached", s.num_keyframes);
    return GST_FLOW_EOS;
  }
  gint64 wait_start = g_get_monotonic_time();
  while (!priv->flushing && !priv->fatal && priv->ready.empty()) g_cond_wait(&priv->cond, &priv->lock);
  priv->stats.server_wait_time += static_cast<GstClockTime>(g_get_monotonic_time() - wait_start) * GST_USECOND;
  if (priv->flushing) {
    g_mutex_unlock(&priv->lock);
    return GST_FLOW_FLUSHING;
  }
  if (priv->fatal) {
    GQuark domain = priv->fatal_domain;
    gint code = priv->fatal_code;
    std::string message = priv->fatal_message, debug = priv->fatal_debug;
    g_mutex_unlock(&priv->lock);
    gst_element_message_full(GST_ELEMENT(self), GST_MESSAGE_ERROR, domain, code, g_strdup(message.c_str()),
                             g_strdup(debug.c_str()), __FILE__, GST_FUNCTION, __LINE__);
    return GST_FLOW_ERROR;
  }
  *kf = std::move(priv->ready.front());
  priv->ready.pop_front();
  *index = priv->pushed++;
  priv->stats.keyframes = priv->pushed;
  GMainContext *context = priv->client_context ? g_main_context_ref(priv->client_context) : nullptr;
  g_mutex_unlock(&priv->lock);
  /* A keyframe left the queue: the client thread may queue the next job now. */
  if (context) {
    g_main_context_invoke(context, schedule_cb, self);
    g_main_context_unref(context);
  }
  return GST_FLOW_OK;
}

/* PTS: the running time the keyframe became available, strictly increasing. */
static GstClockTime keyframe_pts(GstComfyKeyframeSrc *self, const Keyframe &kf) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  GstClockTime pts = kf.available_running_time;
  if (!GST_CLOCK_TIME_IS_VALID(pts)) pts = current_running_time(self);
  if (!GST_CLOCK_TIME_IS_VALID(pts)) pts = GST_CLOCK_TIME_IS_VALID(priv->last_pts) ? priv->last_pts + 1 : 0;
  if (GST_CLOCK_TIME_IS_VALID(priv->last_pts) && pts <= priv->last_pts) pts = priv->last_pts + 1;
  priv->last_pts = pts;
  return pts;
}

static void post_keyframe_message(GstComfyKeyframeSrc *self, const Keyframe &kf, guint64 index, GstClockTime pts) {
  GstStructure *st = gst_structure_new(
      DW_MSG_KEYFRAME_NAME, DW_MSG_KEYFRAME_INDEX, G_TYPE_UINT64, index, DW_MSG_KEYFRAME_RUNNING_TIME, G_TYPE_UINT64,
      pts, DW_MSG_KEYFRAME_GENERATION_TIME, G_TYPE_UINT64, kf.generation_time, DW_MSG_KEYFRAME_PROMPT, G_TYPE_STRING,
      kf.prompt.c_str(), DW_MSG_KEYFRAME_SEED, G_TYPE_INT64, kf.seed, DW_MSG_KEYFRAME_INJECTED, G_TYPE_BOOLEAN,
      static_cast<gboolean>(kf.injected), DW_MSG_KEYFRAME_REASON, G_TYPE_STRING, kf.reason.c_str(),
      DW_MSG_KEYFRAME_DISCONT, G_TYPE_BOOLEAN, static_cast<gboolean>(kf.discont), DW_MSG_KEYFRAME_SERVER,
      G_TYPE_STRING, kf.server.c_str(), DW_MSG_KEYFRAME_PARENT, G_TYPE_INT64, kf.parent, nullptr);
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), st));
}

static GstFlowReturn create_keyframe_buffer(GstComfyKeyframeSrc *self, GstBuffer **outbuf) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  Settings s = settings_snapshot(self);
  Keyframe kf;
  guint64 index = 0;
  GstFlowReturn ret = wait_keyframe(self, s, &kf, &index);
  if (ret != GST_FLOW_OK) return ret;

  std::string error;
  GstBuffer *buffer = dw_buffer_from_image_full(kf.image, &priv->info, &error);
  if (!buffer) {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Keyframe %dx%d does not fit the negotiated caps", kf.image.width,
                                                kf.image.height),
                      ("%s", error.c_str()));
    return GST_FLOW_ERROR;
  }
  GstClockTime pts = keyframe_pts(self, kf);
  GST_BUFFER_PTS(buffer) = pts;
  GST_BUFFER_DTS(buffer) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION(buffer) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_OFFSET(buffer) = index;
  GST_BUFFER_OFFSET_END(buffer) = index + 1;
  /* The first keyframe, and the first after an outage gap: do not interpolate across it. */
  if (index == 0 || kf.discont) GST_BUFFER_FLAG_SET(buffer, GST_BUFFER_FLAG_DISCONT);
  dw_buffer_add_keyframe_meta(buffer, index, kf.prompt.empty() ? nullptr : kf.prompt.c_str(), kf.seed,
                              kf.injected ? TRUE : FALSE);
  GST_DEBUG_OBJECT(self, "keyframe %" G_GUINT64_FORMAT " pts %" GST_TIME_FORMAT "%s%s", index, GST_TIME_ARGS(pts),
                   kf.injected ? " (injected)" : "", kf.discont ? " (discont)" : "");
  if (s.post_messages) post_keyframe_message(self, kf, index, pts);
  *outbuf = buffer;
  return GST_FLOW_OK;
}

static GstFlowReturn gst_comfy_keyframe_src_create(GstPushSrc *psrc, GstBuffer **outbuf) {
  auto *self = GST_COMFY_KEYFRAME_SRC(psrc);
  try {
    return create_keyframe_buffer(self, outbuf);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Failed to produce a keyframe"), ("%s", e.what()));
    return GST_FLOW_ERROR;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* GObject                                                                                          */

static void gst_comfy_keyframe_src_set_property(GObject *object, guint prop_id, const GValue *value,
                                                GParamSpec *pspec) {
  auto *self = GST_COMFY_KEYFRAME_SRC(object);
  Settings &s = self->priv->settings;
  auto str = [](const GValue *v) { const gchar *c = g_value_get_string(v); return std::string(c ? c : ""); };
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_SERVER: s.server = str(value); break;
    case PROP_WORKFLOW: s.workflow = str(value); break;
    case PROP_BINDINGS: s.bindings = str(value); break;
    case PROP_PROMPT: s.prompt = str(value); break;
    case PROP_NEGATIVE_PROMPT: s.negative_prompt = str(value); break;
    case PROP_PROMPTS: {
      s.prompts.clear();
      for (guint i = 0; i < gst_value_array_get_size(value); ++i) {
        const GValue *v = gst_value_array_get_value(value, i);
        if (G_VALUE_HOLDS_STRING(v) && g_value_get_string(v)) s.prompts.emplace_back(g_value_get_string(v));
      }
      break;
    }
    case PROP_PROMPT_INTERVAL: s.prompt_interval = g_value_get_uint(value); break;
    case PROP_SEED: s.seed = g_value_get_int64(value); break;
    case PROP_SEED_MODE: s.seed_mode = static_cast<GstComfySeedMode>(g_value_get_enum(value)); break;
    case PROP_DENOISE: s.denoise = g_value_get_double(value); break;
    case PROP_STEPS: s.steps = g_value_get_int(value); break;
    case PROP_CFG: s.cfg = g_value_get_double(value); break;
    case PROP_WIDTH: s.width = g_value_get_int(value); break;
    case PROP_HEIGHT: s.height = g_value_get_int(value); break;
    case PROP_MAX_IN_FLIGHT: s.max_in_flight = g_value_get_uint(value); break;
    case PROP_NUM_KEYFRAMES: s.num_keyframes = g_value_get_int(value); break;
    case PROP_SEED_IMAGE: s.seed_image = str(value); break;
    case PROP_CONNECT_TIMEOUT: s.connect_timeout = g_value_get_uint(value); break;
    case PROP_QUEUE_TIMEOUT: s.queue_timeout = g_value_get_uint(value); break;
    case PROP_EXECUTE_TIMEOUT: s.execute_timeout = g_value_get_uint(value); break;
    case PROP_DOWNLOAD_TIMEOUT: s.download_timeout = g_value_get_uint(value); break;
    case PROP_MAX_RETRIES: s.max_retries = g_value_get_uint(value); break;
    case PROP_MAX_OUTAGE: s.max_outage = g_value_get_uint(value); break;
    case PROP_SIZE_MISMATCH: s.size_mismatch = static_cast<GstComfySizeMismatch>(g_value_get_enum(value)); break;
    case PROP_USE_WEBSOCKET: s.use_websocket = g_value_get_boolean(value); break;
    case PROP_POST_MESSAGES: s.post_messages = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_comfy_keyframe_src_get_property(GObject *object, guint prop_id, GValue *value, GParamSpec *pspec) {
  auto *self = GST_COMFY_KEYFRAME_SRC(object);
  if (prop_id == PROP_STATS) {
    try {
      g_value_take_boxed(value, build_stats(self));
    } catch (const std::exception &e) {
      GST_WARNING_OBJECT(self, "cannot build stats: %s", e.what());
    }
    return;
  }
  const Settings &s = self->priv->settings;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_SERVER: g_value_set_string(value, s.server.c_str()); break;
    case PROP_WORKFLOW: g_value_set_string(value, s.workflow.empty() ? nullptr : s.workflow.c_str()); break;
    case PROP_BINDINGS: g_value_set_string(value, s.bindings.c_str()); break;
    case PROP_PROMPT: g_value_set_string(value, s.prompt.c_str()); break;
    case PROP_NEGATIVE_PROMPT: g_value_set_string(value, s.negative_prompt.c_str()); break;
    case PROP_PROMPTS: {
      for (const auto &p : s.prompts) {
        GValue v = G_VALUE_INIT;
        g_value_init(&v, G_TYPE_STRING);
        g_value_set_string(&v, p.c_str());
        gst_value_array_append_and_take_value(value, &v);
      }
      break;
    }
    case PROP_PROMPT_INTERVAL: g_value_set_uint(value, s.prompt_interval); break;
    case PROP_SEED: g_value_set_int64(value, s.seed); break;
    case PROP_SEED_MODE: g_value_set_enum(value, s.seed_mode); break;
    case PROP_DENOISE: g_value_set_double(value, s.denoise); break;
    case PROP_STEPS: g_value_set_int(value, s.steps); break;
    case PROP_CFG: g_value_set_double(value, s.cfg); break;
    case PROP_WIDTH: g_value_set_int(value, s.width); break;
    case PROP_HEIGHT: g_value_set_int(value, s.height); break;
    case PROP_MAX_IN_FLIGHT: g_value_set_uint(value, s.max_in_flight); break;
    case PROP_NUM_KEYFRAMES: g_value_set_int(value, s.num_keyframes); break;
    case PROP_SEED_IMAGE: g_value_set_string(value, s.seed_image.empty() ? nullptr : s.seed_image.c_str()); break;
    case PROP_CONNECT_TIMEOUT: g_value_set_uint(value, s.connect_timeout); break;
    case PROP_QUEUE_TIMEOUT: g_value_set_uint(value, s.queue_timeout); break;
    case PROP_EXECUTE_TIMEOUT: g_value_set_uint(value, s.execute_timeout); break;
    case PROP_DOWNLOAD_TIMEOUT: g_value_set_uint(value, s.download_timeout); break;
    case PROP_MAX_RETRIES: g_value_set_uint(value, s.max_retries); break;
    case PROP_MAX_OUTAGE: g_value_set_uint(value, s.max_outage); break;
    case PROP_SIZE_MISMATCH: g_value_set_enum(value, s.size_mismatch); break;
    case PROP_USE_WEBSOCKET: g_value_set_boolean(value, s.use_websocket); break;
    case PROP_POST_MESSAGES: g_value_set_boolean(value, s.post_messages); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_comfy_keyframe_src_finalize(GObject *object) {
  auto *self = GST_COMFY_KEYFRAME_SRC(object);
  g_mutex_clear(&self->priv->lock);
  g_cond_clear(&self->priv->cond);
  delete self->priv;
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_comfy_keyframe_src_init(GstComfyKeyframeSrc *self) {
  self->priv = new GstComfyKeyframeSrcPrivate();
  g_mutex_init(&self->priv->lock);
  g_cond_init(&self->priv->cond);
  gst_video_info_init(&self->priv->info);
  gst_base_src_set_live(GST_BASE_SRC(self), TRUE);
  gst_base_src_set_format(GST_BASE_SRC(self), GST_FORMAT_TIME);
  gst_base_src_set_do_timestamp(GST_BASE_SRC(self), FALSE);
}

/* server, workflow and what each job is made of. */
static void install_loop_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);

  g_object_class_install_property(gobject_class, PROP_SERVER,
      g_param_spec_string("server", "Server URL(s)",
                          "ComfyUI server base URL (http://host:port[/prefix]), or a comma-separated list of "
                          "them: a backend pool (each job goes to the healthy server that will finish it first)",
                          DEFAULT_SERVER, rw_ready));
  g_object_class_install_property(gobject_class, PROP_WORKFLOW,
      g_param_spec_string("workflow", "Workflow file",
                          "API-format workflow JSON (ComfyUI \"Save (API)\"); NULL = the built-in 1-step "
                          "SD-Turbo img2img workflow",
                          nullptr, rw_ready));
  g_object_class_install_property(gobject_class, PROP_BINDINGS,
      g_param_spec_string("bindings", "Bindings",
                          "Explicit bindings, comma separated, e.g. \"prompt=6.text,seed=3.seed\" "
                          "(params: image, prompt, negative-prompt, seed, denoise, steps, cfg); "
                          "empty = auto-detect from LoadImage, KSampler and CLIPTextEncode nodes",
                          "", rw_ready));
  g_object_class_install_property(gobject_class, PROP_PROMPT,
      g_param_spec_string("prompt", "Prompt", "Positive prompt; a change applies to the next queued job",
                          DEFAULT_PROMPT, rw_playing));
  g_object_class_install_property(gobject_class, PROP_NEGATIVE_PROMPT,
      g_param_spec_string("negative-prompt", "Negative prompt", "Negative prompt; a change applies to the next queued job",
                          DEFAULT_NEGATIVE_PROMPT, rw_playing));
  g_object_class_install_property(gobject_class, PROP_PROMPTS,
      gst_param_spec_array("prompts", "Prompts",
                           "Prompts rotated every prompt-interval keyframes (overrides prompt when not empty), "
                           "e.g. prompts=\"<\\\"a forest\\\",\\\"a city\\\">\"",
                           g_param_spec_string("prompt", "Prompt", "One prompt", nullptr, G_PARAM_READWRITE),
                           rw_playing));
  g_object_class_install_property(gobject_class, PROP_PROMPT_INTERVAL,
      g_param_spec_uint("prompt-interval", "Prompt interval (keyframes)", "Keyframes per prompt of the prompts list", 1,
                        G_MAXUINT, DEFAULT_PROMPT_INTERVAL, rw_playing));
  g_object_class_install_property(gobject_class, PROP_SEED,
      g_param_spec_int64("seed", "Seed", "Sampler seed (see seed-mode)", 0, G_MAXINT64, DEFAULT_SEED, rw_playing));
  g_object_class_install_property(gobject_class, PROP_SEED_MODE,
      g_param_spec_enum("seed-mode", "Seed mode", "How the seed changes from job to job", GST_TYPE_COMFY_SEED_MODE_TYPE,
                        DEFAULT_SEED_MODE, rw_playing));
  g_object_class_install_property(gobject_class, PROP_DENOISE,
      g_param_spec_double("denoise", "Denoise", "img2img strength: 0 = copy the input, 1 = ignore it", 0.0, 1.0,
                          DEFAULT_DENOISE, rw_playing));
  g_object_class_install_property(gobject_class, PROP_STEPS,
      g_param_spec_int("steps", "Steps", "Sampler steps (-1 = as in the workflow)", -1, 10000, DEFAULT_STEPS, rw_playing));
  g_object_class_install_property(gobject_class, PROP_CFG,
      g_param_spec_double("cfg", "CFG", "Classifier-free guidance scale (-1 = as in the workflow)", -1.0, 100.0,
                          DEFAULT_CFG, rw_playing));
  g_object_class_install_property(gobject_class, PROP_WIDTH,
      g_param_spec_int("width", "Width (px)", "Keyframe width; server images of another size are scaled or refused "
                       "(size-mismatch)", 8, 8192, DEFAULT_WIDTH, rw_ready));
  g_object_class_install_property(gobject_class, PROP_HEIGHT,
      g_param_spec_int("height", "Height (px)", "Keyframe height", 8, 8192, DEFAULT_HEIGHT, rw_ready));
}

/* Admission, timeouts, retries, faults, messages and stats. */
static void install_job_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);

  g_object_class_install_property(gobject_class, PROP_MAX_IN_FLIGHT,
      g_param_spec_uint("max-in-flight", "Max jobs in flight",
                        "Jobs outstanding at once (over all servers). 1 = a strict feedback loop; >1 keeps "
                        "that many jobs running, each from the newest keyframe available when it is queued "
                        "(more throughput with a pool of servers; k interleaved chains)",
                        1, 16, DEFAULT_MAX_IN_FLIGHT, rw_playing));
  g_object_class_install_property(gobject_class, PROP_NUM_KEYFRAMES,
      g_param_spec_int("num-keyframes", "Number of keyframes", "EOS after this many keyframes (-1 = endless)", -1,
                       G_MAXINT, DEFAULT_NUM_KEYFRAMES, rw_ready));
  g_object_class_install_property(gobject_class, PROP_SEED_IMAGE,
      g_param_spec_string("seed-image", "Seed image",
                          "PNG that starts the feedback loop; NULL = a generated gradient sent with denoise 1.0 "
                          "(txt2img-like first keyframe)",
                          nullptr, rw_ready));
  g_object_class_install_property(gobject_class, PROP_CONNECT_TIMEOUT,
      g_param_spec_uint("connect-timeout", "Connect timeout (ms)", "Connection and single-request timeout", 100,
                        600000, DEFAULT_CONNECT_TIMEOUT, rw_ready));
  g_object_class_install_property(gobject_class, PROP_QUEUE_TIMEOUT,
      g_param_spec_uint("queue-timeout", "Queue timeout (ms)", "Upload + POST /prompt must be answered within this", 100,
                        600000, DEFAULT_QUEUE_TIMEOUT, rw_ready));
  g_object_class_install_property(gobject_class, PROP_EXECUTE_TIMEOUT,
      g_param_spec_uint("execute-timeout", "Execute timeout (ms)", "A queued job must finish within this", 100,
                        3600000, DEFAULT_EXECUTE_TIMEOUT, rw_ready));
  g_object_class_install_property(gobject_class, PROP_DOWNLOAD_TIMEOUT,
      g_param_spec_uint("download-timeout", "Download timeout (ms)", "Fetching the output image must take less", 100,
                        600000, DEFAULT_DOWNLOAD_TIMEOUT, rw_ready));
  g_object_class_install_property(gobject_class, PROP_MAX_RETRIES,
      g_param_spec_uint("max-retries", "Max retries",
                        "Retries of a keyframe whose job failed (execution error, bad image, timeout) before an "
                        "error; an unreachable or unresponsive server is retried forever (see max-outage)",
                        0, 1000, DEFAULT_MAX_RETRIES, rw_playing));
  g_object_class_install_property(gobject_class, PROP_MAX_OUTAGE,
      g_param_spec_uint("max-outage", "Max outage (s)",
                        "Every server unreachable or unresponsive for longer than this is an error "
                        "(0 = retry forever)",
                        0, 7 * 24 * 3600, DEFAULT_MAX_OUTAGE, rw_playing));
  g_object_class_install_property(gobject_class, PROP_SIZE_MISMATCH,
      g_param_spec_enum("size-mismatch", "Size mismatch", "What to do with a server image that is not width x height",
                        GST_TYPE_COMFY_SIZE_MISMATCH_TYPE, DEFAULT_SIZE_MISMATCH, rw_ready));
  g_object_class_install_property(gobject_class, PROP_USE_WEBSOCKET,
      g_param_spec_boolean("use-websocket", "Use websocket",
                           "Follow jobs on the ComfyUI websocket (FALSE = poll /history only)", DEFAULT_USE_WEBSOCKET,
                           rw_ready));
  g_object_class_install_property(gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean("post-messages", "Post messages", "Post a dreamwindow-keyframe element message per keyframe",
                           DEFAULT_POST_MESSAGES, rw_playing));
  g_object_class_install_property(gobject_class, PROP_STATS,
      g_param_spec_boxed("stats", "Statistics",
                         "application/x-comfykeyframesrc-stats: keyframes, jobs-queued, jobs-succeeded, jobs-failed, "
                         "jobs-retried, jobs-discarded, injections, last-generation-time and mean-generation-time "
                         "(ns), server-wait-time (ns the streaming thread waited), in-flight, pending, ready, "
                         "reconnects, connected, outage, outages, and backends (an array of "
                         "application/x-comfykeyframesrc-backend per server: server, health, available, connected, "
                         "error-streak, since-last-success, generation-time, running, jobs-succeeded, jobs-failed, "
                         "jobs-requeued, reconnects)",
                         GST_TYPE_STRUCTURE, static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));
}

static void gst_comfy_keyframe_src_class_init(GstComfyKeyframeSrcClass *klass) {
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
  GstBaseSrcClass *basesrc_class = GST_BASE_SRC_CLASS(klass);
  GstPushSrcClass *pushsrc_class = GST_PUSH_SRC_CLASS(klass);

  gobject_class->set_property = gst_comfy_keyframe_src_set_property;
  gobject_class->get_property = gst_comfy_keyframe_src_get_property;
  gobject_class->finalize = gst_comfy_keyframe_src_finalize;

  install_loop_properties(gobject_class);
  install_job_properties(gobject_class);

  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "ComfyUI keyframe source", "Source/Video/Network",
      "Live source of keyframes generated by ComfyUI servers (one, or a pool) in an img2img feedback loop; the next "
      "job is queued before the current keyframe is pushed, so generation overlaps with all downstream work",
      "gst-dreamwindow developers");

  basesrc_class->start = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_start);
  basesrc_class->stop = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_stop);
  basesrc_class->get_caps = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_get_caps);
  basesrc_class->set_caps = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_set_caps);
  basesrc_class->unlock = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_unlock);
  basesrc_class->unlock_stop = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_unlock_stop);
  basesrc_class->query = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_query);
  basesrc_class->event = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_event);
  pushsrc_class->create = GST_DEBUG_FUNCPTR(gst_comfy_keyframe_src_create);

  gst_type_mark_as_plugin_api(GST_TYPE_COMFY_SEED_MODE_TYPE, static_cast<GstPluginAPIFlags>(0));
  gst_type_mark_as_plugin_api(GST_TYPE_COMFY_SIZE_MISMATCH_TYPE, static_cast<GstPluginAPIFlags>(0));
}

/* comfykeyframesrc
 *
 * A live source whose buffers are keyframes made by a ComfyUI server, each one from the previous
 * keyframe (img2img feedback loop).
 *
 * Threads (see docs/architecture.md):
 *  - the client thread runs its own GMainContext; the dw::comfy::Client (libsoup) lives there. Job
 *    futures complete there, and the moment keyframe N lands the job for N+1 is submitted from
 *    there, before N is handed to the streaming thread, so ComfyUI works on N+1 while N travels
 *    downstream.
 *  - the streaming thread (create()) only waits for the next finished keyframe.
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
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comfy/backoff.h"
#include "comfy/client.h"
#include "comfy/workflow.h"
#include "dwevents.h"
#include "dwmeta.h"
#include "gstdreamwindowelements.h"
#include "image/image.h"

GST_DEBUG_CATEGORY_STATIC(comfykeyframesrc_debug);
#define GST_CAT_DEFAULT comfykeyframesrc_debug

using dw::comfy::Error;
using dw::comfy::ErrorKind;

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
  GstComfySizeMismatch size_mismatch = DEFAULT_SIZE_MISMATCH;
  gboolean use_websocket = DEFAULT_USE_WEBSOCKET;
  gboolean post_messages = DEFAULT_POST_MESSAGES;
};

/* A finished keyframe waiting for the streaming thread. */
struct Keyframe {
  dw::Image image;  // already at width x height
  bool injected = false;
  std::string reason;
  std::string prompt;
  gint64 seed = 0;
  GstClockTime generation_time = GST_CLOCK_TIME_NONE;
  GstClockTime available_running_time = GST_CLOCK_TIME_NONE;
};

/* What the next job starts from. */
struct JobInput {
  std::string server_value;       // LoadImage value of a server-side image ("x.png [output]")
  std::vector<uint8_t> png;       // otherwise: bytes to upload
  bool valid() const { return !server_value.empty() || !png.empty(); }
};

/* One job the client is working on. */
struct InFlight {
  guint64 job_index = 0;
  JobInput input;        // kept for retries
  std::string prompt;
  gint64 seed = 0;
  gdouble denoise = 0;
  guint attempt = 0;
  bool bootstrap = false;
};

struct Stats {
  guint64 keyframes = 0;
  guint64 jobs_queued = 0;
  guint64 jobs_succeeded = 0;
  guint64 jobs_failed = 0;
  guint64 jobs_retried = 0;
  guint64 jobs_discarded = 0;  // results of jobs made stale by an injection
  guint64 injections = 0;
  GstClockTime last_generation_time = GST_CLOCK_TIME_NONE;
  GstClockTime total_generation_time = 0;
  GstClockTime server_wait_time = 0;  // time create() spent waiting for a keyframe
  guint in_flight = 0;
  guint64 reconnects = 0;
  gboolean connected = FALSE;
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
  dw::Image seed_image;
  std::vector<uint8_t> seed_png;
  GThread *client_thread = nullptr;
  GMainLoop *client_loop = nullptr;

  /* Client thread only. */
  std::unique_ptr<dw::comfy::Client> client;
  std::map<std::string, InFlight> in_flight;  // by prompt_id
  JobInput next_input;                         // input of the next job to submit
  guint64 jobs_started = 0;                    // job indexes handed out (retries keep theirs)
  guint retry_source = 0;
  std::deque<InFlight> retry_queue;
  dw::comfy::Backoff unreachable_backoff{250, 10000, 0.5, 0};
  guint unreachable_streak = 0;
  guint upload_slot = 0;
  std::string upload_prefix;

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
/* Helpers                                                                                          */

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

static bool parse_bindings(const std::string &text, dw::comfy::BindingOverrides *out, std::string *error) {
  gchar **items = g_strsplit_set(text.c_str(), ",;", -1);
  bool ok = true;
  for (gchar **it = items; it && *it; ++it) {
    gchar *item = g_strstrip(*it);
    if (!*item) continue;
    gchar *eq = strchr(item, '=');
    if (!eq) {
      *error = std::string("binding '") + item + "' is not of the form param=node_id.input";
      ok = false;
      break;
    }
    std::string key(item, eq - item), path(g_strstrip(eq + 1));
    key = g_strstrip(key.data());
    std::optional<dw::comfy::Param> param = dw::comfy::param_from_name(key);
    if (param) {
      (*out)[*param] = path;
    } else {
      *error = "unknown binding parameter '" + key +
               "' (expected image, prompt, negative-prompt, seed, denoise, steps or cfg)";
      ok = false;
      break;
    }
  }
  g_strfreev(items);
  return ok;
}

/* A grey-blue gradient with seeded noise: the first job's input when no seed-image is given. It is
 * sent with denoise 1.0, which turns an img2img workflow into a txt2img one. */
static dw::Image make_bootstrap_image(int width, int height, guint64 seed) {
  dw::Image img(width, height, 3);
  GRand *rand = g_rand_new_with_seed(static_cast<guint32>(seed ^ (seed >> 32)));
  for (int y = 0; y < height; ++y) {
    uint8_t *row = img.row(y);
    for (int x = 0; x < width; ++x) {
      int n = g_rand_int_range(rand, -24, 25);
      row[3 * x + 0] = static_cast<uint8_t>(CLAMP(90 + 60 * y / height + n, 0, 255));
      row[3 * x + 1] = static_cast<uint8_t>(CLAMP(110 + 40 * x / width + n, 0, 255));
      row[3 * x + 2] = static_cast<uint8_t>(CLAMP(160 - 50 * y / height + n, 0, 255));
    }
  }
  g_rand_free(rand);
  return img;
}

/* ------------------------------------------------------------------------------------------------ */
/* Client thread                                                                                    */

static void schedule_jobs(GstComfyKeyframeSrc *self, size_t extra_ready = 0);
static void submit_job(GstComfyKeyframeSrc *self, InFlight job);

static std::string pick_prompt(const Settings &s, guint64 job_index) {
  if (!s.prompts.empty()) {
    guint interval = MAX(1u, s.prompt_interval);
    return s.prompts[(job_index / interval) % s.prompts.size()];
  }
  return s.prompt;
}

static gint64 pick_seed(const Settings &s, guint64 job_index) {
  switch (s.seed_mode) {
    case GST_COMFY_SEED_MODE_FIXED: return s.seed;
    case GST_COMFY_SEED_MODE_INCREMENT: return (s.seed + static_cast<gint64>(job_index)) & G_MAXINT64;
    case GST_COMFY_SEED_MODE_RANDOM:
    default: return static_cast<gint64>(((guint64)g_random_int() << 31) ^ g_random_int()) & G_MAXINT64;
  }
}

/* Jobs allowed now: at most max-in-flight outstanding, and no more than one finished keyframe
 * waiting beyond that, so a slow downstream throttles generation instead of piling up keyframes. */
static void schedule_jobs(GstComfyKeyframeSrc *self, size_t extra_ready) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (!priv->client) return;
  Settings s = settings_snapshot(self);

  while (true) {
    g_mutex_lock(&priv->lock);
    bool stop = priv->fatal;
    size_t ready = priv->ready.size() + extra_ready;
    guint64 pushed = priv->pushed;
    g_mutex_unlock(&priv->lock);
    if (stop) return;

    size_t outstanding = priv->in_flight.size() + priv->retry_queue.size() + (priv->retry_source ? 1 : 0);
    if (outstanding >= s.max_in_flight) return;
    if (outstanding + ready > s.max_in_flight) return;
    if (s.num_keyframes >= 0 &&
        pushed + ready + outstanding >= static_cast<guint64>(s.num_keyframes))
      return;
    if (!priv->next_input.valid()) return;

    InFlight job;
    job.job_index = priv->jobs_started++;
    job.input = priv->next_input;
    job.prompt = pick_prompt(s, job.job_index);
    job.seed = pick_seed(s, job.job_index);
    job.denoise = s.denoise;
    if (job.job_index == 0 && priv->seed_image.empty()) {
      job.bootstrap = true;
      job.denoise = 1.0;
    }
    submit_job(self, std::move(job));
  }
}

static void on_job_done(GstComfyKeyframeSrc *self, const std::string &prompt_id, dw::comfy::JobResult &&result);
static void on_job_error(GstComfyKeyframeSrc *self, const std::string &prompt_id, const Error &error);

static void submit_job(GstComfyKeyframeSrc *self, InFlight job) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  Settings s = settings_snapshot(self);

  dw::comfy::JobParams params;
  params.prompt = job.prompt;
  params.negative_prompt = s.negative_prompt;
  params.seed = job.seed;
  params.denoise = job.denoise;
  if (s.steps >= 0) params.steps = s.steps;
  if (s.cfg >= 0) params.cfg = s.cfg;

  dw::comfy::JobSpec spec;
  if (!job.input.server_value.empty()) {
    spec.input_value = job.input.server_value;
  } else {
    spec.upload_png = job.input.png;
    /* Rotating names, overwritten: the input directory does not grow, and a name is never reused
     * while a queued job may still read it. */
    spec.upload_name = priv->upload_prefix + std::to_string(priv->upload_slot++ % (s.max_in_flight + 2)) + ".png";
  }
  const dw::comfy::Workflow *workflow = priv->workflow.get();
  spec.build_prompt = [workflow, params](const std::string &image_value) mutable {
    params.image = image_value;
    return workflow->build(params);
  };
  spec.output_nodes = workflow->output_nodes();

  dw::comfy::JobCallbacks callbacks;
  auto id = std::make_shared<std::string>();
  /* These run from libsoup's C callbacks: nothing may escape. */
  callbacks.on_done = [self, id](dw::comfy::JobResult &&r) {
    try {
      on_job_done(self, *id, std::move(r));
    } catch (const std::exception &e) {
      set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Failed to process a keyframe", e.what());
    }
  };
  callbacks.on_error = [self, id](const Error &e) {
    try {
      on_job_error(self, *id, e);
    } catch (const std::exception &ex) {
      set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Failed to handle a job error", ex.what());
    }
  };
  callbacks.on_progress = [self](const dw::comfy::Progress &p) {
    GST_LOG_OBJECT(self, "progress %s node %s %.0f/%.0f", p.prompt_id.c_str(), p.node.c_str(), p.value, p.max);
  };

  *id = priv->client->submit(std::move(spec), std::move(callbacks));
  GST_DEBUG_OBJECT(self, "job %" G_GUINT64_FORMAT " (attempt %u) queued as %s, prompt '%s', seed %" G_GINT64_FORMAT
                   ", denoise %.2f",
                   job.job_index, job.attempt, id->c_str(), job.prompt.c_str(), job.seed, job.denoise);
  priv->in_flight.emplace(*id, std::move(job));

  g_mutex_lock(&priv->lock);
  priv->stats.jobs_queued++;
  priv->stats.in_flight = priv->in_flight.size();
  g_mutex_unlock(&priv->lock);
}

static gboolean retry_timeout_cb(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  priv->retry_source = 0;
  try {
    while (!priv->retry_queue.empty()) {
      InFlight job = std::move(priv->retry_queue.front());
      priv->retry_queue.pop_front();
      submit_job(self, std::move(job));
    }
    schedule_jobs(self);
  } catch (const std::exception &e) {
    set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Failed to retry a job", e.what());
  }
  return G_SOURCE_REMOVE;
}

static void schedule_retry(GstComfyKeyframeSrc *self, InFlight job, guint delay_ms) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  priv->retry_queue.push_back(std::move(job));
  if (priv->retry_source) return;
  GSource *source = g_timeout_source_new(delay_ms);
  g_source_set_callback(source, retry_timeout_cb, self, nullptr);
  priv->retry_source = g_source_attach(source, priv->client_context);
  g_source_unref(source);
}

static void on_job_error(GstComfyKeyframeSrc *self, const std::string &prompt_id, const Error &error) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  auto it = priv->in_flight.find(prompt_id);
  if (it == priv->in_flight.end()) return;
  InFlight job = std::move(it->second);
  priv->in_flight.erase(it);

  Settings s = settings_snapshot(self);
  g_mutex_lock(&priv->lock);
  priv->stats.jobs_failed++;
  priv->stats.in_flight = priv->in_flight.size();
  g_mutex_unlock(&priv->lock);

  std::string what = error.describe();
  if (error.kind == ErrorKind::Cancelled) return;

  if (error.kind == ErrorKind::Unreachable) {
    /* The server is down or restarting: keep trying for as long as it takes, with backoff. */
    guint delay = priv->unreachable_backoff.next_ms();
    if (priv->unreachable_streak++ % 10 == 0) {
      GST_ELEMENT_WARNING(self, RESOURCE, OPEN_READ, ("ComfyUI server %s is not reachable; retrying", s.server.c_str()),
                          ("%s (next attempt in %u ms)", what.c_str(), delay));
    }
    g_mutex_lock(&priv->lock);
    priv->stats.jobs_retried++;
    g_mutex_unlock(&priv->lock);
    schedule_retry(self, std::move(job), delay);
    return;
  }

  if (error.kind == ErrorKind::InvalidPrompt || error.kind == ErrorKind::InvalidWorkflow) {
    set_fatal(self, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
              "ComfyUI rejected the workflow " + (s.workflow.empty() ? std::string("(built-in)") : s.workflow),
              what);
    return;
  }

  if (job.attempt < s.max_retries) {
    job.attempt++;
    GST_ELEMENT_WARNING(self, STREAM, FAILED, ("ComfyUI job for keyframe %" G_GUINT64_FORMAT " failed; retry %u of %u",
                                               job.job_index, job.attempt, s.max_retries),
                        ("%s", what.c_str()));
    g_mutex_lock(&priv->lock);
    priv->stats.jobs_retried++;
    g_mutex_unlock(&priv->lock);
    guint delay = MIN(250u << MIN(job.attempt, 6u), 10000u);
    schedule_retry(self, std::move(job), delay);
    return;
  }

  set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED,
            "ComfyUI job for keyframe " + std::to_string(job.job_index) + " failed " +
                std::to_string(job.attempt + 1) + " times",
            what);
}

static void on_job_done(GstComfyKeyframeSrc *self, const std::string &prompt_id, dw::comfy::JobResult &&result) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  auto it = priv->in_flight.find(prompt_id);
  if (it == priv->in_flight.end()) return;
  InFlight job = std::move(it->second);
  priv->in_flight.erase(it);

  if (priv->unreachable_streak > 0) {
    GST_ELEMENT_INFO(self, RESOURCE, OPEN_READ, ("ComfyUI server is reachable again"), (nullptr));
    priv->unreachable_streak = 0;
  }
  priv->unreachable_backoff.reset();

  Settings s = settings_snapshot(self);
  dw::Image image;
  std::string decode_error;
  bool ok = dw::decode_png(result.image.data(), result.image.size(), image, &decode_error);
  if (!ok) {
    /* Put it back so the shared error path handles retries. */
    priv->in_flight.emplace(prompt_id, std::move(job));
    on_job_error(self, prompt_id, Error(ErrorKind::BadImage, "output of " + prompt_id + " is not a PNG: " + decode_error));
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

  /* Queue the next job from this keyframe first, then hand the keyframe over. */
  priv->next_input = JobInput();
  if (!result.ref.filename.empty())
    priv->next_input.server_value = result.ref.load_image_value();
  else
    priv->next_input.png = std::move(result.image);

  Keyframe kf;
  kf.image = std::move(image);
  kf.prompt = job.prompt;
  kf.seed = job.seed;
  kf.generation_time = result.finished_us > result.submitted_us
                           ? static_cast<GstClockTime>(result.finished_us - result.submitted_us) * GST_USECOND
                           : 0;
  GstState state = GST_STATE(self);  // racy read is fine: only picks how to stamp
  kf.available_running_time = state == GST_STATE_PLAYING ? current_running_time(self) : GST_CLOCK_TIME_NONE;

  g_mutex_lock(&priv->lock);
  priv->stats.jobs_succeeded++;
  priv->stats.in_flight = priv->in_flight.size();
  priv->stats.last_generation_time = kf.generation_time;
  priv->stats.total_generation_time += kf.generation_time;
  g_mutex_unlock(&priv->lock);

  /* Queue job N+1 first (counting this keyframe as waiting), then hand keyframe N over. */
  schedule_jobs(self, 1);
  g_mutex_lock(&priv->lock);
  priv->ready.push_back(std::move(kf));
  g_cond_broadcast(&priv->cond);
  g_mutex_unlock(&priv->lock);
}

struct InjectRequest {
  GstComfyKeyframeSrc *self;
  dw::Image image;
  std::string reason;
};

static void apply_injection(InjectRequest *req);

static gboolean inject_cb(gpointer data) {
  auto *req = static_cast<InjectRequest *>(data);
  try {
    apply_injection(req);
  } catch (const std::exception &e) {
    set_fatal(req->self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Failed to inject a keyframe", e.what());
  }
  return G_SOURCE_REMOVE;
}

static void apply_injection(InjectRequest *req) {
  GstComfyKeyframeSrc *self = req->self;
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (!priv->client) return;
  Settings s = settings_snapshot(self);

  dw::Image image = req->image;
  if (image.width != s.width || image.height != s.height) image = dw::resize_bilinear(image, s.width, s.height);

  /* Jobs running from the old lineage would overwrite the injection: forget them. */
  guint64 discarded = 0;
  for (auto &entry : priv->in_flight) {
    priv->client->cancel(entry.first, true);
    discarded++;
  }
  priv->in_flight.clear();
  priv->retry_queue.clear();
  if (priv->retry_source) {
    GSource *src = g_main_context_find_source_by_id(priv->client_context, priv->retry_source);
    if (src) g_source_destroy(src);
    priv->retry_source = 0;
  }

  priv->next_input = JobInput();
  priv->next_input.png = dw::encode_png(image, 1);

  Keyframe kf;
  kf.image = std::move(image);
  kf.injected = true;
  kf.reason = req->reason;
  kf.generation_time = 0;
  kf.available_running_time = GST_STATE(self) == GST_STATE_PLAYING ? current_running_time(self) : GST_CLOCK_TIME_NONE;
  {
    Settings cur = s;
    kf.prompt = pick_prompt(cur, priv->jobs_started);
  }

  g_mutex_lock(&priv->lock);
  priv->stats.injections++;
  priv->stats.jobs_discarded += discarded;
  priv->stats.in_flight = 0;
  g_mutex_unlock(&priv->lock);
  GST_INFO_OBJECT(self, "injected keyframe (%s); %" G_GUINT64_FORMAT " stale job(s) discarded", req->reason.c_str(),
                  discarded);
  schedule_jobs(self, 1);
  g_mutex_lock(&priv->lock);
  priv->ready.push_back(std::move(kf));
  g_cond_broadcast(&priv->cond);
  g_mutex_unlock(&priv->lock);
}

static gboolean schedule_cb(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  try {
    schedule_jobs(self);
  } catch (const std::exception &e) {
    set_fatal(self, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "Failed to queue a job", e.what());
  }
  return G_SOURCE_REMOVE;
}

static gboolean shutdown_cb(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (priv->retry_source) {
    GSource *src = g_main_context_find_source_by_id(priv->client_context, priv->retry_source);
    if (src) g_source_destroy(src);
    priv->retry_source = 0;
  }
  priv->retry_queue.clear();
  priv->in_flight.clear();
  priv->client.reset();  // cancels every request; no callback after this
  g_main_loop_quit(priv->client_loop);
  return G_SOURCE_REMOVE;
}

static gpointer client_thread_func(gpointer data) {
  auto *self = GST_COMFY_KEYFRAME_SRC(data);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  GMainContext *context = priv->client_context;
  g_main_context_push_thread_default(context);

  Settings s = settings_snapshot(self);
  dw::comfy::ClientConfig config;
  config.server_url = s.server;
  config.timeouts.connect_ms = s.connect_timeout;
  config.timeouts.queue_ms = s.queue_timeout;
  config.timeouts.execute_ms = s.execute_timeout;
  config.timeouts.download_ms = s.download_timeout;
  config.use_websocket = s.use_websocket;
  priv->client = std::make_unique<dw::comfy::Client>(config, context);
  priv->client->set_connection_callback([self](bool connected, const Error &error) {
    GstComfyKeyframeSrcPrivate *p = self->priv;
    dw::comfy::ClientStats cs = p->client ? p->client->stats() : dw::comfy::ClientStats();
    g_mutex_lock(&p->lock);
    p->stats.connected = connected;
    p->stats.reconnects = cs.reconnects;
    g_mutex_unlock(&p->lock);
    if (connected)
      GST_INFO_OBJECT(self, "websocket connected as %s", cs.client_id.c_str());
    else
      GST_INFO_OBJECT(self, "websocket down: %s", error.describe().c_str());
  });
  priv->client->start();
  schedule_jobs(self);

  g_main_loop_run(priv->client_loop);
  priv->client.reset();
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
  if (!parse_bindings(s.bindings, &overrides, &binding_error)) {
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
  using dw::comfy::Param;
  std::vector<Param> used = {Param::Prompt, Param::NegativePrompt, Param::Seed, Param::Denoise};
  if (s.steps >= 0) used.push_back(Param::Steps);
  if (s.cfg >= 0) used.push_back(Param::Cfg);
  std::string ignored;
  for (Param p : used) {
    if (priv->workflow->binding(p).bound()) continue;
    ignored += std::string(ignored.empty() ? "" : "; ") + dw::comfy::param_name(p) + ": " +
               priv->workflow->unbound_reason(p);
  }
  if (!ignored.empty())
    GST_ELEMENT_WARNING(self, RESOURCE, SETTINGS, ("Workflow %s cannot take some settings; they are ignored",
                                                   priv->workflow->origin().c_str()),
                        ("%s", ignored.c_str()));
  return true;
}

static gboolean gst_comfy_keyframe_src_start(GstBaseSrc *src) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  Settings s = settings_snapshot(self);

  try {
    GUri *uri = g_uri_parse(s.server.c_str(), G_URI_FLAGS_NONE, nullptr);
    bool valid_uri = uri && (g_strcmp0(g_uri_get_scheme(uri), "http") == 0 || g_strcmp0(g_uri_get_scheme(uri), "https") == 0);
    if (uri) g_uri_unref(uri);
    if (!valid_uri) {
      GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Invalid server URL '%s' (expected http://host:port)", s.server.c_str()),
                        (nullptr));
      return FALSE;
    }
    if (!load_workflow(self, s)) return FALSE;

    priv->seed_image = dw::Image();
    priv->seed_png.clear();
    if (!s.seed_image.empty()) {
      gchar *contents = nullptr;
      gsize length = 0;
      GError *gerr = nullptr;
      if (!g_file_get_contents(s.seed_image.c_str(), &contents, &length, &gerr)) {
        GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("Cannot read seed-image '%s'", s.seed_image.c_str()),
                          ("%s", gerr->message));
        g_clear_error(&gerr);
        priv->workflow.reset();
        return FALSE;
      }
      std::string decode_error;
      bool ok = dw::decode_png(reinterpret_cast<const uint8_t *>(contents), length, priv->seed_image, &decode_error);
      if (ok) priv->seed_png.assign(contents, contents + length);
      g_free(contents);
      if (!ok) {
        GST_ELEMENT_ERROR(self, RESOURCE, READ, ("seed-image '%s' is not a usable PNG", s.seed_image.c_str()),
                          ("%s", decode_error.c_str()));
        priv->workflow.reset();
        return FALSE;
      }
    }

    g_mutex_lock(&priv->lock);
    priv->ready.clear();
    priv->flushing = false;
    priv->fatal = false;
    priv->fatal_message.clear();
    priv->pushed = 0;
    priv->stats = Stats();
    g_mutex_unlock(&priv->lock);
    priv->last_pts = GST_CLOCK_TIME_NONE;
    priv->jobs_started = 0;
    priv->unreachable_streak = 0;
    priv->unreachable_backoff.reset();
    priv->in_flight.clear();
    priv->retry_queue.clear();
    priv->upload_slot = 0;
    gchar *uuid = g_uuid_string_random();
    priv->upload_prefix = std::string("dreamwindow_") + std::string(uuid).substr(0, 8) + "_";
    g_free(uuid);

    priv->next_input = JobInput();
    if (!priv->seed_png.empty()) {
      priv->next_input.png = priv->seed_png;
    } else {
      priv->next_input.png = dw::encode_png(make_bootstrap_image(s.width, s.height, s.seed), 1);
    }

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
  GMainContext *context = nullptr;
  g_mutex_lock(&priv->lock);
  context = priv->client_context;
  priv->client_context = nullptr;
  priv->ready.clear();
  g_mutex_unlock(&priv->lock);
  if (priv->client_loop) {
    g_main_loop_unref(priv->client_loop);
    priv->client_loop = nullptr;
  }
  if (context) g_main_context_unref(context);
  priv->workflow.reset();
  priv->next_input = JobInput();
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

static bool image_from_buffer(GstBuffer *buffer, GstCaps *caps, dw::Image *out, std::string *error) {
  GstVideoInfo info;
  if (!gst_video_info_from_caps(&info, caps)) {
    *error = "caps are not raw video";
    return false;
  }
  GstVideoFormat fmt = GST_VIDEO_INFO_FORMAT(&info);
  int channels = fmt == GST_VIDEO_FORMAT_RGB ? 3 : (fmt == GST_VIDEO_FORMAT_RGBA || fmt == GST_VIDEO_FORMAT_RGBx) ? 4 : 0;
  if (!channels) {
    *error = std::string("unsupported format ") + gst_video_format_to_string(fmt) + " (expected RGB, RGBA or RGBx)";
    return false;
  }
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, &info, buffer, GST_MAP_READ)) {
    *error = "buffer does not match its caps";
    return false;
  }
  dw::Image img(GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info), 3);
  const guint8 *data = static_cast<const guint8 *>(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0));
  gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0);
  for (int y = 0; y < img.height; ++y) {
    const guint8 *s = data + static_cast<size_t>(stride) * y;
    uint8_t *d = img.row(y);
    for (int x = 0; x < img.width; ++x) {
      d[3 * x + 0] = s[channels * x + 0];
      d[3 * x + 1] = s[channels * x + 1];
      d[3 * x + 2] = s[channels * x + 2];
    }
  }
  gst_video_frame_unmap(&frame);
  *out = std::move(img);
  return true;
}

static gboolean gst_comfy_keyframe_src_event(GstBaseSrc *src, GstEvent *event) {
  auto *self = GST_COMFY_KEYFRAME_SRC(src);
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  if (dw_event_is_inject(event)) {
    GstBuffer *buffer = nullptr;
    GstCaps *caps = nullptr;
    gchar *reason = nullptr;
    gdouble similarity = 0;
    if (!dw_event_parse_inject(event, &buffer, &caps, &reason, &similarity)) {
      GST_WARNING_OBJECT(self, "malformed %s event ignored", DW_EVENT_INJECT_NAME);
      return FALSE;
    }
    auto *req = new InjectRequest{self, dw::Image(), reason ? reason : ""};
    std::string error;
    bool ok = image_from_buffer(buffer, caps, &req->image, &error);
    gst_buffer_unref(buffer);
    gst_caps_unref(caps);
    g_free(reason);
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
  return GST_BASE_SRC_CLASS(parent_class)->event(src, event);
}

static GstStructure *build_stats(GstComfyKeyframeSrc *self) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  Stats st = priv->stats;
  size_t ready = priv->ready.size();
  g_mutex_unlock(&priv->lock);
  GstClockTime mean = st.jobs_succeeded ? st.total_generation_time / st.jobs_succeeded : GST_CLOCK_TIME_NONE;
  return gst_structure_new("application/x-comfykeyframesrc-stats", "keyframes", G_TYPE_UINT64, st.keyframes,
                           "jobs-queued", G_TYPE_UINT64, st.jobs_queued, "jobs-succeeded", G_TYPE_UINT64,
                           st.jobs_succeeded, "jobs-failed", G_TYPE_UINT64, st.jobs_failed, "jobs-retried",
                           G_TYPE_UINT64, st.jobs_retried, "jobs-discarded", G_TYPE_UINT64, st.jobs_discarded,
                           "injections", G_TYPE_UINT64, st.injections, "last-generation-time", G_TYPE_UINT64,
                           st.last_generation_time, "mean-generation-time", G_TYPE_UINT64, mean,
                           "server-wait-time", G_TYPE_UINT64, st.server_wait_time, "in-flight", G_TYPE_UINT,
                           st.in_flight, "ready", G_TYPE_UINT, static_cast<guint>(ready), "reconnects",
                           G_TYPE_UINT64, st.reconnects, "connected", G_TYPE_BOOLEAN, st.connected, nullptr);
}

static GstFlowReturn create_keyframe_buffer(GstComfyKeyframeSrc *self, GstBuffer **outbuf);

static GstFlowReturn gst_comfy_keyframe_src_create(GstPushSrc *psrc, GstBuffer **outbuf) {
  auto *self = GST_COMFY_KEYFRAME_SRC(psrc);
  try {
    return create_keyframe_buffer(self, outbuf);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Failed to produce a keyframe"), ("%s", e.what()));
    return GST_FLOW_ERROR;
  }
}

static GstFlowReturn create_keyframe_buffer(GstComfyKeyframeSrc *self, GstBuffer **outbuf) {
  GstComfyKeyframeSrcPrivate *priv = self->priv;
  Settings s = settings_snapshot(self);

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
  Keyframe kf = std::move(priv->ready.front());
  priv->ready.pop_front();
  guint64 index = priv->pushed++;
  priv->stats.keyframes = priv->pushed;
  GMainContext *context = priv->client_context ? g_main_context_ref(priv->client_context) : nullptr;
  g_mutex_unlock(&priv->lock);

  /* A keyframe left the queue: the client thread may queue the next job now. */
  if (context) {
    g_main_context_invoke(context, schedule_cb, self);
    g_main_context_unref(context);
  }

  GstVideoInfo *info = &priv->info;
  int channels = GST_VIDEO_INFO_FORMAT(info) == GST_VIDEO_FORMAT_RGB ? 3 : 4;
  if (GST_VIDEO_INFO_WIDTH(info) != kf.image.width || GST_VIDEO_INFO_HEIGHT(info) != kf.image.height) {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Keyframe size %dx%d does not match the negotiated %dx%d",
                                                kf.image.width, kf.image.height, GST_VIDEO_INFO_WIDTH(info),
                                                GST_VIDEO_INFO_HEIGHT(info)),
                      (nullptr));
    return GST_FLOW_ERROR;
  }
  dw::Image img = kf.image.channels == channels ? std::move(kf.image) : dw::convert_channels(kf.image, channels);

  GstBuffer *buffer = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(info), nullptr);
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, info, buffer, GST_MAP_WRITE)) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, RESOURCE, FAILED, ("Failed to map an output buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  guint8 *data = static_cast<guint8 *>(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0));
  gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0);
  for (int y = 0; y < img.height; ++y) memcpy(data + static_cast<size_t>(stride) * y, img.row(y), img.stride());
  gst_video_frame_unmap(&frame);

  GstClockTime pts = kf.available_running_time;
  if (!GST_CLOCK_TIME_IS_VALID(pts)) pts = current_running_time(self);
  if (!GST_CLOCK_TIME_IS_VALID(pts)) pts = GST_CLOCK_TIME_IS_VALID(priv->last_pts) ? priv->last_pts + 1 : 0;
  if (GST_CLOCK_TIME_IS_VALID(priv->last_pts) && pts <= priv->last_pts) pts = priv->last_pts + 1;
  priv->last_pts = pts;
  GST_BUFFER_PTS(buffer) = pts;
  GST_BUFFER_DTS(buffer) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION(buffer) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_OFFSET(buffer) = index;
  GST_BUFFER_OFFSET_END(buffer) = index + 1;
  if (index == 0) GST_BUFFER_FLAG_SET(buffer, GST_BUFFER_FLAG_DISCONT);
  dw_buffer_add_frame_meta(buffer, kf.injected ? DW_FRAME_KIND_INJECTED : DW_FRAME_KIND_KEYFRAME, index, 0.0);

  GST_DEBUG_OBJECT(self, "keyframe %" G_GUINT64_FORMAT " pts %" GST_TIME_FORMAT "%s", index, GST_TIME_ARGS(pts),
                   kf.injected ? " (injected)" : "");

  if (s.post_messages) {
    GstStructure *st = gst_structure_new(
        "dreamwindow-keyframe", "index", G_TYPE_UINT64, index, "running-time", G_TYPE_UINT64, pts, "generation-time",
        G_TYPE_UINT64, kf.generation_time, "prompt", G_TYPE_STRING, kf.prompt.c_str(), "seed", G_TYPE_INT64, kf.seed,
        "injected", G_TYPE_BOOLEAN, kf.injected, "reason", G_TYPE_STRING, kf.reason.c_str(), nullptr);
    gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), st));
  }
  *outbuf = buffer;
  return GST_FLOW_OK;
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
    g_value_take_boxed(value, build_stats(self));
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

static void gst_comfy_keyframe_src_class_init(GstComfyKeyframeSrcClass *klass) {
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
  GstBaseSrcClass *basesrc_class = GST_BASE_SRC_CLASS(klass);
  GstPushSrcClass *pushsrc_class = GST_PUSH_SRC_CLASS(klass);

  gobject_class->set_property = gst_comfy_keyframe_src_set_property;
  gobject_class->get_property = gst_comfy_keyframe_src_get_property;
  gobject_class->finalize = gst_comfy_keyframe_src_finalize;

  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);

  g_object_class_install_property(gobject_class, PROP_SERVER,
      g_param_spec_string("server", "Server URL", "ComfyUI server base URL (http://host:port)", DEFAULT_SERVER, rw_ready));
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
  g_object_class_install_property(gobject_class, PROP_MAX_IN_FLIGHT,
      g_param_spec_uint("max-in-flight", "Max jobs in flight",
                        "Jobs outstanding at the server at once. 1 = a strict feedback loop; >1 queues ahead "
                        "from the latest available keyframe (more throughput with several GPUs, but sibling "
                        "keyframes share an input)",
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
                        "error; an unreachable server is retried forever",
                        0, 1000, DEFAULT_MAX_RETRIES, rw_playing));
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
                         "(ns), server-wait-time (ns the streaming thread waited), in-flight, ready, reconnects, "
                         "connected",
                         GST_TYPE_STRUCTURE, static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "ComfyUI keyframe source", "Source/Video/Network",
      "Live source of keyframes generated by a ComfyUI server in an img2img feedback loop; the next job is queued "
      "before the current keyframe is pushed, so generation overlaps with all downstream work",
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

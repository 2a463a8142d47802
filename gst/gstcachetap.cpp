/* cachetap
 *
 * A pass-through tap for the keyframe stream (between comfykeyframesrc and vaeinterp). Every buffer
 * goes downstream untouched and at once; a reference to each keyframe is handed to a worker thread
 * that
 *  - embeds it (the shared VAE's pooled latent + a colour histogram when a model is configured,
 *    else thumbnail + colour-histogram features; dw::cache::Embedder),
 *  - adds it to an on-disk cache of diverse keyframes when it is diverse enough (cache-dir,
 *    max-entries, eviction, acceptance, diversity-threshold; dw::cache::KeyframeCache),
 *  - watches the last collapse-window keyframes for a collapsing feedback loop (near-identical
 *    consecutive keyframes, colours running away; dw::cache::CollapseDetector),
 *  - on collapse, asks the injection policy (cooldown, mild-collapse odds, is any cached entry
 *    dissimilar enough; dw::cache::InjectionPolicy), blends the chosen entry with the current
 *    keyframe (latent slerp, or a pixel blend without a model) and sends the upstream
 *    "dreamwindow-inject" event, which comfykeyframesrc turns into the next keyframe and the next
 *    job's input; posts "dreamwindow-injection",
 *  - at low priority (only when no keyframe waits), every monitor-interval keyframes, summarises
 *    the cache (incremental similarity matrix, redundancy, clusters, diversity), optionally adapts
 *    diversity-threshold, and posts "dreamwindow-cache".
 *
 * What lives where: every rule is in lib/cache (embedding.h, cache.h: acceptance, eviction, pick;
 * collapse.h; injection.h; monitor.h; store.h). Pixels come through the one frame bridge
 * (dwframe.h). The keyframe's index, prompt and seed come from its own DwFrameMeta (set by
 * comfykeyframesrc), never from another element's properties. This file is glue: the tap, the
 * worker thread, the event, stats and messages.
 *
 * Threads and locks (see docs/architecture.md and docs/elements/cachetap.md):
 *  - transform_ip() (streaming thread) only refs the buffer into a bounded queue (max-queue; when
 *    full the oldest waiting analysis is dropped and counted in analyses-skipped) and returns.
 *  - the worker is started in start() (READY->PAUSED) and stopped in stop() by flag + signal +
 *    join, the lock released first. It alone touches the cache, the detector and the codec.
 *  - priv->lock guards the queue, the running flag and the stats. It is never held while
 *    embedding, writing files, pushing the event or posting. Settings live under the object lock;
 *    the worker takes a snapshot per keyframe.
 *
 * Example:
 *   gst-launch-1.0 comfykeyframesrc ! cachetap cache-dir=/var/cache/dreamwindow ! \
 *       vaeinterp model-dir=models ! videoconvert ! autovideosink
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstcachetap.h"

#include <gst/video/video.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cache/cache.h"
#include "cache/collapse.h"
#include "cache/embedding.h"
#include "cache/injection.h"
#include "cache/monitor.h"
#include "cache/store.h"
#include "dwevents.h"
#include "dwframe.h"
#include "dwmeta.h"
#include "dwstats.h"
#include "gstdreamwindowelements.h"
#include "image/image.h"
#include "latent/codec.h"

GST_DEBUG_CATEGORY_STATIC(cachetap_debug);
GST_DEBUG_CATEGORY_STATIC(cachetap_dataflow_debug);
#define GST_CAT_DEFAULT cachetap_debug

#define DEFAULT_CACHE_DIR nullptr
#define DEFAULT_MAX_ENTRIES 64
#define DEFAULT_EVICTION GST_CACHE_TAP_EVICTION_REDUNDANCY
#define DEFAULT_ACCEPTANCE GST_CACHE_TAP_ACCEPTANCE_AVERAGE
#define DEFAULT_DIVERSITY_THRESHOLD 0.8
#define DEFAULT_COLLAPSE_WINDOW 6
#define DEFAULT_COLLAPSE_THRESHOLD 0.95
#define DEFAULT_INJECTION TRUE
#define DEFAULT_INJECTION_COOLDOWN 8
#define DEFAULT_INJECTION_STRENGTH 0.75
#define DEFAULT_MILD_PROBABILITY 0.5
#define DEFAULT_MONITOR_INTERVAL 10
#define DEFAULT_ADAPTIVE_THRESHOLDS FALSE
#define DEFAULT_TARGET_DIVERSITY_MIN 0.3
#define DEFAULT_TARGET_DIVERSITY_MAX 0.6
#define DEFAULT_MAX_QUEUE 4
#define DEFAULT_ENCODER nullptr
#define DEFAULT_DECODER nullptr
#define DEFAULT_MODEL_DIR nullptr
#define DEFAULT_DEVICE "cpu"
#define DEFAULT_ANALYSIS_DELAY 0
#define DEFAULT_POST_MESSAGES TRUE
/* Pooled latent grid (per channel) and the largest side an image is encoded at for the embedding. */
#define EMBED_GRID 4
#define EMBED_MAX_SIDE 256

enum {
  PROP_0,
  PROP_CACHE_DIR,
  PROP_MAX_ENTRIES,
  PROP_EVICTION,
  PROP_ACCEPTANCE,
  PROP_DIVERSITY_THRESHOLD,
  PROP_COLLAPSE_WINDOW,
  PROP_COLLAPSE_THRESHOLD,
  PROP_INJECTION,
  PROP_INJECTION_COOLDOWN,
  PROP_INJECTION_STRENGTH,
  PROP_MILD_PROBABILITY,
  PROP_MONITOR_INTERVAL,
  PROP_ADAPTIVE_THRESHOLDS,
  PROP_TARGET_DIVERSITY_MIN,
  PROP_TARGET_DIVERSITY_MAX,
  PROP_MAX_QUEUE,
  PROP_ENCODER,
  PROP_DECODER,
  PROP_MODEL_DIR,
  PROP_DEVICE,
  PROP_ANALYSIS_DELAY,
  PROP_POST_MESSAGES,
  PROP_STATS,
};

GType gst_cache_tap_eviction_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_CACHE_TAP_EVICTION_LRU, "Evict the least recently used entry (added, matched or injected)", "lru"},
      {GST_CACHE_TAP_EVICTION_REDUNDANCY, "Evict the entry most similar to the rest of the cache", "redundancy"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstCacheTapEviction", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

GType gst_cache_tap_acceptance_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_CACHE_TAP_ACCEPTANCE_AVERAGE, "Add when the mean similarity to the cache is below diversity-threshold",
       "average"},
      {GST_CACHE_TAP_ACCEPTANCE_MAX, "Add when the highest similarity to any entry is below diversity-threshold",
       "max"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    GType t = g_enum_register_static("GstCacheTapAcceptance", values);
    g_once_init_leave(&type, t);
  }
  return type;
}

namespace {

struct Settings {
  std::string cache_dir;
  guint max_entries = DEFAULT_MAX_ENTRIES;
  GstCacheTapEviction eviction = DEFAULT_EVICTION;
  GstCacheTapAcceptance acceptance = DEFAULT_ACCEPTANCE;
  gdouble diversity_threshold = DEFAULT_DIVERSITY_THRESHOLD;
  guint collapse_window = DEFAULT_COLLAPSE_WINDOW;
  gdouble collapse_threshold = DEFAULT_COLLAPSE_THRESHOLD;
  gboolean injection = DEFAULT_INJECTION;
  guint injection_cooldown = DEFAULT_INJECTION_COOLDOWN;
  gdouble injection_strength = DEFAULT_INJECTION_STRENGTH;
  gdouble mild_probability = DEFAULT_MILD_PROBABILITY;
  guint monitor_interval = DEFAULT_MONITOR_INTERVAL;
  gboolean adaptive_thresholds = DEFAULT_ADAPTIVE_THRESHOLDS;
  gdouble target_diversity_min = DEFAULT_TARGET_DIVERSITY_MIN;
  gdouble target_diversity_max = DEFAULT_TARGET_DIVERSITY_MAX;
  guint max_queue = DEFAULT_MAX_QUEUE;
  std::string encoder;
  std::string decoder;
  std::string model_dir;
  std::string device = DEFAULT_DEVICE;
  guint analysis_delay = DEFAULT_ANALYSIS_DELAY;
  gboolean post_messages = DEFAULT_POST_MESSAGES;
};

struct Item {
  GstBuffer *buffer = nullptr;
  GstVideoInfo info;
  guint64 keyframe_index = 0;
  DwFrameKind kind = DW_FRAME_KIND_KEYFRAME;
  GstClockTime running_time = GST_CLOCK_TIME_NONE;
  std::string prompt;  // the keyframe's own facts, from its DwFrameMeta (empty / -1 unknown)
  gint64 seed = -1;
};

struct Stats {
  guint64 keyframes = 0;          // keyframes (and injected keyframes) seen by transform_ip
  guint64 analysed = 0;           // analysed by the worker
  guint64 skipped = 0;            // dropped from the full queue (never analysed)
  guint64 added = 0;
  guint64 rejected = 0;           // not diverse enough
  guint64 evicted = 0;
  guint64 injections = 0;
  guint64 injections_refused = 0; // event not handled upstream
  guint64 no_candidate = 0;       // collapse but nothing dissimilar enough in the cache
  guint64 collapses_mild = 0;     // keyframes judged mildly collapsed
  guint64 collapses_severe = 0;
  guint64 errors = 0;             // analyses that failed (bad caps, disk errors...)
  guint64 monitor_runs = 0;
  guint entries = 0;
  guint warm_entries = 0;         // entries found at start
  std::string level = "none";
  std::string reason;
  gdouble last_similarity = 0;    // newest consecutive pair
  gdouble window_similarity = 0;  // mean over the window
  gdouble diversity = 0;
  guint clusters = 0;
  gdouble max_redundancy = 0;
  gdouble diversity_threshold = DEFAULT_DIVERSITY_THRESHOLD;  // current (adaptive)
  GstClockTime analysis_time_total = 0;
  GstClockTime analysis_time_max = 0;
  std::string embedding = "pixel";
};

}  // namespace

struct GstCacheTapPrivate {
  GMutex lock;
  GCond cond;
  Settings settings;  // under the object lock

  // Under lock.
  std::deque<Item> queue;
  guint max_queue = DEFAULT_MAX_QUEUE;
  bool running = false;
  Stats stats;
  GstVideoInfo info;
  bool have_info = false;

  std::thread worker;

  // Worker-only state (created in start() before the worker exists, destroyed after the join).
  std::shared_ptr<dw::latent::SharedCodec> codec;
  std::unique_ptr<dw::cache::Embedder> embedder;
  std::unique_ptr<dw::cache::KeyframeCache> cache;
  dw::cache::CollapseDetector detector;
  dw::cache::InjectionPolicy policy;
  guint64 since_monitor = 0;
  bool monitor_due = false;
  double threshold = DEFAULT_DIVERSITY_THRESHOLD;  // adaptive copy of diversity-threshold
  double configured_threshold = DEFAULT_DIVERSITY_THRESHOLD;
  GstClockTime last_running_time = GST_CLOCK_TIME_NONE;
};

struct _GstCacheTap {
  GstBaseTransform parent;
  GstCacheTapPrivate *priv;
};

G_DEFINE_TYPE(GstCacheTap, gst_cache_tap, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE(cachetap, "cachetap", GST_RANK_NONE, GST_TYPE_CACHE_TAP,
                                      GST_DEBUG_CATEGORY_INIT(cachetap_debug, "cachetap", 0,
                                                              "keyframe cache and collapse steering");
                                      GST_DEBUG_CATEGORY_INIT(cachetap_dataflow_debug, "cachetap_dataflow", 0,
                                                              "cachetap per-buffer logs"));

/* Any packed 8-bit RGB-family format the frame bridge reads (it is a tap: nothing is converted). */
#define CACHETAP_CAPS GST_VIDEO_CAPS_MAKE(DW_FRAME_FORMATS)

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(CACHETAP_CAPS));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(CACHETAP_CAPS));

static void clear_queue(std::deque<Item> &queue) {
  for (auto &it : queue) gst_buffer_unref(it.buffer);
  queue.clear();
}

static Settings snapshot_settings(GstCacheTap *self) {
  GST_OBJECT_LOCK(self);
  Settings s = self->priv->settings;
  GST_OBJECT_UNLOCK(self);
  return s;
}

/* ------------------------------------------------------------------------------------------------ */
/* Streaming thread                                                                                 */

static GstFlowReturn transform_ip_impl(GstBaseTransform *trans, GstBuffer *buffer) {
  auto *self = GST_CACHE_TAP(trans);
  GstCacheTapPrivate *priv = self->priv;
  DwFrameMeta *meta = dw_buffer_get_frame_meta(buffer);
  if (meta && meta->kind == DW_FRAME_KIND_INBETWEEN) return GST_FLOW_OK;  // only keyframes are analysed
  Item item;
  item.kind = meta ? meta->kind : DW_FRAME_KIND_KEYFRAME;
  if (meta && meta->prompt) item.prompt = meta->prompt;
  if (meta) item.seed = meta->seed;
  GstClockTime pts = GST_BUFFER_PTS(buffer);
  if (GST_CLOCK_TIME_IS_VALID(pts))
    item.running_time = gst_segment_to_running_time(&trans->segment, GST_FORMAT_TIME, pts);

  g_mutex_lock(&priv->lock);
  item.keyframe_index = meta ? meta->keyframe_index : priv->stats.keyframes;
  priv->stats.keyframes++;
  if (!priv->running || !priv->have_info) {
    g_mutex_unlock(&priv->lock);
    return GST_FLOW_OK;
  }
  item.info = priv->info;
  item.buffer = gst_buffer_ref(buffer);
  bool dropped = false;
  while (priv->queue.size() >= priv->max_queue) {
    gst_buffer_unref(priv->queue.front().buffer);
    priv->queue.pop_front();
    priv->stats.skipped++;
    dropped = true;
  }
  priv->queue.push_back(item);
  g_cond_signal(&priv->cond);
  g_mutex_unlock(&priv->lock);
  GST_CAT_LOG_OBJECT(cachetap_dataflow_debug, self, "keyframe %" G_GUINT64_FORMAT " queued for analysis%s",
                     item.keyframe_index, dropped ? " (queue full: oldest analysis skipped)" : "");
  return GST_FLOW_OK;
}

static GstFlowReturn gst_cache_tap_transform_ip(GstBaseTransform *trans, GstBuffer *buffer) {
  try {
    return transform_ip_impl(trans, buffer);
  } catch (const std::exception &e) {
    /* Nothing here should throw (bad_alloc at most); the buffer still goes through untouched. */
    GST_WARNING_OBJECT(trans, "keyframe not queued for analysis: %s", e.what());
    return GST_FLOW_OK;
  }
}

static gboolean gst_cache_tap_set_caps(GstBaseTransform *trans, GstCaps *incaps, GstCaps *outcaps) {
  auto *self = GST_CACHE_TAP(trans);
  GstVideoInfo info;
  if (!gst_video_info_from_caps(&info, incaps)) {
    GST_WARNING_OBJECT(self, "cannot parse caps %" GST_PTR_FORMAT, incaps);
    return FALSE;
  }
  g_mutex_lock(&self->priv->lock);
  self->priv->info = info;
  self->priv->have_info = true;
  g_mutex_unlock(&self->priv->lock);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------------ */
/* Worker                                                                                           */

/* The injection as a new RGB buffer and its caps (through the one frame bridge). */
static GstBuffer *buffer_from_image(const dw::Image &img, GstCaps **caps) {
  GstVideoInfo info;
  if (!dw_video_info_for_image(img, &info)) throw std::runtime_error("the blended keyframe is empty");
  std::string error;
  GstBuffer *buf = dw_buffer_from_image_full(img, &info, &error);
  if (!buf) throw std::runtime_error("cannot make the injection buffer: " + error);
  *caps = gst_video_info_to_caps(&info);
  return buf;
}

/* The properties as lib/cache's configuration (the one place they are mapped). */
static dw::cache::CacheConfig cache_config(const Settings &s, double threshold) {
  dw::cache::CacheConfig cfg;
  cfg.max_entries = s.max_entries;
  cfg.eviction = s.eviction == GST_CACHE_TAP_EVICTION_LRU ? dw::cache::Eviction::Lru : dw::cache::Eviction::Redundancy;
  cfg.acceptance =
      s.acceptance == GST_CACHE_TAP_ACCEPTANCE_MAX ? dw::cache::Acceptance::Max : dw::cache::Acceptance::Average;
  cfg.diversity_threshold = threshold;
  return cfg;
}

static void apply_cache_config(GstCacheTapPrivate *priv, const Settings &s) {
  if (s.diversity_threshold != priv->configured_threshold) {
    /* A property change overrides whatever the adaptation had reached. */
    priv->configured_threshold = s.diversity_threshold;
    priv->threshold = s.diversity_threshold;
  }
  const dw::cache::CacheConfig cfg = cache_config(s, priv->threshold);
  const auto &cur = priv->cache->config();
  if (cur.max_entries != cfg.max_entries || cur.eviction != cfg.eviction || cur.acceptance != cfg.acceptance ||
      cur.diversity_threshold != cfg.diversity_threshold)
    priv->cache->set_config(cfg);
  dw::cache::InjectionConfig ic;
  ic.enabled = s.injection;
  ic.cooldown = s.injection_cooldown;
  ic.mild_probability = s.mild_probability;
  ic.max_similarity = s.collapse_threshold;
  priv->policy.set_config(ic);
  dw::cache::CollapseConfig cc = priv->detector.config();
  if (cc.window != s.collapse_window || cc.threshold != s.collapse_threshold) {
    cc.window = s.collapse_window;
    cc.threshold = s.collapse_threshold;
    priv->detector.set_config(cc);
  }
}

static void post_element_message(GstCacheTap *self, GstStructure *s) {
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), s));
}

/* Sends the injection upstream and records the outcome. Worker thread, no lock held. */
static void inject(GstCacheTap *self, const Settings &s, const Item &item, const dw::Image &current,
                   const dw::cache::CollapseState &state, const dw::cache::InjectionDecision &d) {
  GstCacheTapPrivate *priv = self->priv;
  const dw::cache::Pick &pick = *d.pick;
  const dw::cache::Entry entry = priv->cache->store().entries()[pick.index];
  dw::Image cached = priv->cache->store().load_image(pick.index);
  dw::Image blended = dw::cache::blend_for_injection(current, cached, s.injection_strength, priv->codec);
  GstCaps *caps = nullptr;
  GstBuffer *buf = buffer_from_image(blended, &caps);
  GstEvent *event = dw_event_new_inject(buf, caps, d.reason.c_str(), pick.similarity);
  gst_buffer_unref(buf);
  gst_caps_unref(caps);

  GST_INFO_OBJECT(self, "injecting cached keyframe %s (similarity %.3f to the window; %s)", entry.id.c_str(),
                  pick.similarity, d.reason.c_str());
  /* Upstream, from this thread, no lock held. */
  const gboolean handled = gst_pad_push_event(GST_BASE_TRANSFORM_SINK_PAD(self), event);
  g_mutex_lock(&priv->lock);
  (handled ? priv->stats.injections : priv->stats.injections_refused)++;
  g_mutex_unlock(&priv->lock);
  if (!handled) {
    GST_WARNING_OBJECT(self, "upstream did not handle the %s event", DW_EVENT_INJECT_NAME);
    return;
  }
  priv->policy.on_injected();
  priv->detector.reset();
  priv->cache->mark_injected(pick.index);
  if (!s.post_messages) return;
  post_element_message(
      self, gst_structure_new(DW_MSG_INJECTION_NAME, DW_MSG_INJECTION_REASON, G_TYPE_STRING, d.reason.c_str(),
                              DW_MSG_INJECTION_LEVEL, G_TYPE_STRING, dw::cache::collapse_level_name(state.level),
                              DW_MSG_INJECTION_SIMILARITY, G_TYPE_DOUBLE, pick.similarity,
                              DW_MSG_INJECTION_WINDOW_SIMILARITY, G_TYPE_DOUBLE, state.mean_similarity,
                              DW_MSG_INJECTION_ENTRY, G_TYPE_STRING, entry.id.c_str(), DW_MSG_INJECTION_ENTRY_PROMPT,
                              G_TYPE_STRING, entry.prompt.c_str(), DW_MSG_INJECTION_STRENGTH, G_TYPE_DOUBLE,
                              s.injection_strength, DW_MSG_INJECTION_KEYFRAME_INDEX, G_TYPE_UINT64,
                              item.keyframe_index, DW_MSG_INJECTION_RUNNING_TIME, G_TYPE_UINT64, item.running_time,
                              nullptr));
}

/* Asks dw::cache::InjectionPolicy whether to inject, and does. Worker thread, no lock held. */
static void maybe_inject(GstCacheTap *self, const Settings &s, const Item &item, const dw::Image &current,
                         const dw::cache::CollapseState &state) {
  GstCacheTapPrivate *priv = self->priv;
  const dw::cache::InjectionDecision d = priv->policy.decide(state, [priv]() {
    std::vector<dw::cache::Embedding> window(priv->detector.window().begin(), priv->detector.window().end());
    return priv->cache->pick_least_similar(window);
  });
  switch (d.verdict) {
    case dw::cache::InjectionVerdict::Inject:
      inject(self, s, item, current, state, d);
      return;
    case dw::cache::InjectionVerdict::NoCandidate:
      GST_INFO_OBJECT(self, "collapse (%s) but no cached keyframe is dissimilar enough (%zu entries)",
                      state.reason.c_str(), priv->cache->size());
      g_mutex_lock(&priv->lock);
      priv->stats.no_candidate++;
      g_mutex_unlock(&priv->lock);
      return;
    case dw::cache::InjectionVerdict::NoCollapse:
      return;
    default:
      GST_DEBUG_OBJECT(self, "collapse (%s) but no injection: %s", dw::cache::collapse_level_name(state.level),
                       dw::cache::injection_verdict_name(d.verdict));
      return;
  }
}

static void run_monitor(GstCacheTap *self, const Settings &s) {
  GstCacheTapPrivate *priv = self->priv;
  const double cluster_threshold = priv->threshold;
  dw::cache::MonitorReport r = priv->cache->report(cluster_threshold);
  double old_threshold = priv->threshold;
  if (s.adaptive_thresholds) {
    dw::cache::ThresholdAdapter adapt;
    adapt.low = std::min(s.target_diversity_min, s.target_diversity_max);
    adapt.high = std::max(s.target_diversity_min, s.target_diversity_max);
    priv->threshold = adapt.update(priv->threshold, r);
    if (priv->threshold != old_threshold) {
      GST_INFO_OBJECT(self, "diversity %.3f outside [%.2f, %.2f]: diversity-threshold %.3f -> %.3f", r.diversity,
                      adapt.low, adapt.high, old_threshold, priv->threshold);
      apply_cache_config(priv, s);
    }
  }
  g_mutex_lock(&priv->lock);
  priv->stats.monitor_runs++;
  priv->stats.diversity = r.diversity;
  priv->stats.clusters = static_cast<guint>(r.clusters);
  priv->stats.max_redundancy = r.max_redundancy;
  priv->stats.diversity_threshold = priv->threshold;
  priv->stats.entries = static_cast<guint>(r.entries);
  g_mutex_unlock(&priv->lock);
  GST_DEBUG_OBJECT(self, "cache: %zu entries, diversity %.3f, %zu clusters (largest %zu), max redundancy %.3f",
                   r.entries, r.diversity, r.clusters, r.largest_cluster, r.max_redundancy);
  if (s.post_messages) {
    std::string most = r.most_redundant >= 0 ? priv->cache->store().entries()[r.most_redundant].id : "";
    post_element_message(
        self, gst_structure_new(DW_MSG_CACHE_NAME, DW_MSG_CACHE_ENTRIES, G_TYPE_UINT, static_cast<guint>(r.entries),
                                DW_MSG_CACHE_DIVERSITY, G_TYPE_DOUBLE, r.diversity, DW_MSG_CACHE_MEAN_SIMILARITY,
                                G_TYPE_DOUBLE, r.mean_similarity, DW_MSG_CACHE_CLUSTERS, G_TYPE_UINT,
                                static_cast<guint>(r.clusters), DW_MSG_CACHE_LARGEST_CLUSTER, G_TYPE_UINT,
                                static_cast<guint>(r.largest_cluster), DW_MSG_CACHE_MAX_REDUNDANCY, G_TYPE_DOUBLE,
                                r.max_redundancy, DW_MSG_CACHE_MOST_REDUNDANT, G_TYPE_STRING, most.c_str(),
                                DW_MSG_CACHE_DIVERSITY_THRESHOLD, G_TYPE_DOUBLE, priv->threshold,
                                DW_MSG_CACHE_RUNNING_TIME, G_TYPE_UINT64, priv->last_running_time, nullptr));
  }
}

static void analyse(GstCacheTap *self, const Item &item) {
  GstCacheTapPrivate *priv = self->priv;
  const Settings s = snapshot_settings(self);
  if (s.analysis_delay) g_usleep(static_cast<gulong>(s.analysis_delay) * 1000);
  const gint64 start = g_get_monotonic_time();
  apply_cache_config(priv, s);

  dw::Image image;
  std::string error;
  if (!dw_image_from_buffer(item.buffer, &item.info, &image, &error))
    throw std::runtime_error("keyframe " + std::to_string(item.keyframe_index) + ": " + error);
  dw::cache::Embedding embedding = priv->embedder->embed(image);
  priv->last_running_time = item.running_time;

  bool added = false;
  std::vector<std::string> evicted;
  if (item.kind == DW_FRAME_KIND_INJECTED) {
    /* Our own (or someone's) injection: the loop restarts from it; never re-added to the cache. */
    priv->detector.reset();
  } else {
    dw::cache::Decision d = priv->cache->consider(image, embedding, item.prompt, item.keyframe_index);
    added = d.added;
    evicted = d.evicted;
    GST_CAT_DEBUG_OBJECT(cachetap_dataflow_debug, self,
                         "keyframe %" G_GUINT64_FORMAT ": mean/max similarity to cache %.3f/%.3f -> %s",
                         item.keyframe_index, d.mean_similarity, d.max_similarity, d.added ? "added" : "not added");
  }
  const dw::cache::CollapseState state = priv->detector.push(embedding);

  g_mutex_lock(&priv->lock);
  Stats &st = priv->stats;
  if (item.kind != DW_FRAME_KIND_INJECTED) {
    if (added)
      st.added++;
    else
      st.rejected++;
  }
  st.evicted += evicted.size();
  st.entries = static_cast<guint>(priv->cache->size());
  st.level = dw::cache::collapse_level_name(state.level);
  st.reason = state.reason;
  st.last_similarity = state.last_similarity;
  st.window_similarity = state.mean_similarity;
  if (state.level == dw::cache::CollapseLevel::Mild) st.collapses_mild++;
  if (state.level == dw::cache::CollapseLevel::Severe) st.collapses_severe++;
  g_mutex_unlock(&priv->lock);

  if (state.level != dw::cache::CollapseLevel::None)
    GST_DEBUG_OBJECT(self, "keyframe %" G_GUINT64_FORMAT ": collapse %s (%s, mean similarity %.3f)",
                     item.keyframe_index, dw::cache::collapse_level_name(state.level), state.reason.c_str(),
                     state.mean_similarity);
  if (item.kind != DW_FRAME_KIND_INJECTED) maybe_inject(self, s, item, image, state);

  const GstClockTime took = static_cast<GstClockTime>(g_get_monotonic_time() - start) * GST_USECOND;
  g_mutex_lock(&priv->lock);
  /* Counted once the analysis is complete, injection decision included, and together with its
   * time: whoever sees "analysed" grow also sees any inject event it produced, and a consistent mean. */
  st.analysed++;
  st.analysis_time_total += took;
  st.analysis_time_max = std::max(st.analysis_time_max, took);
  g_mutex_unlock(&priv->lock);

  if (s.monitor_interval > 0 && ++priv->since_monitor >= s.monitor_interval) {
    priv->since_monitor = 0;
    priv->monitor_due = true;
  }
}

static void worker_loop(GstCacheTap *self) {
  GstCacheTapPrivate *priv = self->priv;
  GST_DEBUG_OBJECT(self, "worker started");
  while (true) {
    g_mutex_lock(&priv->lock);
    /* Low priority: the monitor runs only when no keyframe waits. */
    while (priv->running && priv->queue.empty() && !priv->monitor_due) g_cond_wait(&priv->cond, &priv->lock);
    if (!priv->running) {
      g_mutex_unlock(&priv->lock);
      break;
    }
    if (priv->queue.empty()) {
      g_mutex_unlock(&priv->lock);
      priv->monitor_due = false;
      try {
        run_monitor(self, snapshot_settings(self));
      } catch (const std::exception &e) {
        GST_WARNING_OBJECT(self, "cache monitor failed: %s", e.what());
      }
      continue;
    }
    Item item = priv->queue.front();
    priv->queue.pop_front();
    g_mutex_unlock(&priv->lock);
    try {
      analyse(self, item);
    } catch (const std::exception &e) {
      /* Per-keyframe problems (a full disk, a model error) cost that analysis, never the stream. */
      g_mutex_lock(&priv->lock);
      guint64 errors = ++priv->stats.errors;
      g_mutex_unlock(&priv->lock);
      GST_WARNING_OBJECT(self, "analysis of keyframe %" G_GUINT64_FORMAT " failed: %s", item.keyframe_index, e.what());
      if (errors == 1)
        GST_ELEMENT_WARNING(self, STREAM, FAILED, ("Keyframe analysis failed: %s", e.what()),
                            ("further failures are only counted (stats: errors)"));
    }
    gst_buffer_unref(item.buffer);
  }
  GST_DEBUG_OBJECT(self, "worker stopped");
}

/* ------------------------------------------------------------------------------------------------ */
/* Start / stop                                                                                     */

static std::string default_cache_dir() {
  gchar *p = g_build_filename(g_get_user_cache_dir(), "gst-dreamwindow", "cachetap", nullptr);
  std::string dir = p;
  g_free(p);
  return dir;
}

/* The shared VAE, when model files are given (same key as vaeinterp's -> the same instance).
 * False after posting an error. */
static bool acquire_codec(GstCacheTap *self, const Settings &s, std::shared_ptr<dw::latent::SharedCodec> *codec,
                          std::string *model_id) {
  if (s.encoder.empty() && s.decoder.empty() && s.model_dir.empty()) return true;
  dw::latent::CodecConfig config;
  config.encoder_path = s.encoder;
  config.decoder_path = s.decoder;
  config.model_dir = s.model_dir;
  config.device = s.device;
  try {
    *codec = dw::latent::ModelRegistry::acquire(config);
    *model_id = config.key();
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Cannot load the model: %s", e.what()),
                      ("encoder '%s', decoder '%s', model-dir '%s', device %s", s.encoder.c_str(),
                       s.decoder.c_str(), s.model_dir.c_str(), s.device.c_str()));
    return false;
  }
  return true;
}

/* Opens (warm start) or creates the cache in s.cache_dir. NULL after posting an error. */
static std::unique_ptr<dw::cache::KeyframeCache> open_cache(GstCacheTap *self, const Settings &s,
                                                            const dw::cache::Embedder *emb) {
  dw::cache::LoadReport report;
  std::unique_ptr<dw::cache::Store> store;
  try {
    store = std::make_unique<dw::cache::Store>(s.cache_dir, emb->signature(),
                                               [emb](const dw::Image &img) { return emb->embed(img); }, &report);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_WRITE, ("Cannot use cache-dir '%s'", s.cache_dir.c_str()),
                      ("%s", e.what()));
    return nullptr;
  }
  if (report.index_corrupt)
    GST_ELEMENT_WARNING(self, RESOURCE, READ,
                        ("The cache index in '%s' is corrupt; rebuilt from the %zu images present",
                         s.cache_dir.c_str(), report.adopted),
                        ("%s (kept as %s.corrupt)", report.index_error.c_str(), dw::cache::Store::kIndexName));
  GST_INFO_OBJECT(self,
                  "cache '%s': %zu entries (%zu from the index, %zu adopted, %zu re-embedded, %zu missing, %zu "
                  "unreadable); embedding %s",
                  s.cache_dir.c_str(), store->size(), report.loaded, report.adopted, report.reembedded, report.missing,
                  report.unreadable, emb->signature().c_str());
  try {
    return std::make_unique<dw::cache::KeyframeCache>(std::move(store), cache_config(s, s.diversity_threshold));
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, RESOURCE, WRITE, ("Cannot use cache-dir '%s'", s.cache_dir.c_str()), ("%s", e.what()));
    return nullptr;
  }
}

static gboolean gst_cache_tap_start_impl(GstCacheTap *self) {
  GstCacheTapPrivate *priv = self->priv;
  Settings s = snapshot_settings(self);
  if (s.cache_dir.empty()) s.cache_dir = default_cache_dir();
  std::shared_ptr<dw::latent::SharedCodec> codec;
  std::string model_id;
  if (!acquire_codec(self, s, &codec, &model_id)) return FALSE;
  auto embedder = std::make_unique<dw::cache::Embedder>(codec, EMBED_GRID, EMBED_MAX_SIDE, model_id);
  std::unique_ptr<dw::cache::KeyframeCache> cache = open_cache(self, s, embedder.get());
  if (!cache) return FALSE;

  dw::cache::CollapseConfig cc;
  cc.window = s.collapse_window;
  cc.threshold = s.collapse_threshold;
  priv->detector = dw::cache::CollapseDetector(cc);
  priv->codec = std::move(codec);
  priv->embedder = std::move(embedder);
  priv->cache = std::move(cache);
  priv->since_monitor = 0;
  priv->monitor_due = false;
  priv->threshold = priv->configured_threshold = s.diversity_threshold;
  priv->last_running_time = GST_CLOCK_TIME_NONE;
  priv->policy.reset();

  g_mutex_lock(&priv->lock);
  priv->stats = Stats();
  priv->stats.entries = priv->stats.warm_entries = static_cast<guint>(priv->cache->size());
  priv->stats.diversity_threshold = s.diversity_threshold;
  priv->stats.embedding = priv->embedder->has_latent() ? priv->codec->codec().describe() : "pixel";
  priv->max_queue = s.max_queue;
  priv->running = true;
  g_mutex_unlock(&priv->lock);
  priv->worker = std::thread(worker_loop, self);
  return TRUE;
}

static gboolean gst_cache_tap_start(GstBaseTransform *trans) {
  auto *self = GST_CACHE_TAP(trans);
  try {
    return gst_cache_tap_start_impl(self);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, LIBRARY, INIT, ("cachetap failed to start: %s", e.what()), (nullptr));
    return FALSE;
  }
}

static gboolean gst_cache_tap_stop(GstBaseTransform *trans) {
  auto *self = GST_CACHE_TAP(trans);
  GstCacheTapPrivate *priv = self->priv;
  try {
    g_mutex_lock(&priv->lock);
    priv->running = false;
    clear_queue(priv->queue);
    priv->have_info = false;
    g_cond_broadcast(&priv->cond);
    g_mutex_unlock(&priv->lock);
    if (priv->worker.joinable()) priv->worker.join();  // never with the lock held
    priv->cache.reset();
    priv->embedder.reset();
    priv->codec.reset();  // frees the model if vaeinterp does not hold it
    priv->detector.reset();
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR(self, LIBRARY, SHUTDOWN, ("cachetap failed to stop: %s", e.what()), (nullptr));
    return FALSE;
  }
  return TRUE;
}

/* ------------------------------------------------------------------------------------------------ */
/* GObject                                                                                          */

static GstStructure *build_stats(GstCacheTap *self) {
  GstCacheTapPrivate *priv = self->priv;
  g_mutex_lock(&priv->lock);
  Stats st = priv->stats;
  guint queued = static_cast<guint>(priv->queue.size());
  g_mutex_unlock(&priv->lock);
  const GstClockTime mean = st.analysed ? st.analysis_time_total / st.analysed : GST_CLOCK_TIME_NONE;
  return gst_structure_new(
      DW_STATS_CACHETAP_NAME, DW_STATS_CACHETAP_KEYFRAMES, G_TYPE_UINT64, st.keyframes, DW_STATS_CACHETAP_ANALYSED,
      G_TYPE_UINT64, st.analysed, DW_STATS_CACHETAP_ANALYSES_SKIPPED, G_TYPE_UINT64, st.skipped,
      DW_STATS_CACHETAP_QUEUED, G_TYPE_UINT, queued, DW_STATS_CACHETAP_ADDED, G_TYPE_UINT64, st.added,
      DW_STATS_CACHETAP_REJECTED, G_TYPE_UINT64, st.rejected, DW_STATS_CACHETAP_EVICTED, G_TYPE_UINT64, st.evicted,
      DW_STATS_CACHETAP_ENTRIES, G_TYPE_UINT, st.entries, DW_STATS_CACHETAP_WARM_ENTRIES, G_TYPE_UINT,
      st.warm_entries, DW_STATS_CACHETAP_INJECTIONS, G_TYPE_UINT64, st.injections,
      DW_STATS_CACHETAP_INJECTIONS_REFUSED, G_TYPE_UINT64, st.injections_refused, DW_STATS_CACHETAP_NO_CANDIDATE,
      G_TYPE_UINT64, st.no_candidate, DW_STATS_CACHETAP_COLLAPSES_MILD, G_TYPE_UINT64, st.collapses_mild,
      DW_STATS_CACHETAP_COLLAPSES_SEVERE, G_TYPE_UINT64, st.collapses_severe, DW_STATS_CACHETAP_COLLAPSE_LEVEL,
      G_TYPE_STRING, st.level.c_str(), DW_STATS_CACHETAP_COLLAPSE_REASON, G_TYPE_STRING, st.reason.c_str(),
      DW_STATS_CACHETAP_LAST_SIMILARITY, G_TYPE_DOUBLE, st.last_similarity, DW_STATS_CACHETAP_WINDOW_SIMILARITY,
      G_TYPE_DOUBLE, st.window_similarity, DW_STATS_CACHETAP_DIVERSITY, G_TYPE_DOUBLE, st.diversity,
      DW_STATS_CACHETAP_CLUSTERS, G_TYPE_UINT, st.clusters, DW_STATS_CACHETAP_MAX_REDUNDANCY, G_TYPE_DOUBLE,
      st.max_redundancy, DW_STATS_CACHETAP_DIVERSITY_THRESHOLD, G_TYPE_DOUBLE, st.diversity_threshold,
      DW_STATS_CACHETAP_MONITOR_RUNS, G_TYPE_UINT64, st.monitor_runs, DW_STATS_CACHETAP_ERRORS, G_TYPE_UINT64,
      st.errors, DW_STATS_CACHETAP_MEAN_ANALYSIS_TIME, G_TYPE_UINT64, mean, DW_STATS_CACHETAP_MAX_ANALYSIS_TIME,
      G_TYPE_UINT64, st.analysis_time_max, DW_STATS_CACHETAP_EMBEDDING, G_TYPE_STRING, st.embedding.c_str(),
      nullptr);
}

static void gst_cache_tap_set_property(GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec) {
  auto *self = GST_CACHE_TAP(object);
  auto str = [](const GValue *v) { return std::string(g_value_get_string(v) ? g_value_get_string(v) : ""); };
  GST_OBJECT_LOCK(self);
  Settings &s = self->priv->settings;
  switch (prop_id) {
    case PROP_CACHE_DIR: s.cache_dir = str(value); break;
    case PROP_MAX_ENTRIES: s.max_entries = g_value_get_uint(value); break;
    case PROP_EVICTION: s.eviction = static_cast<GstCacheTapEviction>(g_value_get_enum(value)); break;
    case PROP_ACCEPTANCE: s.acceptance = static_cast<GstCacheTapAcceptance>(g_value_get_enum(value)); break;
    case PROP_DIVERSITY_THRESHOLD: s.diversity_threshold = g_value_get_double(value); break;
    case PROP_COLLAPSE_WINDOW: s.collapse_window = g_value_get_uint(value); break;
    case PROP_COLLAPSE_THRESHOLD: s.collapse_threshold = g_value_get_double(value); break;
    case PROP_INJECTION: s.injection = g_value_get_boolean(value); break;
    case PROP_INJECTION_COOLDOWN: s.injection_cooldown = g_value_get_uint(value); break;
    case PROP_INJECTION_STRENGTH: s.injection_strength = g_value_get_double(value); break;
    case PROP_MILD_PROBABILITY: s.mild_probability = g_value_get_double(value); break;
    case PROP_MONITOR_INTERVAL: s.monitor_interval = g_value_get_uint(value); break;
    case PROP_ADAPTIVE_THRESHOLDS: s.adaptive_thresholds = g_value_get_boolean(value); break;
    case PROP_TARGET_DIVERSITY_MIN: s.target_diversity_min = g_value_get_double(value); break;
    case PROP_TARGET_DIVERSITY_MAX: s.target_diversity_max = g_value_get_double(value); break;
    case PROP_MAX_QUEUE: s.max_queue = g_value_get_uint(value); break;
    case PROP_ENCODER: s.encoder = str(value); break;
    case PROP_DECODER: s.decoder = str(value); break;
    case PROP_MODEL_DIR: s.model_dir = str(value); break;
    case PROP_DEVICE: s.device = str(value); break;
    case PROP_ANALYSIS_DELAY: s.analysis_delay = g_value_get_uint(value); break;
    case PROP_POST_MESSAGES: s.post_messages = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_cache_tap_get_property(GObject *object, guint prop_id, GValue *value, GParamSpec *pspec) {
  auto *self = GST_CACHE_TAP(object);
  if (prop_id == PROP_STATS) {
    g_value_take_boxed(value, build_stats(self));
    return;
  }
  auto opt = [](const std::string &v) { return v.empty() ? nullptr : v.c_str(); };
  GST_OBJECT_LOCK(self);
  const Settings &s = self->priv->settings;
  switch (prop_id) {
    case PROP_CACHE_DIR: g_value_set_string(value, opt(s.cache_dir)); break;
    case PROP_MAX_ENTRIES: g_value_set_uint(value, s.max_entries); break;
    case PROP_EVICTION: g_value_set_enum(value, s.eviction); break;
    case PROP_ACCEPTANCE: g_value_set_enum(value, s.acceptance); break;
    case PROP_DIVERSITY_THRESHOLD: g_value_set_double(value, s.diversity_threshold); break;
    case PROP_COLLAPSE_WINDOW: g_value_set_uint(value, s.collapse_window); break;
    case PROP_COLLAPSE_THRESHOLD: g_value_set_double(value, s.collapse_threshold); break;
    case PROP_INJECTION: g_value_set_boolean(value, s.injection); break;
    case PROP_INJECTION_COOLDOWN: g_value_set_uint(value, s.injection_cooldown); break;
    case PROP_INJECTION_STRENGTH: g_value_set_double(value, s.injection_strength); break;
    case PROP_MILD_PROBABILITY: g_value_set_double(value, s.mild_probability); break;
    case PROP_MONITOR_INTERVAL: g_value_set_uint(value, s.monitor_interval); break;
    case PROP_ADAPTIVE_THRESHOLDS: g_value_set_boolean(value, s.adaptive_thresholds); break;
    case PROP_TARGET_DIVERSITY_MIN: g_value_set_double(value, s.target_diversity_min); break;
    case PROP_TARGET_DIVERSITY_MAX: g_value_set_double(value, s.target_diversity_max); break;
    case PROP_MAX_QUEUE: g_value_set_uint(value, s.max_queue); break;
    case PROP_ENCODER: g_value_set_string(value, opt(s.encoder)); break;
    case PROP_DECODER: g_value_set_string(value, opt(s.decoder)); break;
    case PROP_MODEL_DIR: g_value_set_string(value, opt(s.model_dir)); break;
    case PROP_DEVICE: g_value_set_string(value, s.device.c_str()); break;
    case PROP_ANALYSIS_DELAY: g_value_set_uint(value, s.analysis_delay); break;
    case PROP_POST_MESSAGES: g_value_set_boolean(value, s.post_messages); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_cache_tap_finalize(GObject *object) {
  auto *self = GST_CACHE_TAP(object);
  GstCacheTapPrivate *priv = self->priv;
  clear_queue(priv->queue);
  g_mutex_clear(&priv->lock);
  g_cond_clear(&priv->cond);
  delete priv;
  G_OBJECT_CLASS(gst_cache_tap_parent_class)->finalize(object);
}

static void gst_cache_tap_init(GstCacheTap *self) {
  self->priv = new GstCacheTapPrivate();
  g_mutex_init(&self->priv->lock);
  g_cond_init(&self->priv->cond);
  gst_video_info_init(&self->priv->info);
  gst_base_transform_set_passthrough(GST_BASE_TRANSFORM(self), TRUE);
  gst_base_transform_set_in_place(GST_BASE_TRANSFORM(self), TRUE);
}

/* Cache properties. */
static void install_cache_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);
  /**
   * GstCacheTap:cache-dir:
   * Directory of the cache: PNG images plus index.json. Created if missing; an existing cache is
   * loaded (warm start). Must be writable (an error at start otherwise).
   */
  g_object_class_install_property(gobject_class, PROP_CACHE_DIR,
      g_param_spec_string("cache-dir", "Cache directory",
                          "Directory holding the cached keyframes (PNG) and index.json; loaded at start if present; "
                          "NULL = $XDG_CACHE_HOME/gst-dreamwindow/cachetap",
                          DEFAULT_CACHE_DIR, rw_ready));
  /**
   * GstCacheTap:max-entries:
   * Cache size; beyond it an entry is evicted (see eviction).
   */
  g_object_class_install_property(gobject_class, PROP_MAX_ENTRIES,
      g_param_spec_uint("max-entries", "Max entries", "Most keyframes kept in the cache (then one is evicted)", 1,
                        100000, DEFAULT_MAX_ENTRIES, rw_playing));
  /**
   * GstCacheTap:eviction:
   * Which entry leaves a full cache.
   */
  g_object_class_install_property(gobject_class, PROP_EVICTION,
      g_param_spec_enum("eviction", "Eviction", "Which entry a full cache evicts", GST_TYPE_CACHE_TAP_EVICTION,
                        DEFAULT_EVICTION, rw_playing));
  /**
   * GstCacheTap:acceptance:
   * How a keyframe's similarity to the cache is summarised before comparing with diversity-threshold.
   */
  g_object_class_install_property(gobject_class, PROP_ACCEPTANCE,
      g_param_spec_enum("acceptance", "Acceptance",
                        "Similarity compared with diversity-threshold: the mean over the cache or the highest",
                        GST_TYPE_CACHE_TAP_ACCEPTANCE, DEFAULT_ACCEPTANCE, rw_playing));
  /**
   * GstCacheTap:diversity-threshold:
   * A keyframe is added when its (mean or max, see acceptance) similarity to the cache is below this.
   */
  g_object_class_install_property(gobject_class, PROP_DIVERSITY_THRESHOLD,
      g_param_spec_double("diversity-threshold", "Diversity threshold",
                          "Add a keyframe when its similarity to the cache (see acceptance) is below this; also the "
                          "cluster linkage threshold (1 = add everything, 0 = add nothing once the "
                          "cache has an entry; near-duplicates are never added)",
                          0.0, 1.0, DEFAULT_DIVERSITY_THRESHOLD, rw_playing));
}

/* Collapse and injection properties. */
static void install_injection_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);
  /**
   * GstCacheTap:collapse-window:
   * Keyframes looked at by the collapse detector.
   */
  g_object_class_install_property(gobject_class, PROP_COLLAPSE_WINDOW,
      g_param_spec_uint("collapse-window", "Collapse window (keyframes)",
                        "Recent keyframes over which a collapse is judged", 2, 256, DEFAULT_COLLAPSE_WINDOW,
                        rw_playing));
  /**
   * GstCacheTap:collapse-threshold:
   * Consecutive keyframes more similar than this count as stagnating.
   */
  g_object_class_install_property(gobject_class, PROP_COLLAPSE_THRESHOLD,
      g_param_spec_double("collapse-threshold", "Collapse threshold",
                          "Consecutive keyframes more similar than this are stagnating; all of them in the window "
                          "(with colours running away, or frozen) = severe collapse",
                          0.0, 1.0, DEFAULT_COLLAPSE_THRESHOLD, rw_playing));
  /**
   * GstCacheTap:injection:
   * Whether collapses are steered out by injection (FALSE: detect, cache and report only).
   */
  g_object_class_install_property(gobject_class, PROP_INJECTION,
      g_param_spec_boolean("injection", "Injection",
                           "Send a cached keyframe upstream (dreamwindow-inject) when the loop collapses; FALSE = "
                           "observe only",
                           DEFAULT_INJECTION, rw_playing));
  /**
   * GstCacheTap:injection-cooldown:
   * Keyframes that must pass after an injection before the next one.
   */
  g_object_class_install_property(gobject_class, PROP_INJECTION_COOLDOWN,
      g_param_spec_uint("injection-cooldown", "Injection cooldown (keyframes)",
                        "Keyframes analysed after an injection before another one may be sent (0 = none)", 0,
                        G_MAXUINT, DEFAULT_INJECTION_COOLDOWN, rw_playing));
  /**
   * GstCacheTap:injection-strength:
   * Blend position between the current keyframe (0) and the cached one (1).
   */
  g_object_class_install_property(gobject_class, PROP_INJECTION_STRENGTH,
      g_param_spec_double("injection-strength", "Injection strength",
                          "How far the injected image goes from the current keyframe towards the cached one (latent "
                          "slerp with a model, pixel blend without): 0 = current, 1 = the cached image",
                          0.0, 1.0, DEFAULT_INJECTION_STRENGTH, rw_playing));
  /**
   * GstCacheTap:mild-probability:
   * Chance of injecting on a mild collapse (a severe one always injects).
   */
  g_object_class_install_property(gobject_class, PROP_MILD_PROBABILITY,
      g_param_spec_double("mild-probability", "Mild collapse probability",
                          "Probability of injecting when the collapse is mild (severe: always)", 0.0, 1.0,
                          DEFAULT_MILD_PROBABILITY, rw_playing));
}

/* Monitor properties. */
static void install_monitor_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);
  /**
   * GstCacheTap:monitor-interval:
   * Keyframes between two background monitor passes (dreamwindow-cache message).
   */
  g_object_class_install_property(gobject_class, PROP_MONITOR_INTERVAL,
      g_param_spec_uint("monitor-interval", "Monitor interval (keyframes)",
                        "Keyframes between cache monitor passes (redundancy, clusters, diversity; a "
                        "dreamwindow-cache message); 0 = never",
                        0, G_MAXUINT, DEFAULT_MONITOR_INTERVAL, rw_playing));
  /**
   * GstCacheTap:adaptive-thresholds:
   * Nudge diversity-threshold so that the cache's internal diversity stays in the target band.
   */
  g_object_class_install_property(gobject_class, PROP_ADAPTIVE_THRESHOLDS,
      g_param_spec_boolean("adaptive-thresholds", "Adaptive thresholds",
                           "At each monitor pass, lower the diversity threshold when the cache's diversity is below "
                           "target-diversity-min and raise it above target-diversity-max",
                           DEFAULT_ADAPTIVE_THRESHOLDS, rw_playing));
  g_object_class_install_property(gobject_class, PROP_TARGET_DIVERSITY_MIN,
      g_param_spec_double("target-diversity-min", "Target diversity (min)",
                          "Lower edge of the internal-diversity band (1 - mean pairwise similarity) kept by "
                          "adaptive-thresholds",
                          0.0, 2.0, DEFAULT_TARGET_DIVERSITY_MIN, rw_playing));
  g_object_class_install_property(gobject_class, PROP_TARGET_DIVERSITY_MAX,
      g_param_spec_double("target-diversity-max", "Target diversity (max)",
                          "Upper edge of the internal-diversity band kept by adaptive-thresholds", 0.0, 2.0,
                          DEFAULT_TARGET_DIVERSITY_MAX, rw_playing));
}

/* Model, queue and reporting properties. */
static void install_other_properties(GObjectClass *gobject_class) {
  const GParamFlags rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
  const GParamFlags rw_ready = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_READY);
  const GParamFlags rw_playing = static_cast<GParamFlags>(rw | GST_PARAM_MUTABLE_PLAYING);
  /**
   * GstCacheTap:max-queue:
   * Keyframes waiting for analysis; when full the oldest waiting one is skipped (counted), the
   * stream is never delayed.
   */
  g_object_class_install_property(gobject_class, PROP_MAX_QUEUE,
      g_param_spec_uint("max-queue", "Max queued analyses (keyframes)",
                        "Keyframes waiting for the analysis worker; when full the oldest is skipped and counted "
                        "(analyses-skipped); buffers are never delayed",
                        1, 1024, DEFAULT_MAX_QUEUE, rw_ready));
  g_object_class_install_property(gobject_class, PROP_ENCODER,
      g_param_spec_string("encoder", "Encoder file",
                          "VAE encoder for the latent embedding and latent blends (.safetensors for taesd, .pt for "
                          "torchscript), shared with vaeinterp when it names the same files; NULL = none "
                          "(pixel features and pixel blends)",
                          DEFAULT_ENCODER, rw_ready));
  g_object_class_install_property(gobject_class, PROP_DECODER,
      g_param_spec_string("decoder", "Decoder file", "VAE decoder, same kind as encoder; NULL = from model-dir",
                          DEFAULT_DECODER, rw_ready));
  g_object_class_install_property(gobject_class, PROP_MODEL_DIR,
      g_param_spec_string("model-dir", "Model directory",
                          "Directory with *encoder*/*decoder* files, used when encoder/decoder are not set; NULL = "
                          "none",
                          DEFAULT_MODEL_DIR, rw_ready));
  g_object_class_install_property(gobject_class, PROP_DEVICE,
      g_param_spec_string("device", "Device", "Device the model runs on: cpu, cuda or cuda:N", DEFAULT_DEVICE,
                          rw_ready));
  /**
   * GstCacheTap:analysis-delay:
   * Testing aid: extra time the worker spends per analysis (simulates a slow model).
   */
  g_object_class_install_property(gobject_class, PROP_ANALYSIS_DELAY,
      g_param_spec_uint("analysis-delay", "Analysis delay (ms)",
                        "Testing: the worker sleeps this long before each analysis (0 = none)", 0, 60000,
                        DEFAULT_ANALYSIS_DELAY, rw_playing));
  g_object_class_install_property(gobject_class, PROP_POST_MESSAGES,
      g_param_spec_boolean("post-messages", "Post messages",
                           "Post dreamwindow-injection and periodic dreamwindow-cache element messages",
                           DEFAULT_POST_MESSAGES, rw_playing));
  /**
   * GstCacheTap:stats:
   * application/x-cachetap-stats, see docs/elements/cachetap.md for every field.
   */
  g_object_class_install_property(gobject_class, PROP_STATS,
      g_param_spec_boxed("stats", "Statistics",
                         "application/x-cachetap-stats: keyframes, analysed, analyses-skipped, queued, added, "
                         "rejected, evicted, entries, warm-entries, injections, injections-refused, no-candidate, "
                         "collapses-mild, collapses-severe, collapse-level, collapse-reason, last-similarity, "
                         "window-similarity, diversity, clusters, max-redundancy, diversity-threshold, monitor-runs, "
                         "errors, mean-analysis-time and max-analysis-time (ns), embedding",
                         GST_TYPE_STRUCTURE, static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));
}

static void gst_cache_tap_class_init(GstCacheTapClass *klass) {
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS(klass);

  gobject_class->set_property = gst_cache_tap_set_property;
  gobject_class->get_property = gst_cache_tap_get_property;
  gobject_class->finalize = gst_cache_tap_finalize;

  install_cache_properties(gobject_class);
  install_injection_properties(gobject_class);
  install_monitor_properties(gobject_class);
  install_other_properties(gobject_class);

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "Keyframe cache tap", "Filter/Analyzer/Video",
      "Pass-through tap that caches diverse keyframes on disk, detects a collapsing img2img feedback loop and "
      "steers it out by injecting a dissimilar cached keyframe upstream (dreamwindow-inject)",
      "gst-dreamwindow developers");

  trans_class->start = GST_DEBUG_FUNCPTR(gst_cache_tap_start);
  trans_class->stop = GST_DEBUG_FUNCPTR(gst_cache_tap_stop);
  trans_class->set_caps = GST_DEBUG_FUNCPTR(gst_cache_tap_set_caps);
  trans_class->transform_ip = GST_DEBUG_FUNCPTR(gst_cache_tap_transform_ip);
  trans_class->passthrough_on_same_caps = TRUE;
  trans_class->transform_ip_on_passthrough = TRUE;

  gst_type_mark_as_plugin_api(GST_TYPE_CACHE_TAP_EVICTION, static_cast<GstPluginAPIFlags>(0));
  gst_type_mark_as_plugin_api(GST_TYPE_CACHE_TAP_ACCEPTANCE, static_cast<GstPluginAPIFlags>(0));
}

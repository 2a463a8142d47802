// The app's status: /api/status (JSON), /api/history (1 Hz samples for the HUD plot) and /metrics
// (Prometheus text exposition 0.0.4). Element figures are read from the elements' `stats` and
// messages by the names in gst/dwstats.h only.
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <algorithm>
#include <cstring>
#include <set>

#include <gst/base/gstbasesink.h>

#include "app_impl.h"
#include "dwstats.h"
#include "json_writer.h"
#include "protocol.h"

#define GST_CAT_DEFAULT dreamwindow_app_debug

namespace dw::app {

const char *const kAllElements[4] = {"comfykeyframesrc", "cachetap", "vaeinterp", "flightbuffer"};

namespace {

constexpr size_t kHistory = 600;  // samples (1 Hz): 10 minutes

// Stats fields that only grow (Prometheus counters, exported as <name>_total); every other numeric
// field is a gauge. Element owners: list a new counting field here.
const std::map<std::string, std::set<std::string>> kCounterFields = {
    {"comfykeyframesrc",
     {DW_STATS_COMFYKEYFRAMESRC_KEYFRAMES, DW_STATS_COMFYKEYFRAMESRC_JOBS_QUEUED, DW_STATS_COMFYKEYFRAMESRC_JOBS_SUCCEEDED,
      DW_STATS_COMFYKEYFRAMESRC_JOBS_FAILED, DW_STATS_COMFYKEYFRAMESRC_JOBS_RETRIED,
      DW_STATS_COMFYKEYFRAMESRC_JOBS_DISCARDED, DW_STATS_COMFYKEYFRAMESRC_INJECTIONS,
      DW_STATS_COMFYKEYFRAMESRC_SERVER_WAIT_TIME, DW_STATS_COMFYKEYFRAMESRC_RECONNECTS,
      DW_STATS_COMFYKEYFRAMESRC_OUTAGES}},
    {"backend",
     {DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_SUCCEEDED, DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_FAILED,
      DW_STATS_COMFYKEYFRAMESRC_BACKEND_JOBS_REQUEUED, DW_STATS_COMFYKEYFRAMESRC_BACKEND_RECONNECTS}},
    {"cachetap",
     {DW_STATS_CACHETAP_KEYFRAMES, DW_STATS_CACHETAP_ANALYSED, DW_STATS_CACHETAP_ANALYSES_SKIPPED,
      DW_STATS_CACHETAP_ADDED, DW_STATS_CACHETAP_REJECTED, DW_STATS_CACHETAP_EVICTED, DW_STATS_CACHETAP_INJECTIONS,
      DW_STATS_CACHETAP_INJECTIONS_REFUSED, DW_STATS_CACHETAP_NO_CANDIDATE, DW_STATS_CACHETAP_COLLAPSES_MILD,
      DW_STATS_CACHETAP_COLLAPSES_SEVERE, DW_STATS_CACHETAP_MONITOR_RUNS, DW_STATS_CACHETAP_ERRORS}},
    {"vaeinterp",
     {DW_STATS_VAEINTERP_KEYFRAMES, DW_STATS_VAEINTERP_KEYFRAMES_ENCODED, DW_STATS_VAEINTERP_KEYFRAMES_OUT,
      DW_STATS_VAEINTERP_INBETWEENS_OUT, DW_STATS_VAEINTERP_FRAMES_OUT, DW_STATS_VAEINTERP_PAIRS,
      DW_STATS_VAEINTERP_PAIRS_RESTARTED, DW_STATS_VAEINTERP_ERRORS, DW_STATS_VAEINTERP_LOCK_ACQUISITIONS,
      DW_STATS_VAEINTERP_LOCK_WAIT_MS_TOTAL,
#ifdef DW_STATS_VAEINTERP_TRANSITIONS
      DW_STATS_VAEINTERP_TRANSITIONS,
#endif
     }},
    {"flightbuffer",
     {DW_STATS_FLIGHTBUFFER_FRAMES_IN, DW_STATS_FLIGHTBUFFER_FRAMES_OUT, DW_STATS_FLIGHTBUFFER_FRAMES_REPEATED,
      DW_STATS_FLIGHTBUFFER_FRAMES_SKIPPED, DW_STATS_FLIGHTBUFFER_UNDERRUNS, DW_STATS_FLIGHTBUFFER_DROPS,
      DW_STATS_FLIGHTBUFFER_DROPPED_INBETWEENS, DW_STATS_FLIGHTBUFFER_DROPPED_KEYFRAMES,
      DW_STATS_FLIGHTBUFFER_LATE_TICKS, DW_STATS_FLIGHTBUFFER_PREBUFFER_INCOMPLETE,
      DW_STATS_FLIGHTBUFFER_FRAMES_DISTINCT, DW_STATS_FLIGHTBUFFER_DISCONTINUITIES}},
};

bool is_counter(const std::string &element, const std::string &field) {
  auto it = kCounterFields.find(element);
  return it != kCounterFields.end() && it->second.count(field);
}

GstStructure *get_stats(GstElement *e) {
  if (!e || !g_object_class_find_property(G_OBJECT_GET_CLASS(e), "stats")) return nullptr;
  GstStructure *s = nullptr;
  g_object_get(e, "stats", &s, nullptr);
  return s;
}

void write_structure(JsonWriter &w, const char *key, const GstStructure *s);

// A field as a JSON value (strings as strings, clock times NONE as null, enums by nick, arrays of
// structures as arrays of objects).
void write_value(JsonWriter &w, const char *key, const GValue *v) {
  GType t = G_VALUE_TYPE(v);
  if (t == G_TYPE_STRING) w.set(key, g_value_get_string(v));
  else if (t == G_TYPE_UINT64) w.set(key, static_cast<uint64_t>(g_value_get_uint64(v)));
  else if (t == G_TYPE_INT64) w.set(key, static_cast<int64_t>(g_value_get_int64(v)));
  else if (t == G_TYPE_UINT) w.set(key, g_value_get_uint(v));
  else if (t == G_TYPE_INT) w.set(key, g_value_get_int(v));
  else if (t == G_TYPE_DOUBLE) w.set(key, g_value_get_double(v));
  else if (t == G_TYPE_FLOAT) w.set(key, static_cast<double>(g_value_get_float(v)));
  else if (t == G_TYPE_BOOLEAN) w.set(key, static_cast<bool>(g_value_get_boolean(v)));
  else if (GST_VALUE_HOLDS_ARRAY(v) || GST_VALUE_HOLDS_LIST(v)) {
    const bool array = GST_VALUE_HOLDS_ARRAY(v);
    w.begin_array(key);
    const guint n = array ? gst_value_array_get_size(v) : gst_value_list_get_size(v);
    for (guint i = 0; i < n; ++i) write_value(w, nullptr, array ? gst_value_array_get_value(v, i) : gst_value_list_get_value(v, i));
    w.end_array();
  } else if (GST_VALUE_HOLDS_STRUCTURE(v)) {
    write_structure(w, key, gst_value_get_structure(v));
  } else if (G_VALUE_HOLDS_ENUM(v)) {
    GEnumClass *k = G_ENUM_CLASS(g_type_class_ref(t));
    GEnumValue *ev = g_enum_get_value(k, g_value_get_enum(v));
    w.set(key, ev ? ev->value_nick : nullptr);
    g_type_class_unref(k);
  } else {
    gchar *s = gst_value_serialize(v);
    w.set(key, s);
    g_free(s);
  }
}

void write_structure(JsonWriter &w, const char *key, const GstStructure *s) {
  if (!s) {
    w.null(key);
    return;
  }
  w.begin_object(key);
  for (int i = 0, n = gst_structure_n_fields(s); i < n; ++i) {
    const char *name = gst_structure_nth_field_name(s, i);
    const GValue *v = gst_structure_get_value(s, name);
    if (G_VALUE_TYPE(v) == GST_TYPE_BUFFER || G_VALUE_TYPE(v) == GST_TYPE_CAPS) continue;
    write_value(w, name, v);
  }
  w.end_object();
}

// A number field (scaled), or null when absent.
void write_field(JsonWriter &w, const char *key, const GstStructure *s, const char *field, double scale = 1.0) {
  double x = 0;
  if (field_number(s, field, &x)) w.set(key, x * scale);
  else w.null(key);
}

// A GstClockTime field as seconds, or null.
void write_seconds(JsonWriter &w, const char *key, const GstStructure *s, const char *field) {
  write_field(w, key, s, field, 1e-9);
}

std::string metric_name(const std::string &a, const std::string &b) {
  std::string n = "dreamwindow_" + a + "_" + b;
  for (char &c : n)
    if (!g_ascii_isalnum(c) && c != '_') c = '_';
  return n;
}

std::string prom_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd(buf, sizeof buf, "%.6g", v);
  return buf;
}

// A label value per the exposition format: backslash, quote and newline escaped.
std::string prom_label(const std::string &v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace

std::string get_string_prop(GstElement *e, const char *prop) {
  if (!e || !g_object_class_find_property(G_OBJECT_GET_CLASS(e), prop)) return "";
  gchar *s = nullptr;
  g_object_get(e, prop, &s, nullptr);
  std::string r = s ? s : "";
  g_free(s);
  return r;
}

GstElement *auto_child(GstElement *auto_sink) {
  if (!auto_sink) return nullptr;
  GstElement *child = nullptr;
  GstIterator *it = gst_bin_iterate_sinks(GST_BIN(auto_sink));
  GValue item = G_VALUE_INIT;
  if (gst_iterator_next(it, &item) == GST_ITERATOR_OK) child = GST_ELEMENT(gst_object_ref(g_value_get_object(&item)));
  g_value_unset(&item);
  gst_iterator_free(it);
  return child;
}

bool field_number(const GstStructure *s, const char *name, double *out) {
  if (!s || !gst_structure_has_field(s, name)) return false;
  const GValue *v = gst_structure_get_value(s, name);
  GType t = G_VALUE_TYPE(v);
  if (t == G_TYPE_UINT64) {
    guint64 x = g_value_get_uint64(v);
    if (x == GST_CLOCK_TIME_NONE) return false;
    *out = static_cast<double>(x);
  } else if (t == G_TYPE_INT64) {
    *out = static_cast<double>(g_value_get_int64(v));
  } else if (t == G_TYPE_UINT) {
    *out = g_value_get_uint(v);
  } else if (t == G_TYPE_INT) {
    *out = g_value_get_int(v);
  } else if (t == G_TYPE_DOUBLE) {
    *out = g_value_get_double(v);
  } else if (t == G_TYPE_FLOAT) {
    *out = g_value_get_float(v);
  } else if (t == G_TYPE_BOOLEAN) {
    *out = g_value_get_boolean(v) ? 1 : 0;
  } else {
    return false;
  }
  return true;
}

double Counter::rate(double window) const {
  if (points.size() < 2) return 0;
  const auto &last = points.back();
  auto first = points.front();
  for (const auto &p : points)
    if (last.first - p.first <= window) {
      first = p;
      break;
    }
  double dt = last.first - first.first;
  return dt > 0 ? std::max(0.0, (last.second - first.second) / dt) : 0;
}

void Counter::add(double t, double v) {
  if (!points.empty() && v < points.back().second) points.clear();  // restarted
  points.emplace_back(t, v);
  while (points.size() > 30) points.pop_front();
}

App::Impl::Snapshot::~Snapshot() {
  for (auto &s : stats)
    if (s.second) gst_structure_free(s.second);
}

const GstStructure *App::Impl::Snapshot::get(const char *f) const {
  auto it = stats.find(f);
  return it == stats.end() ? nullptr : it->second;
}

void App::Impl::snapshot(Snapshot &snap) const {
  for (const auto &e : elements) snap.stats[e.first] = get_stats(e.second);
}

const GstStructure *App::Impl::msg(const char *name) const {
  auto it = last_message.find(name);
  return it == last_message.end() ? nullptr : it->second;
}

// Distinct frames per second leaving flightbuffer (its frames-distinct counter over the same 5 s
// window as output_fps): a repeated frame is never counted. Absent without flightbuffer.
static bool content_rate_of(const GstStructure *buffer, const Counter &counter, double *out) {
  if (!buffer || !gst_structure_has_field(buffer, DW_STATS_FLIGHTBUFFER_FRAMES_DISTINCT)) return false;
  *out = counter.rate();
  return true;
}

void App::Impl::sample() {
  Snapshot snap;
  snapshot(snap);
  const double t = now_s();
  const GstStructure *src = snap.get("comfykeyframesrc"), *buffer = snap.get("flightbuffer"),
                     *interp = snap.get("vaeinterp");
  Sample s;
  s.t = t;
  double v = 0, rep = 0;
  if (field_number(src, DW_STATS_COMFYKEYFRAMESRC_KEYFRAMES, &v)) keyframe_counter.add(t, v);
  if (field_number(buffer, DW_STATS_FLIGHTBUFFER_FRAMES_OUT, &v)) {
    output_counter.add(t, v);
    if (field_number(buffer, DW_STATS_FLIGHTBUFFER_FRAMES_DISTINCT, &rep)) content_counter.add(t, rep);
  } else if (field_number(interp, DW_STATS_VAEINTERP_FRAMES_OUT, &v) ||
             field_number(src, DW_STATS_COMFYKEYFRAMESRC_KEYFRAMES, &v)) {
    output_counter.add(t, v);
  }
  s.keyframe_fps = keyframe_counter.rate();
  s.output_fps = output_counter.rate();
  if (!content_rate_of(buffer, content_counter, &s.content_fps)) s.content_fps = -1;
  if (field_number(interp, DW_STATS_VAEINTERP_INTERP_FPS_LAST, &v)) s.interp_fps = v;
  if (field_number(buffer, DW_STATS_FLIGHTBUFFER_FILL_TIME, &v)) s.fill_s = v / 1e9;
  if (field_number(buffer, DW_STATS_FLIGHTBUFFER_UNDERRUNS, &v)) s.underruns = static_cast<guint64>(v);
  history.push_back(s);
  while (history.size() > kHistory) history.pop_front();
  // 30 s without a new error since the last restart: the next failure starts the backoff anew.
  if (last_restart_us && !restart_source && g_get_monotonic_time() - last_restart_us > 30 * G_USEC_PER_SEC)
    restart_backoff.reset();
}

std::string App::Impl::health(const std::string &factory, const Snapshot &snap) const {
  if (!elements.count(factory)) return "absent";
  auto e = health_error.find(factory);
  if (e != health_error.end()) return "error: " + e->second;
  auto w = health_warning.find(factory);
  if (w != health_warning.end() && g_get_monotonic_time() - w->second.first < 30 * G_USEC_PER_SEC)
    return "warning: " + w->second.second;
  double connected;
  if (factory == "comfykeyframesrc" &&
      field_number(snap.get(factory.c_str()), DW_STATS_COMFYKEYFRAMESRC_CONNECTED, &connected) && connected == 0)
    return "degraded: not connected to ComfyUI";
  return "ok";
}

std::string App::Impl::state_name() const {
  GstState st = GST_STATE_NULL;
  if (pipeline) gst_element_get_state(pipeline, &st, nullptr, 0);
  return gst_element_state_get_name(st);
}

void App::Impl::write_sink_status(JsonWriter &w) {
  w.begin_object("video_sink");
  w.set("kind", opt.pipeline.empty() ? sink_kind() : std::string("custom"));
  if (GstElement *child = auto_child(auto_sink)) {
    GstElementFactory *f = gst_element_get_factory(child);
    w.set("element", f ? GST_OBJECT_NAME(f) : G_OBJECT_TYPE_NAME(child));
    // basesink's own counters: frames handed to the window system, frames dropped as late. Some
    // window sinks are bins (glimagesink): the counters are on the basesink inside.
    GstElement *base = GST_ELEMENT(gst_object_ref(child));
    if (GST_IS_BIN(child) && !GST_IS_BASE_SINK(child)) {
      GstIterator *it = gst_bin_iterate_recurse(GST_BIN(child));
      GValue item = G_VALUE_INIT;
      while (gst_iterator_next(it, &item) == GST_ITERATOR_OK) {
        GstElement *e = GST_ELEMENT(g_value_get_object(&item));
        if (GST_IS_BASE_SINK(e)) {
          gst_object_replace(reinterpret_cast<GstObject **>(&base), GST_OBJECT(e));
          g_value_reset(&item);
          break;
        }
        g_value_reset(&item);
      }
      g_value_unset(&item);
      gst_iterator_free(it);
    }
    GstStructure *st = get_stats(base);
    gst_object_unref(base);
    write_field(w, "rendered", st, "rendered");
    write_field(w, "dropped", st, "dropped");
    if (st) gst_structure_free(st);
    gst_object_unref(child);
  }
  w.end_object();
}

std::string App::Impl::status_json() {
  Snapshot snap;
  snapshot(snap);
  const GstStructure *src = snap.get("comfykeyframesrc"), *interp = snap.get("vaeinterp"),
                     *buffer = snap.get("flightbuffer"), *cache = snap.get("cachetap");
  GstElement *srce = element_of("comfykeyframesrc");
  JsonWriter w;
  w.begin_object();
  w.set("version", VERSION);
  w.set("uptime_s", now_s());
  w.set("state", state_name());
  w.set("paused", paused);
  w.set("restarts", static_cast<uint64_t>(restarts));
  w.begin_object("restart")
      .set("pending", restart_source != 0)
      .set("delay_ms", restart_source ? restart_delay_ms : 0u)
      .set("last_error", last_error)
      .end_object();
  w.set("pipeline", description);
  w.set("sink", opt.pipeline.empty() ? sink_kind() : std::string("custom"));
  write_sink_status(w);
  w.set("codec", opt.codec);
  w.begin_object("source")
      .set("server", srce ? get_string_prop(srce, "server") : server_url)
      .set("simulator", sim != nullptr)
      .set("workflow", opt.workflow.empty() ? std::string("built-in") : opt.workflow);
  // The backend pool (one entry per --comfy-url): health, availability, jobs per server.
  if (const GValue *b = src ? gst_structure_get_value(src, DW_STATS_COMFYKEYFRAMESRC_BACKENDS) : nullptr)
    write_value(w, "backends", b);
  w.end_object();

  w.begin_object("prompt");
  if (srce) {
    gdouble denoise = 0;
    gint64 seed = 0;
    g_object_get(srce, "denoise", &denoise, "seed", &seed, nullptr);
    w.set("prompt", get_string_prop(srce, "prompt"))
        .set("negative_prompt", get_string_prop(srce, "negative-prompt"))
        .set("denoise", denoise)
        .set("seed", static_cast<int64_t>(seed));
  }
  const GstStructure *kmsg = msg(DW_MSG_KEYFRAME_NAME);
  w.set("latest_keyframe_prompt", kmsg ? gst_structure_get_string(kmsg, DW_MSG_KEYFRAME_PROMPT) : nullptr);
  w.set("max_bytes", static_cast<uint64_t>(ControlLimits().max_prompt));
  w.end_object();

  w.begin_object("queues");
  double ready = 0, inflight = 0;
  const bool kq = field_number(src, DW_STATS_COMFYKEYFRAMESRC_READY, &ready) &&
                  field_number(src, DW_STATS_COMFYKEYFRAMESRC_IN_FLIGHT, &inflight);
  w.number_or_null("keyframes", kq, ready + inflight);
  write_field(w, "keyframes_ready", src, DW_STATS_COMFYKEYFRAMESRC_READY);
  write_field(w, "keyframes_in_flight", src, DW_STATS_COMFYKEYFRAMESRC_IN_FLIGHT);
  write_field(w, "interpolation", interp, DW_STATS_VAEINTERP_QUEUE_DEPTH);
  write_field(w, "cache_analysis", cache, DW_STATS_CACHETAP_QUEUED);
  w.end_object();

  w.begin_object("generation_time");
  write_field(w, "last_ms", src, DW_STATS_COMFYKEYFRAMESRC_LAST_GENERATION_TIME, 1e-6);
  write_field(w, "mean_ms", src, DW_STATS_COMFYKEYFRAMESRC_MEAN_GENERATION_TIME, 1e-6);
  w.end_object();
  write_field(w, "interpolation_fps", interp, DW_STATS_VAEINTERP_INTERP_FPS_LAST);
  w.set("interpolation_backend", interp ? gst_structure_get_string(interp, DW_STATS_VAEINTERP_BACKEND) : nullptr);
  w.set("output_fps", output_counter.rate());
  double content = 0;
  const bool have_content = content_rate_of(buffer, content_counter, &content);
  w.number_or_null("content_fps", have_content, content);
  w.set("keyframe_fps", keyframe_counter.rate());
  const GstStructure *imsg = msg(DW_MSG_INTERP_NAME);
  w.begin_object("vae_lock_wait");
  write_field(w, "last_ms", imsg, DW_MSG_INTERP_LOCK_WAIT_MS);
  write_field(w, "total_ms", interp, DW_STATS_VAEINTERP_LOCK_WAIT_MS_TOTAL);
  write_field(w, "max_ms", interp, DW_STATS_VAEINTERP_LOCK_WAIT_MS_MAX);
  w.end_object();

  w.begin_object("buffer");
  write_seconds(w, "fill_s", buffer, DW_STATS_FLIGHTBUFFER_FILL_TIME);
  write_seconds(w, "prebuffer_s", buffer, DW_STATS_FLIGHTBUFFER_PREBUFFER_TIME);
  write_seconds(w, "target_s", buffer, DW_STATS_FLIGHTBUFFER_TARGET_FILL);
  write_field(w, "fill_frames", buffer, DW_STATS_FLIGHTBUFFER_FILL_FRAMES);
  w.set("state", buffer ? gst_structure_get_string(buffer, DW_STATS_FLIGHTBUFFER_STATE) : nullptr);
  write_field(w, "underruns", buffer, DW_STATS_FLIGHTBUFFER_UNDERRUNS);
  write_field(w, "output_rate", buffer, DW_STATS_FLIGHTBUFFER_OUTPUT_RATE);
  write_field(w, "content_rate", buffer, DW_STATS_FLIGHTBUFFER_DISTINCT_RATE);
  write_field(w, "input_rate", buffer, DW_STATS_FLIGHTBUFFER_INPUT_RATE);
  write_field(w, "playback_rate", buffer, DW_STATS_FLIGHTBUFFER_PLAYBACK_RATE);
  w.end_object();

  w.begin_object("cache");
  write_field(w, "size", cache, DW_STATS_CACHETAP_ENTRIES);
  if (cache) write_field(w, "injections", cache, DW_STATS_CACHETAP_INJECTIONS);
  else write_field(w, "injections", src, DW_STATS_COMFYKEYFRAMESRC_INJECTIONS);
  w.set("injection_messages", static_cast<uint64_t>(message_count.count(DW_MSG_INJECTION_NAME)
                                                        ? message_count.at(DW_MSG_INJECTION_NAME)
                                                        : 0));
  w.end_object();

  w.begin_object("health");
  for (const char *f : kAllElements) w.set(f, health(f, snap));
  w.end_object();

  w.begin_object("viewers");
  w.set("count", static_cast<uint64_t>(viewer_count()));
  w.set("max", opt.max_viewers);
  w.set("total", static_cast<uint64_t>(viewers_total));
  w.set("refused", static_cast<uint64_t>(viewers_refused));
  w.begin_array("list");
#ifdef DW_HAVE_WEBRTC
  for (const auto &kv : viewers)
    w.begin_object()
        .set("id", static_cast<uint64_t>(kv.first))
        .set("remote", kv.second->remote())
        .set("connected_s", (g_get_monotonic_time() - kv.second->connected_us()) / 1e6)
        .set("ice_state", kv.second->ice_state())
        .set("connection_state", kv.second->connection_state())
        .end_object();
#endif
  w.end_array();
  w.end_object();

  w.begin_object("control")
      .set("requests", static_cast<uint64_t>(control_requests))
      .set("refused", static_cast<uint64_t>(control_refused))
      .set("max_body_bytes", static_cast<uint64_t>(ControlLimits().max_body))
      .end_object();

  w.begin_object("elements");
  for (const char *f : kAllElements) {
    if (!elements.count(f)) continue;
    w.begin_object(f);
    w.set("name", GST_ELEMENT_NAME(elements.at(f)));
    write_structure(w, "stats", snap.get(f));
    w.end_object();
  }
  w.end_object();
  w.begin_object("messages");
  for (const auto &m : last_message) {
    w.begin_object(m.first.c_str());
    w.set("count", static_cast<uint64_t>(message_count[m.first]));
    write_structure(w, "last", m.second);
    w.end_object();
  }
  w.end_object();
  if (egress) egress->to_json(w.builder("egress"));
  w.end_object();
  return w.to_string();
}

std::string App::Impl::history_json() const {
  JsonWriter w;
  w.begin_object();
  w.set("interval_s", 1.0);
  auto series = [&](const char *key, auto get) {
    w.begin_array(key);
    for (const Sample &s : history) get(s);
    w.end_array();
  };
  series("t", [&](const Sample &s) { w.set(nullptr, s.t); });
  series("fill_s", [&](const Sample &s) { s.fill_s < 0 ? w.null(nullptr) : w.set(nullptr, s.fill_s); });
  series("output_fps", [&](const Sample &s) { w.set(nullptr, s.output_fps); });
  series("content_fps", [&](const Sample &s) { s.content_fps < 0 ? w.null(nullptr) : w.set(nullptr, s.content_fps); });
  series("keyframe_fps", [&](const Sample &s) { w.set(nullptr, s.keyframe_fps); });
  series("interpolation_fps", [&](const Sample &s) { w.set(nullptr, s.interp_fps); });
  w.end_object();
  return w.to_string();
}

std::string App::Impl::metrics_text() {
  Snapshot snap;
  snapshot(snap);
  std::string out;
  auto family = [&](const std::string &name, const char *type, const std::string &help) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto gauge = [&](const std::string &name, const std::string &help, double value) {
    family(name, "gauge", help);
    out += name + " " + prom_number(value) + "\n";
  };
  auto counter = [&](const std::string &name, const std::string &help, double value) {
    family(name, "counter", help);
    out += name + " " + prom_number(value) + "\n";
  };
  gauge("dreamwindow_up", "1 while the app runs", 1);
  gauge("dreamwindow_uptime_seconds", "Seconds since the app started", now_s());
  gauge("dreamwindow_paused", "1 while generation is paused", paused ? 1 : 0);
  counter("dreamwindow_restarts_total", "Pipeline restarts after errors", static_cast<double>(restarts));
  gauge("dreamwindow_restart_pending", "1 while a pipeline restart is scheduled", restart_source ? 1 : 0);
  gauge("dreamwindow_viewers", "Connected WebRTC viewers", static_cast<double>(viewer_count()));
  gauge("dreamwindow_viewers_max", "Maximum number of viewers (--max-viewers)", opt.max_viewers);
  counter("dreamwindow_viewers_accepted_total", "Viewers accepted since start", static_cast<double>(viewers_total));
  counter("dreamwindow_viewers_refused_total", "Viewers refused (max-viewers or no WebRTC)",
          static_cast<double>(viewers_refused));
  counter("dreamwindow_control_requests_total", "Control API requests", static_cast<double>(control_requests));
  counter("dreamwindow_control_refused_total", "Control API requests refused (400, 401, 413, ...)",
          static_cast<double>(control_refused));
  counter("dreamwindow_signalling_refused_total", "Signalling messages refused as invalid",
          static_cast<double>(signalling_refused));
  gauge("dreamwindow_output_fps", "Frames per second leaving the pipeline (5 s window)", output_counter.rate());
  double content = 0;
  if (content_rate_of(snap.get("flightbuffer"), content_counter, &content))
    gauge("dreamwindow_content_fps", "Distinct frames per second (repeats not counted; 5 s window)", content);
  gauge("dreamwindow_keyframe_fps", "Keyframes per second (5 s window)", keyframe_counter.rate());
  family("dreamwindow_element_healthy", "gauge", "1 if the element is present and healthy");
  for (const char *f : kAllElements) {
    std::string h = health(f, snap);
    if (h == "absent") continue;
    out += std::string("dreamwindow_element_healthy{element=\"") + f + "\"} " + (h == "ok" ? "1" : "0") + "\n";
  }
  family("dreamwindow_messages_total", "counter", "Element messages received, by name");
  for (const auto &m : message_count)
    out += "dreamwindow_messages_total{name=\"" + prom_label(m.first) + "\"} " + std::to_string(m.second) + "\n";
  // The backend pool: every numeric field per server, labelled backend="<base URL>", plus an up gauge.
  if (const GstStructure *src = snap.get("comfykeyframesrc")) {
    const GValue *arr = gst_structure_get_value(src, DW_STATS_COMFYKEYFRAMESRC_BACKENDS);
    std::map<std::string, std::string> families;  // name -> samples
    std::map<std::string, std::string> types;
    const guint n = arr && GST_VALUE_HOLDS_ARRAY(arr) ? gst_value_array_get_size(arr) : 0;
    for (guint i = 0; i < n; ++i) {
      const GValue *bv = gst_value_array_get_value(arr, i);
      if (!GST_VALUE_HOLDS_STRUCTURE(bv)) continue;
      const GstStructure *b = gst_value_get_structure(bv);
      const char *server = gst_structure_get_string(b, DW_STATS_COMFYKEYFRAMESRC_BACKEND_SERVER);
      const std::string label = "{backend=\"" + prom_label(server ? server : std::to_string(i)) + "\"}";
      const char *h = gst_structure_get_string(b, DW_STATS_COMFYKEYFRAMESRC_BACKEND_HEALTH);
      families["dreamwindow_backend_healthy"] += "dreamwindow_backend_healthy" + label + (g_strcmp0(h, "ok") == 0 ? " 1\n" : " 0\n");
      types["dreamwindow_backend_healthy"] = "gauge";
      for (int f = 0, nf = gst_structure_n_fields(b); f < nf; ++f) {
        const char *field = gst_structure_nth_field_name(b, f);
        double v;
        if (!field_number(b, field, &v)) continue;
        const bool count = is_counter("backend", field);
        const std::string name = metric_name("backend", field) + (count ? "_total" : "");
        types[name] = count ? "counter" : "gauge";
        families[name] += name + label + " " + prom_number(v) + "\n";
      }
    }
    for (const auto &fam : families) {
      family(fam.first, types[fam.first].c_str(), "comfykeyframesrc backend pool, per server (" DW_STATS_COMFYKEYFRAMESRC_BACKEND_NAME ")");
      out += fam.second;
    }
  }
  // Every numeric field of every element's stats structure, unchanged: counters as <name>_total.
  for (const char *f : kAllElements) {
    const GstStructure *s = snap.get(f);
    if (!s) continue;
    for (int i = 0, n = gst_structure_n_fields(s); i < n; ++i) {
      const char *field = gst_structure_nth_field_name(s, i);
      double v;
      if (!field_number(s, field, &v)) continue;
      const bool count = is_counter(f, field);
      const std::string name = metric_name(f, field) + (count ? "_total" : "");
      family(name, count ? "counter" : "gauge", std::string(gst_structure_get_name(s)) + " field " + field);
      // Integers printed exactly.
      GType t = gst_structure_get_field_type(s, field);
      const GValue *gv = gst_structure_get_value(s, field);
      std::string text = (t == G_TYPE_UINT64) ? std::to_string(g_value_get_uint64(gv))
                         : (t == G_TYPE_INT64) ? std::to_string(g_value_get_int64(gv))
                         : (t == G_TYPE_UINT)  ? std::to_string(g_value_get_uint(gv))
                         : (t == G_TYPE_INT)   ? std::to_string(g_value_get_int(gv))
                                               : prom_number(v);
      out += name + " " + text + "\n";
    }
  }
  return out;
}

std::string App::Impl::sim_prompts_json() const {
  JsonWriter w;
  auto records = sim->prompts();
  w.begin_object();
  w.set("count", static_cast<uint64_t>(records.size()));
  w.begin_array("last");
  size_t from = records.size() > 20 ? records.size() - 20 : 0;
  for (size_t i = from; i < records.size(); ++i)
    w.begin_object()
        .set("prompt_id", records[i].prompt_id)
        .set("received_us", static_cast<int64_t>(records[i].received_us))
        .set("body", records[i].body)
        .end_object();
  w.end_array();
  w.end_object();
  return w.to_string();
}

}  // namespace dw::app

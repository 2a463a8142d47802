#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "app.h"

#include <gio/gio.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>

#include "json_util.h"
#include "sim/simulator.h"
#ifdef DW_HAVE_WEBRTC
#include "viewer.h"
#endif

GST_DEBUG_CATEGORY(dreamwindow_app_debug);
#define GST_CAT_DEFAULT dreamwindow_app_debug

extern "C" GResource *dreamwindow_app_get_resource(void);

namespace dw::app {

bool have_webrtc() {
#ifdef DW_HAVE_WEBRTC
  return true;
#else
  return false;
#endif
}

namespace {

// The optional processing elements, in pipeline order after the source.
const char *const kOptional[] = {"cachetap", "vaeinterp", "flightbuffer"};
const char *const kAllElements[] = {"comfykeyframesrc", "cachetap", "vaeinterp", "flightbuffer"};
constexpr size_t kHistory = 600;  // samples (1 Hz): 10 minutes

struct Sample {
  double t = 0;  // seconds since start
  double fill_s = -1, output_fps = 0, keyframe_fps = 0, interp_fps = 0;
  guint64 underruns = 0;
};

struct Counter {  // a monotonically growing count sampled at 1 Hz, for rates
  std::deque<std::pair<double, double>> points;
  double rate(double window = 5.0) const {
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
  void add(double t, double v) {
    if (!points.empty() && v < points.back().second) points.clear();  // restarted
    points.emplace_back(t, v);
    while (points.size() > 30) points.pop_front();
  }
};

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

// The first of `names` present in any of the structures.
bool pick(std::initializer_list<const GstStructure *> structs, std::initializer_list<const char *> names, double *out) {
  for (const char *n : names)
    for (const GstStructure *s : structs)
      if (field_number(s, n, out)) return true;
  return false;
}

// A duration field: GstClockTime (uint64 ns) or seconds (double) -> seconds.
bool pick_seconds(std::initializer_list<const GstStructure *> structs, std::initializer_list<const char *> names,
                  double *out) {
  for (const char *n : names)
    for (const GstStructure *s : structs) {
      if (!s || !gst_structure_has_field(s, n)) continue;
      double v;
      if (!field_number(s, n, &v)) continue;
      GType t = gst_structure_get_field_type(s, n);
      *out = (t == G_TYPE_UINT64 || t == G_TYPE_INT64) ? v / 1e9 : v;
      return true;
    }
  return false;
}

std::string value_json(const GValue *v) {
  GType t = G_VALUE_TYPE(v);
  if (t == G_TYPE_STRING) {
    const char *s = g_value_get_string(v);
    return s ? json_quote(s) : "null";
  }
  if (t == G_TYPE_UINT64) {
    guint64 x = g_value_get_uint64(v);
    return x == GST_CLOCK_TIME_NONE ? "null" : std::to_string(x);
  }
  if (t == G_TYPE_INT64) return std::to_string(g_value_get_int64(v));
  if (t == G_TYPE_UINT) return std::to_string(g_value_get_uint(v));
  if (t == G_TYPE_INT) return std::to_string(g_value_get_int(v));
  if (t == G_TYPE_DOUBLE) return json_number(g_value_get_double(v));
  if (t == G_TYPE_FLOAT) return json_number(g_value_get_float(v));
  if (t == G_TYPE_BOOLEAN) return g_value_get_boolean(v) ? "true" : "false";
  if (G_VALUE_HOLDS_ENUM(v)) {
    GEnumClass *k = G_ENUM_CLASS(g_type_class_ref(t));
    GEnumValue *ev = g_enum_get_value(k, g_value_get_enum(v));
    std::string r = ev ? json_quote(ev->value_nick) : "null";
    g_type_class_unref(k);
    return r;
  }
  gchar *s = gst_value_serialize(v);
  std::string r = s ? json_quote(s) : "null";
  g_free(s);
  return r;
}

std::string structure_json(const GstStructure *s) {
  if (!s) return "null";
  JsonObj o;
  int n = gst_structure_n_fields(s);
  for (int i = 0; i < n; ++i) {
    const char *name = gst_structure_nth_field_name(s, i);
    const GValue *v = gst_structure_get_value(s, name);
    if (G_VALUE_TYPE(v) == GST_TYPE_BUFFER || G_VALUE_TYPE(v) == GST_TYPE_CAPS) continue;
    o.raw(name, value_json(v));
  }
  return o.to_string();
}

std::string metric_name(const std::string &a, const std::string &b) {
  std::string n = "dreamwindow_" + a + "_" + b;
  for (char &c : n)
    if (!g_ascii_isalnum(c) && c != '_') c = '_';
  return n;
}

GstStructure *get_stats(GstElement *e) {
  if (!e || !g_object_class_find_property(G_OBJECT_GET_CLASS(e), "stats")) return nullptr;
  GstStructure *s = nullptr;
  g_object_get(e, "stats", &s, nullptr);
  return s;
}

bool set_if(GstElement *e, const char *prop) { return e && g_object_class_find_property(G_OBJECT_GET_CLASS(e), prop); }

std::string get_string_prop(GstElement *e, const char *prop) {
  if (!set_if(e, prop)) return "";
  gchar *s = nullptr;
  g_object_get(e, prop, &s, nullptr);
  std::string r = s ? s : "";
  g_free(s);
  return r;
}

bool token_ok(const std::string &token, SoupServerMessage *msg, GHashTable *query) {
  if (token.empty()) return true;
  std::string given;
  if (query) {
    const char *q = static_cast<const char *>(g_hash_table_lookup(query, "token"));
    if (q) given = q;
  }
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  const char *auth = soup_message_headers_get_one(h, "Authorization");
  if (given.empty() && auth && g_str_has_prefix(auth, "Bearer ")) given = auth + 7;
  const char *x = soup_message_headers_get_one(h, "X-Dreamwindow-Token");
  if (given.empty() && x) given = x;
  if (given.size() != token.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ token[i]);
  return diff == 0;
}

void reply(SoupServerMessage *msg, guint status, const char *type, const std::string &body) {
  soup_server_message_set_status(msg, status, nullptr);
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  soup_message_headers_replace(h, "Cache-Control", "no-store");
  soup_server_message_set_response(msg, type, SOUP_MEMORY_COPY, body.data(), body.size());
}

void reply_json(SoupServerMessage *msg, guint status, const std::string &body) {
  reply(msg, status, "application/json; charset=utf-8", body);
}

void reply_error(SoupServerMessage *msg, guint status, const std::string &error) {
  reply_json(msg, status, JsonObj().set("error", error).to_string());
}

}  // namespace

struct App::Impl {
  Options opt;
  GMainContext *ctx = nullptr;
  GMainLoop *loop = nullptr;
  gint64 start_us = 0;
  int exit_code = 0;

  // ready
  mutable std::mutex ready_lock;
  std::condition_variable ready_cond;
  int ready = 0;  // 0 = starting, 1 = serving, -1 = failed
  std::string url;
  uint16_t port = 0;

  std::unique_ptr<dw::sim::Simulator> sim;
  std::string server_url;

  // pipeline
  GstElement *pipeline = nullptr;
  std::map<std::string, GstElement *> elements;  // factory -> element (dreamwindow elements only)
  GstElement *tee = nullptr;
  std::string description;
  guint bus_watch = 0;
  std::map<std::string, GstStructure *> last_message;  // message name -> copy
  std::map<std::string, guint64> message_count;
  std::map<std::string, std::string> health_error;    // factory -> error text
  std::map<std::string, std::pair<gint64, std::string>> health_warning;
  guint64 restarts = 0;
  guint restart_source = 0;
  bool paused = false;
  gulong pause_probe = 0;
  GstPad *pause_pad = nullptr;
  bool shutting_down = false;

  // sampling
  guint sample_source = 0;
  std::deque<Sample> history;
  Counter output_counter, keyframe_counter;

  // HTTP
  SoupServer *server = nullptr;
#ifdef DW_HAVE_WEBRTC
  std::map<uint64_t, std::shared_ptr<Viewer>> viewers, detaching;
#endif
  uint64_t next_viewer = 1;
  guint64 viewers_total = 0, viewers_refused = 0;

  explicit Impl(Options o) : opt(std::move(o)) {
    ctx = g_main_context_new();
    loop = g_main_loop_new(ctx, FALSE);
  }
  ~Impl() {
    for (auto &m : last_message) gst_structure_free(m.second);
    g_main_loop_unref(loop);
    g_main_context_unref(ctx);
  }

  void log(const char *fmt, ...) G_GNUC_PRINTF(2, 3) {
    if (opt.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    gchar *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    std::fprintf(stdout, "dreamwindow: %s\n", s);
    std::fflush(stdout);
    g_free(s);
  }
  void warn(const char *fmt, ...) G_GNUC_PRINTF(2, 3) {
    va_list ap;
    va_start(ap, fmt);
    gchar *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    std::fprintf(stderr, "dreamwindow: %s\n", s);
    std::fflush(stderr);
    g_free(s);
  }

  double now_s() const { return (g_get_monotonic_time() - start_us) / 1e6; }

  std::string sink_kind() const {
    if (!opt.sink.empty()) return opt.sink;
    return have_webrtc() ? "webrtc" : "auto";
  }

  /* ------------------------------------------------------------------------------------------ */
  /* Pipeline                                                                                     */

  void configure_source(GstElement *src, bool from_description) {
    if (!from_description || !server_url.empty()) g_object_set(src, "server", server_url.c_str(), nullptr);
    if (!opt.workflow.empty()) g_object_set(src, "workflow", opt.workflow.c_str(), nullptr);
    if (!opt.prompt.empty()) g_object_set(src, "prompt", opt.prompt.c_str(), nullptr);
    if (!opt.negative_prompt.empty()) g_object_set(src, "negative-prompt", opt.negative_prompt.c_str(), nullptr);
    if (opt.denoise >= 0) g_object_set(src, "denoise", opt.denoise, nullptr);
    if (opt.seed >= 0) g_object_set(src, "seed", static_cast<gint64>(opt.seed), nullptr);
    if (!from_description) g_object_set(src, "width", opt.width, "height", opt.height, nullptr);
    if (opt.num_keyframes >= 0) g_object_set(src, "num-keyframes", opt.num_keyframes, nullptr);
  }

  void configure_vaeinterp(GstElement *e) {
    if (!opt.vae_dir.empty()) {
      bool has = false;
      if (GDir *d = g_dir_open(opt.vae_dir.c_str(), 0, nullptr)) {
        bool enc = false, dec = false;
        while (const char *n = g_dir_read_name(d)) {
          if (strstr(n, "encoder")) enc = true;
          if (strstr(n, "decoder")) dec = true;
        }
        g_dir_close(d);
        has = enc && dec;
      }
      if (has && set_if(e, "model-dir")) {
        g_object_set(e, "model-dir", opt.vae_dir.c_str(), nullptr);
        if (set_if(e, "backend")) gst_util_set_object_arg(G_OBJECT(e), "backend", "auto");
        log("vaeinterp: VAE weights from %s", opt.vae_dir.c_str());
        return;
      }
      warn("vaeinterp: no *encoder*/*decoder* weights in %s: falling back to the blend backend (pixel crossfade)",
           opt.vae_dir.c_str());
    } else {
      log("vaeinterp: no --vae DIR given: interpolating with the blend backend (pixel crossfade)");
    }
    if (set_if(e, "backend")) gst_util_set_object_arg(G_OBJECT(e), "backend", "blend");
  }

  GstElement *make_encoder(std::vector<GstElement *> &chain) {
    if (opt.codec == "h264") {
      GstElement *enc = gst_element_factory_make("openh264enc", "encoder");
      if (!enc) return nullptr;
      g_object_set(enc, "bitrate", opt.bitrate_kbps * 1000u, "gop-size", 60u, nullptr);
      gst_util_set_object_arg(G_OBJECT(enc), "complexity", "low");
      chain.push_back(enc);
      GstElement *caps = gst_element_factory_make("capsfilter", nullptr);
      GstCaps *c = gst_caps_from_string("video/x-h264,profile=constrained-baseline,stream-format=byte-stream");
      g_object_set(caps, "caps", c, nullptr);
      gst_caps_unref(c);
      chain.push_back(caps);
      if (GstElement *parse = gst_element_factory_make("h264parse", nullptr)) chain.push_back(parse);
      return enc;
    }
    GstElement *enc = gst_element_factory_make("vp8enc", "encoder");
    if (!enc) return nullptr;
    g_object_set(enc, "deadline", static_cast<gint64>(1), "keyframe-max-dist", 60, "target-bitrate",
                 static_cast<gint>(opt.bitrate_kbps * 1000), "cpu-used", 8, nullptr);
    chain.push_back(enc);
    return enc;
  }

  bool build_pipeline(std::string *error) {
    if (!opt.pipeline.empty()) return build_from_description(error);
    pipeline = gst_pipeline_new("dreamwindow");
    std::vector<GstElement *> chain;
    std::vector<std::string> names;
    GstElement *src = gst_element_factory_make("comfykeyframesrc", "src");
    if (!src) {
      *error = "the comfykeyframesrc element is missing (GST_PLUGIN_PATH should include the built gst/ directory)";
      return false;
    }
    configure_source(src, false);
    chain.push_back(src);
    names.push_back("comfykeyframesrc");
    elements["comfykeyframesrc"] = src;
    for (const char *name : kOptional) {
      if (std::find(opt.skip.begin(), opt.skip.end(), name) != opt.skip.end()) continue;
      GstElementFactory *f = gst_element_factory_find(name);
      if (!f) continue;
      gst_object_unref(f);
      GstElement *e = gst_element_factory_make(name, name);
      if (!e) continue;
      if (std::string(name) == "vaeinterp") configure_vaeinterp(e);
      chain.push_back(e);
      names.push_back(name);
      elements[name] = e;
    }
    GstElement *convert = gst_element_factory_make("videoconvert", nullptr);
    chain.push_back(convert);
    names.push_back("videoconvert");
    const std::string kind = sink_kind();
    if (kind == "auto") {
      GstElement *q = gst_element_factory_make("queue", nullptr);
      GstElement *sink = gst_element_factory_make("autovideosink", "sink");
      chain.push_back(q);
      chain.push_back(sink);
      names.push_back("autovideosink");
    } else {
      GstElement *caps = gst_element_factory_make("capsfilter", nullptr);
      GstCaps *c = gst_caps_from_string("video/x-raw,format=I420");
      g_object_set(caps, "caps", c, nullptr);
      gst_caps_unref(c);
      chain.push_back(caps);
      chain.push_back(gst_element_factory_make("queue", nullptr));
      if (!make_encoder(chain)) {
        *error = opt.codec == "h264" ? "openh264enc is missing (gstreamer1.0-plugins-bad)"
                                     : "vp8enc is missing (gstreamer1.0-plugins-good)";
        for (GstElement *e : chain) gst_object_unref(gst_object_ref_sink(e));
        elements.clear();
        return false;
      }
      names.push_back(opt.codec == "h264" ? "openh264enc" : "vp8enc");
      tee = gst_element_factory_make("tee", "webrtctee");
      g_object_set(tee, "allow-not-linked", TRUE, nullptr);
      chain.push_back(tee);
      names.push_back(kind == "webrtc" ? "tee (one webrtcbin per viewer)" : "tee ! fakesink");
    }
    for (GstElement *e : chain) {
      if (!e) {
        *error = "a core GStreamer element is missing (videoconvert, queue, autovideosink, tee)";
        return false;
      }
      gst_bin_add(GST_BIN(pipeline), e);
    }
    for (size_t i = 0; i + 1 < chain.size(); ++i)
      if (!gst_element_link(chain[i], chain[i + 1])) {
        *error = std::string("could not link ") + GST_ELEMENT_NAME(chain[i]) + " to " + GST_ELEMENT_NAME(chain[i + 1]);
        return false;
      }
    if (tee) {
      // Keeps the tee (and EOS) flowing with no viewer; viewers add their own branches.
      GstElement *q = gst_element_factory_make("queue", nullptr);
      GstElement *fake = gst_element_factory_make("fakesink", "idlesink");
      gst_util_set_object_arg(G_OBJECT(q), "leaky", "downstream");
      g_object_set(fake, "sync", FALSE, "async", FALSE, nullptr);
      gst_bin_add_many(GST_BIN(pipeline), q, fake, nullptr);
      gst_element_link_many(tee, q, fake, nullptr);
    }
    description.clear();
    for (size_t i = 0; i < names.size(); ++i) description += (i ? " ! " : "") + names[i];
    return true;
  }

  bool build_from_description(std::string *error) {
    GError *err = nullptr;
    GstElement *e = gst_parse_launch(opt.pipeline.c_str(), &err);
    if (!e) {
      *error = std::string("--pipeline: ") + (err ? err->message : "unparsable description");
      g_clear_error(&err);
      return false;
    }
    if (err) {  // recoverable (e.g. a missing property): keep going, but say it
      warn("--pipeline: %s", err->message);
      g_clear_error(&err);
    }
    if (GST_IS_PIPELINE(e)) {
      pipeline = e;
    } else {
      pipeline = gst_pipeline_new("dreamwindow");
      gst_bin_add(GST_BIN(pipeline), e);
    }
    GstIterator *it = gst_bin_iterate_recurse(GST_BIN(pipeline));
    GValue item = G_VALUE_INIT;
    while (gst_iterator_next(it, &item) == GST_ITERATOR_OK) {
      GstElement *el = GST_ELEMENT(g_value_get_object(&item));
      GstElementFactory *f = gst_element_get_factory(el);
      std::string fname = f ? GST_OBJECT_NAME(f) : "";
      for (const char *n : kAllElements)
        if (fname == n && !elements.count(n)) elements[n] = el;
      if (fname == "tee" && g_str_equal(GST_ELEMENT_NAME(el), "webrtctee")) tee = el;
      g_value_reset(&item);
    }
    g_value_unset(&item);
    gst_iterator_free(it);
    if (elements.count("comfykeyframesrc")) configure_source(elements["comfykeyframesrc"], true);
    if (tee) g_object_set(tee, "allow-not-linked", TRUE, nullptr);
    description = opt.pipeline;
    return true;
  }

  void set_paused(bool pause) {
    if (pause == paused) return;
    paused = pause;
    GstElement *src = elements.count("comfykeyframesrc") ? elements["comfykeyframesrc"] : nullptr;
    if (!src) return;
    if (pause) {
      pause_pad = gst_element_get_static_pad(src, "src");
      pause_probe = gst_pad_add_probe(
          pause_pad, static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BLOCK | GST_PAD_PROBE_TYPE_BUFFER),
          [](GstPad *, GstPadProbeInfo *, gpointer) { return GST_PAD_PROBE_OK; }, nullptr, nullptr);
      log("paused: no new keyframes until resumed");
    } else {
      if (pause_pad && pause_probe) gst_pad_remove_probe(pause_pad, pause_probe);
      if (pause_pad) gst_object_unref(pause_pad);
      pause_pad = nullptr;
      pause_probe = 0;
      log("resumed");
    }
  }

  static gboolean on_bus(GstBus *, GstMessage *m, gpointer user) {
    static_cast<Impl *>(user)->handle_message(m);
    return G_SOURCE_CONTINUE;
  }

  std::string factory_of(GstObject *obj) const {
    for (const auto &e : elements)
      if (GST_OBJECT(e.second) == obj || gst_object_has_as_ancestor(obj, GST_OBJECT(e.second))) return e.first;
    return "";
  }

  void handle_message(GstMessage *m) {
    switch (GST_MESSAGE_TYPE(m)) {
      case GST_MESSAGE_ELEMENT: {
        const GstStructure *s = gst_message_get_structure(m);
        if (!s || !g_str_has_prefix(gst_structure_get_name(s), "dreamwindow-")) break;
        std::string name = gst_structure_get_name(s);
        message_count[name]++;
        if (last_message.count(name)) gst_structure_free(last_message[name]);
        last_message[name] = gst_structure_copy(s);
        break;
      }
      case GST_MESSAGE_ERROR: {
        GError *err = nullptr;
        gchar *dbg = nullptr;
        gst_message_parse_error(m, &err, &dbg);
        std::string who = factory_of(GST_MESSAGE_SRC(m));
        warn("error from %s: %s (%s)", GST_MESSAGE_SRC_NAME(m), err ? err->message : "?", dbg ? dbg : "");
        health_error[who.empty() ? GST_MESSAGE_SRC_NAME(m) : who] = err ? err->message : "error";
        g_clear_error(&err);
        g_free(dbg);
        if (shutting_down) {
          g_main_loop_quit(loop);
        } else if (!restart_source) {
          schedule_restart();
        }
        break;
      }
      case GST_MESSAGE_WARNING: {
        GError *err = nullptr;
        gst_message_parse_warning(m, &err, nullptr);
        std::string who = factory_of(GST_MESSAGE_SRC(m));
        health_warning[who.empty() ? GST_MESSAGE_SRC_NAME(m) : who] = {g_get_monotonic_time(),
                                                                       err ? err->message : "warning"};
        GST_WARNING("warning from %s: %s", GST_MESSAGE_SRC_NAME(m), err ? err->message : "?");
        g_clear_error(&err);
        break;
      }
      case GST_MESSAGE_EOS:
        if (!shutting_down) log("end of stream");
        g_main_loop_quit(loop);
        break;
      default:
        break;
    }
  }

  // An error stopped the stream: drop the viewers (their pages reconnect) and restart the pipeline.
  void schedule_restart() {
    close_all_viewers(1011, "pipeline restarting after an error");
    restart_source = attach_timeout(2000, [](gpointer d) -> gboolean {
      auto *self = static_cast<Impl *>(d);
      self->restart_source = 0;
      if (self->shutting_down) return G_SOURCE_REMOVE;
      self->restarts++;
      self->log("restarting the pipeline (restart %" G_GUINT64_FORMAT ")", self->restarts);
      gst_element_set_state(self->pipeline, GST_STATE_NULL);
      self->health_error.clear();
      gst_element_set_state(self->pipeline, GST_STATE_PLAYING);
      return G_SOURCE_REMOVE;
    });
  }

  guint attach_timeout(guint ms, GSourceFunc fn) {
    GSource *s = g_timeout_source_new(ms);
    g_source_set_callback(s, fn, this, nullptr);
    guint id = g_source_attach(s, ctx);
    g_source_unref(s);
    return id;
  }

  void remove_source(guint &id) {
    if (!id) return;
    if (GSource *s = g_main_context_find_source_by_id(ctx, id)) g_source_destroy(s);
    id = 0;
  }

  /* ------------------------------------------------------------------------------------------ */
  /* Status                                                                                       */

  struct Snapshot {
    std::map<std::string, GstStructure *> stats;  // factory -> stats (owned)
    ~Snapshot() {
      for (auto &s : stats)
        if (s.second) gst_structure_free(s.second);
    }
    const GstStructure *get(const char *f) const {
      auto it = stats.find(f);
      return it == stats.end() ? nullptr : it->second;
    }
  };

  void snapshot(Snapshot &snap) const {
    for (const auto &e : elements) snap.stats[e.first] = get_stats(e.second);
  }

  const GstStructure *msg(const char *name) const {
    auto it = last_message.find(name);
    return it == last_message.end() ? nullptr : it->second;
  }

  void sample() {
    Snapshot snap;
    snapshot(snap);
    double t = now_s();
    Sample s;
    s.t = t;
    double v;
    if (pick({snap.get("comfykeyframesrc")}, {"keyframes"}, &v)) keyframe_counter.add(t, v);
    if (pick({snap.get("flightbuffer")}, {"frames-out", "buffers-out", "pushed", "frames-pushed"}, &v) ||
        pick({snap.get("vaeinterp")}, {"frames-out"}, &v) || pick({snap.get("comfykeyframesrc")}, {"keyframes"}, &v))
      output_counter.add(t, v);
    s.keyframe_fps = keyframe_counter.rate();
    s.output_fps = output_counter.rate();
    if (pick({snap.get("vaeinterp"), msg("dreamwindow-interp")}, {"interp-fps-last", "interp-fps"}, &v))
      s.interp_fps = v;
    if (pick_seconds({snap.get("flightbuffer"), msg("dreamwindow-buffer")}, {"fill-time", "fill"}, &v))
      s.fill_s = v;
    if (pick({snap.get("flightbuffer"), msg("dreamwindow-buffer")}, {"underruns"}, &v))
      s.underruns = static_cast<guint64>(v);
    history.push_back(s);
    while (history.size() > kHistory) history.pop_front();
  }

  std::string health(const std::string &factory, const Snapshot &snap) const {
    if (!elements.count(factory)) return "absent";
    auto e = health_error.find(factory);
    if (e != health_error.end()) return "error: " + e->second;
    auto w = health_warning.find(factory);
    if (w != health_warning.end() && g_get_monotonic_time() - w->second.first < 30 * G_USEC_PER_SEC)
      return "warning: " + w->second.second;
    double connected;
    if (factory == "comfykeyframesrc" && field_number(snap.get(factory.c_str()), "connected", &connected) &&
        connected == 0)
      return "degraded: not connected to ComfyUI";
    return "ok";
  }

  std::string state_name() const {
    GstState st = GST_STATE_NULL;
    if (pipeline) gst_element_get_state(pipeline, &st, nullptr, 0);
    return gst_element_state_get_name(st);
  }

  std::string status_json() {
    Snapshot snap;
    snapshot(snap);
    const GstStructure *src = snap.get("comfykeyframesrc"), *interp = snap.get("vaeinterp"),
                       *buffer = snap.get("flightbuffer"), *cache = snap.get("cachetap");
    GstElement *srce = elements.count("comfykeyframesrc") ? elements.at("comfykeyframesrc") : nullptr;
    // A number from the first structure/field present, or null.
    auto J = [](std::initializer_list<const GstStructure *> st, std::initializer_list<const char *> names,
                double scale = 1.0) {
      double x = 0;
      return pick(st, names, &x) ? json_number(x * scale) : std::string("null");
    };
    auto S = [](std::initializer_list<const GstStructure *> st, std::initializer_list<const char *> names) {
      double x = 0;
      return pick_seconds(st, names, &x) ? json_number(x) : std::string("null");
    };
    const GstStructure *imsg = msg("dreamwindow-interp"), *bmsg = msg("dreamwindow-buffer"),
                       *cmsg = msg("dreamwindow-cache");
    JsonObj o;
    o.set("version", VERSION);
    o.set("uptime_s", now_s());
    o.set("state", state_name());
    o.set("paused", paused);
    o.set("restarts", restarts);
    o.set("pipeline", description);
    o.set("sink", opt.pipeline.empty() ? sink_kind() : std::string("custom"));
    o.set("codec", opt.codec);
    o.raw("source", JsonObj()
                        .set("server", srce ? get_string_prop(srce, "server") : server_url)
                        .set("simulator", sim != nullptr)
                        .set("workflow", opt.workflow.empty() ? std::string("built-in") : opt.workflow)
                        .to_string());
    JsonObj prompt;
    if (srce) {
      gdouble denoise = 0;
      gint64 seed = 0;
      g_object_get(srce, "denoise", &denoise, "seed", &seed, nullptr);
      prompt.set("prompt", get_string_prop(srce, "prompt"))
          .set("negative_prompt", get_string_prop(srce, "negative-prompt"))
          .set("denoise", denoise)
          .set("seed", seed);
    }
    const GstStructure *kmsg = msg("dreamwindow-keyframe");
    prompt.set("latest_keyframe_prompt", kmsg ? gst_structure_get_string(kmsg, "prompt") : nullptr);
    o.raw("prompt", prompt.to_string());

    JsonObj queues;
    double ready = 0, inflight = 0;
    bool kq = field_number(src, "ready", &ready);
    field_number(src, "in-flight", &inflight);
    queues.raw("keyframes", kq ? json_number(ready + inflight) : "null");
    queues.raw("keyframes_ready", J({src}, {"ready"}));
    queues.raw("keyframes_in_flight", J({src}, {"in-flight"}));
    queues.raw("interpolation", J({interp, imsg}, {"queue-depth"}));
    queues.raw("cache_analysis", J({cache}, {"queue-depth", "analysis-queue", "pending", "queued"}));
    o.raw("queues", queues.to_string());

    o.raw("generation_time", JsonObj()
                                 .raw("last_ms", J({src}, {"last-generation-time"}, 1e-6))
                                 .raw("mean_ms", J({src}, {"mean-generation-time"}, 1e-6))
                                 .to_string());
    o.raw("interpolation_fps", J({interp, imsg}, {"interp-fps-last", "interp-fps"}));
    o.set("output_fps", output_counter.rate());
    o.set("keyframe_fps", keyframe_counter.rate());
    o.raw("vae_lock_wait", JsonObj()
                               .raw("last_ms", J({imsg}, {"lock-wait-ms"}))
                               .raw("total_ms", J({interp}, {"lock-wait-ms-total"}))
                               .raw("max_ms", J({interp}, {"lock-wait-ms-max"}))
                               .to_string());

    JsonObj buf;
    buf.raw("fill_s", S({buffer, bmsg}, {"fill-time", "fill"}));
    buf.raw("prebuffer_s", S({buffer, bmsg}, {"prebuffer-time", "prebuffer"}));
    buf.raw("target_s", S({buffer, bmsg}, {"target-fill", "target"}));
    buf.raw("fill_frames", J({buffer, bmsg}, {"fill-frames"}));
    const char *state = buffer && gst_structure_get_string(buffer, "state") ? gst_structure_get_string(buffer, "state")
                        : bmsg ? gst_structure_get_string(bmsg, "state")
                               : nullptr;
    buf.set("state", state);
    buf.raw("underruns", J({buffer, bmsg}, {"underruns"}));
    buf.raw("output_rate", J({buffer, bmsg}, {"output-rate"}));
    buf.raw("input_rate", J({buffer, bmsg}, {"input-rate"}));
    buf.raw("playback_rate", J({buffer, bmsg}, {"playback-rate"}));
    o.raw("buffer", buf.to_string());

    JsonObj cj;
    cj.raw("size", J({cache, cmsg}, {"cache-size", "size", "entries", "stored"}));
    cj.raw("injections", cache ? J({cache}, {"injections"}) : J({src}, {"injections"}));
    cj.set("injection_messages", message_count.count("dreamwindow-injection") ? message_count.at("dreamwindow-injection")
                                                                              : static_cast<guint64>(0));
    o.raw("cache", cj.to_string());

    JsonObj health_o;
    for (const char *f : kAllElements) health_o.set(f, health(f, snap));
    o.raw("health", health_o.to_string());

    JsonObj viewers_o;
    viewers_o.set("count", static_cast<guint64>(viewer_count()));
    viewers_o.set("max", opt.max_viewers);
    viewers_o.set("total", viewers_total);
    viewers_o.set("refused", viewers_refused);
    std::string list = "[";
#ifdef DW_HAVE_WEBRTC
    bool first = true;
    for (const auto &kv : viewers) {
      list += (first ? "" : ",") + JsonObj()
                                       .set("id", static_cast<guint64>(kv.first))
                                       .set("remote", kv.second->remote())
                                       .set("connected_s", (g_get_monotonic_time() - kv.second->connected_us()) / 1e6)
                                       .set("ice_state", kv.second->ice_state())
                                       .set("connection_state", kv.second->connection_state())
                                       .to_string();
      first = false;
    }
#endif
    list += "]";
    viewers_o.raw("list", list);
    o.raw("viewers", viewers_o.to_string());

    JsonObj els;
    for (const char *f : kAllElements) {
      if (!elements.count(f)) continue;
      JsonObj e;
      e.set("name", GST_ELEMENT_NAME(elements.at(f)));
      e.raw("stats", structure_json(snap.get(f)));
      els.raw(f, e.to_string());
    }
    o.raw("elements", els.to_string());
    JsonObj msgs;
    for (const auto &m : last_message)
      msgs.raw(m.first, JsonObj()
                            .set("count", message_count[m.first])
                            .raw("last", structure_json(m.second))
                            .to_string());
    o.raw("messages", msgs.to_string());
    return o.to_string();
  }

  std::string history_json() const {
    std::string t = "[", fill = "[", out = "[", kf = "[", ip = "[";
    for (size_t i = 0; i < history.size(); ++i) {
      const Sample &s = history[i];
      const char *sep = i ? "," : "";
      t += sep + json_number(s.t);
      fill += sep + (s.fill_s < 0 ? std::string("null") : json_number(s.fill_s));
      out += sep + json_number(s.output_fps);
      kf += sep + json_number(s.keyframe_fps);
      ip += sep + json_number(s.interp_fps);
    }
    return JsonObj()
        .set("interval_s", 1.0)
        .raw("t", t + "]")
        .raw("fill_s", fill + "]")
        .raw("output_fps", out + "]")
        .raw("keyframe_fps", kf + "]")
        .raw("interpolation_fps", ip + "]")
        .to_string();
  }

  std::string metrics_text() {
    Snapshot snap;
    snapshot(snap);
    std::string out;
    auto metric = [&](const std::string &name, const std::string &help, const std::string &labels, double value) {
      out += "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n";
      out += name + labels + " " + json_number(value) + "\n";
    };
    metric("dreamwindow_up", "1 while the app runs", "", 1);
    metric("dreamwindow_uptime_seconds", "Seconds since the app started", "", now_s());
    metric("dreamwindow_paused", "1 while generation is paused", "", paused ? 1 : 0);
    metric("dreamwindow_restarts", "Pipeline restarts after errors", "", static_cast<double>(restarts));
    metric("dreamwindow_viewers", "Connected WebRTC viewers", "", static_cast<double>(viewer_count()));
    metric("dreamwindow_viewers_max", "Maximum number of viewers (--max-viewers)", "", opt.max_viewers);
    metric("dreamwindow_viewers_total", "Viewers accepted since start", "", static_cast<double>(viewers_total));
    metric("dreamwindow_viewers_refused", "Viewers refused (max-viewers or no WebRTC)", "",
           static_cast<double>(viewers_refused));
    metric("dreamwindow_output_fps", "Effective output frame rate (5 s window, from element stats)", "",
           output_counter.rate());
    metric("dreamwindow_keyframe_fps", "Keyframes per second (5 s window)", "", keyframe_counter.rate());
    out += "# HELP dreamwindow_element_healthy 1 if the element is present and healthy\n";
    out += "# TYPE dreamwindow_element_healthy gauge\n";
    for (const char *f : kAllElements) {
      std::string h = health(f, snap);
      if (h == "absent") continue;
      out += std::string("dreamwindow_element_healthy{element=\"") + f + "\"} " + (h == "ok" ? "1" : "0") + "\n";
    }
    out += "# HELP dreamwindow_messages Element messages received, by name\n# TYPE dreamwindow_messages counter\n";
    for (const auto &m : message_count)
      out += "dreamwindow_messages{name=\"" + m.first + "\"} " + std::to_string(m.second) + "\n";
    // Every numeric field of every element's stats structure, unchanged.
    for (const char *f : kAllElements) {
      const GstStructure *s = snap.get(f);
      if (!s) continue;
      int n = gst_structure_n_fields(s);
      for (int i = 0; i < n; ++i) {
        const char *field = gst_structure_nth_field_name(s, i);
        double v;
        if (!field_number(s, field, &v)) continue;
        std::string name = metric_name(f, field);
        out += "# HELP " + name + " " + gst_structure_get_name(s) + " field " + field + "\n";
        out += "# TYPE " + name + " gauge\n";
        // Integers printed exactly.
        GType t = gst_structure_get_field_type(s, field);
        const GValue *gv = gst_structure_get_value(s, field);
        std::string text = (t == G_TYPE_UINT64) ? std::to_string(g_value_get_uint64(gv))
                           : (t == G_TYPE_INT64) ? std::to_string(g_value_get_int64(gv))
                           : (t == G_TYPE_UINT)  ? std::to_string(g_value_get_uint(gv))
                           : (t == G_TYPE_INT)   ? std::to_string(g_value_get_int(gv))
                                                 : json_number(v);
        out += name + " " + text + "\n";
      }
    }
    return out;
  }

  /* ------------------------------------------------------------------------------------------ */
  /* Control                                                                                      */

  void handle_control(SoupServerMessage *msg) {
    if (g_strcmp0(soup_server_message_get_method(msg), "POST") != 0) {
      soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", "POST");
      reply_error(msg, 405, "POST a JSON object");
      return;
    }
    GstElement *src = elements.count("comfykeyframesrc") ? elements["comfykeyframesrc"] : nullptr;
    if (!src) {
      reply_error(msg, 409, "this pipeline has no comfykeyframesrc");
      return;
    }
    SoupMessageBody *body = soup_server_message_get_request_body(msg);
    GBytes *bytes = soup_message_body_flatten(body);
    gsize len = 0;
    const char *data = static_cast<const char *>(g_bytes_get_data(bytes, &len));
    JsonParser *parser = json_parser_new();
    bool parsed = len > 0 && json_parser_load_from_data(parser, data, static_cast<gssize>(len), nullptr) &&
                  JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser));
    g_bytes_unref(bytes);
    if (!parsed) {
      g_object_unref(parser);
      reply_error(msg, 400, "the body must be a JSON object");
      return;
    }
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    std::string bad;
    auto is_type = [&](const char *k, GType t) {
      JsonNode *n = json_object_get_member(o, k);
      return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == t;
    };
    auto is_number = [&](const char *k) { return is_type(k, G_TYPE_DOUBLE) || is_type(k, G_TYPE_INT64); };
    // Validate everything before applying anything.
    if (json_object_has_member(o, "prompt") && !is_type("prompt", G_TYPE_STRING)) bad = "prompt must be a string";
    if (json_object_has_member(o, "negative_prompt") && !is_type("negative_prompt", G_TYPE_STRING))
      bad = "negative_prompt must be a string";
    if (json_object_has_member(o, "denoise") &&
        (!is_number("denoise") || json_object_get_double_member(o, "denoise") < 0 ||
         json_object_get_double_member(o, "denoise") > 1))
      bad = "denoise must be a number in [0, 1]";
    if (json_object_has_member(o, "seed") &&
        (!is_type("seed", G_TYPE_INT64) || json_object_get_int_member(o, "seed") < 0))
      bad = "seed must be a non-negative integer";
    int pause = -1;
    if (json_object_has_member(o, "pause")) {
      if (!is_type("pause", G_TYPE_BOOLEAN)) bad = "pause must be a boolean";
      else pause = json_object_get_boolean_member(o, "pause");
    }
    if (json_object_has_member(o, "action")) {
      const char *a = is_type("action", G_TYPE_STRING) ? json_object_get_string_member(o, "action") : "";
      if (g_strcmp0(a, "pause") == 0) pause = 1;
      else if (g_strcmp0(a, "resume") == 0) pause = 0;
      else bad = "action must be \"pause\" or \"resume\"";
    }
    if (json_object_has_member(o, "resume")) {
      if (!is_type("resume", G_TYPE_BOOLEAN)) bad = "resume must be a boolean";
      else if (json_object_get_boolean_member(o, "resume")) pause = 0;
    }
    if (!bad.empty()) {
      g_object_unref(parser);
      reply_error(msg, 400, bad);
      return;
    }
    std::string applied = "[";
    auto add = [&](const char *k) { applied += std::string(applied.size() > 1 ? "," : "") + json_quote(k); };
    if (json_object_has_member(o, "prompt")) {
      g_object_set(src, "prompt", json_object_get_string_member(o, "prompt"), nullptr);
      log("prompt: %s", json_object_get_string_member(o, "prompt"));
      add("prompt");
    }
    if (json_object_has_member(o, "negative_prompt")) {
      g_object_set(src, "negative-prompt", json_object_get_string_member(o, "negative_prompt"), nullptr);
      add("negative_prompt");
    }
    if (json_object_has_member(o, "denoise")) {
      g_object_set(src, "denoise", json_object_get_double_member(o, "denoise"), nullptr);
      add("denoise");
    }
    if (json_object_has_member(o, "seed")) {
      g_object_set(src, "seed", static_cast<gint64>(json_object_get_int_member(o, "seed")), nullptr);
      add("seed");
    }
    if (pause >= 0) {
      set_paused(pause == 1);
      add(pause ? "pause" : "resume");
    }
    g_object_unref(parser);
    gdouble denoise = 0;
    gint64 seed = 0;
    g_object_get(src, "denoise", &denoise, "seed", &seed, nullptr);
    reply_json(msg, 200,
               JsonObj()
                   .set("ok", true)
                   .raw("applied", applied + "]")
                   .set("prompt", get_string_prop(src, "prompt"))
                   .set("negative_prompt", get_string_prop(src, "negative-prompt"))
                   .set("denoise", denoise)
                   .set("seed", seed)
                   .set("paused", paused)
                   .to_string());
  }

  std::string sim_prompts_json() const {
    std::string list = "[";
    auto records = sim->prompts();
    size_t from = records.size() > 20 ? records.size() - 20 : 0;
    for (size_t i = from; i < records.size(); ++i)
      list += std::string(i > from ? "," : "") + JsonObj()
                                                     .set("prompt_id", records[i].prompt_id)
                                                     .set("received_us", records[i].received_us)
                                                     .set("body", records[i].body)
                                                     .to_string();
    return JsonObj().set("count", static_cast<guint64>(records.size())).raw("last", list + "]").to_string();
  }

  /* ------------------------------------------------------------------------------------------ */
  /* HTTP                                                                                         */

  static void on_request(SoupServer *, SoupServerMessage *msg, const char *path, GHashTable *query, gpointer user) {
    static_cast<Impl *>(user)->handle_request(msg, path ? path : "/", query);
  }

  void serve_resource(SoupServerMessage *msg, const std::string &name, const char *type) {
    GBytes *b = g_resources_lookup_data(("/org/dreamwindow/app/web/" + name).c_str(), G_RESOURCE_LOOKUP_FLAGS_NONE,
                                        nullptr);
    if (!b) {
      reply_error(msg, 404, "not found");
      return;
    }
    gsize len = 0;
    const char *data = static_cast<const char *>(g_bytes_get_data(b, &len));
    reply(msg, 200, type, std::string(data, len));
    g_bytes_unref(b);
  }

  void handle_request(SoupServerMessage *msg, const std::string &path, GHashTable *query) {
    const char *method = soup_server_message_get_method(msg);
    bool get = g_strcmp0(method, "GET") == 0 || g_strcmp0(method, "HEAD") == 0;
    if (path == "/api/control") {
      if (!token_ok(opt.token, msg, query)) {
        reply_error(msg, 401, "a valid token is required (?token=T or Authorization: Bearer T)");
        return;
      }
      handle_control(msg);
      return;
    }
    if (!get) {
      reply_error(msg, 405, "method not allowed");
      return;
    }
    if (path == "/" || path == "/index.html") {
      serve_resource(msg, "index.html", "text/html; charset=utf-8");
    } else if (path == "/viewer.js") {
      serve_resource(msg, "viewer.js", "text/javascript; charset=utf-8");
    } else if (path == "/style.css") {
      serve_resource(msg, "style.css", "text/css; charset=utf-8");
    } else if (path == "/favicon.ico") {
      reply(msg, 204, "image/x-icon", "");
    } else if (path == "/api/status") {
      reply_json(msg, 200, status_json());
    } else if (path == "/api/history") {
      reply_json(msg, 200, history_json());
    } else if (path == "/metrics") {
      reply(msg, 200, "text/plain; version=0.0.4; charset=utf-8", metrics_text());
    } else if (path == "/api/sim/prompts" && sim) {
      reply_json(msg, 200, sim_prompts_json());
    } else {
      reply_error(msg, 404, "not found");
    }
  }

  // Runs before the websocket handshake: refusing here answers a plain HTTP status.
  static void on_ws_path(SoupServer *, SoupServerMessage *msg, const char *, GHashTable *query, gpointer user) {
    auto *self = static_cast<Impl *>(user);
    if (!token_ok(self->opt.token, msg, query)) reply_error(msg, 401, "a valid token is required (?token=T)");
  }

  size_t viewer_count() const {
#ifdef DW_HAVE_WEBRTC
    return viewers.size();
#else
    return 0;
#endif
  }

  static void ws_refuse(SoupWebsocketConnection *ws, const char *code, const std::string &message,
                        unsigned short close_code) {
    std::string t = JsonObj().set("type", "error").set("code", code).set("message", message).to_string();
    soup_websocket_connection_send_text(ws, t.c_str());
    soup_websocket_connection_close(ws, close_code, message.c_str());
  }

  struct WsKey {
    Impl *self;
    uint64_t id;
  };

  static void on_websocket(SoupServer *, SoupServerMessage *msg, const char *, SoupWebsocketConnection *ws,
                           gpointer user) {
    auto *self = static_cast<Impl *>(user);
#ifndef DW_HAVE_WEBRTC
    self->viewers_refused++;
    ws_refuse(ws, "no-webrtc", "this build of dreamwindow has no WebRTC support (meson option webrtc)", 4501);
#else
    if (!self->tee || self->shutting_down) {
      self->viewers_refused++;
      ws_refuse(ws, "no-webrtc",
                self->shutting_down ? "the server is shutting down"
                                    : "this pipeline has no WebRTC output (--sink auto, or no tee named webrtctee)",
                4501);
      return;
    }
    if (self->viewers.size() >= self->opt.max_viewers) {
      self->viewers_refused++;
      self->log("viewer refused: %zu of %u viewers connected", self->viewers.size(), self->opt.max_viewers);
      ws_refuse(ws, "max-viewers",
                "too many viewers: " + std::to_string(self->opt.max_viewers) + " already watching (--max-viewers)",
                4429);
      return;
    }
    uint64_t id = self->next_viewer++;
    auto viewer = std::make_shared<Viewer>(id, ws, self->ctx);
    std::string err;
    self->viewers[id] = viewer;
    GSocketAddress *addr = soup_server_message_get_remote_address(msg);
    std::string remote = "?";
    if (addr && G_IS_INET_SOCKET_ADDRESS(addr)) {
      gchar *ip = g_inet_address_to_string(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(addr)));
      remote = ip;
      g_free(ip);
    }
    soup_websocket_connection_set_keepalive_interval(ws, 10);
    g_signal_connect_data(ws, "message", G_CALLBACK(on_ws_message), new WsKey{self, id},
                          [](gpointer d, GClosure *) { delete static_cast<WsKey *>(d); }, GConnectFlags(0));
    g_signal_connect_data(ws, "closed", G_CALLBACK(on_ws_closed), new WsKey{self, id},
                          [](gpointer d, GClosure *) { delete static_cast<WsKey *>(d); }, GConnectFlags(0));
    viewer->send(JsonObj()
                     .set("type", "hello")
                     .set("id", static_cast<guint64>(id))
                     .set("codec", self->opt.codec)
                     .set("viewers", static_cast<guint64>(self->viewers.size()))
                     .set("max_viewers", self->opt.max_viewers)
                     .to_string());
    if (!viewer->attach(self->pipeline, self->tee, self->opt.codec, &err)) {
      self->viewers.erase(id);
      self->warn("viewer %" G_GUINT64_FORMAT ": %s", id, err.c_str());
      ws_refuse(ws, "pipeline", err, 1011);
      return;
    }
    self->viewers_total++;
    self->log("viewer %" G_GUINT64_FORMAT " connected from %s (%zu of %u)", id, remote.c_str(), self->viewers.size(),
              self->opt.max_viewers);
    // A peer connection that has not formed in 10 s will not: close, and the page reconnects.
    GSource *t = g_timeout_source_new_seconds(10);
    g_source_set_callback(
        t,
        [](gpointer d) -> gboolean {
          auto *key = static_cast<WsKey *>(d);
          auto it = key->self->viewers.find(key->id);
          if (it == key->self->viewers.end()) return G_SOURCE_REMOVE;
          const std::string ice = it->second->ice_state();
          if (ice != "connected" && ice != "completed") {
            key->self->warn("viewer %" G_GUINT64_FORMAT ": no WebRTC connection after 10 s (ICE %s): closing",
                            key->id, ice.c_str());
            it->second->close(4408, "WebRTC connection not established within 10 s");
            key->self->drop_viewer(key->id, 4408);
          }
          return G_SOURCE_REMOVE;
        },
        new WsKey{self, id}, [](gpointer d) { delete static_cast<WsKey *>(d); });
    g_source_attach(t, self->ctx);
    g_source_unref(t);
#endif
  }

#ifdef DW_HAVE_WEBRTC
  static void on_ws_message(SoupWebsocketConnection *, gint type, GBytes *message, gpointer user) {
    auto *key = static_cast<WsKey *>(user);
    if (type != SOUP_WEBSOCKET_DATA_TEXT) return;
    auto it = key->self->viewers.find(key->id);
    if (it == key->self->viewers.end()) return;
    gsize len = 0;
    const char *data = static_cast<const char *>(g_bytes_get_data(message, &len));
    it->second->on_message(std::string(data, len));
  }

  static void on_ws_closed(SoupWebsocketConnection *ws, gpointer user) {
    auto *key = static_cast<WsKey *>(user);
    key->self->drop_viewer(key->id, soup_websocket_connection_get_close_code(ws));
  }

  void drop_viewer(uint64_t id, int code) {
    auto it = viewers.find(id);
    if (it == viewers.end()) return;
    auto v = it->second;
    viewers.erase(it);
    detaching[id] = v;
    log("viewer %" G_GUINT64_FORMAT " left (websocket closed, code %d): removing its branch", id, code);
    v->detach([this, id]() { detaching.erase(id); });
  }
#endif

  void close_all_viewers(unsigned short code, const std::string &reason) {
#ifdef DW_HAVE_WEBRTC
    std::vector<std::shared_ptr<Viewer>> all;
    for (auto &kv : viewers) all.push_back(kv.second);
    for (auto &v : all) v->close(code, reason);
    // "closed" fires later (after the close handshake); detach now so the pipeline can stop.
    for (auto &v : all) drop_viewer(v->id(), code);
#endif
  }

  bool listen(std::string *error) {
    server = soup_server_new("server-header", "dreamwindow/" VERSION " ", nullptr);
    soup_server_add_handler(server, nullptr, on_request, this, nullptr);
    soup_server_add_handler(server, "/ws", on_ws_path, this, nullptr);
    soup_server_add_websocket_handler(server, "/ws", nullptr, nullptr, on_websocket, this, nullptr);
    GInetAddress *ia = g_inet_address_new_from_string(opt.listen.c_str());
    if (!ia) {
      *error = "--listen: not an IP address: " + opt.listen;
      return false;
    }
    GSocketAddress *sa = g_inet_socket_address_new(ia, opt.port);
    g_object_unref(ia);
    GError *err = nullptr;
    bool ok = soup_server_listen(server, sa, static_cast<SoupServerListenOptions>(0), &err);
    g_object_unref(sa);
    if (!ok) {
      *error = std::string("cannot listen on ") + opt.listen + ":" + std::to_string(opt.port) + ": " +
               (err ? err->message : "?");
      g_clear_error(&err);
      return false;
    }
    GSList *uris = soup_server_get_uris(server);
    for (GSList *l = uris; l; l = l->next) {
      GUri *u = static_cast<GUri *>(l->data);
      if (!port) port = static_cast<uint16_t>(g_uri_get_port(u));
    }
    g_slist_free_full(uris, reinterpret_cast<GDestroyNotify>(g_uri_unref));
    std::string host = opt.listen;
    if (host == "0.0.0.0" || host == "::") host = "127.0.0.1";
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    url = "http://" + host + ":" + std::to_string(port) + "/";
    return true;
  }

  /* ------------------------------------------------------------------------------------------ */
  /* Lifecycle                                                                                    */

  bool start(std::string *error) {
    start_us = g_get_monotonic_time();
    if (sink_kind() != "webrtc" && sink_kind() != "auto" && sink_kind() != "fake") {
      *error = "--sink must be webrtc, auto or fake";
      return false;
    }
    if (sink_kind() == "webrtc" && !have_webrtc()) {
      *error = "this build has no WebRTC support (meson option webrtc): use --sink auto";
      return false;
    }
    if (opt.codec != "vp8" && opt.codec != "h264") {
      *error = "--codec must be vp8 or h264";
      return false;
    }
    if (opt.comfy_url.empty()) {
      dw::sim::Config cfg;
      cfg.latency_ms = opt.sim_latency_ms;
      sim = std::make_unique<dw::sim::Simulator>(cfg);
      std::string err;
      if (!sim->start(&err)) {
        *error = "cannot start the ComfyUI simulator: " + err;
        return false;
      }
      server_url = sim->url();
      log("ComfyUI simulator (built in) at %s; --comfy-url URL --workflow FILE for a real ComfyUI", server_url.c_str());
    } else {
      server_url = opt.comfy_url;
      log("ComfyUI at %s", server_url.c_str());
    }
    if (!build_pipeline(error)) return false;
    log("pipeline: %s", description.c_str());
    GstBus *bus = gst_pipeline_get_bus(GST_PIPELINE(pipeline));
    bus_watch = gst_bus_add_watch(bus, on_bus, this);  // on ctx, the thread default
    gst_object_unref(bus);
    if (!listen(error)) return false;
    if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
      *error = "the pipeline failed to start";
      // The bus usually holds the reason.
      GstBus *b = gst_pipeline_get_bus(GST_PIPELINE(pipeline));
      while (GstMessage *m = gst_bus_pop_filtered(b, GST_MESSAGE_ERROR)) {
        GError *e = nullptr;
        gst_message_parse_error(m, &e, nullptr);
        if (e) *error += std::string(": ") + GST_MESSAGE_SRC_NAME(m) + ": " + e->message;
        g_clear_error(&e);
        gst_message_unref(m);
      }
      gst_object_unref(b);
      return false;
    }
    sample_source = attach_timeout(1000, [](gpointer d) -> gboolean {
      static_cast<Impl *>(d)->sample();
      return G_SOURCE_CONTINUE;
    });
    if (opt.handle_signals) {
      for (int sig : {SIGINT, SIGTERM}) {
        GSource *s = g_unix_signal_source_new(sig);
        g_source_set_callback(
            s,
            [](gpointer d) -> gboolean {
              auto *self = static_cast<Impl *>(d);
              if (self->shutting_down) {  // a second signal: stop now
                g_main_loop_quit(self->loop);
              } else {
                self->log("signal: stopping");
                self->begin_shutdown();
              }
              return G_SOURCE_CONTINUE;
            },
            this, nullptr);
        g_source_attach(s, ctx);
        g_source_unref(s);
      }
    }
    std::string shown = url + (opt.token.empty() ? "" : "?token=" + opt.token);
    if (sink_kind() == "webrtc" || (!opt.pipeline.empty() && tee))
      log("open %s in a browser (Ctrl+C to stop)", shown.c_str());
    else
      log("serving the status API at %s (Ctrl+C to stop)", shown.c_str());
    return true;
  }

  void begin_shutdown() {
    if (shutting_down) return;
    shutting_down = true;
    if (!pipeline) {
      g_main_loop_quit(loop);
      return;
    }
    remove_source(restart_source);
    set_paused(false);
    close_all_viewers(1001, "server shutting down");
    // EOS through the pipeline; give it up to 0.8 s, then stop regardless (the whole exit stays < 2 s).
    gst_element_send_event(pipeline, gst_event_new_eos());
    attach_timeout(800, [](gpointer d) -> gboolean {
      auto *self = static_cast<Impl *>(d);
      GST_INFO("EOS did not arrive within 1 s: stopping anyway");
      g_main_loop_quit(self->loop);
      return G_SOURCE_REMOVE;
    });
  }

  void cleanup() {
    remove_source(sample_source);
    remove_source(restart_source);
    remove_source(bus_watch);
    set_paused(false);
#ifdef DW_HAVE_WEBRTC
    for (auto &kv : viewers) kv.second->close(1001, "server shutting down");
#endif
    if (pipeline) {
      gst_element_set_state(pipeline, GST_STATE_NULL);
    }
#ifdef DW_HAVE_WEBRTC
    viewers.clear();
    detaching.clear();
#endif
    if (server) {
      soup_server_disconnect(server);
      // Let the close frames and pending replies go out.
      for (int i = 0; i < 50 && g_main_context_iteration(ctx, FALSE); ++i) {
      }
      g_clear_object(&server);
    }
    if (pipeline) gst_clear_object(&pipeline);
    elements.clear();
    tee = nullptr;
    if (sim) sim->stop();
  }
};

App::App(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    GST_DEBUG_CATEGORY_INIT(dreamwindow_app_debug, "dreamwindow", 0, "dreamwindow viewer app");
    g_resources_register(dreamwindow_app_get_resource());
    g_once_init_leave(&once, 1);
  }
}

App::~App() = default;

int App::run() {
  Impl *p = impl_.get();
  g_main_context_push_thread_default(p->ctx);
  std::string error;
  bool ok = p->start(&error);
  {
    std::lock_guard<std::mutex> l(p->ready_lock);
    p->ready = ok ? 1 : -1;
  }
  p->ready_cond.notify_all();
  if (!ok) {
    p->warn("%s", error.c_str());
    p->cleanup();
    g_main_context_pop_thread_default(p->ctx);
    return 1;
  }
  g_main_loop_run(p->loop);
  gint64 t0 = g_get_monotonic_time();
  p->cleanup();
  GST_INFO("cleanup took %.3f s", (g_get_monotonic_time() - t0) / 1e6);
  g_main_context_pop_thread_default(p->ctx);
  p->log("stopped");
  return p->exit_code;
}

void App::shutdown() {
  g_main_context_invoke(impl_->ctx,
                        [](gpointer d) -> gboolean {
                          static_cast<Impl *>(d)->begin_shutdown();
                          return G_SOURCE_REMOVE;
                        },
                        impl_.get());
}

bool App::wait_ready(unsigned timeout_ms) {
  std::unique_lock<std::mutex> l(impl_->ready_lock);
  impl_->ready_cond.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return impl_->ready != 0; });
  return impl_->ready == 1;
}

std::string App::url() const { return impl_->url; }
uint16_t App::port() const { return impl_->port; }

GstElement *App::element(const std::string &factory) const {
  auto it = impl_->elements.find(factory);
  return it == impl_->elements.end() ? nullptr : GST_ELEMENT(gst_object_ref(it->second));
}

dw::sim::Simulator *App::simulator() const { return impl_->sim.get(); }

}  // namespace dw::app

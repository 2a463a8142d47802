// Egress outputs (RTMP, HLS, SRT) fed from the app's H.264 tee; see egress.h for the design.
#include "egress.h"

#include <gio/gio.h>
#include <glib/gstdio.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "comfy/backoff.h"

GST_DEBUG_CATEGORY_STATIC(dw_egress_debug);
#define GST_CAT_DEFAULT dw_egress_debug

namespace dw::app {
namespace {

const char kHlsPage[] = R"(<!doctype html>
<html><head><meta charset="utf-8"><title>dreamwindow (HLS)</title>
<style>body{margin:0;background:#000}video{width:100vw;height:100vh;object-fit:contain}</style></head>
<body><video id="v" autoplay muted playsinline controls></video>
<script>
// Native HLS (Safari, iOS, Android) plays playlist.m3u8 directly; elsewhere hls.js is used when it is
// served next to this page as hls.min.js (npm package hls.js, dist/hls.min.js).
const v = document.getElementById('v'), src = 'playlist.m3u8';
if (v.canPlayType('application/vnd.apple.mpegurl')) { v.src = src; }
else {
  const s = document.createElement('script'); s.src = 'hls.min.js';
  s.onload = () => { const h = new Hls({liveSyncDurationCount: 2}); h.loadSource(src); h.attachMedia(v); };
  s.onerror = () => { document.body.insertAdjacentHTML('beforeend',
    '<p style="color:#ccc;font:16px sans-serif;position:fixed;top:1em;left:1em">This browser has no native HLS: ' +
    'copy hls.min.js (npm hls.js) next to this page, or open playlist.m3u8 in a player.</p>'); };
  document.head.appendChild(s);
}
</script></body></html>
)";

bool has_factory(const char *name) {
  GstElementFactory *f = gst_element_factory_find(name);
  if (!f) return false;
  gst_object_unref(f);
  return true;
}

bool has_scheme(const std::string &uri, std::initializer_list<const char *> schemes) {
  for (const char *s : schemes) {
    size_t n = strlen(s);
    if (uri.size() > n + 3 && g_ascii_strncasecmp(uri.c_str(), s, n) == 0 && uri.compare(n, 3, "://") == 0)
      return true;
  }
  return false;
}

}  // namespace

std::string mask_stream_key(const std::string &url) {
  size_t slash = url.rfind('/');
  size_t scheme_end = url.find("://");
  if (slash == std::string::npos || scheme_end == std::string::npos || slash <= scheme_end + 2) return url;
  size_t first_path = url.find('/', scheme_end + 3);
  if (first_path == std::string::npos || slash == first_path || slash + 1 >= url.size()) return url;
  return url.substr(0, slash + 1) + "****";
}

std::string validate_egress(const EgressConfig &c) {
  auto need = [](std::initializer_list<const char *> names, const char *what) -> std::string {
    for (const char *n : names)
      if (!has_factory(n))
        return std::string(what) + " needs the GStreamer element '" + n + "' (gstreamer1.0-plugins-bad/-good)";
    return "";
  };
  std::string e;
  for (const auto &u : c.rtmp_urls) {
    if (!has_scheme(u, {"rtmp", "rtmps"}))
      return "--publish " + mask_stream_key(u) + ": not an rtmp:// or rtmps:// URL";
    if (!(e = need({"h264parse", "flvmux", "rtmp2sink"}, "--publish")).empty()) return e;
  }
  for (const auto &u : c.srt_uris) {
    if (!has_scheme(u, {"srt"})) return "--srt " + u + ": not an srt:// URI";
    if (!(e = need({"h264parse", "mpegtsmux", "srtsink"}, "--srt")).empty()) return e;
  }
  if (!c.hls_dir.empty()) {
    if (g_mkdir_with_parents(c.hls_dir.c_str(), 0755) != 0)
      return "--hls " + c.hls_dir + ": cannot create the directory (" + g_strerror(errno) + ")";
    if (!g_file_test(c.hls_dir.c_str(), G_FILE_TEST_IS_DIR)) return "--hls " + c.hls_dir + ": not a directory";
    if (!(e = need({"h264parse", "hlssink2"}, "--hls")).empty()) return e;
  }
  if (c.hls_target_duration_s < 1 || c.hls_playlist_length < 1 || c.hls_max_files < c.hls_playlist_length)
    return "HLS: target duration and playlist length must be >= 1, max files >= playlist length";
  return "";
}

struct Egress::Impl : std::enable_shared_from_this<Egress::Impl> {
  struct Output {
    std::string kind, target, masked;
    std::string description;  // gst-launch description with an appsrc named "in" and a sink named "sink"
    GstElement *pipeline = nullptr;
    GstElement *appsrc = nullptr;  // ref'd while pipeline exists
    GSource *bus_watch = nullptr;
    GSource *retry = nullptr;
    bool waiting_idr = true;
    bool running = false;
    int64_t started_us = 0;
    dw::comfy::Backoff backoff;
    OutputStatus st;
    Output(uint32_t initial, uint32_t max) : backoff(initial, max) {}
  };

  EgressConfig config;
  mutable std::mutex mutex;  // outputs' appsrc/state/counters (streaming thread vs egress thread)
  std::vector<std::unique_ptr<Output>> outputs;
  GMainContext *context = nullptr;
  GMainLoop *loop = nullptr;
  std::thread thread;
  // Main-pipeline branch.
  GstElement *pipeline = nullptr, *tee = nullptr, *queue = nullptr, *appsink = nullptr;
  GstPad *tee_pad = nullptr;
  std::atomic<int64_t> last_key_request_us{0};

  explicit Impl(EgressConfig c) : config(std::move(c)) {
    for (const auto &u : config.rtmp_urls)
      add("rtmp", u, mask_stream_key(u),
          "appsrc name=in ! h264parse ! flvmux streamable=true ! rtmp2sink name=sink");
    for (const auto &u : config.srt_uris)
      add("srt", u, u, "appsrc name=in ! h264parse ! mpegtsmux alignment=7 ! srtsink name=sink");
    if (!config.hls_dir.empty())
      add("hls", config.hls_dir, config.hls_dir, "appsrc name=in ! h264parse ! hlssink2 name=sink");
  }

  void add(const char *kind, const std::string &target, const std::string &masked, const char *desc) {
    auto o = std::make_unique<Output>(config.backoff_initial_ms, config.backoff_max_ms);
    o->kind = kind;
    o->target = target;
    o->masked = masked;
    o->description = desc;
    o->st.kind = kind;
    o->st.target = masked;
    o->st.state = "stopped";
    outputs.push_back(std::move(o));
  }

  void start_thread() {
    context = g_main_context_new();
    loop = g_main_loop_new(context, FALSE);
    thread = std::thread([this] {
      g_main_context_push_thread_default(context);
      g_main_loop_run(loop);
      g_main_context_pop_thread_default(context);
    });
  }

  void stop_thread() {
    if (!loop) return;
    // Tear the outputs down on their own thread, then quit it.
    invoke_sync([this] {
      for (auto &o : outputs) teardown(*o, "stopped");
      g_main_loop_quit(loop);
    });
    thread.join();
    g_main_loop_unref(loop);
    g_main_context_unref(context);
    loop = nullptr;
    context = nullptr;
  }

  // Runs fn on the egress thread and waits for it (used only from the app's thread, never from ours).
  template <typename Fn>
  void invoke_sync(Fn fn) {
    struct Call {
      Fn fn;
      std::mutex m;
      std::condition_variable cv;
      bool done = false;
    };
    Call call{std::move(fn)};
    GSource *s = g_idle_source_new();
    g_source_set_callback(
        s,
        [](gpointer p) -> gboolean {
          auto *c = static_cast<Call *>(p);
          try {
            c->fn();
          } catch (const std::exception &e) {
            GST_ERROR("egress: %s", e.what());
          }
          std::lock_guard<std::mutex> l(c->m);
          c->done = true;
          c->cv.notify_all();
          return G_SOURCE_REMOVE;
        },
        &call, nullptr);
    g_source_attach(s, context);
    g_source_unref(s);
    std::unique_lock<std::mutex> l(call.m);
    call.cv.wait(l, [&] { return call.done; });
  }

  // --- output lifecycle (egress thread only) ---
  void start(Output &o) {
    GError *err = nullptr;
    GstElement *p = gst_parse_launch(o.description.c_str(), &err);
    if (!p) {
      fail(o, std::string("cannot build the output pipeline: ") + (err ? err->message : "?"));
      g_clear_error(&err);
      return;
    }
    g_clear_error(&err);  // a non-fatal parse warning
    GstElement *src = gst_bin_get_by_name(GST_BIN(p), "in");
    GstElement *sink = gst_bin_get_by_name(GST_BIN(p), "sink");
    GstCaps *caps = gst_caps_from_string("video/x-h264,stream-format=byte-stream,alignment=au");
    g_object_set(src, "is-live", TRUE, "do-timestamp", TRUE, "format", GST_FORMAT_TIME, "caps", caps,
                 "max-bytes", static_cast<guint64>(8u << 20), nullptr);
    gst_util_set_object_arg(G_OBJECT(src), "leaky-type", "downstream");
    gst_caps_unref(caps);
    if (o.kind == "rtmp") {
      g_object_set(sink, "location", o.target.c_str(), nullptr);
    } else if (o.kind == "srt") {
      g_object_set(sink, "uri", o.target.c_str(), "wait-for-connection", FALSE, nullptr);
    } else {
      std::string seg = o.target + "/segment%05d.ts", pl = o.target + "/playlist.m3u8";
      g_object_set(sink, "location", seg.c_str(), "playlist-location", pl.c_str(), "target-duration",
                   config.hls_target_duration_s, "playlist-length", config.hls_playlist_length, "max-files",
                   config.hls_max_files, nullptr);
    }
    gst_object_unref(sink);
    GstBus *bus = gst_pipeline_get_bus(GST_PIPELINE(p));
    o.bus_watch = gst_bus_create_watch(bus);
    gst_object_unref(bus);
    struct Ctx {
      std::weak_ptr<Impl> self;
      Output *o;
    };
    g_source_set_callback(o.bus_watch, G_SOURCE_FUNC(+[](GstBus *, GstMessage *m, gpointer d) -> gboolean {
                            auto *c = static_cast<Ctx *>(d);
                            if (auto s = c->self.lock()) {
                              try {
                                s->on_message(*c->o, m);
                              } catch (const std::exception &e) {
                                GST_ERROR("egress: %s", e.what());
                              }
                            }
                            return G_SOURCE_CONTINUE;
                          }),
                          new Ctx{weak_from_this(), &o}, [](gpointer d) { delete static_cast<Ctx *>(d); });
    g_source_attach(o.bus_watch, context);
    {
      std::lock_guard<std::mutex> l(mutex);
      o.pipeline = p;
      o.appsrc = src;
      o.waiting_idr = true;
      o.running = true;
      o.started_us = g_get_monotonic_time();
      o.st.starts++;
      o.st.state = "starting";
    }
    GST_INFO("egress %s %s: starting", o.kind.c_str(), o.masked.c_str());
    if (gst_element_set_state(p, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE)
      fail(o, "the output pipeline failed to start");
  }

  void on_message(Output &o, GstMessage *m) {
    if (GST_MESSAGE_SRC(m) == nullptr) return;
    switch (GST_MESSAGE_TYPE(m)) {
      case GST_MESSAGE_ERROR: {
        GError *e = nullptr;
        gst_message_parse_error(m, &e, nullptr);
        std::string what = std::string(GST_OBJECT_NAME(GST_MESSAGE_SRC(m))) + ": " + (e ? e->message : "error");
        g_clear_error(&e);
        fail(o, what);
        break;
      }
      case GST_MESSAGE_EOS:
        fail(o, "the output ended (EOS)");
        break;
      default:
        break;
    }
  }

  void teardown(Output &o, const char *state) {
    if (o.retry) {
      g_source_destroy(o.retry);
      g_source_unref(o.retry);
      o.retry = nullptr;
    }
    GstElement *p = nullptr, *src = nullptr;
    {
      std::lock_guard<std::mutex> l(mutex);
      p = o.pipeline;
      src = o.appsrc;
      o.pipeline = nullptr;
      o.appsrc = nullptr;
      o.running = false;
      o.st.state = state;
    }
    if (o.bus_watch) {
      g_source_destroy(o.bus_watch);
      g_source_unref(o.bus_watch);
      o.bus_watch = nullptr;
    }
    if (p) {
      gst_element_set_state(p, GST_STATE_NULL);
      gst_object_unref(p);
    }
    if (src) gst_object_unref(src);
  }

  void fail(Output &o, const std::string &why) {
    teardown(o, "retrying");
    uint32_t delay;
    {
      std::lock_guard<std::mutex> l(mutex);
      o.st.failures++;
      o.st.last_error = why;
      delay = o.backoff.next_ms();
    }
    GST_WARNING("egress %s %s: %s; retrying in %u ms", o.kind.c_str(), o.masked.c_str(), why.c_str(), delay);
    g_printerr("dreamwindow: egress %s %s: %s (retrying in %.1f s)\n", o.kind.c_str(), o.masked.c_str(),
               why.c_str(), delay / 1000.0);
    o.retry = g_timeout_source_new(delay);
    struct Ctx {
      std::weak_ptr<Impl> self;
      Output *o;
    };
    g_source_set_callback(
        o.retry,
        [](gpointer d) -> gboolean {
          auto *c = static_cast<Ctx *>(d);
          if (auto s = c->self.lock()) {
            g_source_unref(c->o->retry);
            c->o->retry = nullptr;
            try {
              s->start(*c->o);
            } catch (const std::exception &e) {
              GST_ERROR("egress: %s", e.what());
            }
          }
          return G_SOURCE_REMOVE;
        },
        new Ctx{weak_from_this(), &o}, [](gpointer d) { delete static_cast<Ctx *>(d); });
    g_source_attach(o.retry, context);
  }

  // --- main pipeline streaming thread ---
  void push(GstBuffer *buffer) {
    bool is_idr = !GST_BUFFER_FLAG_IS_SET(buffer, GST_BUFFER_FLAG_DELTA_UNIT);
    bool want_idr = false;
    int64_t now = g_get_monotonic_time();
    std::lock_guard<std::mutex> l(mutex);
    for (auto &o : outputs) {
      if (!o->running || !o->appsrc) continue;
      if (o->waiting_idr && !is_idr) {
        want_idr = true;
        continue;
      }
      o->waiting_idr = false;
      GstBuffer *copy = gst_buffer_copy(buffer);  // shares memory; fresh timestamps from appsrc
      GST_BUFFER_PTS(copy) = GST_BUFFER_DTS(copy) = GST_CLOCK_TIME_NONE;
      o->st.buffers++;
      o->st.bytes += gst_buffer_get_size(buffer);
      if (o->st.state == "starting" && now - o->started_us > 1000 * 1000) o->st.state = "streaming";
      if (now - o->started_us > int64_t(config.healthy_after_ms) * 1000) o->backoff.reset();
      GstFlowReturn r;
      g_signal_emit_by_name(o->appsrc, "push-buffer", copy, &r);
      gst_buffer_unref(copy);
    }
    if (want_idr && now - last_key_request_us.load() > 1000 * 1000 && appsink) {
      last_key_request_us = now;
      GstPad *pad = gst_element_get_static_pad(appsink, "sink");
      gst_pad_push_event(pad, gst_event_new_custom(
                                  GST_EVENT_CUSTOM_UPSTREAM,
                                  gst_structure_new("GstForceKeyUnit", "all-headers", G_TYPE_BOOLEAN, TRUE,
                                                    "running-time", G_TYPE_UINT64, GST_CLOCK_TIME_NONE, "count",
                                                    G_TYPE_UINT, 0u, nullptr)));
      gst_object_unref(pad);
    }
  }

  static GstPadProbeReturn on_buffer(GstPad *, GstPadProbeInfo *info, gpointer d) {
    auto *self = static_cast<Impl *>(d);
    try {
      if (GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER(info)) self->push(b);
    } catch (const std::exception &e) {
      GST_ERROR("egress: %s", e.what());
    }
    return GST_PAD_PROBE_OK;
  }
};

Egress::Egress(EgressConfig config) : impl_(std::make_shared<Impl>(std::move(config))) {
  static std::once_flag once;
  std::call_once(once, [] { GST_DEBUG_CATEGORY_INIT(dw_egress_debug, "dwegress", 0, "dreamwindow egress"); });
}

Egress::~Egress() { detach(); }

bool Egress::empty() const { return impl_->outputs.empty(); }

bool Egress::attach(GstElement *pipeline, GstElement *tee, std::string *error) {
  if (empty()) return true;
  if (impl_->pipeline) {
    *error = "egress is already attached";
    return false;
  }
  std::string why = validate_egress(impl_->config);
  if (!why.empty()) {
    *error = why;
    return false;
  }
  if (!impl_->config.hls_dir.empty()) {
    std::string page = impl_->config.hls_dir + "/index.html";
    GError *e = nullptr;
    if (!g_file_set_contents(page.c_str(), kHlsPage, -1, &e)) {
      *error = std::string("--hls: ") + (e ? e->message : "cannot write index.html");
      g_clear_error(&e);
      return false;
    }
  }
  auto &d = *impl_;
  // Frames reach the outputs through a fakesink probe: the leaky queue keeps a stalled output from
  // ever holding the tee (and so the browsers) back.
  d.queue = gst_element_factory_make("queue", nullptr);
  d.appsink = gst_element_factory_make("fakesink", nullptr);
  if (!d.queue || !d.appsink) {
    *error = "queue/fakesink missing";
    return false;
  }
  gst_util_set_object_arg(G_OBJECT(d.queue), "leaky", "downstream");
  g_object_set(d.queue, "max-size-buffers", 200u, "max-size-bytes", 0u, "max-size-time", static_cast<guint64>(0),
               nullptr);
  g_object_set(d.appsink, "sync", FALSE, "async", FALSE, nullptr);
  gst_bin_add_many(GST_BIN(pipeline), d.queue, d.appsink, nullptr);
  gst_element_link(d.queue, d.appsink);
  GstPad *sinkpad = gst_element_get_static_pad(d.appsink, "sink");
  gst_pad_add_probe(sinkpad, GST_PAD_PROBE_TYPE_BUFFER, Impl::on_buffer, impl_.get(), nullptr);
  gst_object_unref(sinkpad);
  d.pipeline = GST_ELEMENT(gst_object_ref(pipeline));
  d.tee = GST_ELEMENT(gst_object_ref(tee));
  gst_element_sync_state_with_parent(d.appsink);
  gst_element_sync_state_with_parent(d.queue);
  d.tee_pad = gst_element_request_pad_simple(tee, "src_%u");
  GstPad *qsink = gst_element_get_static_pad(d.queue, "sink");
  bool linked = d.tee_pad && gst_pad_link(d.tee_pad, qsink) == GST_PAD_LINK_OK;
  gst_object_unref(qsink);
  if (!linked) {
    *error = "could not link the egress branch to the tee";
    detach();
    return false;
  }
  d.start_thread();
  d.invoke_sync([&d] {
    for (auto &o : d.outputs) d.start(*o);
  });
  return true;
}

void Egress::detach() {
  auto &d = *impl_;
  if (!d.pipeline) return;
  d.stop_thread();
  if (d.tee_pad) {
    GstPad *peer = gst_pad_get_peer(d.tee_pad);
    if (peer) {
      gst_pad_unlink(d.tee_pad, peer);
      gst_object_unref(peer);
    }
    gst_element_release_request_pad(d.tee, d.tee_pad);
    gst_clear_object(&d.tee_pad);
  }
  for (GstElement *e : {d.queue, d.appsink}) {
    if (!e) continue;
    gst_element_set_locked_state(e, TRUE);
    gst_element_set_state(e, GST_STATE_NULL);
    gst_bin_remove(GST_BIN(d.pipeline), e);
  }
  d.queue = d.appsink = nullptr;
  gst_clear_object(&d.tee);
  gst_clear_object(&d.pipeline);
}

std::vector<Egress::OutputStatus> Egress::status() const {
  std::lock_guard<std::mutex> l(impl_->mutex);
  std::vector<OutputStatus> out;
  for (const auto &o : impl_->outputs) out.push_back(o->st);
  return out;
}

void Egress::to_json(JsonBuilder *b) const {
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "outputs");
  json_builder_begin_array(b);
  for (const auto &s : status()) {
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "kind");
    json_builder_add_string_value(b, s.kind.c_str());
    json_builder_set_member_name(b, "target");
    json_builder_add_string_value(b, s.target.c_str());
    json_builder_set_member_name(b, "state");
    json_builder_add_string_value(b, s.state.c_str());
    json_builder_set_member_name(b, "starts");
    json_builder_add_int_value(b, static_cast<gint64>(s.starts));
    json_builder_set_member_name(b, "failures");
    json_builder_add_int_value(b, static_cast<gint64>(s.failures));
    json_builder_set_member_name(b, "buffers");
    json_builder_add_int_value(b, static_cast<gint64>(s.buffers));
    json_builder_set_member_name(b, "bytes");
    json_builder_add_int_value(b, static_cast<gint64>(s.bytes));
    json_builder_set_member_name(b, "last-error");
    json_builder_add_string_value(b, s.last_error.c_str());
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
}

}  // namespace dw::app

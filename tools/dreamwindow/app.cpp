// The app's lifecycle: start (simulator, pipeline, HTTP), the main loop, shutdown and cleanup.
// The pipeline, status and HTTP sides live in pipeline.cpp, status.cpp and http.cpp (app_impl.h).
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "app.h"

#include <gio/gio.h>
#include <glib-unix.h>

#include <chrono>
#include <cstdio>

#include "app_impl.h"

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

App::Impl::Impl(Options o) : opt(std::move(o)) {
  ctx = g_main_context_new();
  loop = g_main_loop_new(ctx, FALSE);
}

App::Impl::~Impl() {
  for (auto &m : last_message) gst_structure_free(m.second);
  g_main_loop_unref(loop);
  g_main_context_unref(ctx);
}

void App::Impl::log(const char *fmt, ...) {
  if (opt.quiet) return;
  va_list ap;
  va_start(ap, fmt);
  gchar *s = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  std::fprintf(stdout, "dreamwindow: %s\n", s);
  std::fflush(stdout);
  g_free(s);
}

void App::Impl::warn(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  gchar *s = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "dreamwindow: %s\n", s);
  std::fflush(stderr);
  g_free(s);
}

guint App::Impl::attach_timeout(guint ms, GSourceFunc fn) {
  GSource *s = g_timeout_source_new(ms);
  g_source_set_callback(s, fn, this, nullptr);
  guint id = g_source_attach(s, ctx);
  g_source_unref(s);
  return id;
}

void App::Impl::remove_source(guint &id) {
  if (!id) return;
  if (GSource *s = g_main_context_find_source_by_id(ctx, id)) g_source_destroy(s);
  id = 0;
}

bool App::Impl::start(std::string *error) {
  start_us = g_get_monotonic_time();
  const std::string kind = sink_kind();
  if (kind != "webrtc" && kind != "auto" && kind != "fake") {
    *error = "--sink must be webrtc, auto or fake";
    return false;
  }
  if (kind == "webrtc" && !have_webrtc()) {
    *error = "this build has no WebRTC support (meson option webrtc): use --sink auto";
    return false;
  }
  if (opt.codec != "vp8" && opt.codec != "h264") {
    *error = "--codec must be vp8 or h264";
    return false;
  }
  if (wants_egress()) {
    const std::string why = validate_egress(opt.egress);
    if (!why.empty()) {
      *error = why;
      return false;
    }
    if (opt.codec != "h264") log("egress (--publish/--hls/--srt) needs H.264: using --codec h264");
    opt.codec = "h264";
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
  if (!attach_egress(error)) return false;
  GstBus *bus = gst_pipeline_get_bus(GST_PIPELINE(pipeline));
  bus_watch = gst_bus_add_watch(bus, on_bus, this);  // on ctx, the thread default
  gst_object_unref(bus);
  if (!listen(error)) return false;
  if (!start_pipeline(error)) return false;
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
  if (kind == "webrtc" || (!opt.pipeline.empty() && tee))
    log("open %s in a browser (Ctrl+C to stop)", shown.c_str());
  else
    log("serving the status API at %s (Ctrl+C to stop)", shown.c_str());
  return true;
}

void App::Impl::begin_shutdown() {
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

void App::Impl::cleanup() {
  remove_source(sample_source);
  remove_source(restart_source);
  remove_source(bus_watch);
  set_paused(false);
#ifdef DW_HAVE_WEBRTC
  for (auto &kv : viewers) kv.second->close(1001, "server shutting down");
#endif
  if (egress) egress->detach();
  if (pipeline) gst_element_set_state(pipeline, GST_STATE_NULL);
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
  auto_sink = nullptr;
  if (sim) sim->stop();
}

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
  bool ok = false;
  try {
    ok = p->start(&error);
  } catch (const std::exception &e) {
    error = e.what();
  }
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

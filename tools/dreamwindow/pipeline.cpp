// The app's pipeline: building it (built-in chain or --pipeline), the bus, supervised restarts with
// backoff, pause, and the check of the sink autovideosink picked.
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <algorithm>
#include <cstring>

#include "app_impl.h"
#include "dwstats.h"

#define GST_CAT_DEFAULT dreamwindow_app_debug

namespace dw::app {

namespace {

const char *const kOptional[] = {"cachetap", "vaeinterp", "flightbuffer"};

bool has_prop(GstElement *e, const char *prop) { return e && g_object_class_find_property(G_OBJECT_GET_CLASS(e), prop); }

// Whether the enum property `prop` of e has a value with this nick.
bool enum_has(GstElement *e, const char *prop, const char *nick) {
  GParamSpec *ps = e ? g_object_class_find_property(G_OBJECT_GET_CLASS(e), prop) : nullptr;
  if (!ps || !G_IS_PARAM_SPEC_ENUM(ps)) return false;
  return g_enum_get_value_by_nick(G_PARAM_SPEC_ENUM(ps)->enum_class, nick) != nullptr;
}

// Errors that no restart can cure: the configuration is wrong.
bool is_configuration_error(const GError *e) {
  if (!e) return false;
  return (e->domain == GST_RESOURCE_ERROR && e->code == GST_RESOURCE_ERROR_SETTINGS) ||
         (e->domain == GST_LIBRARY_ERROR && e->code == GST_LIBRARY_ERROR_SETTINGS) ||
         (e->domain == GST_CORE_ERROR && e->code == GST_CORE_ERROR_MISSING_PLUGIN);
}

}  // namespace

std::string App::Impl::sink_kind() const {
  if (!opt.sink.empty()) return opt.sink;
  return have_webrtc() ? "webrtc" : "auto";
}

bool App::Impl::wants_egress() const {
  return !opt.egress.rtmp_urls.empty() || !opt.egress.hls_dir.empty() || !opt.egress.srt_uris.empty();
}

// The outputs hang off the encoded tee in their own pipelines (egress.h): a dead ingest server
// never stops this pipeline.
bool App::Impl::attach_egress(std::string *error) {
  if (!wants_egress()) return true;
  if (!tee) {
    *error = "--publish/--hls/--srt need a tee named webrtctee carrying H.264 (in --pipeline)";
    return false;
  }
  if (!egress) egress = std::make_unique<Egress>(opt.egress);
  std::string why;
  if (!egress->attach(pipeline, tee, &why)) {
    *error = "egress: " + why;
    return false;
  }
  return true;
}

GstElement *App::Impl::element_of(const char *factory) const {
  auto it = elements.find(factory);
  return it == elements.end() ? nullptr : it->second;
}

void App::Impl::configure_source(GstElement *src, bool from_description) {
  if (!from_description || !server_url.empty()) g_object_set(src, "server", server_url.c_str(), nullptr);
  if (!opt.workflow.empty()) g_object_set(src, "workflow", opt.workflow.c_str(), nullptr);
  if (!opt.prompt.empty()) g_object_set(src, "prompt", opt.prompt.c_str(), nullptr);
  if (!opt.negative_prompt.empty()) g_object_set(src, "negative-prompt", opt.negative_prompt.c_str(), nullptr);
  if (opt.denoise >= 0) g_object_set(src, "denoise", opt.denoise, nullptr);
  if (opt.seed >= 0) g_object_set(src, "seed", static_cast<gint64>(opt.seed), nullptr);
  if (!from_description) g_object_set(src, "width", opt.width, "height", opt.height, nullptr);
  if (opt.num_keyframes >= 0) g_object_set(src, "num-keyframes", opt.num_keyframes, nullptr);
}

// --vae DIR: the directory goes to vaeinterp's model-dir with backend=auto, and lib/latent picks the
// *encoder*/*decoder* files by its own rules (the app does not scan it). Without --vae: optical flow
// (no weights needed), or the pixel crossfade when this build has no OpenCV.
void App::Impl::configure_vaeinterp(GstElement *e) {
  if (!opt.vae_dir.empty()) {
    if (g_file_test(opt.vae_dir.c_str(), G_FILE_TEST_IS_DIR) && has_prop(e, "model-dir")) {
      g_object_set(e, "model-dir", opt.vae_dir.c_str(), nullptr);
      if (has_prop(e, "backend")) gst_util_set_object_arg(G_OBJECT(e), "backend", "auto");
      log("vaeinterp: VAE weights from %s (backend auto)", opt.vae_dir.c_str());
      return;
    }
    warn("vaeinterp: --vae %s is not a directory: using the default interpolator", opt.vae_dir.c_str());
  }
  const std::string backend = opt.interpolator.empty() ? "flow" : opt.interpolator;
  if (enum_has(e, "backend", backend.c_str())) {
    gst_util_set_object_arg(G_OBJECT(e), "backend", backend.c_str());
    log("vaeinterp: interpolating with the %s backend", backend.c_str());
  } else {
    if (has_prop(e, "backend")) gst_util_set_object_arg(G_OBJECT(e), "backend", "blend");
    log("vaeinterp: this build has no %s backend: interpolating with blend (pixel crossfade)", backend.c_str());
  }
}

GstElement *App::Impl::make_encoder(std::vector<GstElement *> &chain) {
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

bool App::Impl::build_pipeline(std::string *error) {
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
    GstElement *e = gst_element_factory_make(name, name);
    if (!e) continue;
    if (std::strcmp(name, "vaeinterp") == 0) configure_vaeinterp(e);
    chain.push_back(e);
    names.push_back(name);
    elements[name] = e;
  }
  chain.push_back(gst_element_factory_make("videoconvert", nullptr));
  names.push_back("videoconvert");
  const std::string kind = sink_kind();
  GstElement *display_tee = nullptr;  // --sink auto with egress: the window and the encoder both
  if (kind == "auto" && wants_egress()) {
    display_tee = gst_element_factory_make("tee", "displaytee");
    chain.push_back(display_tee);
    names.push_back("tee (autovideosink, encoder)");
  }
  if (kind == "auto" && !display_tee) {
    chain.push_back(gst_element_factory_make("queue", nullptr));
    auto_sink = gst_element_factory_make("autovideosink", "sink");
    chain.push_back(auto_sink);
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
      for (GstElement *e : chain)
        if (e) gst_object_unref(gst_object_ref_sink(e));
      elements.clear();
      return false;
    }
    names.push_back(opt.codec == "h264" ? "openh264enc" : "vp8enc");
    tee = gst_element_factory_make("tee", "webrtctee");
    if (tee) g_object_set(tee, "allow-not-linked", TRUE, nullptr);
    chain.push_back(tee);
    names.push_back(kind == "webrtc" ? "tee (one webrtcbin per viewer)" : kind == "auto" ? "tee (egress)" : "tee ! fakesink");
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
  if (display_tee) {
    GstElement *q = gst_element_factory_make("queue", nullptr);
    auto_sink = gst_element_factory_make("autovideosink", "sink");
    if (!q || !auto_sink) {
      *error = "a core GStreamer element is missing (queue, autovideosink)";
      return false;
    }
    gst_bin_add_many(GST_BIN(pipeline), q, auto_sink, nullptr);
    if (!gst_element_link_many(display_tee, q, auto_sink, nullptr)) {
      *error = "could not link the window branch";
      return false;
    }
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

bool App::Impl::build_from_description(std::string *error) {
  GError *err = nullptr;
  GstElement *e = gst_parse_launch(opt.pipeline.c_str(), &err);
  if (!e) {
    *error = std::string("--pipeline: ") + (err ? err->message : "unparsable description");
    g_clear_error(&err);
    return false;
  }
  if (err && err->domain == GST_PARSE_ERROR &&
      (err->code == GST_PARSE_ERROR_NO_SUCH_ELEMENT || err->code == GST_PARSE_ERROR_LINK ||
       err->code == GST_PARSE_ERROR_EMPTY_BIN)) {  // a pipeline with holes: a configuration error
    *error = std::string("--pipeline: ") + err->message;
    g_clear_error(&err);
    gst_object_unref(gst_object_ref_sink(e));
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
    if (fname == "autovideosink" && !auto_sink) auto_sink = el;
    g_value_reset(&item);
  }
  g_value_unset(&item);
  gst_iterator_free(it);
  if (elements.count("comfykeyframesrc")) configure_source(elements["comfykeyframesrc"], true);
  if (tee) g_object_set(tee, "allow-not-linked", TRUE, nullptr);
  description = opt.pipeline;
  return true;
}

// autovideosink picks its child at NULL->READY, trying the window sinks by rank; on a machine with
// none that works (no X/GL sink installed, no DISPLAY) it ends on a fake sink or none, and the user
// sees nothing. Called with the pipeline in READY.
bool App::Impl::check_video_sink(std::string *error) {
  if (!auto_sink) return true;
  std::string name;
  if (GstElement *child = auto_child(auto_sink)) {
    GstElementFactory *f = gst_element_get_factory(child);
    name = f ? GST_OBJECT_NAME(f) : G_OBJECT_TYPE_NAME(child);
    gst_object_unref(child);
  }
  const char *display = g_getenv("DISPLAY"), *wayland = g_getenv("WAYLAND_DISPLAY");
  const std::string where = std::string(" (DISPLAY=") + (display ? display : "unset") +
                            ", WAYLAND_DISPLAY=" + (wayland ? wayland : "unset") +
                            "; install gstreamer1.0-x or gstreamer1.0-gl, or use --sink webrtc/fake)";
  if (name.empty()) {
    *error = "--sink auto: autovideosink found no video sink that works here" + where;
    return false;
  }
  if (name.find("fake") != std::string::npos) {
    *error = "--sink auto: autovideosink fell back to " + name + ": no window sink works here" + where;
    return false;
  }
  video_sink = name;
  log("video sink: %s (picked by autovideosink)", name.c_str());
  return true;
}

// The first start. Configuration errors (a bad setting, a missing plugin, no usable video sink)
// are fatal; anything else is left to the supervisor, which restarts with backoff.
bool App::Impl::start_pipeline(std::string *error) {
  GstStateChangeReturn r = GST_STATE_CHANGE_SUCCESS;
  if (auto_sink) {
    r = gst_element_set_state(pipeline, GST_STATE_READY);
    if (r != GST_STATE_CHANGE_FAILURE && !check_video_sink(error)) return false;
  }
  if (r != GST_STATE_CHANGE_FAILURE) r = gst_element_set_state(pipeline, GST_STATE_PLAYING);
  if (r != GST_STATE_CHANGE_FAILURE) return true;
  // The bus holds the reason (the watch has not run yet: the loop starts after start()).
  std::string why;
  bool config = false;
  GstBus *b = gst_pipeline_get_bus(GST_PIPELINE(pipeline));
  while (GstMessage *m = gst_bus_pop_filtered(b, GST_MESSAGE_ERROR)) {
    GError *e = nullptr;
    gst_message_parse_error(m, &e, nullptr);
    if (e) {
      why += std::string(why.empty() ? "" : "; ") + GST_MESSAGE_SRC_NAME(m) + ": " + e->message;
      // The window sink failing to open is a configuration problem too (no display, no permission).
      const bool from_sink = auto_sink && (GST_MESSAGE_SRC(m) == GST_OBJECT(auto_sink) ||
                                           gst_object_has_as_ancestor(GST_MESSAGE_SRC(m), GST_OBJECT(auto_sink)));
      config = config || is_configuration_error(e) || from_sink;
      const std::string who = factory_of(GST_MESSAGE_SRC(m));
      health_error[who.empty() ? GST_MESSAGE_SRC_NAME(m) : who] = e->message;
    }
    g_clear_error(&e);
    gst_message_unref(m);
  }
  gst_object_unref(b);
  if (config) {
    *error = "the pipeline failed to start" + (why.empty() ? std::string() : ": " + why);
    return false;
  }
  last_error = why.empty() ? "the pipeline failed to start" : why;
  warn("the pipeline failed to start%s%s: retrying", why.empty() ? "" : ": ", why.c_str());
  schedule_restart();
  return true;
}

void App::Impl::set_paused(bool pause) {
  if (pause == paused) return;
  paused = pause;
  GstElement *src = element_of("comfykeyframesrc");
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

gboolean App::Impl::on_bus(GstBus *, GstMessage *m, gpointer user) {
  static_cast<Impl *>(user)->handle_message(m);
  return G_SOURCE_CONTINUE;
}

std::string App::Impl::factory_of(GstObject *obj) const {
  for (const auto &e : elements)
    if (GST_OBJECT(e.second) == obj || gst_object_has_as_ancestor(obj, GST_OBJECT(e.second))) return e.first;
  return "";
}

void App::Impl::handle_message(GstMessage *m) {
  switch (GST_MESSAGE_TYPE(m)) {
    case GST_MESSAGE_ELEMENT: {
      const GstStructure *s = gst_message_get_structure(m);
      if (!s || !g_str_has_prefix(gst_structure_get_name(s), DW_MSG_PREFIX)) break;
      std::string name = gst_structure_get_name(s);
      message_count[name]++;
      if (last_message.count(name)) gst_structure_free(last_message[name]);
      last_message[name] = gst_structure_copy(s);
      // A keyframe after a restart: the pipeline works again, the next failure starts the backoff anew.
      if (name == DW_MSG_KEYFRAME_NAME) restart_backoff.reset();
      // A backend's recovery clears the source's outage warning at once (not 30 s later).
      if (name == DW_MSG_BACKEND_NAME && g_strcmp0(gst_structure_get_string(s, DW_MSG_BACKEND_EVENT), "recovered") == 0)
        health_warning.erase("comfykeyframesrc");
      break;
    }
    case GST_MESSAGE_ERROR:
      on_error(m);
      break;
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
      if (shutting_down) {
        g_main_loop_quit(loop);
      } else if (restart_source) {
        // The EOS that follows an element error: the restart is already scheduled; keep serving.
        GST_INFO("EOS while a restart is pending: ignored");
      } else {
        log("end of stream");
        g_main_loop_quit(loop);
      }
      break;
    default:
      break;
  }
}

void App::Impl::on_error(GstMessage *m) {
  GError *err = nullptr;
  gchar *dbg = nullptr;
  gst_message_parse_error(m, &err, &dbg);
  std::string who = factory_of(GST_MESSAGE_SRC(m));
  warn("error from %s: %s (%s)", GST_MESSAGE_SRC_NAME(m), err ? err->message : "?", dbg ? dbg : "");
  health_error[who.empty() ? GST_MESSAGE_SRC_NAME(m) : who] = err ? err->message : "error";
  last_error = std::string(GST_MESSAGE_SRC_NAME(m)) + ": " + (err ? err->message : "error");
  g_clear_error(&err);
  g_free(dbg);
  if (shutting_down) g_main_loop_quit(loop);
  else schedule_restart();
}

// An error stopped the stream: drop the viewers (their pages reconnect) and restart the pipeline
// after a backoff (2 s, doubling to 30 s; reset by the next keyframe). The HTTP server stays up.
void App::Impl::schedule_restart() {
  if (restart_source || shutting_down) return;
  close_all_viewers(1011, "pipeline restarting after an error");
  restart_delay_ms = restart_backoff.next_ms();
  log("restarting the pipeline in %.1f s", restart_delay_ms / 1000.0);
  restart_source = attach_timeout(restart_delay_ms, [](gpointer d) -> gboolean {
    auto *self = static_cast<Impl *>(d);
    self->restart_source = 0;
    self->restart_now();
    return G_SOURCE_REMOVE;
  });
}

void App::Impl::restart_now() {
  if (shutting_down) return;
  restarts++;
  last_restart_us = g_get_monotonic_time();
  log("restarting the pipeline (restart %" G_GUINT64_FORMAT ")", restarts);
  if (egress) egress->detach();
  gst_element_set_state(pipeline, GST_STATE_NULL);
  health_error.clear();
  std::string why;
  if (egress && !attach_egress(&why)) warn("%s", why.c_str());
  if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    // Its error message follows on the bus; scheduling here covers an element that posts none.
    warn("the pipeline failed to start again");
    schedule_restart();
  }
}

}  // namespace dw::app

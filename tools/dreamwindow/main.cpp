// dreamwindow: watch a ComfyUI dream in a browser. With no --comfy-url it starts the built-in ComfyUI
// simulator, so `build/tools/dreamwindow/dreamwindow` shows a living stream on any machine.
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "app.h"

namespace {

std::string split_trim(const char *s) { return s ? std::string(s) : std::string(); }

}  // namespace

int main(int argc, char **argv) {
  dw::app::Options o;
  gchar *listen = nullptr, *token = nullptr, *sink = nullptr, *codec = nullptr, *pipeline = nullptr,
        *workflow = nullptr, *vae = nullptr, *prompt = nullptr, *negative = nullptr,
        *skip = nullptr, *interpolator = nullptr;
  gchar **comfy_urls = nullptr, **publish = nullptr, **srt = nullptr;
  gchar *hls = nullptr;
  gint port = o.port, max_viewers = static_cast<gint>(o.max_viewers), width = o.width, height = o.height,
       num_keyframes = o.num_keyframes, sim_latency = static_cast<gint>(o.sim_latency_ms),
       bitrate = static_cast<gint>(o.bitrate_kbps);
  gdouble denoise = o.denoise;
  gint64 seed = o.seed;
  gboolean quiet = FALSE;
  GOptionEntry entries[] = {
      {"listen", 0, 0, G_OPTION_ARG_STRING, &listen, "Address to bind (default 127.0.0.1; 0.0.0.0 for all)", "ADDR"},
      {"port", 'p', 0, G_OPTION_ARG_INT, &port, "HTTP port (default 8080; 0 = a free port)", "N"},
      {"token", 0, 0, G_OPTION_ARG_STRING, &token, "Require this token on /ws and /api/control", "T"},
      {"max-viewers", 0, 0, G_OPTION_ARG_INT, &max_viewers, "Browser viewers at once (default 4)", "N"},
      {"sink", 0, 0, G_OPTION_ARG_STRING, &sink,
       "webrtc (browser viewers, default), auto (autovideosink window) or fake (encode and discard)", "KIND"},
      {"codec", 0, 0, G_OPTION_ARG_STRING, &codec, "vp8 (default) or h264 (openh264enc)", "CODEC"},
      {"bitrate", 0, 0, G_OPTION_ARG_INT, &bitrate, "Encoder bitrate in kbit/s (default 2000)", "KBPS"},
      {"pipeline", 0, 0, G_OPTION_ARG_STRING, &pipeline,
       "A gst-launch description to run instead of the built-in pipeline; viewers attach to a tee named webrtctee "
       "carrying encoded video",
       "DESC"},
      {"comfy-url", 0, 0, G_OPTION_ARG_STRING_ARRAY, &comfy_urls,
       "A real ComfyUI (default: the built-in simulator); repeat for a pool of servers", "URL"},
      {"workflow", 0, 0, G_OPTION_ARG_FILENAME, &workflow, "API-format img2img workflow (default: built in)", "FILE"},
      {"vae", 0, 0, G_OPTION_ARG_FILENAME, &vae,
       "Directory with *encoder*/*decoder* VAE weights for vaeinterp (default: optical flow, no model)", "DIR"},
      {"interpolator", 0, 0, G_OPTION_ARG_STRING, &interpolator,
       "vaeinterp backend without --vae: flow (default; blend when built without OpenCV), blend, ...", "NAME"},
      {"prompt", 0, 0, G_OPTION_ARG_STRING, &prompt, "Initial prompt", "TEXT"},
      {"negative-prompt", 0, 0, G_OPTION_ARG_STRING, &negative, "Initial negative prompt", "TEXT"},
      {"denoise", 0, 0, G_OPTION_ARG_DOUBLE, &denoise, "img2img strength 0..1 (default: the element's)", "X"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Sampler seed (default: the element's)", "N"},
      {"width", 0, 0, G_OPTION_ARG_INT, &width, "Keyframe width (default 512)", "PX"},
      {"height", 0, 0, G_OPTION_ARG_INT, &height, "Keyframe height (default 512)", "PX"},
      {"num-keyframes", 0, 0, G_OPTION_ARG_INT, &num_keyframes, "Stop after this many keyframes (-1 = endless)", "N"},
      {"sim-latency-ms", 0, 0, G_OPTION_ARG_INT, &sim_latency, "Built-in simulator generation time (default 300)",
       "MS"},
      {"skip", 0, 0, G_OPTION_ARG_STRING, &skip, "Comma-separated optional elements not to use (cachetap,vaeinterp,"
       "flightbuffer)", "LIST"},
      {"publish", 0, 0, G_OPTION_ARG_STRING_ARRAY, &publish,
       "Also stream H.264 to this RTMP ingest (rtmp://host/app/key); repeatable", "URL"},
      {"hls", 0, 0, G_OPTION_ARG_FILENAME, &hls, "Also write an HLS stream (playlist.m3u8 + segments) here", "DIR"},
      {"srt", 0, 0, G_OPTION_ARG_STRING_ARRAY, &srt, "Also stream H.264 in MPEG-TS over SRT (srt://host:port); repeatable",
       "URI"},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "Print only errors", nullptr},
      {nullptr}};
  GOptionContext *ctx = g_option_context_new("- watch a ComfyUI dream in a browser");
  g_option_context_set_summary(ctx,
                               "Streams comfykeyframesrc ! cachetap ! vaeinterp ! flightbuffer to browsers over WebRTC "
                               "and serves /, /ws, /api/status, /api/control and /metrics.\nWith no --comfy-url the "
                               "built-in ComfyUI simulator is used.");
  g_option_context_add_main_entries(ctx, entries, nullptr);
  g_option_context_add_group(ctx, gst_init_get_option_group());
  GError *err = nullptr;
  if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
    std::fprintf(stderr, "dreamwindow: %s\nTry 'dreamwindow --help'.\n", err->message);
    g_clear_error(&err);
    g_option_context_free(ctx);
    return 2;
  }
  g_option_context_free(ctx);
  gst_init(&argc, &argv);

  // Run from the build tree without GST_PLUGIN_PATH: load the freshly built plugin.
#ifdef DW_PLUGIN_BUILD_DIR
  if (!g_getenv("GST_PLUGIN_PATH") && !g_getenv("GST_PLUGIN_PATH_1_0") &&
      g_file_test(DW_PLUGIN_BUILD_DIR, G_FILE_TEST_IS_DIR))
    gst_registry_scan_path(gst_registry_get(), DW_PLUGIN_BUILD_DIR);
#endif

  if (port < 0 || port > 65535 || max_viewers < 0 || width < 8 || height < 8 || sim_latency < 0 || bitrate < 1) {
    std::fprintf(stderr, "dreamwindow: an option is out of range\n");
    return 2;
  }
  o.port = static_cast<uint16_t>(port);
  o.max_viewers = static_cast<unsigned>(max_viewers);
  o.width = width;
  o.height = height;
  o.num_keyframes = num_keyframes;
  o.sim_latency_ms = static_cast<uint32_t>(sim_latency);
  o.bitrate_kbps = static_cast<unsigned>(bitrate);
  o.denoise = denoise;
  o.seed = seed;
  o.quiet = quiet;
  if (listen) o.listen = listen;
  o.token = split_trim(token);
  o.sink = split_trim(sink);
  if (codec) o.codec = codec;
  o.pipeline = split_trim(pipeline);
  for (gchar **u = comfy_urls; u && *u; ++u)
    if (**u) o.comfy_url += (o.comfy_url.empty() ? "" : ",") + std::string(*u);
  g_strfreev(comfy_urls);
  o.interpolator = split_trim(interpolator);
  for (gchar **u = publish; u && *u; ++u) o.egress.rtmp_urls.push_back(*u);
  for (gchar **u = srt; u && *u; ++u) o.egress.srt_uris.push_back(*u);
  o.egress.hls_dir = split_trim(hls);
  g_strfreev(publish);
  g_strfreev(srt);
  g_free(hls);
  if (!o.egress.rtmp_urls.empty() || !o.egress.hls_dir.empty() || !o.egress.srt_uris.empty()) {
    const std::string why = dw::app::validate_egress(o.egress);
    if (!why.empty()) {
      std::fprintf(stderr, "dreamwindow: %s\n", why.c_str());
      return 2;
    }
  }
  o.workflow = split_trim(workflow);
  o.vae_dir = split_trim(vae);
  o.prompt = split_trim(prompt);
  o.negative_prompt = split_trim(negative);
  if (skip) {
    gchar **parts = g_strsplit(skip, ",", -1);
    for (gchar **q = parts; *q; ++q)
      if (**q) o.skip.push_back(g_strstrip(*q));
    g_strfreev(parts);
  }
  if (!o.workflow.empty() && o.comfy_url.empty())
    std::fprintf(stderr, "dreamwindow: note: --workflow without --comfy-url runs it on the built-in simulator\n");
  o.handle_signals = true;
  for (gchar *s : {listen, token, sink, codec, pipeline, workflow, vae, prompt, negative, skip, interpolator}) g_free(s);

  int rc;
  {
    dw::app::App app(o);
    rc = app.run();
  }

  return rc;
}

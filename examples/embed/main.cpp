// embed: the smallest program that embeds the dreamwindow elements in its own pipeline and reads what
// they report: every dreamwindow-* bus message as it arrives, and each element's `stats` at the end.
//   embed [num-keyframes] [comfy-url]     (no URL: the in-process ComfyUI simulator)
#include <gst/gst.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "sim/simulator.h"

static bool have(const char *factory) {
  GstElementFactory *f = gst_element_factory_find(factory);
  if (f) gst_object_unref(f);
  return f != nullptr;
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
#ifdef DW_PLUGIN_BUILD_DIR
  if (!g_getenv("GST_PLUGIN_PATH") && !g_getenv("GST_PLUGIN_PATH_1_0"))
    gst_registry_scan_path(gst_registry_get(), DW_PLUGIN_BUILD_DIR);
#endif
  const int count = argc > 1 ? std::atoi(argv[1]) : 12;
  std::string url = argc > 2 ? argv[2] : "";
  std::unique_ptr<dw::sim::Simulator> sim;
  if (url.empty()) {
    dw::sim::Config cfg;
    cfg.latency_ms = 100;
    sim = std::make_unique<dw::sim::Simulator>(cfg);
    std::string err;
    if (!sim->start(&err)) {
      std::fprintf(stderr, "simulator: %s\n", err.c_str());
      return 1;
    }
    url = sim->url();
  }
  // Use whichever of the processing elements this build has.
  std::string desc = "comfykeyframesrc name=src server=" + url + " num-keyframes=" + std::to_string(count) +
                     " width=128 height=128";
  if (have("cachetap")) desc += " ! cachetap";
  if (have("vaeinterp")) desc += " ! vaeinterp backend=blend";
  if (have("flightbuffer")) desc += " ! flightbuffer prebuffer-time=500000000";
  desc += " ! videoconvert ! fakesink sync=true";
  std::printf("pipeline: %s\n", desc.c_str());
  GError *err = nullptr;
  GstElement *pipeline = gst_parse_launch(desc.c_str(), &err);
  if (!pipeline) {
    std::fprintf(stderr, "%s\n", err ? err->message : "parse error");
    return 1;
  }
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipeline);
  int rc = 0;
  for (bool done = false; !done;) {
    GstMessage *m = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND,
        static_cast<GstMessageType>(GST_MESSAGE_ELEMENT | GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    if (!m) {
      std::fprintf(stderr, "no message for 60 s\n");
      rc = 1;
      break;
    }
    switch (GST_MESSAGE_TYPE(m)) {
      case GST_MESSAGE_ELEMENT: {
        const GstStructure *s = gst_message_get_structure(m);
        if (s && g_str_has_prefix(gst_structure_get_name(s), "dreamwindow-")) {
          gchar *text = gst_structure_to_string(s);
          std::printf("[%s] %s\n", GST_MESSAGE_SRC_NAME(m), text);
          g_free(text);
        }
        break;
      }
      case GST_MESSAGE_ERROR: {
        GError *e = nullptr;
        gst_message_parse_error(m, &e, nullptr);
        std::fprintf(stderr, "error from %s: %s\n", GST_MESSAGE_SRC_NAME(m), e->message);
        g_clear_error(&e);
        rc = 1;
        done = true;
        break;
      }
      default:
        done = true;  // EOS
    }
    gst_message_unref(m);
  }
  // Each element's stats structure (application/x-<element>-stats).
  GstIterator *it = gst_bin_iterate_elements(GST_BIN(pipeline));
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next(it, &item) == GST_ITERATOR_OK) {
    GstElement *e = GST_ELEMENT(g_value_get_object(&item));
    if (g_object_class_find_property(G_OBJECT_GET_CLASS(e), "stats")) {
      GstStructure *s = nullptr;
      g_object_get(e, "stats", &s, nullptr);
      gchar *text = s ? gst_structure_to_string(s) : g_strdup("(none)");
      std::printf("stats %s: %s\n", GST_ELEMENT_NAME(e), text);
      g_free(text);
      if (s) gst_structure_free(s);
    }
    g_value_reset(&item);
  }
  g_value_unset(&item);
  gst_iterator_free(it);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(pipeline);
  return rc;
}

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include "config.h"
#include "gstdreamwindowelements.h"

static gboolean plugin_init(GstPlugin *plugin) {
  gboolean ret = FALSE;
  ret |= GST_ELEMENT_REGISTER(comfykeyframesrc, plugin);
  ret |= GST_ELEMENT_REGISTER(flightbuffer, plugin);
  ret |= GST_ELEMENT_REGISTER(cachetap, plugin);
  ret |= GST_ELEMENT_REGISTER(vaeinterp, plugin);
  return ret;
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, dreamwindow,
                  "Endless generative video from a ComfyUI server: keyframes, latent interpolation, "
                  "pacing and a keyframe cache",
                  plugin_init, VERSION, GST_LICENSE, GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)

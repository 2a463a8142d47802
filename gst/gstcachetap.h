/* cachetap: a pass-through tap between comfykeyframesrc and vaeinterp that keeps a cache of diverse
 * keyframes on disk, detects a collapsing img2img feedback loop and steers it out by sending a
 * dissimilar cached keyframe upstream (the dreamwindow-inject event). */
#pragma once

#include <gst/base/gstbasetransform.h>
#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_CACHE_TAP (gst_cache_tap_get_type())
G_DECLARE_FINAL_TYPE(GstCacheTap, gst_cache_tap, GST, CACHE_TAP, GstBaseTransform)

typedef enum {
  GST_CACHE_TAP_EVICTION_LRU = 0,
  GST_CACHE_TAP_EVICTION_REDUNDANCY = 1,
} GstCacheTapEviction;

typedef enum {
  GST_CACHE_TAP_ACCEPTANCE_AVERAGE = 0,
  GST_CACHE_TAP_ACCEPTANCE_MAX = 1,
} GstCacheTapAcceptance;

GType gst_cache_tap_eviction_get_type(void);
#define GST_TYPE_CACHE_TAP_EVICTION (gst_cache_tap_eviction_get_type())
GType gst_cache_tap_acceptance_get_type(void);
#define GST_TYPE_CACHE_TAP_ACCEPTANCE (gst_cache_tap_acceptance_get_type())

G_END_DECLS

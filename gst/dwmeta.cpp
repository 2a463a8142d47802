#include "dwmeta.h"

static gboolean dw_frame_meta_init(GstMeta *meta, gpointer, GstBuffer *) {
  auto *m = reinterpret_cast<DwFrameMeta *>(meta);
  m->kind = DW_FRAME_KIND_KEYFRAME;
  m->keyframe_index = 0;
  m->position = 0.0;
  m->prompt = nullptr;
  m->seed = -1;
  m->injected = FALSE;
  return TRUE;
}

static void dw_frame_meta_free(GstMeta *meta, GstBuffer *) {
  auto *m = reinterpret_cast<DwFrameMeta *>(meta);
  g_free(m->prompt);
  m->prompt = nullptr;
}

// The meta describes the frame's content, so it survives copies and conversions (videoconvert,
// videoscale) but not transformations that would invent new frames.
static gboolean dw_frame_meta_transform(GstBuffer *dest, GstMeta *meta, GstBuffer *, GQuark type,
                                        gpointer) {
  auto *src = reinterpret_cast<DwFrameMeta *>(meta);
  if (GST_META_TRANSFORM_IS_COPY(type) || type == g_quark_from_static_string("gst-video-scale")) {
    DwFrameMeta *d = dw_buffer_add_frame_meta(dest, src->kind, src->keyframe_index, src->position);
    if (!d) return FALSE;
    dw_frame_meta_set_prompt(d, src->prompt);
    d->seed = src->seed;
    d->injected = src->injected;
    return TRUE;
  }
  return FALSE;
}

GType dw_frame_meta_api_get_type(void) {
  static GType type = 0;
  static const gchar *tags[] = {nullptr};
  if (g_once_init_enter(&type)) {
    /* The plugin and a program linking these helpers (tests, apps) each carry a copy: the first
     * one registers the type, the others reuse it. */
    GType t = g_type_from_name("DwFrameMetaAPI");
    if (!t) t = gst_meta_api_type_register("DwFrameMetaAPI", tags);
    g_once_init_leave(&type, t);
  }
  return type;
}

const GstMetaInfo *dw_frame_meta_get_info(void) {
  static const GstMetaInfo *info = nullptr;
  if (g_once_init_enter(&info)) {
    const GstMetaInfo *mi = gst_meta_get_info("DwFrameMeta");
    if (!mi)
      mi = gst_meta_register(DW_FRAME_META_API_TYPE, "DwFrameMeta", sizeof(DwFrameMeta), dw_frame_meta_init,
                             dw_frame_meta_free, dw_frame_meta_transform);
    g_once_init_leave(&info, mi);
  }
  return info;
}

DwFrameMeta *dw_buffer_add_frame_meta(GstBuffer *buffer, DwFrameKind kind, guint64 keyframe_index,
                                      gdouble position) {
  g_return_val_if_fail(GST_IS_BUFFER(buffer), nullptr);
  auto *m = reinterpret_cast<DwFrameMeta *>(gst_buffer_add_meta(buffer, DW_FRAME_META_INFO, nullptr));
  if (m) {
    m->kind = kind;
    m->keyframe_index = keyframe_index;
    m->position = position;
  }
  return m;
}

DwFrameMeta *dw_buffer_add_keyframe_meta(GstBuffer *buffer, guint64 keyframe_index, const gchar *prompt,
                                         gint64 seed, gboolean injected) {
  DwFrameMeta *m = dw_buffer_add_frame_meta(buffer, injected ? DW_FRAME_KIND_INJECTED : DW_FRAME_KIND_KEYFRAME,
                                            keyframe_index, 0.0);
  if (m) {
    dw_frame_meta_set_prompt(m, prompt);
    m->seed = seed;
    m->injected = injected;
  }
  return m;
}

void dw_frame_meta_set_prompt(DwFrameMeta *meta, const gchar *prompt) {
  g_return_if_fail(meta != nullptr);
  if (meta->prompt == prompt) return;
  g_free(meta->prompt);
  meta->prompt = g_strdup(prompt);
}

DwFrameMeta *dw_buffer_get_frame_meta(GstBuffer *buffer) {
  return reinterpret_cast<DwFrameMeta *>(gst_buffer_get_meta(buffer, DW_FRAME_META_API_TYPE));
}

const gchar *dw_frame_kind_name(DwFrameKind kind) {
  switch (kind) {
    case DW_FRAME_KIND_KEYFRAME: return "keyframe";
    case DW_FRAME_KIND_INBETWEEN: return "inbetween";
    case DW_FRAME_KIND_INJECTED: return "injected";
  }
  return "unknown";
}

/* DwFrameMeta: what a frame is in the dreamwindow stream (keyframe, in-between or injected
 * keyframe), its keyframe index and its position between two keyframes, plus the facts of the
 * keyframe it was made from (prompt, seed, injected), so those travel WITH the frame and no element
 * reads another element's properties. Shared by every element.
 *
 * Copies (gst_buffer_copy, make_writable, videoconvert, videoscale) carry the meta along,
 * prompt string included (each copy owns its own). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

typedef enum {
  DW_FRAME_KIND_KEYFRAME = 0,
  DW_FRAME_KIND_INBETWEEN = 1,
  DW_FRAME_KIND_INJECTED = 2,
} DwFrameKind;

typedef struct {
  GstMeta meta;
  DwFrameKind kind;
  guint64 keyframe_index; /* index of the keyframe this frame starts from */
  gdouble position;       /* 0 at that keyframe, towards 1 at the next one */
  gchar *prompt;          /* the keyframe's prompt, owned by the meta; NULL = unknown */
  gint64 seed;            /* the keyframe's sampler seed; -1 = unknown */
  gboolean injected;      /* the keyframe (or the one this frame starts from) was injected from a cache */
} DwFrameMeta;

GType dw_frame_meta_api_get_type(void);
#define DW_FRAME_META_API_TYPE (dw_frame_meta_api_get_type())
const GstMetaInfo *dw_frame_meta_get_info(void);
#define DW_FRAME_META_INFO (dw_frame_meta_get_info())

DwFrameMeta *dw_buffer_add_frame_meta(GstBuffer *buffer, DwFrameKind kind, guint64 keyframe_index,
                                      gdouble position);
/* A keyframe's meta with its facts: kind KEYFRAME (INJECTED when `injected`), position 0, a copy of
 * `prompt` (may be NULL), `seed` (-1 unknown). comfykeyframesrc sets it on every keyframe. */
DwFrameMeta *dw_buffer_add_keyframe_meta(GstBuffer *buffer, guint64 keyframe_index, const gchar *prompt,
                                         gint64 seed, gboolean injected);
/* Replaces the meta's prompt with a copy of `prompt` (may be NULL). */
void dw_frame_meta_set_prompt(DwFrameMeta *meta, const gchar *prompt);
DwFrameMeta *dw_buffer_get_frame_meta(GstBuffer *buffer);
const gchar *dw_frame_kind_name(DwFrameKind kind);

G_END_DECLS

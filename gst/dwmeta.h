/* DwFrameMeta: what a frame is in the dreamwindow stream (keyframe, in-between or injected
 * keyframe), its keyframe index and its position between two keyframes. Shared by every element. */
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
} DwFrameMeta;

GType dw_frame_meta_api_get_type(void);
#define DW_FRAME_META_API_TYPE (dw_frame_meta_api_get_type())
const GstMetaInfo *dw_frame_meta_get_info(void);
#define DW_FRAME_META_INFO (dw_frame_meta_get_info())

DwFrameMeta *dw_buffer_add_frame_meta(GstBuffer *buffer, DwFrameKind kind, guint64 keyframe_index,
                                      gdouble position);
DwFrameMeta *dw_buffer_get_frame_meta(GstBuffer *buffer);
const gchar *dw_frame_kind_name(DwFrameKind kind);

G_END_DECLS

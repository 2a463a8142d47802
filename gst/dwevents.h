/* The upstream custom event "dreamwindow-inject": a downstream element (cachetap) asks the keyframe
 * source to use an image as the next job's input and to push it as the next keyframe.
 * Fields: image (GstBuffer), caps (GstCaps, raw video RGB/RGBA/RGBx), reason (string),
 * similarity (double). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define DW_EVENT_INJECT_NAME "dreamwindow-inject"

GstEvent *dw_event_new_inject(GstBuffer *image, GstCaps *caps, const gchar *reason, gdouble similarity);
gboolean dw_event_is_inject(GstEvent *event);
/* Out parameters may be NULL; returned refs/strings belong to the caller. */
gboolean dw_event_parse_inject(GstEvent *event, GstBuffer **image, GstCaps **caps, gchar **reason,
                               gdouble *similarity);

G_END_DECLS

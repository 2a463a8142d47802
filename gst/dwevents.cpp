#include "dwevents.h"

GstEvent *dw_event_new_inject(GstBuffer *image, GstCaps *caps, const gchar *reason, gdouble similarity) {
  g_return_val_if_fail(GST_IS_BUFFER(image), nullptr);
  g_return_val_if_fail(GST_IS_CAPS(caps), nullptr);
  GstStructure *s = gst_structure_new(DW_EVENT_INJECT_NAME, "image", GST_TYPE_BUFFER, image, "caps",
                                      GST_TYPE_CAPS, caps, "reason", G_TYPE_STRING, reason ? reason : "",
                                      "similarity", G_TYPE_DOUBLE, similarity, nullptr);
  return gst_event_new_custom(GST_EVENT_CUSTOM_UPSTREAM, s);
}

gboolean dw_event_is_inject(GstEvent *event) {
  if (!event || GST_EVENT_TYPE(event) != GST_EVENT_CUSTOM_UPSTREAM) return FALSE;
  const GstStructure *s = gst_event_get_structure(event);
  return s && gst_structure_has_name(s, DW_EVENT_INJECT_NAME);
}

gboolean dw_event_parse_inject(GstEvent *event, GstBuffer **image, GstCaps **caps, gchar **reason,
                               gdouble *similarity) {
  if (!dw_event_is_inject(event)) return FALSE;
  const GstStructure *s = gst_event_get_structure(event);
  const GValue *vimage = gst_structure_get_value(s, "image");
  const GValue *vcaps = gst_structure_get_value(s, "caps");
  if (!vimage || !GST_VALUE_HOLDS_BUFFER(vimage) || !vcaps || !GST_VALUE_HOLDS_CAPS(vcaps)) return FALSE;
  if (image) *image = GST_BUFFER(g_value_dup_boxed(vimage));
  if (caps) *caps = GST_CAPS(g_value_dup_boxed(vcaps));
  if (reason) {
    const gchar *r = gst_structure_get_string(s, "reason");
    *reason = g_strdup(r ? r : "");
  }
  if (similarity && !gst_structure_get_double(s, "similarity", similarity)) *similarity = 0.0;
  return TRUE;
}

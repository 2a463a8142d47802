/* flightbuffer: a time-measured queue with its own src pad task that pre-buffers, paces frames onto a
 * steady output grid against the pipeline clock and adapts the playback rate to hold its fill level. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_FLIGHT_BUFFER (gst_flight_buffer_get_type())
G_DECLARE_FINAL_TYPE(GstFlightBuffer, gst_flight_buffer, GST, FLIGHT_BUFFER, GstElement)

typedef enum {
  GST_FLIGHT_BUFFER_UNDERRUN_HOLD = 0,
  GST_FLIGHT_BUFFER_UNDERRUN_PAUSE = 1,
} GstFlightBufferUnderrunPolicy;

typedef enum {
  GST_FLIGHT_BUFFER_OVERRUN_BLOCK = 0,
  GST_FLIGHT_BUFFER_OVERRUN_DROP_INBETWEEN = 1,
} GstFlightBufferOverrunPolicy;

GType gst_flight_buffer_underrun_policy_get_type(void);
#define GST_TYPE_FLIGHT_BUFFER_UNDERRUN_POLICY (gst_flight_buffer_underrun_policy_get_type())
GType gst_flight_buffer_overrun_policy_get_type(void);
#define GST_TYPE_FLIGHT_BUFFER_OVERRUN_POLICY (gst_flight_buffer_overrun_policy_get_type())

G_END_DECLS

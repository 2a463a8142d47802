#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

GST_ELEMENT_REGISTER_DECLARE(comfykeyframesrc);
GST_ELEMENT_REGISTER_DECLARE(flightbuffer);
GST_ELEMENT_REGISTER_DECLARE(vaeinterp);

G_END_DECLS

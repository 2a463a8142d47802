/* The one bridge between GstBuffer video frames and dw::Image (lib/image), used by every element
 * and tool that hands pixels to the GStreamer-free core.
 *
 * Formats: every packed, single-plane, 8-bit-per-channel RGB-family format GStreamer knows
 * (RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR), with any row stride the buffer's
 * GstVideoMeta or the GstVideoInfo declares. Component positions come from GstVideoFormatInfo, so
 * there is no per-format switch to keep in step. */
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>

#include <string>

#include "image/image.h"

/* The caps format list for pads that go through this bridge. */
#define DW_FRAME_FORMATS "{ RGB, RGBA, RGBx, BGR, BGRA, BGRx, ARGB, ABGR, xRGB, xBGR }"

/* Which channels dw_image_from_buffer produces. */
enum class DwImageChannels {
  Rgb,    /* 3 channels; alpha (if any) dropped. What the codecs, cache and client take. */
  Rgba,   /* 4 channels; alpha copied, or 255 for formats without alpha. */
  Native, /* 4 for formats with alpha, 3 otherwise. */
};

/* True if the bridge can read and write frames of this format. */
bool dw_frame_format_supported(GstVideoFormat format);

/* Copies the frame in `buf` (described by `info`: format, size, default strides; a GstVideoMeta on
 * the buffer takes precedence for strides/offsets) into *out as tightly packed RGB (or RGBA, see
 * `channels`). On failure returns false and says why in *error (may be NULL): unsupported format,
 * buffer smaller than the info says, unmappable memory. */
bool dw_image_from_buffer(GstBuffer *buf, const GstVideoInfo *info, dw::Image *out, std::string *error,
                          DwImageChannels channels = DwImageChannels::Rgb);

/* A new buffer in `info`'s format and size holding `img` (3 or 4 channels). Alpha/padding bytes get
 * the image's alpha, or 255. Image and info sizes must match (callers resize explicitly with
 * dw::resize_bilinear: a silent resize would hide a negotiation bug). Returns NULL on mismatch or
 * unsupported format; the _full variant says why. No timestamps or metas are set. */
GstBuffer *dw_buffer_from_image(const dw::Image &img, const GstVideoInfo *info);
GstBuffer *dw_buffer_from_image_full(const dw::Image &img, const GstVideoInfo *info, std::string *error);

/* `info` set to packed RGB (3 channels) or RGBA (4) of the image's size, e.g. to make caps for an
 * image the element itself produced. Returns false for an empty image or other channel counts. */
bool dw_video_info_for_image(const dw::Image &img, GstVideoInfo *info);

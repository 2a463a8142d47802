#include "dwframe.h"

#include <cstring>

namespace {

/* Byte offsets of R, G, B and alpha (-1 = none) inside one pixel of a packed 8-bit format. */
struct Layout {
  int pixel_stride = 0;
  int offset[4] = {0, 0, 0, -1};
};

bool layout_of(GstVideoFormat format, Layout *layout) {
  const GstVideoFormatInfo *finfo = gst_video_format_get_info(format);
  if (!finfo || !GST_VIDEO_FORMAT_INFO_IS_RGB(finfo) || GST_VIDEO_FORMAT_INFO_N_PLANES(finfo) != 1 ||
      GST_VIDEO_FORMAT_INFO_FLAGS(finfo) & (GST_VIDEO_FORMAT_FLAG_PALETTE | GST_VIDEO_FORMAT_FLAG_TILED))
    return false;
  const int n = GST_VIDEO_FORMAT_INFO_N_COMPONENTS(finfo);
  if (n < 3) return false;
  for (int c = 0; c < n; ++c) {
    /* 8 bits per component, whole bytes: rules out RGB16, r210, 16-bit RGBA64 and friends. */
    if (GST_VIDEO_FORMAT_INFO_DEPTH(finfo, c) != 8 || GST_VIDEO_FORMAT_INFO_SHIFT(finfo, c) != 0) return false;
  }
  layout->pixel_stride = GST_VIDEO_FORMAT_INFO_PSTRIDE(finfo, 0);
  if (layout->pixel_stride != 3 && layout->pixel_stride != 4) return false;
  for (int c = 0; c < 3; ++c) layout->offset[c] = GST_VIDEO_FORMAT_INFO_POFFSET(finfo, c);
  layout->offset[3] = GST_VIDEO_FORMAT_INFO_HAS_ALPHA(finfo) ? GST_VIDEO_FORMAT_INFO_POFFSET(finfo, 3) : -1;
  return true;
}

void set_error(std::string *error, std::string why) {
  if (error) *error = std::move(why);
}

std::string format_name(GstVideoFormat format) {
  const char *name = gst_video_format_to_string(format);
  return name ? name : "unknown";
}

/* The padding byte of xRGB-style formats: the one offset the R/G/B components do not use. */
int padding_offset(const Layout &l) {
  if (l.pixel_stride != 4 || l.offset[3] >= 0) return -1;
  for (int o = 0; o < 4; ++o)
    if (o != l.offset[0] && o != l.offset[1] && o != l.offset[2]) return o;
  return -1;
}

}  // namespace

bool dw_frame_format_supported(GstVideoFormat format) {
  Layout l;
  return layout_of(format, &l);
}

bool dw_image_from_buffer(GstBuffer *buf, const GstVideoInfo *info, dw::Image *out, std::string *error,
                          DwImageChannels channels) {
  if (!buf || !info || !out) {
    set_error(error, "no buffer or video info");
    return false;
  }
  const GstVideoFormat format = GST_VIDEO_INFO_FORMAT(info);
  Layout l;
  if (!layout_of(format, &l)) {
    set_error(error, "unsupported video format " + format_name(format) + " (expected packed 8-bit RGB: " +
                         DW_FRAME_FORMATS + ")");
    return false;
  }
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, const_cast<GstVideoInfo *>(info), buf, GST_MAP_READ)) {
    set_error(error, "buffer of " + std::to_string(gst_buffer_get_size(buf)) + " bytes does not hold a " +
                         std::to_string(GST_VIDEO_INFO_WIDTH(info)) + "x" + std::to_string(GST_VIDEO_INFO_HEIGHT(info)) +
                         " " + format_name(format) + " frame");
    return false;
  }
  const int w = GST_VIDEO_FRAME_WIDTH(&frame), h = GST_VIDEO_FRAME_HEIGHT(&frame);
  const int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0);
  const auto *data = static_cast<const guint8 *>(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0));
  const bool has_alpha = l.offset[3] >= 0;
  const int oc = channels == DwImageChannels::Rgb ? 3 : channels == DwImageChannels::Rgba ? 4 : (has_alpha ? 4 : 3);
  dw::Image img(w, h, oc);
  const bool identity = l.pixel_stride == oc && l.offset[0] == 0 && l.offset[1] == 1 && l.offset[2] == 2 &&
                        (oc == 3 || l.offset[3] == 3);
  for (int y = 0; y < h; ++y) {
    const guint8 *s = data + static_cast<gsize>(stride) * y;
    guint8 *d = img.row(y);
    if (identity) {
      memcpy(d, s, img.stride());
      continue;
    }
    for (int x = 0; x < w; ++x, s += l.pixel_stride, d += oc) {
      d[0] = s[l.offset[0]];
      d[1] = s[l.offset[1]];
      d[2] = s[l.offset[2]];
      if (oc == 4) d[3] = has_alpha ? s[l.offset[3]] : 255;
    }
  }
  gst_video_frame_unmap(&frame);
  *out = std::move(img);
  return true;
}

GstBuffer *dw_buffer_from_image_full(const dw::Image &img, const GstVideoInfo *info, std::string *error) {
  if (!info || img.empty() || (img.channels != 3 && img.channels != 4) ||
      img.pixels.size() != static_cast<size_t>(img.width) * img.height * img.channels) {
    set_error(error, "empty or malformed image (need 3 or 4 tightly packed channels)");
    return nullptr;
  }
  const GstVideoFormat format = GST_VIDEO_INFO_FORMAT(info);
  Layout l;
  if (!layout_of(format, &l)) {
    set_error(error, "unsupported video format " + format_name(format));
    return nullptr;
  }
  if (img.width != GST_VIDEO_INFO_WIDTH(info) || img.height != GST_VIDEO_INFO_HEIGHT(info)) {
    set_error(error, "image is " + std::to_string(img.width) + "x" + std::to_string(img.height) + " but the frame is " +
                         std::to_string(GST_VIDEO_INFO_WIDTH(info)) + "x" + std::to_string(GST_VIDEO_INFO_HEIGHT(info)));
    return nullptr;
  }
  GstBuffer *buf = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(info), nullptr);
  GstVideoFrame frame;
  if (!buf || !gst_video_frame_map(&frame, const_cast<GstVideoInfo *>(info), buf, GST_MAP_WRITE)) {
    if (buf) gst_buffer_unref(buf);
    set_error(error, "could not allocate or map an output buffer");
    return nullptr;
  }
  const int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0);
  auto *data = static_cast<guint8 *>(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0));
  const int ic = img.channels;
  const int pad = padding_offset(l);
  const bool identity = l.pixel_stride == ic && l.offset[0] == 0 && l.offset[1] == 1 && l.offset[2] == 2 &&
                        (ic == 3 || l.offset[3] == 3);
  for (int y = 0; y < img.height; ++y) {
    const guint8 *s = img.row(y);
    guint8 *d = data + static_cast<gsize>(stride) * y;
    if (identity) {
      memcpy(d, s, img.stride());
      continue;
    }
    for (int x = 0; x < img.width; ++x, s += ic, d += l.pixel_stride) {
      d[l.offset[0]] = s[0];
      d[l.offset[1]] = s[1];
      d[l.offset[2]] = s[2];
      if (l.offset[3] >= 0) d[l.offset[3]] = ic == 4 ? s[3] : 255;
      if (pad >= 0) d[pad] = 255;
    }
  }
  gst_video_frame_unmap(&frame);
  return buf;
}

GstBuffer *dw_buffer_from_image(const dw::Image &img, const GstVideoInfo *info) {
  return dw_buffer_from_image_full(img, info, nullptr);
}

bool dw_video_info_for_image(const dw::Image &img, GstVideoInfo *info) {
  if (!info || img.empty() || (img.channels != 3 && img.channels != 4)) return false;
  gst_video_info_init(info);
  return gst_video_info_set_format(info, img.channels == 3 ? GST_VIDEO_FORMAT_RGB : GST_VIDEO_FORMAT_RGBA,
                                   static_cast<guint>(img.width), static_cast<guint>(img.height));
}

/* The shared GStreamer helpers: the GstBuffer <-> dw::Image bridge (dwframe.h) and DwFrameMeta's
 * keyframe facts (dwmeta.h). No elements involved. */
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <cstring>

#include "dwframe.h"
#include "dwmeta.h"

namespace {

/* A w x h RGBA test image whose every byte differs by position and channel. */
dw::Image pattern(int w, int h, int channels) {
  dw::Image img(w, h, channels);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c) img.row(y)[x * channels + c] = static_cast<uint8_t>(x * 7 + y * 31 + c * 60);
  return img;
}

GstVideoInfo info_of(GstVideoFormat f, int w, int h) {
  GstVideoInfo info;
  gst_video_info_set_format(&info, f, w, h);
  return info;
}

class Bridge : public ::testing::TestWithParam<GstVideoFormat> {};

/* Every supported format round-trips RGB exactly, and alpha where the format has it. */
TEST_P(Bridge, RoundTrip) {
  const GstVideoFormat f = GetParam();
  ASSERT_TRUE(dw_frame_format_supported(f));
  const int w = 13, h = 5;  // odd width: RGB rows get padded to 4 bytes
  GstVideoInfo info = info_of(f, w, h);
  const dw::Image src = pattern(w, h, 4);
  std::string err;
  GstBuffer *buf = dw_buffer_from_image_full(src, &info, &err);
  ASSERT_NE(buf, nullptr) << err;
  dw::Image rgb, native;
  ASSERT_TRUE(dw_image_from_buffer(buf, &info, &rgb, &err)) << err;
  ASSERT_TRUE(dw_image_from_buffer(buf, &info, &native, &err, DwImageChannels::Native)) << err;
  EXPECT_EQ(rgb.channels, 3);
  EXPECT_EQ(native.channels, GST_VIDEO_INFO_HAS_ALPHA(&info) ? 4 : 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) ASSERT_EQ(rgb.row(y)[3 * x + c], src.row(y)[4 * x + c]) << x << "," << y << " c" << c;
      if (native.channels == 4) {
        ASSERT_EQ(native.row(y)[4 * x + 3], src.row(y)[4 * x + 3]);
      }
    }
  gst_buffer_unref(buf);
}

INSTANTIATE_TEST_SUITE_P(Formats, Bridge,
                         ::testing::Values(GST_VIDEO_FORMAT_RGB, GST_VIDEO_FORMAT_BGR, GST_VIDEO_FORMAT_RGBx,
                                           GST_VIDEO_FORMAT_BGRx, GST_VIDEO_FORMAT_xRGB, GST_VIDEO_FORMAT_xBGR,
                                           GST_VIDEO_FORMAT_RGBA, GST_VIDEO_FORMAT_BGRA, GST_VIDEO_FORMAT_ARGB,
                                           GST_VIDEO_FORMAT_ABGR));

/* The byte order in memory is the format's, not the image's: BGRx puts blue first. */
TEST(BridgeLayout, BgrxBytesInMemory) {
  GstVideoInfo info = info_of(GST_VIDEO_FORMAT_BGRx, 1, 1);
  dw::Image img(1, 1, 3);
  img.pixels = {10, 20, 30};
  GstBuffer *buf = dw_buffer_from_image(img, &info);
  ASSERT_NE(buf, nullptr);
  GstMapInfo map;
  ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_READ));
  EXPECT_EQ(map.data[0], 30);
  EXPECT_EQ(map.data[1], 20);
  EXPECT_EQ(map.data[2], 10);
  EXPECT_EQ(map.data[3], 255);
  gst_buffer_unmap(buf, &map);
  gst_buffer_unref(buf);
}

/* A buffer with a GstVideoMeta declaring a wider stride (as a pool of padded frames would) is
 * read with that stride, not the info's default. */
TEST(BridgeLayout, HonoursVideoMetaStride) {
  const int w = 4, h = 3, stride = 32;
  GstVideoInfo info = info_of(GST_VIDEO_FORMAT_RGBx, w, h);
  GstBuffer *buf = gst_buffer_new_allocate(nullptr, static_cast<gsize>(stride) * h, nullptr);
  GstMapInfo map;
  ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
  memset(map.data, 0xEE, map.size);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) map.data[y * stride + 4 * x] = static_cast<guint8>(y * 10 + x);
  gst_buffer_unmap(buf, &map);
  gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
  gint strides[GST_VIDEO_MAX_PLANES] = {stride};
  gst_buffer_add_video_meta_full(buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_FORMAT_RGBx, w, h, 1, offsets, strides);
  dw::Image img;
  std::string err;
  ASSERT_TRUE(dw_image_from_buffer(buf, &info, &img, &err)) << err;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) EXPECT_EQ(img.row(y)[3 * x], y * 10 + x);
  gst_buffer_unref(buf);
}

TEST(BridgeErrors, NamesTheProblem) {
  std::string err;
  dw::Image img;
  GstVideoInfo i420 = info_of(GST_VIDEO_FORMAT_I420, 4, 4);
  GstBuffer *buf = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&i420), nullptr);
  EXPECT_FALSE(dw_image_from_buffer(buf, &i420, &img, &err));
  EXPECT_NE(err.find("I420"), std::string::npos) << err;
  gst_buffer_unref(buf);

  GstVideoInfo rgb = info_of(GST_VIDEO_FORMAT_RGB, 64, 64);
  GstBuffer *small = gst_buffer_new_allocate(nullptr, 10, nullptr);
  EXPECT_FALSE(dw_image_from_buffer(small, &rgb, &img, &err));
  EXPECT_NE(err.find("10 bytes"), std::string::npos) << err;
  gst_buffer_unref(small);

  EXPECT_EQ(dw_buffer_from_image_full(pattern(8, 8, 3), &rgb, &err), nullptr);
  EXPECT_NE(err.find("8x8"), std::string::npos) << err;
  EXPECT_EQ(dw_buffer_from_image(dw::Image(), &rgb), nullptr);
}

TEST(BridgeInfo, ForImage) {
  GstVideoInfo info;
  ASSERT_TRUE(dw_video_info_for_image(pattern(6, 2, 3), &info));
  EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_RGB);
  ASSERT_TRUE(dw_video_info_for_image(pattern(6, 2, 4), &info));
  EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_RGBA);
  EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&info), 6);
  EXPECT_FALSE(dw_video_info_for_image(dw::Image(), &info));
}

/* Keyframe facts: set, copied with the buffer (each copy owns its prompt), freed with it. */
TEST(FrameMeta, KeyframeFactsTravelWithCopies) {
  GstBuffer *buf = gst_buffer_new_allocate(nullptr, 16, nullptr);
  gchar *prompt = g_strdup("a lighthouse at dusk");
  DwFrameMeta *m = dw_buffer_add_keyframe_meta(buf, 42, prompt, 1234, TRUE);
  g_free(prompt);  // the meta owns its own copy
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->kind, DW_FRAME_KIND_INJECTED);
  EXPECT_EQ(m->keyframe_index, 42u);
  EXPECT_STREQ(m->prompt, "a lighthouse at dusk");

  GstBuffer *copy = gst_buffer_copy(buf);
  gst_buffer_unref(buf);  // the copy's prompt must outlive the original
  DwFrameMeta *c = dw_buffer_get_frame_meta(copy);
  ASSERT_NE(c, nullptr);
  EXPECT_STREQ(c->prompt, "a lighthouse at dusk");
  EXPECT_EQ(c->seed, 1234);
  EXPECT_TRUE(c->injected);
  EXPECT_EQ(c->keyframe_index, 42u);
  EXPECT_EQ(c->kind, DW_FRAME_KIND_INJECTED);

  dw_frame_meta_set_prompt(c, nullptr);
  EXPECT_EQ(c->prompt, nullptr);
  gst_buffer_unref(copy);
}

TEST(FrameMeta, DefaultsAreUnknown) {
  GstBuffer *buf = gst_buffer_new();
  DwFrameMeta *m = dw_buffer_add_frame_meta(buf, DW_FRAME_KIND_INBETWEEN, 3, 0.5);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->prompt, nullptr);
  EXPECT_EQ(m->seed, -1);
  EXPECT_FALSE(m->injected);
  GstBuffer *kbuf = gst_buffer_new();
  DwFrameMeta *k = dw_buffer_add_keyframe_meta(kbuf, 7, nullptr, -1, FALSE);
  EXPECT_EQ(k->kind, DW_FRAME_KIND_KEYFRAME);
  gst_buffer_unref(kbuf);
  gst_buffer_unref(buf);
}

}  // namespace

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

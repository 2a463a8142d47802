// Tests for lib/image: PNG round trips, real photos, corrupt input, resize, channel conversion.
#include <gtest/gtest.h>
#include <png.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "image/image.h"

namespace {

std::string shared_dir() {
  const char *d = std::getenv("DW_SHARED_DIR");
  return d ? d : "../shared";
}

std::vector<uint8_t> read_file(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

dw::Image make_pattern(int w, int h, int c) {
  dw::Image img(w, h, c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) img.row(y)[x * c + k] = static_cast<uint8_t>((x * 7 + y * 13 + k * 50) & 0xff);
  return img;
}

}  // namespace

TEST(Image, IsPng) {
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  EXPECT_TRUE(dw::is_png(sig, 8));
  EXPECT_FALSE(dw::is_png(sig, 7));
  const uint8_t bad[8] = {'G', 'I', 'F', '8', '9', 'a', 0, 0};
  EXPECT_FALSE(dw::is_png(bad, 8));
  EXPECT_FALSE(dw::is_png(nullptr, 0));
}

TEST(Image, RoundTripRGB) {
  dw::Image src = make_pattern(37, 23, 3);
  for (int level : {0, 1, 6, 9}) {
    auto png = dw::encode_png(src, level);
    ASSERT_FALSE(png.empty());
    EXPECT_TRUE(dw::is_png(png.data(), png.size()));
    dw::Image out;
    std::string err;
    ASSERT_TRUE(dw::decode_png(png.data(), png.size(), out, &err)) << err;
    EXPECT_EQ(out.width, 37);
    EXPECT_EQ(out.height, 23);
    EXPECT_EQ(out.channels, 3);
    EXPECT_EQ(out.pixels, src.pixels);
  }
}

TEST(Image, RoundTripRGBA) {
  dw::Image src = make_pattern(16, 9, 4);
  auto png = dw::encode_png(src);
  ASSERT_FALSE(png.empty());
  dw::Image out;
  std::string err;
  ASSERT_TRUE(dw::decode_png(png.data(), png.size(), out, &err)) << err;
  EXPECT_EQ(out.channels, 4);
  EXPECT_EQ(out.width, 16);
  EXPECT_EQ(out.height, 9);
  EXPECT_EQ(out.pixels, src.pixels);
}

TEST(Image, EncodeRejectsInvalid) {
  EXPECT_TRUE(dw::encode_png(dw::Image()).empty());
  dw::Image two(4, 4, 2);
  EXPECT_TRUE(dw::encode_png(two).empty());
}

TEST(Image, DecodeAstronaut) {
  auto bytes = read_file(shared_dir() + "/images/astronaut.png");
  ASSERT_FALSE(bytes.empty());
  dw::Image img;
  std::string err;
  ASSERT_TRUE(dw::decode_png(bytes.data(), bytes.size(), img, &err)) << err;
  EXPECT_EQ(img.width, 512);
  EXPECT_EQ(img.height, 512);
  EXPECT_TRUE(img.channels == 3 || img.channels == 4);
  EXPECT_EQ(img.pixels.size(), img.stride() * 512);
  // A real photo is not flat.
  long sum = 0;
  for (size_t i = 0; i < img.pixels.size(); i += 97) sum += img.pixels[i];
  EXPECT_GT(sum, 0);
}

TEST(Image, DecodeChelsea) {
  auto bytes = read_file(shared_dir() + "/images/chelsea.png");
  ASSERT_FALSE(bytes.empty());
  dw::Image img;
  std::string err;
  ASSERT_TRUE(dw::decode_png(bytes.data(), bytes.size(), img, &err)) << err;
  EXPECT_EQ(img.width, 451);
  EXPECT_EQ(img.height, 300);
  EXPECT_TRUE(img.channels == 3 || img.channels == 4);
}

TEST(Image, TruncatedFails) {
  auto bytes = read_file(shared_dir() + "/images/astronaut.png");
  ASSERT_GT(bytes.size(), 1000u);
  for (size_t cut : {size_t(8), size_t(20), size_t(33), size_t(100), bytes.size() / 2, bytes.size() - 13}) {
    dw::Image img;
    std::string err;
    EXPECT_FALSE(dw::decode_png(bytes.data(), cut, img, &err)) << cut;
    EXPECT_FALSE(err.empty());
  }
}

TEST(Image, GarbageFails) {
  std::vector<uint8_t> garbage(1000);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(i * 31 + 7);
  dw::Image img;
  std::string err;
  EXPECT_FALSE(dw::decode_png(garbage.data(), garbage.size(), img, &err));
  EXPECT_FALSE(err.empty());
  // Valid signature followed by garbage.
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  std::copy(sig, sig + 8, garbage.begin());
  err.clear();
  EXPECT_FALSE(dw::decode_png(garbage.data(), garbage.size(), img, &err));
  EXPECT_FALSE(err.empty());
  err.clear();
  EXPECT_FALSE(dw::decode_png(nullptr, 0, img, &err));
  EXPECT_FALSE(err.empty());
  // Corrupted body of a real PNG (IDAT damage).
  auto bytes = dw::encode_png(make_pattern(64, 64, 3));
  for (size_t i = 60; i < bytes.size() - 20; i += 3) bytes[i] ^= 0x5a;
  err.clear();
  EXPECT_FALSE(dw::decode_png(bytes.data(), bytes.size(), img, &err));
  EXPECT_FALSE(err.empty());
}

TEST(Image, RejectsHugeDimensions) {
  // Make a valid tiny PNG, then patch the IHDR width to 20000 (CRC will be wrong too; either way it
  // must fail cleanly).
  auto bytes = dw::encode_png(make_pattern(4, 4, 3));
  bytes[16] = 0;
  bytes[17] = 0;
  bytes[18] = 0x4e;
  bytes[19] = 0x20;  // 20000
  dw::Image img;
  std::string err;
  EXPECT_FALSE(dw::decode_png(bytes.data(), bytes.size(), img, &err));
  EXPECT_FALSE(err.empty());
}

TEST(Image, Resize) {
  dw::Image flat(10, 10, 3);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 77);
  dw::Image up = dw::resize_bilinear(flat, 33, 17);
  EXPECT_EQ(up.width, 33);
  EXPECT_EQ(up.height, 17);
  EXPECT_EQ(up.channels, 3);
  for (uint8_t v : up.pixels) ASSERT_EQ(v, 77);
  dw::Image src = make_pattern(40, 30, 4);
  dw::Image down = dw::resize_bilinear(src, 20, 15);
  EXPECT_EQ(down.width, 20);
  EXPECT_EQ(down.height, 15);
  EXPECT_EQ(down.channels, 4);
  EXPECT_EQ(down.pixels.size(), 20u * 15 * 4);
  dw::Image same = dw::resize_bilinear(src, 40, 30);
  EXPECT_EQ(same.pixels, src.pixels);
  EXPECT_TRUE(dw::resize_bilinear(src, 0, 5).empty());
}

TEST(Image, ConvertChannels) {
  dw::Image rgb = make_pattern(5, 4, 3);
  dw::Image rgba = dw::convert_channels(rgb, 4);
  ASSERT_EQ(rgba.channels, 4);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(rgba.pixels[i * 4 + 0], rgb.pixels[i * 3 + 0]);
    EXPECT_EQ(rgba.pixels[i * 4 + 1], rgb.pixels[i * 3 + 1]);
    EXPECT_EQ(rgba.pixels[i * 4 + 2], rgb.pixels[i * 3 + 2]);
    EXPECT_EQ(rgba.pixels[i * 4 + 3], 255);
  }
  dw::Image back = dw::convert_channels(rgba, 3);
  EXPECT_EQ(back.channels, 3);
  EXPECT_EQ(back.pixels, rgb.pixels);
  EXPECT_EQ(dw::convert_channels(rgb, 3).pixels, rgb.pixels);
}

namespace {

// Writes a PNG of any format with libpng's simplified API (to cover colour types our encoder never makes).
std::vector<uint8_t> write_simplified(int w, int h, png_uint_32 format, const void *pixels, const void *colormap = nullptr,
                                      int colormap_entries = 0) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(w);
  image.height = static_cast<png_uint_32>(h);
  image.format = format;
  image.colormap_entries = static_cast<png_uint_32>(colormap_entries);
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels, 0, colormap)) return {};
  std::vector<uint8_t> out(size);
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels, 0, colormap)) return {};
  out.resize(size);
  return out;
}

}  // namespace

TEST(Image, DecodeGrayAndGrayAlpha) {
  std::vector<uint8_t> gray(8 * 4);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 8);
  auto png = write_simplified(8, 4, PNG_FORMAT_GRAY, gray.data());
  ASSERT_FALSE(png.empty());
  dw::Image img;
  std::string err;
  ASSERT_TRUE(dw::decode_png(png.data(), png.size(), img, &err)) << err;
  EXPECT_EQ(img.channels, 3);
  for (size_t i = 0; i < gray.size(); ++i) {
    EXPECT_EQ(img.pixels[i * 3 + 0], gray[i]);
    EXPECT_EQ(img.pixels[i * 3 + 1], gray[i]);
    EXPECT_EQ(img.pixels[i * 3 + 2], gray[i]);
  }
  std::vector<uint8_t> ga(8 * 4 * 2, 200);
  png = write_simplified(8, 4, PNG_FORMAT_GA, ga.data());
  ASSERT_TRUE(dw::decode_png(png.data(), png.size(), img, &err)) << err;
  EXPECT_EQ(img.channels, 4);
  EXPECT_EQ(img.width, 8);
}

TEST(Image, DecodeSixteenBitAndPalette) {
  std::vector<uint16_t> rgb16(6 * 5 * 3, 40000);
  auto png = write_simplified(6, 5, PNG_FORMAT_RGB | PNG_FORMAT_FLAG_LINEAR, rgb16.data());
  ASSERT_FALSE(png.empty());
  dw::Image img;
  std::string err;
  ASSERT_TRUE(dw::decode_png(png.data(), png.size(), img, &err)) << err;
  EXPECT_EQ(img.channels, 3);
  EXPECT_EQ(img.width, 6);
  EXPECT_EQ(img.height, 5);

  const uint8_t cmap[4 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  std::vector<uint8_t> idx(7 * 3);
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<uint8_t>(i % 4);
  png = write_simplified(7, 3, PNG_FORMAT_RGB_COLORMAP, idx.data(), cmap, 4);
  ASSERT_FALSE(png.empty());
  ASSERT_TRUE(dw::decode_png(png.data(), png.size(), img, &err)) << err;
  EXPECT_EQ(img.channels, 3);
  for (size_t i = 0; i < idx.size(); ++i)
    for (int k = 0; k < 3; ++k) EXPECT_EQ(img.pixels[i * 3 + k], cmap[idx[i] * 3 + k]);
}

TEST(Image, NeverCrashesOnDamagedInput) {
  auto good = dw::encode_png(make_pattern(24, 24, 4), 6);
  dw::Image img;
  std::string err;
  for (size_t cut = 0; cut < good.size(); ++cut) {
    err.clear();
    EXPECT_FALSE(dw::decode_png(good.data(), cut, img, &err)) << cut;
    EXPECT_FALSE(err.empty()) << cut;
  }
  uint32_t state = 12345;
  for (int round = 0; round < 300; ++round) {
    auto bad = good;
    for (int k = 0; k < 4; ++k) {
      state = state * 1664525u + 1013904223u;
      bad[8 + (state >> 8) % (bad.size() - 8)] ^= static_cast<uint8_t>(1 + (state & 0x7f));
    }
    err.clear();
    if (!dw::decode_png(bad.data(), bad.size(), img, &err)) {
      EXPECT_FALSE(err.empty());
    }
  }
}

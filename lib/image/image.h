// 8-bit RGB/RGBA images in memory, PNG in and out (libpng), resizing.
// GStreamer-free: used by the ComfyUI client, the simulator and the elements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dw {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;  // 3 (RGB) or 4 (RGBA), tightly packed rows
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int w, int h, int c) : width(w), height(h), channels(c), pixels(static_cast<size_t>(w) * h * c) {}
  bool empty() const { return width <= 0 || height <= 0 || pixels.empty(); }
  size_t stride() const { return static_cast<size_t>(width) * channels; }
  uint8_t *row(int y) { return pixels.data() + stride() * y; }
  const uint8_t *row(int y) const { return pixels.data() + stride() * y; }
};

// True if the bytes start with the PNG signature.
bool is_png(const uint8_t *data, size_t size);

// Decodes a PNG of any bit depth / colour type into 8-bit RGB (no alpha in the file) or RGBA.
// On failure returns false and says why in *error (truncated, not a PNG, too large...).
bool decode_png(const uint8_t *data, size_t size, Image &out, std::string *error);

// Encodes RGB or RGBA as PNG. compression_level 0..9 (1 = fast, as ComfyUI's websocket saver).
std::vector<uint8_t> encode_png(const Image &image, int compression_level = 1);

// Bilinear resize (area-averaging when shrinking by more than 2x is not needed for our use).
Image resize_bilinear(const Image &src, int width, int height);

// RGB <-> RGBA (alpha = 255 when added, dropped when removed).
Image convert_channels(const Image &src, int channels);

}  // namespace dw

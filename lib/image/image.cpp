// PNG decode/encode with libpng, bilinear resize, channel conversion.
#include "image/image.h"

#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstring>

namespace dw {

namespace {

constexpr uint32_t kMaxDimension = 16384;
constexpr uint64_t kMaxPixels = 256ull * 1024 * 1024;

struct ReadState {
  const uint8_t *data;
  size_t size;
  size_t pos;
  std::string error;
};

void read_fn(png_structp png, png_bytep out, png_size_t length) {
  auto *st = static_cast<ReadState *>(png_get_io_ptr(png));
  if (length > st->size - st->pos) {
    st->error = "truncated PNG data";
    png_error(png, "truncated PNG data");
  }
  std::memcpy(out, st->data + st->pos, length);
  st->pos += length;
}

void error_fn(png_structp png, png_const_charp msg) {
  auto *st = static_cast<ReadState *>(png_get_error_ptr(png));
  if (st && st->error.empty()) st->error = msg ? msg : "libpng error";
  png_longjmp(png, 1);
}

void warning_fn(png_structp, png_const_charp) {}

struct WriteState {
  std::vector<uint8_t> *out;
  std::string error;
};

void write_fn(png_structp png, png_bytep data, png_size_t length) {
  auto *st = static_cast<WriteState *>(png_get_io_ptr(png));
  st->out->insert(st->out->end(), data, data + length);
}

void flush_fn(png_structp) {}

void write_error_fn(png_structp png, png_const_charp msg) {
  auto *st = static_cast<WriteState *>(png_get_error_ptr(png));
  if (st && st->error.empty()) st->error = msg ? msg : "libpng error";
  png_longjmp(png, 1);
}

// Everything touched after setjmp lives here (no automatic locals modified between setjmp/longjmp).
struct DecodeCtx {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<png_bytep> rows;
};

bool decode_impl(DecodeCtx &ctx, ReadState &st, Image &out) {
  if (setjmp(png_jmpbuf(ctx.png))) return false;

  png_set_read_fn(ctx.png, &st, read_fn);
  png_set_user_limits(ctx.png, kMaxDimension, kMaxDimension);
  png_read_info(ctx.png, ctx.info);

  png_uint_32 w = 0, h = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(ctx.png, ctx.info, &w, &h, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  if (w == 0 || h == 0 || w > kMaxDimension || h > kMaxDimension ||
      static_cast<uint64_t>(w) * h > kMaxPixels) {
    st.error = "image too large: " + std::to_string(w) + "x" + std::to_string(h);
    return false;
  }

  if (bit_depth == 16) png_set_strip_16(ctx.png);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(ctx.png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(ctx.png);
  bool has_trns = png_get_valid(ctx.png, ctx.info, PNG_INFO_tRNS) != 0;
  if (has_trns) png_set_tRNS_to_alpha(ctx.png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb(ctx.png);
  if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(ctx.png);
  png_read_update_info(ctx.png, ctx.info);

  int channels = png_get_channels(ctx.png, ctx.info);
  size_t rowbytes = png_get_rowbytes(ctx.png, ctx.info);
  if ((channels != 3 && channels != 4) || rowbytes != static_cast<size_t>(w) * channels) {
    st.error = "unsupported PNG layout";
    return false;
  }
  out = Image(static_cast<int>(w), static_cast<int>(h), channels);
  ctx.rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) ctx.rows[y] = out.row(static_cast<int>(y));
  png_read_image(ctx.png, ctx.rows.data());
  png_read_end(ctx.png, nullptr);
  return true;
}

struct EncodeCtx {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::vector<png_bytep> rows;
};

bool encode_impl(EncodeCtx &ctx, WriteState &st, const Image &image, int level) {
  if (setjmp(png_jmpbuf(ctx.png))) return false;
  png_set_write_fn(ctx.png, &st, write_fn, flush_fn);
  png_set_compression_level(ctx.png, level);
  if (level <= 1) png_set_filter(ctx.png, 0, PNG_FILTER_SUB);
  png_set_IHDR(ctx.png, ctx.info, static_cast<png_uint_32>(image.width),
               static_cast<png_uint_32>(image.height), 8,
               image.channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(ctx.png, ctx.info);
  ctx.rows.resize(static_cast<size_t>(image.height));
  for (int y = 0; y < image.height; ++y) ctx.rows[static_cast<size_t>(y)] = const_cast<uint8_t *>(image.row(y));
  png_write_image(ctx.png, ctx.rows.data());
  png_write_end(ctx.png, nullptr);
  return true;
}

}  // namespace

bool is_png(const uint8_t *data, size_t size) {
  return data && size >= 8 && png_sig_cmp(data, 0, 8) == 0;
}

bool decode_png(const uint8_t *data, size_t size, Image &out, std::string *error) {
  auto fail = [&](const std::string &msg) {
    if (error) *error = msg;
    return false;
  };
  if (!data || size == 0) return fail("empty input");
  if (!is_png(data, size)) return fail("not a PNG file (bad signature)");

  ReadState st{data, size, 0, {}};
  DecodeCtx ctx;
  ctx.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, error_fn, warning_fn);
  if (!ctx.png) return fail("png_create_read_struct failed");
  ctx.info = png_create_info_struct(ctx.png);
  if (!ctx.info) {
    png_destroy_read_struct(&ctx.png, nullptr, nullptr);
    return fail("png_create_info_struct failed");
  }
  Image img;
  bool ok = decode_impl(ctx, st, img);
  png_destroy_read_struct(&ctx.png, &ctx.info, nullptr);
  if (!ok) return fail(st.error.empty() ? "PNG decode failed" : "PNG decode failed: " + st.error);
  out = std::move(img);
  return true;
}

std::vector<uint8_t> encode_png(const Image &image, int compression_level) {
  std::vector<uint8_t> out;
  if (image.empty() || (image.channels != 3 && image.channels != 4) ||
      image.pixels.size() < image.stride() * static_cast<size_t>(image.height))
    return out;
  WriteState st{&out, {}};
  EncodeCtx ctx;
  ctx.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, write_error_fn, warning_fn);
  if (!ctx.png) return {};
  ctx.info = png_create_info_struct(ctx.png);
  if (!ctx.info) {
    png_destroy_write_struct(&ctx.png, nullptr);
    return {};
  }
  bool ok = encode_impl(ctx, st, image, std::clamp(compression_level, 0, 9));
  png_destroy_write_struct(&ctx.png, &ctx.info);
  if (!ok) out.clear();
  return out;
}

Image resize_bilinear(const Image &src, int width, int height) {
  if (src.empty() || width <= 0 || height <= 0) return {};
  const int c = src.channels;
  if (width == src.width && height == src.height) return src;
  Image dst(width, height, c);
  const float sx = static_cast<float>(src.width) / width;
  const float sy = static_cast<float>(src.height) / height;
  std::vector<int> x0(static_cast<size_t>(width)), x1(static_cast<size_t>(width));
  std::vector<float> fx(static_cast<size_t>(width));
  for (int x = 0; x < width; ++x) {
    float f = (x + 0.5f) * sx - 0.5f;
    f = std::max(0.0f, f);
    int i = std::min(static_cast<int>(f), src.width - 1);
    x0[static_cast<size_t>(x)] = i;
    x1[static_cast<size_t>(x)] = std::min(i + 1, src.width - 1);
    fx[static_cast<size_t>(x)] = f - i;
  }
  for (int y = 0; y < height; ++y) {
    float f = (y + 0.5f) * sy - 0.5f;
    f = std::max(0.0f, f);
    int y0 = std::min(static_cast<int>(f), src.height - 1);
    int y1 = std::min(y0 + 1, src.height - 1);
    float wy = f - y0;
    const uint8_t *r0 = src.row(y0);
    const uint8_t *r1 = src.row(y1);
    uint8_t *d = dst.row(y);
    for (int x = 0; x < width; ++x) {
      const size_t a = static_cast<size_t>(x0[static_cast<size_t>(x)]) * c;
      const size_t b = static_cast<size_t>(x1[static_cast<size_t>(x)]) * c;
      const float wx = fx[static_cast<size_t>(x)];
      for (int k = 0; k < c; ++k) {
        float top = r0[a + k] + (r0[b + k] - r0[a + k]) * wx;
        float bot = r1[a + k] + (r1[b + k] - r1[a + k]) * wx;
        float v = top + (bot - top) * wy;
        d[static_cast<size_t>(x) * c + k] = static_cast<uint8_t>(std::clamp(v + 0.5f, 0.0f, 255.0f));
      }
    }
  }
  return dst;
}

Image convert_channels(const Image &src, int channels) {
  if (src.empty() || (channels != 3 && channels != 4)) return {};
  if (src.channels == channels) return src;
  Image dst(src.width, src.height, channels);
  const size_t n = static_cast<size_t>(src.width) * src.height;
  const uint8_t *s = src.pixels.data();
  uint8_t *d = dst.pixels.data();
  for (size_t i = 0; i < n; ++i) {
    d[0] = s[0];
    d[1] = s[1];
    d[2] = s[2];
    if (channels == 4) d[3] = 255;
    s += src.channels;
    d += channels;
  }
  return dst;
}

}  // namespace dw

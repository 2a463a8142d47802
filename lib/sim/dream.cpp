// Cheap deterministic stand-ins for diffusion and postprocessing nodes.
#include "sim/dream.h"

#include <algorithm>
#include <cmath>

namespace dw::sim {

namespace {

uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double unit(uint64_t &state) { return static_cast<double>(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0); }

inline uint64_t hash3(uint64_t seed, uint32_t x, uint32_t y) {
  uint64_t h = seed ^ (static_cast<uint64_t>(x) * 0x9e3779b97f4a7c15ull) ^ (static_cast<uint64_t>(y) * 0xc2b2ae3d27d4eb4full);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

inline uint8_t clamp_u8(float v) { return static_cast<uint8_t>(std::clamp(v + 0.5f, 0.0f, 255.0f)); }

}  // namespace

Image dream_transform(const Image &in, uint64_t seed, double denoise) {
  if (in.empty()) return in;
  const double d = std::clamp(denoise, 0.0, 1.0);
  uint64_t st = seed ^ 0x5eed5eed12345678ull;
  const double zoom = 1.0 + d * (0.01 + 0.02 * unit(st));
  const double angle = d * (unit(st) * 2.0 - 1.0) * 0.035;  // up to ~2 degrees
  const double hue = d * (0.04 + 0.08 * unit(st)) * (unit(st) < 0.5 ? -1.0 : 1.0);
  const double shift_x = d * (unit(st) - 0.5) * 2.0;
  const double shift_y = d * (unit(st) - 0.5) * 2.0;
  const float amp = static_cast<float>(d * 3.0);
  const uint64_t noise_seed = splitmix64(st);
  // A seeded colour field of interfering waves, mixed in more strongly with denoise: fed back
  // through the zoom and rotation it grows into evolving swirls, the way img2img invents detail.
  const float mix = static_cast<float>(0.12 * d + 0.5 * d * d * d * d);
  const double two_pi = 6.283185307179586;
  // The field keeps its shape for 8 consecutive seeds (a "scene") and only its phase moves, so the
  // loop is pulled towards one coherent pattern at a time instead of averaging noise.
  uint64_t scene = (seed >> 3) ^ 0x0dd5ca1eull;
  const double drift = static_cast<double>(seed & 7) / 8.0;
  double wave[3][3];  // per wave: frequency x, frequency y, phase
  for (auto &wv : wave) {
    const double freq = two_pi * (1.5 + 4.0 * unit(scene)) / std::max(in.width, in.height);
    const double dir = two_pi * unit(scene);
    wv[0] = freq * std::cos(dir);
    wv[1] = freq * std::sin(dir);
    wv[2] = two_pi * (unit(scene) + drift);
  }
  const double palette_phase[3] = {two_pi * unit(scene), two_pi * unit(scene), two_pi * unit(scene)};

  // Hue rotation about the grey axis (Rodrigues).
  const double c = std::cos(hue), s = std::sin(hue), k = (1.0 - c) / 3.0, q = std::sqrt(1.0 / 3.0) * s;
  const float m[9] = {static_cast<float>(c + k), static_cast<float>(k - q), static_cast<float>(k + q),
                      static_cast<float>(k + q), static_cast<float>(c + k), static_cast<float>(k - q),
                      static_cast<float>(k - q), static_cast<float>(k + q), static_cast<float>(c + k)};

  const int w = in.width, h = in.height, ch = in.channels;
  Image out(w, h, ch);
  const double cx = (w - 1) * 0.5, cy = (h - 1) * 0.5;
  // Inverse mapping: source = centre + R(-angle) * (p - centre) / zoom + shift.
  const double ca = std::cos(-angle) / zoom, sa = std::sin(-angle) / zoom;
  for (int y = 0; y < h; ++y) {
    uint8_t *dst = out.row(y);
    const double dy = y - cy;
    for (int x = 0; x < w; ++x) {
      const double dx = x - cx;
      double sx = cx + ca * dx - sa * dy + shift_x;
      double sy = cy + sa * dx + ca * dy + shift_y;
      sx = std::clamp(sx, 0.0, static_cast<double>(w - 1));
      sy = std::clamp(sy, 0.0, static_cast<double>(h - 1));
      const int x0 = static_cast<int>(sx), y0 = static_cast<int>(sy);
      const int x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
      const float fx = static_cast<float>(sx - x0), fy = static_cast<float>(sy - y0);
      const uint8_t *r0 = in.row(y0), *r1 = in.row(y1);
      float px[4];
      for (int k2 = 0; k2 < ch; ++k2) {
        const float a = r0[x0 * ch + k2], b = r0[x1 * ch + k2];
        const float cc = r1[x0 * ch + k2], dd = r1[x1 * ch + k2];
        const float top = a + (b - a) * fx, bot = cc + (dd - cc) * fx;
        px[k2] = top + (bot - top) * fy;
      }
      const uint64_t hh = hash3(noise_seed, static_cast<uint32_t>(x), static_cast<uint32_t>(y));
      const float n0 = (static_cast<float>(hh & 0xff) / 127.5f - 1.0f) * amp;
      const float n1 = (static_cast<float>((hh >> 8) & 0xff) / 127.5f - 1.0f) * amp;
      const float n2 = (static_cast<float>((hh >> 16) & 0xff) / 127.5f - 1.0f) * amp;
      uint8_t *o = dst + static_cast<size_t>(x) * ch;
      float field[3] = {0, 0, 0};
      if (mix > 0.0f) {
        double v = 0;
        for (const auto &wv : wave) v += std::sin(wv[0] * x + wv[1] * y + wv[2]);
        for (int k2 = 0; k2 < 3; ++k2)
          field[k2] = static_cast<float>(127.5 + 127.5 * std::cos(1.4 * v + palette_phase[k2]));
      }
      const float keep = 1.0f - mix;
      o[0] = clamp_u8(keep * (m[0] * px[0] + m[1] * px[1] + m[2] * px[2]) + mix * field[0] + n0);
      o[1] = clamp_u8(keep * (m[3] * px[0] + m[4] * px[1] + m[5] * px[2]) + mix * field[1] + n1);
      o[2] = clamp_u8(keep * (m[6] * px[0] + m[7] * px[1] + m[8] * px[2]) + mix * field[2] + n2);
      if (ch == 4) o[3] = clamp_u8(px[3]);
    }
  }
  // Resampling blurs a little every step; a mild unsharp mask keeps the loop crisp, as a sampler
  // re-invents detail.
  return d > 0.0 ? sharpen_image(out, 1, 0.8 * d) : out;
}

Image noise_image(int width, int height, uint64_t seed) {
  if (width <= 0 || height <= 0) return {};
  uint64_t st = seed ^ 0xa5a5a5a5deadbeefull;
  Image small(7, 7, 3);
  for (auto &p : small.pixels) p = static_cast<uint8_t>(splitmix64(st) & 0xff);
  Image out = resize_bilinear(small, width, height);
  const uint64_t ns = splitmix64(st);
  for (int y = 0; y < height; ++y) {
    uint8_t *r = out.row(y);
    for (int x = 0; x < width; ++x) {
      const uint64_t hh = hash3(ns, static_cast<uint32_t>(x), static_cast<uint32_t>(y));
      for (int k = 0; k < 3; ++k) {
        const float n = (static_cast<float>((hh >> (8 * k)) & 0xff) / 127.5f - 1.0f) * 40.0f;
        r[x * 3 + k] = clamp_u8(r[x * 3 + k] + n);
      }
    }
  }
  return out;
}

Image invert_image(const Image &in) {
  Image out = in;
  const int ch = in.channels;
  for (size_t i = 0; i < out.pixels.size(); ++i)
    if (ch != 4 || (i % 4) != 3) out.pixels[i] = static_cast<uint8_t>(255 - out.pixels[i]);
  return out;
}

Image blur_image(const Image &in, int radius) {
  if (in.empty() || radius <= 0) return in;
  const int w = in.width, h = in.height, ch = in.channels;
  radius = std::min(radius, std::max(w, h));
  Image tmp(w, h, ch), out(w, h, ch);
  const float norm = 1.0f / (2 * radius + 1);
  // Horizontal pass (clamped edges).
  for (int y = 0; y < h; ++y) {
    const uint8_t *s = in.row(y);
    uint8_t *d = tmp.row(y);
    for (int k = 0; k < ch; ++k) {
      int sum = 0;
      for (int i = -radius; i <= radius; ++i) sum += s[std::clamp(i, 0, w - 1) * ch + k];
      for (int x = 0; x < w; ++x) {
        d[x * ch + k] = clamp_u8(sum * norm);
        sum += s[std::min(x + radius + 1, w - 1) * ch + k] - s[std::max(x - radius, 0) * ch + k];
      }
    }
  }
  // Vertical pass.
  const size_t stride = tmp.stride();
  for (int x = 0; x < w; ++x) {
    for (int k = 0; k < ch; ++k) {
      const size_t col = static_cast<size_t>(x) * ch + k;
      int sum = 0;
      for (int i = -radius; i <= radius; ++i) sum += tmp.pixels[std::clamp(i, 0, h - 1) * stride + col];
      for (int y = 0; y < h; ++y) {
        out.pixels[y * stride + col] = clamp_u8(sum * norm);
        sum += tmp.pixels[std::min(y + radius + 1, h - 1) * stride + col] -
               tmp.pixels[std::max(y - radius, 0) * stride + col];
      }
    }
  }
  return out;
}

Image sharpen_image(const Image &in, int radius, double alpha) {
  if (in.empty() || radius <= 0 || alpha == 0.0) return in;
  Image blurred = blur_image(in, radius);
  Image out(in.width, in.height, in.channels);
  const float a = static_cast<float>(alpha);
  for (size_t i = 0; i < in.pixels.size(); ++i) {
    const float v = in.pixels[i];
    out.pixels[i] = clamp_u8(v + a * (v - blurred.pixels[i]));
  }
  return out;
}

Image scale_image(const Image &in, int width, int height, bool crop_center) {
  if (in.empty()) return in;
  if (width <= 0 && height <= 0) return in;
  if (width <= 0) width = std::max(1, static_cast<int>(std::lround(static_cast<double>(in.width) * height / in.height)));
  if (height <= 0) height = std::max(1, static_cast<int>(std::lround(static_cast<double>(in.height) * width / in.width)));
  if (!crop_center) return resize_bilinear(in, width, height);
  const double src_aspect = static_cast<double>(in.width) / in.height;
  const double dst_aspect = static_cast<double>(width) / height;
  int cw = in.width, chh = in.height, ox = 0, oy = 0;
  if (src_aspect > dst_aspect) {
    cw = std::max(1, static_cast<int>(std::lround(in.height * dst_aspect)));
    ox = (in.width - cw) / 2;
  } else if (src_aspect < dst_aspect) {
    chh = std::max(1, static_cast<int>(std::lround(in.width / dst_aspect)));
    oy = (in.height - chh) / 2;
  }
  Image crop(cw, chh, in.channels);
  for (int y = 0; y < chh; ++y)
    std::copy(in.row(y + oy) + static_cast<size_t>(ox) * in.channels,
              in.row(y + oy) + static_cast<size_t>(ox + cw) * in.channels, crop.row(y));
  return resize_bilinear(crop, width, height);
}

}  // namespace dw::sim

// Keyframe embeddings: thumbnail, colour histogram, colour statistics and the pooled VAE latent.
#include "cache/embedding.h"

#include <algorithm>
#include <cmath>

#include "latent/codec.h"

namespace dw::cache {

namespace {

inline double luma_of(const uint8_t *p) { return (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) / 255.0; }

}  // namespace

Image area_resize_rgb(const Image &src, int width, int height) {
  Image out(width, height, 3);
  if (src.empty() || width <= 0 || height <= 0) return out;
  const int c = src.channels;
  for (int oy = 0; oy < height; ++oy) {
    int y0 = static_cast<int>(static_cast<int64_t>(oy) * src.height / height);
    int y1 = std::max(y0 + 1, static_cast<int>(static_cast<int64_t>(oy + 1) * src.height / height));
    for (int ox = 0; ox < width; ++ox) {
      int x0 = static_cast<int>(static_cast<int64_t>(ox) * src.width / width);
      int x1 = std::max(x0 + 1, static_cast<int>(static_cast<int64_t>(ox + 1) * src.width / width));
      double acc[3] = {0, 0, 0};
      for (int y = y0; y < y1 && y < src.height; ++y) {
        const uint8_t *row = src.row(y);
        for (int x = x0; x < x1 && x < src.width; ++x)
          for (int k = 0; k < 3; ++k) acc[k] += row[x * c + k];
      }
      const double n = static_cast<double>(std::min(y1, src.height) - y0) * (std::min(x1, src.width) - x0);
      uint8_t *d = out.row(oy) + ox * 3;
      for (int k = 0; k < 3; ++k) d[k] = static_cast<uint8_t>(std::clamp(acc[k] / n + 0.5, 0.0, 255.0));
    }
  }
  return out;
}

ColourStats colour_stats(const Image &image) {
  ColourStats st;
  if (image.empty()) return st;
  const int c = image.channels;
  const size_t n = static_cast<size_t>(image.width) * image.height;
  double sum_l = 0, sum_l2 = 0, sum_s = 0;
  for (int y = 0; y < image.height; ++y) {
    const uint8_t *row = image.row(y);
    for (int x = 0; x < image.width; ++x) {
      const uint8_t *p = row + x * c;
      const double l = luma_of(p);
      sum_l += l;
      sum_l2 += l * l;
      const int mx = std::max({p[0], p[1], p[2]}), mn = std::min({p[0], p[1], p[2]});
      sum_s += mx > 0 ? static_cast<double>(mx - mn) / mx : 0.0;
    }
  }
  st.luma = sum_l / n;
  st.saturation = sum_s / n;
  st.contrast = std::sqrt(std::max(0.0, sum_l2 / n - st.luma * st.luma));
  // Sharpness on a fixed-size thumbnail, so that it does not depend on the resolution.
  const int ts = 64;
  Image t = (image.width == ts && image.height == ts && c == 3) ? image : area_resize_rgb(image, ts, ts);
  std::vector<double> l(static_cast<size_t>(ts) * ts);
  for (int y = 0; y < ts; ++y)
    for (int x = 0; x < ts; ++x) l[y * ts + x] = luma_of(t.row(y) + x * 3);
  double lap = 0;
  for (int y = 1; y < ts - 1; ++y)
    for (int x = 1; x < ts - 1; ++x)
      lap += std::fabs(4 * l[y * ts + x] - l[(y - 1) * ts + x] - l[(y + 1) * ts + x] - l[y * ts + x - 1] -
                       l[y * ts + x + 1]);
  st.sharpness = lap / ((ts - 2) * (ts - 2));
  return st;
}

void centre_normalise(std::vector<float> &v) {
  if (v.empty()) return;
  double mean = 0;
  for (float f : v) mean += f;
  mean /= static_cast<double>(v.size());
  double norm = 0;
  for (float &f : v) {
    f = static_cast<float>(f - mean);
    norm += static_cast<double>(f) * f;
  }
  norm = std::sqrt(norm);
  if (norm > 1e-12)
    for (float &f : v) f = static_cast<float>(f / norm);
}

Embedding pixel_embedding(const Image &image) {
  Embedding e;
  if (image.empty()) return e;
  Image t = area_resize_rgb(image, kThumbSize, kThumbSize);
  e.thumb.assign(t.pixels.begin(), t.pixels.end());
  centre_normalise(e.thumb);

  // Soft (linear) binning: a small brightness shift moves mass between neighbouring bins smoothly.
  std::vector<double> hist(3 * kHistBins, 0.0);
  const int c = image.channels;
  // Subsample big images: the histogram of ~64k pixels is as good as all of them.
  const int step = std::max(1, static_cast<int>(std::sqrt(static_cast<double>(image.width) * image.height / 65536.0)));
  for (int y = 0; y < image.height; y += step) {
    const uint8_t *row = image.row(y);
    for (int x = 0; x < image.width; x += step) {
      for (int k = 0; k < 3; ++k) {
        const double pos = (row[x * c + k] + 0.5) / 256.0 * kHistBins - 0.5;
        int b0 = static_cast<int>(std::floor(pos));
        const double f = pos - b0;
        int b1 = b0 + 1;
        b0 = std::clamp(b0, 0, kHistBins - 1);
        b1 = std::clamp(b1, 0, kHistBins - 1);
        hist[k * kHistBins + b0] += 1.0 - f;
        hist[k * kHistBins + b1] += f;
      }
    }
  }
  e.hist.resize(hist.size());
  double norm = 0;
  for (size_t i = 0; i < hist.size(); ++i) norm += hist[i];
  double n2 = 0;
  for (size_t i = 0; i < hist.size(); ++i) {
    e.hist[i] = static_cast<float>(std::sqrt(hist[i] / std::max(norm, 1e-12)));
    n2 += static_cast<double>(e.hist[i]) * e.hist[i];
  }
  n2 = std::sqrt(n2);
  if (n2 > 0)
    for (float &f : e.hist) f = static_cast<float>(f / n2);
  e.colour = colour_stats(image);
  return e;
}

double cosine(const std::vector<float> &a, const std::vector<float> &b) {
  if (a.empty() || a.size() != b.size()) return 0.0;
  double dot = 0;
  for (size_t i = 0; i < a.size(); ++i) dot += static_cast<double>(a[i]) * b[i];
  return std::clamp(dot, -1.0, 1.0);
}

double similarity(const Embedding &a, const Embedding &b) {
  const double h = cosine(a.hist, b.hist);
  if (!a.latent.empty() && a.latent.size() == b.latent.size()) return 0.7 * cosine(a.latent, b.latent) + 0.3 * h;
  return 0.6 * cosine(a.thumb, b.thumb) + 0.4 * h;
}

Embedder::Embedder(std::shared_ptr<latent::SharedCodec> codec, int grid, int max_side, const std::string &model_id)
    : codec_(std::move(codec)), grid_(std::max(1, grid)), max_side_(std::max(16, max_side)) {
  has_latent_ = codec_ && codec_->codec().has_model();
  if (has_latent_)
    signature_ = "dual-v1|" + (model_id.empty() ? codec_->codec().describe() : model_id) + "|grid" + std::to_string(grid_) + "|" +
                 std::to_string(max_side_);
  else
    signature_ = "pixel-v1";
}

Embedding Embedder::embed(const Image &image) const {
  Embedding e = pixel_embedding(image);
  if (!has_latent_ || image.empty()) return e;
  // Shrink to at most max_side, keeping the aspect ratio; multiples of 8 (the latent factor) keep
  // padding out of the pooled grid.
  const int side = std::max(image.width, image.height);
  const int target = std::min(side, max_side_);
  int w = std::max(8, (image.width * target / side) / 8 * 8);
  int h = std::max(8, (image.height * target / side) / 8 * 8);
  Image small = (w == image.width && h == image.height) ? image : resize_bilinear(image, w, h);
  if (small.channels != 3) small = convert_channels(small, 3);
  // The shared VAE's latent, average-pooled to grid x grid per channel (Latent::pooled).
  std::vector<float> pooled =
      codec_->with([&](latent::Codec &codec) { return codec.encode(small)->pooled(grid_); });
  if (pooled.empty()) return e;  // a backend without a latent space: the pixel features alone
  centre_normalise(pooled);
  e.latent = std::move(pooled);
  return e;
}

}  // namespace dw::cache

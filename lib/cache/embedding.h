// Perceptual embeddings of keyframes for cachetap, and the similarity between two of them.
// GStreamer-free. Two kinds of feature, always both computed from the pixels, plus an optional one
// from the shared VAE:
//   thumb      a 16x16 area-averaged RGB thumbnail, mean-centred and L2-normalised (layout/structure)
//   hist       per-channel 16-bin soft histograms, square-rooted and L2-normalised (colour; the dot
//              product of two is the Bhattacharyya coefficient)
//   latent     the VAE latent average-pooled to grid x grid (Latent::pooled), mean-centred and
//              L2-normalised; empty without a model (blend backend)
// similarity(): with a latent on both sides the "dual metric" 0.7 cos(latent) + 0.3 hist, else
// 0.6 cos(thumb) + 0.4 hist. 1 = identical; unrelated images land around 0.2..0.6.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "image/image.h"

namespace dw::latent {
class SharedCodec;
}

namespace dw::cache {

// Colour statistics watched by the collapse detector. All in 0..1 except sharpness (mean absolute
// Laplacian of the 0..1 luma on a 64 px thumbnail, ~0.01 for soft images, ~0.1 for busy ones).
struct ColourStats {
  double luma = 0;        // mean Rec.601 luma
  double saturation = 0;  // mean HSV saturation
  double contrast = 0;    // standard deviation of luma
  double sharpness = 0;
};

struct Embedding {
  std::vector<float> thumb;
  std::vector<float> hist;
  std::vector<float> latent;
  ColourStats colour;
  bool empty() const { return thumb.empty(); }
};

constexpr int kThumbSize = 16;
constexpr int kHistBins = 16;

ColourStats colour_stats(const Image &image);
// Pixel features only (thumb, hist, colour).
Embedding pixel_embedding(const Image &image);
// Dot product of two L2-normalised vectors (0 if sizes differ or either is empty).
double cosine(const std::vector<float> &a, const std::vector<float> &b);
// Mean-centres and L2-normalises in place (all-zero stays zero).
void centre_normalise(std::vector<float> &v);
double similarity(const Embedding &a, const Embedding &b);

// Computes embeddings; with a model codec, adds the pooled latent (encoded under the codec's shared
// lock, then Latent::pooled()).
// One Embedder is used from one thread at a time.
class Embedder {
 public:
  // codec may be null (pixel features only). Images are shrunk to at most max_side before encoding.
  // model_id names the model in the signature (e.g. CodecConfig::key()); empty = codec's describe().
  explicit Embedder(std::shared_ptr<latent::SharedCodec> codec = nullptr, int grid = 4, int max_side = 256,
                    const std::string &model_id = "");
  Embedding embed(const Image &image) const;
  // Identifies the kind of embedding, stored in the index so a warm start with another model
  // re-embeds the cached images instead of comparing incompatible vectors.
  const std::string &signature() const { return signature_; }
  bool has_latent() const { return has_latent_; }
  const std::shared_ptr<latent::SharedCodec> &codec() const { return codec_; }

 private:
  std::shared_ptr<latent::SharedCodec> codec_;
  int grid_;
  int max_side_;
  bool has_latent_ = false;
  std::string signature_;
};

// Area-averaging downscale to exactly width x height (RGB out), used for thumbnails.
Image area_resize_rgb(const Image &src, int width, int height);

}  // namespace dw::cache

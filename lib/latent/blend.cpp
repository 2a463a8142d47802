// Blend backend: no model, the "latent" is the RGB image itself and interpolation is a pixel
// crossfade. Always available (also without LibTorch).
#include <algorithm>
#include <cmath>

#include "latent/codec.h"
#include "latent/internal.h"

namespace dw::latent {
namespace {

class ImageLatent final : public Latent {
 public:
  explicit ImageLatent(Image img) : image_(std::move(img)) {}
  int image_width() const override { return image_.width; }
  int image_height() const override { return image_.height; }
  std::string describe() const override {
    return std::to_string(image_.width) + "x" + std::to_string(image_.height) + "x3 u8 image";
  }
  const Image &image() const { return image_; }

 private:
  Image image_;
};

void validate(const Image &image) {
  if (image.width <= 0 || image.height <= 0 || (image.channels != 3 && image.channels != 4))
    throw Error("encode: expected a non-empty RGB or RGBA image, got " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + "x" + std::to_string(image.channels));
  if (image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels)
    throw Error("encode: image buffer size does not match its dimensions");
}

const ImageLatent &as_image(const Latent &l) {
  auto *p = dynamic_cast<const ImageLatent *>(&l);
  if (!p) throw Error("blend: latent was made by another codec");
  return *p;
}

class BlendCodec final : public Codec {
 public:
  std::string describe() const override { return "blend (pixel crossfade, no model)"; }
  bool has_model() const override { return false; }

  std::shared_ptr<const Latent> encode(const Image &image) override {
    validate(image);
    return std::make_shared<ImageLatent>(image.channels == 3 ? image : convert_channels(image, 3));
  }

  std::vector<Image> interpolate(const Latent &a, const Latent &b, const std::vector<double> &ts,
                                 int batch_size) override {
    const Image &ia = as_image(a).image();
    const Image &ib0 = as_image(b).image();
    // Different sizes are tolerated here: b is resized to a.
    Image resized;
    if (ib0.width != ia.width || ib0.height != ia.height) resized = resize_bilinear(ib0, ia.width, ia.height);
    const Image &ib = resized.empty() ? ib0 : resized;
    std::vector<Image> out;
    out.reserve(ts.size());
    for (double t : ts) {
      if (!std::isfinite(t)) throw Error("interpolate: t must be finite");
      const float tf = static_cast<float>(t);
      Image img(ia.width, ia.height, 3);
      const size_t n = img.pixels.size();
      for (size_t i = 0; i < n; ++i) {
        const float v = ia.pixels[i] + (static_cast<float>(ib.pixels[i]) - ia.pixels[i]) * tf;
        img.pixels[i] = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
      out.push_back(std::move(img));
    }
    return out;
  }

  Image decode(const Latent &latent) override { return as_image(latent).image(); }
};

}  // namespace

namespace detail {
std::unique_ptr<Codec> create_blend() { return std::make_unique<BlendCodec>(); }
}  // namespace detail

}  // namespace dw::latent

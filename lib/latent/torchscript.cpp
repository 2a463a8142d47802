// TorchScript backend: a user-exported encoder/decoder module pair (any VAE: SD, SDXL, FLUX...).
// Contract (docs/operations-vae.md): encoder(x: Nx3xHxW in [0,1]) -> latent (scaling baked in),
// decoder(latent) -> Nx3xHxW roughly in [0,1]. The only file that includes torch/script.h.
#include <torch/script.h>

#include <sys/stat.h>

#include "latent/torch_common.h"

namespace dw::latent::detail {
namespace {

at::Tensor first_tensor(const c10::IValue &v, const std::string &what) {
  if (v.isTensor()) return v.toTensor();
  if (v.isTuple() && !v.toTupleRef().elements().empty() && v.toTupleRef().elements()[0].isTensor())
    return v.toTupleRef().elements()[0].toTensor();
  if (v.isList() && v.toListRef().size() > 0 && v.toListRef()[0].isTensor()) return v.toListRef()[0].toTensor();
  throw Error(what + " returned " + v.tagKind() + ", expected a tensor");
}

class TorchScriptCodec final : public Codec, public RawAccess {
 public:
  explicit TorchScriptCodec(const CodecConfig &c) {
    guarded("torchscript", [&] {
      device_ = parse_device(c.device);
      configure_device(device_);
      configure_threads(c.threads);
      Precision p = resolve_precision(c.precision, c.device);
      if (device_.is_cpu() && p == Precision::Fp16) p = Precision::Fp32;
      if (device_.is_cpu() && c.caching_allocator) install_caching_cpu_allocator();
      dtype_ = scalar_type(p);
      encoder_ = load(c.encoder_path, "encoder");
      decoder_ = load(c.decoder_path, "decoder");
      // Probe: a 64x64 grey image through both gives the latent layout and catches swapped files.
      c10::InferenceMode guard;
      at::Tensor x = at::full({1, 3, 64, 64}, 0.5f, at::TensorOptions().dtype(dtype_).device(device_));
      at::Tensor z;
      try {
        z = first_tensor(encoder_.forward({x}), "encoder");
      } catch (const c10::Error &e) {
        throw Error(c.encoder_path + ": encoder probe (1x3x64x64 image) failed (is this the encoder?): " +
                    e.what_without_backtrace());
      }
      if (z.dim() != 4 || z.size(0) != 1 || z.size(2) <= 0 || 64 % z.size(2) != 0)
        throw Error(c.encoder_path + ": encoder output for a 1x3x64x64 image has shape " + shape(z) +
                    ", expected 1xCxhxw with 64 divisible by h");
      multiple_ = 64 / z.size(2);
      latent_channels_ = z.size(1);
      at::Tensor y;
      try {
        y = first_tensor(decoder_.forward({z}), "decoder");
      } catch (const c10::Error &e) {
        throw Error(c.decoder_path + ": decoder probe (" + shape(z) + " latent) failed (is this the decoder?): " +
                    e.what_without_backtrace());
      }
      if (y.dim() != 4 || y.size(1) != 3 || y.size(2) != 64 || y.size(3) != 64)
        throw Error(c.decoder_path + ": decoder output for a " + shape(z) + " latent has shape " + shape(y) +
                    ", expected 1x3x64x64");
      describe_ = "torchscript (" + std::to_string(latent_channels_) + " ch, /" + std::to_string(multiple_) + ") on " +
                  device_.str() + ", " + precision_name(p);
    });
  }

  std::string describe() const override { return describe_; }
  bool has_model() const override { return true; }

  std::shared_ptr<const Latent> encode(const Image &image) override {
    return guarded("torchscript encode", [&]() -> std::shared_ptr<const Latent> {
      c10::InferenceMode guard;
      at::Tensor x = image_to_tensor(image);
      const int64_t m = multiple_;
      const int64_t ph = (m - image.height % m) % m, pw = (m - image.width % m) % m;
      if (ph || pw) x = at::replication_pad2d(x, {0, pw, 0, ph});
      at::Tensor z = first_tensor(encoder_.forward({x.to(device_, dtype_)}), "encoder").contiguous();
      return std::make_shared<TensorLatent>(z, image.width, image.height);
    });
  }

  Image decode(const Latent &latent) override {
    return guarded("torchscript decode", [&] {
      c10::InferenceMode guard;
      const TensorLatent &l = as_tensor_latent(latent, "torchscript");
      return decode_batch(l.tensor(), l.image_width(), l.image_height()).at(0);
    });
  }

  std::vector<Image> interpolate(const Latent &a, const Latent &b, const std::vector<double> &ts,
                                 int batch_size) override {
    return guarded("torchscript interpolate", [&] {
      c10::InferenceMode guard;
      const TensorLatent &la = as_tensor_latent(a, "torchscript"), &lb = as_tensor_latent(b, "torchscript");
      const int bs = check_interpolate(la, lb, ts, batch_size);
      std::vector<Image> out;
      for (size_t i = 0; i < ts.size(); i += bs) {
        std::vector<at::Tensor> items;
        for (size_t j = i; j < std::min(ts.size(), i + bs); ++j)
          items.push_back(slerp_tensor(la.tensor(), lb.tensor(), ts[j]));
        for (auto &img : decode_batch(at::cat(items, 0), la.image_width(), la.image_height()))
          out.push_back(std::move(img));
      }
      return out;
    });
  }

  at::Tensor encode_tensor(const at::Tensor &images) override {
    return first_tensor(encoder_.forward({images.to(device_, dtype_)}), "encoder").to(at::kFloat);
  }
  at::Tensor decode_tensor(const at::Tensor &latents) override {
    return first_tensor(decoder_.forward({latents.to(device_, dtype_)}), "decoder").to(at::kFloat);
  }

 private:
  static std::string shape(const at::Tensor &t) {
    std::string s;
    for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "x" : "") + std::to_string(t.size(i));
    return s;
  }

  torch::jit::Module load(const std::string &path, const char *role) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      throw Error(path + ": TorchScript " + role + " file not found");
    try {
      torch::jit::Module m = torch::jit::load(path, device_);
      m.eval();
      if (dtype_ != at::kFloat) m.to(dtype_);
      return m;
    } catch (const c10::Error &e) {
      throw Error(path + ": cannot load TorchScript " + role + " (export it with torch.jit.trace/script and save): " +
                  e.what_without_backtrace());
    }
  }

  std::vector<Image> decode_batch(const at::Tensor &z, int width, int height) {
    if (z.dim() != 4 || z.size(1) != latent_channels_)
      throw Error("latent does not fit this model (" + std::to_string(latent_channels_) + " channels)");
    at::Tensor y = first_tensor(decoder_.forward({z.to(device_, dtype_)}), "decoder");
    if (y.dim() != 4 || y.size(1) != 3 || y.size(2) < height || y.size(3) < width)
      throw Error("decoder returned " + shape(y) + ", expected Nx3xHxW covering " + std::to_string(width) + "x" +
                  std::to_string(height));
    return tensor_to_images(y, width, height);
  }

  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  torch::jit::Module encoder_, decoder_;
  int64_t multiple_ = 8, latent_channels_ = 0;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Codec> create_torchscript(const CodecConfig &resolved) {
  return std::make_unique<TorchScriptCodec>(resolved);
}

}  // namespace dw::latent::detail

namespace dw::latent {
void write_test_torchscript_pair(const std::string &encoder_path, const std::string &decoder_path) {
  detail::guarded("write_test_torchscript_pair", [&] {
    torch::jit::Module enc("TestEncoder");
    enc.define(R"(
def forward(self, x):
    y = torch.avg_pool2d(x, 8)
    return torch.cat([y, y.mean(1, keepdim=True)], 1)
)");
    enc.save(encoder_path);
    torch::jit::Module dec("TestDecoder");
    dec.define(R"(
def forward(self, z):
    return torch.upsample_nearest2d(z[:, 0:3], None, [8.0, 8.0])
)");
    dec.save(decoder_path);
  });
}
}  // namespace dw::latent

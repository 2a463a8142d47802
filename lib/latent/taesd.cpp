// Native ATen TAESD family: 4/16/32 latent channels, optionally with the "midblock GroupNorm" pool
// branch (TAEF2). The network is rebuilt from the tensor names and shapes of the .safetensors
// files (indices of the original flat nn.Sequential); nothing is inferred from file names.
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "latent/safetensors.h"
#include "latent/torch_common.h"

namespace dw::latent::detail {
namespace {

struct Conv {
  at::Tensor w, b;  // b undefined when the conv has no bias
  int64_t stride = 1, padding = 1;
  int64_t in() const { return w.size(1); }
  int64_t out() const { return w.size(0); }
};

struct Pool {  // x + conv1x1(relu(GN(conv1x1(x))))
  at::Tensor w0, gn_w, gn_b, w3;
  int64_t groups = 4;
};

struct Block {
  Conv c0, c2, c4;
  at::Tensor skip;  // undefined: identity
  bool has_pool = false;
  Pool pool;
};

enum class Op { Conv, Block, ReLU, Upsample, Clamp };

struct Layer {
  Op op;
  Conv conv;
  Block block;
};

struct Options {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  bool channels_last = false;
};

struct Net {
  std::vector<Layer> layers;
  int64_t in_channels = 0, out_channels = 0, scale = 1;
  bool has_pool = false;
};

// ---- loading ----

class Loader {
 public:
  Loader(const SafeTensors &st, const Options &opt) : st_(st), opt_(opt) {
    for (const auto &t : st.tensors()) remaining_.insert(t.name);
  }

  bool has(const std::string &name) const { return st_.has(name); }

  at::Tensor take(const std::string &name, std::vector<int64_t> shape, bool keep_fp32 = false) {
    const TensorInfo &info = st_.get(name);
    if (info.shape != shape) {
      std::string want;
      for (size_t i = 0; i < shape.size(); ++i) want += (i ? "x" : "") + std::to_string(shape[i]);
      throw Error(st_.origin() + ": tensor '" + name + "' has shape " + info.shape_str() + ", expected " + want +
                  " (not a TAESD-family file, or encoder/decoder swapped?)");
    }
    remaining_.erase(name);
    std::vector<float> v = st_.to_float(info);
    at::Tensor t = at::from_blob(v.data(), shape, at::kFloat).clone();
    t = t.to(opt_.device, keep_fp32 ? at::kFloat : opt_.dtype);
    if (opt_.channels_last && t.dim() == 4) t = t.contiguous(at::MemoryFormat::ChannelsLast);
    return t;
  }

  const std::vector<int64_t> &shape(const std::string &name) const { return st_.get(name).shape; }

  Conv conv(const std::string &prefix, int64_t k, int64_t expect_in, int64_t expect_out, bool bias_optional) {
    const auto &s = shape(prefix + ".weight");
    if (s.size() != 4 || s[2] != k || s[3] != k || (expect_in >= 0 && s[1] != expect_in) ||
        (expect_out >= 0 && s[0] != expect_out) || s[0] <= 0 || s[1] <= 0)
      throw Error(st_.origin() + ": tensor '" + prefix + ".weight' has shape " + st_.get(prefix + ".weight").shape_str() +
                  ", expected a " + std::to_string(k) + "x" + std::to_string(k) + " convolution" +
                  (expect_in >= 0 ? " from " + std::to_string(expect_in) + " channels" : std::string()));
    Conv c;
    c.w = take(prefix + ".weight", s);
    c.padding = k / 2;
    if (has(prefix + ".bias"))
      c.b = take(prefix + ".bias", {s[0]});
    else if (!bias_optional)
      throw Error(st_.origin() + ": missing tensor '" + prefix + ".bias'");
    return c;
  }

  Block block(const std::string &p, int64_t n_in) {
    Block b;
    b.has_pool = has(p + ".pool.0.weight");
    if (b.has_pool) {
      const auto &s = shape(p + ".pool.0.weight");
      if (s.size() != 4 || s[1] != n_in || s[2] != 1 || s[3] != 1)
        throw Error(st_.origin() + ": tensor '" + p + ".pool.0.weight' has shape " +
                    st_.get(p + ".pool.0.weight").shape_str() + ", expected Nx" + std::to_string(n_in) + "x1x1");
      const int64_t m = s[0];
      if (m % 4 != 0) throw Error(st_.origin() + ": '" + p + ".pool.1' GroupNorm channels not divisible by 4");
      b.pool.w0 = take(p + ".pool.0.weight", {m, n_in, 1, 1});
      b.pool.gn_w = take(p + ".pool.1.weight", {m}, /*keep_fp32=*/true);
      b.pool.gn_b = take(p + ".pool.1.bias", {m}, true);
      b.pool.w3 = take(p + ".pool.3.weight", {n_in, m, 1, 1});
    }
    b.c0 = conv(p + ".conv.0", 3, n_in, -1, false);
    const int64_t n_out = b.c0.out();
    b.c2 = conv(p + ".conv.2", 3, n_out, n_out, false);
    b.c4 = conv(p + ".conv.4", 3, n_out, n_out, false);
    if (n_in != n_out)
      b.skip = take(p + ".skip.weight", {n_out, n_in, 1, 1});
    else if (has(p + ".skip.weight"))
      throw Error(st_.origin() + ": unexpected tensor '" + p + ".skip.weight' (block keeps " + std::to_string(n_in) +
                  " channels)");
    return b;
  }

  void check_all_used() const {
    if (!remaining_.empty())
      throw Error(st_.origin() + ": unexpected tensor '" + *remaining_.begin() + "' (not a TAESD-family file?)");
  }

 private:
  const SafeTensors &st_;
  Options opt_;
  std::set<std::string> remaining_;
};

// The layer indices present in the file: "<index>.<rest>".
std::map<int, std::vector<std::string>> group_by_index(const SafeTensors &st) {
  std::map<int, std::vector<std::string>> groups;
  for (const auto &t : st.tensors()) {
    const std::string &n = t.name;
    size_t i = 0;
    while (i < n.size() && std::isdigit(static_cast<unsigned char>(n[i]))) ++i;
    if (i == 0 || i > 4 || i >= n.size() || n[i] != '.')
      throw Error(st.origin() + ": unexpected tensor '" + n + "' (TAESD files name tensors '<layer>.weight')");
    groups[std::stoi(n.substr(0, i))].push_back(n);
  }
  if (groups.empty()) throw Error(st.origin() + ": no tensors (not a TAESD-family file)");
  return groups;
}

enum class Role { Encoder, Decoder };

Net build(const SafeTensors &st, Role role, const Options &opt) {
  const char *role_name = role == Role::Encoder ? "encoder" : "decoder";
  auto groups = group_by_index(st);
  const int last = groups.rbegin()->first;
  if (last > 256) throw Error(st.origin() + ": too many layers for a TAESD " + role_name);
  // Which file is this? Encoders start from RGB, decoders end in RGB.
  auto first_conv_in = [&]() -> int64_t {
    for (auto &[idx, names] : groups) {
      const std::string w = std::to_string(idx) + ".weight";
      if (st.has(w)) {
        const auto &s = st.get(w).shape;
        return s.size() == 4 ? s[1] : -1;
      }
      return -1;
    }
    return -1;
  }();
  const bool looks_encoder = first_conv_in == 3 && groups.begin()->first == 0;
  const bool looks_decoder = groups.begin()->first == 1 && st.has("1.weight");
  if (role == Role::Encoder && !looks_encoder)
    throw Error(st.origin() + ": not a TAESD encoder (" +
                (looks_decoder ? std::string("this looks like a decoder: first layer is 1.weight")
                               : "layer 0 is not a 3x3 convolution from 3 RGB channels") +
                ")");
  if (role == Role::Decoder && !looks_decoder)
    throw Error(st.origin() + ": not a TAESD decoder (" +
                (looks_encoder ? std::string("this looks like an encoder: layer 0 convolves RGB")
                               : "expected layer 0 = clamp and 1.weight = first convolution") +
                ")");

  Loader L(st, opt);
  Net net;
  int64_t ch = -1;  // channels flowing between layers
  int convs_seen = 0;
  Op prev = Op::Clamp;
  for (int idx = 0; idx <= last; ++idx) {
    const std::string p = std::to_string(idx);
    Layer layer{};
    if (L.has(p + ".conv.0.weight")) {
      if (ch < 0) throw Error(st.origin() + ": layer " + p + ": block before the first convolution");
      layer.op = Op::Block;
      layer.block = L.block(p, ch);
      ch = layer.block.c0.out();
      net.has_pool |= layer.block.has_pool;
    } else if (L.has(p + ".weight")) {
      layer.op = Op::Conv;
      // Encoder: bias-free convs are the stride-2 downsamplers. Decoder: bias-free convs follow an upsample.
      const bool first = convs_seen == 0;
      layer.conv = L.conv(p, 3, first ? -1 : ch, -1, /*bias_optional=*/!first);
      if (role == Role::Encoder && !first && !layer.conv.b.defined()) {
        layer.conv.stride = 2;
        net.scale *= 2;
      }
      if (first) net.in_channels = layer.conv.in();
      ch = layer.conv.out();
      ++convs_seen;
    } else {
      // A parameter-free layer: its kind follows from its place in the Sequential.
      if (role == Role::Encoder)
        throw Error(st.origin() + ": encoder layer " + p + " has no weights (not a TAESD encoder)");
      if (idx == 0) {
        layer.op = Op::Clamp;
      } else if (convs_seen == 1 && prev == Op::Conv) {
        layer.op = Op::ReLU;
      } else if (prev == Op::Block && L.has(std::to_string(idx + 1) + ".weight") &&
                 !L.has(std::to_string(idx + 1) + ".bias")) {
        layer.op = Op::Upsample;
        net.scale *= 2;
      } else {
        throw Error(st.origin() + ": decoder layer " + p + " is missing (no tensors and not a clamp/ReLU/upsample)");
      }
    }
    prev = layer.op;
    net.layers.push_back(std::move(layer));
  }
  L.check_all_used();
  net.out_channels = ch;
  if (role == Role::Encoder && (net.in_channels != 3 || net.scale < 2))
    throw Error(st.origin() + ": not a TAESD encoder (no downsampling convolutions)");
  if (role == Role::Decoder && (net.out_channels != 3 || net.scale < 2))
    throw Error(st.origin() + ": not a TAESD decoder (output has " + std::to_string(net.out_channels) +
                " channels, " + std::to_string(net.scale) + "x upsampling)");
  return net;
}

// ---- forward ----

at::Tensor conv2d(const at::Tensor &x, const Conv &c) {
  return at::conv2d(x, c.w, c.b.defined() ? c10::optional<at::Tensor>(c.b) : c10::nullopt, {c.stride, c.stride},
                    {c.padding, c.padding});
}

at::Tensor forward_block(const at::Tensor &in, const Block &b) {
  at::Tensor x = in;
  if (b.has_pool) {
    at::Tensor h = at::conv2d(x, b.pool.w0);
    // GroupNorm in float32 whatever the model precision (bf16 statistics are too coarse).
    const auto dt = h.scalar_type();
    h = at::group_norm(h.to(at::kFloat), b.pool.groups, b.pool.gn_w, b.pool.gn_b, 1e-5, true);
    h.relu_();
    h = at::conv2d(h.to(dt), b.pool.w3);
    x = x + h;
  }
  at::Tensor y = conv2d(x, b.c0).relu_();
  y = conv2d(y, b.c2).relu_();
  y = conv2d(y, b.c4);
  y += b.skip.defined() ? at::conv2d(x, b.skip) : x;
  return y.relu_();
}

at::Tensor forward(const Net &net, at::Tensor x) {
  for (const auto &l : net.layers) {
    switch (l.op) {
      case Op::Conv: x = conv2d(x, l.conv); break;
      case Op::Block: x = forward_block(x, l.block); break;
      case Op::ReLU: x = x.relu(); break;
      case Op::Clamp: x = at::tanh(x / 3.0) * 3.0; break;
      case Op::Upsample: x = at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}); break;
    }
  }
  return x;
}

class TaesdCodec final : public Codec, public RawAccess {
 public:
  explicit TaesdCodec(const CodecConfig &c) {
    guarded("taesd", [&] {
      const at::Device device = parse_device(c.device);
      configure_device(device);
      configure_threads(c.threads);
      Precision p = resolve_precision(c.precision, c.device);
      std::string note;
      if (device.is_cpu() && p == Precision::Fp16) {
        p = Precision::Fp32;  // no fp16 convolutions on CPU in this LibTorch
        note = " (fp16 unsupported on CPU)";
      }
      if (device.is_cpu() && c.caching_allocator) install_caching_cpu_allocator();
      memory_.configure(device, c.max_gpu_memory_mb, c.release_interval);
      opt_.device = device;
      opt_.dtype = scalar_type(p);
      opt_.channels_last = c.channels_last;
      {
        const SafeTensors enc = SafeTensors::load(c.encoder_path);
        encoder_ = build(enc, Role::Encoder, opt_);
      }
      {
        const SafeTensors dec = SafeTensors::load(c.decoder_path);
        decoder_ = build(dec, Role::Decoder, opt_);
      }
      if (encoder_.out_channels != decoder_.in_channels)
        throw Error("taesd: encoder " + c.encoder_path + " makes " + std::to_string(encoder_.out_channels) +
                    "-channel latents but decoder " + c.decoder_path + " takes " +
                    std::to_string(decoder_.in_channels));
      if (encoder_.scale != decoder_.scale)
        throw Error("taesd: encoder downsamples " + std::to_string(encoder_.scale) + "x but decoder upsamples " +
                    std::to_string(decoder_.scale) + "x");
      if (encoder_.has_pool != decoder_.has_pool)
        throw Error("taesd: encoder and decoder are different variants (midblock GroupNorm in only one of them)");
      const int64_t lc = encoder_.out_channels;
      std::string variant = lc == 4 ? "TAESD (4 ch)" : lc == 16 ? "TAESD3/TAEF1 (16 ch)" : lc == 32 && encoder_.has_pool ? "TAEF2 (32 ch, midblock GN)" : "TAESD-family (" + std::to_string(lc) + " ch" + (encoder_.has_pool ? ", midblock GN" : "") + ")";
      if (lc == 32 && !encoder_.has_pool) variant = "TAESD-family (32 ch)";
      describe_ = "taesd " + variant + " on " + device.str() + ", " + precision_name(p) + note +
                  (opt_.channels_last ? ", channels_last" : "") + ", /" + std::to_string(encoder_.scale) +
                  (device.is_cpu() ? ", " + std::to_string(at::get_num_threads()) + " threads" : std::string());
    });
  }

  std::string describe() const override { return describe_; }
  bool has_model() const override { return true; }

  std::shared_ptr<const Latent> encode(const Image &image) override {
    return guarded("taesd encode", [&]() -> std::shared_ptr<const Latent> {
      c10::InferenceMode guard;
      at::Tensor x = image_to_device_tensor(image, opt_.device);
      const int64_t m = encoder_.scale;
      const int64_t ph = (m - image.height % m) % m, pw = (m - image.width % m) % m;
      if (ph || pw) x = at::replication_pad2d(x, {0, pw, 0, ph});
      x = prepare(x);
      at::Tensor z = forward(encoder_, x).contiguous();
      return std::make_shared<TensorLatent>(z, image.width, image.height);
    });
  }

  Image decode(const Latent &latent) override {
    return guarded("taesd decode", [&] {
      c10::InferenceMode guard;
      const TensorLatent &l = as_tensor_latent(latent, "taesd");
      return decode_batch(check(l), l.image_width(), l.image_height()).at(0);
    });
  }

  std::vector<Image> interpolate(const Latent &a, const Latent &b, const std::vector<double> &ts,
                                 int batch_size) override {
    return guarded("taesd interpolate", [&] {
      c10::InferenceMode guard;
      const TensorLatent &la = as_tensor_latent(a, "taesd"), &lb = as_tensor_latent(b, "taesd");
      const int bs = check_interpolate(la, lb, ts, batch_size);
      at::Tensor za = check(la), zb = check(lb);
      std::vector<Image> out;
      out.reserve(ts.size());
      for (size_t i = 0; i < ts.size(); i += bs) {
        std::vector<at::Tensor> items;
        for (size_t j = i; j < std::min(ts.size(), i + bs); ++j) items.push_back(slerp_tensor(za, zb, ts[j]));
        auto imgs = decode_batch(at::cat(items, 0), la.image_width(), la.image_height());
        for (auto &img : imgs) out.push_back(std::move(img));
      }
      return out;
    });
  }

  at::Tensor encode_tensor(const at::Tensor &images) override {
    if (images.dim() != 4 || images.size(1) != 3 || images.size(2) % encoder_.scale || images.size(3) % encoder_.scale)
      throw Error("encode_tensor: expected Nx3xHxW with H, W multiples of " + std::to_string(encoder_.scale));
    return forward(encoder_, prepare(images)).to(at::kFloat).contiguous();
  }
  at::Tensor decode_tensor(const at::Tensor &latents) override {
    if (latents.dim() != 4 || latents.size(1) != decoder_.in_channels)
      throw Error("decode_tensor: expected Nx" + std::to_string(decoder_.in_channels) + "xhxw");
    return forward(decoder_, prepare(latents)).to(at::kFloat).contiguous();
  }

 private:
  at::Tensor prepare(at::Tensor x) const {
    x = x.to(opt_.device, opt_.dtype);
    if (opt_.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    return x;
  }

  at::Tensor check(const TensorLatent &l) const {
    const at::Tensor &z = l.tensor();
    const int64_t m = encoder_.scale;
    if (z.dim() != 4 || z.size(1) != decoder_.in_channels ||
        z.size(2) != (l.image_height() + m - 1) / m || z.size(3) != (l.image_width() + m - 1) / m)
      throw Error("latent " + l.describe() + " does not fit this model (" + std::to_string(decoder_.in_channels) +
                  " channels)");
    return z;
  }

  std::vector<Image> decode_batch(const at::Tensor &z, int width, int height) {
    at::Tensor y = forward(decoder_, prepare(z));
    std::vector<Image> images = tensor_to_images(y, width, height);  // synchronises the stream
    y = at::Tensor();
    memory_.after_decode(static_cast<int64_t>(images.size()));
    return images;
  }

  Options opt_;
  Net encoder_, decoder_;
  std::string describe_;
  GpuMemoryPolicy memory_;
};

}  // namespace

std::unique_ptr<Codec> create_taesd(const CodecConfig &resolved) { return std::make_unique<TaesdCodec>(resolved); }
}  // namespace dw::latent::detail

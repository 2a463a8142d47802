// VFI backend (see vfi.h). The only file of lib/interp that includes torch/script.h. Without
// LibTorch it still builds: the constructor then throws a clear Error (vfi_available() is false),
// so the element can offer the backend unconditionally and fail in start() with a reason.
#include "interp/vfi.h"

#ifdef DW_HAVE_TORCH
#include <torch/script.h>

#include <c10/core/InferenceMode.h>

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "interp/plan.h"
#include "latent/torch_common.h"

#ifdef DW_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#endif

namespace dw::interp {

const char *time_input_name(VfiTimeInput t) {
  switch (t) {
    case VfiTimeInput::Auto: return "auto";
    case VfiTimeInput::Column: return "t: Bx1";
    case VfiTimeInput::Map: return "t: Bx1xHxW";
    case VfiTimeInput::Scalar: return "t: float";
    case VfiTimeInput::Midpoint: return "midpoint, bisection";
  }
  return "?";
}

#ifdef DW_HAVE_TORCH

bool vfi_available() { return true; }

// ---------------------------------------------------------------------------------------------
// The model

namespace {

std::string shape_of(const at::Tensor &t) {
  std::string s;
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "x" : "") + std::to_string(t.size(i));
  return s;
}

at::Tensor first_tensor(const c10::IValue &v) {
  if (v.isTensor()) return v.toTensor();
  if (v.isTuple() && !v.toTupleRef().elements().empty() && v.toTupleRef().elements()[0].isTensor())
    return v.toTupleRef().elements()[0].toTensor();
  if (v.isList() && v.toListRef().size() > 0 && v.toListRef()[0].isTensor()) return v.toListRef()[0].toTensor();
  throw Error(std::string("forward returned ") + v.tagKind() + ", expected a tensor");
}

const char *precision_label(at::ScalarType t) {
  return t == at::kHalf ? "fp16" : t == at::kBFloat16 ? "bf16" : "fp32";
}

// Library errors become dw::interp::Error("<what>: <message>") (the shared latent helper).
template <typename Fn>
auto guarded(const std::string &what, Fn &&fn) -> decltype(fn()) {
  return dw::latent::detail::guarded<Error>(what, std::forward<Fn>(fn));
}

}  // namespace

struct VfiInterpolator::Impl {
  VfiConfig cfg;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  torch::jit::Module module;
  VfiTimeInput mode = VfiTimeInput::Auto;
  std::string description;
  // The current pair, padded, on the device in the model's precision.
  at::Tensor a, b;
  int width = 0, height = 0;
  std::vector<uint8_t> last_b_pixels;  // to recognise the next pair's a (a stream's previous b)
  int last_b_channels = 0;
  VfiStats stats;

  // Bookkeeping of device intermediates (what must stay flat in the number of in-betweens).
  void hold(const at::Tensor &t, size_t count) {
    stats.live_intermediates += count;
    live_bytes += t.numel() * t.element_size();
    stats.peak_live_intermediates = std::max(stats.peak_live_intermediates, stats.live_intermediates);
    stats.peak_live_bytes = std::max(stats.peak_live_bytes, live_bytes);
  }
  void release(const at::Tensor &t, size_t count) {
    stats.live_intermediates -= count;
    live_bytes -= t.numel() * t.element_size();
  }
  size_t live_bytes = 0;

  void load();
  VfiTimeInput probe(VfiTimeInput wanted);
  at::Tensor pad(const Image &img) const;
  at::Tensor time_input(const std::vector<double> &ts, int64_t h, int64_t w) const;
  at::Tensor forward(const at::Tensor &x0, const at::Tensor &x1, const std::vector<double> &ts);
  void run_t_model(const std::vector<double> &ts, const std::function<void(size_t, Image &&)> &sink);
  void run_bisection(const std::vector<double> &ts, const std::function<void(size_t, Image &&)> &sink);
  void emit(const at::Tensor &y, const std::function<void(Image &&)> &one);
  void maybe_release_cache();
  // Bisection nodes kept between calls on one pair (see run_bisection), by position t.
  std::map<double, at::Tensor> path;
  void drop_path();
};

void VfiInterpolator::Impl::load() {
  const std::string &path = cfg.model_path;
  if (path.empty()) throw Error("vfi: no model file given (a TorchScript RIFE/FILM export)");
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw Error(path + ": VFI model file not found");
  if (!S_ISREG(st.st_mode)) throw Error(path + ": VFI model is not a regular file");
  if (cfg.pad_multiple < 1 || cfg.pad_multiple > 512)
    throw Error("vfi: pad multiple must be in [1, 512], got " + std::to_string(cfg.pad_multiple));
  if (cfg.batch_size < 1 || cfg.batch_size > 64)
    throw Error("vfi: batch size must be in [1, 64], got " + std::to_string(cfg.batch_size));
  if (cfg.release_interval < 0) throw Error("vfi: release interval must be >= 0");
  try {
    device = latent::detail::parse_device(cfg.device == "cuda" ? "cuda:0" : cfg.device);
  } catch (const latent::Error &e) {
    throw Error(std::string("vfi: ") + e.what());
  }
  latent::detail::configure_device(device);  // TF32 on CUDA
  latent::detail::configure_threads(cfg.threads);
  switch (cfg.precision) {
    case latent::Precision::Auto: dtype = device.is_cuda() ? at::kHalf : at::kFloat; break;
    case latent::Precision::Fp32: dtype = at::kFloat; break;
    case latent::Precision::Bf16: dtype = at::kBFloat16; break;
    case latent::Precision::Fp16:
      if (!device.is_cuda()) throw Error("vfi: fp16 needs a CUDA device (use bf16 or fp32 on the CPU)");
      dtype = at::kHalf;
      break;
  }
  try {
    module = torch::jit::load(path, device);
  } catch (const c10::Error &e) {
    throw Error(path + ": cannot load as a TorchScript module (save it with torch.jit.save): " +
                e.what_without_backtrace());
  }
  module.eval();
  if (dtype != at::kFloat) module.to(dtype);
  mode = probe(cfg.time_input);
  stats = VfiStats{};  // the probe is no frame
  live_bytes = 0;
  description = "vfi " + path.substr(path.find_last_of('/') + 1) + " (" + time_input_name(mode) + ") on " +
                device.str() + ", " + precision_label(dtype) + ", pad " + std::to_string(cfg.pad_multiple);
}

// Finds (or checks) how the model takes t by running it once on a small batch of two: a Bx1 t
// that a map model broadcasts wrongly fails there (2 vs H), which a batch of one would hide.
VfiTimeInput VfiInterpolator::Impl::probe(VfiTimeInput wanted) {
  const std::string &path = cfg.model_path;
  auto method = module.find_method("forward");
  if (!method) throw Error(path + ": TorchScript module has no forward method");
  const auto &args = method->function().getSchema().arguments();  // self first
  const size_t n = args.empty() ? 0 : args.size() - 1;
  if (n != 2 && n != 3)
    throw Error(path + ": forward takes " + std::to_string(n) +
                " inputs; expected forward(img0, img1, t) or a midpoint-only forward(img0, img1)");
  if (wanted == VfiTimeInput::Midpoint && n != 2)
    throw Error(path + ": configured as midpoint-only but forward takes a t");
  if (wanted != VfiTimeInput::Auto && wanted != VfiTimeInput::Midpoint && n != 3)
    throw Error(path + ": forward(img0, img1) takes no t (a midpoint-only model); use the midpoint time input");
  std::vector<VfiTimeInput> candidates;
  if (n == 2) {
    candidates = {VfiTimeInput::Midpoint};
  } else if (wanted != VfiTimeInput::Auto) {
    candidates = {wanted};
  } else if (args[3].type()->kind() == c10::TypeKind::FloatType) {
    candidates = {VfiTimeInput::Scalar};
  } else {
    candidates = {VfiTimeInput::Column, VfiTimeInput::Map};
  }
  const int64_t m = cfg.pad_multiple;
  const int64_t h = (64 + m - 1) / m * m, w = (96 + m - 1) / m * m;
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  std::string failures;
  c10::InferenceMode guard;
  for (VfiTimeInput c : candidates) {
    mode = c;
    const int64_t batch = c == VfiTimeInput::Scalar || c == VfiTimeInput::Midpoint ? 1 : 2;
    at::Tensor x0 = at::zeros({batch, 3, h, w}, opts), x1 = at::ones({batch, 3, h, w}, opts);
    try {
      at::Tensor y = forward(x0, x1, batch == 2 ? std::vector<double>{0.25, 0.75} : std::vector<double>{0.5});
      (void)y;
      return c;
    } catch (const Error &e) {
      failures += std::string(failures.empty() ? "" : "; ") + time_input_name(c) + ": " + e.what();
    }
  }
  mode = VfiTimeInput::Auto;
  throw Error(path + ": the model does not follow forward(img0, img1[, t]) on a " + std::to_string(h) + "x" +
              std::to_string(w) + " probe (" + failures + ")");
}

at::Tensor VfiInterpolator::Impl::pad(const Image &img) const {
  if ((img.channels != 3 && img.channels != 4) ||
      img.pixels.size() != static_cast<size_t>(img.width) * img.height * img.channels)
    throw Error("vfi: keyframe must be RGB or RGBA with a buffer matching its size");
  at::Tensor x;
  if (device.is_cuda()) {
    // The 8-bit image goes up (a quarter of the float bytes) from pinned memory without blocking
    // this thread; conversion and padding run on the GPU.
    at::Tensor u8 = at::from_blob(const_cast<uint8_t *>(img.pixels.data()), {img.height, img.width, img.channels},
                                  at::kByte)
                        .pin_memory();
    x = u8.to(device, at::kByte, /*non_blocking=*/true).slice(2, 0, 3).permute({2, 0, 1}).unsqueeze(0);
    x = x.to(at::kFloat).div_(255.0f);
  } else {
    x = latent::detail::image_to_tensor(img);  // 1x3xHxW float32 [0,1]
  }
  const int64_t m = cfg.pad_multiple;
  const int64_t ph = (m - img.height % m) % m, pw = (m - img.width % m) % m;
  // Replicate (not zero) padding: a black border would pull flow estimates toward it.
  if (ph || pw) x = at::replication_pad2d(x, {0, pw, 0, ph});
  return x.to(device, dtype).contiguous();
}

at::Tensor VfiInterpolator::Impl::time_input(const std::vector<double> &ts, int64_t h, int64_t w) const {
  std::vector<float> tf(ts.begin(), ts.end());
  const auto n = static_cast<int64_t>(tf.size());
  // clone: from_blob aliases tf, and to() is a no-op for float on the CPU.
  at::Tensor t = at::from_blob(tf.data(), {n, 1}, at::kFloat).clone().to(device, dtype);
  if (mode == VfiTimeInput::Map) t = t.view({n, 1, 1, 1}).expand({n, 1, h, w}).contiguous();
  return t;
}

at::Tensor VfiInterpolator::Impl::forward(const at::Tensor &x0, const at::Tensor &x1, const std::vector<double> &ts) {
  const int64_t n = x0.size(0), h = x0.size(2), w = x0.size(3);
  std::vector<c10::IValue> in{x0, x1};
  if (mode == VfiTimeInput::Scalar) in.emplace_back(ts.at(0));
  else if (mode != VfiTimeInput::Midpoint) in.emplace_back(time_input(ts, h, w));
  at::Tensor y;
  try {
    y = first_tensor(module.forward(in));
  } catch (const c10::Error &e) {
    throw Error(cfg.model_path + ": forward failed (" + time_input_name(mode) + ", input " + shape_of(x0) +
                "): " + e.what_without_backtrace());
  } catch (const std::exception &e) {  // the TorchScript interpreter's own errors
    throw Error(cfg.model_path + ": forward failed (" + time_input_name(mode) + ", input " + shape_of(x0) +
                "): " + e.what());
  }
  stats.model_calls++;
  if (y.dim() != 4 || y.size(0) != n || y.size(1) != 3 || y.size(2) != h || y.size(3) != w)
    throw Error(cfg.model_path + ": forward returned " + shape_of(y) + " for input " + shape_of(x0) + ", expected " +
                std::to_string(n) + "x3x" + std::to_string(h) + "x" + std::to_string(w));
  return y;
}

// Moves a batch of results to the CPU (cropped, clamped, 8-bit) and hands them out one by one.
void VfiInterpolator::Impl::emit(const at::Tensor &y, const std::function<void(Image &&)> &one) {
  for (Image &img : latent::detail::tensor_to_images(y, width, height)) {
    stats.frames++;
    one(std::move(img));
  }
}

void VfiInterpolator::Impl::run_t_model(const std::vector<double> &ts,
                                        const std::function<void(size_t, Image &&)> &sink) {
  const size_t bs = mode == VfiTimeInput::Scalar ? 1 : static_cast<size_t>(cfg.batch_size);
  for (size_t i = 0; i < ts.size(); i += bs) {
    const size_t n = std::min(bs, ts.size() - i);
    std::vector<double> chunk(ts.begin() + static_cast<std::ptrdiff_t>(i),
                              ts.begin() + static_cast<std::ptrdiff_t>(i + n));
    for (double t : chunk)
      if (!std::isfinite(t) || t <= 0.0 || t >= 1.0)
        throw Error("vfi: t must be inside (0, 1), got " + std::to_string(t));
    const auto nb = static_cast<int64_t>(n);
    at::Tensor x0 = nb == 1 ? a : a.expand({nb, -1, -1, -1}).contiguous();
    at::Tensor x1 = nb == 1 ? b : b.expand({nb, -1, -1, -1}).contiguous();
    at::Tensor y = forward(x0, x1, chunk);
    hold(y, n);
    size_t k = i;
    try {
      emit(y, [&](Image &&img) { sink(k++, std::move(img)); });
    } catch (...) {
      release(y, n);
      throw;
    }
    release(y, n);
  }
}

// Runs plan.h's depth-first schedule. Callers often ask for a pair's ts in ascending chunks (to push
// early); so the nodes still alive at the last emit (the path from the root to it: at most the
// depth) are kept for the next call on this pair instead of being made again.
void VfiInterpolator::Impl::run_bisection(const std::vector<double> &ts,
                                          const std::function<void(size_t, Image &&)> &sink) {
  double tolerance = cfg.bisection_tolerance;
  if (tolerance <= 0) {
    // plan.h's default (a quarter of the smallest gap between the ts, 0 and 1) depends on which ts
    // one call gets: t = 7/16 asked alone would snap to 1/2. Capped at 1/128, a t = k/2^m (m <= 6)
    // is exact whatever the chunking, and any other t lands within 1/128 of a pair's duration.
    std::vector<double> sorted = ts;
    std::sort(sorted.begin(), sorted.end());
    double gap = 1.0, prev = 0.0;
    for (double t : sorted) {
      if (t - prev > 0) gap = std::min(gap, t - prev);
      prev = t;
    }
    gap = std::min(gap, 1.0 - prev);
    tolerance = std::min(gap / 4.0, 1.0 / 128.0);
  }
  const std::vector<BisectStep> steps = bisection_schedule(ts, tolerance);
  size_t last_emit = 0;
  std::set<double> needed;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].op == BisectStep::Op::Emit) last_emit = i;
    if (steps[i].op == BisectStep::Op::Compute) needed.insert(steps[i].t);
  }
  // Kept nodes this call will not use go now, not at the end (memory stays at the path length).
  for (auto it = path.begin(); it != path.end();) {
    if (needed.count(it->first)) {
      ++it;
    } else {
      release(it->second, 1);
      it = path.erase(it);
    }
  }
  std::map<double, at::Tensor> kept = std::move(path);
  path.clear();
  std::vector<at::Tensor> slots{a, b};  // slots 0 and 1 are the keyframes, not intermediates
  auto slot = [&](int i) -> at::Tensor & {
    if (i < 0 || static_cast<size_t>(i) >= slots.size() || !slots[static_cast<size_t>(i)].defined())
      throw Error("vfi: bisection schedule uses empty slot " + std::to_string(i));
    return slots[static_cast<size_t>(i)];
  };
  try {
    for (size_t i = 0; i < steps.size(); ++i) {
      const BisectStep &s = steps[i];
      switch (s.op) {
        case BisectStep::Op::Compute: {
          at::Tensor y;
          auto it = kept.find(s.t);
          if (it != kept.end()) {  // still counted as live
            y = std::move(it->second);
            kept.erase(it);
          } else {
            y = forward(slot(s.left), slot(s.right), {0.5});
            hold(y, 1);
          }
          if (static_cast<size_t>(s.out) >= slots.size()) slots.resize(static_cast<size_t>(s.out) + 1);
          slots[static_cast<size_t>(s.out)] = y;
          break;
        }
        case BisectStep::Op::Emit:
          emit(slot(s.out), [&](Image &&img) { sink(s.frame, std::move(img)); });
          break;
        case BisectStep::Op::Release:
          if (i > last_emit) path[s.t] = slot(s.out);
          else release(slot(s.out), 1);
          slots[static_cast<size_t>(s.out)] = at::Tensor();
          break;
      }
    }
  } catch (...) {
    for (size_t i = 2; i < slots.size(); ++i)
      if (slots[i].defined()) release(slots[i], 1);
    for (auto &[t, x] : kept) release(x, 1);
    drop_path();
    throw;
  }
}

void VfiInterpolator::Impl::drop_path() {
  for (auto &[t, x] : path) release(x, 1);
  path.clear();
}

void VfiInterpolator::Impl::maybe_release_cache() {
#ifdef DW_HAVE_CUDA
  if (device.is_cuda() && cfg.release_interval > 0 && stats.pairs % static_cast<uint64_t>(cfg.release_interval) == 0) {
    c10::cuda::CUDACachingAllocator::emptyCache();
    stats.cache_releases++;
  }
#endif
}

// ---------------------------------------------------------------------------------------------

VfiInterpolator::VfiInterpolator(const VfiConfig &config) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = config;
  guarded("vfi " + config.model_path, [&] { impl_->load(); });
}

VfiInterpolator::~VfiInterpolator() = default;

std::string VfiInterpolator::describe() const { return impl_->description; }

void VfiInterpolator::set_pair(const Image &a, const Image &b) {
  if (a.empty() || b.empty()) throw Error("vfi: empty keyframe");
  if (a.width != b.width || a.height != b.height)
    throw Error("vfi: keyframes differ in size (" + std::to_string(a.width) + "x" + std::to_string(a.height) + " vs " +
                std::to_string(b.width) + "x" + std::to_string(b.height) + ")");
  guarded("vfi set_pair", [&] {
    c10::InferenceMode guard;
    Impl &p = *impl_;
    // The new a is the last b in a stream: reuse its padded tensor instead of uploading it again.
    const bool chained = p.b.defined() && p.width == a.width && p.height == a.height &&
                         p.last_b_channels == a.channels && p.last_b_pixels == a.pixels;
    at::Tensor next_a = chained ? p.b : p.pad(a);
    p.drop_path();  // nodes of the previous pair
    p.b = p.pad(b);
    p.a = next_a;
    p.width = a.width;
    p.height = a.height;
    p.last_b_pixels = b.pixels;
    p.last_b_channels = b.channels;
    p.stats.pairs++;
    p.maybe_release_cache();
  });
}

std::vector<Image> VfiInterpolator::frames(const std::vector<double> &ts) {
  std::vector<Image> out(ts.size());
  each_frame(ts, [&](size_t i, Image &&img) { out[i] = std::move(img); });
  return out;
}

void VfiInterpolator::each_frame(const std::vector<double> &ts, const std::function<void(size_t, Image &&)> &sink) {
  Impl &p = *impl_;
  if (!p.a.defined()) throw Error("vfi: frames() before set_pair()");
  if (ts.empty()) return;
  guarded("vfi " + p.cfg.model_path, [&] {
    c10::InferenceMode guard;
    if (p.mode == VfiTimeInput::Midpoint) p.run_bisection(ts, sink);
    else p.run_t_model(ts, sink);
  });
}

void VfiInterpolator::reset() {
  impl_->drop_path();
  impl_->a = at::Tensor();
  impl_->b = at::Tensor();
  impl_->last_b_pixels.clear();
  impl_->last_b_pixels.shrink_to_fit();
}

VfiTimeInput VfiInterpolator::time_input() const { return impl_->mode; }
VfiStats VfiInterpolator::stats() const { return impl_->stats; }
void VfiInterpolator::reset_peak() {
  impl_->stats.peak_live_intermediates = impl_->stats.live_intermediates;
  impl_->stats.peak_live_bytes = impl_->live_bytes;
}

#else  // no LibTorch

bool vfi_available() { return false; }

struct VfiInterpolator::Impl {};

VfiInterpolator::VfiInterpolator(const VfiConfig &config) {
  throw Error("vfi: this build has no LibTorch (install libtorch-dev and rebuild) for model " + config.model_path);
}
VfiInterpolator::~VfiInterpolator() = default;
std::string VfiInterpolator::describe() const { return "vfi (no LibTorch)"; }
void VfiInterpolator::set_pair(const Image &, const Image &) { throw Error("vfi: no LibTorch"); }
std::vector<Image> VfiInterpolator::frames(const std::vector<double> &) { throw Error("vfi: no LibTorch"); }
void VfiInterpolator::each_frame(const std::vector<double> &, const std::function<void(size_t, Image &&)> &) {
  throw Error("vfi: no LibTorch");
}
void VfiInterpolator::reset() {}
VfiTimeInput VfiInterpolator::time_input() const { return VfiTimeInput::Auto; }
VfiStats VfiInterpolator::stats() const { return {}; }
void VfiInterpolator::reset_peak() {}

#endif

}  // namespace dw::interp

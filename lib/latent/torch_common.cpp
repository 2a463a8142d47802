// Shared LibTorch plumbing: device/precision resolution, CPU feature detection, threads,
// image <-> tensor conversion, batched slerp in ATen.
#include "latent/torch_common.h"
#include "latent/raw.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#ifdef DW_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace dw::latent::detail {

bool torch_cuda_available() {
#ifdef DW_HAVE_CUDA
  try {
    return at::hasCUDA() && c10::cuda::device_count() > 0;  // stable in 1.13 .. 2.x
  } catch (...) {
    return false;
  }
#else
  return false;
#endif
}

bool cpu_has_native_bf16() {
  static const bool has = [] {
    if (const char *env = std::getenv("DW_LATENT_BF16")) return std::strcmp(env, "0") != 0;
#if defined(__x86_64__) || defined(__i386__)
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool amx_bf16 = (edx >> 22) & 1;
    const bool avx512f = (ebx >> 16) & 1;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    bool avx512_bf16 = false;
    if (eax >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) avx512_bf16 = (a1 >> 5) & 1;
    // oneDNN's bf16 kernels also need the OS to save the AVX-512 state (XCR0 bits 5-7).
    unsigned c0 = 0, d0 = 0, a0 = 0, b0 = 0;
    __get_cpuid(1, &a0, &b0, &c0, &d0);
    const bool osxsave = (c0 >> 27) & 1;
    bool zmm_state = false;
    if (osxsave) {
      unsigned lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      zmm_state = (lo & 0xe6) == 0xe6;
    }
    return at::hasMKLDNN() && zmm_state && avx512f && (avx512_bf16 || amx_bf16);
#else
    return false;
#endif
  }();
  return has;
}

Precision resolve_precision(Precision p, const std::string &device) {
  if (p != Precision::Auto) return p;
  if (device.rfind("cuda", 0) == 0) return Precision::Fp16;
  return cpu_has_native_bf16() ? Precision::Bf16 : Precision::Fp32;
}

at::ScalarType scalar_type(Precision p) {
  switch (p) {
    case Precision::Fp16: return at::kHalf;
    case Precision::Bf16: return at::kBFloat16;
    default: return at::kFloat;
  }
}

std::string device_string(const at::Device &d) { return d.str(); }

at::Device parse_device(const std::string &device) {
  if (device == "cpu") return at::Device(at::kCPU);
  if (device.rfind("cuda:", 0) == 0) {
#ifndef DW_HAVE_CUDA
    throw Error("device '" + device + "': CUDA requested but this LibTorch has no CUDA (CPU-only build)");
#else
    if (!torch_cuda_available())
      throw Error("device '" + device + "': CUDA requested but not available (no GPU or driver)");
    const int index = std::atoi(device.c_str() + 5);
    const int count = static_cast<int>(c10::cuda::device_count());
    if (index < 0 || index >= count)
      throw Error("device '" + device + "': no such CUDA device (this machine has " + std::to_string(count) +
                  ", cuda:0" + (count > 1 ? "..cuda:" + std::to_string(count - 1) : std::string()) + ")");
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
#endif
  }
  throw Error("invalid device '" + device + "'");
}

void configure_threads(int threads) {
  static std::mutex m;
  static int configured = 0;
  std::lock_guard<std::mutex> lock(m);
  int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (n <= configured) return;
  try {
    at::set_num_threads(n);
    configured = n;
  } catch (const c10::Error &) {
    // The native pool cannot be resized once used; keep what it has.
    configured = n;
  }
}

void configure_device(const at::Device &device) {
  if (device.is_cuda()) {
    // TF32 for the fp32 path (10-bit mantissa products, fp32 accumulation; bench/latent --table
    // prints the oracle error with it on and off); cuDNN picks the fastest convolution per shape.
    at::globalContext().setAllowTF32CuBLAS(true);
    at::globalContext().setAllowTF32CuDNN(true);
    at::globalContext().setBenchmarkCuDNN(true);
  }
}

namespace {
void check_image(const Image &image) {
  if (image.width <= 0 || image.height <= 0 || (image.channels != 3 && image.channels != 4))
    throw Error("encode: expected a non-empty RGB or RGBA image, got " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + "x" + std::to_string(image.channels));
  if (image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels)
    throw Error("encode: image buffer size does not match its dimensions");
  if (image.width > 16384 || image.height > 16384) throw Error("encode: image larger than 16384 pixels");
}
}  // namespace

at::Tensor image_to_device_tensor(const Image &image, const at::Device &device) {
  if (!device.is_cuda()) return image_to_tensor(image).to(device);
  check_image(image);
  at::Tensor host = at::empty({image.height, image.width, image.channels},
                              at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr<uint8_t>(), image.pixels.data(), image.pixels.size());
  // The caching host allocator records the copy's stream, so the pinned block is not reused early.
  at::Tensor dev = host.to(device, /*non_blocking=*/true);
  return dev.slice(2, 0, 3).permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div_(255.0f).contiguous();
}

GpuMemory gpu_memory(const at::Device &device) {
  GpuMemory m;
#ifdef DW_HAVE_CUDA
  if (!device.is_cuda()) return m;
  const auto index = device.has_index() ? device.index() : static_cast<c10::DeviceIndex>(0);
  // Index 0 of each stat array is the aggregate over pool types (StatType::AGGREGATE in every version).
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  m.allocated = stats.allocated_bytes[0].current;
  m.reserved = stats.reserved_bytes[0].current;
  c10::cuda::CUDAGuard guard(index);
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
    m.device_total = static_cast<int64_t>(total_b);
    m.device_used = static_cast<int64_t>(total_b - free_b);
  }
#else
  (void)device;
#endif
  return m;
}

void release_gpu_cache(const at::Device &device) {
#ifdef DW_HAVE_CUDA
  if (!device.is_cuda()) return;
  // Blocks still used by queued kernels are only released once those finish.
  c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

void GpuMemoryPolicy::configure(const at::Device &device, int64_t max_mb, int release_interval) {
  if (max_mb < 0) throw Error("max_gpu_memory_mb must be >= 0 (0 = no cap)");
  if (release_interval < 0) throw Error("release_interval must be >= 0");
  device_ = device;
  max_bytes_ = max_mb * (int64_t(1) << 20);
  interval_ = release_interval;
#ifdef DW_HAVE_CUDA
  if (device.is_cuda() && max_bytes_ > 0) {
    const GpuMemory m = gpu_memory(device);
    if (m.device_total > 0) {
      const double fraction = std::min(1.0, static_cast<double>(max_bytes_) / static_cast<double>(m.device_total));
      c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, device.index());
    }
  }
#endif
}

void GpuMemoryPolicy::after_decode(int64_t frames) {
  if (!device_.is_cuda()) return;
  since_trim_ += frames;
  bool trim = interval_ > 0 && since_trim_ >= interval_;
  if (!trim && max_bytes_ > 0) trim = gpu_memory(device_).reserved > max_bytes_;
  if (!trim) return;
  release_gpu_cache(device_);
  since_trim_ = 0;
  ++trims_;
}

at::Tensor image_to_tensor(const Image &image) {
  check_image(image);
  at::Tensor t = at::from_blob(const_cast<uint8_t *>(image.pixels.data()), {image.height, image.width, image.channels},
                               at::kByte);
  return t.slice(2, 0, 3).permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div_(255.0f).contiguous();
}

std::vector<Image> tensor_to_images(const at::Tensor &t, int width, int height) {
  at::Tensor u8 = t.slice(2, 0, height)
                      .slice(3, 0, width)
                      .to(at::kFloat)
                      .clamp(0.0, 1.0)
                      .mul(255.0)
                      .round()
                      .to(at::kByte)
                      .permute({0, 2, 3, 1})
                      .contiguous();
  at::Tensor host;
  if (u8.is_cuda()) {
    host = at::empty(u8.sizes(), at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    host.copy_(u8, /*non_blocking=*/true);
#ifdef DW_HAVE_CUDA
    c10::cuda::getCurrentCUDAStream(u8.device().index()).synchronize();
#endif
  } else {
    host = u8;
  }
  const int64_t n = host.size(0);
  std::vector<Image> out;
  out.reserve(static_cast<size_t>(n));
  const size_t bytes = static_cast<size_t>(width) * height * 3;
  for (int64_t i = 0; i < n; ++i) {
    Image img(width, height, 3);
    std::memcpy(img.pixels.data(), host[i].data_ptr<uint8_t>(), bytes);
    out.push_back(std::move(img));
  }
  return out;
}

at::Tensor slerp_tensor(const at::Tensor &a, const at::Tensor &b, double t) {
  const int64_t n = a.size(0);
  const auto compute = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor af = a.reshape({n, -1}).to(compute), bf = b.reshape({n, -1}).to(compute);
  at::Tensor ad = af.to(at::kDouble), bd = bf.to(at::kDouble);
  at::Tensor dot = (ad * bd).sum(1), na = (ad * ad).sum(1), nb = (bd * bd).sum(1);
  at::Tensor cos = dot / (na * nb).sqrt();
  at::Tensor use_slerp = (na > 0).logical_and(nb > 0).logical_and(cos.abs() < 0.9995).logical_and(cos.isfinite());
  at::Tensor theta = cos.clamp(-1.0, 1.0).acos();
  at::Tensor sin_theta = theta.sin();
  at::Tensor s0 = at::where(use_slerp, ((1.0 - t) * theta).sin() / sin_theta, at::full_like(theta, 1.0 - t));
  at::Tensor s1 = at::where(use_slerp, (t * theta).sin() / sin_theta, at::full_like(theta, t));
  at::Tensor out = s0.to(compute).unsqueeze(1) * af + s1.to(compute).unsqueeze(1) * bf;
  return out.reshape(a.sizes()).to(a.scalar_type());
}

}  // namespace dw::latent::detail

namespace dw::latent::detail {

std::string TensorLatent::describe() const {
  std::string s;
  for (int64_t i = 0; i < tensor_.dim(); ++i) s += (i ? "x" : "") + std::to_string(tensor_.size(i));
  const char *dt = tensor_.scalar_type() == at::kBFloat16 ? "bf16"
                   : tensor_.scalar_type() == at::kHalf   ? "fp16"
                   : tensor_.scalar_type() == at::kFloat  ? "fp32"
                                                          : c10::toString(tensor_.scalar_type());
  return s + " " + dt + " " + tensor_.device().str();
}

std::vector<float> TensorLatent::pooled(int grid) const {
  if (grid < 1) throw Error("pooled latent: grid must be >= 1 (got " + std::to_string(grid) + ")");
  try {
    c10::InferenceMode guard;
    // Average over the spatial grid cells: a small, size-independent embedding of the latent.
    at::Tensor p = at::adaptive_avg_pool2d(tensor_.to(at::kFloat), {grid, grid}).to(at::kCPU).contiguous();
    const float *data = p.data_ptr<float>();
    return std::vector<float>(data, data + p.numel());
  } catch (const c10::Error &e) {
    throw Error(std::string("pooled latent: ") + e.what_without_backtrace());
  }
}

const TensorLatent &as_tensor_latent(const Latent &l, const char *backend) {
  auto *p = dynamic_cast<const TensorLatent *>(&l);
  if (!p || !p->tensor().defined()) throw Error(std::string(backend) + ": latent was not made by a model codec");
  return *p;
}

int check_interpolate(const TensorLatent &a, const TensorLatent &b, const std::vector<double> &ts, int batch_size) {
  if (a.tensor().sizes() != b.tensor().sizes() || a.image_width() != b.image_width() ||
      a.image_height() != b.image_height())
    throw Error("interpolate: latents a (" + a.describe() + ", image " + std::to_string(a.image_width()) + "x" +
                std::to_string(a.image_height()) + ") and b (" + b.describe() + ", image " +
                std::to_string(b.image_width()) + "x" + std::to_string(b.image_height()) +
                ") come from images of different sizes");
  for (double t : ts)
    if (!std::isfinite(t)) throw Error("interpolate: t must be finite");
  return std::clamp(batch_size, 1, 64);
}

}  // namespace dw::latent::detail

namespace dw::latent {
namespace {
at::Tensor from_float(const FloatTensor &t) {
  if (t.shape.empty() || t.data.size() != t.numel()) throw Error("raw tensor: data size does not match shape");
  return at::from_blob(const_cast<float *>(t.data.data()), t.shape, at::kFloat).clone();
}
FloatTensor to_float(const at::Tensor &t) {
  at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
  FloatTensor out;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.data.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return out;
}
detail::RawAccess &raw(Codec &codec) {
  auto *r = dynamic_cast<detail::RawAccess *>(&codec);
  if (!r) throw Error("raw tensor access needs a model codec (not " + codec.describe() + ")");
  return *r;
}
}  // namespace

FloatTensor encode_raw(Codec &codec, const FloatTensor &images) {
  return detail::guarded("encode_raw", [&] {
    c10::InferenceMode guard;
    return to_float(raw(codec).encode_tensor(from_float(images)));
  });
}
FloatTensor decode_raw(Codec &codec, const FloatTensor &latents) {
  return detail::guarded("decode_raw", [&] {
    c10::InferenceMode guard;
    return to_float(raw(codec).decode_tensor(from_float(latents)));
  });
}
FloatTensor slerp_raw(const FloatTensor &a, const FloatTensor &b, double t) {
  return detail::guarded("slerp_raw", [&] {
    c10::InferenceMode guard;
    at::Tensor ta = from_float(a), tb = from_float(b);
    if (ta.sizes() != tb.sizes()) throw Error("slerp_raw: shapes differ");
    return to_float(detail::slerp_tensor(ta, tb, t));
  });
}
}  // namespace dw::latent

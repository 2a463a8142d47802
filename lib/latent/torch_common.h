// Internal helpers shared by the LibTorch backends (ATen allowed here: included by .cpp files of
// lib/latent only, never by codec.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <string>

#include "latent/codec.h"
#include "latent/internal.h"

namespace dw::latent::detail {

// Runs fn converting c10::Error / std::exception into E("<what>: <message>") (E: the calling
// module's error type, dw::latent::Error by default; lib/interp uses its own).
template <typename E = Error, typename Fn>
auto guarded(const std::string &what, Fn &&fn) -> decltype(fn()) {
  try {
    // With the OpenMP backend the thread count is per calling thread: a codec created on one thread
    // and used from another (an element's worker) would otherwise run its kernels single-threaded.
    at::init_num_threads();
    return fn();
  } catch (const E &) {
    throw;
  } catch (const c10::Error &e) {
    throw E(what + ": " + e.what_without_backtrace());
  } catch (const std::exception &e) {
    throw E(what + ": " + e.what());
  }
}

// Parses a normalised device ("cpu", "cuda:N"); throws when CUDA is asked for but missing.
at::Device parse_device(const std::string &device);
at::ScalarType scalar_type(Precision p);
bool cpu_has_native_bf16();
// Sets the intra-op thread count once per process (0 = cores); later calls may raise it.
void configure_threads(int threads);
// Installs the caching CPU allocator (idempotent); DW_LATENT_CACHING_ALLOCATOR=0 disables.
void install_caching_cpu_allocator();
// Process-wide precision/device setup (TF32 on CUDA).
void configure_device(const at::Device &device);

// Image (RGB/RGBA u8) -> 1x3xHxW float32 [0,1] on CPU.
at::Tensor image_to_tensor(const Image &image);
// The same on `device`: on CUDA the 8-bit pixels go through a pinned host buffer (LibTorch's caching
// host allocator) with a non-blocking copy and are converted to float on the GPU (4x less to copy).
at::Tensor image_to_device_tensor(const Image &image, const at::Device &device);
// NCHW [0,1] float tensor on any device -> images (clamped, cropped to width x height).
std::vector<Image> tensor_to_images(const at::Tensor &t, int width, int height);
// slerp along dim 0 over each item's flattened rest; lerp when nearly parallel (same maths as
// dw::latent::slerp). Computed in float32 (or float64 when the inputs are).
at::Tensor slerp_tensor(const at::Tensor &a, const at::Tensor &b, double t);

std::string device_string(const at::Device &d);

// Memory of one CUDA device as LibTorch and the driver see it (all 0 on CPU or without CUDA).
struct GpuMemory {
  int64_t allocated = 0;    // bytes in live tensors (caching allocator)
  int64_t reserved = 0;     // bytes the caching allocator holds (live + cached)
  int64_t device_used = 0;  // bytes used on the device by every process (cudaMemGetInfo)
  int64_t device_total = 0;
};
GpuMemory gpu_memory(const at::Device &device);
// Returns the caching allocator's unused blocks to the driver (no-op on CPU).
void release_gpu_cache(const at::Device &device);

// CodecConfig::max_gpu_memory_mb / release_interval for one codec (see codec.h). On CPU every call
// is a no-op. Not thread-safe: the codec's own calls are serialised by SharedCodec.
class GpuMemoryPolicy {
 public:
  // Validates and applies the cap (CUDA: the caching allocator's memory fraction of the device).
  void configure(const at::Device &device, int64_t max_mb, int release_interval);
  // After decoding `frames` frames: trims when the interval is due or the cache is over the cap.
  void after_decode(int64_t frames);
  uint64_t trims() const { return trims_; }

 private:
  at::Device device_ = at::kCPU;
  int64_t max_bytes_ = 0;
  int interval_ = 0;
  int64_t since_trim_ = 0;
  uint64_t trims_ = 0;
};

}  // namespace dw::latent::detail

namespace dw::latent::detail {

// The latent of the model backends: a tensor on the codec's device, in its precision.
class TensorLatent final : public Latent {
 public:
  TensorLatent(at::Tensor t, int width, int height) : tensor_(std::move(t)), width_(width), height_(height) {}
  int image_width() const override { return width_; }
  int image_height() const override { return height_; }
  std::string describe() const override;
  std::vector<float> pooled(int grid) const override;
  const at::Tensor &tensor() const { return tensor_; }

 private:
  at::Tensor tensor_;
  int width_, height_;
};

// Implemented by the model codecs for raw.h.
class RawAccess {
 public:
  virtual ~RawAccess() = default;
  virtual at::Tensor encode_tensor(const at::Tensor &images) = 0;  // float32 NCHW in/out
  virtual at::Tensor decode_tensor(const at::Tensor &latents) = 0;
};

// Checks that a latent was made by a model backend; returns its tensor.
const TensorLatent &as_tensor_latent(const Latent &l, const char *backend);
// Validates ts and a/b compatibility for interpolate(); returns the clamped batch size.
int check_interpolate(const TensorLatent &a, const TensorLatent &b, const std::vector<double> &ts, int batch_size);

}  // namespace dw::latent::detail

// Internal helpers shared by the LibTorch backends (ATen allowed here: included by .cpp files of
// lib/latent only, never by codec.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <string>

#include "latent/codec.h"
#include "latent/internal.h"

namespace dw::latent::detail {

// Runs fn converting c10::Error / std::exception into Error("<what>: <message>").
template <typename Fn>
auto guarded(const std::string &what, Fn &&fn) -> decltype(fn()) {
  try {
    // With the OpenMP backend the thread count is per calling thread: a codec created on one thread
    // and used from another (an element's worker) would otherwise run its kernels single-threaded.
    at::init_num_threads();
    return fn();
  } catch (const Error &) {
    throw;
  } catch (const c10::Error &e) {
    throw Error(what + ": " + e.what_without_backtrace());
  } catch (const std::exception &e) {
    throw Error(what + ": " + e.what());
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
// NCHW [0,1] float tensor on any device -> images (clamped, cropped to width x height).
std::vector<Image> tensor_to_images(const at::Tensor &t, int width, int height);
// slerp along dim 0 over each item's flattened rest; lerp when nearly parallel (same maths as
// dw::latent::slerp). Computed in float32 (or float64 when the inputs are).
at::Tensor slerp_tensor(const at::Tensor &a, const at::Tensor &b, double t);

std::string device_string(const at::Device &d);

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

// VFI backend: a learned video-frame-interpolation model exported as TorchScript (a RIFE or FILM
// export the user brings; no weights ship with us). LibTorch-free header (ATen stays in vfi.cpp).
//
// Model conventions (detected at load by a small probe unless VfiConfig::time_input says which):
//   forward(img0, img1, t)   img0/img1: Bx3xHxW float in [0,1] (RGB), t: Bx1 (FILM), Bx1xHxW
//                            (RIFE's timestep map) or a float (one frame per call); returns
//                            Bx3xHxW (a tensor, or a tuple/list whose first item is one)
//   forward(img0, img1)      midpoint-only: returns the frame halfway; other t are reached by
//                            recursive bisection in the order of plan.h's bisection_schedule():
//                            t = k/(N+1) with N = 2^m - 1 is exact (N model calls); another t is
//                            served by the first bisection point within bisection_tolerance of it
//                            (default: a quarter of the smallest gap between the ts, 0 and 1, at
//                            most 1/128, so that chunked calls give the same frames), e.g. N = 5
//                            gets t within 1/128 of k/6 for ~3x the model calls of N = 7: prefer
//                            frames = 2^m - 1 for midpoint models
// Production rules: one pair at a time; in-betweens are made in batches of batch_size (t models)
// or depth first (midpoint models: at most m intermediates alive for 2^m - 1 in-betweens, never
// all of them); each result goes to the CPU as soon as it is made; inputs are replicate-padded to
// pad_multiple and results cropped back; fp32/fp16/bf16 (fp16 needs CUDA), TF32 on CUDA, and the
// CUDA caching allocator is trimmed every release_interval pairs so a GPU shared with ComfyUI does
// not fill up with our free blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "image/image.h"
#include "interp/interpolator.h"
#include "latent/codec.h"

namespace dw::interp {

enum class VfiTimeInput {
  Auto,      // probe: Bx1, then Bx1xHxW, then a float; 2-argument forward = Midpoint
  Column,    // t: Bx1
  Map,       // t: Bx1xHxW
  Scalar,    // t: float (batch of one frame per call)
  Midpoint,  // forward(img0, img1)
};
const char *time_input_name(VfiTimeInput t);

struct VfiConfig {
  std::string model_path;  // TorchScript file (torch.jit.save / torch::jit::Module::save)
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N"
  // Auto: fp16 on CUDA, fp32 on CPU. Fp16 on a CPU is an error (no fast kernels; bf16 is fine).
  latent::Precision precision = latent::Precision::Auto;
  VfiTimeInput time_input = VfiTimeInput::Auto;
  int pad_multiple = 32;      // inputs replicate-padded to a multiple of this (RIFE: 32, FILM: 64)
  int batch_size = 1;         // t models: in-betweens per forward call (device memory ~ batch x frame)
  double bisection_tolerance = 0;  // midpoint models: see above; <= 0 = default (<= 1/128)
  int threads = 0;            // CPU intra-op threads; 0 = number of cores
  int release_interval = 8;   // CUDA: empty the caching allocator every N pairs; 0 = never
};

// Counters; "live intermediates" are model outputs (or bisection nodes) held on the device and not
// yet handed to the CPU or dropped. Their peak is what stays flat in the number of in-betweens.
struct VfiStats {
  uint64_t pairs = 0;
  uint64_t frames = 0;
  uint64_t model_calls = 0;
  uint64_t cache_releases = 0;
  size_t live_intermediates = 0;
  size_t peak_live_intermediates = 0;
  size_t peak_live_bytes = 0;
};

// False in builds without LibTorch (then the constructor throws Error saying so).
bool vfi_available();

class VfiInterpolator final : public PairInterpolator {
 public:
  // Loads and probes the model (throws Error naming the file: missing, not TorchScript, wrong
  // signature or output shape; or a bad device/precision/pad value).
  explicit VfiInterpolator(const VfiConfig &config);
  ~VfiInterpolator() override;
  std::string describe() const override;  // "vfi model.pt (t: Bx1) on cpu, fp32, pad 32"
  void set_pair(const Image &a, const Image &b) override;
  std::vector<Image> frames(const std::vector<double> &ts) override;
  // As frames(), handing each in-between to sink(index into ts, image) as soon as it is on the
  // CPU and keeping none: given order (t models, per batch) or ascending t (midpoint models).
  void each_frame(const std::vector<double> &ts, const std::function<void(size_t, Image &&)> &sink);
  void reset() override;
  VfiTimeInput time_input() const;  // as configured or probed
  VfiStats stats() const;
  void reset_peak();  // peak_* := current values (to measure one call)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dw::interp

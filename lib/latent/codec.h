// Latent codecs: encode keyframes into a latent space once, interpolate (slerp) between two
// latents and decode batches of in-between frames. GStreamer-free and LibTorch-free in this header
// (ATen stays in the backends' .cpp files, so including this is cheap).
//
// Backends:
//   taesd        native ATen TAESD family (4/16/32 latent channels, TAEF2 midblock GroupNorm), .safetensors
//   torchscript  a user-exported encoder/decoder torch.jit module pair (any other VAE)
//   blend        no model: pixel-space crossfade; always available (also with -Dtorch=disabled)
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "image/image.h"

namespace dw::latent {

// Every failure of this module (missing/corrupt model file, CUDA error, wrong image size) is thrown
// as this, with a message naming the file or the problem. Callers in gst/ catch it.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Backend { Auto, Taesd, TorchScript, Blend };
enum class Precision { Auto, Fp32, Fp16, Bf16 };

struct CodecConfig {
  Backend backend = Backend::Auto;  // Auto: taesd if weights are found, else torchscript if .pt, else blend
  std::string encoder_path;         // .safetensors (taesd) or .pt (torchscript)
  std::string decoder_path;
  std::string model_dir;            // alternative: a directory holding *encoder*/*decoder* files
  std::string device = "cpu";       // "cpu", "cuda", "cuda:N"
  Precision precision = Precision::Auto;
  int threads = 0;                  // intra-op threads; 0 = number of cores
  // CPU tuning (ignored by blend): NHWC activations (faster with oneDNN), and an in-process caching
  // CPU allocator (installed process-wide on first use; glibc would mmap/munmap every big activation).
  bool channels_last = true;
  bool caching_allocator = true;
  // GPU memory policy (CUDA only; no-op on CPU). LibTorch's CUDA caching allocator keeps every
  // block it ever used for reuse, so a codec sharing the GPU with ComfyUI would hold its peak
  // forever. max_gpu_memory_mb > 0 caps what this process may allocate on the device (allocations
  // past it first drop the cache, then fail with an Error instead of growing) and trims the cache
  // after a decode that leaves more than that reserved; release_interval > 0 also trims it every
  // that many decoded frames. Trimming costs the next decode fresh cudaMallocs (~ms), so keep the
  // interval in the hundreds. Process-wide per device: the first codec on a device sets the cap.
  int64_t max_gpu_memory_mb = 0;  // 0 = no cap
  int release_interval = 0;       // decoded frames between trims; 0 = only when over the cap
  // The key under which the registry shares one loaded model.
  std::string key() const;
};

// An encoded keyframe, opaque to callers (an at::Tensor inside for model backends, the image for
// blend). Immutable once made; safe to share between threads.
class Latent {
 public:
  virtual ~Latent() = default;
  virtual int image_width() const = 0;   // size of the image it was encoded from
  virtual int image_height() const = 0;
  virtual std::string describe() const = 0;  // e.g. "1x32x64x64 bf16 cpu"
  // The latent average-pooled to grid x grid per channel, flattened (channel-major, float32): a
  // perceptual embedding for cachetap. Empty when the backend has no latent space (blend).
  virtual std::vector<float> pooled(int grid) const {
    (void)grid;
    return {};
  }
};

class Codec {
 public:
  virtual ~Codec() = default;
  virtual std::string describe() const = 0;  // "taesd TAEF2 (32 ch, midblock GN) on cpu, bf16"
  virtual bool has_model() const = 0;        // false for blend
  // One RGB/RGBA image of any size (padded to the model's multiple and cropped back on decode).
  virtual std::shared_ptr<const Latent> encode(const Image &image) = 0;
  // slerp(a, b, t) for each t (0 < t < 1 typically), decoded in batches of batch_size; returns
  // RGB images the size of a. a and b must come from images of the same size.
  virtual std::vector<Image> interpolate(const Latent &a, const Latent &b, const std::vector<double> &ts,
                                         int batch_size) = 0;
  // Decode one latent (e.g. for tests: decode(encode(x)) ~ x).
  virtual Image decode(const Latent &latent) = 0;
};

// The config with model_dir resolved to encoder/decoder paths, Auto resolved to a backend and the
// device normalised ("cuda" -> "cuda:0"), as create_codec would use it; throws Error.
CodecConfig resolve_config(const CodecConfig &config);
// Creates a codec (throws Error). Blend never throws.
std::unique_ptr<Codec> create_codec(const CodecConfig &config);
// True when this build has LibTorch (taesd/torchscript backends), and CUDA available at run time.
bool torch_available();
bool cuda_available();

// One loaded model per CodecConfig::key() in the process, shared by every element that asks for it
// (vaeinterp, cachetap). Calls go through a lock whose waiting time is measured: the "shared VAE
// with lock" of the design.
class SharedCodec {
 public:
  explicit SharedCodec(std::unique_ptr<Codec> codec) : codec_(std::move(codec)) {}
  // Runs fn(codec) under the lock; adds the time spent waiting for it to the counters.
  template <typename Fn>
  auto with(Fn &&fn) -> decltype(fn(std::declval<Codec &>())) {
    auto start = now_us();
    std::unique_lock<std::mutex> lock(mutex_);
    record_wait(now_us() - start);
    return fn(*codec_);
  }
  const Codec &codec() const { return *codec_; }  // describe()/has_model() only
  struct LockStats {
    uint64_t acquisitions = 0;
    int64_t total_wait_us = 0;
    int64_t max_wait_us = 0;
  };
  LockStats lock_stats() const;

 private:
  static int64_t now_us();
  void record_wait(int64_t us);
  std::unique_ptr<Codec> codec_;
  std::mutex mutex_;
  mutable std::mutex stats_mutex_;
  LockStats stats_;
};

class ModelRegistry {
 public:
  // The shared codec for this config, loading it on first use (throws Error). Held weakly: the model
  // is freed when the last user drops it.
  static std::shared_ptr<SharedCodec> acquire(const CodecConfig &config);
};

// slerp over each batch item's whole flattened vector; lerp when nearly parallel. Exposed on plain
// floats for the blend backend and tests; the model backends use the same maths in ATen.
void slerp(const float *a, const float *b, float *out, size_t n, double t);

}  // namespace dw::latent

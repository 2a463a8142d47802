// Which PairInterpolator a user's settings ask for, whether the settings can work, and making it:
// the decisions behind vaeinterp's `backend` property, GStreamer-free (tests/unit/test_interp.cpp).
//   auto  = a latent model (taesd for .safetensors, torchscript for .pt) when model files are set,
//           else flow when this build has OpenCV, else blend.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "interp/flow.h"
#include "interp/interpolator.h"
#include "latent/codec.h"

namespace dw::interp {

class LatentPairInterpolator;
class VfiInterpolator;

enum class BackendKind { Auto, Taesd, TorchScript, Blend, Flow, Vfi };
const char *backend_kind_name(BackendKind kind);

struct BackendSettings {
  BackendKind kind = BackendKind::Auto;
  std::string encoder, decoder, model_dir;  // latent backends
  std::string vfi_model;                    // vfi
  std::string device = "cpu";
  latent::Precision precision = latent::Precision::Auto;
  int threads = 0;     // model intra-op threads / OpenCV threads (0: cores / 2 for flow)
  int batch_size = 4;  // 1..64
  bool residual_carry = true;
  bool motion_compensation = true;  // latent backends: LatentPairConfig::motion_compensated_latents
  FlowPreset flow_preset = FlowPreset::Fast;
  int64_t max_gpu_memory_mb = 0;  // latent backends on CUDA: cap (0 = none), see latent::CodecConfig
  int release_interval = 0;       // latent backends on CUDA: frames between cache trims (0 = over the cap only)
};

// Auto resolved as above; other kinds unchanged. Auto stays Auto when model files are set (the
// latent registry then picks taesd or torchscript from the files).
BackendKind resolve_backend(const BackendSettings &s);

// A settings problem found before anything loads: a missing file (NotFound) or an impossible
// combination (Settings); message names the property or file.
struct SettingsProblem {
  enum class Kind { NotFound, Settings } kind;
  std::string message;
};
std::optional<SettingsProblem> check_backend_settings(const BackendSettings &s, BackendKind resolved);

// True when `kind` needs LibTorch (taesd, torchscript, vfi).
bool backend_needs_torch(BackendKind kind);

struct Backend {
  std::unique_ptr<PairInterpolator> interp;
  std::shared_ptr<latent::SharedCodec> codec;  // latent backends (lock stats)
  LatentPairInterpolator *latent = nullptr;    // == interp for latent backends
  VfiInterpolator *vfi = nullptr;              // == interp for vfi (LibTorch builds)
};
// Creates the interpolator for a resolved kind (throws std::exception naming the problem; the
// latent model is shared through latent::ModelRegistry).
Backend create_backend(const BackendSettings &s, BackendKind resolved);

}  // namespace dw::interp

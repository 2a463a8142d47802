// Backend choice, settings checks and creation (see backend.h).
#include "interp/backend.h"

#include <glib.h>

#include <algorithm>

#include "interp/latent_pair.h"
#ifdef DW_INTERP_HAVE_VFI
#include "interp/vfi.h"
#endif

namespace dw::interp {

const char *backend_kind_name(BackendKind kind) {
  switch (kind) {
    case BackendKind::Auto: return "auto";
    case BackendKind::Taesd: return "taesd";
    case BackendKind::TorchScript: return "torchscript";
    case BackendKind::Blend: return "blend";
    case BackendKind::Flow: return "flow";
    case BackendKind::Vfi: return "vfi";
  }
  return "?";
}

BackendKind resolve_backend(const BackendSettings &s) {
  if (s.kind != BackendKind::Auto) return s.kind;
  if (!s.encoder.empty() || !s.decoder.empty() || !s.model_dir.empty()) return BackendKind::Auto;
  return flow_available() ? BackendKind::Flow : BackendKind::Blend;
}

bool backend_needs_torch(BackendKind kind) {
  return kind == BackendKind::Taesd || kind == BackendKind::TorchScript || kind == BackendKind::Vfi;
}

static bool is_file(const std::string &p) { return g_file_test(p.c_str(), G_FILE_TEST_IS_REGULAR); }

std::optional<SettingsProblem> check_backend_settings(const BackendSettings &s, BackendKind resolved) {
  using K = SettingsProblem::Kind;
  if (resolved == BackendKind::Vfi) {
    if (s.vfi_model.empty()) return SettingsProblem{K::NotFound, "backend vfi needs vfi-model (a TorchScript file)"};
    if (!is_file(s.vfi_model)) return SettingsProblem{K::NotFound, "vfi-model '" + s.vfi_model + "' does not exist"};
    return std::nullopt;
  }
  if (resolved == BackendKind::Flow || resolved == BackendKind::Blend) return std::nullopt;
  if (!s.encoder.empty() && !is_file(s.encoder))
    return SettingsProblem{K::NotFound, "encoder file '" + s.encoder + "' does not exist"};
  if (!s.decoder.empty() && !is_file(s.decoder))
    return SettingsProblem{K::NotFound, "decoder file '" + s.decoder + "' does not exist"};
  if (!s.model_dir.empty() && !g_file_test(s.model_dir.c_str(), G_FILE_TEST_IS_DIR))
    return SettingsProblem{K::NotFound, "model-dir '" + s.model_dir + "' is not a directory"};
  const bool have_files = (!s.encoder.empty() && !s.decoder.empty()) || !s.model_dir.empty();
  if (resolved != BackendKind::Auto && !have_files)
    return SettingsProblem{K::Settings, std::string("backend ") + backend_kind_name(resolved) +
                                            " needs encoder and decoder files (or model-dir)"};
  if (resolved == BackendKind::Auto && s.encoder.empty() != s.decoder.empty() && s.model_dir.empty())
    return SettingsProblem{K::Settings, std::string("Both encoder and decoder are needed (only ") +
                                            (s.encoder.empty() ? "decoder" : "encoder") + " is set)"};
  return std::nullopt;
}

Backend create_backend(const BackendSettings &s, BackendKind resolved) {
  Backend b;
  const int batch = std::clamp(s.batch_size, 1, 64);
  if (resolved == BackendKind::Flow) {
    FlowConfig fc;
    fc.preset = s.flow_preset;
    fc.threads = s.threads > 0 ? s.threads : 2;  // the bench target: 2 threads
    b.interp = create_flow_interpolator(fc);
    return b;
  }
  if (resolved == BackendKind::Vfi) {
#ifdef DW_INTERP_HAVE_VFI
    VfiConfig vc;
    vc.model_path = s.vfi_model;
    vc.device = s.device;
    vc.precision = s.precision;
    vc.batch_size = batch;
    vc.threads = s.threads;
    auto vfi = std::make_unique<VfiInterpolator>(vc);
    b.vfi = vfi.get();
    b.interp = std::move(vfi);
    return b;
#else
    throw Error("backend vfi needs a build with LibTorch");
#endif
  }
  latent::CodecConfig config;
  config.backend = resolved == BackendKind::Taesd         ? latent::Backend::Taesd
                   : resolved == BackendKind::TorchScript ? latent::Backend::TorchScript
                   : resolved == BackendKind::Blend       ? latent::Backend::Blend
                                                          : latent::Backend::Auto;
  config.precision = s.precision;
  config.encoder_path = s.encoder;
  config.decoder_path = s.decoder;
  config.model_dir = s.model_dir;
  config.device = s.device;
  config.threads = s.threads;
  config.max_gpu_memory_mb = s.max_gpu_memory_mb;
  config.release_interval = s.release_interval;
  b.codec = latent::ModelRegistry::acquire(config);
  LatentPairConfig lc;
  lc.residual_carry = s.residual_carry;
  lc.motion_compensated_latents = s.motion_compensation;
  lc.batch_size = batch;
  auto lp = std::make_unique<LatentPairInterpolator>(b.codec, lc);
  b.latent = lp.get();
  b.interp = std::move(lp);
  return b;
}

}  // namespace dw::interp

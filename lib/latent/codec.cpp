// Factory, config key, ModelRegistry, SharedCodec counters and slerp on plain floats.
// LibTorch-free: the model backends are reached through internal.h only when DW_HAVE_TORCH.
#include "latent/codec.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <map>

#include "latent/internal.h"
#include "latent/raw.h"

namespace dw::latent {

namespace detail {

const char *backend_name(Backend b) {
  switch (b) {
    case Backend::Auto: return "auto";
    case Backend::Taesd: return "taesd";
    case Backend::TorchScript: return "torchscript";
    case Backend::Blend: return "blend";
  }
  return "?";
}

const char *precision_name(Precision p) {
  switch (p) {
    case Precision::Auto: return "auto";
    case Precision::Fp32: return "fp32";
    case Precision::Fp16: return "fp16";
    case Precision::Bf16: return "bf16";
  }
  return "?";
}

namespace {

bool is_regular_file(const std::string &path) {
  struct stat st{};
  return !path.empty() && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string canonical(const std::string &path) {
  if (path.empty()) return path;
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf)) return buf;
  return path;
}

bool ends_with(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool is_torchscript_name(const std::string &name) {
  const std::string l = lower(name);
  return ends_with(l, ".pt") || ends_with(l, ".ts") || ends_with(l, ".torchscript") || ends_with(l, ".jit");
}

// Picks <dir>/*encoder*.{safetensors|pt} and *decoder*, preferring safetensors (taesd).
void find_in_dir(const std::string &dir, CodecConfig &c) {
  DIR *d = ::opendir(dir.c_str());
  if (!d) throw Error("model_dir '" + dir + "': cannot open directory");
  std::vector<std::string> names;
  while (dirent *e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  auto pick = [&](const char *role, bool safetensors) -> std::string {
    for (const auto &n : names) {
      const std::string l = lower(n);
      if (l.find(role) == std::string::npos) continue;
      if (safetensors ? ends_with(l, ".safetensors") : is_torchscript_name(l)) {
        const std::string p = dir + "/" + n;
        if (is_regular_file(p)) return p;
      }
    }
    return {};
  };
  for (bool st : {true, false}) {
    std::string enc = pick("encoder", st), dec = pick("decoder", st);
    if (c.backend == Backend::Taesd && !st) break;
    if (c.backend == Backend::TorchScript && st) continue;
    if (!enc.empty() && !dec.empty()) {
      if (c.encoder_path.empty()) c.encoder_path = enc;
      if (c.decoder_path.empty()) c.decoder_path = dec;
      return;
    }
  }
  if (c.backend != Backend::Auto)
    throw Error("model_dir '" + dir + "': no *encoder*/*decoder* pair for backend " + backend_name(c.backend) +
                " (taesd: .safetensors, torchscript: .pt)");
}

std::string normalise_device(const std::string &device) {
  std::string d = lower(device);
  if (d.empty() || d == "cpu") return "cpu";
  if (d == "cuda" || d == "gpu") return "cuda:0";
  if (d.rfind("cuda:", 0) == 0) {
    const std::string num = d.substr(5);
    if (num.empty() || num.size() > 3 || !std::all_of(num.begin(), num.end(), ::isdigit))
      throw Error("invalid device '" + device + "' (expected cpu, cuda or cuda:N)");
    return "cuda:" + std::to_string(std::atoi(num.c_str()));
  }
  throw Error("invalid device '" + device + "' (expected cpu, cuda or cuda:N)");
}

}  // namespace

CodecConfig resolve(const CodecConfig &config) {
  CodecConfig c = config;
  if (c.backend == Backend::Blend) {
    c.encoder_path.clear();
    c.decoder_path.clear();
    c.model_dir.clear();
    c.device = "cpu";
    c.precision = Precision::Fp32;
    return c;
  }
  if (c.threads < 0) throw Error("threads must be >= 0 (0 = number of cores)");
  if (c.max_gpu_memory_mb < 0) throw Error("max_gpu_memory_mb must be >= 0 (0 = no cap)");
  if (c.release_interval < 0) throw Error("release_interval must be >= 0 (0 = only when over the cap)");
  c.device = normalise_device(c.device);
  if (!c.model_dir.empty() && (c.encoder_path.empty() || c.decoder_path.empty())) find_in_dir(c.model_dir, c);
  c.model_dir.clear();
  if (c.backend == Backend::Auto) {
    if (c.encoder_path.empty() && c.decoder_path.empty()) {
      c.backend = Backend::Blend;
      return resolve(c);
    }
    const std::string &probe = !c.encoder_path.empty() ? c.encoder_path : c.decoder_path;
    c.backend = is_torchscript_name(probe) ? Backend::TorchScript : Backend::Taesd;
  }
  if (c.encoder_path.empty() || c.decoder_path.empty())
    throw Error(std::string("backend ") + backend_name(c.backend) +
                " needs both an encoder and a decoder file (encoder_path/decoder_path or model_dir)");
  c.encoder_path = canonical(c.encoder_path);
  c.decoder_path = canonical(c.decoder_path);
#ifdef DW_HAVE_TORCH
  // Resolve Auto so that "auto" and the precision it picks share one model.
  if (c.device.rfind("cuda", 0) != 0 || torch_cuda_available()) c.precision = resolve_precision(c.precision, c.device);
#endif
  return c;
}

}  // namespace detail

CodecConfig resolve_config(const CodecConfig &config) { return detail::resolve(config); }

std::string CodecConfig::key() const {
  CodecConfig c;
  try {
    c = detail::resolve(*this);
  } catch (const Error &) {
    c = *this;  // unresolvable configs fail in create_codec; the key only has to be stable
  }
  std::string k = std::string(detail::backend_name(c.backend));
  if (c.backend == Backend::Blend) return k;
  k += "|enc=" + c.encoder_path + "|dec=" + c.decoder_path;
  if (!c.model_dir.empty()) k += "|dir=" + c.model_dir;
  k += "|dev=" + c.device + "|prec=" + detail::precision_name(c.precision);
  if (!c.channels_last) k += "|nchw";
  return k;
}

bool torch_available() {
#ifdef DW_HAVE_TORCH
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef DW_HAVE_TORCH
  return detail::torch_cuda_available();
#else
  return false;
#endif
}

std::unique_ptr<Codec> create_codec(const CodecConfig &config) {
  if (config.backend == Backend::Blend) return detail::create_blend();
  const CodecConfig c = detail::resolve(config);
  switch (c.backend) {
    case Backend::Blend:
      return detail::create_blend();
    case Backend::Taesd:
    case Backend::TorchScript:
#ifdef DW_HAVE_TORCH
      return c.backend == Backend::Taesd ? detail::create_taesd(c) : detail::create_torchscript(c);
#else
      throw Error(std::string("backend ") + detail::backend_name(c.backend) +
                  " unavailable: gst-dreamwindow was built without LibTorch (use backend=blend, or rebuild with "
                  "-Dtorch=enabled)");
#endif
    case Backend::Auto:
      break;
  }
  throw Error("unresolved backend");
}

#ifndef DW_HAVE_TORCH
// raw.h without LibTorch: nothing to run.
namespace {
[[noreturn]] void no_torch(const char *what) {
  throw Error(std::string(what) + ": gst-dreamwindow was built without LibTorch");
}
}  // namespace
FloatTensor encode_raw(Codec &, const FloatTensor &) { no_torch("encode_raw"); }
FloatTensor decode_raw(Codec &, const FloatTensor &) { no_torch("decode_raw"); }
FloatTensor slerp_raw(const FloatTensor &, const FloatTensor &, double) { no_torch("slerp_raw"); }
void write_test_torchscript_pair(const std::string &, const std::string &) { no_torch("write_test_torchscript_pair"); }
#endif

// ---- SharedCodec / ModelRegistry ----

int64_t SharedCodec::now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SharedCodec::record_wait(int64_t us) {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  stats_.acquisitions++;
  stats_.total_wait_us += us;
  stats_.max_wait_us = std::max(stats_.max_wait_us, us);
}

SharedCodec::LockStats SharedCodec::lock_stats() const {
  std::lock_guard<std::mutex> lock(stats_mutex_);
  return stats_;
}

std::shared_ptr<SharedCodec> ModelRegistry::acquire(const CodecConfig &config) {
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<SharedCodec>> models;
  const std::string key = config.key();
  std::lock_guard<std::mutex> lock(registry_mutex);  // loads are serialised: one load per key
  for (auto it = models.begin(); it != models.end();) it = it->second.expired() ? models.erase(it) : std::next(it);
  auto it = models.find(key);
  if (it != models.end())
    if (auto existing = it->second.lock()) return existing;
  auto shared = std::make_shared<SharedCodec>(create_codec(config));
  models[key] = shared;
  return shared;
}

// ---- slerp ----

void slerp(const float *a, const float *b, float *out, size_t n, double t) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < n; ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  double s0 = 1.0 - t, s1 = t;  // lerp
  if (na > 0 && nb > 0 && std::isfinite(dot)) {
    const double cos_theta = dot / std::sqrt(na * nb);
    if (std::fabs(cos_theta) < 0.9995) {
      const double theta = std::acos(std::clamp(cos_theta, -1.0, 1.0));
      const double sin_theta = std::sin(theta);
      s0 = std::sin((1.0 - t) * theta) / sin_theta;
      s1 = std::sin(t * theta) / sin_theta;
    }
  }
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(s0 * a[i] + s1 * b[i]);
}

}  // namespace dw::latent

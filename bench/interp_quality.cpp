// bench/interp_quality: what a viewer sees between keyframes, per interpolation backend (issue 10).
//
// Sequences built from ../shared/images (4 keyframes = 3 pairs, 7 in-betweens per pair):
//   pan          256x256 crops of astronaut.png, 8 px further right per keyframe, so in-between k of
//                a pair is the crop shifted by k px (exact truth)
//   zoom+rotate  the photo scaled by 0.5 % and turned by 0.25 degrees per frame about its centre
//                (keyframes every 8th frame), sampled bilinearly: truth for every in-between
//   morph        astronaut -> chelsea -> astronaut -> chelsea: no truth (sharpness and pop only)
// Per backend and sequence it prints: mean in-between PSNR vs the truth; sharpness = Laplacian
// variance of the middle in-between over the mean of its two keyframes'; pop = mean absolute change
// between consecutive frames across a keyframe (in-between -> keyframe -> in-between) over the mean
// change between consecutive in-betweens. Then ms per in-between (set_pair included, amortised over
// the pair) at 256x256 and 512x512 on the pan.
//
// Backends: blend (pixel crossfade, the reference), flow at each preset (2 OpenCV threads); taesd
// (TAEF2 weights from ../shared/models, LibTorch builds) motion-compensated (the latent morph made
// in each keyframe's geometry and warped along the flow, residual carry in it: the default in
// OpenCV builds), the plain latent slerp with residual carry warped along the flow, in place, and
// without residual carry; and vfi when a model is given (--vfi model.pt, LibTorch builds).
//
// Usage: interp_quality [--vfi MODEL.pt] [--threads N] [--quick] [--only NAME]
//   --quick: skip the 512x512 timing; --only: backends whose name contains NAME
// Targets (issue 10): flow >= 38 dB pan and >= 30 dB zoom+rotate; pop <= 1.15 and sharpness >= 0.85
// on pan and zoom+rotate for every backend but blend; flow >= 25 in-betweens/s at 512x512.
#include <glib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "image/image.h"
#include "interp/flow.h"
#include "interp/latent_pair.h"
#include "interp/plan.h"
#include "latent/codec.h"
#include "shared_files.h"
#if __has_include("interp/vfi.h")
#include "interp/vfi.h"
#define HAVE_VFI_HEADER 1
#endif

namespace {

constexpr int kInbetweens = 7;
constexpr int kKeyframes = 4;

using dw::bench::shared_dir;

dw::Image load(const std::string &name) {
  const std::string path = shared_dir() + "/images/" + name;
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  dw::Image img;
  std::string err;
  if (bytes.empty() || !dw::decode_png(bytes.data(), bytes.size(), img, &err)) {
    std::fprintf(stderr, "interp_quality: cannot read %s: %s\n", path.c_str(), bytes.empty() ? "missing" : err.c_str());
    std::exit(2);
  }
  return dw::convert_channels(img, 3);
}

dw::Image crop(const dw::Image &src, int x0, int y0, int w, int h) {
  dw::Image out(w, h, 3);
  for (int y = 0; y < h; ++y) std::memcpy(out.row(y), src.row(y0 + y) + 3 * x0, 3 * static_cast<size_t>(w));
  return out;
}

// src scaled by `scale` and turned by `deg` about its centre, the central size x size window.
dw::Image affine(const dw::Image &src, int size, double scale, double deg) {
  dw::Image out(size, size, 3);
  const double th = deg * M_PI / 180.0, c = std::cos(th), s = std::sin(th);
  const double cx = src.width / 2.0, cy = src.height / 2.0;
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      const double dx = x + 0.5 - size / 2.0, dy = y + 0.5 - size / 2.0;
      const double sx = cx + (c * dx + s * dy) / scale - 0.5, sy = cy + (-s * dx + c * dy) / scale - 0.5;
      const int x0 = static_cast<int>(std::floor(sx)), y0 = static_cast<int>(std::floor(sy));
      const double fx = sx - x0, fy = sy - y0;
      for (int ch = 0; ch < 3; ++ch) {
        auto at = [&](int xx, int yy) {
          xx = std::clamp(xx, 0, src.width - 1);
          yy = std::clamp(yy, 0, src.height - 1);
          return double(src.row(yy)[3 * xx + ch]);
        };
        const double v = (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) +
                         fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
        out.row(y)[3 * x + ch] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 255.0)));
      }
    }
  return out;
}

struct Sequence {
  std::string name;
  std::vector<dw::Image> keyframes;
  std::vector<std::vector<dw::Image>> truth;  // per pair, kInbetweens each; empty = no truth
};

Sequence make_pan(const dw::Image &photo, int size) {
  Sequence s{"pan", {}, {}};
  const dw::Image src = dw::resize_bilinear(photo, 2 * size, 2 * size);
  const int step = 8 * size / 256;  // 8 px per keyframe at 256, the same motion at other sizes
  auto frame = [&](int f) { return crop(src, size / 4 + f * step / (kInbetweens + 1), size / 4, size, size); };
  for (int k = 0; k < kKeyframes; ++k) s.keyframes.push_back(frame(k * (kInbetweens + 1)));
  for (int k = 0; k + 1 < kKeyframes; ++k) {
    s.truth.emplace_back();
    for (int i = 1; i <= kInbetweens; ++i) s.truth.back().push_back(frame(k * (kInbetweens + 1) + i));
  }
  return s;
}

Sequence make_zoom(const dw::Image &photo, int size) {
  Sequence s{"zoom+rotate", {}, {}};
  const dw::Image src = dw::resize_bilinear(photo, 2 * size, 2 * size);
  auto frame = [&](int f) { return affine(src, size, 2.0 * std::pow(1.005, f), 0.25 * f); };
  for (int k = 0; k < kKeyframes; ++k) s.keyframes.push_back(frame(k * (kInbetweens + 1)));
  for (int k = 0; k + 1 < kKeyframes; ++k) {
    s.truth.emplace_back();
    for (int i = 1; i <= kInbetweens; ++i) s.truth.back().push_back(frame(k * (kInbetweens + 1) + i));
  }
  return s;
}

Sequence make_morph(const dw::Image &a, const dw::Image &b, int size) {
  Sequence s{"morph", {}, {}};
  const dw::Image ra = dw::resize_bilinear(a, size, size), rb = dw::resize_bilinear(b, size, size);
  for (int k = 0; k < kKeyframes; ++k) s.keyframes.push_back(k % 2 ? rb : ra);
  return s;
}

double psnr(const dw::Image &a, const dw::Image &b) {
  double se = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const double d = double(a.pixels[i]) - b.pixels[i];
    se += d * d;
  }
  const double mse = se / a.pixels.size();
  return mse <= 1e-10 ? 99.0 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

double laplacian_variance(const dw::Image &img) {
  std::vector<double> g(static_cast<size_t>(img.width) * img.height);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const uint8_t *p = img.row(y) + 3 * x;
      g[static_cast<size_t>(y) * img.width + x] = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    }
  double sum = 0, sum2 = 0;
  size_t n = 0;
  for (int y = 1; y + 1 < img.height; ++y)
    for (int x = 1; x + 1 < img.width; ++x) {
      const size_t i = static_cast<size_t>(y) * img.width + x;
      const double l = g[i - 1] + g[i + 1] + g[i - img.width] + g[i + img.width] - 4 * g[i];
      sum += l;
      sum2 += l * l;
      ++n;
    }
  const double mean = sum / n;
  return sum2 / n - mean * mean;
}

double mean_abs_change(const dw::Image &a, const dw::Image &b) {
  double s = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) s += std::abs(int(a.pixels[i]) - int(b.pixels[i]));
  return s / a.pixels.size();
}

struct Result {
  double psnr = NAN, sharpness = NAN, pop = NAN, ms_per_frame = NAN;
};

using Factory = std::function<std::unique_ptr<dw::interp::PairInterpolator>()>;

// Runs the whole sequence through one interpolator: the output stream is K0 i.. K1 i.. K2 ...
Result run(const Factory &make, const Sequence &seq) {
  auto interp = make();
  const std::vector<double> ts = dw::interp::even_positions(kInbetweens);
  std::vector<const dw::Image *> stream;
  std::vector<bool> is_key;
  std::vector<std::vector<dw::Image>> made;
  double psnr_sum = 0, sharp_sum = 0;
  int psnr_n = 0;
  const gint64 t0 = g_get_monotonic_time();
  for (size_t k = 0; k + 1 < seq.keyframes.size(); ++k) {
    interp->set_pair(seq.keyframes[k], seq.keyframes[k + 1]);
    made.push_back(interp->frames(ts));
  }
  const double ms = (g_get_monotonic_time() - t0) / 1000.0;
  for (size_t k = 0; k + 1 < seq.keyframes.size(); ++k) {
    stream.push_back(&seq.keyframes[k]);
    is_key.push_back(true);
    for (int i = 0; i < kInbetweens; ++i) {
      stream.push_back(&made[k][i]);
      is_key.push_back(false);
      if (!seq.truth.empty()) {
        psnr_sum += psnr(made[k][i], seq.truth[k][i]);
        psnr_n++;
      }
    }
    const double key_sharp = 0.5 * (laplacian_variance(seq.keyframes[k]) + laplacian_variance(seq.keyframes[k + 1]));
    sharp_sum += laplacian_variance(made[k][kInbetweens / 2]) / key_sharp;
  }
  stream.push_back(&seq.keyframes.back());
  is_key.push_back(true);
  double boundary = 0, inside = 0;
  int nb = 0, ni = 0;
  for (size_t i = 0; i + 1 < stream.size(); ++i) {
    const double d = mean_abs_change(*stream[i], *stream[i + 1]);
    if (is_key[i] || is_key[i + 1]) {
      boundary += d;
      nb++;
    } else {
      inside += d;
      ni++;
    }
  }
  Result r;
  r.psnr = psnr_n ? psnr_sum / psnr_n : NAN;
  r.sharpness = sharp_sum / made.size();
  r.pop = (boundary / nb) / (inside / ni);
  r.ms_per_frame = ms / (made.size() * kInbetweens);
  return r;
}

double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Wall and CPU ms per in-between over pairs 2 and 3 (pair 1 warms up allocators, kernels, threads).
void time_per_frame(const Factory &make, const Sequence &seq, double *wall, double *cpu) {
  auto interp = make();
  const std::vector<double> ts = dw::interp::even_positions(kInbetweens);
  interp->set_pair(seq.keyframes[0], seq.keyframes[1]);
  interp->frames(ts);
  const gint64 t0 = g_get_monotonic_time();
  const double c0 = cpu_ms();
  for (size_t k = 1; k + 1 < seq.keyframes.size(); ++k) {
    interp->set_pair(seq.keyframes[k], seq.keyframes[k + 1]);
    interp->frames(ts);
  }
  const double n = (seq.keyframes.size() - 2) * kInbetweens;
  *wall = (g_get_monotonic_time() - t0) / 1000.0 / n;
  *cpu = (cpu_ms() - c0) / n;
}

std::string fmt(double v, const char *f) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

int main(int argc, char **argv) {
  std::string vfi_model;
  int threads = 2;
  bool quick = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--vfi") && i + 1 < argc) vfi_model = argv[++i];
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--vfi MODEL.pt] [--threads N] [--quick] [--only NAME]\n", argv[0]);
      return 2;
    }
  }

  struct Backend {
    std::string name;
    Factory make;
    bool reference;
  };
  std::vector<Backend> backends;
  auto latent = [&](dw::latent::CodecConfig cfg, bool carry, bool warped = false, bool moved = false) -> Factory {
    return [cfg, carry, warped, moved]() {
      dw::interp::LatentPairConfig lc;
      lc.residual_carry = carry;
      lc.motion_compensated_residuals = warped;
      lc.motion_compensated_latents = moved;
      lc.batch_size = 4;
      return std::unique_ptr<dw::interp::PairInterpolator>(
          new dw::interp::LatentPairInterpolator(dw::latent::ModelRegistry::acquire(cfg), lc));
    };
  };
  dw::latent::CodecConfig blend_cfg;
  blend_cfg.backend = dw::latent::Backend::Blend;
  backends.push_back({"blend", latent(blend_cfg, false), true});
  if (dw::interp::flow_available()) {
    for (auto preset : {dw::interp::FlowPreset::Ultrafast, dw::interp::FlowPreset::Fast, dw::interp::FlowPreset::Medium}) {
      dw::interp::FlowConfig fc;
      fc.preset = preset;
      fc.threads = threads;
      backends.push_back({std::string("flow ") + dw::interp::flow_preset_name(preset),
                          [fc]() { return dw::interp::create_flow_interpolator(fc); }, false});
    }
  } else {
    std::printf("# flow: skipped (built without OpenCV)\n");
  }
  if (std::optional<dw::latent::CodecConfig> taef2 = dw::bench::taef2_config()) {
    dw::latent::CodecConfig cfg = *taef2;
    cfg.threads = threads;
    if (dw::interp::flow_available()) {
      backends.push_back({"taesd TAEF2 motion-compensated", latent(cfg, true, true, true), false});
      backends.push_back({"taesd TAEF2 + carry, warped", latent(cfg, true, true), false});
    }
    backends.push_back({"taesd TAEF2 + carry, in place", latent(cfg, true, false), false});
    backends.push_back({"taesd TAEF2, no residual carry", latent(cfg, false), false});
  }
#ifdef HAVE_VFI_HEADER
  if (!vfi_model.empty()) {
    dw::interp::VfiConfig vc;
    vc.model_path = vfi_model;
    vc.threads = threads;
    backends.push_back({"vfi " + vfi_model, [vc]() {
                          return std::unique_ptr<dw::interp::PairInterpolator>(new dw::interp::VfiInterpolator(vc));
                        }, false});
  }
#else
  if (!vfi_model.empty()) std::printf("# vfi: skipped (no VFI backend in this build)\n");
#endif

  const dw::Image astronaut = load("astronaut.png"), chelsea = load("chelsea.png");
  std::vector<Sequence> seqs{make_pan(astronaut, 256), make_zoom(astronaut, 256), make_morph(astronaut, chelsea, 256)};
  const Sequence pan512 = make_pan(astronaut, 512);

  std::printf("# %d keyframes, %d in-betweens per pair, 256x256; %d OpenCV/LibTorch threads, %u cores\n", kKeyframes,
              kInbetweens, threads, g_get_num_processors());
  std::printf("| %-30s | %-11s | %9s | %9s | %5s |\n", "backend", "sequence", "PSNR dB", "sharpness", "pop");
  std::printf("| %-30s | %-11s | %9s | %9s | %5s |\n", "------------------------------", "-----------", "--------:",
              "--------:", "----:");
  struct Timing {
    std::string name;
    double ms256 = NAN, ms512 = NAN, cpu256 = NAN, cpu512 = NAN;
  };
  std::vector<Timing> timings;
  int failures = 0;
  for (const auto &b : backends) {
    if (!only.empty() && b.name.find(only) == std::string::npos) continue;
    Timing tm{b.name};
    try {
      for (const auto &seq : seqs) {
        const Result r = run(b.make, seq);
        std::printf("| %-30.30s | %-11s | %9s | %9s | %5s |\n", b.name.c_str(), seq.name.c_str(),
                    fmt(r.psnr, "%.1f").c_str(), fmt(r.sharpness, "%.2f").c_str(), fmt(r.pop, "%.2f").c_str());
        std::fflush(stdout);
      }
      time_per_frame(b.make, seqs[0], &tm.ms256, &tm.cpu256);
      if (!quick) time_per_frame(b.make, pan512, &tm.ms512, &tm.cpu512);
    } catch (const std::exception &e) {
      std::printf("# %s failed: %s\n", b.name.c_str(), e.what());
      failures++;
    }
    timings.push_back(tm);
  }
  std::printf("\n| %-30s | %13s | %13s | %13s | %13s | %18s |\n", "backend", "ms/frame 256", "CPU ms 256",
              "ms/frame 512", "CPU ms 512", "in-betweens/s 512");
  std::printf("| %-30s | %13s | %13s | %13s | %13s | %18s |\n", "------------------------------", "------------:",
              "------------:", "------------:", "------------:", "-----------------:");
  for (const auto &t : timings)
    std::printf("| %-30.30s | %13s | %13s | %13s | %13s | %18s |\n", t.name.c_str(), fmt(t.ms256, "%.1f").c_str(),
                fmt(t.cpu256, "%.1f").c_str(), fmt(t.ms512, "%.1f").c_str(), fmt(t.cpu512, "%.1f").c_str(),
                fmt(1000.0 / t.ms512, "%.1f").c_str());
  std::printf("# ms/frame: wall time of set_pair (flow / encodes) + 7 in-betweens, per in-between, pan, 2 pairs after\n"
              "# a warm-up pair; CPU ms: process CPU time for the same (all threads); the machine is shared, so\n"
              "# wall time includes waiting for a core\n");
  return failures ? 1 : 0;
}

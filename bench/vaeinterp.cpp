// bench/vaeinterp: interpolation throughput of the latent codecs, as vaeinterp's worker uses them.
//
// For each backend (blend; taesd on the shared TAEF2 weights when built with LibTorch and the files
// exist), image size (256x256, 512x512) and batch size (1, 4, 8) it encodes two keyframes (the
// motorcycle pair, resized) once and times Codec::interpolate for a pair of 8 in-betweens through the
// ModelRegistry's SharedCodec (lock included), like the element does. Prints in-betweens per second
// (decode only) and the encode time per keyframe.
//
// Usage: vaeinterp [device (cpu|cuda)] [precision (auto|fp32|fp16|bf16)] [repeats (default 2)]
#include <glib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "image/image.h"
#include "latent/codec.h"
#include "shared_files.h"

namespace {

using dw::bench::shared_dir;

dw::Image load_or_make(const std::string &name, int size, int seed) {
  std::ifstream f(shared_dir() + "/images/" + name, std::ios::binary);
  dw::Image img;
  if (f) {
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::string err;
    if (dw::decode_png(bytes.data(), bytes.size(), img, &err))
      return dw::resize_bilinear(dw::convert_channels(img, 3), size, size);
  }
  img = dw::Image(size, size, 3);  // gradient fallback
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      for (int c = 0; c < 3; ++c) img.row(y)[3 * x + c] = static_cast<uint8_t>((x * (c + 1) + y * seed) & 255);
  return img;
}

dw::latent::Precision parse_precision(const std::string &p) {
  if (p == "fp32") return dw::latent::Precision::Fp32;
  if (p == "fp16") return dw::latent::Precision::Fp16;
  if (p == "bf16") return dw::latent::Precision::Bf16;
  return dw::latent::Precision::Auto;
}

}  // namespace

int main(int argc, char **argv) {
  const std::string device = argc > 1 ? argv[1] : "cpu";
  const std::string precision = argc > 2 ? argv[2] : "auto";
  const int repeats = argc > 3 ? std::max(1, atoi(argv[3])) : 2;
  const int inbetweens = 8;

  std::vector<dw::latent::CodecConfig> configs;
  dw::latent::CodecConfig blend;
  blend.backend = dw::latent::Backend::Blend;
  configs.push_back(blend);
  if (std::optional<dw::latent::CodecConfig> taef2 = dw::bench::taef2_config()) {
    dw::latent::CodecConfig taesd = *taef2;
    taesd.device = device;
    taesd.precision = parse_precision(precision);
    configs.push_back(taesd);
  }

  std::printf("# %d in-betweens per pair, %d timed pairs per row, %u cores\n", inbetweens, repeats,
              g_get_num_processors());
  std::printf("%-44s %9s %6s %12s %14s %12s\n", "backend", "size", "batch", "encode ms", "decode ms/pair",
              "frames/s");
  for (const auto &config : configs) {
    std::shared_ptr<dw::latent::SharedCodec> codec;
    try {
      codec = dw::latent::ModelRegistry::acquire(config);
    } catch (const std::exception &e) {
      std::printf("# %s: cannot load: %s\n", config.key().c_str(), e.what());
      continue;
    }
    const std::string name = codec->codec().describe();
    std::printf("# %s\n", name.c_str());
    for (int size : {256, 512}) {
      const dw::Image a = load_or_make("motorcycle_left.png", size, 1);
      const dw::Image b = load_or_make("motorcycle_right.png", size, 2);
      try {
        auto la = codec->with([&](dw::latent::Codec &c) { return c.encode(a); });  // also warms up
        gint64 t0 = g_get_monotonic_time();
        auto lb = codec->with([&](dw::latent::Codec &c) { return c.encode(b); });
        const double encode_ms = (g_get_monotonic_time() - t0) / 1000.0;
        std::vector<double> ts(inbetweens);
        for (int i = 0; i < inbetweens; ++i) ts[i] = (i + 1.0) / (inbetweens + 1);
        // Warm-up (allocator, kernels).
        codec->with([&](dw::latent::Codec &c) { return c.interpolate(*la, *lb, {0.5}, 1); });
        for (int batch : {1, 4, 8}) {
          t0 = g_get_monotonic_time();
          for (int r = 0; r < repeats; ++r)
            for (int first = 0; first < inbetweens; first += batch) {
              std::vector<double> chunk(ts.begin() + first, ts.begin() + std::min(inbetweens, first + batch));
              auto images = codec->with([&](dw::latent::Codec &c) { return c.interpolate(*la, *lb, chunk, batch); });
              if (images.size() != chunk.size()) throw dw::latent::Error("short batch");
            }
          const double s = (g_get_monotonic_time() - t0) / 1e6;
          std::printf("%-44.44s %4dx%-4d %6d %12.1f %14.1f %12.1f\n", name.c_str(), size, size, batch, encode_ms,
                      s * 1000.0 / repeats, inbetweens * repeats / s);
          std::fflush(stdout);
        }
      } catch (const std::exception &e) {
        std::printf("# %s %dx%d failed: %s\n", name.c_str(), size, size, e.what());
      }
    }
    const auto ls = codec->lock_stats();
    std::printf("# %s: %llu lock acquisitions, %.2f ms waited\n", name.c_str(),
                static_cast<unsigned long long>(ls.acquisitions), ls.total_wait_us / 1000.0);
  }
  return 0;
}

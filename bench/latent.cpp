// TAEF2 codec speed on this machine: encode/decode ms per 512x512 frame for fp32, fp32 + caching
// CPU allocator, channels_last, and bf16 (when the CPU has native bf16), plus the 8-bit PSNR of
// decode(encode(astronaut)). Run: build/bench/latent [shared_dir] [iterations]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "image/image.h"
#include "latent/codec.h"

using namespace dw::latent;

namespace {

double psnr(const dw::Image &a, const dw::Image &b) {
  double se = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const double d = double(a.pixels[i]) - b.pixels[i];
    se += d * d;
  }
  return 10 * std::log10(255.0 * 255.0 / std::max(se / a.pixels.size(), 1e-12));
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char **argv) {
  std::string shared = argc > 1 ? argv[1] : (std::getenv("DW_SHARED_DIR") ? std::getenv("DW_SHARED_DIR") : DW_SHARED_DIR);
  const int iters = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
  std::ifstream f(shared + "/images/astronaut.png", std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  dw::Image img;
  std::string err;
  if (!dw::decode_png(bytes.data(), bytes.size(), img, &err)) {
    std::fprintf(stderr, "astronaut.png: %s\n", err.c_str());
    return 1;
  }
  img = dw::resize_bilinear(dw::convert_channels(img, 3), 512, 512);

  struct Variant {
    const char *name;
    Precision precision;
    bool caching, channels_last;
  };
  // Order matters: the caching allocator stays installed once a variant asked for it.
  const Variant variants[] = {{"fp32", Precision::Fp32, false, false},
                              {"fp32+caching", Precision::Fp32, true, false},
                              {"fp32+caching+channels_last", Precision::Fp32, true, true},
                              {"bf16+caching+channels_last", Precision::Bf16, true, true}};
  CodecConfig auto_cfg;
  auto_cfg.backend = Backend::Taesd;
  auto_cfg.encoder_path = shared + "/models/taef2_encoder.safetensors";
  auto_cfg.decoder_path = shared + "/models/taef2_decoder.safetensors";
  try {
    auto probe = create_codec(auto_cfg);
    std::printf("auto precision picks: %s\n", probe->describe().c_str());
    const bool bf16_native = probe->describe().find("bf16") != std::string::npos;
    probe.reset();
    double base_dec = 0;
    for (const auto &v : variants) {
      if (v.precision == Precision::Bf16 && !bf16_native) {
        std::printf("%-28s skipped: this CPU has no native bf16 (AVX512-BF16/AMX)\n", v.name);
        continue;
      }
      CodecConfig c = auto_cfg;
      c.precision = v.precision;
      c.caching_allocator = v.caching;
      c.channels_last = v.channels_last;
      auto codec = create_codec(c);
      auto latent = codec->encode(img);  // warm-up
      dw::Image out = codec->decode(*latent);
      double t0 = now_ms();
      for (int i = 0; i < iters; ++i) latent = codec->encode(img);
      const double enc = (now_ms() - t0) / iters;
      t0 = now_ms();
      for (int i = 0; i < iters; ++i) out = codec->decode(*latent);
      const double dec = (now_ms() - t0) / iters;
      if (base_dec == 0) base_dec = dec;
      std::printf("%-28s encode %7.1f ms  decode %7.1f ms/frame (x%.2f)  PSNR %.2f dB  [%s]\n", v.name, enc, dec,
                  base_dec / dec, psnr(img, out), codec->describe().c_str());
      std::fflush(stdout);
    }
  } catch (const Error &e) {
    std::fprintf(stderr, "bench latent: %s\n", e.what());
    return 1;
  }
  return 0;
}

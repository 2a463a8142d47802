// Where the benchmarks find ../shared (DW_SHARED_DIR from config.h, overridden by the environment
// variable of that name) and the TAEF2 weights in it: one copy instead of one per bench.
#pragma once

#include <glib.h>

#include <cstdio>
#include <optional>
#include <string>

#include "config.h"
#include "latent/codec.h"

namespace dw::bench {

inline std::string shared_dir() {
  const char *dir = g_getenv("DW_SHARED_DIR");
  return dir ? dir : DW_SHARED_DIR;
}

// A taesd config for the TAEF2 weights in shared_dir(); without LibTorch or the files it prints
// "# taesd: skipped (why)" and returns nothing.
inline std::optional<latent::CodecConfig> taef2_config() {
  const std::string enc = shared_dir() + "/models/taef2_encoder.safetensors";
  const std::string dec = shared_dir() + "/models/taef2_decoder.safetensors";
  if (!latent::torch_available()) {
    std::printf("# taesd: skipped (built without LibTorch)\n");
    return std::nullopt;
  }
  if (!g_file_test(enc.c_str(), G_FILE_TEST_EXISTS) || !g_file_test(dec.c_str(), G_FILE_TEST_EXISTS)) {
    std::printf("# taesd: skipped (no %s)\n", enc.c_str());
    return std::nullopt;
  }
  latent::CodecConfig cfg;
  cfg.backend = latent::Backend::Taesd;
  cfg.encoder_path = enc;
  cfg.decoder_path = dec;
  return cfg;
}

}  // namespace dw::bench

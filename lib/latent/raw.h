// Raw float32 tensor access to a model codec, for tests and benchmarks (no ATen in this header).
// Throws Error for the blend backend or a build without LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "latent/codec.h"

namespace dw::latent {

struct FloatTensor {
  std::vector<int64_t> shape;  // NCHW
  std::vector<float> data;     // contiguous
  size_t numel() const {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    return shape.empty() ? 0 : n;
  }
};

// encoder(images) for Nx3xHxW images in [0,1] (H, W multiples of the model's factor); float32 out.
FloatTensor encode_raw(Codec &codec, const FloatTensor &images);
// decoder(latents), unclamped, float32 out.
FloatTensor decode_raw(Codec &codec, const FloatTensor &latents);
// The ATen slerp the model codecs use (per batch item over the flattened latent).
FloatTensor slerp_raw(const FloatTensor &a, const FloatTensor &b, double t);

// Writes a tiny TorchScript encoder/decoder pair (8x average-pool to 4 channels / nearest upsample)
// following the torchscript backend's contract: lets tests exercise that backend without Python.
void write_test_torchscript_pair(const std::string &encoder_path, const std::string &decoder_path);

}  // namespace dw::latent

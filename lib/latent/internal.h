// Internal to lib/latent: the factory's view of the backends. No ATen here either.
#pragma once

#include <memory>
#include <string>

#include "latent/codec.h"

namespace dw::latent::detail {

// Config with Backend::Auto and model_dir resolved into a concrete backend and file paths,
// paths made canonical where the files exist, device normalised ("cuda" -> "cuda:0").
CodecConfig resolve(const CodecConfig &config);
const char *backend_name(Backend b);
const char *precision_name(Precision p);

std::unique_ptr<Codec> create_blend();

#ifdef DW_HAVE_TORCH
// Defined in the LibTorch backends (torch_common.cpp, taesd.cpp, torchscript.cpp).
std::unique_ptr<Codec> create_taesd(const CodecConfig &resolved);
std::unique_ptr<Codec> create_torchscript(const CodecConfig &resolved);
bool torch_cuda_available();
// Precision::Auto -> bf16 on CPUs with native bf16 (AMX/AVX512-BF16), fp16 on CUDA, else fp32.
Precision resolve_precision(Precision p, const std::string &device);
#endif

}  // namespace dw::latent::detail

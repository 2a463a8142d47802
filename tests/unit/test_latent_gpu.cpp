// GPU production rules of lib/latent (issue 12): device selection and its errors, the GPU memory
// policy (max_gpu_memory_mb / release_interval), and on a CUDA build with a GPU: accuracy of
// fp32/fp16/bf16 against the float32 oracle and flat GPU memory over many decodes. Without CUDA
// the CUDA tests skip saying so; the device errors are checked on every build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "image/image.h"
#include "latent/codec.h"
#include "latent/raw.h"
#include "latent/safetensors.h"

#ifdef DW_HAVE_TORCH
#include "latent/torch_common.h"
#endif

using namespace dw::latent;

namespace {

std::string shared_dir() {
  const char *d = std::getenv("DW_SHARED_DIR");
  return d ? d : "../shared";
}

CodecConfig taef2(Precision p = Precision::Fp32, const std::string &device = "cpu") {
  CodecConfig c;
  c.backend = Backend::Taesd;
  c.encoder_path = shared_dir() + "/models/taef2_encoder.safetensors";
  c.decoder_path = shared_dir() + "/models/taef2_decoder.safetensors";
  c.precision = p;
  c.device = device;
  return c;
}

std::string error_of(const CodecConfig &c) {
  try {
    create_codec(c);
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

#define REQUIRE_TORCH() \
  if (!torch_available()) GTEST_SKIP() << "built without LibTorch"
#define REQUIRE_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "CUDA part skipped: no CUDA in this LibTorch or no GPU"

FloatTensor oracle(const SafeTensors &st, const char *name) {
  const TensorInfo &info = st.get(name);
  FloatTensor t;
  t.shape = info.shape;
  t.data = st.to_float(info);
  return t;
}

double max_abs(const FloatTensor &a, const FloatTensor &b) {
  EXPECT_EQ(a.shape, b.shape);
  double m = 0;
  for (size_t i = 0; i < std::min(a.data.size(), b.data.size()); ++i)
    m = std::max(m, static_cast<double>(std::fabs(a.data[i] - b.data[i])));
  return m;
}

dw::Image pattern(int w, int h) {
  dw::Image img(w, h, 3);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>((i * 37) % 251);
  return img;
}

}  // namespace

TEST(Device, MissingCudaDeviceNamed) {
  REQUIRE_TORCH();
  // An index no machine has: the error names the device as given.
  std::string err = error_of(taef2(Precision::Auto, "cuda:99"));
  EXPECT_NE(err.find("'cuda:99'"), std::string::npos) << err;
  if (!cuda_available()) {
    err = error_of(taef2(Precision::Auto, "cuda:0"));
    EXPECT_NE(err.find("'cuda:0'"), std::string::npos) << err;
    EXPECT_NE(err.find("CUDA requested"), std::string::npos) << err;
  } else {
    EXPECT_NE(err.find("no such CUDA device"), std::string::npos) << err;
  }
  err = error_of(taef2(Precision::Auto, "cuda:x"));
  EXPECT_NE(err.find("invalid device 'cuda:x'"), std::string::npos) << err;
}

TEST(MemoryPolicy, RejectsNegativeValues) {
  REQUIRE_TORCH();
  CodecConfig c = taef2();
  c.max_gpu_memory_mb = -1;
  EXPECT_NE(error_of(c).find("max_gpu_memory_mb"), std::string::npos) << error_of(c);
  c = taef2();
  c.release_interval = -5;
  EXPECT_NE(error_of(c).find("release_interval"), std::string::npos) << error_of(c);
}

TEST(MemoryPolicy, NoOpOnCpu) {
  REQUIRE_TORCH();
  CodecConfig c = taef2();
  c.max_gpu_memory_mb = 1;  // would be far too small on a GPU; ignored on the CPU
  c.release_interval = 1;
  auto codec = create_codec(c);
  auto latent = codec->encode(pattern(64, 48));
  for (int i = 0; i < 3; ++i) {
    dw::Image out = codec->decode(*latent);
    EXPECT_EQ(out.width, 64);
    EXPECT_EQ(out.height, 48);
  }
}

TEST(MemoryPolicy, ResolveConfigKeepsFields) {
  CodecConfig c = taef2();
  c.max_gpu_memory_mb = 2048;
  c.release_interval = 500;
  c.device = "CUDA";
  const CodecConfig r = resolve_config(c);
  EXPECT_EQ(r.device, "cuda:0");
  EXPECT_EQ(r.max_gpu_memory_mb, 2048);
  EXPECT_EQ(r.release_interval, 500);
}

// ---- CUDA (skipped without a CUDA LibTorch and a GPU) ----

TEST(Cuda, DeviceHonoured) {
  REQUIRE_CUDA();
  auto codec = create_codec(taef2(Precision::Fp16, "cuda:0"));
  EXPECT_NE(codec->describe().find("cuda:0"), std::string::npos) << codec->describe();
  auto latent = codec->encode(pattern(256, 200));
  EXPECT_NE(latent->describe().find("cuda:0"), std::string::npos) << latent->describe();
  dw::Image out = codec->decode(*latent);
  EXPECT_EQ(out.width, 256);
  EXPECT_EQ(out.height, 200);
}

TEST(Cuda, OracleErrorPerPrecision) {
  REQUIRE_CUDA();
  const SafeTensors ref = SafeTensors::load(shared_dir() + "/models/taef2_reference.safetensors");
  const FloatTensor input = oracle(ref, "input"), latent = oracle(ref, "latent"), decoded = oracle(ref, "decoded");
  struct Case {
    Precision p;
    const char *name;
    double bound;  // encode+decode max abs vs the oracle
  };
  // fp16: the target. fp32 runs with TF32 convolutions (production setting), so it is held
  // to the fp16 bound here; bench/latent --table prints it with TF32 off against 1e-4.
  for (const Case &k : {Case{Precision::Fp32, "fp32", 1e-2}, Case{Precision::Fp16, "fp16", 1e-2},
                        Case{Precision::Bf16, "bf16", 5e-2}}) {
    auto codec = create_codec(taef2(k.p, "cuda:0"));
    const FloatTensor z = encode_raw(*codec, input);
    const double enc = max_abs(z, latent), dec = max_abs(decode_raw(*codec, latent), decoded),
                 both = max_abs(decode_raw(*codec, z), decoded);
    std::printf("%s: max abs error encode %.2e, decode %.2e, encode+decode %.2e [%s]\n", k.name, enc, dec, both,
                codec->describe().c_str());
    EXPECT_LE(both, k.bound) << k.name;
  }
}

#ifdef DW_HAVE_TORCH
TEST(Cuda, MemoryFlatOverDecodes) {
  REQUIRE_CUDA();
  CodecConfig c = taef2(Precision::Fp16, "cuda:0");
  c.release_interval = 200;
  auto codec = create_codec(c);
  auto latent = codec->encode(pattern(512, 512));
  const at::Device device(at::kCUDA, 0);
  for (int i = 0; i < 100; ++i) (void)codec->decode(*latent);
  const auto before = dw::latent::detail::gpu_memory(device);
  for (int i = 100; i < 2000; ++i) (void)codec->decode(*latent);
  const auto after = dw::latent::detail::gpu_memory(device);
  std::printf("GPU memory after 100 / 2000 decodes: allocated %lld / %lld, device used %lld / %lld bytes\n",
              static_cast<long long>(before.allocated), static_cast<long long>(after.allocated),
              static_cast<long long>(before.device_used), static_cast<long long>(after.device_used));
  EXPECT_LE(after.allocated, before.allocated + (1 << 20));  // no live tensor left behind per frame
  EXPECT_LE(after.device_used, before.device_used + before.device_used / 100);
}

TEST(Cuda, IntervalTrimsTheCache) {
  REQUIRE_CUDA();
  const at::Device device(at::kCUDA, 0);
  dw::latent::detail::GpuMemoryPolicy policy;
  policy.configure(device, /*max_mb=*/0, /*release_interval=*/2);
  {
    at::Tensor big = at::empty({int64_t(64) << 20}, at::TensorOptions().dtype(at::kByte).device(device));
  }  // freed into the allocator's cache, still reserved
  const int64_t cached = dw::latent::detail::gpu_memory(device).reserved;
  EXPECT_GE(cached, int64_t(64) << 20);
  policy.after_decode(1);  // not due yet
  EXPECT_EQ(policy.trims(), 0u);
  policy.after_decode(1);
  EXPECT_EQ(policy.trims(), 1u);
  EXPECT_LE(dw::latent::detail::gpu_memory(device).reserved, cached - (int64_t(64) << 20));
}
#endif

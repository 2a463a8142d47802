// TAEF2 codec speed on this machine.
//   latent [shared_dir] [iterations]
//     CPU figures: encode/decode ms per 512x512 frame for fp32, fp32 + caching CPU allocator,
//     channels_last, and bf16 (when the CPU has native bf16), plus the 8-bit PSNR of
//     decode(encode(astronaut)).
//   latent --table [--device cpu|cuda:N] [--sizes 256,512,1024] [--batches 1,4,16]
//          [--precisions fp32,fp16,bf16] [--iters N] [--warmup N] [--decodes N] [--shared DIR]
//     The issue-12 table (tools/gpu-check/run.sh): encode and decode frames/s per size, batch and
//     precision after warm-up (CUDA events on a GPU, the wall clock on a CPU), the max abs error vs
//     the float32 oracle (taef2_reference.safetensors), and GPU memory after 100 and after N
//     batch-1 decodes through the production path (flat = no growth).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "image/image.h"
#include "latent/codec.h"

#ifdef DW_HAVE_TORCH
#include <c10/core/InferenceMode.h>

#include <sstream>

#include "latent/safetensors.h"
#include "latent/torch_common.h"
#ifdef DW_HAVE_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#endif
#endif

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

// The device string as the codec resolves it ("cuda" -> "cuda:0").
std::string codec_device(const CodecConfig &c) { return resolve_config(c).device; }

}  // namespace

#ifdef DW_HAVE_TORCH
namespace {

std::vector<std::string> split(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) if (!item.empty()) out.push_back(item);
  return out;
}

Precision precision_of(const std::string &name) {
  if (name == "fp32") return Precision::Fp32;
  if (name == "fp16") return Precision::Fp16;
  if (name == "bf16") return Precision::Bf16;
  throw Error("unknown precision '" + name + "' (fp32, fp16, bf16)");
}

// Seconds for `iters` calls of fn after `warmup` calls: CUDA events on the codec's stream on a GPU.
template <typename Fn>
double time_it(const at::Device &device, int warmup, int iters, Fn &&fn) {
  for (int i = 0; i < warmup; ++i) fn();
#ifdef DW_HAVE_CUDA
  if (device.is_cuda()) {
    at::cuda::CUDAEvent start(0), stop(0);  // flags 0 = cudaEventDefault: timing enabled
    auto stream = c10::cuda::getCurrentCUDAStream(device.index());
    stream.synchronize();
    start.record(stream);
    for (int i = 0; i < iters; ++i) fn();
    stop.record(stream);
    stop.synchronize();
    return start.elapsed_time(stop) / 1000.0;
  }
#endif
  const double t0 = now_ms();
  for (int i = 0; i < iters; ++i) fn();
  return (now_ms() - t0) / 1000.0;
}

at::Tensor oracle(const SafeTensors &st, const char *name) {
  const TensorInfo &info = st.get(name);
  std::vector<float> v = st.to_float(info);
  return at::from_blob(v.data(), info.shape, at::kFloat).clone();
}

double max_abs(const at::Tensor &a, const at::Tensor &b) {
  return (a.to(at::kCPU, at::kFloat) - b.to(at::kCPU, at::kFloat)).abs().max().item<double>();
}

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

int run_table(int argc, char **argv) {
  std::string shared = std::getenv("DW_SHARED_DIR") ? std::getenv("DW_SHARED_DIR") : DW_SHARED_DIR;
  std::string device_name = "cpu";
  std::vector<std::string> sizes = {"256", "512", "1024"}, batches = {"1", "4", "16"},
                           precisions = {"fp32", "fp16", "bf16"};
  int iters = 20, decodes = 10000, warmup = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--device") device_name = v;
    else if (k == "--sizes") sizes = split(v);
    else if (k == "--batches") batches = split(v);
    else if (k == "--precisions") precisions = split(v);
    else if (k == "--iters") iters = std::max(1, std::atoi(v.c_str()));
    else if (k == "--warmup") warmup = std::max(0, std::atoi(v.c_str()));
    else if (k == "--decodes") decodes = std::max(100, std::atoi(v.c_str()));
    else if (k == "--shared") shared = v;
    else {
      std::fprintf(stderr, "bench latent: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  CodecConfig base;
  base.backend = Backend::Taesd;
  base.encoder_path = shared + "/models/taef2_encoder.safetensors";
  base.decoder_path = shared + "/models/taef2_decoder.safetensors";
  base.device = device_name;
  const SafeTensors ref = SafeTensors::load(shared + "/models/taef2_reference.safetensors");
  c10::InferenceMode guard;
  const at::Tensor ref_input = oracle(ref, "input"), ref_latent = oracle(ref, "latent"),
                   ref_decoded = oracle(ref, "decoded");

  std::printf("## TAEF2 throughput on %s (frames/s after %d warm-up calls, %d timed; %s)\n\n", device_name.c_str(), warmup,
              iters, device_name == "cpu" ? "wall clock" : "CUDA events");
  std::printf("| size | batch | precision | encode fps | decode fps |\n|---|---|---|---|---|\n");
  struct Err { std::string precision, note; double enc, dec, roundtrip; };
  std::vector<Err> errors;
  for (const auto &pname : precisions) {
    CodecConfig c = base;
    c.precision = precision_of(pname);
    std::unique_ptr<Codec> codec;
    try {
      codec = create_codec(c);
    } catch (const Error &e) {
      std::printf("| - | - | %s | error: %s | |\n", pname.c_str(), e.what());
      continue;
    }
    const std::string desc = codec->describe();
    if (desc.find(" " + pname) == std::string::npos) {
      std::printf("| - | - | %s | skipped: codec runs as [%s] | |\n", pname.c_str(), desc.c_str());
      continue;
    }
    auto &raw = dynamic_cast<dw::latent::detail::RawAccess &>(*codec);
    const at::Device device = dw::latent::detail::parse_device(codec_device(c));
    for (const auto &s : sizes) {
      for (const auto &b : batches) {
        const int64_t n = std::atoi(b.c_str()), px = std::atoi(s.c_str());
        try {
          at::Tensor x = at::rand({n, 3, px, px}).to(device);
          at::Tensor z = raw.encode_tensor(x);
          const double te = time_it(device, warmup, iters, [&] { z = raw.encode_tensor(x); });
          at::Tensor y;
          const double td = time_it(device, warmup, iters, [&] { y = raw.decode_tensor(z); });
          std::printf("| %s² | %s | %s | %.1f | %.1f |\n", s.c_str(), b.c_str(), pname.c_str(), n * iters / te,
                      n * iters / td);
        } catch (const std::exception &e) {
          std::printf("| %s² | %s | %s | error: %s | |\n", s.c_str(), b.c_str(), pname.c_str(), e.what());
        }
        std::fflush(stdout);
      }
    }
    // Oracle error (input 256x256 astronaut). fp32 on CUDA is measured with TF32 on (production)
    // and off (the pure fp32 maths the 1e-4 target is about).
    auto measure = [&](const std::string &note) {
      const at::Tensor dev_input = ref_input.to(device);
      const at::Tensor z = raw.encode_tensor(dev_input);
      Err e;
      e.precision = pname;
      e.note = note;
      e.enc = max_abs(z, ref_latent);
      e.dec = max_abs(raw.decode_tensor(ref_latent.to(device)), ref_decoded);
      e.roundtrip = max_abs(raw.decode_tensor(z), ref_decoded);
      errors.push_back(e);
    };
    try {
      measure(device.is_cuda() && pname == "fp32" ? "TF32 on" : "");
      if (device.is_cuda() && pname == "fp32") {
        at::globalContext().setAllowTF32CuDNN(false);
        at::globalContext().setAllowTF32CuBLAS(false);
        measure("TF32 off");
        at::globalContext().setAllowTF32CuDNN(true);
        at::globalContext().setAllowTF32CuBLAS(true);
      }
    } catch (const std::exception &e) {
      std::printf("oracle %s: error: %s\n", pname.c_str(), e.what());
    }
  }
  std::printf("\n## Max abs error vs the float32 oracle (taef2_reference.safetensors, 256x256)\n\n");
  std::printf("| precision | encode (latent) | decode (oracle latent) | encode+decode | target (encode+decode) |\n"
              "|---|---|---|---|---|\n");
  for (const auto &e : errors)
    std::printf("| %s%s | %.2e | %.2e | %.2e | %s |\n", e.precision.c_str(),
                e.note.empty() ? "" : (" (" + e.note + ")").c_str(), e.enc, e.dec, e.roundtrip,
                e.precision == "fp32" ? "<= 1e-4" : e.precision == "fp16" ? "<= 1e-2" : "-");

  // Memory: the production path (Codec::decode: decode, 8-bit on the device, pinned copy).
  std::printf("\n## GPU memory over %d batch-1 decodes (512x512, production path)\n\n", decodes);
  CodecConfig mc = base;
  const at::Device mdev = dw::latent::detail::parse_device(codec_device(mc));
  if (!mdev.is_cuda()) {
    std::printf("skipped: device %s has no GPU memory to watch (CUDA parts run on a GPU machine only)\n",
                device_name.c_str());
    return 0;
  }
  auto codec = create_codec(mc);
  dw::Image img(512, 512, 3);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 7);
  auto latent = codec->encode(img);
  for (int i = 0; i < 100; ++i) (void)codec->decode(*latent);
  const auto before = dw::latent::detail::gpu_memory(mdev);
  const double t0 = now_ms();
  for (int i = 100; i < decodes; ++i) (void)codec->decode(*latent);
  const double secs = (now_ms() - t0) / 1000.0;
  const auto after = dw::latent::detail::gpu_memory(mdev);
  std::printf("| after | allocated | reserved | device used (all processes) |\n|---|---|---|---|\n");
  std::printf("| 100 decodes | %s | %s | %s |\n", mib(before.allocated).c_str(), mib(before.reserved).c_str(),
              mib(before.device_used).c_str());
  std::printf("| %d decodes | %s | %s | %s |\n", decodes, mib(after.allocated).c_str(), mib(after.reserved).c_str(),
              mib(after.device_used).c_str());
  const double growth = before.device_used > 0 ? 100.0 * (after.device_used - before.device_used) / before.device_used : 0;
  std::printf("\ndevice memory growth: %+.2f %% (target within 1 %%); %.0f decodes/s (batch 1, incl. copy to host) [%s]\n",
              growth, (decodes - 100) / secs, codec->describe().c_str());
  return 0;
}

}  // namespace
#endif

int main(int argc, char **argv) {
  if (argc > 1 && std::string(argv[1]) == "--table") {
#ifdef DW_HAVE_TORCH
    try {
      return run_table(argc, argv);
    } catch (const std::exception &e) {
      std::fprintf(stderr, "bench latent --table: %s\n", e.what());
      return 1;
    }
#else
    std::fprintf(stderr, "bench latent --table: built without LibTorch\n");
    return 1;
#endif
  }
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

// libFuzzer target for the safetensors reader: any byte string must either parse into tensors whose
// byte ranges lie inside the input, or throw dw::latent::Error -- never crash, hang or read out of
// bounds (built with ASan/UBSan).
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "latent/safetensors.h"

namespace {

void check(const uint8_t *data, size_t size) {
  try {
    auto st = dw::latent::SafeTensors::parse(data, size, "fuzz.safetensors");
    for (const auto &t : st.tensors()) {
      if (t.end > size || t.begin > t.end) std::abort();
      if (t.numel() <= (1u << 16) &&
          (t.dtype == dw::latent::DType::F16 || t.dtype == dw::latent::DType::BF16 || t.dtype == dw::latent::DType::F32)) {
        auto v = st.to_float(t);
        if (v.size() != t.numel()) std::abort();
      }
      (void)st.get(t.name);
    }
  } catch (const dw::latent::Error &) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // 1. The bytes as a whole file (hostile header lengths, truncation...).
  check(data, size);
  // 2. A file with a consistent header length, so that mutations mostly exercise the JSON and
  //    offset/shape validation: the first byte gives the data-section size, the rest up to it is
  //    the JSON header.
  if (size >= 1) {
    const size_t data_len = std::min<size_t>(data[0], size - 1);
    const size_t header_len = size - 1 - data_len;
    std::vector<uint8_t> buf(8 + size - 1);
    for (int i = 0; i < 8; ++i) buf[i] = static_cast<uint8_t>(static_cast<uint64_t>(header_len) >> (8 * i));
    std::copy(data + 1, data + size, buf.begin() + 8);
    check(buf.data(), buf.size());
  }
  return 0;
}

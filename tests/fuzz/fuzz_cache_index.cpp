// libFuzzer target for the cache's index.json reader (dw::cache::parse_index, the pure part of
// Store's loading): any bytes give an Index whose ids are safe file names and whose next-id names
// a new file without wrapping, or a StoreError -- never a crash (ASan/UBSan).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cache/store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  try {
    dw::cache::Index index = dw::cache::parse_index(std::string(reinterpret_cast<const char *>(data), size));
    if (index.next_id < 1 || index.next_id > dw::cache::kMaxNextId) std::abort();
    for (const auto &e : index.entries) {
      if (e.id.empty() || e.id.find('/') != std::string::npos) std::abort();
      if (e.width < 0 || e.height < 0) std::abort();
    }
  } catch (const dw::cache::StoreError &) {
  }
  return 0;
}

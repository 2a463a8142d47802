// An in-process caching CPU allocator for LibTorch. glibc serves every allocation above its mmap
// threshold (activations of a 512x512 decode are 16-64 MiB) with a fresh mmap and returns it with
// munmap, so each layer pays page faults and zeroing of new pages. This allocator keeps freed
// blocks >= 1 MiB in a size-keyed cache (bounded, default 1 GiB, DW_LATENT_CPU_CACHE_MB) and hands
// them out again; small blocks go to the allocator that was installed before.
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#include "latent/torch_common.h"

namespace dw::latent::detail {
namespace {

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(c10::Allocator *base) : base_(base), base_deleter_(base->raw_deleter()) {
    if (const char *env = std::getenv("DW_LATENT_CPU_CACHE_MB")) {
      const long mb = std::atol(env);
      if (mb >= 0) max_cached_ = static_cast<size_t>(mb) << 20;
    }
  }

  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinBlock) return base_->allocate(n);
    const size_t size = (n + kGranule - 1) / kGranule * kGranule;
    void *p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 8) {
        p = it->second;
        live_[p] = it->first;
        cached_bytes_ -= it->first;
        free_.erase(it);
      }
    }
    if (!p) {
      if (posix_memalign(&p, 64, size) != 0 || !p) throw std::bad_alloc();
      std::lock_guard<std::mutex> lock(mutex_);
      live_[p] = size;
    }
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  static CachingCpuAllocator *instance;

 private:
  static void release(void *p) {
    if (!p) return;
    CachingCpuAllocator &a = *instance;
    std::unique_lock<std::mutex> lock(a.mutex_);
    auto it = a.live_.find(p);
    if (it == a.live_.end()) {
      // Not a cached block: a small block from the base allocator handed out through
      // raw_allocate() (oneDNN/ideep scratch and weight buffers) and now returned through
      // raw_deallocate(), which uses our raw_deleter(). Give it back to its owner.
      lock.unlock();
      if (a.base_deleter_) a.base_deleter_(p);
      return;
    }
    const size_t size = it->second;
    a.live_.erase(it);
    if (a.cached_bytes_ + size <= a.max_cached_) {
      a.free_.emplace(size, p);
      a.cached_bytes_ += size;
    } else {
      std::free(p);
    }
  }

  static constexpr size_t kMinBlock = 1u << 20;
  static constexpr size_t kGranule = 64u << 10;
  c10::Allocator *base_;
  c10::DeleterFnPtr base_deleter_;
  size_t max_cached_ = size_t{1} << 30;
  mutable std::mutex mutex_;
  mutable std::unordered_map<void *, size_t> live_;
  mutable std::multimap<size_t, void *> free_;
  mutable size_t cached_bytes_ = 0;
};

CachingCpuAllocator *CachingCpuAllocator::instance = nullptr;

}  // namespace

void install_caching_cpu_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (const char *env = std::getenv("DW_LATENT_CACHING_ALLOCATOR"); env && std::string(env) == "0") return;
    // Never destroyed: tensors may be freed during static destruction.
    CachingCpuAllocator::instance = new CachingCpuAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(CachingCpuAllocator::instance, /*priority=*/1);
  });
}

}  // namespace dw::latent::detail

// A bounds-checked .safetensors reader (no LibTorch): 8-byte little-endian header length, JSON
// header (json-glib), then the data section. Every offset, shape and dtype is validated against the
// file before any tensor is touched, so hostile files give an Error naming the file and tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "latent/codec.h"

namespace dw::latent {

enum class DType { F16, BF16, F32, F64, I64, I32, I16, I8, U8, Bool };
size_t dtype_size(DType d);
const char *dtype_name(DType d);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets inside the data section
  uint64_t numel() const;
  std::string shape_str() const;  // "64x3x3x3"
};

class SafeTensors {
 public:
  // Reads and validates a file (throws Error "<path>: ...").
  static SafeTensors load(const std::string &path);
  // Validates bytes already in memory; origin names them in errors.
  static SafeTensors parse(const uint8_t *data, size_t size, const std::string &origin);

  const std::string &origin() const { return origin_; }
  const std::vector<TensorInfo> &tensors() const { return tensors_; }
  const std::map<std::string, std::string> &metadata() const { return metadata_; }
  bool has(const std::string &name) const { return index_.count(name) != 0; }
  // Throws Error "<file>: missing tensor '<name>'".
  const TensorInfo &get(const std::string &name) const;
  const uint8_t *data(const TensorInfo &t) const { return buffer_->data() + data_start_ + t.begin; }
  // Copies one F16/BF16/F32 tensor into float32 (throws for other dtypes).
  std::vector<float> to_float(const TensorInfo &t) const;

  // Limits applied to untrusted files.
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
  static constexpr size_t kMaxRank = 8;

 private:
  static void validate(const uint8_t *data, size_t size, SafeTensors &st);
  std::string origin_;
  std::shared_ptr<std::vector<uint8_t>> buffer_;
  size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// IEEE half / bfloat16 to float (exact).
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);

}  // namespace dw::latent

// Bounds-checked safetensors parsing. All arithmetic on untrusted numbers is overflow-checked.
#include "latent/safetensors.h"

#include <json-glib/json-glib.h>

#include "json/json.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace dw::latent {

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::Bool: return 1;
  }
  return 0;
}

const char *dtype_name(DType d) {
  switch (d) {
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);  // validated not to overflow at parse time
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s.empty() ? "scalar" : s;
}

namespace {

bool parse_dtype(const char *s, DType &out) {
  static const std::pair<const char *, DType> table[] = {
      {"F16", DType::F16}, {"BF16", DType::BF16}, {"F32", DType::F32}, {"F64", DType::F64},
      {"I64", DType::I64}, {"I32", DType::I32},   {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::Bool}};
  for (const auto &e : table)
    if (std::strcmp(s, e.first) == 0) {
      out = e.second;
      return true;
    }
  return false;
}

// A non-negative JSON integer (json-glib stores integers as gint64; doubles/strings rejected).
bool get_uint(JsonNode *node, uint64_t &out) {
  if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64) return false;
  const gint64 v = json_node_get_int(node);
  if (v < 0) return false;
  out = static_cast<uint64_t>(v);
  return true;
}

}  // namespace

SafeTensors SafeTensors::load(const std::string &path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(path + ": cannot open model file (" + std::strerror(errno) + ")");
  const std::streamoff size = f.tellg();
  if (size < 0) throw Error(path + ": cannot determine file size");
  if (static_cast<uint64_t>(size) > (64ull << 30)) throw Error(path + ": file too large for a safetensors model");
  auto buffer = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(size));
  f.seekg(0);
  if (size > 0 && !f.read(reinterpret_cast<char *>(buffer->data()), size))
    throw Error(path + ": read error");
  SafeTensors out;
  out.origin_ = path;
  validate(buffer->data(), buffer->size(), out);  // in place: no second copy of large files
  out.buffer_ = std::move(buffer);
  return out;
}

SafeTensors SafeTensors::parse(const uint8_t *data, size_t size, const std::string &origin) {
  SafeTensors st;
  st.origin_ = origin;
  validate(data, size, st);
  st.buffer_ = std::make_shared<std::vector<uint8_t>>(data, data + size);
  return st;
}

void SafeTensors::validate(const uint8_t *data, size_t size, SafeTensors &st) {
  const std::string &o = st.origin_;
  if (size < 8)
    throw Error(o + ": not a safetensors file (truncated: " + std::to_string(size) +
                " bytes, need at least the 8-byte header length)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len < 2) throw Error(o + ": not a safetensors file (header length " + std::to_string(header_len) + ")");
  if (header_len > kMaxHeaderBytes)
    throw Error(o + ": not a safetensors file (header length " + std::to_string(header_len) + " exceeds 100 MiB)");
  if (header_len > size - 8)
    throw Error(o + ": truncated or not a safetensors file (header of " + std::to_string(header_len) +
                " bytes but the file has " + std::to_string(size) + ")");
  const size_t data_start = 8 + static_cast<size_t>(header_len);
  const uint64_t data_size = size - data_start;
  if (data[8] != '{') throw Error(o + ": not a safetensors file (header is not a JSON object)");

  // Through the shared entry point: a header of "{\"a\":[[[[..." must be an Error, not a stack
  // overflow in json-glib (safetensors is meant to be safe for untrusted files). Real headers are
  // 3 levels deep (root, tensor, shape).
  dw::json::Limits limits;
  limits.max_bytes = kMaxHeaderBytes;
  limits.max_depth = 8;
  dw::json::NodePtr doc;
  try {
    doc = dw::json::parse(std::string_view(reinterpret_cast<const char *>(data + 8), static_cast<size_t>(header_len)),
                          "header", limits);
  } catch (const dw::json::Error &e) {
    throw Error(o + ": corrupt safetensors " + e.what());
  }
  JsonNode *root = doc.get();
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) throw Error(o + ": corrupt safetensors header (not a JSON object)");
  JsonObject *obj = json_node_get_object(root);

  GList *members = json_object_get_members(obj);
  struct ListGuard {
    GList *l;
    ~ListGuard() { g_list_free(l); }
  } guard{members};
  for (GList *m = members; m; m = m->next) {
    const char *name = static_cast<const char *>(m->data);
    JsonNode *node = json_object_get_member(obj, name);
    if (std::strcmp(name, "__metadata__") == 0) {
      if (!JSON_NODE_HOLDS_OBJECT(node)) throw Error(o + ": corrupt safetensors header (__metadata__ is not an object)");
      JsonObject *md = json_node_get_object(node);
      GList *keys = json_object_get_members(md);
      for (GList *k = keys; k; k = k->next) {
        JsonNode *v = json_object_get_member(md, static_cast<const char *>(k->data));
        if (v && JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_STRING)
          st.metadata_[static_cast<const char *>(k->data)] = json_node_get_string(v);
      }
      g_list_free(keys);
      continue;
    }
    const std::string where = o + ": tensor '" + name + "'";
    if (!JSON_NODE_HOLDS_OBJECT(node)) throw Error(where + ": header entry is not an object");
    JsonObject *t = json_node_get_object(node);
    TensorInfo info;
    info.name = name;
    JsonNode *dt = json_object_get_member(t, "dtype");
    if (!dt || !JSON_NODE_HOLDS_VALUE(dt) || json_node_get_value_type(dt) != G_TYPE_STRING)
      throw Error(where + ": missing dtype");
    if (!parse_dtype(json_node_get_string(dt), info.dtype))
      throw Error(where + ": unsupported dtype '" + json_node_get_string(dt) + "'");
    JsonNode *sh = json_object_get_member(t, "shape");
    if (!sh || !JSON_NODE_HOLDS_ARRAY(sh)) throw Error(where + ": missing shape");
    JsonArray *sha = json_node_get_array(sh);
    const guint rank = json_array_get_length(sha);
    if (rank > kMaxRank) throw Error(where + ": rank " + std::to_string(rank) + " exceeds " + std::to_string(kMaxRank));
    uint64_t numel = 1;
    for (guint i = 0; i < rank; ++i) {
      uint64_t d = 0;
      if (!get_uint(json_array_get_element(sha, i), d) || d > static_cast<uint64_t>(INT64_MAX))
        throw Error(where + ": shape entries must be non-negative integers");
      if (__builtin_mul_overflow(numel, d, &numel)) throw Error(where + ": shape overflows");
      info.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &nbytes))
      throw Error(where + ": shape overflows");
    JsonNode *off = json_object_get_member(t, "data_offsets");
    if (!off || !JSON_NODE_HOLDS_ARRAY(off) || json_array_get_length(json_node_get_array(off)) != 2)
      throw Error(where + ": data_offsets must be [begin, end]");
    JsonArray *offa = json_node_get_array(off);
    if (!get_uint(json_array_get_element(offa, 0), info.begin) || !get_uint(json_array_get_element(offa, 1), info.end))
      throw Error(where + ": data_offsets must be non-negative integers");
    if (info.begin > info.end) throw Error(where + ": data_offsets begin > end");
    if (info.end > data_size)
      throw Error(where + ": data ends at byte " + std::to_string(info.end) + " but the data section has " +
                  std::to_string(data_size) + " bytes (truncated file?)");
    if (info.end - info.begin != nbytes)
      throw Error(where + ": " + dtype_name(info.dtype) + " " + info.shape_str() + " needs " + std::to_string(nbytes) +
                  " bytes but data_offsets span " + std::to_string(info.end - info.begin));
    st.index_[info.name] = st.tensors_.size();
    st.tensors_.push_back(std::move(info));
  }
  // Non-overlapping data ranges.
  std::vector<const TensorInfo *> sorted;
  for (const auto &t : st.tensors_) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorInfo *a, const TensorInfo *b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->begin < sorted[i - 1]->end)
      throw Error(o + ": tensors '" + sorted[i - 1]->name + "' and '" + sorted[i]->name + "' overlap");
  st.data_start_ = data_start;
}

const TensorInfo &SafeTensors::get(const std::string &name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(origin_ + ": missing tensor '" + name + "'");
  return tensors_[it->second];
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<float> SafeTensors::to_float(const TensorInfo &t) const {
  const uint8_t *p = data(t);
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out.data(), p, n * 4);
      break;
    case DType::F16:
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t v = static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8));
        out[i] = t.dtype == DType::F16 ? half_to_float(v) : bf16_to_float(v);
      }
      break;
    default:
      throw Error(origin_ + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                  ", expected F16, BF16 or F32");
  }
  return out;
}

}  // namespace dw::latent

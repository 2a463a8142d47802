// ComfyUI 0.8.0 simulator: libsoup 3 server on its own thread/GMainContext. See simulator.h and
// ../shared/comfyui/PROTOCOL.md for the behaviour reproduced here.
#include "sim/simulator.h"

#include <gio/gio.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

#include "image/image.h"
#include "sim/dream.h"

namespace dw::sim {

namespace {

// ------------------------------------------------------------------------------------------------
// Small JSON writer (Python-like output: ", " and ": " separators, floats with a ".0").

std::string json_escape(const std::string &s) {
  std::string o;
  o.reserve(s.size() + 2);
  o += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      case '\b': o += "\\b"; break;
      case '\f': o += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          g_snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  o += '"';
  return o;
}

std::string py_float(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[400];
  const double a = std::fabs(v);
  if (a != 0.0 && (a >= 1e16 || a < 1e-4)) {
    for (int prec = 1; prec <= 17; ++prec) {
      g_snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
      if (g_ascii_strtod(buf, nullptr) == v) break;
    }
  } else {
    for (int dec = 0; dec <= 17; ++dec) {
      g_snprintf(buf, sizeof buf, "%.*f", dec, v);
      if (g_ascii_strtod(buf, nullptr) == v) break;
    }
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

class JW {
 public:
  JW &ob() { pre(); s_ += '{'; st_.push_back({true, false, false}); return *this; }
  JW &oe() { s_ += '}'; st_.pop_back(); return *this; }
  JW &ab() { pre(); s_ += '['; st_.push_back({false, false, false}); return *this; }
  JW &ae() { s_ += ']'; st_.pop_back(); return *this; }
  JW &k(const std::string &key) {
    auto &f = st_.back();
    if (f.has) s_ += ", ";
    f.has = true;
    s_ += json_escape(key);
    s_ += ": ";
    f.after_key = true;
    return *this;
  }
  JW &s(const std::string &v) { pre(); s_ += json_escape(v); return *this; }
  JW &i(int64_t v) { pre(); s_ += std::to_string(v); return *this; }
  JW &u(uint64_t v) { pre(); s_ += std::to_string(v); return *this; }
  JW &d(double v) { pre(); s_ += py_float(v); return *this; }
  JW &b(bool v) { pre(); s_ += v ? "true" : "false"; return *this; }
  JW &null() { pre(); s_ += "null"; return *this; }
  JW &raw(const std::string &json) { pre(); s_ += json.empty() ? "null" : json; return *this; }
  const std::string &str() const { return s_; }

 private:
  struct Frame { bool obj; bool has; bool after_key; };
  void pre() {
    if (st_.empty()) return;
    auto &f = st_.back();
    if (f.obj) {
      f.after_key = false;
      return;
    }
    if (f.has) s_ += ", ";
    f.has = true;
  }
  std::string s_;
  std::vector<Frame> st_;
};

std::string node_to_json(JsonNode *n) {
  if (!n) return "null";
  char *t = json_to_string(n, FALSE);
  std::string r = t ? t : "null";
  g_free(t);
  return r;
}

// Python str()/repr()-like rendering of a JSON value (for error messages).
std::string py_str(JsonNode *n) {
  if (!n || JSON_NODE_HOLDS_NULL(n)) return "None";
  if (JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_STRING) return json_node_get_string(n);
    if (t == G_TYPE_BOOLEAN) return json_node_get_boolean(n) ? "True" : "False";
    if (t == G_TYPE_INT64) return std::to_string(json_node_get_int(n));
    if (t == G_TYPE_DOUBLE) return py_float(json_node_get_double(n));
  }
  return node_to_json(n);
}

std::string py_repr(JsonNode *n) {
  if (n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
    return "'" + std::string(json_node_get_string(n)) + "'";
  return py_str(n);
}

bool is_string(JsonNode *n) { return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING; }
bool is_int(JsonNode *n) { return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64; }

JsonNode *parse_json(const char *data, size_t len) {
  JsonParser *p = json_parser_new();
  JsonNode *root = nullptr;
  if (json_parser_load_from_data(p, data, static_cast<gssize>(len), nullptr)) {
    JsonNode *r = json_parser_get_root(p);
    if (r) root = json_node_copy(r);
  }
  g_object_unref(p);
  return root;
}

struct JsonNodePtr {
  JsonNode *n = nullptr;
  JsonNodePtr() = default;
  explicit JsonNodePtr(JsonNode *x) : n(x) {}
  JsonNodePtr(const JsonNodePtr &o) : n(o.n ? json_node_copy(o.n) : nullptr) {}
  JsonNodePtr &operator=(const JsonNodePtr &o) {
    if (this != &o) {
      if (n) json_node_unref(n);
      n = o.n ? json_node_copy(o.n) : nullptr;
    }
    return *this;
  }
  ~JsonNodePtr() { if (n) json_node_unref(n); }
};

int64_t now_ms() { return g_get_real_time() / 1000; }

std::string hex_sid() {
  char *u = g_uuid_string_random();
  std::string s;
  for (const char *p = u; *p; ++p)
    if (*p != '-') s += *p;
  g_free(u);
  return s;
}

bool read_file(const std::string &path, std::string &out) {
  gchar *data = nullptr;
  gsize len = 0;
  if (!g_file_get_contents(path.c_str(), &data, &len, nullptr)) return false;
  out.assign(data, len);
  g_free(data);
  return true;
}

bool write_file(const std::string &path, const void *data, size_t len) {
  return g_file_set_contents(path.c_str(), static_cast<const char *>(data), static_cast<gssize>(len), nullptr);
}

void remove_tree(const std::string &path) {
  if (g_file_test(path.c_str(), G_FILE_TEST_IS_DIR) && !g_file_test(path.c_str(), G_FILE_TEST_IS_SYMLINK)) {
    GDir *d = g_dir_open(path.c_str(), 0, nullptr);
    if (d) {
      const char *n;
      while ((n = g_dir_read_name(d))) remove_tree(path + "/" + n);
      g_dir_close(d);
    }
    g_rmdir(path.c_str());
  } else {
    g_unlink(path.c_str());
  }
}

// Lexical normalisation ("a/./b/../c" -> "a/c"); returns false if it climbs above the root.
bool normalize_rel(const std::string &rel, std::string &out) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= rel.size()) {
    size_t j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    std::string p = rel.substr(i, j - i);
    if (p == "..") {
      if (parts.empty()) return false;
      parts.pop_back();
    } else if (!p.empty() && p != ".") {
      parts.push_back(p);
    }
    i = j + 1;
  }
  out.clear();
  for (auto &p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return true;
}

// "name.png [output]" -> ("name.png", "output"); no annotation -> type "".
std::pair<std::string, std::string> split_annotation(const std::string &name) {
  static const char *types[] = {"output", "input", "temp"};
  for (const char *t : types) {
    std::string suffix = std::string(" [") + t + "]";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return {name.substr(0, name.size() - suffix.size()), t};
  }
  return {name, ""};
}

// ------------------------------------------------------------------------------------------------
// Node classes.

struct InSpec {
  std::string name;
  std::string type;  // INT FLOAT STRING BOOLEAN COMBO or a socket type (IMAGE, LATENT, ...)
  bool required = true;
  double fdef = 0, fmin = 0, fmax = 0, fstep = 0;
  int64_t idef = 0, imin = 0;
  uint64_t imax = 0, istep = 1;
  std::string sdef;
  bool multiline = false;
  std::vector<std::string> options;
  bool lenient = false;      // combo accepts any value (model names)
  bool dynamic_files = false;  // LoadImage's list of input files
};

struct NodeSpec {
  std::string name, display, category, description;
  std::vector<InSpec> inputs;
  std::vector<std::string> outputs;
  std::vector<std::string> output_names;
  bool output_node = false;
  bool hidden_prompt = false;
};

InSpec sock(const std::string &n, const std::string &t) { InSpec s; s.name = n; s.type = t; return s; }
InSpec ispec(const std::string &n, int64_t def, int64_t mn, uint64_t mx, uint64_t step = 1) {
  InSpec s; s.name = n; s.type = "INT"; s.idef = def; s.imin = mn; s.imax = mx; s.istep = step; return s;
}
InSpec fspec(const std::string &n, double def, double mn, double mx, double step) {
  InSpec s; s.name = n; s.type = "FLOAT"; s.fdef = def; s.fmin = mn; s.fmax = mx; s.fstep = step; return s;
}
InSpec combo(const std::string &n, std::vector<std::string> opts, bool lenient = false) {
  InSpec s; s.name = n; s.type = "COMBO"; s.options = std::move(opts); s.lenient = lenient; return s;
}
InSpec sspec(const std::string &n, const std::string &def, bool multiline = false) {
  InSpec s; s.name = n; s.type = "STRING"; s.sdef = def; s.multiline = multiline; return s;
}

const std::vector<std::string> kSamplers = {
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "gradient_estimation", "er_sde", "seeds_2", "seeds_3", "sa_solver", "ddim",
    "uni_pc", "uni_pc_bh2"};
const std::vector<std::string> kSchedulers = {"simple", "sgm_uniform", "karras", "exponential", "ddim_uniform",
                                              "beta", "normal", "linear_quadratic", "kl_optimal"};

const std::map<std::string, NodeSpec> &node_specs() {
  static const std::map<std::string, NodeSpec> specs = [] {
    std::map<std::string, NodeSpec> m;
    auto add = [&](NodeSpec s) { m[s.name] = std::move(s); };
    const uint64_t seed_max = 0xffffffffffffffffull;
    {
      NodeSpec s{"LoadImage", "Load Image", "image", ""};
      InSpec img = combo("image", {});
      img.dynamic_files = true;
      s.inputs = {img};
      s.outputs = {"IMAGE", "MASK"};
      add(s);
    }
    {
      NodeSpec s{"SaveImage", "Save Image", "image", "Saves the input images to your ComfyUI output directory."};
      s.inputs = {sock("images", "IMAGE"), sspec("filename_prefix", "ComfyUI")};
      s.output_node = true;
      s.hidden_prompt = true;
      add(s);
    }
    {
      NodeSpec s{"SaveImageWebsocket", "SaveImageWebsocket", "api node/image", ""};
      s.inputs = {sock("images", "IMAGE")};
      s.output_node = true;
      add(s);
    }
    {
      NodeSpec s{"PreviewImage", "Preview Image", "image", "Saves the input images to your ComfyUI output directory."};
      s.inputs = {sock("images", "IMAGE")};
      s.output_node = true;
      s.hidden_prompt = true;
      add(s);
    }
    {
      NodeSpec s{"ImageScale", "Upscale Image", "image/upscaling", ""};
      s.inputs = {sock("image", "IMAGE"), combo("upscale_method", {"nearest-exact", "bilinear", "area", "bicubic", "lanczos"}),
                  ispec("width", 512, 0, 16384), ispec("height", 512, 0, 16384), combo("crop", {"disabled", "center"})};
      s.outputs = {"IMAGE"};
      add(s);
    }
    {
      NodeSpec s{"ImageBlur", "Image Blur", "image/postprocessing", ""};
      s.inputs = {sock("image", "IMAGE"), ispec("blur_radius", 1, 1, 31), fspec("sigma", 1.0, 0.1, 10.0, 0.1)};
      s.outputs = {"IMAGE"};
      add(s);
    }
    {
      NodeSpec s{"ImageInvert", "Invert Image", "image", ""};
      s.inputs = {sock("image", "IMAGE")};
      s.outputs = {"IMAGE"};
      add(s);
    }
    {
      NodeSpec s{"ImageSharpen", "Image Sharpen", "image/postprocessing", ""};
      s.inputs = {sock("image", "IMAGE"), ispec("sharpen_radius", 1, 1, 31), fspec("sigma", 1.0, 0.1, 10.0, 0.01),
                  fspec("alpha", 1.0, 0.0, 5.0, 0.01)};
      s.outputs = {"IMAGE"};
      add(s);
    }
    {
      NodeSpec s{"CheckpointLoaderSimple", "Load Checkpoint", "loaders", "Loads a diffusion model checkpoint."};
      s.inputs = {combo("ckpt_name", {"sd_turbo.safetensors", "sd_xl_turbo_1.0_fp16.safetensors", "v1-5-pruned-emaonly.safetensors"}, true)};
      s.outputs = {"MODEL", "CLIP", "VAE"};
      add(s);
    }
    {
      NodeSpec s{"CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning", ""};
      s.inputs = {sspec("text", "", true), sock("clip", "CLIP")};
      s.outputs = {"CONDITIONING"};
      add(s);
    }
    {
      NodeSpec s{"VAEEncode", "VAE Encode", "latent", ""};
      s.inputs = {sock("pixels", "IMAGE"), sock("vae", "VAE")};
      s.outputs = {"LATENT"};
      add(s);
    }
    {
      NodeSpec s{"VAEDecode", "VAE Decode", "latent", ""};
      s.inputs = {sock("samples", "LATENT"), sock("vae", "VAE")};
      s.outputs = {"IMAGE"};
      add(s);
    }
    {
      NodeSpec s{"KSampler", "KSampler", "sampling", ""};
      s.inputs = {sock("model", "MODEL"), ispec("seed", 0, 0, seed_max), ispec("steps", 20, 1, 10000),
                  fspec("cfg", 8.0, 0.0, 100.0, 0.1), combo("sampler_name", kSamplers), combo("scheduler", kSchedulers),
                  sock("positive", "CONDITIONING"), sock("negative", "CONDITIONING"), sock("latent_image", "LATENT"),
                  fspec("denoise", 1.0, 0.0, 1.0, 0.01)};
      s.outputs = {"LATENT"};
      add(s);
    }
    {
      NodeSpec s{"KSamplerAdvanced", "KSampler (Advanced)", "sampling", ""};
      s.inputs = {sock("model", "MODEL"), combo("add_noise", {"enable", "disable"}), ispec("noise_seed", 0, 0, seed_max),
                  ispec("steps", 20, 1, 10000), fspec("cfg", 8.0, 0.0, 100.0, 0.1), combo("sampler_name", kSamplers),
                  combo("scheduler", kSchedulers), sock("positive", "CONDITIONING"), sock("negative", "CONDITIONING"),
                  sock("latent_image", "LATENT"), ispec("start_at_step", 0, 0, 10000), ispec("end_at_step", 10000, 0, 10000),
                  combo("return_with_leftover_noise", {"disable", "enable"})};
      s.outputs = {"LATENT"};
      add(s);
    }
    {
      NodeSpec s{"EmptyLatentImage", "Empty Latent Image", "latent", ""};
      s.inputs = {ispec("width", 512, 16, 16384, 8), ispec("height", 512, 16, 16384, 8), ispec("batch_size", 1, 1, 4096)};
      s.outputs = {"LATENT"};
      add(s);
    }
    {
      NodeSpec s{"LoraLoader", "Load LoRA", "loaders", ""};
      s.inputs = {sock("model", "MODEL"), sock("clip", "CLIP"), combo("lora_name", {"lcm-lora-sdv1-5.safetensors"}, true),
                  fspec("strength_model", 1.0, -100.0, 100.0, 0.01), fspec("strength_clip", 1.0, -100.0, 100.0, 0.01)};
      s.outputs = {"MODEL", "CLIP"};
      add(s);
    }
    for (auto &kv : m)
      if (kv.second.output_names.empty()) kv.second.output_names = kv.second.outputs;
    return m;
  }();
  return specs;
}

const NodeSpec *find_spec(const std::string &cls) {
  auto &m = node_specs();
  auto it = m.find(cls);
  return it == m.end() ? nullptr : &it->second;
}

std::string py_list(const std::vector<std::string> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += "'" + v[i] + "'";
  }
  return s + "]";
}

// ------------------------------------------------------------------------------------------------
// Python-like conversions.

bool py_int(JsonNode *n, int64_t &out, std::string &err) {
  if (n && JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) { out = json_node_get_int(n); return true; }
    if (t == G_TYPE_DOUBLE) {
      double d = json_node_get_double(n);
      if (std::isnan(d) || std::isinf(d)) { err = "cannot convert float NaN to integer"; return false; }
      out = static_cast<int64_t>(d);
      return true;
    }
    if (t == G_TYPE_BOOLEAN) { out = json_node_get_boolean(n) ? 1 : 0; return true; }
    if (t == G_TYPE_STRING) {
      std::string s = json_node_get_string(n);
      std::string t2 = s;
      g_strstrip(t2.data());
      t2 = t2.c_str();
      char *end = nullptr;
      errno = 0;
      long long v = g_ascii_strtoll(t2.c_str(), &end, 10);
      if (!t2.empty() && end && *end == '\0' && errno == 0 && (g_ascii_isdigit(t2.back()))) {
        out = v;
        return true;
      }
      err = "invalid literal for int() with base 10: '" + s + "'";
      return false;
    }
  }
  err = std::string("int() argument must be a string, a bytes-like object or a real number, not '") +
        (n && JSON_NODE_HOLDS_NULL(n) ? "NoneType" : n && JSON_NODE_HOLDS_OBJECT(n) ? "dict" : "list") + "'";
  return false;
}

bool py_float_conv(JsonNode *n, double &out, std::string &err) {
  if (n && JSON_NODE_HOLDS_VALUE(n)) {
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) { out = static_cast<double>(json_node_get_int(n)); return true; }
    if (t == G_TYPE_DOUBLE) { out = json_node_get_double(n); return true; }
    if (t == G_TYPE_BOOLEAN) { out = json_node_get_boolean(n) ? 1.0 : 0.0; return true; }
    if (t == G_TYPE_STRING) {
      std::string s = json_node_get_string(n);
      std::string t2 = s;
      g_strstrip(t2.data());
      t2 = t2.c_str();
      char *end = nullptr;
      double v = g_ascii_strtod(t2.c_str(), &end);
      if (!t2.empty() && end && *end == '\0') { out = v; return true; }
      err = "could not convert string to float: '" + s + "'";
      return false;
    }
  }
  err = std::string("float() argument must be a string or a real number, not '") +
        (n && JSON_NODE_HOLDS_NULL(n) ? "NoneType" : n && JSON_NODE_HOLDS_OBJECT(n) ? "dict" : "list") + "'";
  return false;
}

std::string input_config_json(const InSpec &s, const std::vector<std::string> &files) {
  JW w;
  w.ab();
  if (s.type == "INT") {
    w.s("INT").ob().k("default").i(s.idef).k("min").i(s.imin).k("max").u(s.imax).k("step").u(s.istep).oe();
  } else if (s.type == "FLOAT") {
    w.s("FLOAT").ob().k("default").d(s.fdef).k("min").d(s.fmin).k("max").d(s.fmax).k("step").d(s.fstep).oe();
  } else if (s.type == "STRING") {
    w.s("STRING").ob();
    if (s.multiline) w.k("multiline").b(true).k("dynamicPrompts").b(true);
    else w.k("default").s(s.sdef);
    w.oe();
  } else if (s.type == "COMBO") {
    w.ab();
    for (auto &o : (s.dynamic_files ? files : s.options)) w.s(o);
    w.ae().ob();
    if (s.dynamic_files) w.k("image_upload").b(true);
    w.oe();
  } else {
    w.s(s.type).ob().oe();
  }
  w.ae();
  return w.str();
}

struct PyExc {
  std::string type, msg;
};

struct ValResult {
  bool valid = true;
  std::vector<std::string> errors;  // raw JSON objects
};

std::string err_obj(const std::string &type, const std::string &message, const std::string &details,
                    const std::string &extra_raw = "{}") {
  JW w;
  w.ob().k("type").s(type).k("message").s(message).k("details").s(details).k("extra_info").raw(extra_raw).oe();
  return w.str();
}

struct Num {
  double v = 0;
  bool is_float = false;
  std::string json() const { return is_float ? py_float(v) : std::to_string(static_cast<int64_t>(v)); }
};

}  // namespace

// ================================================================================================

struct CacheEntry {
  std::vector<std::shared_ptr<const Image>> outs;
  std::string ui;  // raw JSON {"images": [...]} or empty
};

struct NodeState {
  std::string id;
  double value = 0, max = 1;
  bool ints = false;
  bool finished = false;
};

struct Job {
  uint64_t serial = 0;
  int job_index = 0;  // 1-based count since start()
  Num number;
  uint64_t seq = 0;  // insertion order tie-break
  std::string id, client_id;
  JsonNodePtr prompt;  // object
  std::string prompt_raw, extra_raw;
  std::vector<std::string> outputs;
  int64_t create_time = 0;
  // execution
  std::vector<std::string> order;
  std::set<std::string> cached;
  std::map<std::string, std::string> sigs;
  size_t pos = 0;
  std::vector<std::string> executed;
  std::map<std::string, std::vector<std::shared_ptr<const Image>>> results;
  std::vector<std::pair<std::string, std::string>> outputs_ui;  // node -> raw ui
  std::vector<std::string> messages;                              // raw ["name", {...}]
  std::vector<NodeState> states;
  std::string current_node;
  bool interrupt = false;
  bool dropped = false;
  int64_t start_ms = 0;
};

struct HistEntry {
  std::string id;
  std::string json;  // the entry object
  bool success = false;
  Num number;
  int64_t create_time = 0, start_ms = 0, end_ms = 0;
  size_t outputs_count = 0;
};

struct Ws {
  SoupWebsocketConnection *conn = nullptr;
  std::string sid;
  bool got_first_text = false;
  bool supports_meta = false;
  gulong h_message = 0, h_closed = 0;
  Simulator::Impl *impl = nullptr;
};

struct Simulator::Impl {
  Config cfg;
  std::string data_dir, input_dir, output_dir, temp_dir;
  bool own_data_dir = false;

  // shared, under mu
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  Faults faults;
  uint32_t latency_ms = 0, jitter_ms = 0;
  std::vector<PromptRecord> prompts;
  std::vector<UploadRecord> uploads;
  uint64_t completed = 0, succeeded = 0;
  uint16_t port = 0;

  // thread
  GMainContext *ctx = nullptr;
  GMainLoop *loop = nullptr;
  GThread *thread = nullptr;
  bool running_thread = false;

  // server-thread state
  SoupServer *server = nullptr;
  bool listening = false;
  uint64_t http_count = 0;
  int64_t number_counter = 0;
  uint64_t seq_counter = 0, serial_counter = 0;
  int jobs_started = 0;
  std::vector<std::unique_ptr<Job>> queue;
  std::unique_ptr<Job> running;
  std::vector<HistEntry> history;
  std::map<std::string, CacheEntry> cache;
  std::list<std::unique_ptr<Ws>> sockets;
  std::map<std::string, Ws *> table;
  std::map<SoupServerMessage *, gulong> delayed_views;  // paused /view answers -> "disconnected" handler
  GRand *rand = nullptr;
  bool start_scheduled = false;

  Faults get_faults() const {
    std::lock_guard<std::mutex> l(mu);
    return faults;
  }

  void log(const char *fmt, ...) G_GNUC_PRINTF(2, 3) {
    if (!cfg.verbose) return;
    va_list ap;
    va_start(ap, fmt);
    char *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_printerr("comfy-sim: %s\n", s);
    g_free(s);
  }

  // ---------------------------------------------------------------------------- scheduling
  struct Call {
    std::function<void()> fn;
  };
  static gboolean call_cb(gpointer p) {
    static_cast<Call *>(p)->fn();
    return G_SOURCE_REMOVE;
  }
  static void call_free(gpointer p) { delete static_cast<Call *>(p); }
  void schedule(uint32_t ms, std::function<void()> fn) {
    GSource *s = ms == 0 ? g_idle_source_new() : g_timeout_source_new(ms);
    g_source_set_callback(s, call_cb, new Call{std::move(fn)}, call_free);
    g_source_attach(s, ctx);
    g_source_unref(s);
  }

  // Runs fn on the server thread and waits for it.
  void run_sync(std::function<void()> fn) {
    if (!running_thread || g_thread_self() == thread) {
      fn();
      return;
    }
    struct Sync {
      std::function<void()> fn;
      std::mutex m;
      std::condition_variable c;
      bool done = false;
    };
    auto sy = std::make_shared<Sync>();
    sy->fn = std::move(fn);
    auto *holder = new std::shared_ptr<Sync>(sy);
    GSource *s = g_idle_source_new();
    g_source_set_priority(s, G_PRIORITY_HIGH);
    g_source_set_callback(
        s,
        [](gpointer p) -> gboolean {
          auto &x = *static_cast<std::shared_ptr<Sync> *>(p);
          x->fn();
          std::lock_guard<std::mutex> l(x->m);
          x->done = true;
          x->c.notify_all();
          return G_SOURCE_REMOVE;
        },
        holder, [](gpointer p) { delete static_cast<std::shared_ptr<Sync> *>(p); });
    g_source_attach(s, ctx);
    g_source_unref(s);
    std::unique_lock<std::mutex> l(sy->m);
    sy->c.wait_for(l, std::chrono::seconds(10), [&] { return sy->done; });
  }

  // ---------------------------------------------------------------------------- websockets
  int queue_remaining() const { return static_cast<int>(queue.size()) + (running ? 1 : 0); }

  std::string status_msg(const std::string *sid) const {
    JW w;
    w.ob().k("type").s("status").k("data").ob().k("status").ob().k("exec_info").ob().k("queue_remaining").i(queue_remaining()).oe().oe();
    if (sid) w.k("sid").s(*sid);
    w.oe().oe();
    return w.str();
  }

  static bool ws_open(Ws *ws) {
    return ws && ws->conn && soup_websocket_connection_get_state(ws->conn) == SOUP_WEBSOCKET_STATE_OPEN;
  }

  void ws_send_text(Ws *ws, const std::string &text, bool force = false) {
    if (!ws_open(ws)) return;
    if (!force && get_faults().silent_websocket) return;
    soup_websocket_connection_send_text(ws->conn, text.c_str());
  }
  void ws_send_binary(Ws *ws, const std::vector<uint8_t> &data) {
    if (!ws_open(ws)) return;
    if (get_faults().silent_websocket) return;
    soup_websocket_connection_send_binary(ws->conn, data.data(), data.size());
  }

  void broadcast(const std::string &msg) {
    for (auto &kv : table) ws_send_text(kv.second, msg);
  }
  // To the socket of client_id; with no client_id: broadcast if `broadcast_if_none`.
  void send_to(const std::string &client_id, const std::string &msg, bool broadcast_if_none) {
    if (client_id.empty()) {
      if (broadcast_if_none) broadcast(msg);
      return;
    }
    auto it = table.find(client_id);
    if (it != table.end()) ws_send_text(it->second, msg);
  }
  void send_status() { broadcast(status_msg(nullptr)); }

  static std::string typed(const std::string &type, const std::string &data_raw) {
    return "{\"type\": " + json_escape(type) + ", \"data\": " + data_raw + "}";
  }

  void forget_ws(Ws *ws) {
    // ComfyUI removes the table entry of the sid, whichever socket it points to (deafness rule).
    table.erase(ws->sid);
    if (ws->conn) {
      if (ws->h_message) g_signal_handler_disconnect(ws->conn, ws->h_message);
      if (ws->h_closed) g_signal_handler_disconnect(ws->conn, ws->h_closed);
      g_object_unref(ws->conn);
      ws->conn = nullptr;
    }
    sockets.remove_if([ws](const std::unique_ptr<Ws> &p) { return p.get() == ws; });
  }

  // Closes every websocket with no close frame (1006 on the client).
  void drop_all_ws() {
    table.clear();
    for (auto &ws : sockets) {
      if (!ws->conn) continue;
      if (ws->h_message) g_signal_handler_disconnect(ws->conn, ws->h_message);
      if (ws->h_closed) g_signal_handler_disconnect(ws->conn, ws->h_closed);
      GIOStream *io = soup_websocket_connection_get_io_stream(ws->conn);
      if (io) {
        GIOStream *base = io;
        if (G_IS_SOCKET_CONNECTION(base)) {
          GSocket *sock = g_socket_connection_get_socket(G_SOCKET_CONNECTION(base));
          if (sock) g_socket_shutdown(sock, TRUE, TRUE, nullptr);
        }
        g_io_stream_close(io, nullptr, nullptr);
      }
      g_object_unref(ws->conn);
      ws->conn = nullptr;
    }
    sockets.clear();
  }

  static void on_ws_message(SoupWebsocketConnection *, gint type, GBytes *message, gpointer user) {
    auto *ws = static_cast<Ws *>(user);
    if (type != SOUP_WEBSOCKET_DATA_TEXT || ws->got_first_text) return;
    ws->got_first_text = true;
    gsize len = 0;
    const char *data = static_cast<const char *>(g_bytes_get_data(message, &len));
    JsonNode *root = parse_json(data, len);
    if (!root) return;
    if (JSON_NODE_HOLDS_OBJECT(root)) {
      JsonObject *o = json_node_get_object(root);
      const char *t = json_object_has_member(o, "type") && is_string(json_object_get_member(o, "type"))
                          ? json_object_get_string_member(o, "type") : "";
      if (g_strcmp0(t, "feature_flags") == 0) {
        JsonNode *d = json_object_get_member(o, "data");
        if (d && JSON_NODE_HOLDS_OBJECT(d)) {
          JsonNode *f = json_object_get_member(json_node_get_object(d), "supports_preview_metadata");
          ws->supports_meta = f && JSON_NODE_HOLDS_VALUE(f) && json_node_get_value_type(f) == G_TYPE_BOOLEAN &&
                              json_node_get_boolean(f);
        }
        ws->impl->ws_send_text(ws, typed("feature_flags", features_json()));
      }
    }
    json_node_unref(root);
  }

  static void on_ws_closed(SoupWebsocketConnection *, gpointer user) {
    auto *ws = static_cast<Ws *>(user);
    ws->impl->log("websocket %s closed", ws->sid.c_str());
    ws->impl->forget_ws(ws);
  }

  static void on_websocket(SoupServer *, SoupServerMessage *msg, const char *, SoupWebsocketConnection *conn, gpointer user) {
    auto *self = static_cast<Impl *>(user);
    std::string sid;
    GUri *uri = soup_server_message_get_uri(msg);
    const char *q = uri ? g_uri_get_query(uri) : nullptr;
    if (q) {
      GHashTable *params = g_uri_parse_params(q, -1, "&", G_URI_PARAMS_NONE, nullptr);
      if (params) {
        const char *c = static_cast<const char *>(g_hash_table_lookup(params, "clientId"));
        if (c) sid = c;
        g_hash_table_unref(params);
      }
    }
    if (sid.empty()) sid = hex_sid();
    auto ws = std::make_unique<Ws>();
    ws->conn = SOUP_WEBSOCKET_CONNECTION(g_object_ref(conn));
    ws->sid = sid;
    ws->impl = self;
    soup_websocket_connection_set_max_incoming_payload_size(conn, 256u * 1024 * 1024);
    soup_websocket_connection_set_keepalive_interval(conn, 0);
    ws->h_message = g_signal_connect(conn, "message", G_CALLBACK(on_ws_message), ws.get());
    ws->h_closed = g_signal_connect(conn, "closed", G_CALLBACK(on_ws_closed), ws.get());
    Ws *raw = ws.get();
    self->sockets.push_back(std::move(ws));
    self->table[sid] = raw;
    self->log("websocket connected, sid %s", sid.c_str());
    self->ws_send_text(raw, self->status_msg(&sid), true);
    if (self->running && !self->running->client_id.empty() && self->running->client_id == sid &&
        !self->running->current_node.empty()) {
      JW w;
      w.ob().k("node").s(self->running->current_node).oe();
      self->ws_send_text(raw, typed("executing", w.str()));
    }
  }

  static std::string features_json() {
    return "{\"supports_preview_metadata\": true, \"max_upload_size\": 104857600, \"extension\": {\"manager\": "
           "{\"supports_v4\": true}}}";
  }

  // ---------------------------------------------------------------------------- HTTP helpers
  void reply_json(SoupServerMessage *msg, guint status, const std::string &body) {
    std::string b = body;
    if (get_faults().malformed_json && b.size() > 1) b = b.substr(0, b.size() / 2);
    soup_server_message_set_status(msg, status, nullptr);
    soup_server_message_set_response(msg, "application/json; charset=utf-8", SOUP_MEMORY_COPY, b.data(), b.size());
  }
  static void reply_empty(SoupServerMessage *msg, guint status) {
    soup_server_message_set_status(msg, status, nullptr);
    soup_server_message_set_response(msg, "application/octet-stream", SOUP_MEMORY_STATIC, "", 0);
  }
  static void reply_500(SoupServerMessage *msg) {
    static const char body[] = "500 Internal Server Error\n\nServer got itself in trouble";
    soup_server_message_set_status(msg, 500, nullptr);
    soup_server_message_set_response(msg, "text/plain; charset=utf-8", SOUP_MEMORY_STATIC, body, sizeof body - 1);
  }

  static bool origin_ok(SoupServerMessage *msg) {
    SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
    const char *origin = soup_message_headers_get_one(h, "Origin");
    if (!origin) return true;
    const char *host = soup_message_headers_get_one(h, "Host");
    if (!host) return false;
    return std::string(origin) == std::string("http://") + host;
  }

  static std::string body_of(SoupServerMessage *msg) {
    SoupMessageBody *body = soup_server_message_get_request_body(msg);
    if (!body) return {};
    GBytes *b = soup_message_body_flatten(body);
    gsize len = 0;
    const char *d = static_cast<const char *>(g_bytes_get_data(b, &len));
    std::string s(d ? d : "", len);
    g_bytes_unref(b);
    return s;
  }

  static std::string qget(GHashTable *query, const char *key, const char *def = nullptr, bool *present = nullptr) {
    const char *v = query ? static_cast<const char *>(g_hash_table_lookup(query, key)) : nullptr;
    if (present) *present = v != nullptr;
    return v ? v : (def ? def : "");
  }

  std::vector<std::string> list_input_files() const {
    std::vector<std::string> out;
    GDir *d = g_dir_open(input_dir.c_str(), 0, nullptr);
    if (!d) return out;
    const char *n;
    while ((n = g_dir_read_name(d))) {
      std::string p = input_dir + "/" + n;
      if (g_file_test(p.c_str(), G_FILE_TEST_IS_REGULAR)) out.push_back(n);
    }
    g_dir_close(d);
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string dir_for_type(const std::string &t) const {
    if (t == "output") return output_dir;
    if (t == "input") return input_dir;
    if (t == "temp") return temp_dir;
    return {};
  }

  // LoadImage value -> absolute path ("" if it would escape its directory).
  std::string resolve_image_path(const std::string &value) const {
    auto [name, type] = split_annotation(value);
    std::string dir = dir_for_type(type.empty() ? "input" : type);
    std::string rel;
    if (!normalize_rel(name, rel) || rel.empty()) return {};
    return dir + "/" + rel;
  }

  // ---------------------------------------------------------------------------- routes
  static void on_ws_path(SoupServer *, SoupServerMessage *msg, const char *, GHashTable *, gpointer user) {
    auto *self = static_cast<Impl *>(user);
    if (!origin_ok(msg)) {
      self->log("websocket handshake refused: Origin mismatch");
      reply_empty(msg, 403);
    }
    // Otherwise leave the status unset: libsoup performs the websocket handshake.
  }

  static void on_request(SoupServer *, SoupServerMessage *msg, const char *path_c, GHashTable *query, gpointer user) {
    auto *self = static_cast<Impl *>(user);
    self->handle(msg, path_c ? path_c : "/", query);
  }

  void handle(SoupServerMessage *msg, std::string path, GHashTable *query) {
    const std::string method = soup_server_message_get_method(msg);
    ++http_count;
    Faults f = get_faults();
    if (!origin_ok(msg)) {
      log("%s %s -> 403 (Origin)", method.c_str(), path.c_str());
      reply_empty(msg, 403);
      return;
    }
    if (f.http_500_every > 0 && http_count % static_cast<uint64_t>(f.http_500_every) == 0) {
      log("%s %s -> 500 (fault)", method.c_str(), path.c_str());
      reply_500(msg);
      return;
    }
    if (path == "/api") path = "/";
    else if (path.rfind("/api/", 0) == 0) path = path.substr(4);
    route(msg, method, path, query, f);
    log("%s %s -> %u", method.c_str(), path.c_str(), soup_server_message_get_status(msg));
  }

  void route(SoupServerMessage *msg, const std::string &method, const std::string &path, GHashTable *query, const Faults &f) {
    const bool get = method == "GET" || method == "HEAD";
    const bool post = method == "POST";
    if (get && path == "/system_stats") return system_stats(msg);
    if (get && path == "/features") return reply_json(msg, 200, features_json());
    if (get && (path == "/object_info" || path.rfind("/object_info/", 0) == 0)) return object_info(msg, path);
    if (post && path == "/upload/image") return upload(msg);
    if (post && path == "/prompt") {
      if (f.http_500_prompt) return reply_500(msg);
      return post_prompt(msg);
    }
    if (get && path == "/prompt") {
      JW w;
      w.ob().k("exec_info").ob().k("queue_remaining").i(queue_remaining()).oe().oe();
      return reply_json(msg, 200, w.str());
    }
    if (get && path == "/queue") return get_queue(msg);
    if (post && path == "/queue") return post_queue(msg);
    if (get && path == "/history") return get_history(msg, query);
    if (get && path.rfind("/history/", 0) == 0) return get_history_id(msg, path.substr(9));
    if (post && path == "/history") return post_history(msg);
    if (get && path == "/view") return view(msg, query, f);
    if (post && path == "/interrupt") return interrupt(msg);
    if (post && path == "/free") return free_mem(msg);
    if (get && path == "/jobs") return jobs(msg, query);
    if (get && path.rfind("/jobs/", 0) == 0) return job(msg, path.substr(6));
    if (get && path == "/embeddings") return reply_json(msg, 200, "[]");
    if (get && path == "/extensions") return reply_json(msg, 200, "[]");
    reply_empty(msg, 404);
  }

  void system_stats(SoupServerMessage *msg) {
    JW w;
    const uint64_t ram = 8ull * 1024 * 1024 * 1024;
    w.ob().k("system").ob().k("os").s("linux").k("ram_total").u(ram).k("ram_free").u(ram / 2)
        .k("comfyui_version").s("0.8.0").k("required_frontend_version").s("1.35.9")
        .k("installed_templates_version").null().k("required_templates_version").s("0.7.67")
        .k("python_version").s("3.11.2 (comfy-sim)").k("pytorch_version").s("1.13.0a0")
        .k("embedded_python").b(false).k("argv").ab().s("comfy-sim").s("--port").s(std::to_string(port_now())).ae().oe();
    w.k("devices").ab().ob().k("name").s("cpu").k("type").s("cpu").k("index").null().k("vram_total").u(ram)
        .k("vram_free").u(ram / 2).k("torch_vram_total").u(ram).k("torch_vram_free").u(ram / 2).oe().ae().oe();
    reply_json(msg, 200, w.str());
  }

  uint16_t port_now() const {
    std::lock_guard<std::mutex> l(mu);
    return port;
  }

  std::string class_info_json(const NodeSpec &s) const {
    auto files = list_input_files();
    JW w;
    w.ob().k("input").ob().k("required").ob();
    for (auto &in : s.inputs) w.k(in.name).raw(input_config_json(in, files));
    w.oe();
    if (s.hidden_prompt) w.k("hidden").ob().k("prompt").s("PROMPT").k("extra_pnginfo").s("EXTRA_PNGINFO").oe();
    w.oe().k("input_order").ob().k("required").ab();
    for (auto &in : s.inputs) w.s(in.name);
    w.ae();
    if (s.hidden_prompt) w.k("hidden").ab().s("prompt").s("extra_pnginfo").ae();
    w.oe().k("output").ab();
    for (auto &o : s.outputs) w.s(o);
    w.ae().k("output_is_list").ab();
    for (size_t i = 0; i < s.outputs.size(); ++i) w.b(false);
    w.ae().k("output_name").ab();
    for (auto &o : s.output_names) w.s(o);
    w.ae().k("name").s(s.name).k("display_name").s(s.display).k("description").s(s.description)
        .k("python_module").s("nodes").k("category").s(s.category).k("output_node").b(s.output_node).oe();
    return w.str();
  }

  void object_info(SoupServerMessage *msg, const std::string &path) {
    JW w;
    w.ob();
    if (path == "/object_info" || path == "/object_info/") {
      for (auto &kv : node_specs()) w.k(kv.first).raw(class_info_json(kv.second));
    } else {
      char *cls = g_uri_unescape_string(path.c_str() + 13, nullptr);
      const NodeSpec *s = cls ? find_spec(cls) : nullptr;
      if (s) w.k(s->name).raw(class_info_json(*s));
      g_free(cls);
    }
    w.oe();
    reply_json(msg, 200, w.str());
  }

  void upload(SoupServerMessage *msg) {
    SoupMessageBody *body = soup_server_message_get_request_body(msg);
    GBytes *bytes = soup_message_body_flatten(body);
    SoupMultipart *mp = soup_multipart_new_from_message(soup_server_message_get_request_headers(msg), bytes);
    g_bytes_unref(bytes);
    if (!mp) return reply_empty(msg, 400);
    std::string filename, type = "input", subfolder, overwrite;
    GBytes *image = nullptr;
    bool have_image = false;
    for (int i = 0; i < soup_multipart_get_length(mp); ++i) {
      SoupMessageHeaders *h = nullptr;
      GBytes *b = nullptr;
      if (!soup_multipart_get_part(mp, i, &h, &b)) continue;
      char *disp = nullptr;
      GHashTable *params = nullptr;
      if (!soup_message_headers_get_content_disposition(h, &disp, &params)) continue;
      const char *name = params ? static_cast<const char *>(g_hash_table_lookup(params, "name")) : nullptr;
      const char *fname = params ? static_cast<const char *>(g_hash_table_lookup(params, "filename")) : nullptr;
      gsize len = 0;
      const char *d = static_cast<const char *>(g_bytes_get_data(b, &len));
      std::string value(d ? d : "", len);
      if (g_strcmp0(name, "image") == 0) {
        if (fname) {
          have_image = true;
          filename = fname;
          image = b;
        }
      } else if (g_strcmp0(name, "overwrite") == 0) {
        overwrite = value;
      } else if (g_strcmp0(name, "type") == 0) {
        type = value;
      } else if (g_strcmp0(name, "subfolder") == 0) {
        subfolder = value;
      }
      g_free(disp);
      if (params) g_hash_table_destroy(params);
    }
    if (!have_image || filename.empty()) {
      soup_multipart_free(mp);
      return reply_empty(msg, 400);
    }
    if (type != "temp" && type != "output") type = "input";
    std::string dir = dir_for_type(type);
    std::string sub_norm;
    // ComfyUI keeps only the basename-safe path; refuse anything that escapes the directory.
    if (!normalize_rel(subfolder, sub_norm) || filename.find('/') != std::string::npos || filename == ".." ) {
      soup_multipart_free(mp);
      return reply_empty(msg, 400);
    }
    std::string folder = sub_norm.empty() ? dir : dir + "/" + sub_norm;
    g_mkdir_with_parents(folder.c_str(), 0755);
    gsize len = 0;
    const char *data = static_cast<const char *>(g_bytes_get_data(image, &len));
    std::string content(data ? data : "", len);
    soup_multipart_free(mp);

    const bool ow = overwrite == "true" || overwrite == "1";
    std::string name = filename;
    bool duplicate = false;
    if (!ow) {
      std::string stem = filename, ext;
      size_t dot = filename.rfind('.');
      if (dot != std::string::npos && dot > 0) {
        stem = filename.substr(0, dot);
        ext = filename.substr(dot);
      }
      for (int i = 1; g_file_test((folder + "/" + name).c_str(), G_FILE_TEST_EXISTS); ++i) {
        std::string existing;
        if (read_file(folder + "/" + name, existing) && existing == content) {
          duplicate = true;
          break;
        }
        name = stem + " (" + std::to_string(i) + ")" + ext;
      }
    }
    if (!duplicate && !write_file(folder + "/" + name, content.data(), content.size())) {
      return reply_500(msg);
    }
    {
      std::lock_guard<std::mutex> l(mu);
      uploads.push_back(UploadRecord{name, subfolder, type, content.size(), ow});
    }
    JW w;
    w.ob().k("name").s(name).k("subfolder").s(subfolder).k("type").s(type).oe();
    reply_json(msg, 200, w.str());
  }

  // ---------------------------------------------------------------------------- validation
  struct Validator {
    JsonObject *prompt;
    Impl *impl;
    std::map<std::string, ValResult> validated;
    std::vector<std::string> validated_order;
    std::set<std::string> visiting;

    void set(const std::string &id, ValResult r) {
      if (!validated.count(id)) validated_order.push_back(id);
      validated[id] = std::move(r);
    }

    ValResult validate_inputs(const std::string &id) {
      auto it = validated.find(id);
      if (it != validated.end()) return it->second;
      if (visiting.count(id)) throw PyExc{"RecursionError", "maximum recursion depth exceeded"};
      visiting.insert(id);
      struct Guard {
        std::set<std::string> &s;
        std::string id;
        ~Guard() { s.erase(id); }
      } guard{visiting, id};

      JsonObject *node = json_node_get_object(json_object_get_member(prompt, id.c_str()));
      const NodeSpec *spec = find_spec(json_object_get_string_member(node, "class_type"));
      JsonNode *inputs_node = json_object_get_member(node, "inputs");
      if (!inputs_node || !JSON_NODE_HOLDS_OBJECT(inputs_node)) throw PyExc{"KeyError", "'inputs'"};
      JsonObject *inputs = json_node_get_object(inputs_node);
      auto files = std::vector<std::string>();
      ValResult res;
      for (const InSpec &in : spec->inputs) {
        const char *x = in.name.c_str();
        std::string cfg = input_config_json(in, in.dynamic_files ? impl->list_input_files() : files);
        if (!json_object_has_member(inputs, x)) {
          if (in.required) {
            JW e;
            e.ob().k("input_name").s(in.name).oe();
            res.errors.push_back(err_obj("required_input_missing", "Required input is missing", in.name, e.str()));
          }
          continue;
        }
        JsonNode *val = json_object_get_member(inputs, x);
        if (JSON_NODE_HOLDS_ARRAY(val)) {
          JsonArray *arr = json_node_get_array(val);
          if (json_array_get_length(arr) != 2) {
            JW e;
            e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(node_to_json(val)).oe();
            res.errors.push_back(err_obj("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", in.name, e.str()));
            continue;
          }
          JsonNode *oid = json_array_get_element(arr, 0);
          JsonNode *oidx = json_array_get_element(arr, 1);
          if (!is_string(oid)) throw PyExc{"KeyError", py_repr(oid)};
          std::string o_id = json_node_get_string(oid);
          JsonNode *onode = json_object_get_member(prompt, o_id.c_str());
          if (!onode) throw PyExc{"KeyError", "'" + o_id + "'"};
          const NodeSpec *ospec = find_spec(json_object_get_string_member(json_node_get_object(onode), "class_type"));
          if (!is_int(oidx)) throw PyExc{"TypeError", "tuple indices must be integers or slices, not " + std::string(is_string(oidx) ? "str" : "float")};
          int64_t idx = json_node_get_int(oidx);
          const int64_t n = static_cast<int64_t>(ospec->outputs.size());
          if (idx < 0) idx += n;
          if (idx < 0 || idx >= n) throw PyExc{"IndexError", "list index out of range"};
          const std::string &received = ospec->outputs[static_cast<size_t>(idx)];
          if (received != in.type && received != "*" && in.type != "*") {
            JW e;
            e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_type").s(received)
                .k("linked_node").raw(node_to_json(val)).oe();
            res.errors.push_back(err_obj("return_type_mismatch", "Return type mismatch between linked nodes",
                                         in.name + ", received_type(" + received + ") mismatch input_type(" + in.type + ")", e.str()));
            continue;
          }
          try {
            ValResult r = validate_inputs(o_id);
            if (!r.valid) res.valid = false;
          } catch (const PyExc &ex) {
            res.valid = false;
            JW e;
            e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("exception_message").s(ex.msg)
                .k("exception_type").s(ex.type).k("traceback").ab()
                .s("  File \"<comfyui>/execution.py\", line 838, in validate_inputs\n    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n")
                .ae().k("linked_node").raw(node_to_json(val)).oe();
            ValResult bad;
            bad.valid = false;
            bad.errors.push_back(err_obj("exception_during_inner_validation", "Exception when validating inner node", ex.msg, e.str()));
            set(o_id, bad);
          }
          continue;
        }
        // Plain value.
        if (in.type == "INT" || in.type == "FLOAT") {
          bool isint = in.type == "INT";
          int64_t iv = 0;
          double fv = 0;
          std::string err;
          bool ok = isint ? py_int(val, iv, err) : py_float_conv(val, fv, err);
          if (!ok) {
            JW e;
            e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(node_to_json(val))
                .k("exception_message").s(err).oe();
            res.errors.push_back(err_obj("invalid_input_type", "Failed to convert an input value to a " + in.type + " value",
                                         in.name + ", " + py_str(val) + ", " + err, e.str()));
            continue;
          }
          std::string vs = isint ? std::to_string(iv) : py_float(fv);
          bool small = isint ? iv < in.imin : fv < in.fmin;
          bool big = isint ? (iv >= 0 && static_cast<uint64_t>(iv) > in.imax) : fv > in.fmax;
          if (small || big) {
            JW e;
            e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(vs).oe();
            if (small)
              res.errors.push_back(err_obj("value_smaller_than_min", "Value " + vs + " smaller than min of " +
                                           (isint ? std::to_string(in.imin) : py_float(in.fmin)), in.name, e.str()));
            else
              res.errors.push_back(err_obj("value_bigger_than_max", "Value " + vs + " bigger than max of " +
                                           (isint ? std::to_string(in.imax) : py_float(in.fmax)), in.name, e.str()));
          }
          continue;
        }
        if (in.type == "COMBO") {
          if (in.dynamic_files) {
            // LoadImage.VALIDATE_INPUTS
            std::string v = py_str(val);
            std::string p = impl->resolve_image_path(v);
            if (p.empty() || !g_file_test(p.c_str(), G_FILE_TEST_IS_REGULAR)) {
              JW e;
              e.ob().k("input_name").s(in.name).oe();
              res.errors.push_back(err_obj("custom_validation_failed", "Custom validation failed for node",
                                           in.name + " - Invalid image file: " + v, e.str()));
            }
            continue;
          }
          if (in.lenient) continue;
          bool found = is_string(val) && std::find(in.options.begin(), in.options.end(), json_node_get_string(val)) != in.options.end();
          if (!found) {
            JW e;
            e.ob().k("input_name").s(in.name).k("input_config").raw(cfg).k("received_value").raw(node_to_json(val)).oe();
            res.errors.push_back(err_obj("value_not_in_list", "Value not in list",
                                         in.name + ": '" + py_str(val) + "' not in " + py_list(in.options), e.str()));
          }
          continue;
        }
      }
      if (!res.errors.empty()) res.valid = false;
      set(id, res);
      return res;
    }
  };

  // POST /prompt: number assignment, validation, queueing (server.py post_prompt).
  void post_prompt(SoupServerMessage *msg) {
    std::string body = body_of(msg);
    PromptRecord rec;
    rec.body = body;
    rec.received_us = g_get_monotonic_time();
    auto record = [&]() {
      std::lock_guard<std::mutex> l(mu);
      prompts.push_back(rec);
      cv.notify_all();
    };
    JsonNodePtr root(parse_json(body.data(), body.size()));
    if (!root.n || !JSON_NODE_HOLDS_OBJECT(root.n)) {
      record();
      return reply_500(msg);
    }
    JsonObject *jd = json_node_get_object(root.n);
    Num number;
    if (json_object_has_member(jd, "number")) {
      double d = 0;
      std::string err;
      if (!py_float_conv(json_object_get_member(jd, "number"), d, err)) {
        record();
        return reply_500(msg);
      }
      number.v = d;
      number.is_float = true;
    } else {
      number.v = static_cast<double>(number_counter);
      JsonNode *fr = json_object_get_member(jd, "front");
      if (fr && JSON_NODE_HOLDS_VALUE(fr) && json_node_get_value_type(fr) == G_TYPE_BOOLEAN && json_node_get_boolean(fr))
        number.v = -number.v;
      ++number_counter;
    }
    JsonNode *client = json_object_get_member(jd, "client_id");
    std::string client_id = client && is_string(client) ? json_node_get_string(client) : (client && !JSON_NODE_HOLDS_NULL(client) ? py_str(client) : "");
    rec.client_id = client_id;
    if (!json_object_has_member(jd, "prompt")) {
      record();
      std::string e = err_obj("no_prompt", "No prompt provided", "No prompt provided");
      return reply_json(msg, 400, "{\"error\": " + e + ", \"node_errors\": {}}");
    }
    JsonNode *pid = json_object_get_member(jd, "prompt_id");
    std::string prompt_id;
    if (pid && !JSON_NODE_HOLDS_NULL(pid)) {
      prompt_id = py_str(pid);
    } else {
      char *u = g_uuid_string_random();
      prompt_id = u;
      g_free(u);
    }
    rec.prompt_id = prompt_id;
    record();

    JsonNode *prompt_node = json_object_get_member(jd, "prompt");
    std::vector<std::string> partial;
    bool has_partial = false;
    JsonNode *pet = json_object_get_member(jd, "partial_execution_targets");
    if (pet && JSON_NODE_HOLDS_ARRAY(pet)) {
      has_partial = true;
      JsonArray *a = json_node_get_array(pet);
      for (guint i = 0; i < json_array_get_length(a); ++i) partial.push_back(py_str(json_array_get_element(a, i)));
    }

    std::vector<std::string> good;
    std::string error_json, node_errors_json;
    if (!validate_prompt(prompt_node, has_partial ? &partial : nullptr, good, error_json, node_errors_json)) {
      return reply_json(msg, 400, "{\"error\": " + error_json + ", \"node_errors\": " + node_errors_json + "}");
    }

    // extra_data with client_id and create_time merged in.
    JsonObject *extra = json_object_new();
    JsonNode *ed = json_object_get_member(jd, "extra_data");
    if (ed && JSON_NODE_HOLDS_OBJECT(ed)) {
      JsonObject *src = json_node_get_object(ed);
      GList *members = json_object_get_members(src);
      for (GList *l = members; l; l = l->next) {
        const char *k = static_cast<const char *>(l->data);
        json_object_set_member(extra, k, json_node_copy(json_object_get_member(src, k)));
      }
      g_list_free(members);
    }
    if (client) json_object_set_member(extra, "client_id", json_node_copy(client));
    const int64_t create_time = now_ms();
    json_object_set_int_member(extra, "create_time", create_time);
    JsonNode *extra_node = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(extra_node, extra);

    auto job = std::make_unique<Job>();
    job->number = number;
    job->seq = ++seq_counter;
    job->id = prompt_id;
    job->client_id = client_id;
    job->prompt = JsonNodePtr(json_node_copy(prompt_node));
    job->prompt_raw = node_to_json(prompt_node);
    job->extra_raw = node_to_json(extra_node);
    json_node_unref(extra_node);
    job->outputs = good;
    job->create_time = create_time;
    queue.push_back(std::move(job));

    reply_json(msg, 200, "{\"prompt_id\": " + json_escape(prompt_id) + ", \"number\": " + number.json() +
                             ", \"node_errors\": " + node_errors_json + "}");
    send_status();
    schedule_start_next();
  }

  bool validate_prompt(JsonNode *prompt_node, const std::vector<std::string> *partial, std::vector<std::string> &good,
                       std::string &error_json, std::string &node_errors_json) {
    node_errors_json = "{}";
    std::vector<std::string> ids;
    JsonObject *prompt = nullptr;
    if (JSON_NODE_HOLDS_OBJECT(prompt_node)) {
      prompt = json_node_get_object(prompt_node);
      GList *members = json_object_get_members(prompt);
      for (GList *l = members; l; l = l->next) ids.push_back(static_cast<const char *>(l->data));
      g_list_free(members);
    }
    std::vector<std::string> outputs;
    for (auto &x : ids) {
      JsonNode *n = json_object_get_member(prompt, x.c_str());
      JsonNode *ct = n && JSON_NODE_HOLDS_OBJECT(n) ? json_object_get_member(json_node_get_object(n), "class_type") : nullptr;
      if (!ct) {
        error_json = err_obj("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                             "Node ID '#" + x + "'");
        return false;
      }
      std::string cls = py_str(ct);
      const NodeSpec *spec = is_string(ct) ? find_spec(cls) : nullptr;
      if (!spec) {
        error_json = err_obj("invalid_prompt", "Cannot execute because node " + cls + " does not exist.", "Node ID '#" + x + "'");
        return false;
      }
      if (spec->output_node && (!partial || std::find(partial->begin(), partial->end(), x) != partial->end()))
        outputs.push_back(x);
    }
    if (outputs.empty()) {
      error_json = err_obj("prompt_no_outputs", "Prompt has no outputs", "");
      return false;
    }
    Validator v{prompt, this, {}, {}, {}};
    struct NodeErr {
      std::vector<std::string> errors;
      std::vector<std::string> deps;
      std::string cls;
    };
    std::map<std::string, NodeErr> node_errors;
    std::vector<std::string> ne_order;
    std::vector<std::string> output_own_errors;
    auto cls_of = [&](const std::string &id) {
      return std::string(json_object_get_string_member(json_node_get_object(json_object_get_member(prompt, id.c_str())), "class_type"));
    };
    for (auto &o : outputs) {
      bool valid = false;
      std::vector<std::string> reasons;
      try {
        ValResult m = v.validate_inputs(o);
        valid = m.valid;
        reasons = m.errors;
      } catch (const PyExc &ex) {
        valid = false;
        JW e;
        e.ob().k("exception_type").s(ex.type).k("traceback").ab()
            .s("  File \"<comfyui>/execution.py\", line 907, in validate_prompt\n    m = await validate_inputs(prompt_id, prompt, o, validated)\n")
            .ae().oe();
        reasons = {err_obj("exception_during_validation", "Exception when validating node", ex.msg, e.str())};
        ValResult bad;
        bad.valid = false;
        bad.errors = reasons;
        v.set(o, bad);
      }
      if (valid) {
        good.push_back(o);
        continue;
      }
      if (!reasons.empty()) {
        if (!node_errors.count(o)) ne_order.push_back(o);
        node_errors[o] = NodeErr{reasons, {}, cls_of(o)};
        output_own_errors.insert(output_own_errors.end(), reasons.begin(), reasons.end());
      }
      for (auto &nid : v.validated_order) {
        const ValResult &r = v.validated[nid];
        if (r.valid || r.errors.empty()) continue;
        if (!node_errors.count(nid)) {
          ne_order.push_back(nid);
          node_errors[nid] = NodeErr{r.errors, {}, cls_of(nid)};
        }
        node_errors[nid].deps.push_back(o);
      }
    }
    JW ne;
    ne.ob();
    for (auto &id : ne_order) {
      auto &e = node_errors[id];
      ne.k(id).ob().k("errors").ab();
      for (auto &x : e.errors) ne.raw(x);
      ne.ae().k("dependent_outputs").ab();
      for (auto &d : e.deps) ne.s(d);
      ne.ae().k("class_type").s(e.cls).oe();
    }
    ne.oe();
    node_errors_json = ne.str();
    if (good.empty()) {
      std::string details;
      for (auto &eraw : output_own_errors) {
        JsonNodePtr en(parse_json(eraw.data(), eraw.size()));
        if (!en.n) continue;
        JsonObject *eo = json_node_get_object(en.n);
        if (!details.empty()) details += "\n";
        details += std::string(json_object_get_string_member(eo, "message")) + ": " + json_object_get_string_member(eo, "details");
      }
      error_json = err_obj("prompt_outputs_failed_validation", "Prompt outputs failed validation", details);
      return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------------- queue / history
  std::string queue_item(const Job &j) const {
    JW w;
    w.ab().raw(j.number.json()).s(j.id).raw(j.prompt_raw).raw(j.extra_raw).ab();
    for (auto &o : j.outputs) w.s(o);
    w.ae().ae();
    return w.str();
  }

  void get_queue(SoupServerMessage *msg) {
    JW w;
    w.ob().k("queue_running").ab();
    if (running) w.raw(queue_item(*running));
    w.ae().k("queue_pending").ab();
    for (auto &j : queue) w.raw(queue_item(*j));
    w.ae().oe();
    reply_json(msg, 200, w.str());
  }

  // Body of POST /queue and POST /history: {"clear": true} and/or {"delete": [ids]}; anything else
  // (no body, not JSON) changes nothing, as on the real server.
  struct ClearDelete {
    bool valid = false, clear = false;
    std::vector<std::string> ids;
  };
  ClearDelete parse_clear_delete(SoupServerMessage *msg) {
    ClearDelete r;
    std::string body = body_of(msg);
    JsonNodePtr root(parse_json(body.data(), body.size()));
    if (!root.n || !JSON_NODE_HOLDS_OBJECT(root.n)) return r;
    r.valid = true;
    JsonObject *o = json_node_get_object(root.n);
    JsonNode *c = json_object_get_member(o, "clear");
    r.clear = c && JSON_NODE_HOLDS_VALUE(c) && json_node_get_value_type(c) == G_TYPE_BOOLEAN && json_node_get_boolean(c);
    JsonNode *d = json_object_get_member(o, "delete");
    if (d && JSON_NODE_HOLDS_ARRAY(d)) {
      JsonArray *a = json_node_get_array(d);
      for (guint i = 0; i < json_array_get_length(a); ++i) r.ids.push_back(py_str(json_array_get_element(a, i)));
    }
    return r;
  }

  void post_queue(SoupServerMessage *msg) {
    ClearDelete cd = parse_clear_delete(msg);
    if (cd.valid) {
      if (cd.clear) queue.clear();
      for (const auto &id : cd.ids)
        queue.erase(std::remove_if(queue.begin(), queue.end(), [&](const std::unique_ptr<Job> &j) { return j->id == id; }),
                    queue.end());
      send_status();
    }
    reply_empty(msg, 200);
  }

  void get_history(SoupServerMessage *msg, GHashTable *query) {
    bool has_max = false;
    std::string mx = qget(query, "max_items", nullptr, &has_max);
    std::string off = qget(query, "offset", "0");
    size_t n = history.size();
    size_t max_items = n;
    if (has_max) {
      gint64 v = g_ascii_strtoll(mx.c_str(), nullptr, 10);
      max_items = v < 0 ? n : static_cast<size_t>(v);
    }
    gint64 offset = g_ascii_strtoll(off.c_str(), nullptr, 10);
    // The last max_items entries (before offset from the end).
    size_t end = n;
    if (offset > 0) end = static_cast<size_t>(offset) >= n ? 0 : n - static_cast<size_t>(offset);
    size_t begin = end > max_items ? end - max_items : 0;
    JW w;
    w.ob();
    for (size_t i = begin; i < end; ++i) w.k(history[i].id).raw(history[i].json);
    w.oe();
    reply_json(msg, 200, w.str());
  }

  void get_history_id(SoupServerMessage *msg, const std::string &id_esc) {
    char *id = g_uri_unescape_string(id_esc.c_str(), nullptr);
    std::string sid = id ? id : "";
    g_free(id);
    for (auto &h : history)
      if (h.id == sid) return reply_json(msg, 200, "{" + json_escape(h.id) + ": " + h.json + "}");
    reply_json(msg, 200, "{}");
  }

  void post_history(SoupServerMessage *msg) {
    ClearDelete cd = parse_clear_delete(msg);
    if (cd.clear) history.clear();
    for (const auto &id : cd.ids)
      history.erase(std::remove_if(history.begin(), history.end(), [&](const HistEntry &h) { return h.id == id; }),
                    history.end());
    reply_empty(msg, 200);
  }

  void view(SoupServerMessage *msg, GHashTable *query, const Faults &f) {
    bool has_fn = false;
    std::string fn = qget(query, "filename", nullptr, &has_fn);
    if (!has_fn) return reply_empty(msg, 404);
    auto [name, ann] = split_annotation(fn);
    if (name.empty()) return reply_empty(msg, 400);
    if (name[0] == '/' || name.find("..") != std::string::npos) return reply_empty(msg, 400);
    std::string dir = ann.empty() ? dir_for_type(qget(query, "type", "output")) : dir_for_type(ann);
    if (dir.empty()) return reply_empty(msg, 400);
    bool has_sub = false;
    std::string sub = qget(query, "subfolder", nullptr, &has_sub);
    if (has_sub && !sub.empty()) {
      std::string norm;
      if (sub[0] == '/' || !normalize_rel(sub, norm)) return reply_empty(msg, 403);
      if (!norm.empty()) dir += "/" + norm;
    }
    std::string base = name.substr(name.rfind('/') == std::string::npos ? 0 : name.rfind('/') + 1);
    std::string path = dir + "/" + base;
    std::string content;
    if (!g_file_test(path.c_str(), G_FILE_TEST_IS_REGULAR) || !read_file(path, content)) return reply_empty(msg, 404);
    auto serve = [msg, content, base]() {
      soup_server_message_set_status(msg, 200, nullptr);
      SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
      soup_message_headers_replace(h, "Content-Disposition", ("filename=\"" + base + "\"").c_str());
      soup_message_headers_replace(h, "Accept-Ranges", "bytes");
      char *etag = g_compute_checksum_for_data(G_CHECKSUM_MD5, reinterpret_cast<const guchar *>(content.data()), content.size());
      soup_message_headers_replace(h, "Etag", (std::string("\"") + etag + "\"").c_str());
      g_free(etag);
      const bool png = base.size() > 4 && g_ascii_strcasecmp(base.c_str() + base.size() - 4, ".png") == 0;
      soup_server_message_set_response(msg, png ? "image/png" : "application/octet-stream", SOUP_MEMORY_COPY,
                                       content.data(), content.size());
    };
    if (f.view_delay_ms > 0) {
      // The client may give up meanwhile: never touch a message whose connection is gone.
      auto gone = std::make_shared<bool>(false);
      auto *flag = new std::shared_ptr<bool>(gone);
      g_object_ref(msg);
      gulong h = g_signal_connect_data(
          msg, "disconnected", G_CALLBACK(+[](SoupServerMessage *, gpointer p) { **static_cast<std::shared_ptr<bool> *>(p) = true; }),
          flag, [](gpointer p, GClosure *) { delete static_cast<std::shared_ptr<bool> *>(p); }, static_cast<GConnectFlags>(0));
      soup_server_message_pause(msg);
      delayed_views[msg] = h;
      schedule(f.view_delay_ms, [this, msg, serve, gone]() {
        auto it = delayed_views.find(msg);
        if (it == delayed_views.end()) return;  // already released by the shutdown
        g_signal_handler_disconnect(msg, it->second);
        delayed_views.erase(it);
        if (!*gone) {
          serve();
          soup_server_message_unpause(msg);
        }
        g_object_unref(msg);
      });
      return;
    }
    serve();
  }

  // Drops the references held by /view answers still waiting for their delay (their timer
  // never fires once the loop has stopped); the server's disconnect then frees the messages.
  void release_delayed_views() {
    for (auto &kv : delayed_views) {
      g_signal_handler_disconnect(kv.first, kv.second);
      g_object_unref(kv.first);
    }
    delayed_views.clear();
  }

  void interrupt(SoupServerMessage *msg) {
    std::string body = body_of(msg);
    JsonNodePtr root(parse_json(body.data(), body.size()));
    std::string target;
    if (root.n && JSON_NODE_HOLDS_OBJECT(root.n)) {
      JsonNode *p = json_object_get_member(json_node_get_object(root.n), "prompt_id");
      if (p && !JSON_NODE_HOLDS_NULL(p)) target = py_str(p);
    }
    if (running && (target.empty() || target == running->id)) running->interrupt = true;
    reply_empty(msg, 200);
  }

  void free_mem(SoupServerMessage *msg) {
    std::string body = body_of(msg);
    JsonNodePtr root(parse_json(body.data(), body.size()));
    if (root.n && JSON_NODE_HOLDS_OBJECT(root.n)) {
      JsonNode *fm = json_object_get_member(json_node_get_object(root.n), "free_memory");
      if (fm && JSON_NODE_HOLDS_VALUE(fm) && json_node_get_value_type(fm) == G_TYPE_BOOLEAN && json_node_get_boolean(fm))
        cache.clear();
    }
    reply_empty(msg, 200);
  }

  struct JobView {
    std::string id, status;
    Num priority;
    int64_t create_time = 0;
    size_t outputs_count = 0;
    int64_t start = 0, end = 0;
  };

  std::vector<JobView> all_jobs() const {
    std::vector<JobView> v;
    for (auto &j : queue) v.push_back({j->id, "pending", j->number, j->create_time, 0, 0, 0});
    if (running) v.push_back({running->id, "in_progress", running->number, running->create_time, 0, running->start_ms, 0});
    for (auto &h : history)
      v.push_back({h.id, h.success ? "completed" : "failed", h.number, h.create_time, h.outputs_count, h.start_ms, h.end_ms});
    return v;
  }

  static std::string job_json(const JobView &j) {
    JW w;
    w.ob().k("id").s(j.id).k("status").s(j.status).k("priority").raw(j.priority.json()).k("create_time").i(j.create_time)
        .k("outputs_count").u(j.outputs_count);
    if (j.start) w.k("execution_start_time").i(j.start);
    if (j.end) w.k("execution_end_time").i(j.end);
    w.oe();
    return w.str();
  }

  void jobs(SoupServerMessage *msg, GHashTable *query) {
    auto v = all_jobs();
    std::string st = qget(query, "status");
    if (!st.empty()) {
      std::vector<std::string> wanted;
      char **parts = g_strsplit(st.c_str(), ",", -1);
      for (char **p = parts; *p; ++p) wanted.push_back(g_strstrip(*p));
      g_strfreev(parts);
      v.erase(std::remove_if(v.begin(), v.end(), [&](const JobView &j) {
                return std::find(wanted.begin(), wanted.end(), j.status) == wanted.end();
              }), v.end());
    }
    const bool asc = qget(query, "sort_order", "desc") == "asc";
    const bool by_duration = qget(query, "sort_by") == "execution_duration";
    std::stable_sort(v.begin(), v.end(), [&](const JobView &a, const JobView &b) {
      int64_t ka = by_duration ? a.end - a.start : a.create_time, kb = by_duration ? b.end - b.start : b.create_time;
      return asc ? ka < kb : ka > kb;
    });
    int64_t offset = std::max<int64_t>(0, g_ascii_strtoll(qget(query, "offset", "0").c_str(), nullptr, 10));
    bool has_limit = false;
    std::string lim = qget(query, "limit", nullptr, &has_limit);
    int64_t limit = has_limit ? std::max<int64_t>(0, g_ascii_strtoll(lim.c_str(), nullptr, 10)) : static_cast<int64_t>(v.size());
    JW w;
    w.ob().k("jobs").ab();
    for (int64_t i = offset; i < static_cast<int64_t>(v.size()) && i < offset + limit; ++i) w.raw(job_json(v[static_cast<size_t>(i)]));
    w.ae().k("pagination").ob().k("offset").i(offset);
    if (has_limit) w.k("limit").i(limit);
    else w.k("limit").null();
    w.k("total").u(v.size()).k("has_more").b(offset + limit < static_cast<int64_t>(v.size())).oe().oe();
    reply_json(msg, 200, w.str());
  }

  void job(SoupServerMessage *msg, const std::string &id_esc) {
    char *id = g_uri_unescape_string(id_esc.c_str(), nullptr);
    std::string sid = id ? id : "";
    g_free(id);
    for (auto &j : all_jobs())
      if (j.id == sid) return reply_json(msg, 200, job_json(j));
    reply_json(msg, 404, "{\"error\": \"Job not found\"}");
  }

  // ---------------------------------------------------------------------------- execution
  void schedule_start_next() {
    if (start_scheduled) return;
    start_scheduled = true;
    schedule(0, [this]() {
      start_scheduled = false;
      start_next();
    });
  }

  uint32_t job_latency() {
    uint32_t lat, jit;
    {
      std::lock_guard<std::mutex> l(mu);
      lat = latency_ms;
      jit = jitter_ms;
    }
    int64_t v = lat;
    if (jit > 0) v += g_rand_int_range(rand, -static_cast<gint32>(jit), static_cast<gint32>(jit) + 1);
    return static_cast<uint32_t>(std::max<int64_t>(0, v));
  }

  JsonObject *node_obj(const Job &j, const std::string &id) const {
    JsonNode *n = json_object_get_member(json_node_get_object(j.prompt.n), id.c_str());
    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : nullptr;
  }
  std::string class_of(const Job &j, const std::string &id) const {
    JsonObject *o = node_obj(j, id);
    JsonNode *c = o ? json_object_get_member(o, "class_type") : nullptr;
    return c ? py_str(c) : "";
  }
  JsonObject *inputs_of(const Job &j, const std::string &id) const {
    JsonObject *o = node_obj(j, id);
    JsonNode *i = o ? json_object_get_member(o, "inputs") : nullptr;
    return i && JSON_NODE_HOLDS_OBJECT(i) ? json_node_get_object(i) : nullptr;
  }

  // Cache signature: class, inputs (links replaced by the upstream signature), LoadImage file hash.
  std::string signature(Job &j, const std::string &id, int depth = 0) {
    auto it = j.sigs.find(id);
    if (it != j.sigs.end()) return it->second;
    if (depth > 200) return "!cycle";
    std::string cls = class_of(j, id);
    std::string sig = cls + "{";
    if (cls == "SaveImageWebsocket") sig += "t=" + std::to_string(g_get_monotonic_time()) + ";" + std::to_string(++seq_counter);
    JsonObject *in = inputs_of(j, id);
    if (in) {
      GList *members = json_object_get_members(in);
      std::vector<std::string> names;
      for (GList *l = members; l; l = l->next) names.push_back(static_cast<const char *>(l->data));
      g_list_free(members);
      std::sort(names.begin(), names.end());
      for (auto &n : names) {
        JsonNode *v = json_object_get_member(in, n.c_str());
        sig += n + "=";
        if (JSON_NODE_HOLDS_ARRAY(v) && json_array_get_length(json_node_get_array(v)) == 2 &&
            is_string(json_array_get_element(json_node_get_array(v), 0))) {
          JsonArray *a = json_node_get_array(v);
          std::string src = json_node_get_string(json_array_get_element(a, 0));
          sig += "@(" + (node_obj(j, src) ? signature(j, src, depth + 1) : std::string("?")) + ")." +
                 py_str(json_array_get_element(a, 1));
        } else {
          sig += node_to_json(v);
        }
        sig += ";";
      }
      if (cls == "LoadImage") {
        JsonNode *v = json_object_get_member(in, "image");
        std::string content;
        std::string p = v ? resolve_image_path(py_str(v)) : "";
        if (!p.empty() && read_file(p, content)) {
          char *h = g_compute_checksum_for_data(G_CHECKSUM_SHA256, reinterpret_cast<const guchar *>(content.data()), content.size());
          sig += std::string("#") + h;
          g_free(h);
        } else {
          sig += "#missing";
        }
      }
    }
    sig += "}";
    // Keep keys short.
    char *h = g_compute_checksum_for_string(G_CHECKSUM_SHA256, sig.c_str(), static_cast<gssize>(sig.size()));
    std::string out = h;
    g_free(h);
    j.sigs[id] = out;
    return out;
  }

  void visit(Job &j, const std::string &id, std::set<std::string> &seen) {
    if (seen.count(id)) return;
    seen.insert(id);
    JsonObject *in = inputs_of(j, id);
    const NodeSpec *spec = find_spec(class_of(j, id));
    if (in && spec) {
      for (auto &s : spec->inputs) {
        JsonNode *v = json_object_get_member(in, s.name.c_str());
        if (v && JSON_NODE_HOLDS_ARRAY(v) && json_array_get_length(json_node_get_array(v)) == 2) {
          JsonNode *src = json_array_get_element(json_node_get_array(v), 0);
          if (is_string(src) && node_obj(j, json_node_get_string(src))) visit(j, json_node_get_string(src), seen);
        }
      }
    }
    j.order.push_back(id);
  }

  std::vector<std::string> prompt_ids(const Job &j) const {
    std::vector<std::string> ids;
    GList *members = json_object_get_members(json_node_get_object(j.prompt.n));
    for (GList *l = members; l; l = l->next) ids.push_back(static_cast<const char *>(l->data));
    g_list_free(members);
    return ids;
  }

  void add_message(Job &j, const std::string &name, const std::string &data, bool broadcast_if_none) {
    j.messages.push_back("[" + json_escape(name) + ", " + data + "]");
    send_to(j.client_id, typed(name, data), broadcast_if_none);
  }

  std::string progress_state_json(const Job &j) const {
    JW w;
    w.ob().k("prompt_id").s(j.id).k("nodes").ob();
    for (auto &s : j.states) {
      w.k(s.id).ob();
      if (s.ints) w.k("value").i(static_cast<int64_t>(s.value)).k("max").i(static_cast<int64_t>(s.max));
      else w.k("value").d(s.value).k("max").d(s.max);
      w.k("state").s(s.finished ? "finished" : "running").k("node_id").s(s.id).k("prompt_id").s(j.id)
          .k("display_node_id").s(s.id).k("parent_node_id").null().k("real_node_id").s(s.id).oe();
    }
    w.oe().oe();
    return w.str();
  }
  void send_progress_state(const Job &j) { send_to(j.client_id, typed("progress_state", progress_state_json(j)), true); }
  NodeState &state_of(Job &j, const std::string &id) {
    for (auto &s : j.states)
      if (s.id == id) return s;
    j.states.push_back(NodeState{id});
    return j.states.back();
  }

  void start_next() {
    if (running || queue.empty()) return;
    auto it = std::min_element(queue.begin(), queue.end(), [](const std::unique_ptr<Job> &a, const std::unique_ptr<Job> &b) {
      return a->number.v != b->number.v ? a->number.v < b->number.v : a->seq < b->seq;
    });
    running = std::move(*it);
    queue.erase(it);
    Job &j = *running;
    j.serial = ++serial_counter;
    j.job_index = ++jobs_started;
    j.start_ms = now_ms();
    send_status();

    JW d;
    d.ob().k("prompt_id").s(j.id).k("timestamp").i(now_ms()).oe();
    add_message(j, "execution_start", d.str(), false);

    std::set<std::string> seen;
    for (auto &o : j.outputs) visit(j, o, seen);
    for (auto &id : j.order) {
      const std::string sig = signature(j, id);
      if (cache.count(sig) && class_of(j, id) != "SaveImageWebsocket") j.cached.insert(id);
    }
    // execution_cached lists every prompt node whose output is cached.
    JW c;
    c.ob().k("nodes").ab();
    for (auto &id : prompt_ids(j)) {
      if (!seen.count(id)) continue;
      if (j.cached.count(id)) c.s(id);
    }
    c.ae().k("prompt_id").s(j.id).k("timestamp").i(now_ms()).oe();
    add_message(j, "execution_cached", c.str(), false);

    // Replay cached outputs.
    for (auto &id : j.order) {
      if (!j.cached.count(id)) continue;
      CacheEntry &e = cache[j.sigs[id]];
      j.results[id] = e.outs;
      if (!e.ui.empty()) {
        j.outputs_ui.emplace_back(id, e.ui);
        JW x;
        x.ob().k("node").s(id).k("display_node").s(id).k("output").raw(e.ui).k("prompt_id").s(j.id).oe();
        send_to(j.client_id, typed("executed", x.str()), false);
        NodeState &s = state_of(j, id);
        s.ints = true;
        s.value = 1;
        s.max = 1;
        s.finished = true;
      }
    }
    size_t to_run = 0;
    for (auto &id : j.order)
      if (!j.cached.count(id)) ++to_run;
    const uint32_t lat = job_latency();
    node_delay_ = to_run ? lat / static_cast<uint32_t>(to_run) : 0;
    log("job %d %s: %zu nodes, %zu cached, latency %u ms", j.job_index, j.id.c_str(), j.order.size(), j.cached.size(), lat);
    Faults f = get_faults();
    if (f.ws_drop_on_job == j.job_index && to_run == 0) {
      j.dropped = true;
      drop_all_ws();
    }
    const uint64_t serial = j.serial;
    schedule(0, [this, serial]() { step(serial); });
  }
  uint32_t node_delay_ = 0;

  void step(uint64_t serial) {
    if (!running || running->serial != serial) return;
    Job &j = *running;
    while (j.pos < j.order.size() && j.cached.count(j.order[j.pos])) ++j.pos;
    if (j.pos >= j.order.size()) return finish_success();
    const std::string id = j.order[j.pos];
    const std::string cls = class_of(j, id);
    NodeState &s = state_of(j, id);
    s.value = 0;
    s.max = 1;
    send_progress_state(j);
    j.current_node = id;
    if (!j.client_id.empty()) {
      JW e;
      e.ob().k("node").s(id).k("display_node").s(id).k("prompt_id").s(j.id).oe();
      send_to(j.client_id, typed("executing", e.str()), false);
    }
    if (j.interrupt) return finish_interrupted(id, cls);
    Faults f = get_faults();
    if (f.execution_error_always || (f.execution_error_on_job > 0 && f.execution_error_on_job == j.job_index))
      return finish_error(id, cls, "RuntimeError", "comfy-sim: injected execution error (fault)\n");
    std::string etype, emsg;
    const int64_t compute_start = g_get_monotonic_time();
    if (!execute_node(j, id, cls, f, etype, emsg)) return finish_error(id, cls, etype, emsg);
    // The configured latency is the node's whole time: the work done here counts towards it.
    const uint32_t compute_ms = static_cast<uint32_t>((g_get_monotonic_time() - compute_start) / 1000);
    const uint32_t delay = node_delay_ > compute_ms ? node_delay_ - compute_ms : 0;
    j.executed.push_back(id);
    if (f.ws_drop_on_job == j.job_index && !j.dropped) {
      j.dropped = true;
      drop_all_ws();
    }
    schedule(delay, [this, serial, id]() {
      if (!running || running->serial != serial) return;
      Job &jj = *running;
      NodeState &st = state_of(jj, id);
      st.value = 1;
      st.max = 1;
      st.finished = true;
      send_progress_state(jj);
      for (auto &u : jj.outputs_ui)
        if (u.first == id) {
          JW x;
          x.ob().k("node").s(id).k("display_node").s(id).k("output").raw(u.second).k("prompt_id").s(jj.id).oe();
          send_to(jj.client_id, typed("executed", x.str()), false);
        }
      ++jj.pos;
      step(serial);
    });
  }

  std::shared_ptr<const Image> input_image(Job &j, JsonObject *in, const char *name) {
    JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
    if (!v || !JSON_NODE_HOLDS_ARRAY(v)) return nullptr;
    JsonArray *a = json_node_get_array(v);
    std::string src = json_node_get_string(json_array_get_element(a, 0));
    int64_t idx = json_node_get_int(json_array_get_element(a, 1));
    auto it = j.results.find(src);
    if (it == j.results.end()) return nullptr;
    if (idx < 0) idx += static_cast<int64_t>(it->second.size());
    if (idx < 0 || idx >= static_cast<int64_t>(it->second.size())) return nullptr;
    return it->second[static_cast<size_t>(idx)];
  }
  static int64_t in_int(JsonObject *in, const char *name, int64_t def) {
    JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
    int64_t r = def;
    std::string e;
    if (v && !JSON_NODE_HOLDS_ARRAY(v) && py_int(v, r, e)) return r;
    return def;
  }
  static uint64_t in_u64(JsonObject *in, const char *name) {
    JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
    if (!v || !JSON_NODE_HOLDS_VALUE(v)) return 0;
    if (json_node_get_value_type(v) == G_TYPE_STRING) return g_ascii_strtoull(json_node_get_string(v), nullptr, 10);
    int64_t r = 0;
    std::string e;
    py_int(v, r, e);
    return static_cast<uint64_t>(r);
  }
  static double in_float(JsonObject *in, const char *name, double def) {
    JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
    double r = def;
    std::string e;
    if (v && !JSON_NODE_HOLDS_ARRAY(v) && py_float_conv(v, r, e)) return r;
    return def;
  }
  static std::string in_str(JsonObject *in, const char *name, const std::string &def) {
    JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
    return v && !JSON_NODE_HOLDS_ARRAY(v) ? py_str(v) : def;
  }

  Image apply_wrong_size(const Image &img, const Faults &f) {
    if (f.wrong_width > 0 && f.wrong_height > 0) return resize_bilinear(img, f.wrong_width, f.wrong_height);
    return img;
  }

  bool execute_node(Job &j, const std::string &id, const std::string &cls, const Faults &f, std::string &etype, std::string &emsg) {
    JsonObject *in = inputs_of(j, id);
    std::vector<std::shared_ptr<const Image>> outs;
    auto need = [&](const char *name) -> std::shared_ptr<const Image> {
      auto img = input_image(j, in, name);
      return img;
    };
    auto fail_missing = [&]() {
      etype = "RuntimeError";
      emsg = "comfy-sim: node " + id + " (" + cls + ") has no image input\n";
      return false;
    };
    if (cls == "LoadImage") {
      std::string v = in_str(in, "image", "");
      std::string p = resolve_image_path(v);
      std::string content;
      Image img;
      std::string err;
      if (p.empty() || !read_file(p, content) ||
          !decode_png(reinterpret_cast<const uint8_t *>(content.data()), content.size(), img, &err)) {
        etype = "PIL.UnidentifiedImageError";
        emsg = "cannot identify image file '" + p + "'\n";
        return false;
      }
      if (img.channels == 4) img = convert_channels(img, 3);
      outs = {std::make_shared<const Image>(std::move(img)), nullptr};
    } else if (cls == "SaveImage" || cls == "PreviewImage" || cls == "SaveImageWebsocket") {
      auto img = need("images");
      if (!img) return fail_missing();
      Image out = apply_wrong_size(*img, f);
      if (cls == "SaveImageWebsocket") {
        send_ws_image(j, id, out);
      } else {
        const bool save = cls == "SaveImage";
        std::string prefix = save ? in_str(in, "filename_prefix", "ComfyUI") : "ComfyUI_temp_" + random_letters(5);
        std::string subfolder, base = prefix;
        size_t slash = prefix.rfind('/');
        if (slash != std::string::npos) {
          std::string norm;
          if (normalize_rel(prefix.substr(0, slash), norm)) subfolder = norm;
          base = prefix.substr(slash + 1);
        }
        std::string dir = save ? output_dir : temp_dir;
        if (!subfolder.empty()) dir += "/" + subfolder;
        g_mkdir_with_parents(dir.c_str(), 0755);
        int counter = next_counter(dir, base);
        char name[64];
        g_snprintf(name, sizeof name, "_%05d_.png", counter);
        std::string filename = base + name;
        auto png = encode_png(out, save ? 4 : 1);
        if (png.empty() || !write_file(dir + "/" + filename, png.data(), png.size())) {
          etype = "OSError";
          emsg = "comfy-sim: cannot write " + dir + "/" + filename + "\n";
          return false;
        }
        JW ui;
        ui.ob().k("images").ab().ob().k("filename").s(filename).k("subfolder").s(subfolder).k("type").s(save ? "output" : "temp")
            .oe().ae().oe();
        j.outputs_ui.emplace_back(id, ui.str());
        cache_ui_[id] = ui.str();
      }
    } else if (cls == "ImageScale") {
      auto img = need("image");
      if (!img) return fail_missing();
      outs = {std::make_shared<const Image>(scale_image(*img, static_cast<int>(in_int(in, "width", 512)),
                                                        static_cast<int>(in_int(in, "height", 512)),
                                                        in_str(in, "crop", "disabled") == "center"))};
    } else if (cls == "ImageBlur") {
      auto img = need("image");
      if (!img) return fail_missing();
      outs = {std::make_shared<const Image>(blur_image(*img, static_cast<int>(in_int(in, "blur_radius", 1))))};
    } else if (cls == "ImageInvert") {
      auto img = need("image");
      if (!img) return fail_missing();
      outs = {std::make_shared<const Image>(invert_image(*img))};
    } else if (cls == "ImageSharpen") {
      auto img = need("image");
      if (!img) return fail_missing();
      outs = {std::make_shared<const Image>(sharpen_image(*img, static_cast<int>(in_int(in, "sharpen_radius", 1)),
                                                          in_float(in, "alpha", 1.0)))};
    } else if (cls == "VAEEncode") {
      auto img = need("pixels");
      if (!img) return fail_missing();
      outs = {img};
    } else if (cls == "VAEDecode") {
      auto img = need("samples");
      if (!img) return fail_missing();
      outs = {img};
    } else if (cls == "KSampler" || cls == "KSamplerAdvanced") {
      auto img = need("latent_image");
      if (!img) return fail_missing();
      uint64_t seed;
      double denoise;
      if (cls == "KSampler") {
        seed = in_u64(in, "seed");
        denoise = in_float(in, "denoise", 1.0);
      } else {
        seed = in_u64(in, "noise_seed");
        int64_t steps = std::max<int64_t>(1, in_int(in, "steps", 20));
        int64_t start = in_int(in, "start_at_step", 0), end = std::min(in_int(in, "end_at_step", 10000), steps);
        denoise = std::clamp(static_cast<double>(end - start) / static_cast<double>(steps), 0.0, 1.0);
      }
      outs = {std::make_shared<const Image>(dream_transform(*img, seed, denoise))};
    } else if (cls == "EmptyLatentImage") {
      int w = static_cast<int>(in_int(in, "width", 512)), h = static_cast<int>(in_int(in, "height", 512));
      uint64_t seed = cfg.seed ^ (static_cast<uint64_t>(w) << 32) ^ static_cast<uint64_t>(h);
      outs = {std::make_shared<const Image>(noise_image(w, h, seed))};
    } else if (cls == "CheckpointLoaderSimple") {
      outs = {nullptr, nullptr, nullptr};
    } else if (cls == "LoraLoader") {
      outs = {nullptr, nullptr};
    } else if (cls == "CLIPTextEncode") {
      outs = {nullptr};
    }
    j.results[id] = outs;
    CacheEntry e;
    e.outs = outs;
    auto u = cache_ui_.find(id);
    if (u != cache_ui_.end()) {
      e.ui = u->second;
      cache_ui_.erase(u);
    }
    if (cls != "SaveImageWebsocket") cache[j.sigs[id]] = std::move(e);
    return true;
  }
  std::map<std::string, std::string> cache_ui_;

  std::string random_letters(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += static_cast<char>('a' + g_rand_int_range(rand, 0, 26));
    return s;
  }

  static int next_counter(const std::string &dir, const std::string &base) {
    int mx = 0;
    GDir *d = g_dir_open(dir.c_str(), 0, nullptr);
    if (!d) return 1;
    const char *n;
    const std::string pre = base + "_";
    while ((n = g_dir_read_name(d))) {
      std::string s = n;
      if (s.size() != pre.size() + 5 + 5 || s.compare(0, pre.size(), pre) != 0 || s.compare(s.size() - 5, 5, "_.png") != 0)
        continue;
      std::string digits = s.substr(pre.size(), 5);
      if (!std::all_of(digits.begin(), digits.end(), [](char c) { return g_ascii_isdigit(c); })) continue;
      mx = std::max(mx, std::atoi(digits.c_str()));
    }
    g_dir_close(d);
    return mx + 1;
  }

  void send_ws_image(Job &j, const std::string &id, const Image &img) {
    auto png = encode_png(img, 1);
    const int total = 1;
    for (int i = 0; i < total; ++i) {
      NodeState &s = state_of(j, id);
      s.ints = true;
      s.value = i;
      s.max = total;
      send_progress_state(j);
      JW p;
      p.ob().k("value").i(i).k("max").i(total).k("prompt_id").s(j.id).k("node").s(id).oe();
      const std::string progress = typed("progress", p.str());
      std::vector<uint8_t> f1(8);
      f1[3] = 1;
      f1[7] = 2;
      f1.insert(f1.end(), png.begin(), png.end());
      if (j.client_id.empty()) {
        broadcast(progress);
        for (auto &kv : table) ws_send_binary(kv.second, f1);
        continue;
      }
      auto it = table.find(j.client_id);
      if (it == table.end()) continue;
      Ws *ws = it->second;
      if (ws->supports_meta) {
        JW m;
        m.ob().k("node_id").s(id).k("prompt_id").s(j.id).k("display_node_id").s(id).k("parent_node_id").null()
            .k("real_node_id").s(id).k("image_type").s("image/png").oe();
        const std::string &meta = m.str();
        std::vector<uint8_t> f4(8);
        f4[3] = 4;
        const uint32_t ml = static_cast<uint32_t>(meta.size());
        f4[4] = static_cast<uint8_t>(ml >> 24);
        f4[5] = static_cast<uint8_t>(ml >> 16);
        f4[6] = static_cast<uint8_t>(ml >> 8);
        f4[7] = static_cast<uint8_t>(ml);
        f4.insert(f4.end(), meta.begin(), meta.end());
        f4.insert(f4.end(), png.begin(), png.end());
        ws_send_binary(ws, f4);
        ws_send_text(ws, progress);
      } else {
        ws_send_text(ws, progress);
        ws_send_binary(ws, f1);
      }
    }
  }

  std::string current_outputs_json(Job &j) {
    JW w;
    w.ab();
    for (auto &id : prompt_ids(j)) {
      auto it = j.sigs.find(id);
      if (it != j.sigs.end() && cache.count(it->second)) w.s(id);
    }
    w.ae();
    return w.str();
  }

  std::string executed_json(const Job &j) const {
    JW w;
    w.ab();
    for (auto &e : j.executed) w.s(e);
    w.ae();
    return w.str();
  }

  void write_history(Job &j, bool success, const std::string &status_str) {
    JW w;
    w.ob().k("prompt").raw(queue_item(j)).k("outputs").ob();
    for (auto &u : j.outputs_ui) w.k(u.first).raw(u.second);
    w.oe().k("status").ob().k("status_str").s(status_str).k("completed").b(success).k("messages").ab();
    for (auto &m : j.messages) w.raw(m);
    w.ae().oe().k("meta").ob();
    for (auto &u : j.outputs_ui)
      w.k(u.first).ob().k("node_id").s(u.first).k("display_node").s(u.first).k("parent_node").null().k("real_node_id").s(u.first).oe();
    w.oe().oe();
    HistEntry h;
    h.id = j.id;
    h.json = w.str();
    h.success = success;
    h.number = j.number;
    h.create_time = j.create_time;
    h.start_ms = j.start_ms;
    h.end_ms = now_ms();
    h.outputs_count = j.outputs_ui.size();
    history.erase(std::remove_if(history.begin(), history.end(), [&](const HistEntry &e) { return e.id == j.id; }), history.end());
    history.push_back(std::move(h));
    if (history.size() > 10000) history.erase(history.begin());
  }

  void clean_cache(Job &j) {
    std::set<std::string> keep;
    for (auto &kv : j.sigs) keep.insert(kv.second);
    for (auto it = cache.begin(); it != cache.end();) {
      if (!keep.count(it->first)) it = cache.erase(it);
      else ++it;
    }
  }

  void finish(bool success) {
    Job &j = *running;
    clean_cache(j);
    std::unique_ptr<Job> done = std::move(running);
    {
      std::lock_guard<std::mutex> l(mu);
      ++completed;
      if (success) ++succeeded;
      cv.notify_all();
    }
    send_status();
    if (!done->client_id.empty()) {
      JW e;
      e.ob().k("node").null().k("prompt_id").s(done->id).oe();
      send_to(done->client_id, typed("executing", e.str()), false);
    }
    log("job %s finished (%s)", done->id.c_str(), success ? "success" : "error");
    schedule_start_next();
  }

  void finish_success() {
    Job &j = *running;
    send_progress_state(j);
    JW d;
    d.ob().k("prompt_id").s(j.id).k("timestamp").i(now_ms()).oe();
    add_message(j, "execution_success", d.str(), false);
    write_history(j, true, "success");
    finish(true);
  }

  void finish_error(const std::string &id, const std::string &cls, const std::string &etype, const std::string &emsg) {
    Job &j = *running;
    JsonObject *in = inputs_of(j, id);
    JW ci;
    ci.ob();
    if (in) {
      GList *members = json_object_get_members(in);
      for (GList *l = members; l; l = l->next) {
        const char *k = static_cast<const char *>(l->data);
        JsonNode *v = json_object_get_member(in, k);
        if (JSON_NODE_HOLDS_ARRAY(v)) continue;
        ci.k(k).ab().raw(node_to_json(v)).ae();
      }
      g_list_free(members);
    }
    ci.oe();
    JW d;
    d.ob().k("prompt_id").s(j.id).k("node_id").s(id).k("node_type").s(cls).k("executed").raw(executed_json(j))
        .k("exception_message").s(emsg).k("exception_type").s(etype).k("traceback").ab()
        .s("  File \"<comfyui>/execution.py\", line 518, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, v3_data=v3_data)\n")
        .s("  File \"<comfy-sim>\", line 1, in " + cls + "\n    raise " + etype + "\n")
        .ae().k("current_inputs").raw(ci.str()).k("current_outputs").raw(current_outputs_json(j)).k("timestamp").i(now_ms()).oe();
    add_message(j, "execution_error", d.str(), false);
    j.outputs_ui.clear();
    write_history(j, false, "error");
    finish(false);
  }

  void finish_interrupted(const std::string &id, const std::string &cls) {
    Job &j = *running;
    JW d;
    d.ob().k("prompt_id").s(j.id).k("node_id").s(id).k("node_type").s(cls).k("executed").raw(executed_json(j))
        .k("timestamp").i(now_ms()).oe();
    add_message(j, "execution_interrupted", d.str(), true);
    write_history(j, false, "error");
    finish(false);
  }

  // ---------------------------------------------------------------------------- lifecycle
  bool listen(std::string *error) {
    GError *err = nullptr;
    GInetAddress *addr = g_inet_address_new_from_string(cfg.host.c_str());
    gboolean ok;
    uint16_t want;
    {
      std::lock_guard<std::mutex> l(mu);
      want = port ? port : cfg.port;
    }
    if (addr) {
      GSocketAddress *sa = g_inet_socket_address_new(addr, want);
      ok = soup_server_listen(server, sa, static_cast<SoupServerListenOptions>(0), &err);
      g_object_unref(sa);
      g_object_unref(addr);
    } else if (cfg.host == "localhost") {
      ok = soup_server_listen_local(server, want, SOUP_SERVER_LISTEN_IPV4_ONLY, &err);
    } else {
      ok = soup_server_listen_all(server, want, static_cast<SoupServerListenOptions>(0), &err);
    }
    if (!ok) {
      if (error) *error = err ? err->message : "listen failed";
      g_clear_error(&err);
      return false;
    }
    GSList *uris = soup_server_get_uris(server);
    uint16_t bound = 0;
    for (GSList *l = uris; l; l = l->next) {
      bound = static_cast<uint16_t>(g_uri_get_port(static_cast<GUri *>(l->data)));
      if (bound) break;
    }
    g_slist_free_full(uris, reinterpret_cast<GDestroyNotify>(g_uri_unref));
    {
      std::lock_guard<std::mutex> l(mu);
      port = bound;
    }
    listening = true;
    return true;
  }

  void apply_refuse(bool refuse) {
    if (!server) return;
    if (refuse && listening) {
      drop_all_ws();
      soup_server_disconnect(server);
      listening = false;
      log("refusing connections");
    } else if (!refuse && !listening) {
      std::string err;
      for (int i = 0; i < 50 && !listen(&err); ++i) g_usleep(20000);
      log("listening again on port %u", port_now());
    }
  }

  void restart() {
    queue.clear();
    running.reset();
    history.clear();
    cache.clear();
    number_counter = 0;
    drop_all_ws();
  }

  // Thread body.
  struct StartResult {
    std::mutex m;
    std::condition_variable c;
    bool done = false, ok = false;
    std::string error;
  };
  StartResult *start_result = nullptr;

  static gpointer thread_main(gpointer p) {
    auto *self = static_cast<Impl *>(p);
    g_main_context_push_thread_default(self->ctx);
    // A (re)start forgets everything held in memory, like a real server process.
    self->history.clear();
    self->cache.clear();
    self->number_counter = 0;
    self->http_count = 0;
    self->server = soup_server_new("server-header", "Python/3.11 aiohttp/3.8.4 ", nullptr);
    soup_server_add_handler(self->server, nullptr, on_request, self, nullptr);
    for (const char *path : {"/ws", "/api/ws"}) {
      soup_server_add_handler(self->server, path, on_ws_path, self, nullptr);
      soup_server_add_websocket_handler(self->server, path, nullptr, nullptr, on_websocket, self, nullptr);
    }
    std::string err;
    bool ok = self->listen(&err);
    {
      std::lock_guard<std::mutex> l(self->start_result->m);
      self->start_result->ok = ok;
      self->start_result->error = err;
      self->start_result->done = true;
      self->start_result->c.notify_all();
    }
    if (ok) {
      if (self->get_faults().refuse_connections) self->apply_refuse(true);
      g_main_loop_run(self->loop);
    }
    // Shutdown: sockets die with no close frame (1006), like a killed server.
    self->release_delayed_views();
    self->drop_all_ws();
    self->queue.clear();
    self->running.reset();
    soup_server_disconnect(self->server);
    g_object_unref(self->server);
    self->server = nullptr;
    self->listening = false;
    // Let pending sources run their destroy notifies.
    while (g_main_context_iteration(self->ctx, FALSE)) {
    }
    g_main_context_pop_thread_default(self->ctx);
    return nullptr;
  }
};

// ================================================================================================

Simulator::Simulator(Config config) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(config);
  impl_->latency_ms = impl_->cfg.latency_ms;
  impl_->jitter_ms = impl_->cfg.jitter_ms;
}

Simulator::~Simulator() {
  stop();
  if (impl_->own_data_dir && !impl_->data_dir.empty()) remove_tree(impl_->data_dir);
}

bool Simulator::start(std::string *error) {
  Impl &d = *impl_;
  if (d.running_thread) return true;
  if (d.data_dir.empty()) {
    if (d.cfg.data_dir.empty()) {
      char *tmp = g_dir_make_tmp("comfy-sim-XXXXXX", nullptr);
      if (!tmp) {
        if (error) *error = "cannot create a temporary data directory";
        return false;
      }
      d.data_dir = tmp;
      g_free(tmp);
      d.own_data_dir = true;
    } else {
      d.data_dir = d.cfg.data_dir;
    }
    d.input_dir = d.data_dir + "/input";
    d.output_dir = d.data_dir + "/output";
    d.temp_dir = d.data_dir + "/temp";
    for (auto *p : {&d.data_dir, &d.input_dir, &d.output_dir, &d.temp_dir}) {
      if (g_mkdir_with_parents(p->c_str(), 0755) != 0) {
        if (error) *error = "cannot create " + *p;
        return false;
      }
    }
  }
  if (!d.rand) d.rand = g_rand_new_with_seed(static_cast<guint32>(d.cfg.seed ^ (d.cfg.seed >> 32)));
  d.ctx = g_main_context_new();
  d.loop = g_main_loop_new(d.ctx, FALSE);
  Impl::StartResult res;
  d.start_result = &res;
  d.thread = g_thread_new("comfy-sim", Impl::thread_main, &d);
  {
    std::unique_lock<std::mutex> l(res.m);
    res.c.wait(l, [&] { return res.done; });
  }
  d.start_result = nullptr;
  if (!res.ok) {
    g_thread_join(d.thread);
    d.thread = nullptr;
    g_main_loop_unref(d.loop);
    g_main_context_unref(d.ctx);
    d.loop = nullptr;
    d.ctx = nullptr;
    if (error) *error = res.error;
    return false;
  }
  d.running_thread = true;
  return true;
}

void Simulator::stop() {
  Impl &d = *impl_;
  if (!d.running_thread) return;
  GMainLoop *loop = d.loop;
  d.run_sync([loop] { g_main_loop_quit(loop); });
  g_thread_join(d.thread);
  d.thread = nullptr;
  d.running_thread = false;
  g_main_loop_unref(d.loop);
  g_main_context_unref(d.ctx);
  d.loop = nullptr;
  d.ctx = nullptr;
  if (d.rand) {
    g_rand_free(d.rand);
    d.rand = nullptr;
  }
}

uint16_t Simulator::port() const { return impl_->port_now(); }

std::string Simulator::url() const { return "http://127.0.0.1:" + std::to_string(port()); }

void Simulator::set_faults(const Faults &faults) {
  bool refuse_changed;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    refuse_changed = impl_->faults.refuse_connections != faults.refuse_connections;
    impl_->faults = faults;
  }
  if (refuse_changed && impl_->running_thread) {
    Impl *d = impl_.get();
    bool refuse = faults.refuse_connections;
    d->run_sync([d, refuse] { d->apply_refuse(refuse); });
  }
}

Faults Simulator::faults() const { return impl_->get_faults(); }

void Simulator::set_latency(uint32_t latency_ms, uint32_t jitter_ms) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->latency_ms = latency_ms;
  impl_->jitter_ms = jitter_ms;
}

void Simulator::simulate_restart() {
  Impl *d = impl_.get();
  d->run_sync([d] { d->restart(); });
}

std::vector<PromptRecord> Simulator::prompts() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->prompts;
}

std::vector<UploadRecord> Simulator::uploads() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->uploads;
}

uint64_t Simulator::jobs_completed() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->completed;
}

uint64_t Simulator::jobs_succeeded() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->succeeded;
}

std::string Simulator::data_dir() const { return impl_->data_dir; }

bool Simulator::wait_for_prompts(size_t n, uint32_t timeout_ms) const {
  std::unique_lock<std::mutex> l(impl_->mu);
  return impl_->cv.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return impl_->prompts.size() >= n; });
}

}  // namespace dw::sim

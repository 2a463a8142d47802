// What each node class computes (cheap stand-ins for diffusion: sim/dream.h).

#include "sim/internal.h"

#include <algorithm>

#include "sim/dream.h"

namespace dw::sim {

std::shared_ptr<const Image> Simulator::Impl::input_image(Job &j, JsonObject *in, const char *name) {
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

int64_t Simulator::Impl::in_int(JsonObject *in, const char *name, int64_t def) {
  JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
  int64_t r = def;
  std::string e;
  if (v && !JSON_NODE_HOLDS_ARRAY(v) && py_int(v, r, e)) return r;
  return def;
}

uint64_t Simulator::Impl::in_u64(JsonObject *in, const char *name) {
  JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
  if (!v || !JSON_NODE_HOLDS_VALUE(v)) return 0;
  if (json_node_get_value_type(v) == G_TYPE_STRING) return g_ascii_strtoull(json_node_get_string(v), nullptr, 10);
  int64_t r = 0;
  std::string e;
  py_int(v, r, e);
  return static_cast<uint64_t>(r);
}

double Simulator::Impl::in_float(JsonObject *in, const char *name, double def) {
  JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
  double r = def;
  std::string e;
  if (v && !JSON_NODE_HOLDS_ARRAY(v) && py_float_conv(v, r, e)) return r;
  return def;
}

std::string Simulator::Impl::in_str(JsonObject *in, const char *name, const std::string &def) {
  JsonNode *v = in ? json_object_get_member(in, name) : nullptr;
  return v && !JSON_NODE_HOLDS_ARRAY(v) ? py_str(v) : def;
}

Image Simulator::Impl::apply_wrong_size(const Image &img, const Faults &f) {
  if (f.wrong_width > 0 && f.wrong_height > 0) return resize_bilinear(img, f.wrong_width, f.wrong_height);
  return img;
}

namespace {

// The input socket a pure image node reads ("" for nodes that produce no image from an input).
const char *image_input_of(const std::string &cls) {
  if (cls == "ImageScale" || cls == "ImageBlur" || cls == "ImageInvert" || cls == "ImageSharpen") return "image";
  if (cls == "VAEEncode") return "pixels";
  if (cls == "VAEDecode") return "samples";
  if (cls == "KSampler" || cls == "KSamplerAdvanced") return "latent_image";
  return "";
}

}  // namespace

bool Simulator::Impl::load_image_node(JsonObject *in, NodeOutputs &outs, std::string &etype, std::string &emsg) {
  std::string p = resolve_image_path(in_str(in, "image", ""));
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
  return true;
}

// SaveImage / PreviewImage: a numbered PNG in output/ or temp/, reported as the node's ui output.
bool Simulator::Impl::save_image_node(Job &j, const std::string &id, bool save, JsonObject *in, const Image &out,
                                      std::string &etype, std::string &emsg) {
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
  char name[64];
  g_snprintf(name, sizeof name, "_%05d_.png", next_counter(dir, base));
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
  return true;
}

// The image a pure image node makes from its input image.
std::shared_ptr<const Image> Simulator::Impl::transform_node(const std::string &cls, JsonObject *in,
                                                             const std::shared_ptr<const Image> &img) {
  if (cls == "ImageScale")
    return std::make_shared<const Image>(scale_image(*img, static_cast<int>(in_int(in, "width", 512)),
                                                     static_cast<int>(in_int(in, "height", 512)),
                                                     in_str(in, "crop", "disabled") == "center"));
  if (cls == "ImageBlur") return std::make_shared<const Image>(blur_image(*img, static_cast<int>(in_int(in, "blur_radius", 1))));
  if (cls == "ImageInvert") return std::make_shared<const Image>(invert_image(*img));
  if (cls == "ImageSharpen")
    return std::make_shared<const Image>(
        sharpen_image(*img, static_cast<int>(in_int(in, "sharpen_radius", 1)), in_float(in, "alpha", 1.0)));
  if (cls == "KSampler") return std::make_shared<const Image>(dream_transform(*img, in_u64(in, "seed"), in_float(in, "denoise", 1.0)));
  if (cls == "KSamplerAdvanced") {
    int64_t steps = std::max<int64_t>(1, in_int(in, "steps", 20));
    int64_t start = in_int(in, "start_at_step", 0), end = std::min(in_int(in, "end_at_step", 10000), steps);
    double denoise = std::clamp(static_cast<double>(end - start) / static_cast<double>(steps), 0.0, 1.0);
    return std::make_shared<const Image>(dream_transform(*img, in_u64(in, "noise_seed"), denoise));
  }
  return img;  // VAEEncode / VAEDecode: latents are images here
}

// Outputs of nodes that need no image input (placeholders for models, CLIP, conditioning).
Simulator::Impl::NodeOutputs Simulator::Impl::source_node(const std::string &cls, JsonObject *in) {
  if (cls == "EmptyLatentImage") {
    int w = static_cast<int>(in_int(in, "width", 512)), h = static_cast<int>(in_int(in, "height", 512));
    uint64_t seed = cfg.seed ^ (static_cast<uint64_t>(w) << 32) ^ static_cast<uint64_t>(h);
    return {std::make_shared<const Image>(noise_image(w, h, seed))};
  }
  if (cls == "CheckpointLoaderSimple") return {nullptr, nullptr, nullptr};
  if (cls == "LoraLoader") return {nullptr, nullptr};
  if (cls == "CLIPTextEncode") return {nullptr};
  return {};
}

bool Simulator::Impl::execute_node(Job &j, const std::string &id, const std::string &cls, const Faults &f, std::string &etype,
                                   std::string &emsg) {
  JsonObject *in = inputs_of(j, id);
  NodeOutputs outs;
  const bool saver = cls == "SaveImage" || cls == "PreviewImage" || cls == "SaveImageWebsocket";
  const char *image_input = saver ? "images" : image_input_of(cls);
  std::shared_ptr<const Image> img;
  if (*image_input) {
    img = input_image(j, in, image_input);
    if (!img) {
      etype = "RuntimeError";
      emsg = "comfy-sim: node " + id + " (" + cls + ") has no image input\n";
      return false;
    }
  }
  if (cls == "LoadImage") {
    if (!load_image_node(in, outs, etype, emsg)) return false;
  } else if (cls == "SaveImageWebsocket") {
    send_ws_image(j, id, apply_wrong_size(*img, f));
  } else if (saver) {
    if (!save_image_node(j, id, cls == "SaveImage", in, apply_wrong_size(*img, f), etype, emsg)) return false;
  } else if (img) {
    outs = {transform_node(cls, in, img)};
  } else {
    outs = source_node(cls, in);
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

std::string Simulator::Impl::random_letters(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>('a' + g_rand_int_range(rand, 0, 26));
  return s;
}

int Simulator::Impl::next_counter(const std::string &dir, const std::string &base) {
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

}  // namespace dw::sim

// The node classes the simulator knows: inputs with their types and ranges, outputs, and the
// /object_info rendering (same shapes as ComfyUI 0.8.0).

#include "sim/internal.h"


namespace dw::sim {

namespace {

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

// Image nodes (LoadImage, savers, postprocessing), as ComfyUI 0.8.0 declares them.
void add_image_nodes(std::map<std::string, NodeSpec> &m) {
  auto add = [&](NodeSpec s) { m[s.name] = std::move(s); };
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
}

// Model, conditioning and sampling nodes (models are not loaded; their names are not checked).
void add_model_nodes(std::map<std::string, NodeSpec> &m) {
  auto add = [&](NodeSpec s) { m[s.name] = std::move(s); };
  const uint64_t seed_max = 0xffffffffffffffffull;
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
}

}  // namespace

const std::map<std::string, NodeSpec> &node_specs() {
  static const std::map<std::string, NodeSpec> specs = [] {
    std::map<std::string, NodeSpec> m;
    add_image_nodes(m);
    add_model_nodes(m);
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

}  // namespace dw::sim

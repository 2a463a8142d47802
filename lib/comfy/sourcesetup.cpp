#include "comfy/sourcesetup.h"

#include <glib.h>

#include <algorithm>

namespace dw::comfy {

static std::string trim(const std::string &s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

bool parse_bindings(const std::string &text, BindingOverrides *out, std::string *error) {
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find_first_of(",;", pos);
    if (end == std::string::npos) end = text.size();
    std::string item = trim(text.substr(pos, end - pos));
    pos = end + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      *error = "binding '" + item + "' is not of the form param=node_id.input";
      return false;
    }
    std::string key = trim(item.substr(0, eq)), path = trim(item.substr(eq + 1));
    std::optional<Param> param = param_from_name(key);
    if (!param) {
      *error = "unknown binding parameter '" + key +
               "' (expected image, prompt, negative-prompt, seed, denoise, steps or cfg)";
      return false;
    }
    (*out)[*param] = path;
  }
  return true;
}

dw::Image make_bootstrap_image(int width, int height, uint64_t seed) {
  dw::Image img(width, height, 3);
  GRand *rand = g_rand_new_with_seed(static_cast<guint32>(seed ^ (seed >> 32)));
  for (int y = 0; y < height; ++y) {
    uint8_t *row = img.row(y);
    for (int x = 0; x < width; ++x) {
      int n = g_rand_int_range(rand, -24, 25);
      row[3 * x + 0] = static_cast<uint8_t>(std::clamp(90 + 60 * y / height + n, 0, 255));
      row[3 * x + 1] = static_cast<uint8_t>(std::clamp(110 + 40 * x / width + n, 0, 255));
      row[3 * x + 2] = static_cast<uint8_t>(std::clamp(160 - 50 * y / height + n, 0, 255));
    }
  }
  g_rand_free(rand);
  return img;
}

std::string unbound_settings(const Workflow &workflow, bool steps_set, bool cfg_set) {
  std::vector<Param> used = {Param::Prompt, Param::NegativePrompt, Param::Seed, Param::Denoise};
  if (steps_set) used.push_back(Param::Steps);
  if (cfg_set) used.push_back(Param::Cfg);
  std::string out;
  for (Param p : used) {
    if (workflow.binding(p).bound()) continue;
    out += std::string(out.empty() ? "" : "; ") + param_name(p) + ": " + workflow.unbound_reason(p);
  }
  return out;
}

JobSpec make_job_spec(JobPlan plan, const Workflow *workflow, JobParams base) {
  base.prompt = plan.prompt;
  base.seed = plan.seed;
  base.denoise = plan.denoise;
  JobSpec spec;
  spec.input_value = plan.input_value;
  spec.upload_png = std::move(plan.upload_png);
  spec.upload_name = plan.upload_name;
  spec.build_prompt = [workflow, base](const std::string &image_value) mutable {
    base.image = image_value;
    return workflow->build(base);
  };
  spec.output_nodes = workflow->output_nodes();
  return spec;
}

}  // namespace dw::comfy

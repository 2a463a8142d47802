// API-format ComfyUI workflows ("Save (API)"): load, validate, bind the parameters the stream
// changes per job (prompt, negative prompt, seed, denoise, steps, cfg, input image), and build the
// graph for one job with json-glib (never by pasting strings).
#pragma once

#include <json-glib/json-glib.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comfy/error.h"

namespace dw::comfy {

// One bindable parameter.
enum class Param { Image = 0, Prompt, NegativePrompt, Seed, Denoise, Steps, Cfg, Count };
const char *param_name(Param p);  // "image", "prompt", "negative-prompt", "seed", ...
// Inverse of param_name() (also accepts "negative_prompt"); nullopt for an unknown name.
std::optional<Param> param_from_name(const std::string &name);

// Explicit "node_id.input" paths; an empty string means auto-detect, "none" means leave unbound.
struct BindingOverrides {
  std::string paths[static_cast<int>(Param::Count)];
  std::string &operator[](Param p) { return paths[static_cast<int>(p)]; }
  const std::string &operator[](Param p) const { return paths[static_cast<int>(p)]; }
};

struct Binding {
  std::string node_id;  // empty = not bound (the parameter is then left as the file has it)
  std::string input;
  bool bound() const { return !node_id.empty(); }
  std::string path() const { return node_id + "." + input; }
};

// Values for one job; unset optionals keep the workflow file's value.
struct JobParams {
  // Value for the LoadImage input: "name.png", "sub/name.png" or "name.png [output]"; empty keeps the
  // file's value. Strings are made valid UTF-8 without NULs; non-finite doubles are ignored.
  std::string image;
  std::optional<std::string> prompt;
  std::optional<std::string> negative_prompt;
  std::optional<int64_t> seed;
  std::optional<double> denoise;
  std::optional<int64_t> steps;
  std::optional<double> cfg;
};

class Workflow {
 public:
  // Errors (kind InvalidWorkflow) name the file and the problem: missing file, invalid JSON, UI
  // format instead of API format, no image input node, no output node, ambiguous or dangling
  // binding, a link to a missing node.
  static std::unique_ptr<Workflow> load_file(const std::string &path, const BindingOverrides &overrides,
                                             Error *error);
  static std::unique_ptr<Workflow> load_string(const std::string &json, const BindingOverrides &overrides,
                                               Error *error, const std::string &origin = "<workflow>");
  ~Workflow();
  Workflow(const Workflow &) = delete;
  Workflow &operator=(const Workflow &) = delete;

  // A new graph (the "prompt" object of POST /prompt) with the params applied. Caller owns it.
  JsonNode *build(const JobParams &params) const;

  const Binding &binding(Param p) const;
  // Why a parameter is not bound ("no KSampler or KSamplerAdvanced node", ...); empty when bound.
  const std::string &unbound_reason(Param p) const;
  // class_type of a node of the loaded graph, "" if there is no such node.
  std::string node_class(const std::string &node_id) const;
  // The loaded graph, as the file has it (build() never modifies it). Owned by the Workflow.
  const JsonNode *graph() const { return graph_; }
  // Output nodes (SaveImage, SaveImageWebsocket, PreviewImage), numeric ids in numeric order first.
  const std::vector<std::string> &output_nodes() const { return output_nodes_; }
  // True if the image output arrives only as websocket binary frames (SaveImageWebsocket).
  bool outputs_via_websocket() const { return outputs_via_websocket_; }
  const std::string &origin() const { return origin_; }
  // One line per binding, for logs: "image -> 1.image (LoadImage)".
  std::string describe() const;

 private:
  Workflow() = default;
  JsonNode *graph_ = nullptr;
  std::string origin_;
  Binding bindings_[static_cast<int>(Param::Count)];
  std::string unbound_reasons_[static_cast<int>(Param::Count)];
  std::vector<std::string> output_nodes_;
  bool outputs_via_websocket_ = false;
  friend class WorkflowLoader;
};

}  // namespace dw::comfy

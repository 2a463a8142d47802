// libFuzzer target for the workflow loader (dw::comfy::Workflow::load_string): any bytes give a
// Workflow or an Error with a message -- never a crash, hang or json-glib critical turned into
// garbage (ASan/UBSan). A loaded workflow must also build a prompt.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "comfy/workflow.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dw::comfy::Error error;
  auto wf = dw::comfy::Workflow::load_string(std::string(reinterpret_cast<const char *>(data), size), {}, &error);
  if (!wf) {
    if (error.message.empty()) std::abort();
    return 0;
  }
  dw::comfy::JobParams params;
  params.image = "fuzz.png";
  params.prompt = "a prompt";
  params.seed = 7;
  params.denoise = 0.5;
  JsonNode *prompt = wf->build(params);
  if (!prompt) std::abort();
  json_node_unref(prompt);
  (void)wf->describe();
  return 0;
}

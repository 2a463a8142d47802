// libFuzzer target for the ComfyUI protocol parsers (lib/comfy/protocol.h): the same bytes are fed
// to every parser of server input -- websocket text and binary frames, /prompt (200 and 400),
// /history, /queue, /upload/image, image validation. Each must return a dw::comfy::Error or a
// result, never crash, hang or read out of bounds (ASan/UBSan).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "comfy/protocol.h"

using namespace dw::comfy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = reinterpret_cast<const char *>(data);
  {
    proto::WsMessage msg;
    if (!proto::parse_ws_text(text, size, &msg)) (void)proto::error_from_execution_message(msg);
  }
  {
    proto::BinaryFrame frame;
    (void)proto::parse_ws_binary(data, size, &frame);
  }
  for (int status : {200, 400}) {
    proto::PromptResponse pr;
    (void)proto::parse_prompt_response(status, text, size, {}, &pr);
    (void)proto::parse_prompt_response(status, text, size, {"9"}, &pr);
  }
  {
    proto::HistoryEntry h;
    (void)proto::parse_history(text, size, "p", &h);
    // The id most fuzzed histories would use: the first key, if the input starts like {"<id>".
    std::string id;
    if (size > 2 && text[0] == '{' && text[1] == '"') {
      for (size_t i = 2; i < size && i < 40 && text[i] != '"'; i++) id += text[i];
    }
    if (!id.empty()) (void)proto::parse_history(text, size, id, &h);
  }
  {
    std::vector<std::string> ids;
    (void)proto::parse_queue(text, size, &ids);
  }
  {
    ImageRef ref;
    (void)proto::parse_upload_response(text, size, &ref);
  }
  (void)proto::validate_image(data, size, "fuzz image");
  if (proto::excerpt(text, size, 40).size() > 40 * 4 + 8) std::abort();
  return 0;
}

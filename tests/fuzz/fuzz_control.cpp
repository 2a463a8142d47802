// libFuzzer target for the app's two outside-input parsers (tools/dreamwindow/protocol.h), run on
// the same bytes: the /api/control body and a /ws signalling message. Any input must be accepted
// with values inside their documented ranges, or refused with a status (400/413) and a message --
// never crash, hang, or accept invalid text (ASan/UBSan; G_DEBUG=fatal-criticals).
#include <glib.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "../../tools/dreamwindow/protocol.h"
#include "json/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view text(reinterpret_cast<const char *>(data), size);

  dw::app::ControlRequest req;
  dw::app::ProtocolError err;
  const dw::app::ControlLimits limits;
  if (dw::app::parse_control(text, &req, &err, limits)) {
    for (const auto *t : {&req.prompt, &req.negative_prompt})
      if (*t && !dw::json::check_text(**t, limits.max_prompt).empty()) std::abort();
    if (req.denoise && (!std::isfinite(*req.denoise) || *req.denoise < 0 || *req.denoise > 1)) std::abort();
    if (req.seed && *req.seed < 0) std::abort();
  } else {
    if ((err.status != 400 && err.status != 413) || err.message.empty()) std::abort();
    // The message goes back in a JSON reply: it must be valid text itself.
    if (!dw::json::check_text(err.message).empty()) std::abort();
  }
  (void)dw::app::member_at(text, size / 2);

  dw::app::SignalMessage m;
  std::string why;
  if (dw::app::parse_signal(text, &m, &why)) {
    if (m.type == dw::app::SignalMessage::Type::Answer && m.sdp.empty()) std::abort();
    if (m.mline > 255) std::abort();
  } else if (why.empty()) {
    std::abort();
  }
  return 0;
}

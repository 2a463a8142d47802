// Pure (no I/O) parsing and building of the ComfyUI 0.8.0 wire protocol (../shared/comfyui/PROTOCOL.md):
// websocket text messages and binary frames, the POST /prompt, /history/{id} and /upload/image
// responses, and the JSON request bodies (built with JsonBuilder, never by pasting strings).
// Every function validates its input and reports a typed Error; none of them crashes or throws on
// garbage.
#pragma once

#include <json-glib/json-glib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "comfy/client.h"  // ImageRef
#include "comfy/error.h"

namespace dw::comfy::proto {

// ---------------------------------------------------------------------------------------------
// Websocket text messages

enum class MsgType {
  Unknown = 0,  // tolerated: a type this client does not know
  Status,
  ExecutionStart,
  ExecutionCached,
  Executing,
  Progress,
  ProgressState,
  Executed,
  ExecutionSuccess,
  ExecutionError,
  ExecutionInterrupted,
  FeatureFlags,
};
const char *msg_type_name(MsgType t);

struct NodeProgress {
  std::string node_id;
  double value = 0, max = 0;
  std::string state;  // "running" | "finished" | ...
};

struct OutputImage {
  std::string node_id;  // output node that produced it
  ImageRef ref;
};

struct WsMessage {
  MsgType type = MsgType::Unknown;
  std::string type_name;     // as sent
  std::string prompt_id;     // empty when the message has none
  // status
  int64_t queue_remaining = -1;
  std::string sid;           // only in the first status after connecting
  // executing / progress / executed
  std::string node;          // empty when node is null (executing{node:null} = prompt done)
  bool node_is_null = false;
  std::string display_node;
  // progress
  double value = 0, max = 0;
  // progress_state
  std::vector<NodeProgress> nodes;
  // executed
  std::vector<OutputImage> images;
  // execution_cached (nodes), execution_error / execution_interrupted (executed)
  std::vector<std::string> node_list;
  // execution_error / execution_interrupted
  std::string node_id, node_type, exception_type, exception_message;  // message trimmed
  // feature_flags
  bool supports_preview_metadata = false;
  int64_t max_upload_size = 0;
  int64_t timestamp = 0;
};

// Parses one text frame. Unknown types give type Unknown and no error; malformed JSON, a missing
// "type" or wrong field types give a Protocol error.
Error parse_ws_text(const char *data, size_t len, WsMessage *out);
// Parses an already-decoded {"type":..,"data":..} object, or (type_name, data) pair as found in
// history status messages.
Error parse_ws_data(const std::string &type_name, JsonNode *data, WsMessage *out);

// ---------------------------------------------------------------------------------------------
// Websocket binary frames

enum : uint32_t { kBinPreviewImage = 1, kBinUnencodedPreview = 2, kBinText = 3, kBinPreviewWithMetadata = 4 };

struct BinaryFrame {
  uint32_t event_type = 0;
  // 1 and 4: the image
  uint32_t image_format = 0;  // type 1: 1 = JPEG, 2 = PNG
  std::string mime;           // "image/png" | "image/jpeg" | as the metadata says
  std::vector<uint8_t> image;
  // 4: metadata
  bool has_metadata = false;
  std::string prompt_id, node_id, display_node_id;
  // 3: text
  std::string text_node_id, text;
};

// Truncated or inconsistent frames give a Protocol error. Unknown event types give no error (the
// event_type is set, nothing else).
Error parse_ws_binary(const uint8_t *data, size_t len, BinaryFrame *out);

// ---------------------------------------------------------------------------------------------
// POST /prompt

struct InputError {
  std::string type, message, details, input_name;
};

struct NodeError {
  std::string node_id, class_type;
  std::vector<InputError> errors;
  std::vector<std::string> dependent_outputs;
};

struct PromptResponse {
  int http_status = 0;
  std::string prompt_id;
  double number = 0;  // int or float on the wire
  bool has_number = false;
  std::vector<NodeError> node_errors;
  // 400: the top-level error
  std::string error_type, error_message, error_details;
};

// One line per input error: "node 3 (KSampler) input 'cfg': Value 99 bigger than max of 31".
std::string summarize_node_errors(const std::vector<NodeError> &errors);

// An input error saying a LoadImage file does not exist on the server ("Invalid image file: x.png",
// or an image combo "value_not_in_list" on older servers).
bool is_missing_image_error(const NodeError &node, const InputError &error);
// Whether every error in node_errors (at least one) is such a missing image: re-uploading fixes it.
bool missing_input_only(const std::vector<NodeError> &errors);

// Interprets the answer to POST /prompt.
//  200 + empty node_errors -> no error.
//  200 + node_errors touching a wanted output (wanted empty = every output) -> InvalidPrompt.
//  400 -> InvalidPrompt with the top-level error and node_errors summarised; MissingInput (transient)
//         when the only problem is a LoadImage file the server does not have.
//  other statuses -> HttpStatus (text bodies quoted, shortened); non-JSON/garbage -> Protocol.
Error parse_prompt_response(int http_status, const char *data, size_t len,
                            const std::vector<std::string> &wanted_outputs, PromptResponse *out);

// ---------------------------------------------------------------------------------------------
// GET /history/{id}

struct HistoryEntry {
  enum class State { NotFinished, Success, Error, Interrupted };
  State state = State::NotFinished;
  std::string status_str;
  bool completed = false;
  std::vector<OutputImage> outputs;  // sorted by node id, then in the server's order
  WsMessage last_message;            // the execution_error / execution_interrupted payload
};

// `{}` (or no entry for prompt_id) -> NotFinished. Garbage -> Protocol.
Error parse_history(const char *data, size_t len, const std::string &prompt_id, HistoryEntry *out);

// An Error of kind ExecutionError / Interrupted built from an execution_error /
// execution_interrupted message: "node 1 (LoadImage): PIL.UnidentifiedImageError: cannot ...".
Error error_from_execution_message(const WsMessage &msg);

// ---------------------------------------------------------------------------------------------
// GET /queue

// The prompt_ids running or pending ({"queue_running": [[number, id, ...]], "queue_pending": [...]}).
Error parse_queue(const char *data, size_t len, std::vector<std::string> *prompt_ids);

// ---------------------------------------------------------------------------------------------
// POST /upload/image

Error parse_upload_response(const char *data, size_t len, ImageRef *out);

// ---------------------------------------------------------------------------------------------
// Request bodies (JsonBuilder). `prompt` is copied, not consumed.

std::string build_prompt_body(JsonNode *prompt, const std::string &client_id, const std::string &prompt_id);
std::string build_feature_flags();
std::string build_queue_delete(const std::vector<std::string> &prompt_ids);
std::string build_interrupt(const std::string &prompt_id);  // "" = {} (global)

// ---------------------------------------------------------------------------------------------
// Helpers

bool is_png(const uint8_t *data, size_t len);
bool is_jpeg(const uint8_t *data, size_t len);
// PNG or JPEG signature and non-empty; else BadImage naming `what`.
Error validate_image(const uint8_t *data, size_t len, const std::string &what);
// First ~max_chars of a body for error messages, with non-printable bytes replaced.
std::string excerpt(const char *data, size_t len, size_t max_chars = 200);
// Whether node_id is in `wanted` (an empty `wanted` accepts every node).
bool wanted_node(const std::vector<std::string> &wanted, const std::string &node_id);

}  // namespace dw::comfy::proto

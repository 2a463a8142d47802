// Typed errors of the ComfyUI client. Every failure the client reports is one of these kinds with a
// message a person can act on ("HTTP 500 from POST /prompt: ...", "node 3 (KSampler): ...").
#pragma once

#include <string>

namespace dw::comfy {

enum class ErrorKind {
  None = 0,
  Unreachable,      // connection refused / DNS / reset: the server is down
  HttpStatus,       // unexpected HTTP status (http_status says which)
  InvalidPrompt,    // /prompt rejected the graph (400) or dropped outputs (200 + node_errors)
  ExecutionError,   // execution_error from the server (node_id, node_type, exception)
  Interrupted,      // execution_interrupted
  Timeout,          // a phase (connect, queue, execute, download) took too long
  BadImage,         // output missing, not decodable, or of an unexpected size
  Protocol,         // malformed JSON / unexpected message shape
  Cancelled,        // cancelled by us (element stopping)
  InvalidWorkflow,  // workflow file missing / not JSON / not bindable
  MissingInput,     // /prompt rejected (400) only because a LoadImage file is not on the server (a
                    // restart with a clean output/input dir): transient, re-upload the image and retry
};

const char *error_kind_name(ErrorKind kind);

struct Error {
  ErrorKind kind = ErrorKind::None;
  std::string message;
  int http_status = 0;
  std::string node_id;    // for InvalidPrompt / ExecutionError / Interrupted
  std::string node_type;
  // The job did not fail on its own merits: the server died, stopped answering or restarted and
  // forgot it. The caller re-queues it without spending one of its retries (still with backoff
  // while Client::health() is Unreachable/Unresponsive).
  bool retry_free = false;

  Error() = default;
  Error(ErrorKind k, std::string msg, int status = 0) : kind(k), message(std::move(msg)), http_status(status) {}

  explicit operator bool() const { return kind != ErrorKind::None; }
  // Transient failures worth retrying with backoff (server down or unresponsive, 5xx, timeouts,
  // dropped sockets, a missing input image).
  bool transient() const;
  // "<kind>: <message>"
  std::string describe() const;
};

}  // namespace dw::comfy

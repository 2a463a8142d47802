#include "comfy/error.h"

namespace dw::comfy {

const char *error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::None: return "none";
    case ErrorKind::Unreachable: return "unreachable";
    case ErrorKind::HttpStatus: return "http-status";
    case ErrorKind::InvalidPrompt: return "invalid-prompt";
    case ErrorKind::ExecutionError: return "execution-error";
    case ErrorKind::Interrupted: return "interrupted";
    case ErrorKind::Timeout: return "timeout";
    case ErrorKind::BadImage: return "bad-image";
    case ErrorKind::Protocol: return "protocol";
    case ErrorKind::Cancelled: return "cancelled";
    case ErrorKind::InvalidWorkflow: return "invalid-workflow";
    case ErrorKind::MissingInput: return "missing-input";
  }
  return "unknown";
}

bool Error::transient() const {
  switch (kind) {
    case ErrorKind::Unreachable:
    case ErrorKind::Timeout:
    case ErrorKind::Protocol:
    case ErrorKind::MissingInput:
      return true;
    case ErrorKind::HttpStatus:
      return http_status >= 500 || http_status == 0 || http_status == 429;
    default:
      return false;
  }
}

std::string Error::describe() const {
  return std::string(error_kind_name(kind)) + ": " + message;
}

}  // namespace dw::comfy

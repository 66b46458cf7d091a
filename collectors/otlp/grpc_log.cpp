#include "collectors/otlp/grpc_log.hpp"

#include <mutex>
#include <string>

#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

namespace isoscope::otlp {
namespace {

void GrpcLog(gpr_log_func_args* args) {
  const char* msg = args->message != nullptr ? args->message : "";
  switch (args->severity) {
    case GPR_LOG_SEVERITY_ERROR:
      spdlog::warn("grpc: {}", msg);
      break;
    case GPR_LOG_SEVERITY_INFO:
      spdlog::debug("grpc: {}", msg);
      break;
    case GPR_LOG_SEVERITY_DEBUG:
      spdlog::trace("grpc: {}", msg);
      break;
  }
}

void ProtobufLog(google::protobuf::LogLevel level, const char* /*file*/, int /*line*/,
                 const std::string& message) {
  if (level >= google::protobuf::LOGLEVEL_FATAL) {
    spdlog::error("protobuf: {}", message);
  } else {
    spdlog::debug("protobuf: {}", message);
  }
}

}  // namespace

void InstallGrpcLogging() {
  static std::once_flag once;
  std::call_once(once, [] {
    gpr_set_log_function(&GrpcLog);
    google::protobuf::SetLogHandler(&ProtobufLog);
  });
}

}  // namespace isoscope::otlp

// Routes the log output of the gRPC core library and of protobuf into spdlog, so that nothing
// writes to stderr behind the logger's back (docs/coding-guidelines.md, "Logging"). Process-wide;
// the receiver and the exporter call it before they create servers or channels. gRPC errors
// become `warn` (the caller reports the failure that matters as an error with context), gRPC
// info/debug and all protobuf messages (per-request parse complaints) `debug`.
#pragma once

namespace isoscope::otlp {

void InstallGrpcLogging();

}  // namespace isoscope::otlp

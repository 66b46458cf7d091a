// One error type for the whole code base (docs/coding-guidelines.md, "Errors").
// Functions that can fail return Result<T>; exceptions are not used for
// expected failures. An Error carries a message meant for the operator and an
// optional errno-style code.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace isoscope {

struct Error {
  std::string message;
  int code = 0;  // errno value when the failure came from the kernel, else 0

  // Prefixes context: Error{"no such file"}.Wrap("open /x") -> "open /x: no such file".
  Error Wrap(const std::string& context) const { return Error{context + ": " + message, code}; }
};

template <typename... Args>
Error MakeError(fmt::format_string<Args...> format, Args&&... args) {
  return Error{fmt::format(format, std::forward<Args>(args)...), 0};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::get<T>(std::move(v_)); }

  const Error& error() const { return std::get<Error>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error)
      : err_(std::move(error)), failed_(true) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace isoscope

// Status and Result: the error type every sdonnx layer returns.
//
// Errors carry a message that names the file, tensor or byte offset, what was
// expected and what to do. As an error travels up, callers prepend context
// ("converting unet: ...") with WithContext rather than replacing the text.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace sdonnx {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message)); }

  bool ok() const { return !message_.has_value(); }
  const std::string& message() const {
    static const std::string kEmpty;
    return message_ ? *message_ : kEmpty;
  }

  // Returns a copy whose message is "context: original message".
  Status WithContext(const std::string& context) const {
    if (ok()) return *this;
    return Status(context + ": " + *message_);
  }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {}
  std::optional<std::string> message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}            // NOLINT: implicit by design
  Result(Status status) : value_(std::move(status)) {}     // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(value_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(value_); }
  T& value() & { return std::get<T>(value_); }
  const T& value() const& { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> value_;
};

}  // namespace sdonnx

#define SDONNX_CONCAT_INNER(a, b) a##b
#define SDONNX_CONCAT(a, b) SDONNX_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if it is an error.
#define SDONNX_RETURN_IF_ERROR(expr)                \
  do {                                              \
    ::sdonnx::Status sdonnx_status_ = (expr);       \
    if (!sdonnx_status_.ok()) return sdonnx_status_; \
  } while (false)

// Declares `lhs` from a Result, or returns its error status.
#define SDONNX_ASSIGN_OR_RETURN(lhs, expr) \
  SDONNX_ASSIGN_OR_RETURN_IMPL(SDONNX_CONCAT(sdonnx_result_, __LINE__), lhs, expr)
#define SDONNX_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

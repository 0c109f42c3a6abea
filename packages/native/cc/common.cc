#include "common.h"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace vhost_native {

using v8::Context;
using v8::Exception;
using v8::Function;
using v8::FunctionCallback;
using v8::FunctionTemplate;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::NewStringType;
using v8::Object;
using v8::String;
using v8::Value;

namespace {

Local<String> Str(Isolate* isolate, const std::string& s) {
  return String::NewFromUtf8(isolate, s.data(), NewStringType::kNormal, static_cast<int>(s.size()))
      .ToLocalChecked();
}

const char* ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "EUNKNOWN";
}

void ThrowWithCode(Isolate* isolate, Local<Value> error, const char* code) {
  Local<Context> context = isolate->GetCurrentContext();
  SetProperty(context, error.As<Object>(), "code", Str(isolate, code));
  isolate->ThrowException(error);
}

}  // namespace

std::string FormatNumber(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  return buf;
}

void SetProperty(Local<Context> context, Local<Object> obj, const char* name, Local<Value> value) {
  Isolate* isolate = context->GetIsolate();
  static_cast<void>(obj->Set(context, Str(isolate, name), value).IsJust());
}

void SetMethod(Local<Context> context, Local<Object> target, const char* name, FunctionCallback callback) {
  Isolate* isolate = context->GetIsolate();
  Local<FunctionTemplate> tpl = FunctionTemplate::New(isolate, callback);
  Local<String> key = Str(isolate, name);
  tpl->SetClassName(key);
  Local<Function> fn = tpl->GetFunction(context).ToLocalChecked();
  fn->SetName(key);
  static_cast<void>(target->Set(context, key, fn).IsJust());
}

Local<Object> ThrowCoded(Isolate* isolate, const char* code, int err, const char* syscall,
                         const std::string& description) {
  Local<Context> context = isolate->GetCurrentContext();
  std::string message = std::string(syscall) + ": " + code + " (" + description + ")";
  Local<Object> error = Exception::Error(Str(isolate, message)).As<Object>();
  SetProperty(context, error, "errno", Integer::New(isolate, err));
  SetProperty(context, error, "syscall", Str(isolate, syscall));
  ThrowWithCode(isolate, error, code);
  return error;
}

void ThrowErrno(Isolate* isolate, int err, const char* syscall) {
  ThrowCoded(isolate, ErrnoName(err), err, syscall, std::strerror(err));
}

void ThrowTypeError(Isolate* isolate, const std::string& message) {
  ThrowWithCode(isolate, Exception::TypeError(Str(isolate, message)), "ERR_INVALID_ARG_TYPE");
}

void ThrowRangeError(Isolate* isolate, const std::string& message) {
  ThrowWithCode(isolate, Exception::RangeError(Str(isolate, message)), "ERR_OUT_OF_RANGE");
}

void Args::TypeError(const char* name, const char* expected, int i) const {
  std::string received = "undefined";
  if (i < info_.Length()) {
    v8::String::Utf8Value type(isolate(), info_[i]->TypeOf(isolate()));
    received = *type != nullptr ? *type : "?";
  }
  ThrowTypeError(isolate(), std::string(fn_) + ": \"" + name + "\" must be " + expected + ", received " + received);
}

void Args::RangeError(const char* name, const std::string& what) const {
  ThrowRangeError(isolate(), std::string(fn_) + ": \"" + name + "\" " + what);
}

bool Args::Integer(int i, const char* name, double min, double max, double* out) const {
  if (i >= info_.Length() || !info_[i]->IsNumber()) {
    TypeError(name, "a number", i);
    return false;
  }
  double d = info_[i].As<v8::Number>()->Value();
  if (!std::isfinite(d) || std::trunc(d) != d) {
    RangeError(name, "must be an integer, received " + FormatNumber(d));
    return false;
  }
  if (d < min || d > max) {
    RangeError(name, "must be >= " + FormatNumber(min) + " and <= " + FormatNumber(max) + ", received " +
                         FormatNumber(d));
    return false;
  }
  *out = d;
  return true;
}

bool Args::Fd(int i, const char* name, int* out) const {
  double d;
  if (!Integer(i, name, 0, 2147483647.0, &d)) return false;
  *out = static_cast<int>(d);
  return true;
}

bool Args::Bool(int i, const char* name, bool* out) const {
  if (i >= info_.Length() || !info_[i]->IsBoolean()) {
    TypeError(name, "a boolean", i);
    return false;
  }
  *out = info_[i]->IsTrue();
  return true;
}

bool Args::String(int i, const char* name, std::string* out) const {
  if (i >= info_.Length() || !info_[i]->IsString()) {
    TypeError(name, "a string", i);
    return false;
  }
  v8::String::Utf8Value utf8(isolate(), info_[i]);
  out->assign(*utf8, static_cast<size_t>(utf8.length()));
  return true;
}

bool Args::Function(int i, const char* name, Local<v8::Function>* out) const {
  if (i >= info_.Length() || !info_[i]->IsFunction()) {
    TypeError(name, "a function", i);
    return false;
  }
  *out = info_[i].As<v8::Function>();
  return true;
}

bool Args::Array(int i, const char* name, Local<v8::Array>* out) const {
  if (i >= info_.Length() || !info_[i]->IsArray()) {
    TypeError(name, "an array", i);
    return false;
  }
  *out = info_[i].As<v8::Array>();
  return true;
}

bool Args::Bytes(int i, const char* name, uint8_t** data, size_t* length) const {
  if (i >= info_.Length() || !info_[i]->IsUint8Array()) {
    TypeError(name, "a Uint8Array", i);
    return false;
  }
  Local<v8::Uint8Array> view = info_[i].As<v8::Uint8Array>();
  size_t len = view->ByteLength();
  // Buffer() works for views on SharedArrayBuffers as well (same object kind).
  auto* base = static_cast<uint8_t*>(view->Buffer()->Data());
  *data = base == nullptr ? nullptr : base + view->ByteOffset();
  *length = base == nullptr ? 0 : len;
  return true;
}

}  // namespace vhost_native

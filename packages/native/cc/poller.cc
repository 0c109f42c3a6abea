// Poller: a uv_poll_t on the libuv loop of the thread that creates it.
//
// Lifetime (all on the owning thread):
//  - the C++ state lives until both (a) libuv has run the handle's close
//    callback and (b) the JS object is gone (weak callback) — or, on
//    environment teardown, until the close callback ran;
//  - the JS object is held strongly until close(), so an open poller (and its
//    callback) can never be collected while libuv may call it;
//  - an *async* environment cleanup hook is registered for every poller and
//    stays registered until the handle is fully closed. When a worker (or the
//    main thread) tears its environment down, the hook closes a poller still
//    open, and Node keeps running the loop until the close callback reports
//    back: the loop is never closed with our handle still in it, and the
//    handle memory is freed in its close callback (uv_close is asynchronous).
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>

#include "common.h"

namespace vhost_native {

using v8::Context;
using v8::Function;
using v8::FunctionCallbackInfo;
using v8::FunctionTemplate;
using v8::Global;
using v8::HandleScope;
using v8::Integer;
using v8::Isolate;
using v8::Local;
using v8::Number;
using v8::Object;
using v8::Signature;
using v8::String;
using v8::Value;
using v8::WeakCallbackInfo;
using v8::WeakCallbackType;

namespace {

constexpr int kAllEvents = UV_READABLE | UV_WRITABLE | UV_DISCONNECT | UV_PRIORITIZED;

struct PollerState {
  Isolate* isolate = nullptr;
  Global<Object> self;        // strong until closed, then weak
  Global<Function> callback;  // reset on close
  Global<Context> context;    // reset on close
  uv_poll_t* handle = nullptr;
  node::AsyncCleanupHookHandle hook;
  void (*hook_done)(void*) = nullptr;
  void* hook_done_arg = nullptr;
  int fd = -1;
  bool drain = false;
  bool closed = false;         // close() called, or closed by the cleanup hook
  bool handle_closed = false;  // libuv ran the close callback
  bool js_dead = false;        // the JS object was collected
  bool hook_started = false;   // the environment is being torn down
};

PollerState* Unwrap(const FunctionCallbackInfo<Value>& info) {
  // The Signature guarantees the receiver was made by our constructor.
  return static_cast<PollerState*>(info.This()->GetAlignedPointerFromInternalField(0));
}

void OnWeak(const WeakCallbackInfo<PollerState>& data) {
  PollerState* s = data.GetParameter();
  s->self.Reset();
  s->js_dead = true;
  if (s->handle_closed) delete s;
}

void OnHandleClosed(uv_handle_t* handle) {
  auto* s = static_cast<PollerState*>(handle->data);
  delete reinterpret_cast<uv_poll_t*>(handle);
  s->handle = nullptr;
  s->handle_closed = true;
  if (s->hook_started) {
    // Environment teardown: no JS will run again here. Detach the object
    // (if it still exists) from the state, free the state, then let Node go on.
    void (*done)(void*) = s->hook_done;
    void* done_arg = s->hook_done_arg;
    if (!s->js_dead) {
      HandleScope scope(s->isolate);
      s->self.Get(s->isolate)->SetAlignedPointerInInternalField(0, nullptr);
      s->self.Reset();
    }
    delete s;
    done(done_arg);
    return;
  }
  node::RemoveEnvironmentCleanupHook(std::move(s->hook));
  if (s->js_dead) delete s;
}

void DoClose(PollerState* s) {
  if (s->closed) return;
  s->closed = true;
  uv_close(reinterpret_cast<uv_handle_t*>(s->handle), OnHandleClosed);
  s->callback.Reset();
  s->context.Reset();
  s->self.SetWeak(s, OnWeak, WeakCallbackType::kParameter);
}

void OnCleanup(void* arg, void (*done)(void*), void* done_arg) {
  auto* s = static_cast<PollerState*>(arg);
  s->hook_started = true;
  s->hook_done = done;
  s->hook_done_arg = done_arg;
  DoClose(s);  // no-op if already closing; OnHandleClosed calls done
}

void OnPoll(uv_poll_t* handle, int status, int events) {
  auto* s = static_cast<PollerState*>(handle->data);
  if (s->closed) return;
  Isolate* isolate = s->isolate;
  HandleScope scope(isolate);
  Local<Context> context = s->context.Get(isolate);
  Context::Scope context_scope(context);
  int result = status < 0 ? status : events;
  double value = 0;
  if (status >= 0 && s->drain && (events & UV_READABLE) != 0) {
    uint64_t counter = 0;
    ssize_t n;
    do {
      n = read(s->fd, &counter, sizeof counter);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof counter)) {
      value = counter > 9007199254740991ULL ? kMaxSafeInteger : static_cast<double>(counter);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      result = -errno;
    } else if (n >= 0) {
      result = -EINVAL;  // short read: not an eventfd
    }
  }
  Local<Value> argv[2] = {Integer::New(isolate, result), Number::New(isolate, value)};
  Local<Object> recv = s->self.Get(isolate);
  Local<Function> fn = s->callback.Get(isolate);
  // MakeCallback runs the callback in a callback scope: process.nextTick
  // callbacks and microtasks queued by it run before control returns to libuv,
  // and an exception goes to 'uncaughtException' like any other callback's.
  static_cast<void>(node::MakeCallback(isolate, recv, fn, 2, argv, node::async_context{0, 0}).IsEmpty());
}

void New(const FunctionCallbackInfo<Value>& info) {
  Isolate* isolate = info.GetIsolate();
  if (!info.IsConstructCall()) {
    ThrowTypeError(isolate, "Class constructor Poller cannot be invoked without 'new'");
    return;
  }
  Args args(info, "Poller");
  int fd;
  Local<Function> callback;
  bool drain = false;
  if (!args.Fd(0, "fd", &fd) || !args.Function(1, "callback", &callback)) return;
  if (!args.Missing(2) && !args.Bool(2, "drainEventfd", &drain)) return;
  uv_loop_t* loop = node::GetCurrentEventLoop(isolate);
  if (loop == nullptr) {
    ThrowErrno(isolate, ENXIO, "uv_poll_init");
    return;
  }
  auto* handle = new uv_poll_t;
  // uv_poll_init also sets O_NONBLOCK on fd. On failure the handle was not
  // registered with the loop, so it can be freed right away.
  int r = uv_poll_init(loop, handle, fd);
  if (r != 0) {
    delete handle;
    ThrowErrno(isolate, -r, "uv_poll_init");
    return;
  }
  auto* s = new PollerState;
  s->isolate = isolate;
  s->handle = handle;
  s->fd = fd;
  s->drain = drain;
  handle->data = s;
  Local<Object> self = info.This();
  self->SetAlignedPointerInInternalField(0, s);
  s->self.Reset(isolate, self);
  s->callback.Reset(isolate, callback);
  s->context.Reset(isolate, isolate->GetCurrentContext());
  s->hook = node::AddEnvironmentCleanupHook(isolate, OnCleanup, s);
}

void ThrowClosed(Isolate* isolate, const char* method) {
  ThrowCoded(isolate, "ERR_POLLER_CLOSED", EBADF, method, "the poller is closed");
}

void Start(const FunctionCallbackInfo<Value>& info) {
  PollerState* s = Unwrap(info);
  Args args(info, "Poller.start");
  double events;
  if (!args.Integer(0, "events", 0, kAllEvents, &events)) return;  // any mix of POLL_* bits
  if (s == nullptr || s->closed) return ThrowClosed(info.GetIsolate(), "uv_poll_start");
  int r = uv_poll_start(s->handle, static_cast<int>(events), OnPoll);
  if (r != 0) ThrowErrno(info.GetIsolate(), -r, "uv_poll_start");
}

void Stop(const FunctionCallbackInfo<Value>& info) {
  PollerState* s = Unwrap(info);
  if (s == nullptr || s->closed) return;
  uv_poll_stop(s->handle);
}

void Close(const FunctionCallbackInfo<Value>& info) {
  PollerState* s = Unwrap(info);
  if (s != nullptr) DoClose(s);
}

void Ref(const FunctionCallbackInfo<Value>& info) {
  PollerState* s = Unwrap(info);
  if (s != nullptr && !s->closed) uv_ref(reinterpret_cast<uv_handle_t*>(s->handle));
}

void Unref(const FunctionCallbackInfo<Value>& info) {
  PollerState* s = Unwrap(info);
  if (s != nullptr && !s->closed) uv_unref(reinterpret_cast<uv_handle_t*>(s->handle));
}

void Closed(const FunctionCallbackInfo<Value>& info) {
  PollerState* s = Unwrap(info);
  info.GetReturnValue().Set(s == nullptr || s->closed);
}

void Fd(const FunctionCallbackInfo<Value>& info) {
  PollerState* s = Unwrap(info);
  info.GetReturnValue().Set(s == nullptr ? -1 : s->fd);
}

}  // namespace

void InitPoller(Local<Object> exports, Local<Context> context) {
  Isolate* isolate = context->GetIsolate();
  Local<FunctionTemplate> tpl = FunctionTemplate::New(isolate, New);
  Local<String> name = String::NewFromUtf8Literal(isolate, "Poller");
  tpl->SetClassName(name);
  tpl->InstanceTemplate()->SetInternalFieldCount(1);
  Local<Signature> signature = Signature::New(isolate, tpl);
  auto method = [&](const char* method_name, v8::FunctionCallback cb) {
    Local<FunctionTemplate> m = FunctionTemplate::New(isolate, cb, Local<Value>(), signature, 0);
    tpl->PrototypeTemplate()->Set(String::NewFromUtf8(isolate, method_name).ToLocalChecked(), m);
  };
  method("start", Start);
  method("stop", Stop);
  method("close", Close);
  method("ref", Ref);
  method("unref", Unref);
  auto getter = [&](const char* prop, v8::FunctionCallback cb) {
    Local<FunctionTemplate> g = FunctionTemplate::New(isolate, cb, Local<Value>(), signature, 0);
    tpl->PrototypeTemplate()->SetAccessorProperty(String::NewFromUtf8(isolate, prop).ToLocalChecked(), g);
  };
  getter("closed", Closed);
  getter("fd", Fd);
  SetProperty(context, exports, "Poller", tpl->GetFunction(context).ToLocalChecked());
}

}  // namespace vhost_native

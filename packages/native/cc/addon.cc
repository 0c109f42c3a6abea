// Placeholder: replaced by the native layer implementation.
#include <node.h>
NODE_MODULE_INIT(/* exports, module, context */) {}

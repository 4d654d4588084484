// oneDNN convolutions as XLA FFI handlers, for benchmarks/onednn_conv.py: the forward, the
// backward to the data and the backward to the weights of a 2-D convolution on NHWC
// activations and HWIO kernels (the layouts nnx.Conv uses), no dilation, no groups, float32
// or bfloat16 in and out. Built by onednn_conv.py with g++ against the pip package
// onednn-devel-cpu-gomp (the `bench` extra).
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution: x [n, h, w, c], kernel [kh, kw, c, o], y [n, oh, ow, o].
struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow;
  memory::dims strides, pad_lo, pad_hi;
  memory::data_type type;

  std::string Key(char kind) const {
    std::string key(1, kind);
    for (int64_t v : {n, h, w, c, kh, kw, o, strides[0], strides[1], pad_lo[0], pad_lo[1],
                      pad_hi[0], pad_hi[1], static_cast<int64_t>(type)}) {
      key += "," + std::to_string(v);
    }
    return key;
  }
  memory::desc Src() const { return {{n, c, h, w}, type, memory::format_tag::nhwc}; }
  memory::desc Wei() const { return {{o, c, kh, kw}, type, memory::format_tag::hwio}; }
  memory::desc Dst() const { return {{n, o, oh, ow}, type, memory::format_tag::nhwc}; }
};

Geometry MakeGeometry(const int64_t* x, const int64_t* k, bool bf16, int64_t sh, int64_t sw,
                      int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  Geometry g;
  g.n = x[0], g.h = x[1], g.w = x[2], g.c = x[3];
  g.kh = k[0], g.kw = k[1], g.o = k[3];
  g.oh = (g.h + pt + pb - g.kh) / sh + 1;
  g.ow = (g.w + pl + pr - g.kw) / sw + 1;
  g.strides = {sh, sw}, g.pad_lo = {pt, pl}, g.pad_hi = {pb, pr};
  g.type = bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  return g;
}

// Every execution brings its own scratchpad: with the library-managed one the first jitted
// layer crashed (a segfault in im2col, 2026-12-03).
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g) {
  return {Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
          g.Src(), g.Wei(), g.Dst(), g.strides, g.pad_lo, g.pad_hi, UserScratchpad()};
}

dnnl::primitive_desc MakePd(char kind, const Geometry& g) {
  if (kind == 'f') return ForwardPd(g);
  if (kind == 'd') {
    return dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.Wei(), g.Dst(), g.strides,
        g.pad_lo, g.pad_hi, ForwardPd(g), UserScratchpad());
  }
  return dnnl::convolution_backward_weights::primitive_desc(
      Engine(), dnnl::algorithm::convolution_direct, g.Src(), g.Wei(), g.Dst(), g.strides,
      g.pad_lo, g.pad_hi, ForwardPd(g), UserScratchpad());
}

struct Cached {
  dnnl::primitive primitive;
  memory::desc scratchpad;
};

// Building a primitive searches oneDNN's implementations: once per geometry and kind.
Cached Lookup(char kind, const Geometry& g) {
  static std::mutex mutex;
  static std::map<std::string, Cached> cache;
  std::lock_guard<std::mutex> lock(mutex);
  std::string key = g.Key(kind);
  auto it = cache.find(key);
  if (it == cache.end()) {
    dnnl::primitive_desc pd = MakePd(kind, g);
    it = cache.emplace(key, Cached{dnnl::primitive(pd), pd.scratchpad_desc()}).first;
  }
  return it->second;
}

// kind 'f': a = x, b = kernel, out = y. 'd': a = dy, b = kernel, out = dx.
// 'w': a = x, b = dy, out = dkernel.
ffi::Error Execute(char kind, const Geometry& g, void* a, void* b, void* out) {
  try {
    Cached c = Lookup(kind, g);
    const dnnl::engine& e = Engine();
    std::unordered_map<int, memory> args{{DNNL_ARG_SCRATCHPAD, memory(c.scratchpad, e)}};
    if (kind == 'f') {
      args.insert({{DNNL_ARG_SRC, memory(g.Src(), e, a)},
                   {DNNL_ARG_WEIGHTS, memory(g.Wei(), e, b)},
                   {DNNL_ARG_DST, memory(g.Dst(), e, out)}});
    } else if (kind == 'd') {
      args.insert({{DNNL_ARG_DIFF_DST, memory(g.Dst(), e, a)},
                   {DNNL_ARG_WEIGHTS, memory(g.Wei(), e, b)},
                   {DNNL_ARG_DIFF_SRC, memory(g.Src(), e, out)}});
    } else {
      args.insert({{DNNL_ARG_SRC, memory(g.Src(), e, a)},
                   {DNNL_ARG_DIFF_DST, memory(g.Dst(), e, b)},
                   {DNNL_ARG_DIFF_WEIGHTS, memory(g.Wei(), e, out)}});
    }
    dnnl::stream stream(e);
    c.primitive.execute(stream, args);
    stream.wait();
    return ffi::Error::Success();
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + err.what());
  }
}

bool IsBf16(const ffi::AnyBuffer& b) { return b.element_type() == ffi::DataType::BF16; }

}  // namespace

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> y, int64_t sh,
                   int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  Geometry g = MakeGeometry(x.dimensions().begin(), k.dimensions().begin(), IsBf16(x), sh, sw,
                            pt, pb, pl, pr);
  return Execute('f', g, x.untyped_data(), k.untyped_data(), y->untyped_data());
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> dx,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  Geometry g = MakeGeometry(dx->dimensions().begin(), k.dimensions().begin(), IsBf16(dy), sh,
                            sw, pt, pb, pl, pr);
  return Execute('d', g, dy.untyped_data(), k.untyped_data(), dx->untyped_data());
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dk,
                           int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                           int64_t pr) {
  Geometry g = MakeGeometry(x.dimensions().begin(), dk->dimensions().begin(), IsBf16(x), sh, sw,
                            pt, pb, pl, pr);
  return Execute('w', g, x.untyped_data(), dy.untyped_data(), dk->untyped_data());
}

#define CONV_BINDING                                                                       \
  ffi::Ffi::Bind()                                                                         \
      .Arg<ffi::AnyBuffer>()                                                               \
      .Arg<ffi::AnyBuffer>()                                                               \
      .Ret<ffi::AnyBuffer>()                                                               \
      .Attr<int64_t>("sh")                                                                 \
      .Attr<int64_t>("sw")                                                                 \
      .Attr<int64_t>("pt")                                                                 \
      .Attr<int64_t>("pb")                                                                 \
      .Attr<int64_t>("pl")                                                                 \
      .Attr<int64_t>("pr")

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, Forward, CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardData, BackwardData, CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardWeights, BackwardWeights, CONV_BINDING);

// The implementation oneDNN chooses for one convolution (e.g. "brg:avx512_core_amx",
// "gemm:jit"), or "unimplemented: <why>"; written into out (a C string of at most size bytes).
extern "C" void OnednnConvImpl(char kind, const int64_t* x_shape, const int64_t* k_shape,
                               int bf16, const int64_t* strides_pads, char* out, int size) {
  const int64_t* s = strides_pads;
  std::string text;
  try {
    text = MakePd(kind, MakeGeometry(x_shape, k_shape, bf16, s[0], s[1], s[2], s[3], s[4], s[5]))
               .impl_info_str();
  } catch (const dnnl::error& err) {
    text = std::string("unimplemented: ") + err.what();
  }
  std::strncpy(out, text.c_str(), size - 1);
  out[size - 1] = '\0';
}

// 2-D convolution and its two gradients as XLA FFI custom calls into oneDNN, for the CPU backend.
//
// Why: XLA's CPU convolution (Eigen) is fast forward but slow for the weight gradient, and runs
// bfloat16 at float32 speed; oneDNN, the library PyTorch uses on CPU, does both well. Layouts are
// XLA's defaults: activations NHWC, kernels HWIO (Flax's), so no transposes are needed around the call.
//
// Each primitive is built once per (operation, dtype, shapes, strides, padding) and cached: building
// one JIT-compiles a kernel (milliseconds), running it is the convolution only.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum class Op { kForward, kBackwardData, kBackwardWeights };
enum Activation : int64_t { kNone = 0, kLeaky = 1, kPrelu = 2 };

struct Geometry {
  int64_t n, h, w, c_in;     // input (N, H, W, C_in)
  int64_t kh, kw, c_out;     // kernel (KH, KW, C_in, C_out)
  int64_t oh, ow;            // output spatial size
  int64_t stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right;
  bool bias;                 // forward adds a bias; the weight gradient also gives the bias gradient
  // Forward only: an activation applied to the result in the same pass, y = z > 0 ? z : slope * z,
  // with the slope fixed (kLeaky: ReLU at 0) or a runtime operand (kPrelu). The gradients never fuse
  // it (the Python side applies its derivative), so they ignore both fields.
  int64_t activation = 0;  // Activation below
  float negative_slope = 0.0f;

  auto Key() const {
    return std::make_tuple(n, h, w, c_in, kh, kw, c_out, oh, ow, stride_h, stride_w, pad_top,
                           pad_bottom, pad_left, pad_right, bias, activation, negative_slope);
  }
};

using Tag = dnnl::memory::format_tag;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A primitive with its memory descriptors: `plain_*` are the layouts XLA hands us, `*_md` those the
// primitive chose (format_tag::any), which may be blocked; reorders bridge the two where they differ.
struct Prepared {
  dnnl::primitive primitive;
  dnnl::memory::desc plain_a, plain_b, plain_out;  // the op's two inputs and its output, as XLA lays them
  dnnl::memory::desc a_md, b_md, out_md;           // as the primitive wants them
  int a_arg, b_arg, out_arg;
  dnnl::memory::desc bias_md;                      // 1-D; empty without a bias
  int bias_arg = 0;                                // the bias (forward) or its gradient (weights)
  dnnl::memory::desc slope_md;                     // kPrelu's one float32 slope; empty otherwise
};

struct Descs {
  dnnl::memory::desc src, weights, dst, bias;
};

Descs PlainDescs(const Geometry& g, dnnl::memory::data_type dt) {
  return {dnnl::memory::desc({g.n, g.c_in, g.h, g.w}, dt, Tag::nhwc),
          dnnl::memory::desc({g.c_out, g.c_in, g.kh, g.kw}, dt, Tag::hwio),
          dnnl::memory::desc({g.n, g.c_out, g.oh, g.ow}, dt, Tag::nhwc),
          g.bias ? dnnl::memory::desc({g.c_out}, dt, Tag::a) : dnnl::memory::desc()};
}

// The kernel in whatever layout the primitive prefers (it is small: reordering it per call is cheap).
dnnl::memory::desc AnyLayoutWeights(const Geometry& g, dnnl::memory::data_type dt) {
  return dnnl::memory::desc({g.c_out, g.c_in, g.kh, g.kw}, dt, Tag::any);
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g, const Descs& d,
                                                      bool with_activation) {
  dnnl::primitive_attr attr;
  if (with_activation && g.activation != kNone) {
    dnnl::post_ops post_ops;
    if (g.activation == kPrelu) {
      post_ops.append_prelu(0);  // mask 0: one slope for every channel, given at execution
    } else {
      post_ops.append_eltwise(dnnl::algorithm::eltwise_relu, g.negative_slope, 0.0f);
    }
    attr.set_post_ops(post_ops);
  }
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, d.src,
      d.weights, d.bias, d.dst, {g.stride_h, g.stride_w}, {g.pad_top, g.pad_left},
      {g.pad_bottom, g.pad_right}, attr);
}

constexpr int kSlopeArg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_WEIGHTS;

Prepared Build(Op op, const Geometry& g, dnnl::memory::data_type dt) {
  const Descs plain = PlainDescs(g, dt);
  // Activations stay in XLA's NHWC (oneDNN has fast NHWC kernels, and reordering whole activations
  // twice per call costs more than it saves); only the small kernel may take a blocked layout.
  const Descs chosen{plain.src, AnyLayoutWeights(g, dt), plain.dst, plain.bias};
  auto forward = ForwardDesc(g, chosen, false);  // the gradients' hint: the convolution alone
  switch (op) {
    case Op::kForward: {
      auto fused = ForwardDesc(g, chosen, true);
      return {dnnl::convolution_forward(fused), plain.src, plain.weights, plain.dst,
              fused.src_desc(), fused.weights_desc(), fused.dst_desc(),
              DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, plain.bias, g.bias ? DNNL_ARG_BIAS : 0,
              g.activation == kPrelu ? fused.query_md(dnnl::query::exec_arg_md, kSlopeArg)
                                     : dnnl::memory::desc()};
    }
    case Op::kBackwardData: {
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, chosen.src, chosen.weights, chosen.dst,
          {g.stride_h, g.stride_w}, {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right}, forward);
      return {dnnl::convolution_backward_data(pd), plain.dst, plain.weights, plain.src,
              pd.diff_dst_desc(), pd.weights_desc(), pd.diff_src_desc(),
              DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC, dnnl::memory::desc(), 0};
    }
    case Op::kBackwardWeights: {
      // The bias gradient is a sum over every output pixel: accumulated and returned in float32
      // (bfloat16 accumulation was seen 7% off), as XLA's own reduction does.
      const dnnl::memory::desc diff_bias =
          g.bias ? dnnl::memory::desc({g.c_out}, dnnl::memory::data_type::f32, Tag::a) : plain.bias;
      dnnl::convolution_backward_weights::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, chosen.src, chosen.weights, diff_bias,
          chosen.dst, {g.stride_h, g.stride_w}, {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right},
          forward);
      return {dnnl::convolution_backward_weights(pd), plain.src, plain.dst, plain.weights,
              pd.src_desc(), pd.diff_dst_desc(), pd.diff_weights_desc(),
              DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, diff_bias,
              g.bias ? DNNL_ARG_DIFF_BIAS : 0};
    }
  }
  throw std::logic_error("unknown convolution op");
}

// oneDNN's reference kernels ("ref:any") are plain loops, 100-1000x slower than its JIT kernels; a
// shape or layout that only they cover must stay with XLA (JaxcarConvIsFast below).
bool IsReference(const dnnl::primitive& primitive) {
  const char* impl = nullptr;
  dnnl_primitive_desc_query(primitive.get_primitive_desc(), dnnl_query_impl_info_str, 0, &impl);
  return impl == nullptr || std::string(impl).rfind("ref", 0) == 0;
}

const Prepared& Cached(Op op, const Geometry& g, dnnl::memory::data_type dt) {
  using Key = decltype(std::tuple_cat(std::make_tuple(op, dt), g.Key()));
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Prepared>> cache;
  const Key key = std::tuple_cat(std::make_tuple(op, dt), g.Key());
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[key];
  if (!slot) slot = std::make_unique<Prepared>(Build(op, g, dt));
  return *slot;
}

// Wraps `data` (laid out as `plain`) for the primitive, reordering into `wanted` if they differ.
dnnl::memory Input(const dnnl::memory::desc& plain, const dnnl::memory::desc& wanted, void* data,
                   dnnl::stream& stream) {
  dnnl::memory user(plain, Engine(), data);
  if (plain == wanted) return user;
  dnnl::memory converted(wanted, Engine());
  dnnl::reorder(user, converted).execute(stream, user, converted);
  return converted;
}

// `bias` is the forward's bias or the weight gradient's bias gradient (nullptr without one); `slope`
// kPrelu's float32 slope.
ffi::Error Run(Op op, const Geometry& g, ffi::DataType dtype, void* a, void* b, void* out,
               void* bias = nullptr, void* slope = nullptr) {
  dnnl::memory::data_type dt;
  if (dtype == ffi::DataType::F32) {
    dt = dnnl::memory::data_type::f32;
  } else if (dtype == ffi::DataType::BF16) {
    dt = dnnl::memory::data_type::bf16;
  } else {
    return ffi::Error::InvalidArgument("jaxcar oneDNN convolution: only float32 and bfloat16");
  }
  // One convolution at a time: XLA may run independent custom calls on several of its threads, and
  // oneDNN's kernels split each call over all cores with spinning barriers; two calls at once
  // oversubscribe the cores and were seen to livelock in those barriers (QCN with 16 blocks).
  static std::mutex one_at_a_time;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  try {
    const Prepared& p = Cached(op, g, dt);
    dnnl::stream stream(Engine());
    dnnl::memory a_mem = Input(p.plain_a, p.a_md, a, stream);
    dnnl::memory b_mem = Input(p.plain_b, p.b_md, b, stream);
    dnnl::memory user_out(p.plain_out, Engine(), out);
    dnnl::memory out_mem = p.plain_out == p.out_md ? user_out : dnnl::memory(p.out_md, Engine());
    std::unordered_map<int, dnnl::memory> args{{p.a_arg, a_mem}, {p.b_arg, b_mem}, {p.out_arg, out_mem}};
    if (p.bias_arg) args.emplace(p.bias_arg, dnnl::memory(p.bias_md, Engine(), bias));
    if (slope) args.emplace(kSlopeArg, dnnl::memory(p.slope_md, Engine(), slope));
    p.primitive.execute(stream, args);
    if (out_mem != user_out) dnnl::reorder(out_mem, user_out).execute(stream, out_mem, user_out);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("jaxcar oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

// Shapes come from the buffers; which buffer holds what depends on the op.
Geometry Make(ffi::AnyBuffer::Dimensions input, ffi::AnyBuffer::Dimensions kernel,
              ffi::AnyBuffer::Dimensions output, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
              int64_t pl, int64_t pr, bool bias) {
  return {input[0], input[1], input[2], input[3], kernel[0], kernel[1], kernel[3], output[1],
          output[2], sh, sw, pt, pb, pl, pr, bias};
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, int64_t sh,
                   int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t activation,
                   float negative_slope) {
  Geometry g = Make(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr, false);
  g.activation = activation != 0 ? kLeaky : kNone;
  g.negative_slope = negative_slope;
  return Run(Op::kForward, g, x.element_type(), x.untyped_data(), w.untyped_data(),
             y->untyped_data());
}

ffi::Error ForwardBias(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b,
                       ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, int64_t activation, float negative_slope) {
  Geometry g = Make(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr, true);
  g.activation = activation != 0 ? kLeaky : kNone;
  g.negative_slope = negative_slope;
  return Run(Op::kForward, g, x.element_type(), x.untyped_data(), w.untyped_data(),
             y->untyped_data(), b.untyped_data());
}

// The convolution, its bias and a PReLU with the float32 scalar `slope`, in one pass.
ffi::Error ForwardBiasPrelu(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b, ffi::AnyBuffer slope,
                            ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw, int64_t pt,
                            int64_t pb, int64_t pl, int64_t pr) {
  if (slope.element_type() != ffi::DataType::F32 || slope.element_count() != 1) {
    return ffi::Error::InvalidArgument("jaxcar oneDNN convolution: the PReLU slope is one float32");
  }
  Geometry g = Make(x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pb, pl, pr, true);
  g.activation = kPrelu;
  return Run(Op::kForward, g, x.element_type(), x.untyped_data(), w.untyped_data(),
             y->untyped_data(), b.untyped_data(), slope.untyped_data());
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  const Geometry g = Make(dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr, false);
  return Run(Op::kBackwardData, g, dy.element_type(), dy.untyped_data(), w.untyped_data(),
             dx->untyped_data());
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  const Geometry g = Make(x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr, false);
  return Run(Op::kBackwardWeights, g, x.element_type(), x.untyped_data(), dy.untyped_data(),
             dw->untyped_data());
}

ffi::Error BackwardWeightsBias(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                               ffi::Result<ffi::AnyBuffer> db, int64_t sh, int64_t sw, int64_t pt,
                               int64_t pb, int64_t pl, int64_t pr) {
  const Geometry g = Make(x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt, pb, pl, pr, true);
  return Run(Op::kBackwardWeights, g, x.element_type(), x.untyped_data(), dy.untyped_data(),
             dw->untyped_data(), db->untyped_data());
}

template <typename Binding>
auto WithGeometryAttrs(Binding binding) {
  return std::move(binding).template Attr<int64_t>("stride_h")
      .template Attr<int64_t>("stride_w")
      .template Attr<int64_t>("pad_top")
      .template Attr<int64_t>("pad_bottom")
      .template Attr<int64_t>("pad_left")
      .template Attr<int64_t>("pad_right");
}

template <typename Binding>
auto WithActivationAttrs(Binding binding) {
  return std::move(binding).template Attr<int64_t>("activation").template Attr<float>("negative_slope");
}

using ffi::AnyBuffer;

}  // namespace

// For the Python side, at trace time: 1 if the forward and both gradients of this convolution get
// optimised oneDNN kernels, 0 if any would run a reference kernel, -1 if oneDNN rejects it. `geometry`
// holds the first 16 Geometry fields in order (bias as 0/1); `bf16` selects bfloat16 over float32;
// `activation` (0 none, 1 fixed slope, 2 PReLU) and `negative_slope` describe the forward's fused
// activation. Builds and caches the three primitives, so the first training step does not pay for it.
extern "C" int JaxcarConvIsFast(const int64_t* v, int bf16, int activation, float negative_slope) {
  Geometry g{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
             v[13], v[14], v[15] != 0};
  g.activation = activation;
  g.negative_slope = negative_slope;
  const auto dt = bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
  // The gradients are built and cached without the activation, which they never fuse.
  Geometry plain = g;
  plain.activation = kNone;
  plain.negative_slope = 0.0f;
  try {
    if (IsReference(Cached(Op::kForward, g, dt).primitive)) return 0;
    for (Op op : {Op::kBackwardData, Op::kBackwardWeights}) {
      if (IsReference(Cached(op, plain, dt).primitive)) return 0;
    }
  } catch (const dnnl::error&) {
    return -1;
  }
  return 1;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcarConvForward, Forward,
    WithActivationAttrs(WithGeometryAttrs(ffi::Ffi::Bind().Arg<AnyBuffer>().Arg<AnyBuffer>().Ret<AnyBuffer>())));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcarConvForwardBias, ForwardBias,
    WithActivationAttrs(WithGeometryAttrs(
        ffi::Ffi::Bind().Arg<AnyBuffer>().Arg<AnyBuffer>().Arg<AnyBuffer>().Ret<AnyBuffer>())));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcarConvForwardBiasPrelu, ForwardBiasPrelu,
    WithGeometryAttrs(ffi::Ffi::Bind().Arg<AnyBuffer>().Arg<AnyBuffer>().Arg<AnyBuffer>().Arg<AnyBuffer>()
                          .Ret<AnyBuffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcarConvBackwardData, BackwardData,
    WithGeometryAttrs(ffi::Ffi::Bind().Arg<AnyBuffer>().Arg<AnyBuffer>().Ret<AnyBuffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcarConvBackwardWeights, BackwardWeights,
    WithGeometryAttrs(ffi::Ffi::Bind().Arg<AnyBuffer>().Arg<AnyBuffer>().Ret<AnyBuffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxcarConvBackwardWeightsBias, BackwardWeightsBias,
    WithGeometryAttrs(ffi::Ffi::Bind().Arg<AnyBuffer>().Arg<AnyBuffer>().Ret<AnyBuffer>().Ret<AnyBuffer>()));

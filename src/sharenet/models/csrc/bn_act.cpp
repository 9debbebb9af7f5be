// Training-mode BatchNorm fused with an optional residual add and ReLU, for CPU tensors in
// channels_last layout (bfloat16 or float32). Built at first use by sharenet/models/fused.py.
//
// Why: on CPUs these layers are bound by memory traffic, not arithmetic. Each op reads its input
// twice (statistics, then normalise + add + ReLU) and writes its output once; the backward reads
// dy, x and y once for the two per-channel sums and once more to write dx (and the residual's
// gradient). Statistics are accumulated in fp32 over blocks of rows, folded into double, and
// taken about the first row's value, so the variance stays exact when |mean| >> std.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/cpu/vec/functional.h>
#include <c10/util/BFloat16.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kV = Vec::size();
constexpr int64_t kBlock = 128;  // rows summed in fp32 before folding into double

template <typename T> inline Vec vload(const T* p);
template <> inline Vec vload<float>(const float* p) { return Vec::loadu(p); }
template <> inline Vec vload<c10::BFloat16>(const c10::BFloat16* p) {
  return at::vec::convert<float>(at::vec::Vectorized<c10::BFloat16>::loadu(p, kV));
}
template <typename T> inline void vstore(T* p, const Vec& v);
template <> inline void vstore<float>(float* p, const Vec& v) { v.store(p); }
template <> inline void vstore<c10::BFloat16>(c10::BFloat16* p, const Vec& v) {
  at::vec::convert<c10::BFloat16>(v).store(p, kV);
}

// Per-channel sums s1 = sum_r f1(r, c), s2 = sum_r f2(r, c) over the rows of a (R, C) row-major
// view. `vf(r, c, u, v)` gives the kV lanes at channel c (c % kV == 0); `sf` one lane (the tail).
template <typename VF, typename SF>
void channel_sums(int64_t R, int64_t C, VF vf, SF sf, std::vector<double>& s1, std::vector<double>& s2) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), R / kBlock));
  const int64_t Cv = C - C % kV;
  std::vector<double> part(chunks * 2 * C, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
    std::vector<Vec> a(4 * (Cv / kV + 1));
    std::vector<float> t1(C), t2(C), buf(kV);
    for (int64_t k = b; k < e; ++k) {
      const int64_t r0 = R * k / chunks, r1 = R * (k + 1) / chunks;
      double* p1 = part.data() + k * 2 * C;
      double* p2 = p1 + C;
      for (int64_t rb = r0; rb < r1; rb += kBlock) {
        const int64_t re = std::min(rb + kBlock, r1);
        const int64_t nv = Cv / kV;
        std::fill(a.begin(), a.end(), Vec(0.f));
        std::fill(t1.begin(), t1.end(), 0.f);
        std::fill(t2.begin(), t2.end(), 0.f);
        // two interleaved accumulator sets break the add latency chain when C is small
        int64_t r = rb;
        for (; r + 1 < re; r += 2) {
          for (int64_t j = 0; j < nv; ++j) {
            Vec u0, v0, u1, v1;
            vf(r, j * kV, u0, v0);
            vf(r + 1, j * kV, u1, v1);
            a[4 * j] += u0; a[4 * j + 1] += v0; a[4 * j + 2] += u1; a[4 * j + 3] += v1;
          }
        }
        for (; r < re; ++r)
          for (int64_t j = 0; j < nv; ++j) {
            Vec u0, v0;
            vf(r, j * kV, u0, v0);
            a[4 * j] += u0; a[4 * j + 1] += v0;
          }
        for (int64_t rr = rb; rr < re; ++rr)
          for (int64_t c = Cv; c < C; ++c) {
            float u, v;
            sf(rr, c, u, v);
            t1[c] += u; t2[c] += v;
          }
        for (int64_t j = 0; j < nv; ++j) {
          (a[4 * j] + a[4 * j + 2]).store(buf.data());
          for (int64_t l = 0; l < kV; ++l) p1[j * kV + l] += buf[l];
          (a[4 * j + 1] + a[4 * j + 3]).store(buf.data());
          for (int64_t l = 0; l < kV; ++l) p2[j * kV + l] += buf[l];
        }
        for (int64_t c = Cv; c < C; ++c) { p1[c] += t1[c]; p2[c] += t2[c]; }
      }
    }
  });
  s1.assign(C, 0.0);
  s2.assign(C, 0.0);
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t c = 0; c < C; ++c) { s1[c] += part[k * 2 * C + c]; s2[c] += part[k * 2 * C + C + c]; }
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> fwd_impl(const at::Tensor& x, const T* Rs, const at::Tensor& weight,
                                                          const at::Tensor& bias, double eps, bool relu) {
  const int64_t C = x.size(1), R = x.numel() / C, Cv = C - C % kV;
  const T* X = x.const_data_ptr<T>();
  // sums of (x - K), K = the first row, keep the variance exact when |mean| >> std
  std::vector<float> K(C);
  for (int64_t c = 0; c < C; ++c) K[c] = static_cast<float>(X[c]);
  const float* Kp = K.data();
  std::vector<double> s1, s2;
  channel_sums(
      R, C,
      [&](int64_t r, int64_t c, Vec& u, Vec& v) {
        Vec d = vload(X + r * C + c) - Vec::loadu(Kp + c);
        u = d; v = d * d;
      },
      [&](int64_t r, int64_t c, float& u, float& v) {
        float d = static_cast<float>(X[r * C + c]) - Kp[c];
        u = d; v = d * d;
      },
      s1, s2);
  auto opts = weight.options().dtype(at::kFloat);
  at::Tensor mean = at::empty({C}, opts), invstd = at::empty({C}, opts);
  float* M = mean.data_ptr<float>();
  float* I = invstd.data_ptr<float>();
  const float* W = weight.const_data_ptr<float>();
  const float* B = bias.const_data_ptr<float>();
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    const double m1 = s1[c] / R, var = std::max(0.0, s2[c] / R - m1 * m1);
    M[c] = static_cast<float>(K[c] + m1);
    I[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
    scale[c] = W[c] * I[c];
    shift[c] = B[c] - M[c] * scale[c];
  }
  at::Tensor y = at::empty_like(x);
  T* Y = y.data_ptr<T>();
  const float *S = scale.data(), *H = shift.data();
  const Vec zero(0.f);
  at::parallel_for(0, R, 1024, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t o = r * C;
      for (int64_t c = 0; c < Cv; c += kV) {
        Vec v = at::vec::fmadd(vload(X + o + c), Vec::loadu(S + c), Vec::loadu(H + c));
        if (Rs) v = v + vload(Rs + o + c);
        if (relu) v = at::vec::maximum(v, zero);
        vstore(Y + o + c, v);
      }
      for (int64_t c = Cv; c < C; ++c) {
        float v = static_cast<float>(X[o + c]) * S[c] + H[c];
        if (Rs) v += static_cast<float>(Rs[o + c]);
        if (relu) v = std::max(v, 0.f);
        Y[o + c] = static_cast<T>(v);
      }
    }
  });
  return {y, mean, invstd};
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd_impl(const T* DY, const at::Tensor& x, const T* Y,
                                                                    const float* M, const float* I,
                                                                    const at::Tensor& weight, bool has_res) {
  // Y == nullptr: no ReLU, the gradient passes unmasked
  const int64_t C = x.size(1), R = x.numel() / C, Cv = C - C % kV;
  const T* X = x.const_data_ptr<T>();
  const float* W = weight.const_data_ptr<float>();
  const Vec zero(0.f);
  auto grad = [&](int64_t i) -> Vec {
    Vec g = vload(DY + i);
    return Y ? Vec::blendv(zero, g, vload(Y + i) > zero) : g;
  };
  auto grad1 = [&](int64_t i) -> float {
    float g = static_cast<float>(DY[i]);
    return (!Y || static_cast<float>(Y[i]) > 0.f) ? g : 0.f;
  };
  std::vector<double> sg, sgx;
  channel_sums(
      R, C,
      [&](int64_t r, int64_t c, Vec& u, Vec& v) {
        Vec g = grad(r * C + c);
        u = g; v = g * (vload(X + r * C + c) - Vec::loadu(M + c));
      },
      [&](int64_t r, int64_t c, float& u, float& v) {
        float g = grad1(r * C + c);
        u = g; v = g * (static_cast<float>(X[r * C + c]) - M[c]);
      },
      sg, sgx);
  auto opts = weight.options().dtype(at::kFloat);
  at::Tensor dw = at::empty({C}, opts), db = at::empty({C}, opts);
  float* DW = dw.data_ptr<float>();
  float* DB = db.data_ptr<float>();
  // dx = W I (g - sum(g)/R - (x - M) I^2 sum(g (x - M))/R)
  std::vector<float> a(C), bc(C), kc(C);
  for (int64_t c = 0; c < C; ++c) {
    DB[c] = static_cast<float>(sg[c]);
    DW[c] = static_cast<float>(sgx[c] * I[c]);
    a[c] = W[c] * I[c];
    bc[c] = static_cast<float>(sg[c] / R);
    kc[c] = static_cast<float>(static_cast<double>(I[c]) * I[c] * sgx[c] / R);
  }
  at::Tensor dx = at::empty_like(x);
  at::Tensor dr = has_res ? at::empty_like(x) : at::empty({0}, x.options());
  T* DX = dx.data_ptr<T>();
  T* DR = has_res ? dr.data_ptr<T>() : nullptr;
  const float *A = a.data(), *Bc = bc.data(), *Kc = kc.data();
  at::parallel_for(0, R, 1024, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t o = r * C;
      for (int64_t c = 0; c < Cv; c += kV) {
        Vec g = grad(o + c);
        Vec xc = vload(X + o + c) - Vec::loadu(M + c);
        vstore(DX + o + c, Vec::loadu(A + c) * (g - Vec::loadu(Bc + c) - xc * Vec::loadu(Kc + c)));
        if (DR) vstore(DR + o + c, g);
      }
      for (int64_t c = Cv; c < C; ++c) {
        float g = grad1(o + c);
        DX[o + c] = static_cast<T>(A[c] * (g - Bc[c] - (static_cast<float>(X[o + c]) - M[c]) * Kc[c]));
        if (DR) DR[o + c] = static_cast<T>(g);
      }
    }
  });
  return {dx, dw, db, dr};
}

void check_layout(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast), name,
              " must be a 4-D channels_last tensor");
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kFloat, name, " must be bfloat16 or float32");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_act_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& res,
                                                          const at::Tensor& weight, const at::Tensor& bias, double eps,
                                                          bool relu) {
  check_layout(x, "x");
  if (res.has_value()) {
    check_layout(*res, "residual");
    TORCH_CHECK(res->sizes() == x.sizes() && res->scalar_type() == x.scalar_type(), "residual must match x");
  }
  TORCH_CHECK(weight.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat, "weight and bias must be float32");
  const at::Tensor w = weight.contiguous(), b = bias.contiguous();
  if (x.scalar_type() == at::kBFloat16)
    return fwd_impl<c10::BFloat16>(x, res ? res->const_data_ptr<c10::BFloat16>() : nullptr, w, b, eps, relu);
  return fwd_impl<float>(x, res ? res->const_data_ptr<float>() : nullptr, w, b, eps, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_act_bwd(const at::Tensor& dy, const at::Tensor& x,
                                                                      const at::Tensor& y, const at::Tensor& mean,
                                                                      const at::Tensor& invstd, const at::Tensor& weight,
                                                                      bool relu, bool has_residual) {
  check_layout(x, "x");
  check_layout(y, "y");
  const at::Tensor g = dy.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor m = mean.contiguous(), i = invstd.contiguous(), w = weight.contiguous();
  if (x.scalar_type() == at::kBFloat16)
    return bwd_impl<c10::BFloat16>(g.const_data_ptr<c10::BFloat16>(), x,
                                   relu ? y.const_data_ptr<c10::BFloat16>() : nullptr, m.const_data_ptr<float>(),
                                   i.const_data_ptr<float>(), w, has_residual);
  return bwd_impl<float>(g.const_data_ptr<float>(), x, relu ? y.const_data_ptr<float>() : nullptr,
                         m.const_data_ptr<float>(), i.const_data_ptr<float>(), w, has_residual);
}

}  // namespace

TORCH_LIBRARY(sharenet_cpu, m) {
  m.def("bn_act_fwd(Tensor x, Tensor? residual, Tensor weight, Tensor bias, float eps, bool relu) -> (Tensor, Tensor, Tensor)");
  m.def("bn_act_bwd(Tensor dy, Tensor x, Tensor y, Tensor mean, Tensor invstd, Tensor weight, bool relu, bool has_residual) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sharenet_cpu, CPU, m) {
  m.impl("bn_act_fwd", &bn_act_fwd);
  m.impl("bn_act_bwd", &bn_act_bwd);
}

// The CPU core's operations (api.hpp), compiled once for float and double: the bindings see only
// their declarations.
#include "vsfast/api.hpp"

#include "vsfast/blocks.hpp"
#include "vsfast/box.hpp"
#include "vsfast/chain.hpp"
#include "vsfast/newton.hpp"
#include "vsfast/pinv.hpp"
#include "vsfast/project.hpp"
#include "vsfast/rsvd.hpp"
#include "vsfast/svd.hpp"

namespace vsfast {

#define VSFAST_INSTANTIATE(T)                                                                                     \
  template void rsvd<T>(const T*, std::size_t, std::size_t, std::size_t, const RsvdParams&, T*, T*, T*);          \
  template void svd<T>(const T*, std::size_t, std::size_t, std::size_t, T*, T*, T*);                              \
  template void svdvals<T>(const T*, std::size_t, std::size_t, std::size_t, T*);                                  \
  template void pinv<T>(const T*, std::size_t, std::size_t, std::size_t, std::optional<double>,                   \
                        std::optional<double>, bool, T*, std::int64_t*, T*);                                      \
  template void rank<T>(const T*, std::size_t, std::size_t, std::size_t, std::size_t, std::optional<double>,      \
                        std::optional<double>, std::int64_t*);                                                    \
  template void project<T>(const T*, std::size_t, std::size_t, const T*, std::size_t, T*, T*);                    \
  template void complement<T>(const T*, std::size_t, std::size_t, std::size_t, T*);                               \
  template void sketch<T>(std::size_t, std::size_t, const RsvdParams&, T*);                                     \
  template double block_largest<T>(const T*, std::size_t, const std::string&);                                  \
  template void block_range<T>(const T*, std::size_t, std::size_t, bool, const T*, std::size_t, int, T*, T*);   \
  template void block_corange<T>(const T*, std::size_t, std::size_t, bool, const T*, std::size_t, int, T*);     \
  template int block_exponent<T>(double);                                                                       \
  template bool cholesky_factor<T>(const T*, std::size_t, bool, T*);                                            \
  template void solve_factor<T>(T*, std::size_t, std::size_t, const T*, T*);                                    \
  template void householder_qr<T>(T*, std::size_t, std::size_t, T*);                                            \
  template class Chain<T>;                                                                                        \
  template std::vector<std::size_t> reconstruct<T>(const Chain<T>&, const T*, std::size_t, const T*, std::size_t, \
                                                   bool, T*);                                                     \
  template void forward<T>(const Chain<T>&, const T*, std::size_t, T*);                                           \
  template void solve<T>(const Chain<T>&, const T*, std::size_t, const T*, std::size_t, bool, double,             \
                         std::size_t, T*, std::int64_t*, double*);                                                \
  template void solve_box<T>(const Chain<T>&, const T*, std::size_t, const T*, std::size_t, double, double,       \
                             double, std::size_t, T*, std::int64_t*, double*, double*);
VSFAST_INSTANTIATE(float)
VSFAST_INSTANTIATE(double)
#undef VSFAST_INSTANTIATE

bool rsvd_bfloat16_available() { return bf16_supported(); }

void svdvals_gram(const float* a, std::size_t batch, std::size_t m, std::size_t n, float* s) {
  const std::size_t q = std::min(m, n);
  require_finite(a, batch * m * n, "A");
  parallel_for(batch, batch_workers(batch), [&](std::size_t b) {
    std::vector<double> gram, panel;
    svdvals_gram_rowmajor(a + b * m * n, m, n, s + b * q, gram, panel);
  });
  require_representable(s, batch * q, "A's largest singular value");
}

}  // namespace vsfast

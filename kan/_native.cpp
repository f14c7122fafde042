// CPU kernels of the fast B-spline KAN (kan/fast.py), built and loaded by kan/native.py.
//
// For each input x[b, i] only the spline_order + 1 B-spline bases that are non-zero
// there (the "local" bases) are evaluated, with the formulas of
// kan.fast.local_b_splines:
//
//   knot span m with t_m <= x < t_(m+1), in [-1, knots - 1]: on a uniform grid a floor
//   of the knot coordinate corrected against the stored knots, else a binary search;
//   bases m - k .. m: on a cardinal grid (uniform to the dtype's rounding, see
//   kan.fast.is_cardinal) the cardinal recursion in u = (x - t_m) / (t_(m+1) - t_m), from
//   the stored knots; else de Boor's triangle over the stored knots around the span (on
//   a uniform grid that is not cardinal, vectorised, after the floor's span); a basis
//   whose index is outside [0, coeff) does not exist and gets value and slope 0.
//
// The layer's spline and base weights form one table (in, coeff + 1, out): feature
// i's coeff coefficient rows, then its base-weight row. With base[b, i] the base
// activation of x[b, i]:
//
//   forward     out[b, :]            = sum_i ( sum_d value[b, i, d] * table[i, first + d, :]
//                                              + base[b, i] * table[i, coeff, :] )
//   table grad  grad_table[i, c, :]  = the same sums with grad_out[b, :] in place of table rows
//   input grad  grad_x[b, i]         = sum_d slope[b, i, d] * <grad_out[b, :], table[i, first + d, :]>
//               grad_base[b, i]      = <grad_out[b, :], table[i, coeff, :]>   (the caller applies act')
//
// without forming the (batch, in, coeff) basis. Features go in blocks whose table rows
// fit in a core's cache while the samples stream past them; rows of out go in chunks of
// vector registers. Threads: OpenMP, with the caller's count (torch.get_num_threads());
// each output element is written by one thread only, so results do not depend on it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

constexpr int kMaxOrder = 7;

constexpr int kSharedKnots = 16;

template <typename T>
struct Geometry {
    int64_t in_features;
    int order;
    int64_t coeff;
    int64_t knots;
    const T* knots_ext;     // (in, knots + 2): -inf, t_0 .. t_(knots - 1), +inf
    const T* knots_padded;  // (in, knots + 2 * order): order extrapolated knots each side
    const T* origin;        // (in,) first knot, uniform grids only (else null)
    const T* inv_step;      // (in,) reciprocal mean knot step, uniform grids only (else null)
    // Whether the cardinal recursion gives the B-splines of these knots (a uniform grid whose
    // steps differ by rounding only); else de Boor's triangle over the stored knots.
    bool cardinal;
    // Whether every feature has feature 0's knots_ext row, and it has at most kSharedKnots
    // entries: then shared_knots holds it (padded), and a uniform grid's knots are looked
    // up in registers rather than gathered from memory (see knot_lookup).
    bool shared = false;
    T shared_knots[kSharedKnots] = {};
};

// g with `shared` and `shared_knots` filled in.
template <typename T>
Geometry<T> with_shared_knots(Geometry<T> g) {
    const int64_t row = g.knots + 2;
    if (g.origin == nullptr || row > kSharedKnots) return g;
    for (int64_t i = 1; i < g.in_features; ++i)
        for (int64_t m = 0; m < row; ++m)  // bitwise: the infinities at the ends compare equal too
            if (std::memcmp(&g.knots_ext[i * row + m], &g.knots_ext[m], sizeof(T)) != 0) return g;
    std::copy(g.knots_ext, g.knots_ext + row, g.shared_knots);
    g.shared = true;
    return g;
}

// GCC/Clang vector extensions: 32-byte vectors (AVX where the CPU has it, pairs of
// 16-byte ones elsewhere), loaded and stored unaligned.
template <typename T>
struct Simd {
    typedef T V __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));
    typedef int32_t VI __attribute__((vector_size(32 / sizeof(T) * 4)));  // as many int32 lanes
    static constexpr int lanes = 32 / sizeof(T);
    static inline V load(const T* p) { return *reinterpret_cast<const V*>(p); }
    static inline void store(T* p, V v) { *reinterpret_cast<V*>(p) = v; }
    typedef int32_t VIU __attribute__((vector_size(32 / sizeof(T) * 4), aligned(4), may_alias));
    static inline void store_index(int32_t* p, VI v) { *reinterpret_cast<VIU*>(p) = v; }
    // every lane s (a broadcast; ``V{} + s`` would cost an addition, kept for -0.0)
    template <std::size_t... l>
    static inline V splat_lanes(T s, std::index_sequence<l...>) { return V{((void)l, s)...}; }
    static inline V splat(T s) { return splat_lanes(s, std::make_index_sequence<lanes>{}); }
    // lanes [0, count) of p, the others 0 (count <= lanes; nothing past them is read),
    // and the converse store of lanes [0, count)
    typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> Lane;
    typedef Lane VM __attribute__((vector_size(32)));
    static inline VM mask(int count) {
        VM m{};
        for (int l = 0; l < lanes; ++l) m[l] = l < count ? Lane(-1) : Lane(0);
        return m;
    }
    static inline V load_first(const T* p, VM m) {
#if defined(__AVX__)
        if constexpr (sizeof(T) == 4)
            return reinterpret_cast<V>(_mm256_maskload_ps(p, reinterpret_cast<__m256i>(m)));
        else
            return reinterpret_cast<V>(_mm256_maskload_pd(p, reinterpret_cast<__m256i>(m)));
#else
        V v{};
        for (int l = 0; l < lanes; ++l)
            if (m[l]) v[l] = p[l];
        return v;
#endif
    }
    static inline void store_first(T* p, V v, VM m) {
#if defined(__AVX__)
        if constexpr (sizeof(T) == 4)
            _mm256_maskstore_ps(p, reinterpret_cast<__m256i>(m), reinterpret_cast<__m256>(v));
        else
            _mm256_maskstore_pd(p, reinterpret_cast<__m256i>(m), reinterpret_cast<__m256d>(v));
#else
        for (int l = 0; l < lanes; ++l)
            if (m[l]) p[l] = v[l];
#endif
    }
    static inline T sum(V v) {
        T total = T(0);
        for (int l = 0; l < lanes; ++l) total += v[l];
        return total;
    }
};

#if defined(__AVX512F__)
// 64-byte vectors, where the CPU has AVX-512: the gather kernels' widest loops run on
// them when a whole chunk of outputs fills them. Each output lane gets the same
// multiply-adds in the same order as on Simd's vectors, so the results are the same bit
// for bit; what changes is the count of instructions (loads, broadcasts, loop steps) per
// output, and the register file (32 vectors) holds a whole chunk's accumulators.
// No masked loads: cut chunks stay on Simd.
template <typename T>
struct Wide {
    typedef T V __attribute__((vector_size(64), aligned(sizeof(T)), may_alias));
    static constexpr int lanes = 64 / sizeof(T);
    static inline V load(const T* p) { return *reinterpret_cast<const V*>(p); }
    static inline void store(T* p, V v) { *reinterpret_cast<V*>(p) = v; }
    template <std::size_t... l>
    static inline V splat_lanes(T s, std::index_sequence<l...>) { return V{((void)l, s)...}; }
    static inline V splat(T s) { return splat_lanes(s, std::make_index_sequence<lanes>{}); }
};
#endif

// One sample's local bases over features [i0, i0 + n), as structures of arrays with
// stride = n rounded up to whole vectors: row[d * stride + j] the coefficient index
// (clamped into [0, coeff)) of basis d of feature i0 + j, value[d * stride + j] its
// value (0 where that basis does not exist), slope[...] its derivative in x; span[j]
// the knot span and, on uniform grids only, u[j] the local coordinate in it.
template <typename T>
struct Tile {
    int64_t n = 0, stride = 0;
    std::vector<int32_t> row;
    std::vector<T> value, slope, span, u;
    Tile(int64_t capacity, int k, bool slopes) {
        const int64_t lanes = Simd<T>::lanes, padded = (capacity + lanes - 1) / lanes * lanes;
        row.resize((k + 1) * padded);
        value.resize((k + 1) * padded);
        slope.resize(slopes ? (k + 1) * padded : 0);
        span.resize(padded);
        u.resize(padded);
    }
    void resize(int64_t count) {
        const int64_t lanes = Simd<T>::lanes;
        n = count;
        stride = (count + lanes - 1) / lanes * lanes;
    }
};

// The cardinal recursion for order K at u in [0, 1), on scalars or vectors W of T: on
// return v[d + 1] holds basis d (d = 0 .. K) and below[d + 1] the order K - 1 basis d;
// v[0] and below[0] are 0. Expanded at compile time into straight-line code.
template <typename T, int R, typename W, std::size_t... D>
inline void cardinal_level(W u, W* v, W* below, std::index_sequence<D...>) {
    ((below[D] = v[D]), ...);
    below[sizeof...(D)] = v[sizeof...(D)];
    const T inv_r = T(1) / T(R);
    ((v[D + 1] = (below[D] * (u + T(R - int(D))) + below[D + 1] * (T(int(D) + 1) - u)) * inv_r), ...);
}

template <typename T, int K, int R = 1, typename W>
inline void cardinal_levels(W u, W* v, W* below) {
    if constexpr (R <= K) {
        cardinal_level<T, R>(u, v, below, std::make_index_sequence<K + 1>{});
        cardinal_levels<T, K, R + 1>(u, v, below);
    }
}

template <typename T, int K, typename W>
inline void cardinal(W u, W* v, W* below) {
    for (int d = 0; d < K + 2; ++d) v[d] = below[d] = W{} + T(0);
    if constexpr (K == 3) {
        // the cubic case in closed form (the recursion's polynomials, fewer operations)
        const W w = T(1) - u, u2 = u * u, w2 = w * w;
        below[1] = w2 * T(0.5);
        below[3] = u2 * T(0.5);
        below[2] = T(1) - below[1] - below[3];
        v[1] = w2 * w * T(1.0 / 6);
        v[4] = u2 * u * T(1.0 / 6);
        v[2] = (u2 * (u * T(3) - T(6)) + T(4)) * T(1.0 / 6);
        v[3] = T(1) - v[1] - v[2] - v[4];
    } else {
        v[1] = W{} + T(1);
        cardinal_levels<T, K>(u, v, below);
    }
}

// Exact knot span and local coordinate (in the span's own interval) of x on a uniform grid,
// as in kan.fast.knot_span: a floor of the knot coordinate, corrected by one comparison
// either side with the stored knots; NaN gives span -1, +inf span knots - 1 (the
// correction would move it onto the +inf end of knots_ext, past every span that the
// callers' buckets and tables hold).
template <typename T>
inline void exact_span(const Geometry<T>& g, int64_t i, T x, T& span, T& u) {
    const T* e = g.knots_ext + i * (g.knots + 2);  // e[m + 1] = t_m
    T t = (x - g.origin[i]) * g.inv_step[i];
    t = t >= T(-1) ? t : T(-1);  // also NaN
    t = t <= T(g.knots - 1) ? t : T(g.knots - 1);
    int64_t m = static_cast<int64_t>(std::floor(t));
    // clamped both ways: whatever the knot table holds (finite ends where -inf and +inf belong,
    // NaN), the span indexes the callers' buckets and tables in range
    m = std::min(std::max(m - int64_t(x < e[m + 1]) + int64_t(x >= e[m + 2]), int64_t(-1)), g.knots - 1);
    const int64_t clamped = std::min(std::max(m, int64_t(0)), g.knots - 2);
    span = T(m);
    u = (x - e[clamped + 1]) / (e[clamped + 2] - e[clamped + 1]);
}

// Whether any lane of a comparison's mask is set.
template <typename M>
inline bool any_lane(M mask) {
#if defined(__AVX__)
    if constexpr (sizeof(M) == 32 && sizeof(mask[0]) == 4)
        return _mm256_movemask_ps(reinterpret_cast<__m256>(mask)) != 0;
    if constexpr (sizeof(M) == 32 && sizeof(mask[0]) == 8)
        return _mm256_movemask_pd(reinterpret_cast<__m256d>(mask)) != 0;
#endif
    bool any = false;
    for (unsigned l = 0; l < sizeof(M) / sizeof(mask[0]); ++l) any |= mask[l] != 0;
    return any;
}

template <typename M>
inline bool all_lanes(M mask) {
#if defined(__AVX__)
    if constexpr (sizeof(M) == 32 && sizeof(mask[0]) == 4)
        return _mm256_movemask_ps(reinterpret_cast<__m256>(mask)) == 0xFF;
    if constexpr (sizeof(M) == 32 && sizeof(mask[0]) == 8)
        return _mm256_movemask_pd(reinterpret_cast<__m256d>(mask)) == 0xF;
#endif
    bool all = true;
    for (unsigned l = 0; l < sizeof(M) / sizeof(mask[0]); ++l) all &= mask[l] != 0;
    return all;
}

// knots[index[l]] (column mode: one feature's knots) or knots[l * stride + index[l]]
// (row mode: lane l's feature), with the CPU's gather instruction where it has one.
template <typename T, bool Column>
inline typename Simd<T>::V gather_knots(const T* knots, int64_t stride, typename Simd<T>::VI index) {
    using S = Simd<T>;
    if (!Column) {
        typename S::VI lane{};
        for (int l = 0; l < S::lanes; ++l) lane[l] = l;
        index += lane * int32_t(stride);
    }
#if defined(__AVX2__)
    if constexpr (sizeof(T) == 4) {
        return reinterpret_cast<typename S::V>(_mm256_i32gather_ps(knots, reinterpret_cast<__m256i>(index), 4));
    } else {
        return reinterpret_cast<typename S::V>(_mm256_i32gather_pd(knots, reinterpret_cast<__m128i>(index), 8));
    }
#else
    typename S::V out;
    for (int l = 0; l < S::lanes; ++l) out[l] = knots[index[l]];
    return out;
#endif
}

// knots[index[l]] for index[l] in [0, kSharedKnots), from a table held in registers: two
// in-register permutes and a blend where the CPU has AVX2 and T is float (the gather
// instruction is a large share of the basis evaluation's time), else gather_knots.
template <typename T>
inline typename Simd<T>::V knot_lookup(const T* knots, typename Simd<T>::VI index) {
#if defined(__AVX2__)
    if constexpr (sizeof(T) == 4) {
        const __m256i i = reinterpret_cast<__m256i>(index);
        const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(knots), i);  // by the index's low 3 bits
        const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(knots + 8), i);
        const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(i, _mm256_set1_epi32(7)));
        return reinterpret_cast<typename Simd<T>::V>(_mm256_blendv_ps(low, high, upper));
    }
#endif
    return gather_knots<T, true>(knots, 0, index);
}

// The bases of span m over the stored knots kn[q] = t_(m - K + 1 + q), q = 0 .. 2K - 1, at
// x, by de Boor's triangle (the reference's Cox-de Boor formulas, restricted to the bases
// that are not zero on the span), on scalars or vectors W of T. On return v[d + 1] holds
// basis d (d = 0 .. K) and below[d + 1] the order K - 1 basis d times K / (the length of
// its support), so that, as after `cardinal` with a step of 1, basis d's slope in x is
// below[d] - below[d + 1]; v[0], below[0] and below[K + 1] are 0.
template <typename T, int K, typename W>
inline void de_boor(W x, const W* kn, W* v, W* below) {
    for (int d = 0; d < K + 2; ++d) v[d] = below[d] = W{} + T(0);
    W N[K + 1];
    N[0] = W{} + T(1);
    for (int j = 1; j <= K; ++j) {
        W carried = W{} + T(0);
        for (int r = 0; r < j; ++r) {  // N[r]: order j - 1 basis m - j + 1 + r, on t_(m+1-j+r) .. t_(m+1+r)
            const W lo = kn[K - j + r], hi = kn[K + r];
            const W share = N[r] / (hi - lo);
            if (j == K) below[r + 1] = share * T(K);
            N[r] = carried + (hi - x) * share;
            carried = (x - lo) * share;
        }
        N[j] = carried;
    }
    for (int d = 0; d <= K; ++d) v[d + 1] = N[d];
}

// De Boor's triangle for a vector of lanes over the stored knots of their spans
// (knots_padded, whose extrapolated knots keep the triangle finite at the ends). Row mode:
// lane l is feature i + l (lanes at and past `valid` are not read); column mode: every lane
// is feature i. Kept out of line: its callers are inlined into every kernel, and the
// triangle's divisions and gathers outweigh a call.
template <typename T, int K, bool Column>
__attribute__((noinline)) void de_boor_lanes(const Geometry<T>& g, int64_t i, int64_t valid,
                                             typename Simd<T>::V xv, typename Simd<T>::VI knot_index,
                                             typename Simd<T>::V* v, typename Simd<T>::V* below) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int L = S::lanes;
    // t_(m - K + 1 + q) is knots_padded[m + 1 + q] (the padded row starts K knots early), and
    // knot_index = m + 1 for the span m clamped into [0, knots - 2]
    const int64_t stride = g.knots + 2 * K;
    const T* padded = g.knots_padded + i * stride;
    V kn[2 * K > 0 ? 2 * K : 1];
    for (int q = 0; q < 2 * K; ++q) {
        if (Column || valid >= L) {
            kn[q] = gather_knots<T, Column>(padded, stride, knot_index + q);
        } else {  // row mode, a partial vector: the lanes past it have no feature to read
            kn[q] = S::splat(T(q + 1));  // distinct knots: the unused lanes stay finite
            for (int l = 0; l < valid; ++l) kn[q][l] = padded[l * stride + knot_index[l] + q];
        }
    }
    de_boor<T, K>(xv, kn, v, below);
}

// The bases of each lane's span from its local coordinate: on a cardinal grid the cardinal
// recursion in u; else de Boor's triangle over the stored knots (de_boor_lanes), and
// inv_step becomes 1 (de_boor's `below` carries the knot spacing).
template <typename T, int K, bool Column>
__attribute__((always_inline)) inline void span_bases(const Geometry<T>& g, int64_t i, int64_t valid,
                                                      typename Simd<T>::V xv, typename Simd<T>::VI knot_index,
                                                      typename Simd<T>::V& inv_step, typename Simd<T>::V u,
                                                      typename Simd<T>::V* v, typename Simd<T>::V* below) {
    if (g.cardinal || K == 0) {
        cardinal<T, K>(u, v, below);
        return;
    }
    // through arrays of its own, copied: were the callers' arrays passed to the out-of-line
    // call, their address would escape, and they would live in memory on every path, the
    // cardinal one too, rather than in registers
    typename Simd<T>::V dv[K + 2], dbelow[K + 2];
    de_boor_lanes<T, K, Column>(g, i, valid, xv, knot_index, dv, dbelow);
    for (int d = 0; d < K + 2; ++d) {
        v[d] = dv[d];
        below[d] = dbelow[d];
    }
    inv_step = Simd<T>::splat(T(1));
}

// Uniform grid, one vector of lanes: span = floor of the knot coordinate t, and
// u = (x - t_span) / (t_(span+1) - t_span) from the stored knots, whose reciprocal interval
// is returned in inv_step. Where t lies within kNearKnot of a knot (where rounding could put
// the floor on the wrong side), the lane's span is redone by exact_span; elsewhere both give
// the same span. Lanes at and past n get span -1 (no basis exists). Then the bases
// (span_bases): v[d + 1] is basis d of the span, below[d + 1] the order K - 1 basis d.
// Row mode: lane l is feature i0 + j + l of one sample, x[i0 + j + l]. Column mode: lane l
// is sample j + l of feature i0, x[j + l].
template <typename T, int K, bool Column>
__attribute__((always_inline)) inline void lane_bases(const Geometry<T>& g, const T* x, int64_t i0, int64_t j, int64_t n,
                       typename Simd<T>::V& span, typename Simd<T>::V& inv_step, typename Simd<T>::V& u,
                       typename Simd<T>::V* v, typename Simd<T>::V* below) {
    using S = Simd<T>;
    using V = typename S::V;
    using VI = typename S::VI;
    constexpr int L = S::lanes;
    constexpr T kNearKnot = T(1e-3);
    const T top = T(g.knots - 1);
    const int64_t ext_stride = g.knots + 2;
    const int64_t i = Column ? i0 : i0 + j;  // feature of lane 0
    const T* xs = Column ? x + j : x + i;
    const bool partial = j + L > n;
    V xv, origin;
    if (Column) {
        origin = S::splat(g.origin[i]);
        inv_step = S::splat(g.inv_step[i]);
    }
    if (!partial) {
        xv = S::load(xs);
        if (!Column) {
            origin = S::load(g.origin + i);
            inv_step = S::load(g.inv_step + i);
        }
    } else {
        xv = V{};
        if (!Column) origin = inv_step = V{};
        for (int l = 0; j + l < n; ++l) {
            xv[l] = xs[l];
            if (!Column) {
                origin[l] = g.origin[i + l];
                inv_step[l] = g.inv_step[i + l];
            }
        }
    }
    V t = (xv - origin) * inv_step;
    t = t >= T(-1) ? t : V{} + T(-1);  // also NaN
    t = t <= top ? t : V{} + top;
    // floor: truncate toward zero, then step down where that went up (t >= -1 here)
    span = __builtin_convertvector(__builtin_convertvector(t, VI), V);
    span = span > t ? span - T(1) : span;
    const V fraction = t - span;
    const auto near = (fraction < kNearKnot) | (fraction > T(1) - kNearKnot);
    if (any_lane(near)) {
        for (int l = 0; l < L && j + l < n; ++l) {
            if (near[l]) {
                T sl, ul;
                exact_span(g, Column ? i : i + l, xs[l], sl, ul);
                span[l] = sl;
            }
        }
    }
    const V clamped_span = span < T(0) ? V{} : (span > top - T(1) ? V{} + (top - T(1)) : span);
    const VI knot_index = __builtin_convertvector(clamped_span, VI) + 1;
    V knot, next;
    if (g.shared) {
        knot = knot_lookup(g.shared_knots, knot_index);
        next = knot_lookup(g.shared_knots, knot_index + 1);
    } else if (partial && !Column) {
        // Row mode: the lanes past n would read the rows of features that do not exist.
        knot = V{};
        next = V{} + T(1);
        for (int l = 0; j + l < n; ++l) {
            knot[l] = g.knots_ext[(i + l) * ext_stride + knot_index[l]];
            next[l] = g.knots_ext[(i + l) * ext_stride + knot_index[l] + 1];
        }
    } else {
        knot = gather_knots<T, Column>(g.knots_ext + i * ext_stride, ext_stride, knot_index);
        next = gather_knots<T, Column>(g.knots_ext + i * ext_stride, ext_stride, knot_index + 1);
    }
    inv_step = T(1) / (next - knot);
    u = (xv - knot) * inv_step;
    if (partial)
        for (int l = int(n - j); l < L; ++l) span[l] = T(-1);
    span_bases<T, K, Column>(g, i, Column ? L : n - j, xv, knot_index, inv_step, u, v, below);
}

// lane_bases for a whole vector of lanes whose inputs all lie inside the grid, away from
// its knots: span in [K, coeff) (every basis exists) and within kNearKnot of no knot.
// Then the span is the truncated knot coordinate and the rest is lane_bases' arithmetic
// without its clamps, so the results are the same bit for bit. Returns false, with
// nothing computed that counts, where any lane is not such an input: lane_bases takes
// the vector. Most inputs of a trained layer lie inside its grid, so most vectors take
// this shorter path.
template <typename T, int K, bool Column>
__attribute__((always_inline)) inline bool interior_bases(const Geometry<T>& g, const T* x, int64_t i0, int64_t j,
                                                          typename Simd<T>::V& span, typename Simd<T>::V& inv_step,
                                                          typename Simd<T>::V& u, typename Simd<T>::V* v,
                                                          typename Simd<T>::V* below) {
    using S = Simd<T>;
    using V = typename S::V;
    using VI = typename S::VI;
    constexpr T kNearKnot = T(1e-3);
    const int64_t i = Column ? i0 : i0 + j;  // feature of lane 0
    const V xv = S::load(Column ? x + j : x + i);
    const V origin = Column ? S::splat(g.origin[i]) : S::load(g.origin + i);
    inv_step = Column ? S::splat(g.inv_step[i]) : S::load(g.inv_step + i);
    const V t = (xv - origin) * inv_step;
    const VI whole = __builtin_convertvector(t, VI);  // truncation: the floor where t >= 0
    span = __builtin_convertvector(whole, V);
    const V fraction = t - span;  // negative where t < 0: not interior
    const auto inside = (span >= T(K)) & (span < T(g.coeff)) & (fraction >= kNearKnot) & (fraction <= T(1) - kNearKnot);
    if (!all_lanes(inside)) return false;
    const VI knot_index = whole + 1;
    const T* row = g.knots_ext + i * (g.knots + 2);
    const V knot = g.shared ? knot_lookup(g.shared_knots, knot_index)
                            : gather_knots<T, Column>(row, g.knots + 2, knot_index);
    const V next = g.shared ? knot_lookup(g.shared_knots, knot_index + 1)
                            : gather_knots<T, Column>(row, g.knots + 2, knot_index + 1);
    inv_step = T(1) / (next - knot);
    u = (xv - knot) * inv_step;
    span_bases<T, K, Column>(g, i, Simd<T>::lanes, xv, knot_index, inv_step, u, v, below);
    return true;
}

// Uniform grid: the tile's vector of lanes from j (see interior_bases and lane_bases).
template <typename T, int K, bool Column>
__attribute__((always_inline)) inline void tile_uniform_vector(const Geometry<T>& g, const T* x, int64_t i0, int64_t j,
                                                               Tile<T>& tile, bool slopes) {
    using S = Simd<T>;
    using V = typename S::V;
    using VI = typename S::VI;
    constexpr int L = S::lanes;
    const int64_t n = tile.n, stride = tile.stride;
    const T coeff = T(g.coeff);
    int32_t* __restrict row = tile.row.data();
    T* __restrict value = tile.value.data();
    T* __restrict slope = slopes ? tile.slope.data() : nullptr;
    T* __restrict span_out = tile.span.data();
    T* __restrict u_out = tile.u.data();
    V span, inv_step, u, v[K + 2], below[K + 2];
    if (j + L <= n && interior_bases<T, K, Column>(g, x, i0, j, span, inv_step, u, v, below)) {
        // every lane's K + 1 bases exist: no selects, no clamps
        S::store(span_out + j, span);
        S::store(u_out + j, u);
        const VI first = __builtin_convertvector(span, VI) - K;
        for (int d = 0; d <= K; ++d) {
            S::store(value + d * stride + j, v[d + 1]);
            S::store_index(row + d * stride + j, first + d);
            if (slope != nullptr) S::store(slope + d * stride + j, K >= 1 ? (below[d] - below[d + 1]) * inv_step : V{});
        }
        return;
    }
    lane_bases<T, K, Column>(g, x, i0, j, n, span, inv_step, u, v, below);
    S::store(span_out + j, span);
    S::store(u_out + j, u);
    const V first = span - T(K);
    for (int d = 0; d <= K; ++d) {
        const V c = first + T(d);
        const auto valid = (c >= T(0)) & (c < coeff);
        S::store(value + d * stride + j, valid ? v[d + 1] : V{});
        const V clamped = c < T(0) ? V{} : (c > coeff - T(1) ? V{} + (coeff - T(1)) : c);
        S::store_index(row + d * stride + j, __builtin_convertvector(clamped, VI));
        if (slope != nullptr) {
            const V s = K >= 1 ? (below[d] - below[d + 1]) * inv_step : V{};
            S::store(slope + d * stride + j, valid ? s : V{});
        }
    }
}

// Uniform grid: a tile of local bases, a vector of lanes at a time.
// Inlined into its callers (tile_bases, tile_rows), so that a caller that makes many small
// tiles sets up the geometry's constants once rather than in a call per tile.
template <typename T, int K, bool Column>
__attribute__((always_inline)) inline void tile_uniform(const Geometry<T>& g, const T* x, int64_t i0, Tile<T>& tile, bool slopes) {
    for (int64_t j = 0; j < tile.stride; j += Simd<T>::lanes) tile_uniform_vector<T, K, Column>(g, x, i0, j, tile, slopes);
}

// Any grid: binary search for the span and de Boor's triangle (scalar).
template <typename T, int K, bool Column>
void tile_general(const Geometry<T>& g, const T* x, int64_t i0, Tile<T>& tile, bool slopes) {
    const int64_t n = tile.n, stride = tile.stride;
    for (int64_t j = 0; j < stride; ++j) {
        for (int d = 0; d <= K; ++d) {
            tile.row[d * stride + j] = 0;
            tile.value[d * stride + j] = T(0);
            if (slopes) tile.slope[d * stride + j] = T(0);
        }
    }
    for (int64_t j = 0; j < n; ++j) {
        const int64_t i = Column ? i0 : i0 + j;
        const T xv = Column ? x[j] : x[i];
        const T* ext = g.knots_ext + i * (g.knots + 2);
        int64_t m;
        if (!(xv == xv)) {
            m = -1;
        } else {
            int64_t low = -1, high = g.knots;
            while (high - low > 1) {
                const int64_t middle = (low + high) / 2;
                if (xv >= ext[middle + 1]) low = middle;
                else high = middle;
            }
            m = low;
        }
        const int64_t clamped = std::min(std::max(m, int64_t(0)), g.knots - 2);
        const T* w = g.knots_padded + i * (g.knots + 2 * K) + clamped;  // w[j] = t_(m - K + j)
        T values[K + 1], below[K + 1];
        values[0] = T(1);
        for (int r = 1; r <= K; ++r) {
            for (int d = 0; d < r; ++d) below[d] = values[d];
            for (int d = 0; d <= r; ++d) {
                const int a = K - r + d;
                T term = T(0);
                if (d >= 1) term = below[d - 1] * (xv - w[a]) / (w[a + r] - w[a]);
                if (d <= r - 1) term += below[d] * (w[a + r + 1] - xv) / (w[a + r + 1] - w[a + 1]);
                values[d] = term;
            }
        }
        tile.span[j] = T(m);
        const int64_t first = m - K;
        for (int d = 0; d <= K; ++d) {
            const int64_t c = first + d;
            const bool valid = c >= 0 && c < g.coeff;
            tile.row[d * stride + j] = static_cast<int32_t>(std::min(std::max(c, int64_t(0)), g.coeff - 1));
            tile.value[d * stride + j] = valid ? values[d] : T(0);
            if (slopes) {
                T s = T(0);
                if (K >= 1) {
                    if (d >= 1) s += below[d - 1] / (w[d + K] - w[d]);
                    if (d <= K - 1) s -= below[d] / (w[d + K + 1] - w[d + 1]);
                }
                tile.slope[d * stride + j] = valid ? T(K) * s : T(0);
            }
        }
    }
}

// Row mode: one sample's features [i0, i0 + n), x its row. Column mode: samples
// [0, n) of feature i0, x that feature's column (contiguous).
template <typename T, int K, bool Column = false>
inline void tile_bases(const Geometry<T>& g, const T* x, int64_t i0, int64_t n, Tile<T>& tile, bool slopes) {
    tile.resize(n);
    if (g.origin != nullptr) tile_uniform<T, K, Column>(g, x, i0, tile, slopes);
    else tile_general<T, K, Column>(g, x, i0, tile, slopes);
}

// Whether tile_rows makes this geometry's row tiles two samples at a time (tile_pair_wide).
template <typename T>
inline bool pair_tiles(const Geometry<T>& g) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    return std::is_same_v<T, float> && g.origin != nullptr && g.cardinal && g.shared;
#else
    (void)g;
    return false;
#endif
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// Row mode, float, a cardinal uniform grid whose knots are shared (in one 64-byte vector):
// the tiles of samples s and s + 1 over the whole vector of features from j, in one
// 64-byte vector (lanes 0-7 sample s, 8-15 sample s + 1), with interior_bases'
// arithmetic, so the results are the same bit for bit; the knots are looked up with one
// in-register permute. The sample-major kernels' blocks are a vector or two of features,
// so pairs of samples, not more features, fill the wide vector. Returns false, with
// nothing written, where either sample's vector is not interior: tile_uniform_vector
// takes each.
template <int K>
__attribute__((always_inline)) inline bool tile_pair_wide(const Geometry<float>& g, const float* x0, const float* x1,
                                                          int64_t i0, int64_t j, Tile<float>& t0, Tile<float>& t1,
                                                          bool slopes) {
    using W = Wide<float>::V;
    typedef int32_t WI __attribute__((vector_size(64)));
    constexpr float kNearKnot = 1e-3f;
    const auto wide = [](__m512 v) { return reinterpret_cast<W>(v); };
    const auto both = [](const float* p) {  // the 8 floats at p, in both halves
        return _mm512_broadcast_f32x8(_mm256_loadu_ps(p));
    };
    const int64_t i = i0 + j;
    const W xv = wide(_mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(x0 + i)), _mm256_loadu_ps(x1 + i), 1));
    const W t = (xv - wide(both(g.origin + i))) * wide(both(g.inv_step + i));
    const WI whole = __builtin_convertvector(t, WI);  // truncation: the floor where t >= 0
    const W span = __builtin_convertvector(whole, W);
    const W fraction = t - span;
    const auto inside = (span >= float(K)) & (span < float(g.coeff)) & (fraction >= kNearKnot) &
                        (fraction <= 1.0f - kNearKnot);
    if (_mm512_cmpneq_epi32_mask(reinterpret_cast<__m512i>(inside), _mm512_setzero_si512()) != 0xFFFF) return false;
    const __m512i knot_index = reinterpret_cast<__m512i>(whole + 1);
    const __m512 knots = _mm512_loadu_ps(g.shared_knots);
    const W knot = wide(_mm512_permutexvar_ps(knot_index, knots));
    const W next = wide(_mm512_permutexvar_ps(_mm512_add_epi32(knot_index, _mm512_set1_epi32(1)), knots));
    const W inv_step = 1.0f / (next - knot);
    const W u = (xv - knot) * inv_step;
    W v[K + 2], below[K + 2];
    cardinal<float, K>(u, v, below);
    const WI first = whole - K;
    Tile<float>* tiles[2] = {&t0, &t1};
    const auto half = [](W w, int h) {
        const __m512 m = reinterpret_cast<__m512>(w);
        return h == 0 ? _mm512_castps512_ps256(m) : _mm512_extractf32x8_ps(m, 1);
    };
    const auto half_index = [](WI w, int h) {
        const __m512i m = reinterpret_cast<__m512i>(w);
        return h == 0 ? _mm512_castsi512_si256(m) : _mm512_extracti32x8_epi32(m, 1);
    };
    for (int h = 0; h < 2; ++h) {
        Tile<float>& tile = *tiles[h];
        const int64_t stride = tile.stride;
        _mm256_storeu_ps(tile.span.data() + j, half(span, h));
        _mm256_storeu_ps(tile.u.data() + j, half(u, h));
        for (int d = 0; d <= K; ++d) {
            _mm256_storeu_ps(tile.value.data() + d * stride + j, half(v[d + 1], h));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile.row.data() + d * stride + j),
                                half_index(first + d, h));
            if (slopes)
                _mm256_storeu_ps(tile.slope.data() + d * stride + j,
                                 half(K >= 1 ? (below[d] - below[d + 1]) * inv_step : W{}, h));
        }
    }
    return true;
}
#endif

// Row mode, the tiles of `count` samples over features [i0, i0 + n): tiles[s] from the
// row x + s * row_stride. One call for the group: the sample-major kernels' tiles are
// a vector or two of features each, too small to pay for a call and its set-up apiece.
template <typename T, int K>
__attribute__((noinline)) void tile_rows(const Geometry<T>& g, const T* x, int64_t row_stride, int64_t count,
                                         int64_t i0, int64_t n, Tile<T>* tiles, bool slopes) {
    if (g.origin != nullptr) {
        int64_t s = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
        if constexpr (std::is_same_v<T, float>) {
            if (pair_tiles(g)) {  // pairs of samples on wide vectors (tile_pair_wide)
                for (; s + 2 <= count; s += 2) {
                    Tile<T>& t0 = tiles[s];
                    Tile<T>& t1 = tiles[s + 1];
                    const T* x0 = x + s * row_stride;
                    const T* x1 = x0 + row_stride;
                    t0.resize(n);
                    t1.resize(n);
                    for (int64_t j = 0; j < t0.stride; j += Simd<T>::lanes) {
                        if (j + Simd<T>::lanes <= n && tile_pair_wide<K>(g, x0, x1, i0, j, t0, t1, slopes)) continue;
                        tile_uniform_vector<T, K, false>(g, x0, i0, j, t0, slopes);
                        tile_uniform_vector<T, K, false>(g, x1, i0, j, t1, slopes);
                    }
                }
            }
        }
#endif
        for (; s < count; ++s) {
            tiles[s].resize(n);
            tile_uniform<T, K, false>(g, x + s * row_stride, i0, tiles[s], slopes);
        }
    } else {
        for (int64_t s = 0; s < count; ++s) tile_bases<T, K>(g, x + s * row_stride, i0, n, tiles[s], slopes);
    }
}

// Table bytes per block of the sample-major kernels: half of a 32 KB L1 data cache, so
// that the block's rows, the tile and the sample's outputs all stay in it (blocks that
// live in L2 are slower, and so are blocks of the whole L1).
constexpr int64_t kBlockBytes = 16 << 10;

// Features per block of the sample-major kernels, so that a block's coeff * out table
// values stay in a core's cache while the samples stream past them; whole vectors of
// features, so that no block but the last has a partial one.
template <typename T>
inline int64_t feature_block(const Geometry<T>& g, int64_t out) {
    const int64_t lanes = Simd<T>::lanes, bytes = std::max<int64_t>(1, g.coeff * out * int64_t(sizeof(T)));
    const int64_t block = std::max<int64_t>(lanes, kBlockBytes / bytes / lanes * lanes);
    return std::min<int64_t>(g.in_features, block);
}

// acc[0 .. width) += sum over the tile's features of sum_d value * table row, for the
// outputs o0 .. o0 + width: NV vectors, all whole (Masked false: width = NV * lanes) or
// the last one cut to its first `tail` lanes (width = (NV - 1) * lanes + tail). S: Simd,
// or Wide for whole vectors only (not Masked).
template <typename T, int K, int NV, bool Masked, typename S = Simd<T>>
inline void gather_rows(const Tile<T>& tile, const T* table, int64_t coeff, int64_t out, int64_t i0, int64_t o0,
                        int tail, T* acc) {
    static_assert(!Masked || std::is_same_v<S, Simd<T>>, "cut vectors are Simd's");
    using V = typename S::V;
    constexpr int L = S::lanes, Whole = Masked ? NV - 1 : NV;
    [[maybe_unused]] const typename Simd<T>::VM m = Simd<T>::mask(tail);
    const int64_t n = tile.n, s = tile.stride;
    const int32_t* rows = tile.row.data();
    const T* values = tile.value.data();
    V a[NV];
    for (int q = 0; q < Whole; ++q) a[q] = S::load(acc + q * L);
    if constexpr (Masked) a[NV - 1] = S::load_first(acc + Whole * L, m);
    for (int64_t j = 0; j < n; ++j) {
        const T* feature = table + (i0 + j) * coeff * out + o0;
        for (int d = 0; d <= K; ++d) {
            const V v = S::splat(values[d * s + j]);
            const T* row = feature + int64_t(rows[d * s + j]) * out;
            for (int q = 0; q < Whole; ++q) a[q] += v * S::load(row + q * L);
            if constexpr (Masked) a[NV - 1] += v * S::load_first(row + Whole * L, m);
        }
    }
    for (int q = 0; q < Whole; ++q) S::store(acc + q * L, a[q]);
    if constexpr (Masked) S::store_first(acc + Whole * L, a[NV - 1], m);
}

// f(std::integral_constant<int, nv>()) for nv in [1, 8]: a runtime count of vectors
// made a template argument.
template <typename F>
inline void with_vectors(int nv, F f) {
    switch (nv) {
        case 1: f(std::integral_constant<int, 1>()); break;
        case 2: f(std::integral_constant<int, 2>()); break;
        case 3: f(std::integral_constant<int, 3>()); break;
        case 4: f(std::integral_constant<int, 4>()); break;
        case 5: f(std::integral_constant<int, 5>()); break;
        case 6: f(std::integral_constant<int, 6>()); break;
        case 7: f(std::integral_constant<int, 7>()); break;
        case 8: f(std::integral_constant<int, 8>()); break;
        default: break;
    }
}

#if defined(__AVX__)
// a[0 .. 8), the rows of an 8 x 8 matrix of floats, transposed in place.
inline void transpose8(__m256* a) {
    __m256 t[8], r[8];
    for (int k = 0; k < 4; ++k) {
        t[2 * k] = _mm256_unpacklo_ps(a[2 * k], a[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(a[2 * k], a[2 * k + 1]);
    }
    for (int k = 0; k < 2; ++k) {
        r[4 * k + 0] = _mm256_shuffle_ps(t[4 * k + 0], t[4 * k + 2], 0x44);
        r[4 * k + 1] = _mm256_shuffle_ps(t[4 * k + 0], t[4 * k + 2], 0xEE);
        r[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        r[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {
        a[k] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x20);
        a[k + 4] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x31);
    }
}
#endif

// ----------------------------------------------------------------- the base activation

// e^a on vectors: 2^n e^r with n = round(a / ln 2) and r = a - n ln 2 (ln 2 in two
// parts), e^r by its Taylor polynomial, |r| <= ln 2 / 2 (degree 7 for float, 12 for
// double: truncation under 1e-8 and 3e-16 relative), times 2^(n - 1) (written into the
// exponent) times 2, so that n can reach the overflow threshold. Overflow gives +inf;
// below e^-86 (float) or e^-707 (double), near the smallest normal number, 0; NaN stays NaN.
template <typename T>
inline typename Simd<T>::V vexp(typename Simd<T>::V a) {
    using S = Simd<T>;
    using V = typename S::V;
    using VM = typename S::VM;
    constexpr bool single = sizeof(T) == 4;
    constexpr T high = single ? T(89) : T(710), low = single ? T(-86) : T(-707);
    constexpr T round = single ? T(12582912.0) : T(6755399441055744.0);  // 1.5 * 2^(mantissa bits)
    constexpr T ln2_hi = single ? T(0.693359375) : T(6.93147180369123816490e-01);
    constexpr T ln2_lo = single ? T(-2.12194440e-4) : T(1.90821492927058770002e-10);
    constexpr int degree = single ? 7 : 12, mantissa = single ? 23 : 52, bias = single ? 127 : 1023;
    const V clamped = a > high ? V{} + high : (a < low ? V{} + low : a);  // NaN passes through
    const V n = (clamped * T(1.4426950408889634) + round) - round;        // to nearest
    const V r = (clamped - n * ln2_hi) - n * ln2_lo;
    T coefficient[degree + 1];  // 1 / k!
    coefficient[0] = T(1);
    for (int k = 1; k <= degree; ++k) coefficient[k] = coefficient[k - 1] / T(k);
    V p = V{} + coefficient[degree];
    for (int k = degree - 1; k >= 0; --k) p = p * r + coefficient[k];  // Horner, one multiply-add a degree
    const VM exponent = (__builtin_convertvector(n, VM) + (bias - 1)) << mantissa;
    const V result = p * reinterpret_cast<V>(exponent) * T(2);  // overflows to +inf past the threshold
    return a > high ? V{} + T(INFINITY) : (a < low ? V{} : result);
}

// y[0 .. n) = silu(x[0 .. n)) = x / (1 + e^-x), the layers' default base activation.
template <typename T>
inline void silu_run(const T* x, int64_t n, T* y) {
    using S = Simd<T>;
    constexpr int64_t L = S::lanes;
    int64_t j = 0;
    for (; j + L <= n; j += L) {
        const typename S::V v = S::load(x + j);
        S::store(y + j, v / (T(1) + vexp<T>(-v)));
    }
    if (j < n) {
        const typename S::VM m = S::mask(int(n - j));
        const typename S::V v = S::load_first(x + j, m);
        S::store_first(y + j, v / (T(1) + vexp<T>(-v)), m);
    }
}

template <typename T>
void silu(const T* x, int64_t n, T* y, int threads) {
    constexpr int64_t kChunk = 4096;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < n; c += kChunk) silu_run(x + c, std::min(kChunk, n - c), y + c);
}

// out = grad * silu'(x), or out += that (accumulate): silu'(x) = s (1 + x (1 - s)), s = 1 / (1 + e^-x).
template <typename T>
void silu_grad(const T* x, const T* grad, int64_t n, T* out, bool accumulate, int threads) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int64_t L = S::lanes, kChunk = 4096;
    const auto term = [](V v, V g) {
        const V s = T(1) / (T(1) + vexp<T>(-v));
        return g * (s * (T(1) + v * (T(1) - s)));
    };
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t c = 0; c < n; c += kChunk) {
        const int64_t end = std::min(n, c + kChunk);
        int64_t j = c;
        for (; j + L <= end; j += L) {
            const V t = term(S::load(x + j), S::load(grad + j));
            S::store(out + j, accumulate ? S::load(out + j) + t : t);
        }
        if (j < end) {
            const typename S::VM m = S::mask(int(end - j));
            const V t = term(S::load_first(x + j, m), S::load_first(grad + j, m));
            S::store_first(out + j, accumulate ? S::load_first(out + j, m) + t : t, m);
        }
    }
}

// ----------------------------------------------------------------- gather kernels

// How many samples ahead sample_major prefetches its strip of x, at least. A block's strip
// of a row of x is a few cache lines, one row of x apart from the next sample's: a stride
// the hardware does not follow, so without it every strip is a miss past the core's
// caches, which would cost more than the basis evaluation itself.
constexpr int64_t kAheadSamples = 4;

// Samples per group when gather_forward saves spans: a group's tiles are all evaluated
// before any is used, so that their coordinates and spans go to the feature-major saved
// arrays a vector of 8 samples per store (save_spans) rather than one value per store
// (without saving, groups make the forward and the input gradient slower, so those
// take one sample at a time, unless tile_rows makes pairs of tiles: pair_tiles).
constexpr int64_t kSaveGroup = 8;

// The sample-major loop of the gather kernels: features in blocks (feature_block), and
// in each block groups of `group` samples: each sample's tile of local bases, then
// body(b0, count, i0, tiles) for the samples b0 .. b0 + count. The same static split
// of groups in every block: a thread owns its samples' outputs.
template <typename T, int K, typename Body>
void sample_major(const Geometry<T>& g, const T* x, int64_t batch, int64_t out, bool slopes, int64_t group,
                  int threads, Body body) {
    const int64_t I = g.in_features, block = feature_block(g, out), groups = (batch + group - 1) / group;
    const int64_t ahead = std::max(group, kAheadSamples);
#pragma omp parallel num_threads(threads)
    {
        std::vector<Tile<T>> tiles(group, Tile<T>(block, K, slopes));
        for (int64_t i0 = 0; i0 < I; i0 += block) {
            const int64_t n = std::min(block, I - i0), bytes = n * int64_t(sizeof(T));
#pragma omp for schedule(static) nowait
            for (int64_t q = 0; q < groups; ++q) {
                const int64_t b0 = q * group, count = std::min(group, batch - b0);
                for (int64_t b = b0 + ahead; b < std::min(b0 + ahead + count, batch); ++b) {
                    const char* strip = reinterpret_cast<const char*>(x + b * I + i0);
                    for (int64_t at = 0; at < bytes; at += 64) __builtin_prefetch(strip + at);
                    __builtin_prefetch(strip + bytes - 1);  // the last line, where the strip is not aligned
                }
                tile_rows<T, K>(g, x + b0 * I, I, count, i0, n, tiles.data(), slopes);
                body(b0, count, i0, tiles.data());
            }
        }
    }
}

// A group's local coordinates and spans, saved feature-major: u[i * batch + b] and
// span[i * batch + b] for the tiles' features i0 .. i0 + n and samples b0 .. b0 + count.
// A whole group of 8 float tiles goes 8 features at a time, transposed in registers
// into one vector store per feature and array; anything else value by value.
template <typename T>
inline void save_spans(const Tile<T>* tiles, int64_t b0, int64_t count, int64_t i0, int64_t batch, T* __restrict u,
                       int16_t* __restrict span) {
    const int64_t n = tiles[0].n;
    int64_t j = 0;
#if defined(__AVX2__)
    if constexpr (sizeof(T) == 4) {
        if (count == 8) {
            for (; j + 8 <= n; j += 8) {
                __m256 a[8], m[8];
                for (int s = 0; s < 8; ++s) {
                    a[s] = _mm256_loadu_ps(tiles[s].u.data() + j);
                    m[s] = _mm256_loadu_ps(tiles[s].span.data() + j);
                }
                transpose8(a);
                transpose8(m);
                for (int f = 0; f < 8; ++f) {
                    _mm256_storeu_ps(u + (i0 + j + f) * batch + b0, a[f]);
                    const __m256i whole = _mm256_cvttps_epi32(m[f]);  // spans are whole numbers
                    const __m128i narrow = _mm_packs_epi32(_mm256_castsi256_si128(whole),
                                                           _mm256_extracti128_si256(whole, 1));
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(span + (i0 + j + f) * batch + b0), narrow);
                }
            }
        }
    }
#endif
    for (; j < n; ++j)
        for (int64_t s = 0; s < count; ++s) {
            u[(i0 + j) * batch + b0 + s] = tiles[s].u[j];
            span[(i0 + j) * batch + b0 + s] = int16_t(tiles[s].span[j]);
        }
}

// result (batch, out) = sum_i sum_d value[b, i, d] * table[i, first + d, :]; table (in, coeff, out).
// On a uniform grid, with saved_u given, also each input's local coordinate and knot span,
// feature-major for gather_table_grad: saved_u[i * batch + b], saved_span[i * batch + b].
template <typename T, int K>
void gather_forward(const Geometry<T>& g, const T* x, int64_t batch, const T* table, int64_t out, T* result,
                    T* saved_u, int16_t* saved_span, int threads) {
    constexpr int L = Simd<T>::lanes;
    const bool save = saved_u != nullptr && g.origin != nullptr && g.cardinal;
    std::fill(result, result + batch * out, T(0));
    const auto body = [&](int64_t b0, int64_t count, int64_t i0, const Tile<T>* tiles) {
        if (save) save_spans(tiles, b0, count, i0, batch, saved_u, saved_span);
        for (int64_t s = 0; s < count; ++s) {
            const Tile<T>& tile = tiles[s];
            T* acc = result + (b0 + s) * out;
            int64_t o = 0;
#if defined(__AVX512F__)
            // whole 64-byte vectors first, up to 8 in a pass (see Wide); the rest below
            constexpr int WL = Wide<T>::lanes;
            for (int nv; (nv = int(std::min<int64_t>(8, (out - o) / WL))) > 0; o += nv * WL)
                with_vectors(nv, [&](auto vectors) {
                    gather_rows<T, K, decltype(vectors)::value, false, Wide<T>>(tile, table, g.coeff, out, i0, o, L,
                                                                               acc + o);
                });
#endif
            for (; o + 8 * L <= out; o += 8 * L)
                gather_rows<T, K, 8, false>(tile, table, g.coeff, out, i0, o, L, acc + o);
            if (o < out) {  // the rest, in one pass over the tile: whole vectors and a cut last one
                const int nv = int((out - o + L - 1) / L), tail = int(out - o - (nv - 1) * L);
                with_vectors(nv, [&](auto vectors) {
                    gather_rows<T, K, decltype(vectors)::value, true>(tile, table, g.coeff, out, i0, o, tail, acc + o);
                });
            }
        }
    };
    sample_major<T, K>(g, x, batch, out, false, save || pair_tiles(g) ? kSaveGroup : 1, threads, body);
}

// The basis whose per-span sum bucket_rows takes from the partition of unity rather than
// from multiply-adds: the middle one, the largest on average, so that the subtraction
// cancels least.
template <int K>
constexpr int kPartitionBasis = K / 2;

// How far ahead bucket_rows prefetches grad_out rows, far enough to hide a miss past the
// core's caches (order[] carries that many padding entries).
constexpr int32_t kPrefetch = 8;

// One feature's table gradient over one chunk of outputs, its samples grouped by knot
// span: the samples of span m all feed coefficient rows m - K .. m, whose sums stay in
// registers across the group. order[begin[m + 1] .. begin[m + 2]) are the samples of
// span m; value[d * stride + b] is basis d of sample b. The chunk: NV vectors of outputs
// from o0, the last one cut to its first `tail` lanes when Masked. acc: (coeff + 2K)
// padded rows of width `width` (at least NV vectors), row c at c + K; spans whose
// bases do not exist are skipped. S: Simd, or Wide for whole chunks (not Masked).
template <typename T, int K, int NV, bool Masked, typename S = Simd<T>>
inline void bucket_rows(const int32_t* begin, int64_t knots, const int32_t* order, const T* value, int64_t stride,
                        const T* grad_out, int64_t out, int64_t o0, int tail, T* acc, int64_t width) {
    static_assert(!Masked || std::is_same_v<S, Simd<T>>, "cut chunks are Simd's");
    using V = typename S::V;
    constexpr int L = S::lanes, Whole = Masked ? NV - 1 : NV;
    [[maybe_unused]] const typename Simd<T>::VM m = Simd<T>::mask(tail);
    const int64_t coeff = knots - 1 - K;
    // gv: the chunk of grad_out's row of sample order[p]; and a prefetch of the row
    // kPrefetch samples on (rows come in no order the hardware could guess): every cache
    // line of the chunk (a wide chunk spans several), and its last element, for a chunk
    // that does not start on a line
    const auto row_chunk = [&](int32_t p, V* gv) {
        const char* ahead = reinterpret_cast<const char*>(grad_out + int64_t(order[p + kPrefetch]) * out + o0);
        constexpr int bytes = NV * L * int(sizeof(T));
        if constexpr (std::is_same_v<S, Simd<T>>) {
            __builtin_prefetch(ahead);
        } else {
            for (int at = 0; at < bytes; at += 64) __builtin_prefetch(ahead + at);
        }
        __builtin_prefetch(ahead + bytes - sizeof(T));
        const T* gb = grad_out + int64_t(order[p]) * out + o0;
        for (int q = 0; q < Whole; ++q) gv[q] = S::load(gb + q * L);
        if constexpr (Masked) gv[NV - 1] = Simd<T>::load_first(gb + Whole * L, m);
    };
    for (int64_t span = 0; span + 1 < knots; ++span) {
        const int32_t first = begin[span + 1], last = begin[span + 2];  // the samples of this span
        if (first == last) continue;
        T* rows = acc + span * width;  // padded row = coefficient span - K, the first one it feeds
        if (span >= K && span < coeff) {
            // All K + 1 bases exist and sum to 1 (and the x and saved paths have the same
            // values here): basis E's sum is the rows' plain sum less the others' sums, one
            // addition in place of a multiply-add per vector and sample, on the adders the
            // multiply-adds leave idle. The span's sums start from 0 and are added to the
            // rows at its end. The subtraction loses no accuracy against float64: the
            // middle basis is the largest, so it cancels least (kPartitionBasis).
            constexpr int E = kPartitionBasis<K>;
            V c[K + 1][NV];
            for (int d = 0; d <= K; ++d)
                for (int q = 0; q < NV; ++q) c[d][q] = V{};
            for (int32_t p = first; p < last; ++p) {
                const int64_t b = order[p];
                V gv[NV];
                row_chunk(p, gv);
                for (int q = 0; q < NV; ++q) c[E][q] += gv[q];
                for (int d = 0; d <= K; ++d) {
                    if (d == E) continue;
                    const V v = S::splat(value[d * stride + b]);
                    for (int q = 0; q < NV; ++q) c[d][q] += v * gv[q];
                }
            }
            for (int d = 0; d <= K; ++d)
                if (d != E)
                    for (int q = 0; q < NV; ++q) c[E][q] -= c[d][q];
            for (int d = 0; d <= K; ++d)
                for (int q = 0; q < NV; ++q) S::store(rows + d * width + q * L, S::load(rows + d * width + q * L) + c[d][q]);
            continue;
        }
        V a[K + 1][NV];
        for (int d = 0; d <= K; ++d)
            for (int q = 0; q < NV; ++q) a[d][q] = S::load(rows + d * width + q * L);
        for (int32_t p = first; p < last; ++p) {
            const int64_t b = order[p];
            V gv[NV];
            row_chunk(p, gv);
            for (int d = 0; d <= K; ++d) {
                const V v = S::splat(value[d * stride + b]);
                for (int q = 0; q < NV; ++q) a[d][q] += v * gv[q];
            }
        }
        for (int d = 0; d <= K; ++d)
            for (int q = 0; q < NV; ++q) S::store(rows + d * width + q * L, a[d][q]);
    }
}

// One feature's tile of values, column mode, from the local coordinates u[0 .. n) that
// gather_forward saved: the cardinal bases of each. Bases that do not exist are left in
// (gather_table_grad's padded rows take them), and rows are not filled.
template <typename T, int K>
void saved_bases(const T* u, int64_t n, Tile<T>& tile) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int L = S::lanes;
    tile.resize(n);
    const int64_t stride = tile.stride;
    T* __restrict value = tile.value.data();
    for (int64_t j = 0; j < n; j += L) {
        const V uj = j + L <= n ? S::load(u + j) : S::load_first(u + j, S::mask(int(n - j)));
        V v[K + 2], below[K + 2];
        cardinal<T, K>(uj, v, below);
        for (int d = 0; d <= K; ++d) S::store(value + d * stride + j, v[d + 1]);
    }
}

// Independent runs of the counting sort (sort_by_span), interleaved: each run's counters
// make a chain of loads and stores through memory wherever consecutive samples share a
// span, and that chain, not the work, bounded one run's speed.
constexpr int64_t kSortWays = 4;

// A stable counting sort of the samples [0, batch) by bucket (span[b] in [0, buckets)):
// on return order[start[k] .. start[k + 1]) are the samples of bucket k, ascending.
// The samples go in kSortWays consecutive parts, each counted and placed with its own
// counters (cursor: buckets * kSortWays scratch), the parts' loops interleaved; a
// bucket's places are given out part after part, so the order is the one-run order.
inline void sort_by_span(const int32_t* span, int64_t batch, int64_t buckets, int32_t* cursor, int32_t* start,
                         int32_t* order) {
    constexpr int64_t W = kSortWays;
    const int64_t part = (batch + W - 1) / W;
    std::fill(cursor, cursor + buckets * W, 0);
    for (int64_t b = 0; b < part; ++b)
        for (int64_t w = 0; w < W; ++w)
            if (w * part + b < batch) ++cursor[span[w * part + b] * W + w];
    int32_t total = 0;
    for (int64_t k = 0; k < buckets; ++k) {
        start[k] = total;
        for (int64_t w = 0; w < W; ++w) {
            const int32_t count = cursor[k * W + w];
            cursor[k * W + w] = total;
            total += count;
        }
    }
    start[buckets] = total;
    for (int64_t b = 0; b < part; ++b)
        for (int64_t w = 0; w < W; ++w)
            if (w * part + b < batch) order[cursor[span[w * part + b] * W + w]++] = int32_t(w * part + b);
}

#if defined(__AVX512F__)
// Most buckets sort_by_span_wide takes: it passes over the samples once per bucket between
// the smallest and largest span, so it pays only for few (a trained layer's inputs fill
// a few spans of a coarse grid).
constexpr int64_t kWideSortBuckets = 16;

// sort_by_span's result (the same order: each bucket's samples ascending), where the CPU
// has AVX-512 and the spans cover at most kWideSortBuckets buckets: for each bucket, 16
// samples at a time, the indices of those in it compressed into the front of a register
// and stored whole at the bucket's cursor (the lanes past them are overwritten by the
// next store, or land in order's padding past batch + 16, which the caller resets). No
// per-sample counters in memory, whose chain of loads and stores bounded the scalar sort.
// Returns false, with nothing written, where the spans cover more buckets.
inline bool sort_by_span_wide(const int32_t* span, int64_t batch, int64_t buckets, int32_t* start, int32_t* order) {
    const int64_t whole = batch / 16 * 16;
    __m512i low = _mm512_set1_epi32(int32_t(buckets)), high = _mm512_set1_epi32(-1);
    for (int64_t b = 0; b < whole; b += 16) {
        const __m512i v = _mm512_loadu_si512(span + b);
        low = _mm512_min_epi32(low, v);
        high = _mm512_max_epi32(high, v);
    }
    int32_t lo = _mm512_reduce_min_epi32(low), hi = _mm512_reduce_max_epi32(high);
    for (int64_t b = whole; b < batch; ++b) {
        lo = std::min(lo, span[b]);
        hi = std::max(hi, span[b]);
    }
    if (batch == 0) lo = hi = 0;
    if (hi - lo + 1 > kWideSortBuckets) return false;
    const __m512i step = _mm512_set1_epi32(16), lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                                           13, 14, 15);
    int32_t cursor = 0;
    for (int64_t k = 0; k < buckets; ++k) {
        start[k] = cursor;
        if (k < lo || k > hi) continue;
        const __m512i key = _mm512_set1_epi32(int32_t(k));
        __m512i index = lanes;
        for (int64_t b = 0; b < whole; b += 16, index = _mm512_add_epi32(index, step)) {
            const __mmask16 in = _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(span + b), key);
            _mm512_storeu_si512(order + cursor, _mm512_maskz_compress_epi32(in, index));
            cursor += __builtin_popcount(unsigned(in));
        }
        for (int64_t b = whole; b < batch; ++b)
            if (span[b] == k) order[cursor++] = int32_t(b);
    }
    start[buckets] = cursor;
    return true;
}
#endif

// Where the table gradient goes: grad_table (in, coeff, out), or, with grad_w given, straight
// to the gradients of the weights the table was scaled from (scale_spline's w and scaler):
// grad_w[o, i, c] = G[i, c, o] * scaler[o, i] and grad_scaler[o, i] = sum_c G[i, c, o] * w[o, i, c]
// (spline_grads' sums, in its order), without writing G.
template <typename T>
struct TableGrad {
    T* grad_table;
    const T* w;
    const T* scaler;
    T* grad_w;
    T* grad_scaler;
};

// Features whose table-gradient rows gather_table_grad holds before it writes their weights'
// gradients: for each output, the features' (feature, coefficient) gradients are then one
// contiguous run of the (out, in, coeff) weight layout, rather than one feature's few
// values a whole output's stride apart, a scattered write the size of the kernel's output.
constexpr int64_t kWeightBlock = 8;

// spline_grads for the features [i0, i1) of a G whose outputs are contiguous, read at
// G[o + (i - i0) * si + c * sc] (G starts at feature i0): each output's run of features
// in turn, so that the writes to grad_w (out, in, coeff) are one contiguous run each.
template <typename T>
void spline_grads_run(const T* G, int64_t si, int64_t sc, const T* w, const T* scaler, int64_t O, int64_t I,
                      int64_t C, int64_t i0, int64_t i1, T* grad_w, T* grad_scaler) {
    int64_t o_done = 0;
#if defined(__AVX2__)
    // float with 8 coefficients (grid 5, order 3) and G's outputs in runs of 8: 8 outputs
    // by 8 coefficients at a time, transposed in registers, so that G, w and grad_w move
    // a vector at a time rather than in the scalar loop below, several cycles a gradient.
    if constexpr (sizeof(T) == 4) {
        if (C == 8) {
            for (; o_done + 8 <= O; o_done += 8) {
                const int64_t o0 = o_done;
                for (int64_t i = i0; i < i1; ++i) {
                    const T* from = G + o0 + (i - i0) * si;
                    const T* weight = w + (o0 * I + i) * 8;
                    T* to = grad_w + (o0 * I + i) * 8;
                    __m256 g[8], wt[8];
                    for (int c = 0; c < 8; ++c) g[c] = _mm256_loadu_ps(from + c * sc);  // lanes: outputs
                    for (int q = 0; q < 8; ++q) wt[q] = _mm256_loadu_ps(weight + q * I * 8);  // lanes: coefficients
                    transpose8(wt);  // wt[c]: lanes outputs, as g[c]
                    alignas(32) T lanes[8];
                    for (int q = 0; q < 8; ++q) lanes[q] = scaler ? scaler[(o0 + q) * I + i] : T(1);
                    const __m256 scale = _mm256_load_ps(lanes);
                    __m256 total = _mm256_setzero_ps(), scaled[8];
                    for (int c = 0; c < 8; ++c) {
                        total = _mm256_fmadd_ps(g[c], wt[c], total);
                        scaled[c] = _mm256_mul_ps(g[c], scale);
                    }
                    transpose8(scaled);  // scaled[q]: output o0 + q, lanes coefficients
                    for (int q = 0; q < 8; ++q) _mm256_storeu_ps(to + q * I * 8, scaled[q]);
                    if (scaler && grad_scaler) {
                        _mm256_store_ps(lanes, total);
                        for (int q = 0; q < 8; ++q) grad_scaler[(o0 + q) * I + i] = lanes[q];
                    }
                }
            }
        }
    }
#endif
    for (int64_t o = o_done; o < O; ++o)
        for (int64_t i = i0; i < i1; ++i) {
            const T scale = scaler ? scaler[o * I + i] : T(1);
            const T* from = G + o + (i - i0) * si;
            const T* weight = w + (o * I + i) * C;
            T* to = grad_w + (o * I + i) * C;
            T total = T(0);
            for (int64_t c = 0; c < C; ++c) {
                const T g = from[c * sc];
                to[c] = g * scale;
                total += g * weight[c];
            }
            if (scaler && grad_scaler) grad_scaler[o * I + i] = total;
        }
}

// The table gradient G (in, coeff, out): for each coefficient row, the sum over samples of
// value * grad_out[b]. One feature at a time per thread: its samples' local bases, a
// counting sort of the sample indices by knot span, then bucket_rows over chunks of three
// vectors of outputs (twelve accumulators for cubic splines: more than the eight that the
// multiply-adds' latency and throughput need, so loads of grad_out rows have slack), or,
// with AVX-512, first over wide chunks of four 64-byte vectors (see Wide): fewer passes
// over each sample's grad_out row, value and order entry for the same multiply-adds.
// The bases come from x, or, with saved_u given (a uniform grid), from the local
// coordinates and spans that gather_forward saved: no column of x to gather, no span to find.
template <typename T, int K>
void gather_table_grad(const Geometry<T>& g, const T* x, const T* saved_u, const int16_t* saved_span, int64_t batch,
                       const T* grad_out, int64_t out, TableGrad<T> to, int threads) {
    using S = Simd<T>;
    constexpr int L = S::lanes;
    constexpr int CV = K <= 3 ? 3 : 2;  // vectors per chunk: K + 1 rows of CV accumulators, registers permitting
    const int64_t I = g.in_features, coeff = g.coeff, padded_rows = coeff + 2 * K;
#if defined(__AVX512F__)
    // Wide chunks, where a whole one fits in the outputs left: four 64-byte vectors (K + 1
    // rows of them, and the grad_out row, in the 32 registers) for orders up to 5, so that
    // each sample's grad_out row and values are read in fewer passes.
    constexpr int WV = K <= 5 ? 4 : 2;
    constexpr int64_t wide = WV * Wide<T>::lanes;
#else
    constexpr int64_t wide = 0;
#endif
    const int64_t chunk = CV * L;
    const int64_t width = std::max(chunk, wide);  // acc's row width
    const bool from_saved = saved_u != nullptr && g.origin != nullptr && g.cardinal;
#pragma omp parallel num_threads(threads)
    {
        Tile<T> tile(batch, K, false);
        const int64_t buckets = g.knots + 1;  // span + 1, in [0, knots]
        // order's padding: kPrefetch entries 0 (bucket_rows' prefetches read them), and 16 more
        // that sort_by_span_wide may write past them
        std::vector<int32_t> start(buckets + 1), cursor(buckets * kSortWays), order(batch + kPrefetch + 16),
            span(batch);
        std::vector<T> acc(padded_rows * width), column(from_saved ? 0 : batch);
        // with the weights' gradients wanted: the gradient rows of up to kWeightBlock features,
        // feature j's row c at block[(j * coeff + c) * out]
        std::vector<T> block(to.grad_w != nullptr ? kWeightBlock * coeff * out : 0);
        // a static split of the features into consecutive runs, one per thread
#if defined(_OPENMP)
        const int64_t thread = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const int64_t thread = 0, team = 1;
#endif
        const int64_t first_feature = I * thread / team, end_feature = I * (thread + 1) / team;
        for (int64_t i = first_feature, block_first = first_feature; i < end_feature; ++i) {
            if (from_saved) {
                saved_bases<T, K>(saved_u + i * batch, batch, tile);
                const int16_t* spans = saved_span + i * batch;
                for (int64_t b = 0; b < batch; ++b) span[b] = int32_t(spans[b]) + 1;  // in [0, knots]
            } else {
                // a thread's features are consecutive: the rows of x read here stay in its cache
                for (int64_t b = 0; b < batch; ++b) column[b] = x[b * I + i];
                tile_bases<T, K, true>(g, column.data(), i, batch, tile, false);
                for (int64_t b = 0; b < batch; ++b) span[b] = int32_t(tile.span[b]) + 1;
            }
#if defined(__AVX512F__)
            if (sort_by_span_wide(span.data(), batch, buckets, start.data(), order.data()))
                std::fill(order.begin() + batch, order.end(), 0);
            else
#endif
                sort_by_span(span.data(), batch, buckets, cursor.data(), start.data(), order.data());
            const T* value = tile.value.data();
            const int64_t s = tile.stride;
            for (int64_t o = 0, count = 0; o < out; o += count) {
                // whole chunks (wide ones first, where the CPU has them); the rest (under one)
                // with its last vector cut
                count = std::min(out - o, out - o >= wide && wide > 0 ? wide : chunk);
                std::fill(acc.begin(), acc.end(), T(0));
                const int nv = int((count + L - 1) / L), tail = int(count - (nv - 1) * L);
                const auto run = [&](auto vectors, auto masked) {
                    bucket_rows<T, K, decltype(vectors)::value, decltype(masked)::value>(
                        start.data(), g.knots, order.data(), value, s, grad_out, out, o, tail, acc.data(), width);
                };
                if (wide > 0 && count == wide) {
#if defined(__AVX512F__)
                    bucket_rows<T, K, WV, false, Wide<T>>(start.data(), g.knots, order.data(), value, s, grad_out,
                                                          out, o, L, acc.data(), width);
#endif
                } else if (count == chunk) run(std::integral_constant<int, CV>(), std::false_type());
                else if (tail == L && nv == 2) run(std::integral_constant<int, 2>(), std::false_type());
                else if (tail == L) run(std::integral_constant<int, 1>(), std::false_type());
                else if (nv == 3) run(std::integral_constant<int, 3>(), std::true_type());
                else if (nv == 2) run(std::integral_constant<int, 2>(), std::true_type());
                else run(std::integral_constant<int, 1>(), std::true_type());
                const T* rows = acc.data() + K * width;  // row c of this chunk at rows + c * width
                T* into = to.grad_w == nullptr ? to.grad_table + i * coeff * out
                                               : block.data() + (i - block_first) * coeff * out;
                for (int64_t c = 0; c < coeff; ++c)
                    std::memcpy(into + c * out + o, rows + c * width, sizeof(T) * count);
            }
            if (to.grad_w != nullptr && (i + 1 == end_feature || i + 1 - block_first == kWeightBlock)) {
                spline_grads_run(block.data(), coeff * out, out, to.w, to.scaler, out, I, coeff, block_first, i + 1,
                                 to.grad_w, to.grad_scaler);
                block_first = i + 1;
            }
        }
    }
}

// grad_x[b, i] = sum_d slope[b, i, d] * <grad_out[b, :], table[i, first + d, :]>.
template <typename T, int K>
void gather_input_grad(const Geometry<T>& g, const T* x, int64_t batch, const T* table, const T* grad_out,
                       int64_t out, T* grad_x, int threads) {
    using S = Simd<T>;
    const int64_t I = g.in_features, coeff = g.coeff;
    sample_major<T, K>(g, x, batch, out, true, 1, threads, [&](int64_t b, int64_t, int64_t i0, const Tile<T>* tiles) {
        const Tile<T>& tile = tiles[0];
        const int64_t s = tile.stride;
        const T* gb = grad_out + b * out;
        for (int64_t j = 0; j < tile.n; ++j) {
            const T* feature = table + (i0 + j) * coeff * out;
            typename S::V spline{};
            int64_t o = 0;
            for (; o + S::lanes <= out; o += S::lanes) {
                typename S::V combined{};
                for (int d = 0; d <= K; ++d)
                    combined += S::splat(tile.slope[d * s + j]) * S::load(feature + int64_t(tile.row[d * s + j]) * out + o);
                spline += combined * S::load(gb + o);
            }
            if (o < out) {  // the last, cut vector
                const typename S::VM m = S::mask(int(out - o));
                typename S::V combined{};
                for (int d = 0; d <= K; ++d)
                    combined += S::splat(tile.slope[d * s + j]) *
                                S::load_first(feature + int64_t(tile.row[d * s + j]) * out + o, m);
                spline += combined * S::load_first(gb + o, m);
            }
            const T total = S::sum(spline);
            grad_x[b * I + i0 + j] = total;
        }
    });
}

// ----------------------------------------------------------------- dense kernels

// The combined product's left operand, basis-major: result (rows, coeff + 1, in), row
// r holding the coeff bases of every feature (zero but for the local ones), then
// base[r, :] (the base activation). On a uniform grid each vector of features is
// written straight from registers, one select per local basis and column; on other
// grids from a tile.
template <typename T, int K>
void dense_bases(const Geometry<T>& g, const T* x, const T* base, int64_t rows, T* result, int threads) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int L = S::lanes;
    const int64_t I = g.in_features, coeff = g.coeff, width = coeff + 1;
#pragma omp parallel num_threads(threads)
    {
        Tile<T> tile(g.origin != nullptr ? 0 : I, K, false);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            T* __restrict out = result + r * width * I;
            const T* xr = x + r * I;
            std::memcpy(out + coeff * I, base + r * I, sizeof(T) * I);
            if (g.origin != nullptr) {
                int64_t j = 0;
                for (; j + L <= I; j += L) {
                    V span, inv_step, u, v[K + 2], below[K + 2];
                    lane_bases<T, K, false>(g, xr, 0, j, I, span, inv_step, u, v, below);
                    const V first = span - T(K);
                    for (int64_t c = 0; c < coeff; ++c) {
                        const V d = T(c) - first;  // which local basis column c is, if any
                        V cell{};
                        for (int k = 0; k <= K; ++k) cell = d == T(k) ? v[k + 1] : cell;
                        S::store(out + c * I + j, cell);
                    }
                }
                if (j < I) {  // the last, partial vector of features, through a scratch row
                    V span, inv_step, u, v[K + 2], below[K + 2];
                    lane_bases<T, K, false>(g, xr, 0, j, I, span, inv_step, u, v, below);
                    const V first = span - T(K);
                    for (int64_t c = 0; c < coeff; ++c) {
                        const V d = T(c) - first;
                        V cell{};
                        for (int k = 0; k <= K; ++k) cell = d == T(k) ? v[k + 1] : cell;
                        for (int64_t l = 0; j + l < I; ++l) out[c * I + j + l] = cell[l];
                    }
                }
            } else {
                tile_bases<T, K>(g, xr, 0, I, tile, false);
                const int64_t s = tile.stride;
                std::memset(out, 0, sizeof(T) * coeff * I);
                // non-existent bases have value 0 and a clamped index: adding keeps the zeros
                for (int d = 0; d <= K; ++d)
                    for (int64_t i = 0; i < I; ++i) out[int64_t(tile.row[d * s + i]) * I + i] += tile.value[d * s + i];
            }
        }
    }
}

// ----------------------------------------------------------------- weights

// The scaled spline weights written into a kernel's layout: dst[o * so + i * si + c * sc]
// = w[o, i, c] * scaler[o, i] (no scaler: a copy); w (out, in, coeff) contiguous. Both
// sides of the transposition use whole cache lines. Where the outputs are dst's
// contiguous axis (so == 1: the gather table, the dense gradient), a thread takes a
// block of kRunBlock features and walks the outputs: it reads w[o, block, :] whole and
// appends one value to each of the block's (i, c) runs of dst, which stay in its
// cache. Elsewhere (the dense weight, features contiguous) each output's features go
// in blocks of 16.
constexpr int64_t kRunBlock = 8;

template <typename T>
void scale_spline(const T* w, const T* scaler, int64_t O, int64_t I, int64_t C, T* dst, int64_t so, int64_t si,
                  int64_t sc, int threads) {
#if defined(__AVX2__)
    // float with 8 coefficients (grid 5, order 3) into the gather table (so == 1): a thread
    // takes a feature, and for 8 outputs at a time reads their 8 coefficients, scales them
    // and turns the 8 x 8 block round in registers into 8 vector stores, one per
    // coefficient run, rather than 8 strided scalar stores per output.
    if constexpr (sizeof(T) == 4) {
        if (so == 1 && C == 8) {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (int64_t i = 0; i < I; ++i) {
                int64_t o0 = 0;
                for (; o0 + 8 <= O; o0 += 8) {
                    __m256 r[8];
                    for (int q = 0; q < 8; ++q) {  // r[q]: output o0 + q, lanes coefficients
                        r[q] = _mm256_loadu_ps(w + ((o0 + q) * I + i) * 8);
                        if (scaler) r[q] = _mm256_mul_ps(r[q], _mm256_set1_ps(scaler[(o0 + q) * I + i]));
                    }
                    transpose8(r);  // r[c]: coefficient c, lanes outputs
                    for (int c = 0; c < 8; ++c) _mm256_storeu_ps(dst + o0 + i * si + c * sc, r[c]);
                }
                for (; o0 < O; ++o0) {
                    const T scale = scaler ? scaler[o0 * I + i] : T(1);
                    for (int64_t c = 0; c < 8; ++c) dst[o0 + i * si + c * sc] = w[(o0 * I + i) * 8 + c] * scale;
                }
            }
            return;
        }
    }
#endif
    if (so == 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t i0 = 0; i0 < I; i0 += kRunBlock) {
            const int64_t i1 = std::min(I, i0 + kRunBlock);
            for (int64_t o = 0; o < O; ++o)
                for (int64_t i = i0; i < i1; ++i) {
                    const T scale = scaler ? scaler[o * I + i] : T(1);
                    const T* from = w + (o * I + i) * C;
                    T* to = dst + o + i * si;
                    for (int64_t c = 0; c < C; ++c) to[c * sc] = from[c] * scale;
                }
        }
        return;
    }
    constexpr int64_t kBlock = 16;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t o = 0; o < O; ++o) {
        for (int64_t i0 = 0; i0 < I; i0 += kBlock) {
            const int64_t i1 = std::min(I, i0 + kBlock);
            for (int64_t c = 0; c < C; ++c)
                for (int64_t i = i0; i < i1; ++i)
                    dst[o * so + i * si + c * sc] = w[(o * I + i) * C + c] * (scaler ? scaler[o * I + i] : T(1));
        }
    }
}

// From the gradient G of the scaled weights, read at G[o * so + i * si + c * sc]: the
// gradients of w (out, in, coeff) and of its scaler (out, in): G * scaler and
// sum_c G * w. No scaler: grad_w is G itself, grad_scaler is not written. The loops
// are scale_spline's, reading where it writes.
template <typename T>
void spline_grads(const T* G, int64_t so, int64_t si, int64_t sc, const T* w, const T* scaler, int64_t O, int64_t I,
                  int64_t C, T* grad_w, T* grad_scaler, int threads) {
    if (so == 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t i0 = 0; i0 < I; i0 += kRunBlock)
            spline_grads_run(G + i0 * si, si, sc, w, scaler, O, I, C, i0, std::min(I, i0 + kRunBlock), grad_w,
                             grad_scaler);
        return;
    }
    constexpr int64_t kBlock = 16;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t o = 0; o < O; ++o) {
        for (int64_t i0 = 0; i0 < I; i0 += kBlock) {
            const int64_t i1 = std::min(I, i0 + kBlock);
            T total[kBlock] = {};
            for (int64_t c = 0; c < C; ++c) {
                for (int64_t i = i0; i < i1; ++i) {
                    const T g = G[o * so + i * si + c * sc];
                    grad_w[(o * I + i) * C + c] = scaler ? g * scaler[o * I + i] : g;
                    total[i - i0] += g * w[(o * I + i) * C + c];
                }
            }
            if (scaler && grad_scaler)
                for (int64_t i = i0; i < i1; ++i) grad_scaler[o * I + i] = total[i - i0];
        }
    }
}

// Local bases as arrays (tests, and paths that need them outside a kernel): first
// (batch, in), value and slope (batch, in, order + 1); slope may be null.
template <typename T, int K>
void local_bases(const Geometry<T>& g, const T* x, int64_t batch, int64_t* first, T* value, T* slope, int threads) {
    const int64_t I = g.in_features;
#pragma omp parallel num_threads(threads)
    {
        Tile<T> tile(I, K, slope != nullptr);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; ++b) {
            tile_bases<T, K>(g, x + b * I, 0, I, tile, slope != nullptr);
            const int64_t s = tile.stride;
            for (int64_t i = 0; i < I; ++i) {
                first[b * I + i] = int64_t(tile.span[i]) - K;
                for (int d = 0; d <= K; ++d) {
                    value[(b * I + i) * (K + 1) + d] = tile.value[d * s + i];
                    if (slope != nullptr) slope[(b * I + i) * (K + 1) + d] = tile.slope[d * s + i];
                }
            }
        }
    }
}

// ----------------------------------------------------------------- dispatch on the order

template <typename T, template <typename, int> class Kernel, typename... Args>
void dispatch(int order, Args... args) {
    switch (order) {
        case 0: Kernel<T, 0>::run(args...); break;
        case 1: Kernel<T, 1>::run(args...); break;
        case 2: Kernel<T, 2>::run(args...); break;
        case 3: Kernel<T, 3>::run(args...); break;
        case 4: Kernel<T, 4>::run(args...); break;
        case 5: Kernel<T, 5>::run(args...); break;
        case 6: Kernel<T, 6>::run(args...); break;
        case 7: Kernel<T, 7>::run(args...); break;
        default: break;
    }
}

#define KAN_KERNEL(Name, function)                  \
    template <typename T, int K>                     \
    struct Name {                                    \
        template <typename... A>                     \
        static void run(A... a) { function<T, K>(a...); } \
    };
KAN_KERNEL(GatherForward, gather_forward)
KAN_KERNEL(GatherTableGrad, gather_table_grad)
KAN_KERNEL(GatherInputGrad, gather_input_grad)
KAN_KERNEL(DenseBases, dense_bases)
KAN_KERNEL(LocalBases, local_bases)

// The team for a caller's thread count: at least one thread, and no more than OpenMP
// would run anyway (the larger of the processors and its own limit, which torch sets),
// so that no count passed in asks the runtime for an absurd team.
int team(int threads) {
#if defined(_OPENMP)
    const int most = std::max(omp_get_num_procs(), omp_get_max_threads());
#else
    const int most = 1;
#endif
    return std::max(1, std::min(threads, most));
}

}  // namespace

#define KAN_GEOMETRY_ARGS(T) \
    int64_t in_features, int order, int64_t knots, const T *knots_ext, const T *knots_padded, const T *origin, \
        const T *inv_step, int cardinal
#define KAN_GEOMETRY(T) \
    with_shared_knots(Geometry<T>{in_features, order, knots - 1 - order, knots, knots_ext, knots_padded, origin, inv_step, \
                               cardinal != 0})

#define KAN_EXPORT(T, suffix)                                                                                        \
    extern "C" int kan_max_order_##suffix() { return kMaxOrder; }                                                    \
    extern "C" void kan_gather_forward_##suffix(KAN_GEOMETRY_ARGS(T), const T* x, int64_t batch, const T* table,     \
                                                int64_t out, T* result, T* saved_u, int16_t* saved_span,             \
                                                int threads) {                                                       \
        dispatch<T, GatherForward>(order, KAN_GEOMETRY(T), x, batch, table, out, result, saved_u, saved_span,        \
                                   team(threads));                                                                   \
    }                                                                                                                \
    extern "C" void kan_gather_table_grad_##suffix(KAN_GEOMETRY_ARGS(T), const T* x, const T* saved_u,               \
                                                   const int16_t* saved_span, int64_t batch, const T* grad_out,      \
                                                   int64_t out, T* grad_table, const T* w, const T* scaler,          \
                                                   T* grad_w, T* grad_scaler, int threads) {                         \
        dispatch<T, GatherTableGrad>(order, KAN_GEOMETRY(T), x, saved_u, saved_span, batch, grad_out, out,           \
                                     TableGrad<T>{grad_table, w, scaler, grad_w, grad_scaler}, team(threads));       \
    }                                                                                                                \
    extern "C" void kan_gather_input_grad_##suffix(KAN_GEOMETRY_ARGS(T), const T* x, int64_t batch,                  \
                                                   const T* table, const T* grad_out, int64_t out, T* grad_x,        \
                                                   int threads) {                                                    \
        dispatch<T, GatherInputGrad>(order, KAN_GEOMETRY(T), x, batch, table, grad_out, out, grad_x, team(threads)); \
    }                                                                                                                \
    extern "C" void kan_dense_bases_##suffix(KAN_GEOMETRY_ARGS(T), const T* x, const T* base, int64_t rows,          \
                                             T* result, int threads) {                                               \
        dispatch<T, DenseBases>(order, KAN_GEOMETRY(T), x, base, rows, result, team(threads));                       \
    }                                                                                                                \
    extern "C" void kan_local_bases_##suffix(KAN_GEOMETRY_ARGS(T), const T* x, int64_t batch, int64_t* first,        \
                                             T* value, T* slope, int threads) {                                      \
        dispatch<T, LocalBases>(order, KAN_GEOMETRY(T), x, batch, first, value, slope, team(threads));               \
    }

#define KAN_EXPORT_WEIGHTS(T, suffix)                                                                                \
    extern "C" void kan_scale_spline_##suffix(const T* w, const T* scaler, int64_t O, int64_t I, int64_t C, T* dst,  \
                                              int64_t so, int64_t si, int64_t sc, int threads) {                     \
        scale_spline(w, scaler, O, I, C, dst, so, si, sc, team(threads));                                            \
    }                                                                                                                \
    extern "C" void kan_silu_##suffix(const T* x, int64_t n, T* y, int threads) { silu(x, n, y, team(threads)); }    \
    extern "C" void kan_silu_grad_##suffix(const T* x, const T* grad, int64_t n, T* out, int accumulate,             \
                                           int threads) {                                                            \
        silu_grad(x, grad, n, out, accumulate != 0, team(threads));                                                  \
    }                                                                                                                \
    extern "C" void kan_spline_grads_##suffix(const T* G, int64_t so, int64_t si, int64_t sc, const T* w,            \
                                              const T* scaler, int64_t O, int64_t I, int64_t C, T* grad_w,           \
                                              T* grad_scaler, int threads) {                                         \
        spline_grads(G, so, si, sc, w, scaler, O, I, C, grad_w, grad_scaler, team(threads));                         \
    }

KAN_EXPORT_WEIGHTS(float, f32)
KAN_EXPORT_WEIGHTS(double, f64)
KAN_EXPORT(float, f32)
KAN_EXPORT(double, f64)

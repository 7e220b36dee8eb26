// medvox_nb._sdf: a narrow-band signed distance kernel for triangle meshes on a regular grid (CPU, OpenMP).
//
// The Direct3D-S2 UDF idea on the CPU: every triangle visits only the grid points inside its bounding box
// grown by the band, computes the exact point-to-triangle distance and keeps the minimum per point.
// Nothing of size R^3 is ever allocated:
//   1. triangles are binned into the 16^3 bricks their grown box (and their plane slab) touches:
//      (brick key, triangle) pairs, sorted;
//   2. bricks are processed in parallel, each with a private 16^3 buffer, so no two threads write the
//      same point and no atomics are needed; a triangle only visits the points of its plane slab
//      (|plane distance| < band) inside its grown box;
//   3. the points of a brick closer than the band are appended to the thread's own buffer and the
//      buffers are concatenated in brick order (deterministic, no duplicates by construction).
// Sign: ray parity along grid lines. For one axis, every triangle is projected along the axis and
// tested against the integer lattice lines it covers; the 2D predicates are exact (double with an
// error filter, then binary128) with a symbolic perturbation of the line (simulation of simplicity),
// so a line through a vertex or an edge is counted exactly once: parity is exact for a closed mesh.
// Modes: 'z' (one axis: watertight input, e.g. marching cubes of a mask) and 'vote' (three axes,
// an axis whose line crosses the surface an odd number of times, i.e. passes through a hole, abstains;
// majority of the others; all abstain -> side of the nearest triangle's plane).
//
// Coordinates are grid units: grid point (i, j, k) sits at (i, j, k). Heavy loops run without the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

constexpr int B = 16;              // brick edge (grid points)
constexpr int B3 = B * B * B;

struct Tri {
    double a[3], b[3], c[3];
    double n[3];                  // unit normal (zero if degenerate)
    double d;                     // plane offset n . a
    double ctr[3], rad;           // bounding sphere (centroid, max vertex distance)
    double ab[3], ac[3], bc[3];   // edges
    double ab_a, ab_b, ab_c, ac_a, ac_b, ac_c;   // ab.a, ab.b, ... so that Ericson's dot products cost two per point
    int lo[3], hi[3];             // grown, clipped box (inclusive); lo > hi: empty
    int dom;                      // dominant normal axis
    bool degenerate;
};

// A per-thread output buffer in fixed blocks: no reallocation, so no doubling slack at 10^7 points.
struct Entry { int32_t x, y, z; float d; };
struct Chunked {
    static constexpr size_t BLOCK = 1 << 16;
    std::vector<std::unique_ptr<Entry[]>> blocks;
    size_t n = 0;
    void push(const Entry& e) {
        if (n % BLOCK == 0 && n / BLOCK == blocks.size()) blocks.emplace_back(new Entry[BLOCK]);
        blocks[n / BLOCK][n % BLOCK] = e;
        ++n;
    }
    const Entry& operator[](size_t i) const { return blocks[i / BLOCK][i % BLOCK]; }
};

// floor / ceil to int without a libm call (baseline x86-64 has no SSE4.1 rounding); |x| < 2^31
inline int ifloor(double x) { int i = (int)x; return i - (x < i); }
inline int iceil(double x) { int i = (int)x; return i + (x > i); }

inline double dot3(const double* u, const double* v) { return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]; }

// Squared distance from p to segment [a, b].
inline double seg_dist2(const double* p, const double* a, const double* b) {
    double ab[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]}, ap[3] = {p[0] - a[0], p[1] - a[1], p[2] - a[2]};
    double l2 = dot3(ab, ab), t = l2 > 0 ? dot3(ap, ab) / l2 : 0.0;
    t = t < 0 ? 0 : (t > 1 ? 1 : t);
    double q[3] = {ap[0] - t * ab[0], ap[1] - t * ab[1], ap[2] - t * ab[2]};
    return dot3(q, q);
}

// Exact (double precision) squared distance from p to triangle t: Ericson, Real-Time Collision
// Detection 5.1.5, with the face region measured along the unit normal.
inline double tri_dist2(const double* p, const Tri& t) {
    if (t.degenerate) return std::min(seg_dist2(p, t.a, t.b), std::min(seg_dist2(p, t.b, t.c), seg_dist2(p, t.c, t.a)));
    const double *a = t.a, *b = t.b, *c = t.c;
    double ab[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]}, ac[3] = {c[0] - a[0], c[1] - a[1], c[2] - a[2]};
    double ap[3] = {p[0] - a[0], p[1] - a[1], p[2] - a[2]};
    double d1 = dot3(ab, ap), d2 = dot3(ac, ap);
    if (d1 <= 0 && d2 <= 0) return dot3(ap, ap);
    double bp[3] = {p[0] - b[0], p[1] - b[1], p[2] - b[2]};
    double d3 = dot3(ab, bp), d4 = dot3(ac, bp);
    if (d3 >= 0 && d4 <= d3) return dot3(bp, bp);
    double vc = d1 * d4 - d3 * d2;
    if (vc <= 0 && d1 >= 0 && d3 <= 0) {
        double v = d1 / (d1 - d3), q[3] = {ap[0] - v * ab[0], ap[1] - v * ab[1], ap[2] - v * ab[2]};
        return dot3(q, q);
    }
    double cp[3] = {p[0] - c[0], p[1] - c[1], p[2] - c[2]};
    double d5 = dot3(ab, cp), d6 = dot3(ac, cp);
    if (d6 >= 0 && d5 <= d6) return dot3(cp, cp);
    double vb = d5 * d2 - d1 * d6;
    if (vb <= 0 && d2 >= 0 && d6 <= 0) {
        double w = d2 / (d2 - d6), q[3] = {ap[0] - w * ac[0], ap[1] - w * ac[1], ap[2] - w * ac[2]};
        return dot3(q, q);
    }
    double va = d3 * d6 - d5 * d4;
    if (va <= 0 && (d4 - d3) >= 0 && (d5 - d6) >= 0) {
        double w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
        double bc[3] = {c[0] - b[0], c[1] - b[1], c[2] - b[2]}, q[3] = {bp[0] - w * bc[0], bp[1] - w * bc[1], bp[2] - w * bc[2]};
        return dot3(q, q);
    }
    double h = dot3(t.n, ap);
    return h * h;
}

// The same for a non-degenerate triangle, given the plane distance h = n.p - d: d1..d6 from two dot products.
inline double tri_dist2_h(const double* p, const Tri& t, double h) {
    const double abp = dot3(t.ab, p), acp = dot3(t.ac, p);
    const double d1 = abp - t.ab_a, d2 = acp - t.ac_a;
    if (d1 <= 0 && d2 <= 0) { double q[3] = {p[0] - t.a[0], p[1] - t.a[1], p[2] - t.a[2]}; return dot3(q, q); }
    const double d3 = abp - t.ab_b, d4 = acp - t.ac_b;
    if (d3 >= 0 && d4 <= d3) { double q[3] = {p[0] - t.b[0], p[1] - t.b[1], p[2] - t.b[2]}; return dot3(q, q); }
    const double vc = d1 * d4 - d3 * d2;
    if (vc <= 0 && d1 >= 0 && d3 <= 0) {
        const double v = d1 / (d1 - d3);
        double q[3] = {p[0] - t.a[0] - v * t.ab[0], p[1] - t.a[1] - v * t.ab[1], p[2] - t.a[2] - v * t.ab[2]};
        return dot3(q, q);
    }
    const double d5 = abp - t.ab_c, d6 = acp - t.ac_c;
    if (d6 >= 0 && d5 <= d6) { double q[3] = {p[0] - t.c[0], p[1] - t.c[1], p[2] - t.c[2]}; return dot3(q, q); }
    const double vb = d5 * d2 - d1 * d6;
    if (vb <= 0 && d2 >= 0 && d6 <= 0) {
        const double w = d2 / (d2 - d6);
        double q[3] = {p[0] - t.a[0] - w * t.ac[0], p[1] - t.a[1] - w * t.ac[1], p[2] - t.a[2] - w * t.ac[2]};
        return dot3(q, q);
    }
    const double va = d3 * d6 - d5 * d4;
    if (va <= 0 && (d4 - d3) >= 0 && (d5 - d6) >= 0) {
        const double w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
        double q[3] = {p[0] - t.b[0] - w * t.bc[0], p[1] - t.b[1] - w * t.bc[1], p[2] - t.b[2] - w * t.bc[2]};
        return dot3(q, q);
    }
    return h * h;
}


// One triangle over the points of one brick (inclusive box lo..hi; bl: the brick's first point): for every
// lattice line along the dominant normal axis M, only the points of the plane slab |n.p - d| < band that are
// also within rad + band of the centroid; a point is evaluated exactly only if neither lower bound (plane
// distance |h|, and sqrt(h^2 + (in-plane distance to the centroid - rad)^2)) already rules the triangle out.
template <int M>
inline void visit(const Tri& t, int32_t f, const int* lo, const int* hi, const int* bl, double band,
                  double* best, double* bestd, int32_t* who, int64_t& evals_out, int64_t& visits_out) {
    constexpr int U = (M + 1) % 3, W = (M + 2) % 3;
    constexpr int stride[3] = {B * B, B, 1};
    int64_t evals = 0, visits = 0;
    const double reach = t.rad + band, reach2 = reach * reach, inm = 1.0 / t.n[M];
    const double nU = t.n[U], nW = t.n[W], nM = t.n[M], rad2 = t.rad * t.rad;
    // range of n_M m and n_W w over the box, to restrict rows (u) and columns (w) to those the slab reaches
    const double mA = std::min(nM * lo[M], nM * hi[M]), mB = std::max(nM * lo[M], nM * hi[M]);
    const double wA = std::min(nW * lo[W], nW * hi[W]), wB = std::max(nW * lo[W], nW * hi[W]);
    int u0 = std::max(lo[U], iceil(t.ctr[U] - reach)), u1 = std::min(hi[U], ifloor(t.ctr[U] + reach));
    if (nU != 0) {   // -band < nU u + (nM m + nW w) - d < band for some m, w in the box
        double e0 = (t.d - band - (mB + wB)) / nU, e1 = (t.d + band - (mA + wA)) / nU;
        if (e0 > e1) std::swap(e0, e1);
        u0 = std::max(u0, iceil(std::max(e0, (double)u0 - 1))); u1 = std::min(u1, ifloor(std::min(e1, (double)u1 + 1)));
    }
    double p[3];
    for (int cu = u0; cu <= u1; ++cu) {
        const double du = cu - t.ctr[U], rem = reach2 - du * du;
        if (rem <= 0) continue;
        const double su = nU * cu - t.d, qw = std::sqrt(rem);
        int w0 = std::max(lo[W], iceil(t.ctr[W] - qw)), w1 = std::min(hi[W], ifloor(t.ctr[W] + qw));
        if (nW != 0) {   // -band < nW w + su + nM m < band for some m in the box
            double e0 = (-band - su - mB) / nW, e1 = (band - su - mA) / nW;
            if (e0 > e1) std::swap(e0, e1);
            w0 = std::max(w0, iceil(std::max(e0, (double)w0 - 1))); w1 = std::min(w1, ifloor(std::min(e1, (double)w1 + 1)));
        } else if (!(-band - su < mB && band - su > mA)) continue;
        for (int cw = w0; cw <= w1; ++cw) {
            const double dw = cw - t.ctr[W], r2 = du * du + dw * dw, q2 = reach2 - r2;
            if (q2 <= 0) continue;
            const double sres = su + nW * cw;                 // plane distance at x_M: n_M x_M + sres
            double e0 = (-band - sres) * inm, e1 = (band - sres) * inm;
            if (e0 > e1) std::swap(e0, e1);
            const double q = std::sqrt(q2);
            e0 = std::max({e0, t.ctr[M] - q, (double)lo[M]});
            e1 = std::min({e1, t.ctr[M] + q, (double)hi[M]});
            const int m0 = iceil(e0), m1 = ifloor(e1);
            if (m0 > m1) continue;
            visits += m1 - m0 + 1;
            const int base = (cu - bl[U]) * stride[U] + (cw - bl[W]) * stride[W] - bl[M] * stride[M];
            p[U] = cu; p[W] = cw;
            for (int cm = m0; cm <= m1; ++cm) {
                const int li = base + cm * stride[M];
                const double h = nM * cm + sres;
                if (h * h >= best[li]) continue;                        // plane distance: a lower bound
                const double dm = cm - t.ctr[M], rho2 = r2 + dm * dm - h * h;   // in-plane distance^2 to the centroid
                if (rho2 > rad2) {                                      // outside the in-plane disc: a tighter bound
                    const double e = std::sqrt(rho2) - t.rad;
                    if (h * h + e * e >= best[li]) continue;
                }
                p[M] = cm;
                const double d2 = tri_dist2_h(p, t, h);
                evals++;
                if (d2 < best[li]) { best[li] = d2; bestd[li] = std::sqrt(d2); who[li] = f; }
            }
        }
    }
    evals_out += evals;
    visits_out += visits;
}

// ------------------------------------------------------------------ exact 2D predicates
// Sign of det(A, B) = au*bv - av*bu for the query at the origin, perturbed symbolically by (e, e^2):
// never 0 unless A == B. Antisymmetric bit for bit, so two triangles sharing an edge agree.
inline int orient_sos(double au, double av, double bu, double bv) {
    double l = au * bv, r = av * bu, det = l - r;
    double bound = 4.440892098500626e-16 * (std::fabs(l) + std::fabs(r));   // 4u(|l|+|r|) >= rounding error
    if (det > bound) return 1;
    if (-det > bound) return -1;
    __float128 e = (__float128)au * (__float128)bv - (__float128)av * (__float128)bu;   // products exact in 113 bits
    if (e > 0) return 1;
    if (e < 0) return -1;
    // det(A - d, B - d) = det(A, B) + (B - A) x d, d = (e, e^2): -(bv - av) e + (bu - au) e^2
    if (bv != av) return bv > av ? -1 : 1;
    if (bu != au) return bu > au ? 1 : -1;
    return 0;
}

struct Crossing { uint64_t key; double t; };

// Crossings of the lattice lines parallel to `axis` with the mesh, grouped by line (CSR).
struct Columns {
    int axis = 2, ru = 0, rv = 0;           // u = (axis+1)%3, v = (axis+2)%3
    std::vector<uint64_t> keys;             // sorted unique line keys (iu * rv + iv)
    std::vector<int64_t> start;             // keys.size() + 1 offsets into t
    std::vector<double> t;                  // crossing coordinates along the axis, sorted per line
    // number of crossings of line (iu, iv) below w, and the total on that line; `last` caches the previous line
    struct Line { uint64_t key = ~uint64_t(0); const double *b0 = nullptr, *b1 = nullptr; };
    inline void count(int iu, int iv, double w, int64_t& below, int64_t& total, Line& last) const {
        uint64_t k = (uint64_t)iu * (uint64_t)rv + (uint64_t)iv;
        if (k != last.key) {
            last.key = k;
            auto it = std::lower_bound(keys.begin(), keys.end(), k);
            if (it == keys.end() || *it != k) last.b0 = last.b1 = nullptr;
            else { size_t s = it - keys.begin(); last.b0 = t.data() + start[s]; last.b1 = t.data() + start[s + 1]; }
        }
        if (!last.b0) { below = total = 0; return; }
        below = std::lower_bound(last.b0, last.b1, w) - last.b0;
        total = last.b1 - last.b0;
    }
};

void build_columns(Columns& col, int axis, const std::vector<Tri>& tris, const int* res, int nthreads) {
    col.axis = axis;
    int u = (axis + 1) % 3, v = (axis + 2) % 3;
    col.ru = res[u]; col.rv = res[v];
    const int64_t nt = (int64_t)tris.size();
    std::vector<std::vector<Crossing>> local(nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        auto& out = local[tid];
#pragma omp for schedule(dynamic, 256)
        for (int64_t f = 0; f < nt; ++f) {
            const Tri& T = tris[f];
            const double* P[3] = {T.a, T.b, T.c};
            double umin = std::min({P[0][u], P[1][u], P[2][u]}), umax = std::max({P[0][u], P[1][u], P[2][u]});
            double vmin = std::min({P[0][v], P[1][v], P[2][v]}), vmax = std::max({P[0][v], P[1][v], P[2][v]});
            int iu0 = std::max(0, (int)std::ceil(umin)), iu1 = std::min(res[u] - 1, (int)std::floor(umax));
            int iv0 = std::max(0, (int)std::ceil(vmin)), iv1 = std::min(res[v] - 1, (int)std::floor(vmax));
            for (int iu = iu0; iu <= iu1; ++iu)
                for (int iv = iv0; iv <= iv1; ++iv) {
                    double Au = P[0][u] - iu, Av = P[0][v] - iv, Bu = P[1][u] - iu, Bv = P[1][v] - iv;
                    double Cu = P[2][u] - iu, Cv = P[2][v] - iv;
                    int s1 = orient_sos(Au, Av, Bu, Bv);
                    if (s1 == 0) continue;
                    int s2 = orient_sos(Bu, Bv, Cu, Cv);
                    if (s2 != s1) continue;
                    int s3 = orient_sos(Cu, Cv, Au, Av);
                    if (s3 != s1) continue;
                    double la = Bu * Cv - Bv * Cu, lb = Cu * Av - Cv * Au, lc = Au * Bv - Av * Bu, s = la + lb + lc;
                    double tt = s != 0 ? (la * P[0][axis] + lb * P[1][axis] + lc * P[2][axis]) / s
                                       : (P[0][axis] + P[1][axis] + P[2][axis]) / 3.0;
                    out.push_back({(uint64_t)iu * (uint64_t)res[v] + (uint64_t)iv, tt});
                }
        }
    }
    size_t n = 0;
    for (auto& l : local) n += l.size();
    std::vector<Crossing> all;
    all.reserve(n);
    for (auto& l : local) { all.insert(all.end(), l.begin(), l.end()); std::vector<Crossing>().swap(l); }
    std::sort(all.begin(), all.end(), [](const Crossing& x, const Crossing& y) { return x.key < y.key || (x.key == y.key && x.t < y.t); });
    col.t.resize(n);
    col.keys.clear(); col.start.clear();
    for (size_t i = 0; i < n; ++i) {
        if (i == 0 || all[i].key != all[i - 1].key) { col.keys.push_back(all[i].key); col.start.push_back((int64_t)i); }
        col.t[i] = all[i].t;
    }
    col.start.push_back((int64_t)n);
}

// ------------------------------------------------------------------ mesh preparation
std::vector<Tri> prepare(py::array_t<double, py::array::c_style | py::array::forcecast>& V,
                         py::array_t<int64_t, py::array::c_style | py::array::forcecast>& F,
                         const int* res, double band) {
    if (V.ndim() != 2 || V.shape(1) != 3) throw std::invalid_argument("vertices must have shape (V, 3)");
    if (F.ndim() != 2 || F.shape(1) != 3) throw std::invalid_argument("faces must have shape (F, 3)");
    const int64_t nv = V.shape(0), nf = F.shape(0);
    const double* v = V.data();
    const int64_t* f = F.data();
    for (int64_t i = 0; i < nv * 3; ++i)
        if (!std::isfinite(v[i])) throw std::invalid_argument("vertices contain NaN or inf");
    for (int64_t i = 0; i < nf * 3; ++i)
        if (f[i] < 0 || f[i] >= nv) throw std::invalid_argument("faces index a vertex out of range");
    std::vector<Tri> tris(nf);
    for (int64_t i = 0; i < nf; ++i) {
        Tri& t = tris[i];
        for (int k = 0; k < 3; ++k) { t.a[k] = v[f[3 * i] * 3 + k]; t.b[k] = v[f[3 * i + 1] * 3 + k]; t.c[k] = v[f[3 * i + 2] * 3 + k]; }
        double ab[3] = {t.b[0] - t.a[0], t.b[1] - t.a[1], t.b[2] - t.a[2]}, ac[3] = {t.c[0] - t.a[0], t.c[1] - t.a[1], t.c[2] - t.a[2]};
        double n[3] = {ab[1] * ac[2] - ab[2] * ac[1], ab[2] * ac[0] - ab[0] * ac[2], ab[0] * ac[1] - ab[1] * ac[0]};
        double nn = std::sqrt(dot3(n, n)), scale = std::max(dot3(ab, ab), dot3(ac, ac));
        t.degenerate = !(nn > 1e-12 * scale) || nn == 0;
        for (int k = 0; k < 3; ++k) t.n[k] = t.degenerate ? 0.0 : n[k] / nn;
        for (int k = 0; k < 3; ++k) { t.ab[k] = ab[k]; t.ac[k] = ac[k]; t.bc[k] = t.c[k] - t.b[k]; }
        t.ab_a = dot3(t.ab, t.a); t.ab_b = dot3(t.ab, t.b); t.ab_c = dot3(t.ab, t.c);
        t.ac_a = dot3(t.ac, t.a); t.ac_b = dot3(t.ac, t.b); t.ac_c = dot3(t.ac, t.c);
        t.d = dot3(t.n, t.a);
        for (int k = 0; k < 3; ++k) t.ctr[k] = (t.a[k] + t.b[k] + t.c[k]) / 3.0;
        {
            double ra[3] = {t.a[0] - t.ctr[0], t.a[1] - t.ctr[1], t.a[2] - t.ctr[2]};
            double rb[3] = {t.b[0] - t.ctr[0], t.b[1] - t.ctr[1], t.b[2] - t.ctr[2]};
            double rc[3] = {t.c[0] - t.ctr[0], t.c[1] - t.ctr[1], t.c[2] - t.ctr[2]};
            t.rad = std::sqrt(std::max({dot3(ra, ra), dot3(rb, rb), dot3(rc, rc)})) * (1 + 1e-12) + 1e-12;
        }
        t.dom = 0;
        for (int k = 1; k < 3; ++k) if (std::fabs(t.n[k]) > std::fabs(t.n[t.dom])) t.dom = k;
        for (int k = 0; k < 3; ++k) {
            double lo = std::min({t.a[k], t.b[k], t.c[k]}) - band, hi = std::max({t.a[k], t.b[k], t.c[k]}) + band;
            lo = std::max(lo, -1.0); hi = std::min(hi, (double)res[k]);   // keep the int conversion in range
            t.lo[k] = std::max(0, (int)std::ceil(lo));
            t.hi[k] = std::min(res[k] - 1, (int)std::floor(hi));
        }
    }
    return tris;
}

inline double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int resolve_threads(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

void parse_res(py::object r, int* res) {
    py::sequence s = py::isinstance<py::int_>(r) ? py::sequence(py::make_tuple(r, r, r)) : r.cast<py::sequence>();
    if (py::len(s) != 3) throw std::invalid_argument("resolution must be an int or 3 ints");
    for (int k = 0; k < 3; ++k) {
        res[k] = s[k].cast<int>();
        if (res[k] < 1 || res[k] > 8192) throw std::invalid_argument("resolution must be between 1 and 8192");
    }
}

int parse_sign(const std::string& s) {
    if (s == "none") return 0;
    if (s == "z") return 1;
    if (s == "vote") return 2;
    throw std::invalid_argument("sign must be 'none', 'z' or 'vote', got '" + s + "'");
}

struct SignStats { int64_t abstained = 0, fallback = 0; };

// Inside (true) / outside for grid point p: parity along z ('z') or a vote of the three axes ('vote').
inline bool inside_at(const int* p, const Columns* cols, int mode, const Tri* nearest, SignStats& st, Columns::Line* cache) {
    int votes_in = 0, votes = 0;
    int axes = mode == 1 ? 1 : 3;
    for (int k = 0; k < axes; ++k) {
        const Columns& c = cols[k];
        int a = c.axis, u = (a + 1) % 3, v = (a + 2) % 3;
        int64_t below, total;
        c.count(p[u], p[v], (double)p[a], below, total, cache[k]);
        if (total & 1) { st.abstained++; continue; }
        votes++;
        votes_in += (int)(below & 1);
    }
    if (votes > 0 && 2 * votes_in != votes) return 2 * votes_in > votes;
    st.fallback++;
    if (!nearest) return false;
    double q[3] = {(double)p[0], (double)p[1], (double)p[2]};
    return dot3(nearest->n, q) - nearest->d < 0;
}

// ------------------------------------------------------------------ the narrow band
py::dict narrow_band(py::array_t<double, py::array::c_style | py::array::forcecast> V,
                     py::array_t<int64_t, py::array::c_style | py::array::forcecast> F,
                     py::object resolution, double band, const std::string& sign, int threads) {
    int res[3];
    parse_res(resolution, res);
    if (!(band > 0) || !std::isfinite(band)) throw std::invalid_argument("band must be a positive number of grid units");
    int mode = parse_sign(sign);
    std::vector<Tri> tris = prepare(V, F, res, band);
    const int nthreads = resolve_threads(threads);
    const double band2 = band * band;
    const int nb[3] = {(res[0] + B - 1) / B, (res[1] + B - 1) / B, (res[2] + B - 1) / B};

    py::array_t<int32_t> idx;
    py::array_t<float> dist;
    int64_t n_pairs = 0, n_bricks = 0, n_evals = 0, n_visits = 0;
    double tm_cols = 0, tm_pairs = 0, tm_sort = 0, tm_bricks = 0, tm_concat = 0;
    SignStats sst;
    {
        py::gil_scoped_release nogil;
        double tm0 = now();
        // 1. sign structures
        Columns cols[3];
        if (mode == 1) build_columns(cols[0], 2, tris, res, nthreads);
        if (mode == 2) for (int a = 0; a < 3; ++a) build_columns(cols[a], a, tris, res, nthreads);

        tm_cols = now() - tm0; tm0 = now();
        // 2. (brick, triangle) pairs
        const int64_t nt = (int64_t)tris.size();
        std::vector<std::vector<uint64_t>> lp(nthreads);
#pragma omp parallel num_threads(nthreads)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            auto& out = lp[tid];
#pragma omp for schedule(dynamic, 256)
            for (int64_t f = 0; f < nt; ++f) {
                const Tri& t = tris[f];
                if (t.lo[0] > t.hi[0] || t.lo[1] > t.hi[1] || t.lo[2] > t.hi[2]) continue;
                for (int bx = t.lo[0] / B; bx <= t.hi[0] / B; ++bx)
                    for (int by = t.lo[1] / B; by <= t.hi[1] / B; ++by)
                        for (int bz = t.lo[2] / B; bz <= t.hi[2] / B; ++bz) {
                            if (!t.degenerate) {   // does the plane slab |n.p - d| < band reach the brick's part of the box?
                                int bl[3] = {bx * B, by * B, bz * B};
                                double ctr = -t.d, rad = 0;
                                for (int k = 0; k < 3; ++k) {
                                    double lo = std::max(bl[k], t.lo[k]), hi = std::min(bl[k] + B - 1, t.hi[k]);
                                    ctr += t.n[k] * 0.5 * (lo + hi);
                                    rad += std::fabs(t.n[k]) * 0.5 * (hi - lo);
                                }
                                if (ctr - rad >= band || ctr + rad <= -band) continue;
                                double dd = 0;   // distance from the brick's part of the box to the bounding sphere's centre
                                for (int k = 0; k < 3; ++k) {
                                    double lo = std::max(bl[k], t.lo[k]), hi = std::min(bl[k] + B - 1, t.hi[k]);
                                    double e = t.ctr[k] < lo ? lo - t.ctr[k] : (t.ctr[k] > hi ? t.ctr[k] - hi : 0.0);
                                    dd += e * e;
                                }
                                if (dd >= (t.rad + band) * (t.rad + band)) continue;
                            }
                            uint64_t key = ((uint64_t)bx * nb[1] + by) * nb[2] + bz;
                            out.push_back((key << 32) | (uint64_t)f);
                        }
            }
        }
        size_t np = 0;
        for (auto& l : lp) np += l.size();
        std::vector<uint64_t> pairs;
        pairs.reserve(np);
        for (auto& l : lp) { pairs.insert(pairs.end(), l.begin(), l.end()); std::vector<uint64_t>().swap(l); }
        tm_pairs = now() - tm0; tm0 = now();
        std::sort(pairs.begin(), pairs.end());
        tm_sort = now() - tm0; tm0 = now();
        n_pairs = (int64_t)np;
        std::vector<int64_t> seg;   // segment starts (one per brick)
        for (size_t i = 0; i < np; ++i) if (i == 0 || (pairs[i] >> 32) != (pairs[i - 1] >> 32)) seg.push_back((int64_t)i);
        seg.push_back((int64_t)np);
        const int64_t nseg = (int64_t)seg.size() - 1;
        n_bricks = nseg;

        // 3. bricks in parallel
        std::vector<Chunked> buf(nthreads);
        std::vector<int32_t> seg_thread(nseg);
        std::vector<int64_t> seg_off(nseg), seg_cnt(nseg);
        std::vector<SignStats> tst(nthreads);
        std::vector<int64_t> tev(nthreads, 0), tvis(nthreads, 0);
#pragma omp parallel num_threads(nthreads)
        {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            std::vector<double> best(B3), bestd(B3);
            std::vector<int32_t> who(B3);
            std::vector<std::pair<double, int32_t>> order;
            Columns::Line lines[3];
            auto& ob = buf[tid];
            int64_t evals = 0, visits = 0;
#pragma omp for schedule(dynamic, 4)
            for (int64_t s = 0; s < nseg; ++s) {
                uint64_t key = pairs[seg[s]] >> 32;
                int bz = (int)(key % nb[2]), by = (int)((key / nb[2]) % nb[1]), bx = (int)(key / ((uint64_t)nb[2] * nb[1]));
                const int bl[3] = {bx * B, by * B, bz * B};
                std::fill(best.begin(), best.end(), band2);
                std::fill(bestd.begin(), bestd.end(), band);
                std::fill(who.begin(), who.end(), -1);
                // nearest triangles first (by centroid distance to the brick centre), so that each point's
                // best distance drops early and the sphere test below skips most of the others
                order.clear();
                const double bc[3] = {bl[0] + 0.5 * (B - 1), bl[1] + 0.5 * (B - 1), bl[2] + 0.5 * (B - 1)};
                for (int64_t q = seg[s]; q < seg[s + 1]; ++q) {
                    const int32_t f = (int32_t)(pairs[q] & 0xffffffffu);
                    const Tri& t = tris[f];
                    double dc[3] = {t.ctr[0] - bc[0], t.ctr[1] - bc[1], t.ctr[2] - bc[2]};
                    order.push_back({dot3(dc, dc), f});
                }
                std::sort(order.begin(), order.end());
                for (const auto& of : order) {
                    const int32_t f = of.second;
                    const Tri& t = tris[f];
                    int lo[3], hi[3];
                    for (int k = 0; k < 3; ++k) { lo[k] = std::max(bl[k], t.lo[k]); hi[k] = std::min(bl[k] + B - 1, t.hi[k]); }
                    if (t.degenerate) {
                        for (int x = lo[0]; x <= hi[0]; ++x)
                            for (int y = lo[1]; y <= hi[1]; ++y)
                                for (int z = lo[2]; z <= hi[2]; ++z) {
                                    double p[3] = {(double)x, (double)y, (double)z};
                                    int li = ((x - bl[0]) * B + (y - bl[1])) * B + (z - bl[2]);
                                    double d2 = tri_dist2(p, t);
                                    evals++;
                                    if (d2 < best[li]) { best[li] = d2; bestd[li] = std::sqrt(d2); who[li] = f; }
                                }
                        continue;
                    }
                    switch (t.dom) {
                        case 0: visit<0>(t, f, lo, hi, bl, band, best.data(), bestd.data(), who.data(), evals, visits); break;
                        case 1: visit<1>(t, f, lo, hi, bl, band, best.data(), bestd.data(), who.data(), evals, visits); break;
                        default: visit<2>(t, f, lo, hi, bl, band, best.data(), bestd.data(), who.data(), evals, visits); break;
                    }
                }
                seg_thread[s] = tid;
                seg_off[s] = (int64_t)ob.n;
                for (int li = 0; li < B3; ++li) {
                    if (who[li] < 0) continue;
                    int p[3] = {bl[0] + li / (B * B), bl[1] + (li / B) % B, bl[2] + li % B};
                    float d = (float)std::sqrt(best[li]);
                    if (mode != 0 && inside_at(p, cols, mode, &tris[who[li]], tst[tid], lines)) d = d > 0 ? -d : d;
                    ob.push({p[0], p[1], p[2], d});
                }
                seg_cnt[s] = (int64_t)ob.n - seg_off[s];
            }
            tev[tid] = evals;
            tvis[tid] = visits;
        }
        for (int i = 0; i < nthreads; ++i) { n_evals += tev[i]; n_visits += tvis[i]; sst.abstained += tst[i].abstained; sst.fallback += tst[i].fallback; }
        tm_bricks = now() - tm0; tm0 = now();
        // 4. concatenate in brick order, straight into the numpy arrays
        std::vector<int64_t> dst(nseg + 1, 0);
        for (int64_t s = 0; s < nseg; ++s) dst[s + 1] = dst[s] + seg_cnt[s];
        const py::ssize_t n = (py::ssize_t)dst[nseg];
        {
            py::gil_scoped_acquire gil;
            idx = py::array_t<int32_t>({n, (py::ssize_t)3});
            dist = py::array_t<float>(n);
        }
        int32_t* oi = idx.mutable_data();
        float* od = dist.mutable_data();
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t s = 0; s < nseg; ++s) {
            const Chunked& cb = buf[seg_thread[s]];
            for (int64_t i = 0; i < seg_cnt[s]; ++i) {
                const Entry& e = cb[seg_off[s] + i];
                const int64_t o = dst[s] + i;
                oi[3 * o] = e.x; oi[3 * o + 1] = e.y; oi[3 * o + 2] = e.z; od[o] = e.d;
            }
        }
        tm_concat = now() - tm0;
    }
    py::dict r;
    r["index"] = idx;
    r["distance"] = dist;
    r["n_triangles"] = (int64_t)tris.size();
    r["n_pairs"] = n_pairs;
    r["n_bricks"] = n_bricks;
    r["n_evaluations"] = n_evals;
    r["n_visits"] = n_visits;
    r["n_abstained"] = sst.abstained;
    r["n_fallback"] = sst.fallback;
    r["threads"] = nthreads;
    r["seconds"] = py::make_tuple(tm_cols, tm_pairs, tm_sort, tm_bricks, tm_concat);
    return r;
}

// Inside/outside of integer lattice points (N, 3) by the same parity rule ('z' or 'vote'):
// 1 inside, 0 outside.
py::array_t<int8_t> inside(py::array_t<double, py::array::c_style | py::array::forcecast> V,
                           py::array_t<int64_t, py::array::c_style | py::array::forcecast> F,
                           py::array_t<int32_t, py::array::c_style | py::array::forcecast> P,
                           py::object resolution, const std::string& sign, int threads) {
    int res[3];
    parse_res(resolution, res);
    int mode = parse_sign(sign);
    if (mode == 0) throw std::invalid_argument("inside needs sign 'z' or 'vote'");
    if (P.ndim() != 2 || P.shape(1) != 3) throw std::invalid_argument("points must have shape (N, 3)");
    std::vector<Tri> tris = prepare(V, F, res, 0.0);
    const int nthreads = resolve_threads(threads);
    const int64_t n = P.shape(0);
    const int32_t* p = P.data();
    for (int64_t i = 0; i < n; ++i)
        for (int k = 0; k < 3; ++k)
            if (p[3 * i + k] < 0 || p[3 * i + k] >= res[k]) throw std::invalid_argument("points must lie on the grid [0, resolution)");
    py::array_t<int8_t> out(n);
    int8_t* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        Columns cols[3];
        if (mode == 1) build_columns(cols[0], 2, tris, res, nthreads);
        else for (int a = 0; a < 3; ++a) build_columns(cols[a], a, tris, res, nthreads);
#pragma omp parallel num_threads(nthreads)
        {
            SignStats st;
            Columns::Line lines[3];
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; ++i) o[i] = inside_at(p + 3 * i, cols, mode, nullptr, st, lines) ? 1 : 0;
        }
    }
    return out;
}

bool has_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

int max_threads() { return resolve_threads(0); }

}  // namespace

PYBIND11_MODULE(_sdf, m) {
    m.doc() = "Narrow-band signed distance kernel (CPU, OpenMP): see csrc/sdf_kernel.cpp";
    m.def("narrow_band", &narrow_band, py::arg("vertices"), py::arg("faces"), py::arg("resolution"), py::arg("band"),
          py::arg("sign") = "z", py::arg("threads") = 0,
          "Grid points (N, 3) int32 closer than `band` (grid units) to the mesh, with their signed distance (N,) float32 "
          "(negative inside). vertices (V, 3) in grid units; resolution: int or 3 ints; sign: 'none', 'z' or 'vote'.");
    m.def("inside", &inside, py::arg("vertices"), py::arg("faces"), py::arg("points"), py::arg("resolution"),
          py::arg("sign") = "z", py::arg("threads") = 0, "Inside (1) or outside (0) for lattice points (N, 3) by ray parity.");
    m.def("has_openmp", &has_openmp, "Whether this build uses OpenMP.");
    m.def("max_threads", &max_threads, "Threads a call uses by default (OMP_NUM_THREADS).");
    m.attr("brick") = B;
#ifdef _OPENMP
    m.attr("__version__") = "1 (OpenMP)";
#else
    m.attr("__version__") = "1 (no OpenMP: single-threaded)";
#endif
}

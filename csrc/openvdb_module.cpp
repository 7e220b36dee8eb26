// medvox_nb._openvdb: a thin pybind11 binding to libopenvdb (Debian libopenvdb-dev 10).
//
// Grids cross the boundary as plain dicts of numpy arrays and numbers; the Python wrapper
// (medvox_nb.vdb) gives them a typed face. Supported grid types: FloatGrid ("float") and
// Vec3SGrid ("vec3s"). The transform is either spacing + origin (a scale-and-translate map) or
// any invertible 4x4 voxel->world affine (a scale-and-translate map when diagonal, else an AffineMap;
// flipped, rotated and sheared lattices included), built so that it reads back bit for bit. A float grid of class level_set gets OpenVDB's
// signed flood fill (inactive inside values = -background) so that it is a proper narrow-band
// level set. Every OpenVDB exception becomes a Python RuntimeError carrying OpenVDB's message;
// heavy loops run without the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <openvdb/openvdb.h>
#include <openvdb/io/File.h>
#include <openvdb/io/GridDescriptor.h>
#include <openvdb/io/io.h>
#include <openvdb/tools/Dense.h>
#include <openvdb/tools/Prune.h>
#include <openvdb/tools/SignedFloodFill.h>
#include <openvdb/tools/Diagnostics.h>
#include <openvdb/math/Maps.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;
namespace vdb = openvdb;

namespace {

using FloatGrid = vdb::FloatGrid;
using Vec3Grid = vdb::Vec3SGrid;

// ---------------------------------------------------------------- small helpers
vdb::GridClass parse_class(const std::string& s) {
    if (s == "fog_volume" || s == "fog volume") return vdb::GRID_FOG_VOLUME;
    if (s == "level_set" || s == "level set") return vdb::GRID_LEVEL_SET;
    if (s == "staggered") return vdb::GRID_STAGGERED;
    if (s == "unknown" || s.empty()) return vdb::GRID_UNKNOWN;
    throw std::invalid_argument("unknown grid class '" + s + "' (use fog_volume, level_set, staggered or unknown)");
}

std::string class_name(vdb::GridClass c) {
    switch (c) {
        case vdb::GRID_FOG_VOLUME: return "fog_volume";
        case vdb::GRID_LEVEL_SET: return "level_set";
        case vdb::GRID_STAGGERED: return "staggered";
        default: return "unknown";
    }
}

uint32_t parse_compression(const std::string& s) {
    namespace io = vdb::io;
    if (s == "none") return io::COMPRESS_NONE;
    if (s == "active_mask") return io::COMPRESS_ACTIVE_MASK;
    if (s == "zip") return io::COMPRESS_ZIP | io::COMPRESS_ACTIVE_MASK;
    if (s == "blosc") {
        if (!io::Archive::hasBloscCompression())
            throw std::invalid_argument("this libopenvdb was built without Blosc; use compression='zip'");
        return io::COMPRESS_BLOSC | io::COMPRESS_ACTIVE_MASK;
    }
    throw std::invalid_argument("unknown compression '" + s + "' (use none, active_mask, zip or blosc)");
}

vdb::Vec3d vec3(py::handle h, const char* what) {
    auto seq = py::cast<std::vector<double>>(h);
    if (seq.size() != 3) throw std::invalid_argument(std::string(what) + " must have 3 values");
    return vdb::Vec3d(seq[0], seq[1], seq[2]);
}

// Python value -> OpenVDB metadata (str, bool, int, float, 3-sequence of int or float).
vdb::Metadata::Ptr to_meta(py::handle v, const std::string& key) {
    if (py::isinstance<py::str>(v)) return std::make_shared<vdb::StringMetadata>(py::cast<std::string>(v));
    if (py::isinstance<py::bool_>(v)) return std::make_shared<vdb::BoolMetadata>(py::cast<bool>(v));
    if (py::isinstance<py::int_>(v)) return std::make_shared<vdb::Int64Metadata>(py::cast<int64_t>(v));
    if (py::isinstance<py::float_>(v)) return std::make_shared<vdb::DoubleMetadata>(py::cast<double>(v));
    if (py::isinstance<py::sequence>(v) && py::len(v) == 3) {
        bool all_int = true;
        for (auto x : v) all_int = all_int && py::isinstance<py::int_>(x) && !py::isinstance<py::bool_>(x);
        if (all_int) {
            auto s = py::cast<std::vector<int32_t>>(v);
            return std::make_shared<vdb::Vec3IMetadata>(vdb::Vec3i(s[0], s[1], s[2]));
        }
        auto s = py::cast<std::vector<double>>(v);
        return std::make_shared<vdb::Vec3DMetadata>(vdb::Vec3d(s[0], s[1], s[2]));
    }
    throw std::invalid_argument("metadata '" + key + "': unsupported value type (use str, bool, int, float or a 3-sequence)");
}

py::object from_meta(const vdb::Metadata& m) {
    const std::string t = m.typeName();
    if (t == "string") return py::str(static_cast<const vdb::StringMetadata&>(m).value());
    if (t == "bool") return py::bool_(static_cast<const vdb::BoolMetadata&>(m).value());
    if (t == "int32") return py::int_(static_cast<const vdb::Int32Metadata&>(m).value());
    if (t == "int64") return py::int_(static_cast<const vdb::Int64Metadata&>(m).value());
    if (t == "float") return py::float_(static_cast<const vdb::FloatMetadata&>(m).value());
    if (t == "double") return py::float_(static_cast<const vdb::DoubleMetadata&>(m).value());
    if (t == "vec3i") { auto v = static_cast<const vdb::Vec3IMetadata&>(m).value(); return py::make_tuple(v[0], v[1], v[2]); }
    if (t == "vec3s") { auto v = static_cast<const vdb::Vec3SMetadata&>(m).value(); return py::make_tuple(v[0], v[1], v[2]); }
    if (t == "vec3d") { auto v = static_cast<const vdb::Vec3DMetadata&>(m).value(); return py::make_tuple(v[0], v[1], v[2]); }
    return py::str(m.str());
}

py::dict meta_dict(const vdb::MetaMap& mm, bool skip_builtin) {
    py::dict d;
    for (auto it = mm.beginMeta(); it != mm.endMeta(); ++it) {
        if (!it->second) continue;
        if (skip_builtin && (it->first == vdb::GridBase::META_GRID_NAME || it->first == vdb::GridBase::META_GRID_CLASS))
            continue;
        d[py::str(it->first)] = from_meta(*it->second);
    }
    return d;
}

void fill_meta(vdb::MetaMap& mm, py::handle d) {
    if (d.is_none()) return;
    for (auto kv : py::cast<py::dict>(d)) {
        const std::string k = py::cast<std::string>(kv.first);
        mm.insertMeta(k, *to_meta(kv.second, k));
    }
}

// A Transform holding exactly `map`. Transform's constructor (and createLinearTransform) re-derive a
// diagonal map's scale as applyMap(1,1,1) - applyMap(0,0,0), which rounds (0.8 + 120 - 120 != 0.8);
// deserialising the map, as a file reader does, keeps every number bit for bit.
vdb::math::Transform::Ptr exact_transform(const vdb::math::MapBase& map) {
    std::ostringstream os(std::ios_base::binary);
    vdb::writeString(os, map.type());
    map.write(os);
    std::istringstream is(os.str(), std::ios_base::binary);
    vdb::io::setCurrentVersion(is);
    auto xf = std::make_shared<vdb::math::Transform>();
    xf->read(is);
    return xf;
}

// A diagonal voxel->world map: scale (any signs, non-zero) then translate.
vdb::math::Transform::Ptr scale_translate(const vdb::Vec3d& s, const vdb::Vec3d& t) {
    if (s[0] == s[1] && s[0] == s[2] && s[0] > 0) return exact_transform(vdb::math::UniformScaleTranslateMap(s[0], t));
    return exact_transform(vdb::math::ScaleTranslateMap(s, t));
}

// voxel (i,j,k) centre -> origin + ijk * spacing (non-uniform scale allowed)
vdb::math::Transform::Ptr make_transform(const vdb::Vec3d& vs, const vdb::Vec3d& origin) {
    if (!(vs[0] > 0 && vs[1] > 0 && vs[2] > 0)) throw std::invalid_argument("spacing must be positive");
    return scale_translate(vs, origin);
}

// Any invertible 4x4 voxel->world affine, column-vector convention (world = A @ [i, j, k, 1]): a diagonal one
// (flipped axes included) as a scale-and-translate map, any other (rotated, oblique, sheared) as an AffineMap.
vdb::math::Transform::Ptr affine_transform(py::handle a_) {
    auto a = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(a_);
    if (!a || a.ndim() != 2 || a.shape(0) != 4 || a.shape(1) != 4) throw std::invalid_argument("affine must be a 4x4 matrix");
    auto r = a.unchecked<2>();
    if (r(3, 0) != 0 || r(3, 1) != 0 || r(3, 2) != 0 || r(3, 3) != 1) throw std::invalid_argument("affine's last row must be 0 0 0 1");
    vdb::Mat4d m;  // OpenVDB uses the row-vector convention: world = [i j k 1] * M
    for (int i = 0; i < 4; ++i) for (int j = 0; j < 4; ++j) m(i, j) = r(j, i);
    if (std::abs(m.getMat3().det()) < 1e-300) throw std::invalid_argument("affine is singular");
    const vdb::Mat3d l = m.getMat3();
    if (l(0, 1) == 0 && l(0, 2) == 0 && l(1, 0) == 0 && l(1, 2) == 0 && l(2, 0) == 0 && l(2, 1) == 0)
        return scale_translate(vdb::Vec3d(l(0, 0), l(1, 1), l(2, 2)), m.getTranslation());
    return exact_transform(vdb::math::AffineMap(m));
}

// ---------------------------------------------------------------- building grids
template <typename GridT>
void add_coords(GridT& grid, py::handle coords_, py::handle values_) {
    using V = typename GridT::ValueType;
    constexpr int nc = vdb::VecTraits<V>::Size;
    auto coords = py::array_t<int32_t, py::array::c_style | py::array::forcecast>::ensure(coords_);
    auto values = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(values_);
    if (!coords || coords.ndim() != 2 || coords.shape(1) != 3) throw std::invalid_argument("coords must be (N, 3) int32");
    const py::ssize_t n = coords.shape(0);
    if (!values || values.size() != n * nc || (nc == 3 && values.ndim() != 2) || (nc == 1 && values.ndim() != 1))
        throw std::invalid_argument(nc == 1 ? "values must be (N,) float32 matching coords" : "values must be (N, 3) float32 matching coords");
    const int32_t* c = coords.data();
    const float* v = values.data();
    py::gil_scoped_release nogil;
    auto acc = grid.getAccessor();
    for (py::ssize_t i = 0; i < n; ++i) {
        V val;
        if constexpr (nc == 1) val = v[i];
        else val = V(v[3 * i], v[3 * i + 1], v[3 * i + 2]);
        acc.setValueOn(vdb::Coord(c[3 * i], c[3 * i + 1], c[3 * i + 2]), val);
    }
}

// Copy an (X, Y, Z) [or (X, Y, Z, 3)] array whose [0, 0, 0] sits at index `mn` into the grid;
// values within `tol` of the background become inactive (tools::copyFromDense).
template <typename GridT>
void add_dense(GridT& grid, py::handle dense_, py::handle mn_, double tol) {
    using V = typename GridT::ValueType;
    constexpr int nc = vdb::VecTraits<V>::Size;
    auto dense = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(dense_);
    if (!dense || dense.ndim() != 3 + (nc == 3 ? 1 : 0) || (nc == 3 && dense.shape(3) != 3))
        throw std::invalid_argument(nc == 1 ? "dense must be (X, Y, Z) float32" : "dense must be (X, Y, Z, 3) float32");
    if (dense.shape(0) == 0 || dense.shape(1) == 0 || dense.shape(2) == 0) return;
    auto mn = vec3(mn_.is_none() ? py::object(py::make_tuple(0, 0, 0)) : py::reinterpret_borrow<py::object>(mn_), "dense_min");
    const vdb::Coord lo{int(mn[0]), int(mn[1]), int(mn[2])};
    const vdb::Coord hi = lo + vdb::Coord(int(dense.shape(0)) - 1, int(dense.shape(1)) - 1, int(dense.shape(2)) - 1);
    V* data = reinterpret_cast<V*>(const_cast<float*>(dense.data()));
    py::gil_scoped_release nogil;
    // LayoutZYX: z varies fastest, i.e. numpy C order for an (X, Y, Z) array.
    vdb::tools::Dense<V, vdb::tools::LayoutZYX> d(vdb::CoordBBox(lo, hi), data);
    V t;
    if constexpr (nc == 1) t = float(tol); else t = V(float(tol));
    vdb::tools::copyFromDense(d, grid, t, /*serial=*/false);
}

template <typename GridT>
void prune_grid(GridT& grid, double ptol) {
    using V = typename GridT::ValueType;
    py::gil_scoped_release nogil;
    if (ptol >= 0) {
        V t;
        if constexpr (vdb::VecTraits<V>::Size == 1) t = float(ptol); else t = V(float(ptol));
        vdb::tools::prune(grid.tree(), t);
    }
    vdb::tools::pruneInactive(grid.tree());
}

template <typename GridT>
typename GridT::ValueType parse_background(py::handle b) {
    using V = typename GridT::ValueType;
    if (b.is_none()) return vdb::zeroVal<V>();
    if constexpr (vdb::VecTraits<V>::Size == 1) return py::cast<float>(b);
    else {
        if (py::isinstance<py::float_>(b) || py::isinstance<py::int_>(b)) return V(py::cast<float>(b));
        auto x = vec3(b, "background");
        return V(float(x[0]), float(x[1]), float(x[2]));
    }
}

template <typename GridT>
vdb::GridBase::Ptr build_grid(const py::dict& g) {
    auto grid = GridT::create(parse_background<GridT>(g.contains("background") ? py::object(g["background"]) : py::object(py::none())));
    if (g.contains("dense")) add_dense<GridT>(*grid, g["dense"], g.contains("dense_min") ? py::object(g["dense_min"]) : py::object(py::none()),
                                            g.contains("tolerance") ? py::cast<double>(g["tolerance"]) : 0.0);
    else add_coords<GridT>(*grid, g["coords"], g["values"]);
    const bool level_set = g.contains("grid_class") && parse_class(py::cast<std::string>(g["grid_class"])) == vdb::GRID_LEVEL_SET;
    // a level set keeps its active voxels as voxels (OpenVDB's level-set tools reject active tiles)
    prune_grid<GridT>(*grid, level_set ? -1.0 : (g.contains("prune_tolerance") ? py::cast<double>(g["prune_tolerance"]) : -1.0));
    return grid;
}

void set_common(vdb::GridBase& grid, const py::dict& g) {
    grid.setName(py::cast<std::string>(g["name"]));
    grid.setGridClass(parse_class(g.contains("grid_class") ? py::cast<std::string>(g["grid_class"]) : "unknown"));
    if (g.contains("affine") && !g["affine"].is_none()) grid.setTransform(affine_transform(g["affine"]));
    else grid.setTransform(make_transform(vec3(g["spacing"], "spacing"), vec3(g["origin"], "origin")));
    grid.setSaveFloatAsHalf(g.contains("half") && py::cast<bool>(g["half"]));
    if (g.contains("metadata")) fill_meta(grid, g["metadata"]);
}

// A float grid of class level_set: inactive values take the sign of the side they lie on
// (tools::signedFloodFill: -background inside, +background outside), then inactive nodes
// collapse into +-background tiles (tools::pruneLevelSet). Other grids are left alone.
void finish_level_set(vdb::GridBase& grid) {
    if (grid.getGridClass() != vdb::GRID_LEVEL_SET) return;
    auto fg = dynamic_cast<FloatGrid*>(&grid);
    if (!fg) throw std::invalid_argument("grid '" + grid.getName() + "': a level set must be a float grid");
    py::gil_scoped_release nogil;
    vdb::tools::signedFloodFill(fg->tree());
    vdb::tools::pruneLevelSet(fg->tree());
}

// An OpenVDB grid built piece by piece (chunked export keeps peak memory bounded).
struct PyGrid {
    vdb::GridBase::Ptr grid;
    std::string type;
    PyGrid(const std::string& type_, const std::string& name, py::object background): type(type_) {
        if (type == "float") grid = FloatGrid::create(parse_background<FloatGrid>(background));
        else if (type == "vec3s") grid = Vec3Grid::create(parse_background<Vec3Grid>(background));
        else throw std::invalid_argument("unsupported grid type '" + type + "' (float or vec3s)");
        grid->setName(name);
        grid->setTransform(vdb::math::Transform::createLinearTransform(1.0));
    }
    template <typename F> void dispatch(F&& f) {
        if (auto fg = vdb::GridBase::grid<FloatGrid>(grid)) f(*fg);
        else f(*vdb::GridBase::grid<Vec3Grid>(grid));
    }
    void set_values(py::handle c, py::handle v) { dispatch([&](auto& g) { add_coords(g, c, v); }); }
    void copy_from_dense(py::handle d, py::handle mn, double tol) { dispatch([&](auto& g) { add_dense(g, d, mn, tol); }); }
    void prune(double tol) { dispatch([&](auto& g) { prune_grid(g, tol); }); }
    void configure(py::dict g) { g["name"] = grid->getName(); set_common(*grid, g); finish_level_set(*grid); }
    vdb::Index64 active() const { return grid->activeVoxelCount(); }
    vdb::Index64 mem() const { return grid->memUsage(); }
};

vdb::GridBase::Ptr make_grid(py::handle h) {
    if (py::isinstance<PyGrid>(h)) return py::cast<PyGrid&>(h).grid;
    const py::dict g = py::cast<py::dict>(h);
    const std::string type = g.contains("type") ? py::cast<std::string>(g["type"]) : "float";
    vdb::GridBase::Ptr grid;
    if (type == "float") grid = build_grid<FloatGrid>(g);
    else if (type == "vec3s") grid = build_grid<Vec3Grid>(g);
    else throw std::invalid_argument("unsupported grid type '" + type + "' (float or vec3s)");
    set_common(*grid, g);
    finish_level_set(*grid);
    return grid;
}

// ---------------------------------------------------------------- reading grids
// Walk the header and grid descriptors ourselves so that a file cut short anywhere is
// reported instead of being read past its end (libopenvdb would otherwise seek beyond EOF).
void check_file(const std::string& path) {
    std::ifstream is(path, std::ios::binary);
    if (!is) throw std::runtime_error("cannot open file");
    is.seekg(0, std::ios::end);
    const int64_t size = is.tellg();
    is.seekg(0);
    int64_t magic = 0;
    is.read(reinterpret_cast<char*>(&magic), 8);
    if (!is || magic != vdb::OPENVDB_MAGIC) throw std::runtime_error("not a VDB file (bad magic number)");
    uint32_t version = 0, major = 0, minor = 0;
    is.read(reinterpret_cast<char*>(&version), 4);
    is.read(reinterpret_cast<char*>(&major), 4);
    is.read(reinterpret_cast<char*>(&minor), 4);
    char has_offsets = 0;
    is.read(&has_offsets, 1);
    if (!is) throw std::runtime_error("truncated VDB header");
    if (version < vdb::OPENVDB_FILE_VERSION_SELECTIVE_COMPRESSION) return;  // very old: let libopenvdb judge
    if (version < vdb::OPENVDB_FILE_VERSION_NODE_MASK_COMPRESSION) { char c; is.read(&c, 1); }
    char uuid[36];
    is.read(uuid, 36);
    vdb::io::setVersion(is, vdb::VersionId(major, minor), version);
    vdb::MetaMap mm;
    mm.readMeta(is);
    int32_t count = -1;
    is.read(reinterpret_cast<char*>(&count), 4);
    if (!is || count < 0) throw std::runtime_error("truncated VDB file (no grid table)");
    if (!has_offsets) return;
    for (int32_t i = 0; i < count; ++i) {
        vdb::io::GridDescriptor gd;
        gd.read(is);
        if (!is) throw std::runtime_error("truncated VDB file (grid table cut short)");
        if (gd.getEndPos() > size || gd.getEndPos() < gd.getGridPos())
            throw std::runtime_error("truncated VDB file: grid '" + vdb::io::GridDescriptor::nameAsString(gd.uniqueName()) +
                                     "' ends at byte " + std::to_string(gd.getEndPos()) + " but the file has " +
                                     std::to_string(size) + " bytes");
        gd.seekToEnd(is);
    }
}

template <typename GridT>
void extract(const GridT& grid0, py::dict& out) {
    using V = typename GridT::ValueType;
    constexpr int nc = vdb::VecTraits<V>::Size;
    typename GridT::Ptr grid = grid0.deepCopy();
    vdb::Index64 n;
    {
        py::gil_scoped_release nogil;
        grid->tree().voxelizeActiveTiles();
        n = grid->tree().activeVoxelCount();
    }
    py::array_t<int32_t> coords({py::ssize_t(n), py::ssize_t(3)});
    py::array_t<float> values = nc == 1 ? py::array_t<float>({py::ssize_t(n)}) : py::array_t<float>({py::ssize_t(n), py::ssize_t(3)});
    int32_t* c = coords.mutable_data();
    float* v = values.mutable_data();
    {
        py::gil_scoped_release nogil;
        size_t i = 0;
        for (auto leaf = grid->tree().cbeginLeaf(); leaf; ++leaf) {
            for (auto it = leaf->cbeginValueOn(); it; ++it, ++i) {
                const vdb::Coord ijk = it.getCoord();
                c[3 * i] = ijk.x(); c[3 * i + 1] = ijk.y(); c[3 * i + 2] = ijk.z();
                const V val = *it;
                if constexpr (nc == 1) v[i] = val;
                else { v[3 * i] = val[0]; v[3 * i + 1] = val[1]; v[3 * i + 2] = val[2]; }
            }
        }
    }
    out["coords"] = coords;
    out["values"] = values;
}

py::dict describe(const vdb::GridBase::Ptr& grid, bool data) {
    py::dict d;
    d["name"] = grid->getName();
    d["grid_class"] = class_name(grid->getGridClass());
    d["half"] = grid->saveFloatAsHalf();
    d["metadata"] = meta_dict(*grid, true);
    const auto& xf = grid->constTransform();
    const vdb::Vec3d vs = xf.voxelSize(), org = xf.indexToWorld(vdb::Vec3d(0.0));
    d["spacing"] = py::make_tuple(vs[0], vs[1], vs[2]);
    d["origin"] = py::make_tuple(org[0], org[1], org[2]);
    d["is_linear"] = xf.isLinear();
    // 4x4 voxel->world affine in column-vector convention (world = A @ [i, j, k, 1]).
    py::array_t<double> aff({4, 4});
    auto a = aff.mutable_unchecked<2>();
    if (xf.isLinear()) {
        const vdb::Mat4d m = xf.baseMap()->getAffineMap()->getMat4();  // row-vector convention
        for (int r = 0; r < 4; ++r) for (int c = 0; c < 4; ++c) a(r, c) = m(c, r);
    } else {
        for (int r = 0; r < 4; ++r) for (int c = 0; c < 4; ++c) a(r, c) = std::numeric_limits<double>::quiet_NaN();
    }
    d["affine"] = aff;
    vdb::CoordBBox bbox;
    vdb::Index64 nact, mem;
    {
        py::gil_scoped_release nogil;
        nact = grid->activeVoxelCount();
        bbox = grid->evalActiveVoxelBoundingBox();
        mem = grid->memUsage();
    }
    d["active_voxel_count"] = nact;
    d["memory_bytes"] = mem;
    if (nact == 0) d["bbox"] = py::none();
    else d["bbox"] = py::make_tuple(py::make_tuple(bbox.min().x(), bbox.min().y(), bbox.min().z()),
                                     py::make_tuple(bbox.max().x(), bbox.max().y(), bbox.max().z()));
    if (auto fg = vdb::GridBase::grid<FloatGrid>(grid)) {
        d["type"] = "float";
        d["background"] = fg->background();
        d["leaf_count"] = fg->tree().leafCount();
        if (data) extract<FloatGrid>(*fg, d);
    } else if (auto vg = vdb::GridBase::grid<Vec3Grid>(grid)) {
        d["type"] = "vec3s";
        auto b = vg->background();
        d["background"] = py::make_tuple(b[0], b[1], b[2]);
        d["leaf_count"] = vg->tree().leafCount();
        if (data) extract<Vec3Grid>(*vg, d);
    } else {
        d["type"] = grid->valueType();
        d["background"] = py::none();
        if (data) throw std::runtime_error("grid '" + grid->getName() + "' has value type " + grid->valueType() +
                                           "; only float and vec3s grids can be read as arrays");
    }
    return d;
}

struct OpenFile {
    vdb::io::File f;
    explicit OpenFile(const std::string& path): f(path) {
        check_file(path);
        f.setCopyMaxBytes(0);  // never copy the file to a temporary
        f.open(/*delayLoad=*/false);
    }
    ~OpenFile() { if (f.isOpen()) f.close(); }
};

std::vector<std::string> grid_names(vdb::io::File& f) {
    std::vector<std::string> names;
    for (auto it = f.beginName(); it != f.endName(); ++it) names.push_back(*it);
    return names;
}

// ---------------------------------------------------------------- module functions
void write_file(const std::string& path, py::list grids, py::object file_meta, const std::string& compression) {
    const uint32_t comp = parse_compression(compression);
    vdb::GridPtrVec vec;
    for (auto g : grids) vec.push_back(make_grid(g));
    vdb::MetaMap mm;
    fill_meta(mm, file_meta);
    py::gil_scoped_release nogil;
    vdb::io::File f(path);
    f.setCompression(comp);
    f.setGridStatsMetadataEnabled(true);
    f.write(vec, mm);
    f.close();
}

py::tuple read_file(const std::string& path, py::object names, bool data) {
    OpenFile of(path);
    py::dict fmeta;
    fmeta = meta_dict(*of.f.getMetadata(), false);
    std::vector<std::string> want = names.is_none() ? grid_names(of.f) : py::cast<std::vector<std::string>>(names);
    py::list out;
    for (const auto& n : want) {
        if (!of.f.hasGrid(n)) throw std::runtime_error("no grid named '" + n + "' in the file");
        vdb::GridBase::Ptr g;
        { py::gil_scoped_release nogil; g = of.f.readGrid(n); }
        out.append(describe(g, data));
    }
    return py::make_tuple(fmeta, out);
}

py::list list_grids(const std::string& path) {
    OpenFile of(path);
    py::list out;
    for (auto& n : grid_names(of.f)) out.append(n);
    return out;
}

template <typename GridT>
py::array dense_of(const GridT& grid, const vdb::Coord& lo, const vdb::Coord& hi) {
    using V = typename GridT::ValueType;
    constexpr int nc = vdb::VecTraits<V>::Size;
    std::vector<py::ssize_t> shape{hi.x() - lo.x() + 1, hi.y() - lo.y() + 1, hi.z() - lo.z() + 1};
    for (auto s : shape) if (s <= 0) throw std::invalid_argument("empty box for read_dense");
    if (nc == 3) shape.push_back(3);
    py::array_t<float> arr(shape);
    V* data = reinterpret_cast<V*>(arr.mutable_data());
    {
        py::gil_scoped_release nogil;
        vdb::tools::Dense<V, vdb::tools::LayoutZYX> d(vdb::CoordBBox(lo, hi), data);
        vdb::tools::copyToDense(grid, d, /*serial=*/false);
    }
    return arr;
}

// Dense copy of grid `name` over the index box [lo, hi] (inclusive); outside active voxels
// the grid's background appears. (X, Y, Z) float32 or (X, Y, Z, 3).
py::array read_dense(const std::string& path, const std::string& name, py::object lo_, py::object hi_) {
    OpenFile of(path);
    if (!of.f.hasGrid(name)) throw std::runtime_error("no grid named '" + name + "' in the file");
    vdb::GridBase::Ptr g;
    { py::gil_scoped_release nogil; g = of.f.readGrid(name); }
    vdb::Coord lo, hi;
    if (lo_.is_none()) {
        vdb::CoordBBox b = g->evalActiveVoxelBoundingBox();
        if (b.empty()) throw std::runtime_error("grid '" + name + "' has no active voxels");
        lo = b.min(); hi = b.max();
    } else {
        auto a = vec3(lo_, "lo"), b = vec3(hi_, "hi");
        lo = vdb::Coord(int(a[0]), int(a[1]), int(a[2])); hi = vdb::Coord(int(b[0]), int(b[1]), int(b[2]));
    }
    if (auto fg = vdb::GridBase::grid<FloatGrid>(g)) return dense_of<FloatGrid>(*fg, lo, hi);
    if (auto vg = vdb::GridBase::grid<Vec3Grid>(g)) return dense_of<Vec3Grid>(*vg, lo, hi);
    throw std::runtime_error("grid '" + name + "' has value type " + g->valueType() + "; only float and vec3s are supported");
}

// OpenVDB's own level-set diagnostics (tools::checkLevelSet, checks 1..n) on grid `name`:
// an empty string when the grid is a valid narrow-band level set.
std::string check_level_set(const std::string& path, const std::string& name, int n) {
    OpenFile of(path);
    if (!of.f.hasGrid(name)) throw std::runtime_error("no grid named '" + name + "' in the file");
    vdb::GridBase::Ptr g;
    { py::gil_scoped_release nogil; g = of.f.readGrid(name); }
    auto fg = vdb::GridBase::grid<FloatGrid>(g);
    if (!fg) return "Value type is not float (it is " + g->valueType() + ")\n";
    py::gil_scoped_release nogil;
    return vdb::tools::checkLevelSet(*fg, size_t(n));
}

}  // namespace

PYBIND11_MODULE(_openvdb, m) {
    vdb::initialize();
    m.doc() = "Thin binding to libopenvdb: FloatGrid/Vec3SGrid <-> numpy arrays, file IO with metadata.";
    static py::exception<vdb::Exception> exc(m, "OpenVDBError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try { if (p) std::rethrow_exception(p); }
        catch (const vdb::Exception& e) { py::set_error(exc, e.what()); }
    });
    m.attr("library_version") = vdb::getLibraryVersionString();
    m.attr("file_format_version") = int(vdb::OPENVDB_FILE_VERSION);
    m.def("has_blosc", &vdb::io::Archive::hasBloscCompression, "Whether this libopenvdb can write Blosc-compressed files.");
    py::class_<PyGrid>(m, "Grid", "A float or vec3s grid built incrementally (set_values / copy_from_dense), then passed to write().")
        .def(py::init<const std::string&, const std::string&, py::object>(), py::arg("type"), py::arg("name"), py::arg("background") = py::none())
        .def("set_values", &PyGrid::set_values, py::arg("coords"), py::arg("values"), "Activate voxels (N, 3) int32 with values (N,) or (N, 3) float32.")
        .def("copy_from_dense", &PyGrid::copy_from_dense, py::arg("dense"), py::arg("dense_min") = py::none(), py::arg("tolerance") = 0.0,
             "Copy a dense block whose [0,0,0] sits at index dense_min; values within tolerance of the background stay inactive.")
        .def("prune", &PyGrid::prune, py::arg("tolerance") = -1.0, "tools::prune(tolerance) if tolerance >= 0, then tools::pruneInactive.")
        .def("configure", &PyGrid::configure, py::arg("spec"),
             "Set spacing/origin or affine, grid_class, half, metadata from a dict (a level_set float grid is then flood-filled).")
        .def_property_readonly("active_voxel_count", &PyGrid::active)
        .def_property_readonly("memory_bytes", &PyGrid::mem)
        .def_property_readonly("type", [](const PyGrid& g) { return g.type; })
        .def_property_readonly("name", [](const PyGrid& g) { return g.grid->getName(); });
    m.def("write", &write_file, py::arg("path"), py::arg("grids"), py::arg("file_metadata") = py::none(),
          py::arg("compression") = "zip",
          "Write grids (list of dicts: name, type 'float'|'vec3s', coords+values or dense+dense_min+tolerance, "
          "spacing+origin or affine (4x4, world = A @ [i, j, k, 1]), background, grid_class, half, metadata, "
          "prune_tolerance; or Grid objects) to `path`.");
    m.def("read", &read_file, py::arg("path"), py::arg("names") = py::none(), py::arg("data") = true,
          "Read grids -> (file_metadata, [grid dict]); data=False skips the coords/values arrays.");
    m.def("list_grids", &list_grids, py::arg("path"), "Names of the grids in a file.");
    m.def("read_dense", &read_dense, py::arg("path"), py::arg("name"), py::arg("lo") = py::none(), py::arg("hi") = py::none(),
          "Dense float32 copy of a grid over the inclusive index box [lo, hi] (default: active bbox).");
    m.def("check_file", &check_file, py::arg("path"), "Raise if `path` is not a complete VDB file.");
    m.def("check_level_set", &check_level_set, py::arg("path"), py::arg("name"), py::arg("checks") = 8,
          "OpenVDB's tools::checkLevelSet (checks 1..checks) on grid `name`: '' when it is a valid level set.");
}

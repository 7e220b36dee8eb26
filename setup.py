"""Package build: metadata from nbdev's settings.ini, plus the optional native modules in csrc/.

Native modules are optional: when their system headers (or a C++ compiler) are missing the package
still installs and the Python wrappers raise a `MedvoxError` naming what to install (`medvox doctor`
shows what was built).

- `medvox_nb._openvdb`: pybind11 binding to libopenvdb (csrc/openvdb_*.cpp).
- `medvox_nb._sdf`: narrow-band signed distance kernel (csrc/sdf_kernel.cpp), C++17 + OpenMP; built
  without OpenMP (single-threaded) when the compiler has none, or when MEDVOX_NO_OPENMP=1."""
import os, shlex, sys
from configparser import ConfigParser
from pathlib import Path
import setuptools
from setuptools.command.build_ext import build_ext

here = Path(__file__).parent
cfg = ConfigParser(delimiters=['='])
cfg.read(here/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
req = lambda k: shlex.split(cfg.get(k, ''))

def _openvdb_ext():
    "The pybind11 binding to libopenvdb (Debian: libopenvdb-dev libboost-dev libtbb-dev)."
    inc = os.environ.get('OPENVDB_INCLUDE', '/usr/include')
    if not (Path(inc)/'openvdb'/'openvdb.h').exists():
        print('medvox_nb: OpenVDB headers not found; building without medvox_nb._openvdb '
              '(apt-get install libopenvdb-dev libboost-dev libtbb-dev)', file=sys.stderr)
        return []
    srcs = sorted(str(p) for p in Path('csrc').glob('openvdb_*.cpp'))
    if not srcs: return []
    try: import pybind11
    except ImportError:
        print('medvox_nb: pybind11 missing; building without medvox_nb._openvdb', file=sys.stderr)
        return []
    # Export only PyInit__openvdb. OpenVDB's headers give template instantiations default
    # visibility; if the module exported them, libopenvdb would bind its own calls (e.g. the
    # std::call_once in Tree::treeType) to the module's copies and crash in openvdb::initialize().
    vmap = Path('build')/'medvox_openvdb.map'
    vmap.parent.mkdir(exist_ok=True)
    vmap.write_text('{ global: PyInit__openvdb; local: *; };\n')
    return [setuptools.Extension(
        'medvox_nb._openvdb', sources=srcs,
        include_dirs=[pybind11.get_include(), inc, '/usr/include/Imath', '/usr/include/OpenEXR'],
        libraries=['openvdb', 'tbb'], language='c++',
        extra_compile_args=['-std=c++17', '-O2', '-fvisibility=hidden'],
        extra_link_args=[f'-Wl,--version-script={vmap.resolve()}'], optional=True)]

def _sdf_ext():
    "The narrow-band SDF kernel: needs only a C++17 compiler and pybind11 (OpenMP when available)."
    if not Path('csrc/sdf_kernel.cpp').exists(): return []
    try: import pybind11
    except ImportError:
        print('medvox_nb: pybind11 missing; building without medvox_nb._sdf', file=sys.stderr)
        return []
    return [setuptools.Extension(
        'medvox_nb._sdf', sources=['csrc/sdf_kernel.cpp'], include_dirs=[pybind11.get_include()], language='c++',
        # no FMA contraction: the exact 2D predicates rely on a*b - c*d being rounded the same way both ways round
        extra_compile_args=['-std=c++17', '-O3', '-fvisibility=hidden', '-ffp-contract=off'], optional=True)]

def _has_openmp(compiler) -> bool:
    "Whether `compiler` compiles and links an OpenMP program with -fopenmp."
    if os.environ.get('MEDVOX_NO_OPENMP', '') not in ('', '0'): return False
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        src = Path(d)/'omp_check.cpp'
        src.write_text('#include <omp.h>\nint main() { int n = 0;\n#pragma omp parallel reduction(+:n)\nn += 1;\nreturn n > 0 ? 0 : 1; }\n')
        try:
            objs = compiler.compile([str(src)], output_dir=d, extra_postargs=['-fopenmp'])
            compiler.link_executable(objs, 'omp_check', output_dir=d, extra_postargs=['-fopenmp'])
            return True
        except Exception: return False

class BuildExt(build_ext):
    "Native modules never fail the install: a failed optional module is reported by `medvox doctor`."
    def build_extension(self, ext):
        if ext.name == 'medvox_nb._sdf':
            if _has_openmp(self.compiler):
                ext.extra_compile_args = [*ext.extra_compile_args, '-fopenmp']
                ext.extra_link_args = [*ext.extra_link_args, '-fopenmp']
            else: print('medvox_nb: no OpenMP (or MEDVOX_NO_OPENMP=1); medvox_nb._sdf is built single-threaded', file=sys.stderr)
        try: super().build_extension(ext)
        except Exception as e: print(f'medvox_nb: could not build {ext.name}: {e}', file=sys.stderr)

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=(here/'README.md').read_text(encoding='utf-8') if (here/'README.md').exists() else '',
    long_description_content_type='text/markdown', author=cfg['author'], author_email=cfg['author_email'],
    license='Apache-2.0', url=cfg['git_url'], project_urls={'Source': cfg['git_url']},
    classifiers=['Programming Language :: Python :: 3', 'Intended Audience :: Science/Research', 'License :: OSI Approved :: Apache Software License'], keywords=cfg['keywords'].split(),
    python_requires=f">={cfg['min_python']}", packages=setuptools.find_packages(include=['medvox_nb', 'medvox_nb.*']),
    include_package_data=True, install_requires=req('requirements'),
    extras_require={'dev': req('dev_requirements'), 'sparse': req('sparse_requirements')}, ext_modules=_openvdb_ext() + _sdf_ext(), cmdclass={'build_ext': BuildExt},
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(), 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False)

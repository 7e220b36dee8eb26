"""Package build: metadata from nbdev's settings.ini, plus the optional native modules in csrc/.

Native modules are optional: when their system headers are missing the package still installs
and the Python wrappers raise a `MedvoxError` naming the packages to install (`medvox doctor`
shows what was built)."""
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

class BuildExt(build_ext):
    "Native modules never fail the install: a failed optional module is reported by `medvox doctor`."
    def build_extension(self, ext):
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
    extras_require={'dev': req('dev_requirements')}, ext_modules=_openvdb_ext(), cmdclass={'build_ext': BuildExt},
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(), 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False)

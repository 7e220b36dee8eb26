#!/usr/bin/env python
"""Build the medvox_nb documentation site: Sphinx + myst-nb from the notebooks in nbs/, plus API pages.

    .venv/bin/python scripts/build_docs.py [--out docs/_build/html] [--no-execute] [--force] [-j N]

nbdev's `nbdev_docs` needs Quarto, which cannot be installed offline, so the site is built with
Sphinx from the same notebooks. Steps:

1. stage every nbs/*.ipynb (ordered by filename, index.ipynb as the home page) into docs/_build/src,
   translating nbdev directives into myst-nb cell tags: `#| hide`, `#| default_exp`,
   `#| include: false` -> remove-cell; `#| echo: false` -> remove-input; `#| output: false` ->
   remove-output; `#| eval: false` -> skip-execution; directive lines are dropped from the shown code.
   A hidden first cell changes directory to nbs/ (notebooks use paths relative to it, as under
   nbdev_test and Jupyter) and carries a digest of the package source, so cached executions are
   redone whenever any module changes.
2. write one API page per public module of `medvox_nb` (autodoc) and an index of all functions;
3. run sphinx-build with warnings as errors; myst-nb executes the notebooks (cached in
   docs/_build/.jupyter_cache; `--force` re-executes all) with MEDVOX_STATIC=1 (static figures)
   and MEDVOX_PROGRESS=0, in a kernel running this very interpreter.

Writes <out>/.medvox_build.json (input digest, pages, seconds); tests/test_docs_site.py reads it to
decide whether the site is fresh. Exit status: 0 ok, 1 sphinx failed (a warning, a broken notebook).
"""
from __future__ import annotations
import argparse, inspect, hashlib, importlib, importlib.util, json, os, pkgutil, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT/'docs'
PKG = 'medvox_nb'
DIRECTIVE = re.compile(r'^\s*#\s?\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')


# ---------------------------------------------------------------------------------------------------
# inputs and freshness

def input_files(nbs: Path = ROOT/'nbs') -> list[Path]:
    "Every file the site is built from: notebooks, package source, docs config/static, this script, settings."
    files = sorted(nbs.glob('*.ipynb')) + sorted((ROOT/PKG).rglob('*.py'))
    files += sorted(p for p in DOCS.rglob('*') if p.is_file() and '_build' not in p.parts and 'api' not in p.relative_to(DOCS).parts[:1])
    files += [Path(__file__).resolve(), ROOT/'settings.ini']
    return [f for f in files if f.is_file() and '__pycache__' not in f.parts]

def digest(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f).encode()); h.update(b'\0')
        h.update(f.read_bytes()); h.update(b'\0')
    return h.hexdigest()[:20]

def package_digest() -> str:
    return digest(sorted(p for p in (ROOT/PKG).rglob('*.py') if '__pycache__' not in p.parts))

def build_info(out: Path) -> dict | None:
    "The record written by the last successful build into `out`, or None."
    try: return json.loads((out/'.medvox_build.json').read_text())
    except (OSError, ValueError): return None

def is_fresh(out: Path, nbs: Path = ROOT/'nbs', executed: bool = True) -> bool:
    "True when `out` holds a successful build of the current inputs (executed, if `executed`)."
    info = build_info(out)
    return bool(info and (out/'index.html').is_file() and info.get('digest') == digest(input_files(nbs))
                and (info.get('executed') or not executed))


# ---------------------------------------------------------------------------------------------------
# staging notebooks

def split_directives(src: str) -> tuple[dict[str, str], str]:
    "nbdev `#| name: value` directive lines of a code cell -> ({name: value}, source without them)."
    dirs, keep = {}, []
    for line in src.splitlines():
        m = DIRECTIVE.match(line)
        if m: dirs[m[1]] = m[2]
        else: keep.append(line)
    return dirs, '\n'.join(keep).strip('\n')

_FALSE = ('false', 'no', '0')

def cell_tags(dirs: dict[str, str], body: str) -> set[str]:
    "myst-nb tags for a code cell with nbdev directives `dirs`."
    tags = set()
    if 'hide' in dirs or 'default_exp' in dirs or dirs.get('include', '').lower() in _FALSE or not body.strip():
        tags.add('remove-cell')
    if dirs.get('echo', '').lower() in _FALSE or 'hide_input' in dirs: tags.add('remove-input')
    if dirs.get('output', '').lower() in _FALSE or 'hide_output' in dirs: tags.add('remove-output')
    if dirs.get('eval', '').lower() in _FALSE: tags.add('skip-execution')
    return tags

def _src(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s

def stage_notebook(src: Path, nb_cwd: Path, pkg_hash: str, keep_outputs: bool) -> dict:
    "The notebook `src` as myst-nb should see it (see module doc)."
    nb = json.loads(src.read_text())
    cells = [{'cell_type': 'code', 'execution_count': None, 'id': 'medvox-docs-setup',
              'metadata': {'tags': ['remove-cell']}, 'outputs': [],
              'source': f'import os; os.chdir({str(nb_cwd)!r})  # medvox_nb source {pkg_hash}'}]
    for i, c in enumerate(nb['cells']):
        c = dict(c, metadata=dict(c.get('metadata', {})))
        c.setdefault('id', f'cell-{i}')
        if c['cell_type'] == 'code':
            dirs, body = split_directives(_src(c))
            tags = sorted(set(c['metadata'].get('tags', [])) | cell_tags(dirs, body))
            if tags: c['metadata']['tags'] = tags
            c['source'] = body
            if not keep_outputs: c['outputs'], c['execution_count'] = [], None
        cells.append(c)
    meta = dict(nb.get('metadata', {}))
    meta['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    meta['language_info'] = {'name': 'python', 'pygments_lexer': 'ipython3',
                             'codemirror_mode': {'name': 'ipython', 'version': 3}}
    return dict(nb, cells=cells, metadata=meta, nbformat=4, nbformat_minor=max(5, nb.get('nbformat_minor', 5)))

def _toctree(caption: str, entries: list[str], hidden: bool = True) -> str:
    opts = (':hidden:\n' if hidden else '') + f':caption: {caption}\n:maxdepth: 1\n'
    return '```{toctree}\n' + opts + '\n' + '\n'.join(entries) + '\n```\n'

def toctrees(names: list[str], hidden: bool = True) -> str:
    "Navigation: numbered notebooks (the library, in reading order), the other notebooks (experiments), API."
    lib = [n for n in names if re.match(r'\d', n)]
    other = [n for n in names if not re.match(r'\d', n)]
    parts = [_toctree('Library', lib, hidden)] if lib else []
    if other: parts.append(_toctree('Experiments', other, hidden))
    parts.append(_toctree('Reference', ['api/index'], hidden))
    return '\n'.join(parts)

def _write_if_changed(path: Path, text: str):
    "Write `text` only when it differs, so Sphinx re-reads (and re-executes) only changed pages."
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text: path.write_text(text)

def stage(nbs: Path, src_dir: Path, execute: bool) -> tuple[list[str], list[str]]:
    "Stage notebooks from `nbs` and generated pages into `src_dir`; returns the notebook and the API page names."
    notebooks = sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith(('.', '_')))
    names = [p.stem for p in notebooks if p.stem != 'index']
    pkg_hash = package_digest()
    wanted = set()
    for p in notebooks:
        nb = stage_notebook(p, ROOT/'nbs', pkg_hash, keep_outputs=not execute)
        if p.stem == 'index':
            nb['cells'].append({'cell_type': 'markdown', 'id': 'medvox-docs-toc', 'metadata': {},
                                'source': toctrees(names)})
        _write_if_changed(src_dir/p.name, json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
        wanted.add(p.name)
    if not (nbs/'index.ipynb').is_file():   # no home notebook yet: a plain home page
        print(f'build_docs: {nbs}/index.ipynb not found; using a generated home page', file=sys.stderr)
        title, desc = _settings('title', PKG), _settings('description', '')
        _write_if_changed(src_dir/'index.md', f'# {title}\n\n{desc}\n\n{toctrees(names, hidden=False)}')
        wanted.add('index.md')
    api = write_api_pages(src_dir/'api', nbs)
    wanted |= {f'api/{n}' for n in api}
    for f in list(src_dir.rglob('*')):      # pages whose notebook/module is gone
        if f.is_file() and str(f.relative_to(src_dir)) not in wanted: f.unlink()
    return names, ['api/' + n[:-3] for n in sorted(api, key=lambda n: n != 'index.md')]

def _settings(key: str, default: str = '') -> str:
    import configparser
    c = configparser.ConfigParser(); c.read(ROOT/'settings.ini')
    return c['DEFAULT'].get(key, default)


# ---------------------------------------------------------------------------------------------------
# API pages

def public_modules() -> list[str]:
    "Public pure-Python modules of the package (not `_modidx`, not native extensions, not private)."
    pkg = importlib.import_module(PKG)
    mods = []
    for m in pkgutil.walk_packages(pkg.__path__, PKG + '.'):
        if any(part.startswith('_') for part in m.name.split('.')[1:]): continue
        spec = importlib.util.find_spec(m.name)
        if spec is None or not str(spec.origin).endswith('.py'): continue
        if m.ispkg and not module_names(m.name): continue      # a subpackage's empty __init__: no page
        mods.append(m.name)
    return sorted(mods)

def source_notebooks(nbs: Path) -> dict[str, tuple[str, str]]:
    "module name -> (the notebook (stem) whose `#| default_exp` writes it, its `> summary` lines)."
    out = {}
    for p in sorted(nbs.glob('*.ipynb')):
        try: cells = json.loads(p.read_text())['cells']
        except (OSError, ValueError, KeyError): continue
        md = next((_src(c) for c in cells if c.get('cell_type') == 'markdown'), '')
        summary = ' '.join(l.lstrip('> ').strip() for l in md.splitlines() if l.startswith('>'))
        for c in cells:
            if c.get('cell_type') != 'code': continue
            m = re.search(r'^\s*#\s?\|\s*default_exp\s+([\w.]+)', _src(c), re.M)
            if m: out[f'{PKG}.{m[1]}'] = (p.stem, summary); break
    return out

def module_names(mod: str) -> list[str]:
    "Documented names of `mod`: its `__all__` (nbdev writes it), else its public functions/classes."
    m = importlib.import_module(mod)
    names = getattr(m, '__all__', None)
    if names is None:
        names = [n for n, v in vars(m).items() if not n.startswith('_') and callable(v) and getattr(v, '__module__', None) == mod]
    # functions and classes (a typing alias such as Literal[...] is callable but neither)
    return [n for n in names if inspect.isclass(getattr(m, n, None)) or inspect.isroutine(getattr(m, n, None))]

def summary(doc: str | None) -> str:
    "First sentence of a (markdown) docstring, on one line, safe inside a markdown table cell."
    if not doc: return ''
    text = ' '.join(doc.strip().split('\n\n')[0].split())
    out, code = [], False
    for i, ch in enumerate(text):      # cut at the first '. ' outside `code`
        if ch == '`': code = not code
        out.append(ch)
        if ch == '.' and not code and (i + 1 == len(text) or text[i + 1] == ' '): break
    return ''.join(out).replace('|', '\\|')

def write_api_pages(api: Path, nbs: Path) -> list[str]:
    "One page per public module (autodoc) and api/index (a summary table per module); returns the file names."
    mods, nbmap = public_modules(), source_notebooks(nbs)
    files, index = [], ['# API reference\n',
                        f'Every public function and class of the `{PKG}` package, by module. The notebooks '
                        'explain and demonstrate them; these pages are generated from the docstrings.\n',
                        '```{toctree}\n:hidden:\n\n' + '\n'.join(m.split('.', 1)[1] for m in mods) + '\n```\n']
    for mod in mods:
        short = mod.split('.', 1)[1]
        nb, about = nbmap.get(mod, (None, ''))
        link = (f'{about}\n\n' if about else '') + (f'Written in the notebook [{nb}](../{nb}.ipynb).\n\n' if nb else '')
        page = (f'# `{mod}`\n\n{link}```{{eval-rst}}\n.. automodule:: {mod}\n   :members:\n'
                f'   :show-inheritance:\n```\n')
        _write_if_changed(api/f'{short}.md', page); files.append(f'{short}.md')
        names = module_names(mod)
        index.append(f'## [`{mod}`]({short}.md)\n')
        if names:
            index.append('| name | what it does |\n|---|---|')
            m = importlib.import_module(mod)
            index += [f'| {{py:obj}}`~{mod}.{n}` | {summary(getattr(m, n).__doc__)} |' for n in names]
            index.append('')
    _write_if_changed(api/'index.md', '\n'.join(index)); files.append('index.md')
    return files


# ---------------------------------------------------------------------------------------------------
# kernel and sphinx

def kernel_dir(build: Path) -> Path:
    "A Jupyter data dir holding kernel `python3` = this interpreter (put first on JUPYTER_PATH)."
    d = build/'jupyter'
    spec = {'argv': [sys.executable, '-Xfrozen_modules=off', '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
            'display_name': 'Python 3 (medvox_nb docs)', 'language': 'python'}
    _write_if_changed(d/'kernels'/'python3'/'kernel.json', json.dumps(spec, indent=1))
    return d

_NOISE = ('Kernel is running over TCP without encryption', 'MdParserConfig(', 'NbParserConfig(')

def _run_sphinx(cmd, env) -> tuple[int, str]:
    "Run sphinx, echoing its output (minus known noise); returns (exit status, output)."
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if not any(n in line for n in _NOISE): sys.stdout.write(line); sys.stdout.flush()
    return p.wait(), ''.join(lines)

def _explain_failure(log: str, src_dir: Path, nbs: Path):
    "When a notebook failed to execute, print which one and the failing cell with its error (sphinx hides them in a file)."
    m = re.search(r'traceback has been saved in:\s*(\S+)', log)
    text = log
    if m:
        try: text = Path(m[1]).read_text(errors='replace')
        except OSError: pass
    bad = re.findall(r'ExecutionError: (\S+\.ipynb)', text)
    cell = re.search(r'CellExecutionError: (An error occurred while executing the following cell:.*?)(?:\n\s*\n\s*The above exception|\Z)', text, re.S)
    if not bad: return
    name = Path(bad[-1]).name
    print(f'build_docs: notebook {nbs/name} failed to execute', file=sys.stderr)
    if cell:
        body = '\n'.join(l[4:] if l.startswith('    ') else l for l in cell[1].splitlines())
        ls = body.splitlines()
        body = '\n'.join(ls if len(ls) <= 80 else ls[:40] + ['   [...]'] + ls[-30:])
        print(body, file=sys.stderr)
    print(f'build_docs: reproduce with: .venv/bin/nbdev_test --path {nbs/name} --flags "{_settings("tst_flags", "notest")}"'
          ' (the docs run every cell, also those marked notest)', file=sys.stderr)

def build(out: Path = DOCS/'_build'/'html', nbs: Path = ROOT/'nbs', execute: bool = True, force: bool = False,
          jobs: str = 'auto', quiet: bool = False) -> int:
    "Build the site into `out`; returns sphinx's exit status."
    t0 = time.time()
    files = input_files(nbs)
    work = DOCS/'_build'
    src_dir = work/'src'
    names, api = stage(nbs, src_dir, execute)
    env = dict(os.environ, MEDVOX_STATIC='1', MEDVOX_PROGRESS='0', PYDEVD_DISABLE_FILE_VALIDATION='1',
               MEDVOX_DOCS_EXECUTE=('force' if force else 'cache') if execute else 'off',
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    env['JUPYTER_PATH'] = os.pathsep.join([str(kernel_dir(work))] + [p for p in env.get('JUPYTER_PATH', '').split(os.pathsep) if p])
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-W', '--keep-going', '-j', str(jobs), '-c', str(DOCS),
           '-d', str(work/'doctrees'), str(src_dir), str(out)] + (['-q'] if quiet else [])
    if force: cmd.insert(3, '-E')
    print('build_docs:', ' '.join(cmd), flush=True)
    rc, log = _run_sphinx(cmd, env)
    secs = round(time.time() - t0, 1)
    if rc == 0:
        info = {'digest': digest(files), 'executed': execute, 'pages': ['index'] + names,
                'api': api,
                'seconds': secs, 'built': time.strftime('%Y-%m-%dT%H:%M:%S'), 'nbs': str(nbs)}
        (out/'.medvox_build.json').write_text(json.dumps(info, indent=1))
        print(f'build_docs: site in {out} ({len(names) + 1} notebook pages, {secs:.0f} s); open {out/"index.html"}')
    else:
        _explain_failure(log, src_dir, nbs)
        print(f'build_docs: FAILED after {secs:.0f} s (sphinx exit {rc}; see the warnings/errors above)', file=sys.stderr)
    return rc

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=DOCS/'_build'/'html', help='output folder (default docs/_build/html)')
    p.add_argument('--nbs', type=Path, default=ROOT/'nbs', help='notebook folder (default nbs/)')
    p.add_argument('--no-execute', action='store_true', help='do not execute notebooks (pages show saved outputs only)')
    p.add_argument('--force', action='store_true', help='re-execute every notebook and re-read every page (ignore caches)')
    p.add_argument('-j', '--jobs', default='auto', help="parallel sphinx readers (default 'auto')")
    p.add_argument('-q', '--quiet', action='store_true')
    a = p.parse_args(argv)
    return build(a.out.resolve(), a.nbs.resolve(), execute=not a.no_execute, force=a.force, jobs=a.jobs, quiet=a.quiet)

if __name__ == '__main__':
    sys.exit(main())

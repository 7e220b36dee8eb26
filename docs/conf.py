"""Sphinx configuration for the medvox_nb documentation site.

Do not run sphinx-build on docs/ directly: `scripts/build_docs.py` stages the notebooks from nbs/
(nbdev directives turned into myst-nb cell tags, a generated toctree and API pages) into
docs/_build/src and runs Sphinx there with this file (`-c docs`). The build script passes its
choices through environment variables (MEDVOX_DOCS_*), read below.
"""
import configparser, os, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_ini = configparser.ConfigParser(); _ini.read(ROOT/'settings.ini')
_s = _ini['DEFAULT']

project = _s.get('title', 'medvox_nb')
author = _s.get('author', '')
copyright = _s.get('copyright', '')
release = version = _s.get('version', '')

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'sphinx.ext.viewcode', 'sphinx.ext.mathjax']
root_doc = 'index'
exclude_patterns = ['_build', 'jupyter_execute', '.jupyter_cache', '**.ipynb_checkpoints']
source_suffix = {'.ipynb': 'myst-nb', '.md': 'myst-nb'}

# --- notebooks: executed at build time -------------------------------------------------------
nb_execution_mode = os.environ.get('MEDVOX_DOCS_EXECUTE', 'cache')      # cache | force | off
nb_execution_cache_path = os.environ.get('MEDVOX_DOCS_CACHE', str(ROOT/'docs'/'_build'/'.jupyter_cache'))
nb_execution_timeout = int(os.environ.get('MEDVOX_DOCS_TIMEOUT', '1800'))  # seconds per cell
nb_execution_raise_on_error = True        # a broken notebook fails the build
nb_execution_allow_errors = False
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = 'show'
nb_kernel_rgx_aliases = {'.*': 'python3'}  # every notebook runs in the build's own interpreter
nb_render_image_options = {}
nb_mime_priority_overrides = [('html', 'application/vnd.jupyter.widget-view+json', None)]  # static site: no live widgets
nb_ipywidgets_js = {}                      # ... and no widget JS from a CDN (the site works offline)
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'deflist', 'html_image', 'substitution']
myst_heading_anchors = 3
myst_url_schemes = ['http', 'https', 'mailto']
suppress_warnings = ['myst.header']          # notebooks start at '#', sections may skip levels

# --- API pages ----------------------------------------------------------------------------------
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True
autodoc_default_options = {'members': True, 'undoc-members': True, 'show-inheritance': True}
add_module_names = False


def _md_to_rst(text: str) -> str:
    "nbdev docstrings are markdown one-liners: `code` -> ``code``, [t](url) -> links, escape reST markup."
    out = []
    for i, part in enumerate(re.split(r'(`[^`\n]+`)', text)):
        if i % 2: out.append('``' + part[1:-1] + '``'); continue
        links = []
        def keep(m): links.append(f'`{m[1]} <{m[2]}>`__'); return f'\0{len(links)-1}\0'
        part = re.sub(r'\[([^\]]+)\]\((\S+?)\)', keep, part)
        part = re.sub(r'([\\*|_`])', r'\\\1', part)
        part = re.sub(r'\0(\d+)\0', lambda m: links[int(m[1])], part)
        out.append(part)
    return ''.join(out)


def _docstring_md(app, what, name, obj, options, lines):
    if what == 'module': lines[:] = []; return   # nbdev cuts it to one line; the page quotes the notebook instead
    if not lines: return
    lines[:] = _md_to_rst('\n'.join(lines)).split('\n')


def _skip_foreign(app, what, name, obj, skip, options):
    "Document only what medvox_nb defines (not e.g. the `set` matplotlib adds to Figure subclasses)."
    mod = getattr(obj, '__module__', None)
    if what == 'class' and callable(obj) and isinstance(mod, str) and not mod.startswith('medvox_nb'): return True
    return None


def setup(app):
    app.connect('autodoc-process-docstring', _docstring_md)
    app.connect('autodoc-skip-member', _skip_foreign)


# --- HTML -------------------------------------------------------------------------------------------
html_theme = 'sphinx_book_theme'
html_title = project
html_static_path = ['_static']
html_css_files = ['medvox.css']
html_last_updated_fmt = None
html_copy_source = False
html_theme_options = {
    'repository_url': _s.get('git_url', ''),
    'repository_branch': _s.get('branch', 'main'),
    'path_to_docs': 'nbs',
    'use_repository_button': bool(_s.get('git_url')),
    'use_download_button': False,       # the staged sources are not the notebooks users should download
    'show_toc_level': 2,
    'navigation_with_keys': False,
    'home_page_in_toc': True,
}

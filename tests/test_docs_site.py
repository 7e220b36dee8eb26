"""The documentation site: built from the notebooks (scripts/build_docs.py: Sphinx + myst-nb), served
over http on 127.0.0.1 and opened page by page in headless Chromium.

The site is built here unless docs/_build/html already holds a build of the current inputs, or
`MEDVOX_DOCS_DIR` points at a built site (e.g. the one `make docs` or the CI step just made).
Every page must render in the browser: a title, non-empty main content, every figure decoded by
the browser (naturalWidth > 0, checked by a script the test server adds to each page) and served as
a real PNG; API pages must document every public function and class of their module.
"""
import html.parser, http.server, importlib.util, json, os, re, shutil, subprocess, sys, threading
from functools import partial
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('build_docs', ROOT/'scripts'/'build_docs.py')
bd = importlib.util.module_from_spec(spec); spec.loader.exec_module(bd)

CHROME = next((p for p in [shutil.which('chromium'), shutil.which('chromium-browser'), shutil.which('google-chrome'),
                           '/usr/bin/chromium'] if p and Path(p).exists()), None)
CHROME_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--disable-dev-shm-usage', '--hide-scrollbars', '--window-size=1280,900']
PNG = b'\x89PNG\r\n\x1a\n'

# Added by the test server to every html page: after `load`, record on <body> how many images the
# page has and which of them the browser failed to decode (complete but naturalWidth == 0).
PROBE = b"""<script>window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.getAttribute('src'); });
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).map(function (i) { return i.getAttribute('src'); });
  document.body.setAttribute('data-medvox-probe', JSON.stringify({n: imgs.length, bad: bad, ok: ok}));
});</script>"""


# --------------------------------------------------------------------------------------------------
# the directive translation (fast, no build needed)

def test_directives_become_cell_tags():
    dirs, body = bd.split_directives('#| hide\nfrom fastcore.test import *')
    assert dirs == {'hide': ''} and body == 'from fastcore.test import *'
    assert bd.cell_tags(dirs, body) == {'remove-cell'}
    dirs, body = bd.split_directives('#| export\ndef f(x): return x')
    assert bd.cell_tags(dirs, body) == set() and body == 'def f(x): return x'
    assert bd.cell_tags(*bd.split_directives('#| default_exp viewer')) == {'remove-cell'}
    assert bd.cell_tags(*bd.split_directives('#| eval: false\ntrain()')) == {'skip-execution'}
    assert bd.cell_tags(*bd.split_directives('# | echo: false\nplot()')) == {'remove-input'}
    assert bd.cell_tags(*bd.split_directives('#| output: false\nx')) == {'remove-output'}


def test_staged_notebook(tmp_path):
    "The staged copy of the viewer notebook: a hidden set-up cell first, hidden cells tagged, no `#|` lines left."
    src = ROOT/'nbs'/'00a_viewer.ipynb'
    nb = bd.stage_notebook(src, ROOT/'nbs', 'abc', keep_outputs=False)
    orig = json.loads(src.read_text())['cells']
    assert len(nb['cells']) == len(orig) + 1
    first = nb['cells'][0]
    assert first['metadata']['tags'] == ['remove-cell'] and 'os.chdir' in first['source'] and 'abc' in first['source']
    code = [c for c in nb['cells'][1:] if c['cell_type'] == 'code']
    assert not any('#|' in c['source'] for c in code)
    hidden = [c for c, o in zip(nb['cells'][1:], orig) if '#| hide' in ''.join(o['source'])]
    assert hidden and all('remove-cell' in c['metadata']['tags'] for c in hidden)
    exported = [c for c, o in zip(nb['cells'][1:], orig) if '#| export' in ''.join(o['source'])]
    assert exported and all('remove-cell' not in c['metadata'].get('tags', []) for c in exported)
    assert nb['metadata']['kernelspec']['name'] == 'python3'


def test_api_modules_skip_private_and_native():
    mods = bd.public_modules()
    assert 'medvox_nb.core' in mods and 'medvox_nb.viewer' in mods
    assert not any(m.split('.')[-1].startswith('_') for m in mods)


# --------------------------------------------------------------------------------------------------
# the built site in a browser

@pytest.fixture(scope='module')
def site() -> Path:
    "A built site: $MEDVOX_DOCS_DIR, or docs/_build/html (built now unless fresh)."
    if os.environ.get('MEDVOX_DOCS_DIR'):
        out = Path(os.environ['MEDVOX_DOCS_DIR']).resolve()
        assert (out/'index.html').is_file(), f'MEDVOX_DOCS_DIR={out} holds no built site (no index.html)'
        return out
    out = ROOT/'docs'/'_build'/'html'
    if not bd.is_fresh(out):
        p = subprocess.run([sys.executable, str(ROOT/'scripts'/'build_docs.py'), '--out', str(out), '-q'],
                           cwd=ROOT, capture_output=True, text=True, timeout=3600)
        assert p.returncode == 0, f'docs build failed:\n{p.stdout[-6000:]}\n{p.stderr[-6000:]}'
    return out


@pytest.fixture(scope='module')
def pages(site) -> dict:
    "Page names: the home page, the notebook pages and the API pages of this build."
    info = bd.build_info(site) or {}
    nb_pages = info.get('pages') or ['index'] + sorted(p.stem for p in (ROOT/'nbs').glob('*.ipynb') if p.stem != 'index')
    api = info.get('api') or ['api/index'] + [f'api/{m.split(".", 1)[1]}' for m in bd.public_modules()]
    return {'notebooks': nb_pages, 'api': api}


class _Handler(http.server.SimpleHTTPRequestHandler):
    "Static files; html pages get the image PROBE script before </body>."
    def log_message(self, *a): pass
    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir(): path = path/'index.html'
        if path.suffix != '.html' or not path.is_file(): return super().send_head()
        body = path.read_bytes().replace(b'</body>', PROBE + b'</body>', 1)
        self.send_response(200)
        self.send_header('Content-Type', 'text/html; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        import io
        return io.BytesIO(body)


@pytest.fixture(scope='module')
def server(site):
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(_Handler, directory=str(site)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown(); httpd.server_close()


@pytest.fixture(scope='module')
def chrome(tmp_path_factory):
    if CHROME is None: pytest.skip('chromium not installed (Debian: apt-get install chromium); the browser check needs it')
    profile = tmp_path_factory.mktemp('chrome-profile')
    def run(*args, timeout=120):
        p = subprocess.run([CHROME, *CHROME_FLAGS, f'--user-data-dir={profile}', *args],
                           capture_output=True, text=True, timeout=timeout)
        return p
    return run


class _Page(html.parser.HTMLParser):
    "What the checks need from a rendered DOM."
    def __init__(self):
        super().__init__()
        self.title, self.h1, self.imgs, self.ids, self.probe, self.links = '', '', [], set(), None, set()
        self.article_text, self.tracebacks = [], 0
        self._in, self._depth = set(), 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'body' and 'data-medvox-probe' in a: self.probe = json.loads(a['data-medvox-probe'])
        if 'id' in a: self.ids.add(a['id'])
        cls = a.get('class') or ''
        if 'traceback' in cls.split(): self.tracebacks += 1
        if tag == 'article': self._depth += 1
        if tag in ('title', 'h1'): self._in.add(tag)
        if tag == 'img' and self._depth: self.imgs.append(a.get('src', ''))
        if tag == 'a' and a.get('href'): self.links.add(a['href'])
    def handle_endtag(self, tag):
        if tag == 'article': self._depth -= 1
        self._in.discard(tag)
    def handle_data(self, data):
        if 'title' in self._in: self.title += data
        if 'h1' in self._in and self._depth: self.h1 += data
        if self._depth: self.article_text.append(data)


def load(chrome, server, page: str) -> _Page:
    "Open `page` in headless Chromium (scripts run, load event awaited) and parse the resulting DOM."
    p = chrome('--virtual-time-budget=15000', '--run-all-compositor-stages-before-draw', '--dump-dom',
               f'{server}/{page}.html')
    assert p.returncode == 0 and '<html' in p.stdout, f'chromium could not open {page}: rc {p.returncode}\n{p.stderr[-2000:]}'
    d = _Page(); d.feed(p.stdout); return d


def check_page(chrome, server, site, page):
    assert (site/f'{page}.html').is_file(), f'{page}.html was not built'
    d = load(chrome, server, page)
    text = ' '.join(' '.join(d.article_text).split())
    assert d.title.strip(), f'{page}: no <title>'
    assert d.h1.strip(), f'{page}: no page heading'
    assert len(text) > 40, f'{page}: main content empty ({text!r})'
    assert d.probe is not None, f'{page}: the page did not finish loading in the browser'
    assert not d.probe['bad'], f'{page}: images the browser could not show: {d.probe["bad"]}'
    assert d.tracebacks == 0, f'{page}: shows a traceback'
    for href in d.links:                      # every link inside the site leads to a file of the site
        if re.match(r'^([a-z]+:|#|//)', href): continue
        f = (site/Path(page).parent/href.split('#')[0].split('?')[0]).resolve()
        if f.is_dir(): f = f/'index.html'
        assert f.is_file(), f'{page}: broken link {href}'
    for src in d.imgs:
        f = (site/Path(page).parent/src).resolve()
        assert f.is_file() and f.stat().st_size > 0, f'{page}: image {src} missing on the server'
        if f.suffix == '.png': assert f.read_bytes()[:8] == PNG, f'{page}: {src} is not a PNG'
    return d


def test_home_page(site, server, chrome, pages, tmp_path):
    d = check_page(chrome, server, site, 'index')
    # the navigation reaches every notebook page and the API reference
    for name in pages['notebooks'][1:] + ['api/index']:
        assert (site/f'{name}.html').is_file(), f'{name}.html not built'
    shot = tmp_path/'home.png'
    p = chrome(f'--screenshot={shot}', '--virtual-time-budget=15000', f'{server}/index.html')
    assert p.returncode == 0 and shot.read_bytes()[:8] == PNG
    from PIL import Image
    import numpy as np
    im = np.asarray(Image.open(shot).convert('L'), dtype=float)
    assert im.shape[:2] == (900, 1280) and im.std() > 5, 'home page screenshot is blank'
    if os.environ.get('MEDVOX_DOCS_SCREENSHOT'): shutil.copy(shot, os.environ['MEDVOX_DOCS_SCREENSHOT'])


def test_notebook_pages(site, server, chrome, pages):
    "Every notebook page renders; figures are real images; the viewer page shows its figures."
    n_imgs = {}
    for page in pages['notebooks'][1:]:
        n_imgs[page] = len(check_page(chrome, server, site, page).imgs)
    if '00a_viewer' in n_imgs: assert n_imgs['00a_viewer'] >= 4, n_imgs
    assert sum(n_imgs.values()) > 0, f'no figure on any notebook page: {n_imgs}'


def test_api_pages(site, server, chrome, pages):
    "Each module page documents every public function/class of the module (Sphinx anchors `medvox_nb.mod.name`)."
    idx = check_page(chrome, server, site, 'api/index')
    for page in pages['api'][1:]:
        mod = 'medvox_nb.' + page.split('/', 1)[1]
        d = check_page(chrome, server, site, page)
        names = bd.module_names(mod)
        missing = [n for n in names if f'{mod}.{n}' not in d.ids]
        assert not missing, f'{page}: not documented: {missing}'
        assert names, f'{mod} has no public functions or classes'
        assert f'{mod}' in ' '.join(idx.article_text)


# --------------------------------------------------------------------------------------------------
# figures reach notebook outputs (what the docs, papermill and saved notebooks show)

def test_viewer_figures_are_notebook_outputs(tmp_path):
    "In a real kernel: show_volume/show_volumes put exactly one PNG per call in the cell's outputs, `;` or not."
    nbformat = pytest.importorskip('nbformat'); nbclient = pytest.importorskip('nbclient')
    cells = ['import numpy as np\nfrom medvox_nb.viewer import show_volume, show_volumes, mip_figure\n'
             'v = np.random.default_rng(0).random((16, 12, 8), dtype=np.float32)',
             'show_volume(v, spacing=(10, 10, 30))',
             'show_volume(v, spacing=(10, 10, 30));',
             'f = show_volume(v, title="t")\nf',
             'f',
             'show_volumes([v, v], titles=["a", "b"]);',
             'mip_figure(v)',
             'w = show_volume(v, interactive=True);\nw']
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env_dir = bd.kernel_dir(tmp_path)
    old = os.environ.get('JUPYTER_PATH')
    os.environ['JUPYTER_PATH'] = str(env_dir)
    try:
        nbclient.NotebookClient(nb, kernel_name='python3', timeout=300,
                                resources={'metadata': {'path': str(tmp_path)}}).execute(env=dict(os.environ, MEDVOX_STATIC='1'))
    finally:
        if old is None: os.environ.pop('JUPYTER_PATH')
        else: os.environ['JUPYTER_PATH'] = old
    pngs = [sum('image/png' in o.get('data', {}) for o in c.outputs) for c in nb.cells]
    assert pngs[1:7] == [1, 1, 1, 1, 1, 1], pngs
    widgets = [o for o in nb.cells[7].outputs if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})]
    assert len(widgets) == 1, nb.cells[7].outputs       # the explorer, shown once
    import base64
    for c in nb.cells[1:7]:
        png = next(o['data']['image/png'] for o in c.outputs if 'image/png' in o.get('data', {}))
        assert base64.b64decode(png)[:8] == PNG

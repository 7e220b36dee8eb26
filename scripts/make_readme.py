"""README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which cannot be installed here).
Markdown cells verbatim, code cells as python blocks; `--check` exits 1 when README.md is stale."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    out = ['<!-- generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook -->\n']
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        out.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        ok = readme.exists() and readme.read_text(encoding='utf-8') == text
        print('README.md is up to date' if ok else 'README.md is stale: run python scripts/make_readme.py')
        sys.exit(0 if ok else 1)
    readme.write_text(text, encoding='utf-8'); print('wrote README.md')

"""Regenerate data_samples/nerf_lego_small from the full-resolution lego views.

    python data_samples/nerf_lego_small/make_sample.py [--src ../shared/data/nerf_lego] [--size 100]

Takes 24 training views and 4 validation views (disjoint) of the 60 lego frames in
`transforms_train.json`, downsamples the 800x800 RGBA PNGs to `size`x`size` with PIL's area
filter (BOX, on premultiplied alpha, as Pillow does for RGBA) and writes them with a
`transforms_train.json` / `transforms_val.json` pair in the NeRF "Blender" format (same
`camera_angle_x`, same `transform_matrix` per frame, `file_path` ./train/r_N and ./val/r_N).
"""
import argparse, json
from pathlib import Path
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
VAL_FRAMES = [5, 20, 35, 50]

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--src', default=str(HERE.parents[2]/'shared'/'data'/'nerf_lego'))
    p.add_argument('--size', type=int, default=100)
    p.add_argument('--n-train', type=int, default=24)
    a = p.parse_args(argv)
    src = Path(a.src)
    meta = json.loads((src/'transforms_train.json').read_text())
    frames = meta['frames']
    rest = [i for i in range(len(frames)) if i not in VAL_FRAMES]
    train = [rest[i] for i in np.linspace(0, len(rest) - 1, a.n_train).round().astype(int)]
    for split, ids in [('train', train), ('val', VAL_FRAMES)]:
        (HERE/split).mkdir(exist_ok=True)
        out = []
        for i in ids:
            fr = frames[i]
            name = Path(fr['file_path']).name
            im = Image.open(src/(fr['file_path'] + '.png')).convert('RGBA').resize((a.size, a.size), Image.Resampling.BOX)
            im.save(HERE/split/f'{name}.png', optimize=True)
            out.append(dict(file_path=f'./{split}/{name}', rotation=fr.get('rotation', 0.0), transform_matrix=fr['transform_matrix'], source_frame=i))
        (HERE/f'transforms_{split}.json').write_text(json.dumps(dict(camera_angle_x=meta['camera_angle_x'], frames=out), indent=2))
        print(split, len(ids), 'views:', ids)

if __name__ == '__main__':
    main()

"""Regenerate data_samples/smlm/ from the two real SMLM clouds in ../shared/data/smlm (deterministic).

    .venv/bin/python data_samples/smlm/make_samples.py [--data ../shared/data/smlm]

Writes, beside this script:
  thunderstorm_excerpt.csv      header + first 300 rows of ThunderSTORM_TS3D.csv, bytes unchanged
  vlume_excerpt.csv             header + first 300 rows of CaulobacterC_2_R09_MoernerLab.csv, bytes unchanged
  vlume_commented_excerpt.csv   the same 300 rows preceded by '#' comment lines (added here, to exercise
                                the vLUME comment dialect; the original file has none)
  picasso_excerpt.hdf5 + .yaml  the 300 ThunderSTORM rows converted to Picasso's layout: dataset 'locs'
                                (frame, x, y, photons, sx, sy, bg, lpx, lpy, z), x/y/sx/sy/lpx/lpy in
                                130 nm camera pixels (float32, like Picasso), z in nm; sidecar with Pixelsize: 130
  smlm_samples.h5               10 samples in the ragged-points-v1 layout (see SAMPLES below)
  seed_layout.h5                4 samples in the seeds' layout: dataset 'data' (4, 2000, 3) float32 nm,
                                shorter clouds padded with all-NaN rows (sample 1) or all-zero rows (sample 2)
"""
import argparse, json
from pathlib import Path
import numpy as np
import h5py

HERE = Path(__file__).resolve().parent
SEED = 20261122
TS_NAME, CB_NAME = 'ThunderSTORM_TS3D.csv', 'CaulobacterC_2_R09_MoernerLab.csv'
PIXEL = 130.0   # nm per camera pixel used for the Picasso excerpt


def excerpt(src: Path, dst: Path, rows: int = 300, comments: list[str] | None = None):
    "Header + first `rows` lines of `src`, byte for byte, optionally preceded by comment lines."
    with open(src, 'rb') as f: lines = [f.readline() for _ in range(rows + 1)]
    eol = b'\r\n' if lines[0].endswith(b'\r\n') else b'\n'
    head = b''.join(c.encode() + eol for c in comments or [])
    dst.write_bytes(head + b''.join(lines))


def rotate_xy(p, deg, centre):
    t = np.deg2rad(deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    q = p.copy()
    q[:, :2] = (p[:, :2] - centre) @ r.T + centre
    return q


def subset(rng, p, n):
    "`n` random rows of `p`, original order kept."
    return p[np.sort(rng.choice(len(p), size=min(n, len(p)), replace=False))]


def derive(rng, name, p):
    "Five samples from one real cloud `p` (N, 3) nm: (label, points)."
    n = len(p)
    c = p[:, :2].mean(0)
    xm = np.median(p[:, 0])
    lo, hi = np.percentile(p[:, :2], 20, axis=0), np.percentile(p[:, :2], 80, axis=0)
    out = [(f'{name}: random 4000 of {n}', subset(rng, p, 4000))]
    left = p[p[:, 0] < xm]
    out.append((f'{name}: crop x < median x ({xm:.0f} nm), random {min(4500, len(left))} of {len(left)}', subset(rng, left, 4500)))
    win = p[((p[:, :2] >= lo) & (p[:, :2] <= hi)).all(1)]
    out.append((f'{name}: crop to the 20-80th percentile window in x and y ({len(win)} points), random {min(3500, len(win))}', subset(rng, win, 3500)))
    out.append((f'{name}: rotated 90 deg about its xy centroid, random 3000', rotate_xy(subset(rng, p, 3000), 90, c)))
    deg = float(rng.uniform(0, 360))
    q = rotate_xy(subset(rng, p, 2500), deg, c)
    ext = q[:, :2].max(0) - q[:, :2].min(0)
    new_min = rng.uniform(500, 27500 - ext)
    shift = new_min - q[:, :2].min(0)
    q[:, :2] += shift
    out.append((f'{name}: rotated {deg:.1f} deg about its xy centroid, shifted by ({shift[0]:.0f}, {shift[1]:.0f}) nm, random 2500', q))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', type=Path, default=HERE.parents[2]/'shared'/'data'/'smlm')
    args = ap.parse_args()
    from medvox_nb.pointcloud import read_points, write_ragged_h5
    rng = np.random.default_rng(SEED)
    ts, cb = read_points(args.data/TS_NAME), read_points(args.data/CB_NAME)
    assert len(ts) == 11195 and len(cb) == 8759, (len(ts), len(cb))

    excerpt(args.data/TS_NAME, HERE/'thunderstorm_excerpt.csv')
    excerpt(args.data/CB_NAME, HERE/'vlume_excerpt.csv')
    excerpt(args.data/CB_NAME, HERE/'vlume_commented_excerpt.csv',
            comments=['# Caulobacter crescentus, 3D SMLM localisations (x, y, z in nm)',
                      '# first 300 rows of CaulobacterC_2_R09_MoernerLab.csv; comment lines added by make_samples.py'])

    import pandas as pd
    t = pd.read_csv(HERE/'thunderstorm_excerpt.csv')
    locs = np.zeros(len(t), dtype=[('frame', 'u4'), ('x', 'f4'), ('y', 'f4'), ('photons', 'f4'), ('sx', 'f4'), ('sy', 'f4'),
                                   ('bg', 'f4'), ('lpx', 'f4'), ('lpy', 'f4'), ('z', 'f4')])
    locs['frame'] = t['frame'] - 1               # Picasso frames start at 0
    locs['x'], locs['y'] = t['x [nm]'] / PIXEL, t['y [nm]'] / PIXEL
    locs['photons'], locs['bg'] = t['intensity [photon]'], t['offset [photon]']
    locs['sx'], locs['sy'] = t['sigma1 [nm]'] / PIXEL, t['sigma2 [nm]'] / PIXEL
    locs['lpx'] = locs['lpy'] = t['uncertainty_xy [nm]'] / PIXEL
    locs['z'] = t['z [nm]']
    with h5py.File(HERE/'picasso_excerpt.hdf5', 'w') as f: f.create_dataset('locs', data=locs)
    (HERE/'picasso_excerpt.yaml').write_text(
        'Byte Order: <\nData Type: uint16\nFrames: 25000\nHeight: 256\nWidth: 256\n'
        '---\nGenerated by: medvox_nb data_samples/smlm/make_samples.py (from ThunderSTORM_TS3D.csv rows 1-300)\n'
        f'Pixelsize: {PIXEL:g}\n')

    samples = derive(rng, TS_NAME, ts) + derive(rng, CB_NAME, cb)
    write_ragged_h5(HERE/'smlm_samples.h5', [p for _, p in samples], names=[n for n, _ in samples],
                    attrs={'source': 'ThunderSTORM_TS3D.csv and CaulobacterC_2_R09_MoernerLab.csv (csoeller/PYME-SMLM-import-tests, CC0 1.0)',
                           'made_by': 'data_samples/smlm/make_samples.py', 'seed': SEED})

    seed_clouds = [subset(rng, ts, 2000), subset(rng, cb, 1500), subset(rng, ts, 1800), subset(rng, cb, 2000)]
    data = np.zeros((4, 2000, 3), np.float32)
    for i, p in enumerate(seed_clouds):
        data[i, :len(p)] = p
        if i == 1: data[i, len(p):] = np.nan
    with h5py.File(HERE/'seed_layout.h5', 'w') as f:
        f.create_dataset('data', data=data, compression='gzip', shuffle=True)

    for n, p in samples: print(f'{len(p):5d}  {n}')
    total = sum(q.stat().st_size for q in HERE.iterdir() if q.is_file())
    print(f'total size of {HERE}: {total / 1e6:.2f} MB')


if __name__ == '__main__':
    main()

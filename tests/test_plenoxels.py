"Plenoxels model: SH, interpolation, rendering, TV, pruning/upsampling, Blender loading."
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from medvox_nb.core import InputError, ConfigError
from medvox_nb.plenoxels import (PlenoxelConfig, VoxelGrid, eval_sh_basis, SH_C0, SH_C1, SH_C2, SH_C3, load_blender, get_rays,
                                 render_rays, render_image, psnr, tv_loss, prune, upsample, ray_aabb, as_plenoxel_config,
                                 contributing_voxels)

def _rand_grid(res=(6, 7, 8), deg=2, seed=0, bounds=(-1, -1, -1, 1, 1, 1)):
    g = VoxelGrid(res, bounds, sh_degree=deg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g.density.copy_(torch.randn(res, generator=gen)*5 + 2)
        g.sh.copy_(torch.randn(g.sh.shape, generator=gen)*0.3)
    return g

def test_sh_known_values():
    # along +x: Y_1^1 term is -C1*x, (x^2-y^2) term C2[4], x(x^2-3y^2) term C3[6]
    b = eval_sh_basis(3, torch.tensor([[1., 0., 0.]]))[0]
    expect = torch.zeros(16); expect[0] = SH_C0; expect[3] = -SH_C1; expect[6] = -SH_C2[2]; expect[8] = SH_C2[4]
    expect[13] = -SH_C3[4]; expect[15] = SH_C3[6]
    torch.testing.assert_close(b, expect)
    # a general direction against the closed forms
    d = F.normalize(torch.tensor([0.3, -0.5, 0.8]), dim=0); x, y, z = d.tolist()
    b = eval_sh_basis(3, d)
    assert b[5].item() == pytest.approx(SH_C2[1]*y*z, abs=1e-6)
    assert b[10].item() == pytest.approx(SH_C3[1]*x*y*z, abs=1e-6)
    assert b[12].item() == pytest.approx(SH_C3[3]*z*(2*z*z - 3*x*x - 3*y*y), abs=1e-6)
    for deg in range(4): assert eval_sh_basis(deg, d[None]).shape == (1, (deg + 1)**2)
    with pytest.raises(ConfigError): eval_sh_basis(4, d)

def test_trilinear_exact_at_centres_and_linear_between():
    g = _rand_grid((5, 4, 6), deg=1, bounds=(-2, -1, 0, 2, 1, 3))
    ijk = torch.stack(torch.meshgrid(*[torch.arange(r) for r in g.resolution], indexing='ij'), -1).reshape(-1, 3)
    dens, sh = g.interpolate(g.index_to_world(ijk))
    torch.testing.assert_close(dens, g.density.detach().reshape(-1))
    torch.testing.assert_close(sh, g.sh.detach().reshape(-1, 4, 3))
    # the centre formula of the contract
    vs = torch.tensor([4/5, 2/4, 3/6])
    torch.testing.assert_close(g.index_to_world(torch.tensor([2, 1, 3])), torch.tensor([-2., -1, 0]) + (torch.tensor([2., 1, 3]) + 0.5)*vs)
    # a quarter of the way between two x-neighbours
    p = g.index_to_world(torch.tensor([1., 2, 3]))*0.75 + g.index_to_world(torch.tensor([2., 2, 3]))*0.25
    d = g.interpolate(p[None])[0]
    assert d.item() == pytest.approx(0.75*g.density[1, 2, 3].item() + 0.25*g.density[2, 2, 3].item(), rel=1e-5)

def test_analytic_transmittance_oblique_ray():
    sigma = 0.9
    g = VoxelGrid((10, 10, 10), (-1, -1, -1, 1, 1, 1), sh_degree=0, init_density=sigma)
    o = torch.tensor([[-3., -2.5, -1.7]]); d = F.normalize(torch.tensor([[1.0, 0.9, 0.6]]), dim=-1)
    tn, tf = ray_aabb(o, d, g.bounds_min, g.bounds_max)
    L = (tf - tn).item(); assert L > 0.5
    out = render_rays(g, o, d, PlenoxelConfig(stop_thresh=0.0))
    assert 1 - out['acc'].item() == pytest.approx(math.exp(-sigma*L), rel=1e-5)
    # expected depth of the exponential distribution truncated to [tn, tf]; midpoint quadrature is close
    tn = tn.item(); w = 1 - math.exp(-sigma*L)
    ed = (tn + 1/sigma - (tn + L + 1/sigma)*math.exp(-sigma*L))
    assert out['depth'].item() == pytest.approx(ed, rel=2e-3)

def test_constant_colour_renders_that_colour_from_any_camera():
    for act in ('relu', 'sigmoid'):
        cfg = PlenoxelConfig(color_activation=act)
        g = VoxelGrid((12, 12, 12), (-1, -1, -1, 1, 1, 1), sh_degree=2, init_density=80.)
        target = torch.tensor([0.15, 0.55, 0.8])
        raw = (target - 0.5)/SH_C0 if act == 'relu' else torch.logit(target)/SH_C0
        with torch.no_grad(): g.sh[..., 0, :] = raw
        for ang in (0.0, 1.0, 2.5):
            c2w = torch.eye(4)
            c, s = math.cos(ang), math.sin(ang)
            c2w[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]]); c2w[:3, 3] = torch.tensor([4*s, 0., 4*c])
            img = render_image(g, c2w, 20, 20, 25., cfg=cfg)
            torch.testing.assert_close(img[7:13, 7:13].reshape(-1, 3).mean(0), target, atol=1e-4, rtol=0)
            assert img[0, 0].tolist() == [1.0, 1.0, 1.0]        # corner ray misses the box: white background

def test_early_termination_and_gradients_match_full_marching():
    g = _rand_grid((10, 10, 10))
    with torch.no_grad(): g.density.mul_(5)                 # optical depth ~10 across the box: rays terminate early
    o, d = get_rays(12, 12, 15., torch.tensor([[1., 0, 0, 0], [0, 1, 0, 0.1], [0, 0, 1, 3.5], [0, 0, 0, 1]]))
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    full = render_rays(g, o, d, PlenoxelConfig(stop_thresh=0.0), chunk_samples=4)
    early = render_rays(g, o, d, PlenoxelConfig(stop_thresh=1e-4), chunk_samples=4)
    torch.testing.assert_close(early['rgb'], full['rgb'], atol=2e-4, rtol=0)
    assert early['n_samples'] < full['n_samples']
    # sparse gradient sinks reproduce the dense gradients
    full['rgb'].sum().backward()
    gd, gs = g.density.grad.clone(), g.sh.grad.clone()
    g.sparse_grad(True)
    render_rays(g, o, d, PlenoxelConfig(stop_thresh=0.0), chunk_samples=4)['rgb'].sum().backward()
    rows, vals = g.sinks['density'].collect()
    torch.testing.assert_close(torch.zeros(1000).index_put_((rows,), vals[:, 0]), gd.view(-1), atol=1e-5, rtol=1e-4)
    rows, vals = g.sinks['sh'].collect()
    dense = torch.zeros(1000, 27); dense[rows] = vals
    torch.testing.assert_close(dense, gs.view(1000, 27), atol=1e-5, rtol=1e-4)

def test_density_gradient_matches_finite_differences():
    g = _rand_grid((5, 5, 5), deg=1, seed=3)
    with torch.no_grad(): g.density.abs_().mul_(0.5)     # all positive: ReLU is smooth here
    o, d = get_rays(6, 6, 8., torch.tensor([[1., 0, 0, 0.05], [0, 1, 0, 0.02], [0, 0, 1, 3.], [0, 0, 0, 1]]))
    cfg = PlenoxelConfig(stop_thresh=0.0)
    def f(): return render_rays(g, o.reshape(-1, 3), d.reshape(-1, 3), cfg)['rgb'].square().sum()
    f().backward()
    for ijk in [(2, 2, 2), (1, 3, 2), (2, 2, 4)]:
        with torch.no_grad():
            g.density[ijk] += 0.1; up = f().item(); g.density[ijk] -= 0.2; dn = f().item(); g.density[ijk] += 0.1
        assert (up - dn)/0.2 == pytest.approx(g.density.grad[ijk].item(), rel=3e-2, abs=3e-4)   # float32 sums: a coarse step

def test_tv_gradient_and_value():
    g = VoxelGrid((4, 3, 3), sh_degree=0)
    with torch.no_grad(): g.density.zero_(); g.sh.zero_(); g.sh[2, :, :, 0, 1] = 1.0     # a step in one SH channel along x
    tvd, tvs = tv_loss(g)
    assert tvd.item() == pytest.approx(0.0, abs=1e-6)
    # voxels with x=1 see a +1 step to x=2; x=2 sees a -1 step to x=3; per voxel and channel (3 channels)
    n = 3*2*2
    assert tvs.item() == pytest.approx((2*2*2*1.0 + (n*3 - 8)*0.0)/(n*3), abs=2e-4)
    tvs.backward()
    gr = g.sh.grad[..., 0, 1]
    assert gr[2].sum() > 0 and gr[1].sum() < 0            # descent lowers the raised slab and raises its neighbour
    # a subset estimate is unbiased-ish and uses the generator
    gen = torch.Generator().manual_seed(0)
    a = tv_loss(g, n_voxels=5000, generator=gen)[1].item()
    assert a == pytest.approx(tvs.item(), rel=0.1)

def test_prune_and_upsample_preserve_rendering():
    res = 14
    g = VoxelGrid((res,)*3, (-1, -1, -1, 1, 1, 1), sh_degree=1)
    x = torch.linspace(-1, 1, res)
    X, Y, Z = torch.meshgrid(x, x, x, indexing='ij')
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        g.density.copy_(((0.7 - (X**2 + Y**2 + Z**2).sqrt())*20).clamp_min(-5))
        g.sh.copy_(F.avg_pool3d(torch.randn(1, 12, res, res, res, generator=gen), 5, 1, 2)[0].permute(1, 2, 3, 0).reshape(res, res, res, 4, 3))
    c2w = torch.tensor([[0.8, 0, 0.6, 2.4], [0, 1, 0, 0.], [-0.6, 0, 0.8, 3.2], [0, 0, 0, 1]])
    ref = render_image(g, c2w, 24, 24, 30.)
    kept = prune(g, 0.0)
    assert kept < res**3*0.5
    assert not g.occupancy[0, 0, 0] and g.density[0, 0, 0] == 0
    after = render_image(g, c2w, 24, 24, 30.)
    assert psnr(after, ref) > 60
    upsample(g, (2*res,)*3)
    assert g.resolution == (2*res,)*3 and g.density.shape == (2*res,)*3 and g.occupancy.shape == (2*res,)*3
    assert psnr(render_image(g, c2w, 24, 24, 30.), ref) > 30

def test_pruned_voxels_get_no_gradient():
    g = _rand_grid((6, 6, 6))
    g.occupancy[:3] = False
    o, d = get_rays(8, 8, 10., torch.tensor([[0., 0, 1, 3.], [0, 1, 0, 0.], [-1, 0, 0, 0.], [0, 0, 0, 1]]))
    render_rays(g, o.reshape(-1, 3), d.reshape(-1, 3))['rgb'].sum().backward()
    assert g.density.grad[:3].abs().sum() == 0 and g.sh.grad[:3].abs().sum() == 0
    assert g.density.grad[3:].abs().sum() > 0

def test_load_blender_sample(samples):
    sc = load_blender(samples/'nerf_lego_small', 'val', img_wh=(40, 40))
    assert sc['images'].shape == (4, 40, 40, 3) and sc['c2w'].shape == (4, 4, 4)
    import json
    cam = json.loads((samples/'nerf_lego_small'/'transforms_val.json').read_text())['camera_angle_x']
    assert sc['focal'] == pytest.approx(20/math.tan(cam/2))
    # composited on white: transparent pixels are white, opaque pixels are not
    a, im = sc['alpha'], sc['images']
    assert torch.allclose(im[a == 0], torch.ones(3)) and (im[a == 1].mean() < 0.8)
    black = load_blender(samples/'nerf_lego_small', 'val', img_wh=(40, 40), white_bkgd=False)
    torch.testing.assert_close(black['images'] + (1 - a)[..., None], im, atol=1e-5, rtol=0)

def test_load_blender_errors(tmp_path, samples):
    with pytest.raises(InputError, match='no transforms_test.json'): load_blender(samples/'nerf_lego_small', 'test')
    with pytest.raises(InputError, match='out of range'): load_blender(samples/'nerf_lego_small', 'val', views=[7])
    (tmp_path/'transforms_train.json').write_text('{"camera_angle_x": 0.7, "frames": [{"file_path": "./r_0", "transform_matrix": [[1,0],[0,1]]}]}')
    with pytest.raises(InputError, match='4x4'): load_blender(tmp_path)
    (tmp_path/'transforms_train.json').write_text('{"camera_angle_x": 0.7, "frames": [{"file_path": "./r_0", "transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}')
    with pytest.raises(InputError, match='image file missing'): load_blender(tmp_path)

def test_config_validation():
    with pytest.raises(ConfigError, match='scene_bounds'): as_plenoxel_config({'scene_bounds': [1, 0, 0, 0, 1, 1]})
    with pytest.raises(ConfigError, match='density_activation'): as_plenoxel_config({'density_activation': 'exp'})
    with pytest.raises(ConfigError, match='unknown key'): PlenoxelConfig and __import__('medvox_nb.core', fromlist=['x']).from_dict(PlenoxelConfig, {'resolutoin': 3})

@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA GPU')
def test_cuda_matches_cpu():
    g = _rand_grid((8, 8, 8))
    c2w = torch.tensor([[1., 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3.], [0, 0, 0, 1]])
    cpu = render_image(g, c2w, 16, 16, 20.)
    gpu = render_image(g.to('cuda'), c2w, 16, 16, 20.).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=0)


def test_spacing_is_world_units_per_voxel_and_voxel_size_is_deprecated():
    g = VoxelGrid((4, 5, 8), (-1, -2, 0, 1, 2, 2), sh_degree=0)
    torch.testing.assert_close(g.spacing, torch.tensor([0.5, 0.8, 0.25]))
    with pytest.warns(DeprecationWarning, match='spacing'): torch.testing.assert_close(g.voxel_size, g.spacing)


def _only(g, keep):
    out = VoxelGrid(g.resolution, g.scene_bounds, g.sh_degree).requires_grad_(False)
    out.density.copy_(torch.where(keep, g.density.detach(), torch.zeros(()))); out.sh.copy_(g.sh.detach() * keep[..., None, None])
    out.occupancy.copy_(keep)
    return out


@pytest.mark.parametrize('cfg', [PlenoxelConfig(), PlenoxelConfig(density_activation='softplus', sigma_thresh=1e-3),
                                 PlenoxelConfig(color_activation='sigmoid', sigma_thresh=0.0)])
def test_only_contributing_voxels_render_bit_for_bit(cfg):
    "What a sparse export may leave out: unoccupying every non-contributing voxel changes no pixel, from any camera."
    g = VoxelGrid((14, 12, 10), (-1, -1, -1, 1, 1, 1), sh_degree=2)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        g.density.copy_(F.avg_pool3d(torch.randn(1, 1, 14, 12, 10, generator=gen) * 60, 3, 1, 1)[0, 0] - 10)
        g.sh.normal_(0, 0.4, generator=gen)
        g.occupancy[:, :, :2] = False                                         # some voxels already pruned
    keep = contributing_voxels(g, cfg)
    assert 0 < keep.sum() < g.occupancy.sum() and not keep[~g.occupancy].any()
    assert (g.density.detach()[keep] <= 0).any()                             # negative voxels beside dense ones stay
    sparse = _only(g, keep)
    for c2w in (torch.tensor([[1., 0, 0, 0.1], [0, 0.8, -0.6, -2.4], [0, 0.6, 0.8, 3.2], [0, 0, 0, 1]]),
                torch.tensor([[0., 0, 1, 3.], [1, 0, 0, 0.2], [0, 1, 0, -0.1], [0, 0, 0, 1]])):
        assert torch.equal(render_image(sparse, c2w, 20, 20, 25., cfg=cfg), render_image(g, c2w, 20, 20, 25., cfg=cfg))
    # a larger tolerance drops more, within a bounded error; dropping every voxel <= 0 is not safe
    loose = contributing_voxels(g, cfg, tolerance=0.5)
    assert loose.sum() <= keep.sum()
    pos = _only(g, g.occupancy & (g.density.detach() > 1e-4))
    c2w = torch.tensor([[1., 0, 0, 0.1], [0, 0.8, -0.6, -2.4], [0, 0.6, 0.8, 3.2], [0, 0, 0, 1]])
    if cfg.density_activation == 'relu':
        assert not torch.equal(render_image(pos, c2w, 20, 20, 25., cfg=cfg), render_image(g, c2w, 20, 20, 25., cfg=cfg))

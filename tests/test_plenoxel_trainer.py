"Plenoxel trainer: learning on the lego sample, VDB checkpoints, SIGKILL + resume, CLI."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
from medvox_nb.core import ConfigError
from medvox_nb.plenoxel_trainer import NeuralVDBPlenoxelTrainer, NeuralVDBTrainerConfig, PlenoxelDatasetConfig, load_scene

MEDVOX = Path(sys.executable).parent/'medvox'

def _vdb_ok():
    try:
        from medvox_nb import neuralvdb, vdb
        return vdb.vdb_available()
    except Exception: return False

needs_vdb = pytest.mark.skipif(not _vdb_ok(), reason='medvox_nb.neuralvdb / native OpenVDB module not available')

def _cfg(out, **train):
    t = dict(max_epochs=40, batch_size=512, carve_alpha=True, val_interval=0, save_neuralvdb=False, tensorboard=False,
             output_dir=str(out), seed=3, device='cpu')
    t.update(train)
    return dict(plenoxel_model=dict(resolution=[24, 24, 24], sh_degree=1),
                plenoxel_train=t, plenoxel_data=dict(data_dir='data_samples/nerf_lego_small', img_wh=[32, 32]))

def _trainer(cfg):
    return NeuralVDBPlenoxelTrainer(cfg['plenoxel_model'], cfg['plenoxel_train'], cfg['plenoxel_data'])

def test_training_reduces_loss_and_raises_heldout_psnr(tmp_path):
    cfg = _cfg(tmp_path, max_epochs=60, tensorboard=True, val_interval=30)
    tr = _trainer(cfg)
    before = tr.validate()['psnr']
    res = tr.train()
    assert np.mean(tr.history[-10:]) < 0.6*np.mean(tr.history[:5])
    assert res['psnr'] > before + 3
    r = json.loads((tmp_path/'results.json').read_text())
    assert r['step'] == 60 and len(r['psnr_per_view']) == 4 and r['run_info']['torch']
    assert any((tmp_path/'tensorboard').iterdir())
    assert yaml.safe_load((tmp_path/'config.yaml').read_text())['plenoxel_train']['max_epochs'] == 60

def test_held_out_views_are_not_trained_on():
    sc = load_scene(PlenoxelDatasetConfig(data_dir='data_samples/nerf_lego_small', img_wh=(8, 8), val_split='train', val_views=(0, 5)))
    assert sc['val']['views'] == [0, 5] and 0 not in sc['train']['views'] and 5 not in sc['train']['views']
    assert len(sc['train']['views']) == 22
    with pytest.raises(ConfigError, match='both trained on and held out'):
        load_scene(PlenoxelDatasetConfig(img_wh=(8, 8), val_split='train', val_views=(0,), train_views=(0, 1)))

@needs_vdb
def test_checkpoint_resume_in_process_is_exact(tmp_path):
    a = _trainer(_cfg(tmp_path/'a', max_epochs=30, save_neuralvdb=True, neuralvdb_save_interval=15, upsample_at=[10], prune_threshold=0.5))
    a.train()
    b = _trainer(_cfg(tmp_path/'a', max_epochs=30, save_neuralvdb=True, neuralvdb_save_interval=15, upsample_at=[10], prune_threshold=0.5,
                      resume_from=str(tmp_path/'a'/'checkpoint_epoch_15.vdb')))
    assert b.step == 15 and b.grid.resolution == (48, 48, 48)
    b.train()
    np.testing.assert_allclose(b.history, a.history, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.grid.density, a.grid.density)

@needs_vdb
def test_sigkill_then_resume_continues_the_run(tmp_path):
    n = 120   # the kill comes at checkpoint 20: a long margin before the run could finish on its own
    cfg = _cfg(tmp_path/'ref', max_epochs=n, save_neuralvdb=True, neuralvdb_save_interval=10, keep_checkpoints=0)
    ref = _trainer(cfg); ref.train()
    run = tmp_path/'run'; cfg['plenoxel_train']['output_dir'] = str(run)
    (tmp_path/'cfg.yaml').write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, MEDVOX_PROGRESS='0')
    p = subprocess.Popen([str(MEDVOX), 'plenoxels', 'train', '--config', str(tmp_path/'cfg.yaml')], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    while not (run/'ckpts'/'misc_step0000020.pt').exists() or not (run/'checkpoint_epoch_20.vdb').exists():
        assert p.poll() is None, p.stdout.read().decode()
        assert time.time() - t0 < 300
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (run/'results.json').exists()                  # it really died mid-run
    ck = sorted(run.glob('checkpoint_epoch_*.vdb'), key=lambda f: int(f.stem.rsplit('_', 1)[1]))
    last = int(ck[-1].stem.rsplit('_', 1)[1]); assert 20 <= last < n
    r = subprocess.run([str(MEDVOX), 'plenoxels', 'train', '--config', str(tmp_path/'cfg.yaml'), '--set', 'plenoxel_train.resume_from=latest'],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    hist = json.loads((run/'history.json').read_text())['loss']
    assert len(hist) == n                                      # step count continues from the checkpoint
    np.testing.assert_allclose(hist, ref.history, rtol=1e-5, atol=1e-7)   # same losses as the uninterrupted run
    assert json.loads((run/'results.json').read_text())['step'] == n

@needs_vdb
def test_export_final_vdb_and_render_cli(tmp_path, medvox):
    tr = _trainer(_cfg(tmp_path, max_epochs=20, create_lod=False))
    tr.train()
    info = tr.export_final_vdb(tmp_path/'final.vdb', create_lod=True)
    assert Path(info['path']).exists() and info['stats']['total_active_voxels'] > 0
    assert len(info['lod_files']) == 3 and all(Path(f).exists() for f in info['lod_files'])
    vp = subprocess.run(['vdb_print', str(tmp_path/'final.vdb')], capture_output=True, text=True)
    assert vp.returncode == 0 and 'density' in vp.stdout
    r = medvox('plenoxels', 'render', str(tmp_path/'final.vdb'), '--data-dir', 'data_samples/nerf_lego_small', '--img-wh', '32', '32',
               '--views', '0', '1', '--out', str(tmp_path/'png'), check=0, cwd=str(Path(__file__).resolve().parents[1]))
    assert 'mean PSNR' in r.stdout and len(list((tmp_path/'png').glob('*.png'))) == 2

def test_cli_bad_config_is_one_line_exit_2(tmp_path, medvox):
    (tmp_path/'c.yaml').write_text('plenoxel_train:\n  batch_sise: 3\n')
    r = medvox('plenoxels', 'train', '--config', str(tmp_path/'c.yaml'))
    assert r.returncode == 2 and 'unknown key plenoxel_train.batch_sise' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = medvox('plenoxels', 'train', '--set', 'plenoxel_data.data_dir=/no/such/scene')
    assert r.returncode == 2 and '/no/such/scene' in r.stderr

def test_resume_from_missing_checkpoint_is_clear(tmp_path):
    if not _vdb_ok(): pytest.skip('no VDB module')
    with pytest.raises(Exception, match='does not exist|not found|no such'):
        _trainer(_cfg(tmp_path, resume_from=str(tmp_path/'nope.vdb')))

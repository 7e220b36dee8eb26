"""The design document's Python examples (../shared/seeds/neuralvdb_plenoxels.zh.md) run as written,
apart from the import path, the device (no GPU here) and smaller sizes/step counts for test time."""
import torch
import pytest
from medvox_nb.plenoxels import VoxelGrid, PlenoxelConfig
from medvox_nb.neuralvdb import (save_plenoxel_as_neuralvdb, load_plenoxel_from_neuralvdb, NeuralVDBConfig,
                                 NeuralVDBManager)
from medvox_nb.plenoxel_trainer import NeuralVDBPlenoxelTrainer, NeuralVDBTrainerConfig, PlenoxelDatasetConfig
from medvox_nb.vdb import vdb_print

pytestmark = pytest.mark.skipif(not __import__('medvox_nb.vdb').vdb.vdb_available(), reason='native OpenVDB module not built')

def test_save_load_lod_optimize_stats_as_in_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_config = PlenoxelConfig(resolution=(64, 64, 64), scene_bounds=(-1, -1, -1, 1, 1, 1), sh_degree=2)
    # --- 保存模型为 NeuralVDB
    voxel_grid = VoxelGrid(resolution=(64, 64, 64), scene_bounds=(-1, -1, -1, 1, 1, 1), sh_degree=2)
    with torch.no_grad(): voxel_grid.density.uniform_(0, 1); voxel_grid.sh.normal_(); voxel_grid.density[:32] = 0
    vdb_config = NeuralVDBConfig(compression_level=8, half_precision=True, tolerance=1e-5, include_metadata=True)
    success = save_plenoxel_as_neuralvdb(voxel_grid=voxel_grid, output_path="model.vdb", model_config=model_config, vdb_config=vdb_config)
    assert success is True and 'density' in vdb_print('model.vdb')
    # --- 从 NeuralVDB 加载模型
    loaded, cfg = load_plenoxel_from_neuralvdb(vdb_path="model.vdb", device=torch.device("cpu"))
    assert loaded.resolution == (64, 64, 64) and tuple(loaded.scene_bounds) == (-1, -1, -1, 1, 1, 1) and loaded.sh_degree == 2
    torch.testing.assert_close(loaded.density, voxel_grid.density, rtol=1e-3, atol=1e-3)   # half precision
    # --- 高级存储管理
    manager = NeuralVDBManager(vdb_config)
    lod_files = manager.create_hierarchical_lod(voxel_grid=voxel_grid, output_dir="lod_output", levels=4)
    assert len(lod_files) == 4 and all(f.exists() for f in map(__import__('pathlib').Path, lod_files))
    manager.optimize_vdb_storage(vdb_path="model.vdb", output_path="model_optimized.vdb")
    stats = manager.get_storage_stats("model.vdb")
    # stored: every voxel within one voxel (26-neighbourhood) of a density above the tolerance, i.e. all a
    # trilinear render can reach; of the empty half x < 32 only the boundary slab x = 31 is kept
    n_kept = 64*64*(64 - 31)
    assert stats['file_size_mb'] > 0 and stats['total_active_voxels'] == n_kept * (1 + 9)   # density + 9 SH grids
    print(f"文件大小: {stats['file_size_mb']:.2f} MB"); print(f"活跃体素数: {stats['total_active_voxels']:,}")

def test_trainer_export_and_resume_as_in_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_config = PlenoxelConfig(resolution=(24, 24, 24), sh_degree=1)
    dataset_config = PlenoxelDatasetConfig(img_wh=(32, 32))
    trainer_config = NeuralVDBTrainerConfig(
        max_epochs=40, learning_rate=0.1,
        save_neuralvdb=True, neuralvdb_save_interval=20, neuralvdb_compression_level=8,
        create_lod=True, lod_levels=3, lod_save_interval=40,
        optimize_storage=True, storage_stats_interval=10,
        batch_size=512, carve_alpha=True, val_interval=0, tensorboard=False, output_dir='run')
    trainer = NeuralVDBPlenoxelTrainer(model_config=model_config, trainer_config=trainer_config, dataset_config=dataset_config)
    trainer.train()
    export_info = trainer.export_final_vdb(output_path="final_model.vdb", create_lod=True)
    assert 'density' in vdb_print('final_model.vdb') and export_info
    # --- 从 VDB 检查点恢复训练 (continue to 60 steps from the step-20 checkpoint)
    trainer_config.resume_from = "run/checkpoint_epoch_20.vdb"
    trainer_config.max_epochs = 60
    trainer = NeuralVDBPlenoxelTrainer(model_config=model_config, trainer_config=trainer_config, dataset_config=dataset_config)
    res = trainer.train()
    assert trainer.step == 60 and len(trainer.history) == 60

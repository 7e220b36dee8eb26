"A toy stage on the shared training loop, run as a process by tests/test_train.py (SIGKILL/resume, torchrun DDP)."
import argparse, sys, time
from medvox_nb.train import TrainConfig, ToyRegression

class SlowToy(ToyRegression):
    "Sleeps a little per step so a test can kill it between checkpoints."
    def __init__(self, *a, delay=0.0, **kw):
        super().__init__(*a, **kw); self.delay = delay
    def training_losses(self, batch):
        if self.delay: time.sleep(self.delay)
        return super().training_losses(batch)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--output_dir'); p.add_argument('--max_steps', type=int); p.add_argument('--batch_size', type=int)
    p.add_argument('--load_dir'); p.add_argument('--ckpt', default='latest'); p.add_argument('--delay', type=float, default=0.0)
    p.add_argument('--dropout', type=float, default=0.1); p.add_argument('--i_save', type=int, default=5)
    a = p.parse_args()
    cfg = TrainConfig(output_dir=a.output_dir, max_steps=a.max_steps, batch_size=a.batch_size, i_save=a.i_save, ema_rate=(0.9, 0.99),
                      load_dir=a.load_dir, ckpt=a.ckpt, tensorboard=False, i_print=1000)
    SlowToy(cfg, dropout=a.dropout, delay=a.delay).fit()

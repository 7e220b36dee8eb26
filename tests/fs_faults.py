"""File-system failures for the CLI tests of voxelize, prerender and to-nifti.

Real ones where this machine lets us mount (a read-only bind mount: EROFS; a tiny tmpfs: ENOSPC),
injected ones everywhere (tests run as root, so `chmod` stops nothing): `inject` makes creating
files and folders under a root fail with a given errno (EACCES, EROFS) and `fsync` report ENOSPC,
the way a full disk often surfaces. Commands run in-process through `medvox_nb.core.main`.
"""
import contextlib, errno, os, subprocess
from pathlib import Path
import pytest


def _mount(*args) -> bool:
    try: return subprocess.run(['mount', *map(str, args)], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired): return False


@contextlib.contextmanager
def read_only_dir(path):
    "`path` (created, empty) bind-mounted read-only onto itself; skips where mounting is not allowed."
    path = Path(path); path.mkdir(parents=True, exist_ok=True)
    if not _mount('--bind', '-o', 'ro', path, path): pytest.skip('cannot bind-mount read-only here (needs root with CAP_SYS_ADMIN)')
    try: yield path
    finally: subprocess.run(['umount', str(path)], capture_output=True)


@contextlib.contextmanager
def full_dir(path, size: str = '48k'):
    "A tmpfs of `size` at `path`: writing more fails with ENOSPC; skips where mounting is not allowed."
    path = Path(path); path.mkdir(parents=True, exist_ok=True)
    if not _mount('-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', path): pytest.skip('cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)')
    try: yield path
    finally: subprocess.run(['umount', str(path)], capture_output=True)


def inject(monkeypatch, root, err: int):
    """Creating a file or folder under `root` fails with `err` (EACCES: no permission, EROFS: read-only); with
    `err=ENOSPC` creation works but every `fsync` fails with ENOSPC and no file name, as a full disk reports it."""
    root = str(Path(root).resolve())
    def under(p):
        if isinstance(p, int): return False
        return str(Path(os.fsdecode(p)).resolve()).startswith(root)
    def fail(p): raise OSError(err, os.strerror(err), os.fsdecode(p))
    if err == errno.ENOSPC:
        def fsync(fd): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, 'fsync', fsync)
        return
    real_open, real_mkdir = os.open, os.mkdir
    def fake_open(p, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(p): fail(p)
        return real_open(p, flags, *a, **kw)
    def fake_mkdir(p, *a, **kw):
        if under(p): fail(p)
        return real_mkdir(p, *a, **kw)
    monkeypatch.setattr(os, 'open', fake_open)
    monkeypatch.setattr(os, 'mkdir', fake_mkdir)


def medvox_here(capsys, *args, check=None) -> subprocess.CompletedProcess:
    """Run `medvox args...` in this process (torch is imported once for the whole test session, not per command);
    returns a CompletedProcess with `returncode`, `stdout`, `stderr`; `check`: the exit status expected."""
    import logging, sys
    from medvox_nb.core import main, get_logger
    get_logger()
    handlers = [h for h in logging.getLogger('medvox').handlers if type(h) is logging.StreamHandler]   # not pytest's own
    for h in handlers: h.stream = sys.stderr           # log lines go where this test's stderr is captured
    capsys.readouterr()
    try: rc = main([str(a) for a in args])
    except SystemExit as e: rc = e.code or 0        # argparse: --help, bad flags
    finally:
        for h in handlers: h.stream = sys.__stderr__   # not the capture, which pytest closes after the test
    out = capsys.readouterr()
    p = subprocess.CompletedProcess(['medvox', *map(str, args)], rc, out.out, out.err)
    if check is not None and rc != check:
        raise AssertionError(f'medvox {" ".join(map(str, args))} -> {rc}\nstdout:\n{out.out}\nstderr:\n{out.err}')
    return p


def run_main(capsys, *args) -> tuple[int, str]:
    "Run `medvox args...` in-process; returns (exit status, stderr)."
    p = medvox_here(capsys, *args)
    return p.returncode, p.stderr


def assert_one_line(rc: int, err: str, *needles):
    "Exit 2, exactly one error line (no traceback) holding every needle."
    lines = [l for l in err.strip().splitlines() if ': error: ' in l]
    assert rc == 2 and 'Traceback' not in err and len(lines) == 1, (rc, err)
    for n in needles: assert str(n) in lines[0], (n, lines[0])
    return lines[0]

import os
import subprocess
import sys
from pathlib import Path

from infra.stack.cli import stray_services


def _spawn(cwd: Path, module: str, kafka: str = "127.0.0.1:9092") -> subprocess.Popen[bytes]:
    pkg = cwd / module
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import time\ntime.sleep(60)\n")
    env = {**os.environ, "HERALD_KAFKA__BOOTSTRAP_SERVERS": kafka}
    return subprocess.Popen([sys.executable, "-m", module], cwd=cwd, env=env)


def test_finds_herald_services_of_this_checkout_only(tmp_path: Path) -> None:
    mine, other = tmp_path / "checkout", tmp_path / "elsewhere"
    procs = [
        _spawn(mine, "senders"),
        _spawn(mine, "unrelated"),
        _spawn(other, "processors"),
        _spawn(mine, "processors", kafka="127.0.0.1:19092"),  # another stack's service
    ]
    try:
        found = {p.pid for p in stray_services(mine, "127.0.0.1:9092")}
        assert found == {procs[0].pid}
    finally:
        for p in procs:
            p.kill()
            p.wait()

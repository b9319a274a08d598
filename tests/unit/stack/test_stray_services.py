import subprocess
import sys
from pathlib import Path

from infra.stack.cli import stray_services


def _spawn(cwd: Path, module: str) -> subprocess.Popen[bytes]:
    pkg = cwd / module
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import time\ntime.sleep(60)\n")
    return subprocess.Popen([sys.executable, "-m", module], cwd=cwd)


def test_finds_herald_services_of_this_checkout_only(tmp_path: Path) -> None:
    mine, other = tmp_path / "checkout", tmp_path / "elsewhere"
    procs = [_spawn(mine, "senders"), _spawn(mine, "unrelated"), _spawn(other, "processors")]
    try:
        found = {p.pid for p in stray_services(mine)}
        assert found == {procs[0].pid}
    finally:
        for p in procs:
            p.kill()
            p.wait()

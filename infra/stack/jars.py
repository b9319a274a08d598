"""Resolve a component's jars from Maven Central once, into the run directory."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from infra.stack.settings import StackSettings
from schemas.errors import HeraldError

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COMPLETE = ".complete"


class JarResolutionError(HeraldError, RuntimeError):
    pass


def lib_dir(pom: Path, settings: StackSettings) -> Path:
    # Keyed by the pom's content: a version bump resolves afresh, an unchanged pom never does.
    digest = hashlib.sha1(pom.read_bytes()).hexdigest()[:12]
    return settings.run_dir.resolve() / "lib" / f"{pom.parent.name}-{digest}"


def ensure_jars(pom: Path, settings: StackSettings, log: Path) -> Path:
    target = lib_dir(pom, settings)
    if (target / _COMPLETE).exists():
        return target
    if shutil.which(settings.maven) is None:
        raise JarResolutionError(
            f"`{settings.maven}` not found: install Maven 3.8+ (Debian: apt-get install maven)"
        )
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = [
        settings.maven,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    if settings.maven_repo is not None:
        argv.append(f"-Dmaven.repo.local={settings.maven_repo.resolve()}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0 or not any(tmp.glob("*.jar")):
        raise JarResolutionError(f"Maven could not resolve {pom} (exit {rc}); see {log}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (target / _COMPLETE).touch()
    return target

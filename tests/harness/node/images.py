"""Container images without a registry, each cached and rebuilt only when its inputs change.

- `pause` and `writer`: static Go binaries (images_src/) packed by hand into OCI archives.
- The Debian base: `debootstrap --variant=minbase bookworm`, kept as a rootfs tarball and
  imported into a buildah store of our own.
- shipper: `deploy/Dockerfile` built by buildah FROM that base, pushed to an OCI archive.

Every archive is imported into a node's containerd with `ctr -n k8s.io image import`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tests.harness.kube import cache_dir, cache_lock, go_build

REPO = Path(__file__).resolve().parents[3]
IMAGES_SRC = Path(__file__).resolve().parent / "images_src"
PAUSE_IMAGE = "localhost/shipper-test/pause:1"
WRITER_IMAGE = "localhost/shipper-test/writer:1"
BASE_IMAGE = "localhost/shipper-test/debian:bookworm"
SHIPPER_REPO = "localhost/shipper"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def images_dir() -> Path:
    return cache_dir() / "images"


def digest_of(*paths: Path, extra: str = "") -> str:
    """A short hash of files (directories walked in order) and `extra`."""
    h = hashlib.sha256(extra.encode())
    for root in paths:
        files = (
            sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            if root.is_dir()
            else [root]
        )
        for path in files:
            h.update(str(path.relative_to(root.parent)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- static binaries in hand-made OCI archives ----------------------------------------------


def static_binaries() -> dict[str, Path]:
    key = digest_of(IMAGES_SRC)
    return go_build(
        IMAGES_SRC,
        {"pause": "shipper.test/nodeimages/pause", "writer": "shipper.test/nodeimages/writer"},
        images_dir() / f"bin-{key}",
    )


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_oci_archive(target: Path, ref: str, binary: Path, entrypoint: list[str]) -> Path:
    """An OCI image archive of one layer holding `binary` at /<name>."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(str(binary), arcname=binary.name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.mode = 0o755
        with open(binary, "rb") as fh:
            tar.addfile(info, fh)
    raw = layer_tar.getvalue()
    compressed = gzip.compress(raw, mtime=0)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        layout = Path(tmp)
        layer = _blob(layout, compressed)
        config = _blob(
            layout,
            json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Entrypoint": entrypoint, "Env": ["PATH=/"]},
                    "rootfs": {
                        "type": "layers",
                        "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"],
                    },
                }
            ).encode(),
        )
        manifest = _blob(
            layout,
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                    "layers": [
                        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}
                    ],
                }
            ).encode(),
        )
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (layout / "index.json").write_text(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "manifests": [
                        {
                            "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            **manifest,
                            "annotations": {
                                "io.containerd.image.name": ref,
                                "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                            },
                        }
                    ],
                }
            )
        )
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for name in ("oci-layout", "index.json", "blobs"):
                tar.add(layout / name, arcname=name)
        os.replace(partial, target)
    return target


def small_images() -> dict[str, Path]:
    """{image ref: OCI archive} of the pause and writer images."""
    bins = static_binaries()
    out = {}
    for ref, name in ((PAUSE_IMAGE, "pause"), (WRITER_IMAGE, "writer")):
        archive = bins[name].parent / f"{name}.oci.tar"
        if not archive.exists():
            write_oci_archive(archive, ref, bins[name], [f"/{name}"])
        out[ref] = archive
    return out


# ---- the Debian base and the shipper image (buildah) ----------------------------------------


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (debootstrap and the image use it too)."""
    for source in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["deb"] and "security" not in line:
            return next(p for p in parts[1:] if "://" in p)
    raise RuntimeError("no Debian mirror found in /etc/apt")


def debian_rootfs() -> Path:
    """A rootfs tarball from `debootstrap --variant=minbase bookworm`, made once."""
    target = images_dir() / "debian-bookworm-minbase.tar"
    if target.exists():
        return target
    with cache_lock("debootstrap"):
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=target.parent))
        try:
            began = time.monotonic()
            _log("debootstrap --variant=minbase bookworm (about a minute)...")
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "bookworm",
                    str(staging / "rootfs"),
                    debian_mirror(),
                ],
                check=True,
                capture_output=True,
            )
            for deb in (staging / "rootfs" / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            rootfs, tar = staging / "rootfs", staging / "r.tar"
            subprocess.run(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tar), "."], check=True
            )
            os.replace(tar, target)
            _log(f"debootstrap done in {time.monotonic() - began:.0f}s")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


class Buildah:
    """buildah with a store of its own under the cache (never the machine's)."""

    def __init__(self) -> None:
        self.root = cache_dir() / "buildah" / "root"
        self.runroot = cache_dir() / "buildah" / "runroot"

    def __call__(self, *args: str, cwd: Path | None = None) -> str:
        result = subprocess.run(
            [
                "buildah",
                "--root",
                str(self.root),
                "--runroot",
                str(self.runroot),
                "--storage-driver",
                "overlay",
                *args,
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"buildah {' '.join(args[:2])} failed:\n{result.stdout[-4000:]}\n"
                f"{result.stderr[-4000:]}"
            )
        return result.stdout

    def unmount_all(self) -> None:
        """buildah leaves its store's overlay mounts behind after a build; none may stay."""
        with contextlib.suppress(RuntimeError):
            self("rm", "--all")
        inside = str(self.root.resolve()) + "/"
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if (point + "/").startswith(inside):
                points.append(point)
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", point], capture_output=True, check=False)

    def has_image(self, ref: str) -> bool:
        try:
            self("inspect", "--type", "image", ref)
        except RuntimeError:
            return False
        return True


def ensure_base(buildah: Buildah) -> str:
    """The Debian base as a buildah image, imported from the rootfs tarball once."""
    rootfs = debian_rootfs()
    stamp = hashlib.sha256(str(rootfs.stat().st_mtime_ns).encode()).hexdigest()[:8]
    ref = f"{BASE_IMAGE}-{stamp}"
    if buildah.has_image(ref):
        return ref
    container = buildah("from", "--pull=never", "scratch").strip()
    try:
        buildah("add", container, str(rootfs), "/")
        buildah("config", "--cmd", "/bin/bash", "--env", f"PATH={DEBIAN_PATH}", container)
        buildah("commit", "--rm", container, ref)
    except BaseException:
        buildah("rm", container)
        raise
    return ref


def _host_trust() -> list[str]:
    """pip inside the build trusts what the host trusts (a TLS-inspecting proxy's CA, say)."""
    bundle = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return []
    return ["-v", f"{bundle}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]


def shipper_image() -> tuple[str, Path]:
    """(image ref, OCI archive) of deploy/Dockerfile built FROM the local Debian base."""
    inputs = [REPO / "deploy" / "Dockerfile", REPO / "pyproject.toml", REPO / "README.md"]
    key = digest_of(*inputs, REPO / "parsers", REPO / "shipper", extra="debian-bookworm")
    ref = f"{SHIPPER_REPO}:test-{key}"
    archive = images_dir() / f"shipper-{key}.oci.tar"
    if archive.exists():
        return ref, archive
    with cache_lock("shipper-image"):
        if archive.exists():
            return ref, archive
        buildah = Buildah()
        began = time.monotonic()
        base = ensure_base(buildah)
        _log(f"building {ref} from {base} with buildah...")
        buildah(
            "build",
            "--pull=never",
            "--isolation=chroot",
            "--layers",
            "--build-arg",
            f"BASE={base}",
            *_host_trust(),
            "-f",
            str(REPO / "deploy" / "Dockerfile"),
            "-t",
            ref,
            str(REPO),
        )
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        buildah("push", ref, f"oci-archive:{partial}:{ref}")
        os.replace(partial, archive)
        buildah("rmi", ref)
        buildah.unmount_all()
        _log(f"built {ref} in {time.monotonic() - began:.0f}s")
        for old in images_dir().glob("shipper-*.oci.tar"):
            if old != archive and time.time() - old.stat().st_mtime > 3 * 86400:
                old.unlink(missing_ok=True)
    return ref, archive

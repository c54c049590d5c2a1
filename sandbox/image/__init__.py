"""The sandbox image, built with no registry and no Dockerfile.

No image registry is reachable on the machines this runs on, so the image is an empty root
skeleton imported from an in-memory tarball (`docker import`). Everything executable comes
from the host at run time, bind-mounted read-only at the same paths (/usr, the Python
prefix, the venv; see sandbox.docker), so scripts get exactly the host's torch/transformers.

The skeleton holds:
- /bin, /lib, /lib64 as symlinks into usr/ (resolved inside the /usr mount);
- a real /sbin directory: with init=True docker mounts docker-init at /sbin/docker-init,
  and a /sbin -> usr/sbin symlink would point into the read-only /usr mount;
- /etc/passwd and /etc/group naming the unprivileged sandbox user;
- /tmp and /var/tmp with mode 1777.

Build it with `python -m sandbox.image` (idempotent: a no-op while the recipe is unchanged,
which the image label records).
"""

from __future__ import annotations

import io
import logging
import tarfile
import time

import docker
import docker.errors

from sandbox.base import SANDBOX_GID, SANDBOX_UID

log = logging.getLogger(__name__)

IMAGE_TAG = "autoannotator-sandbox:hostpy"
# Bump when the skeleton or the image config changes: a different label forces a rebuild.
RECIPE = f"hostpy-v1-uid{SANDBOX_UID}-gid{SANDBOX_GID}"
RECIPE_LABEL = "autoannotator.sandbox.recipe"

_PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/tmp:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
_GROUP = f"root:x:0:\nsandbox:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"
_NSSWITCH = "passwd: files\ngroup: files\nhosts: files\n"

_DIRS = {
    "etc": 0o755,
    "sbin": 0o755,
    "tmp": 0o1777,
    "var": 0o755,
    "var/tmp": 0o1777,
    "proc": 0o755,
    "sys": 0o755,
    "dev": 0o755,
    "run": 0o755,
    "usr": 0o755,
    "home": 0o755,
}
_SYMLINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64"}
_FILES = {"etc/passwd": _PASSWD, "etc/group": _GROUP, "etc/nsswitch.conf": _NSSWITCH}

_CHANGES = [
    f"USER {SANDBOX_UID}:{SANDBOX_GID}",
    "WORKDIR /tmp",
    "ENV HOME=/tmp PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
    f"LABEL {RECIPE_LABEL}={RECIPE}",
    'CMD ["/bin/sh"]',
]


def skeleton_tar() -> bytes:
    """The image's whole root filesystem as a tar archive (a few KB), owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            info.uid = info.gid = 0
            info.mtime = 0  # a reproducible archive
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for name, mode in _DIRS.items():
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            add(info)
        for name, target in _SYMLINKS.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            add(info)
        for name, text in _FILES.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            add(info, data)
    return buf.getvalue()


def image_id(client: docker.DockerClient, tag: str = IMAGE_TAG) -> str | None:
    """The id of the current sandbox image, or None when it is missing or out of date."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return image.id if image.labels.get(RECIPE_LABEL) == RECIPE else None


def build_image(client: docker.DockerClient, tag: str = IMAGE_TAG, force: bool = False) -> str:
    """Make sure `tag` holds the current recipe; returns the image id."""
    current = image_id(client, tag)
    if current and not force:
        return current
    try:
        previous = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        previous = None
    start = time.monotonic()
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(
        skeleton_tar(), repository=repository, tag=version or "latest", changes=_CHANGES
    )
    new = client.images.get(tag).id
    # The old image is untagged now; drop it so rebuilds do not pile up dangling images.
    if previous and previous != new:
        try:
            client.images.remove(previous)
        except docker.errors.APIError as exc:
            log.debug("kept the previous sandbox image %s: %s", previous, exc)
    log.info("built %s (%s) in %.0f ms", tag, RECIPE, (time.monotonic() - start) * 1000)
    return new

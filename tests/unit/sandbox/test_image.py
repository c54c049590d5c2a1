"""The registry-free sandbox image."""

from __future__ import annotations

import io
import pwd
import tarfile

import docker.errors
import pytest

from sandbox.base import SANDBOX_UID
from sandbox.image import RECIPE, RECIPE_LABEL, build_image, image_id, skeleton_tar


def test_skeleton_has_a_real_sbin_and_an_unprivileged_user():
    with tarfile.open(fileobj=io.BytesIO(skeleton_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        passwd = tar.extractfile("etc/passwd").read().decode()

    assert members["sbin"].isdir()  # docker-init is mounted at /sbin/docker-init
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["tmp"].mode == 0o1777
    assert "sandbox:x:64000:64000:" in passwd
    with pytest.raises(KeyError):  # nobody on the host: a script never acts as a person
        pwd.getpwuid(SANDBOX_UID)
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert skeleton_tar() == skeleton_tar()  # reproducible


@pytest.mark.docker
def test_build_is_idempotent_and_a_forced_rebuild_replaces_the_image(docker_client):
    tag = "autoannotator-sandbox:test-rebuild"
    try:
        first = build_image(docker_client, tag=tag)
        assert build_image(docker_client, tag=tag) == first
        assert image_id(docker_client, tag) == first
        assert docker_client.images.get(tag).labels[RECIPE_LABEL] == RECIPE

        second = build_image(docker_client, tag=tag, force=True)

        assert second != first
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(first)  # no dangling image left behind
    finally:
        docker_client.images.remove(tag, force=True)

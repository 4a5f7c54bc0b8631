"""Glob expansion: symlinks followed, and what a link resolved to reused only while valid."""

import os

from shipper.tail.discovery import Resolved, expand


def test_a_replaced_link_is_resolved_again_and_an_unchanged_one_reused(tmp_path):
    pods = tmp_path / "pods"
    pods.mkdir()
    (pods / "a.log").write_text("a\n")
    (pods / "b.log").write_text("b\n")
    links = tmp_path / "containers"
    links.mkdir()
    os.symlink(pods / "a.log", links / "x.log")
    os.symlink(pods / "a.log", links / "y.log")
    resolved: Resolved = {}
    pattern = [str(links / "*.log")]
    first = expand(pattern, [], resolved)
    assert {p: f.real for p, f in first.items()} == {
        str(links / "x.log"): str(pods / "a.log"),
        str(links / "y.log"): str(pods / "a.log"),
    }
    os.unlink(links / "y.log")  # the kubelet re-creates a link for a new container
    os.symlink(pods / "b.log", links / "y.log")
    second = expand(pattern, [], resolved)
    assert second[str(links / "y.log")].real == str(pods / "b.log")
    assert second[str(links / "y.log")].ino == os.stat(pods / "b.log").st_ino
    assert second[str(links / "x.log")] == first[str(links / "x.log")]
    os.unlink(links / "x.log")
    assert set(expand(pattern, [], resolved)) == set(resolved) == {str(links / "y.log")}

"""`invoke publish-image` never leaves two Glance images under one name (the real upload: tests/e2e/test_publish.py).

CI failed once because the same commit was built twice on one day (a local run, then CI) and both builds were
published as `debian-12-jupyter-DATE-COMMIT`: every lookup of that name became ambiguous.
"""

from __future__ import annotations

import pytest
from invoke import Exit

from devtools.images.publish import GlanceImage, glance_target

NAME = "debian-12-jupyter-20261126-6e81cb7"
OURS, THEIRS = "a" * 64, "b" * 64


def img(id_: str, name: str = NAME, sha256: str = THEIRS, status: str = "active") -> GlanceImage:
    return GlanceImage(id_, name, status, sha256)


def test_a_free_name_is_used_as_is():
    assert glance_target(NAME, False, OURS, [img("x", "other")]) == (NAME, None)


def test_the_same_build_already_in_glance_is_reused_not_uploaded_again():
    # a clean clone's manifest does not know the earlier publish: Glance's checksum property does
    assert glance_target(NAME, False, OURS, [img("old", sha256=OURS)]) == (NAME, "old")
    assert glance_target(NAME, False, OURS, [img("old"), img("mine", f"{NAME}-2", OURS)]) == (f"{NAME}-2", "mine")


def test_force_uploads_the_same_build_again_under_a_free_name():
    assert glance_target(NAME, False, OURS, [img("old", sha256=OURS)], force=True) == (f"{NAME}-2", None)


def test_a_copy_that_is_not_active_is_not_reused():
    assert glance_target(NAME, False, OURS, [img("q", sha256=OURS, status="queued")]) == (f"{NAME}-2", None)


def test_a_default_name_taken_by_another_build_gets_the_next_free_suffix():
    visible = [img("1"), img("2", f"{NAME}-2"), img("3", f"{NAME}-4")]
    assert glance_target(NAME, False, OURS, visible) == (f"{NAME}-3", None)


def test_a_suffix_of_another_name_is_not_mistaken_for_this_build():
    # "NAME-2x" or "NAME-extra" are not suffixed copies of NAME, even with the same checksum
    visible = [img("1", f"{NAME}-extra", OURS), img("2", f"{NAME}-2x", OURS)]
    assert glance_target(NAME, False, OURS, visible) == (NAME, None)


def test_an_explicit_name_that_is_taken_is_refused_with_the_fix():
    with pytest.raises(Exit) as e:
        glance_target("jupyter", True, OURS, [img("id-2", "jupyter"), img("id-1", "jupyter")])
    assert str(e.value.message) == (
        "publish-image: the cloud already has an image named 'jupyter' (id-1, id-2) that is not this build:"
        " choose another --name, or delete that image first"
    )

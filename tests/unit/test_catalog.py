"""Choices on offer: configured lists, profiles, the build manifest."""

from __future__ import annotations

import json

import pytest

from libcloudspawner.catalog import (
    Catalog,
    CatalogError,
    Choice,
    build_catalog,
    load_manifest,
    manifest_choices,
    normalize_choices,
    normalize_profiles,
)

OVERRIDES = {"userserver_net", "security_groups"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([("1vcpu 2Go RAM", "m1.small")], (Choice("1vcpu 2Go RAM", "m1.small"),)),
        ([["Big", "4c.extramem"]], (Choice("Big", "4c.extramem"),)),
        (["m1.tiny"], (Choice("m1.tiny", "m1.tiny"),)),
        ((), ()),
    ],
)
def test_normalize_choices_accepts_the_original_shapes(value, expected):
    assert normalize_choices(value, "userserver_sizes") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("m1.small", "must be a list"),
        ([("only one",)], "pair"),
        ([("a", "b", "c")], "pair"),
        ([("", "m1")], "non-empty"),
        ([("ok", 3)], "non-empty string"),
        ([("ok", "x" * 300)], "longer than"),
    ],
)
def test_normalize_choices_refuses_clearly(value, message):
    with pytest.raises(CatalogError, match=message):
        normalize_choices(value, "userserver_sizes")


def test_profiles_normalized_with_derived_slug():
    (p,) = normalize_profiles(
        [{"display_name": "Small CPU", "size": "m1.small", "image": "img", "overrides": {"userserver_net": "n"}}],
        OVERRIDES,
    )
    assert (p.slug, p.size, p.image, dict(p.overrides)) == ("small-cpu", "m1.small", "img", {"userserver_net": "n"})


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([{"display_name": "A", "size": "s"}], "image"),
        ([{"display_name": "A", "size": "s", "image": "i", "overrides": {"cmd": ["x"]}}], "cannot set"),
        ([{"display_name": "A", "size": "s", "image": "i", "colour": "red"}], "unknown key"),
        ([{"display_name": "A", "size": "s", "image": "i"}] * 2, "duplicate slug"),
        ([{"display_name": "A", "slug": "Bad Slug", "size": "s", "image": "i"}], "slug"),
        (
            [
                {"display_name": "A", "size": "s", "image": "i", "default": True},
                {"display_name": "B", "size": "s", "image": "i", "default": True},
            ],
            "at most one",
        ),
        (["not a dict"], "must be a dict"),
    ],
)
def test_profiles_refused_clearly(profiles, message):
    with pytest.raises(CatalogError, match=message):
        normalize_profiles(profiles, OVERRIDES)


def _build(name, os_name, published=None, display=None):
    entry = {"name": name, "os": os_name, "published": published or {}}
    if display:
        entry["display_name"] = display
    return entry


def test_manifest_ours_filtered_by_cloud(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "images": [
                    _build("deb-1", "debian-12", {"devcloud": {"image_id": "uuid-1"}}, display="Debian 12"),
                    _build("ubu-1", "ubuntu-22.04", {"other": {"image_id": "uuid-2"}}),
                    _build("deb-local", "debian-12-local"),  # built, never published: not offered
                ],
            }
        )
    )
    assert load_manifest(path, cloud="devcloud") == (Choice("Debian 12", "uuid-1"),)
    assert load_manifest(path, cloud="other") == (Choice("ubu-1", "uuid-2"),)


def test_manifest_offers_the_newest_build_of_each_os():
    data = {
        "images": [
            _build("deb-1", "debian-12", {"c": {"image_id": "uuid-1"}}),
            _build("ubu-1", "ubuntu-22.04", {"c": {"image_id": "uuid-2"}}),
            _build("deb-2", "debian-12", {"c": {"image_id": "uuid-3"}}),
            _build("deb-3", "debian-12"),  # newer, but not published: the published deb-2 stays
        ]
    }
    assert manifest_choices(data, cloud="c") == (Choice("ubu-1", "uuid-2"), Choice("deb-2", "uuid-3"))


def test_manifest_without_cloud_needs_one_cloud():
    one = {"images": [_build("deb-1", "debian-12", {"devcloud": {"image_id": "uuid-1", "image_name": "deb"}})]}
    assert manifest_choices(one) == (Choice("deb", "uuid-1"),)
    two = {"images": [_build("deb-1", "debian-12", {"a": {"image_id": "1"}, "b": {"image_id": "2"}})]}
    with pytest.raises(CatalogError, match="image_manifest_cloud"):
        manifest_choices(two)


def test_manifest_packer_format():
    data = {"builds": [{"name": "qemu", "artifact_id": "abc", "custom_data": {"display_name": "Deb"}}]}
    assert manifest_choices(data) == (Choice("Deb", "abc"),)


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"images": {}}', '{"other": 1}', '{"images": [1]}', '{"images": [{"published": []}]}'],
)
def test_manifest_errors(tmp_path, content):
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(CatalogError):
        load_manifest(path)


def test_build_catalog_merges_manifest_after_configured():
    catalog = build_catalog(
        [("S", "m1.small")],
        [("Default image", "img-a")],
        manifest_images=[Choice("A again", "img-a"), Choice("B", "img-b")],
    )
    assert [c.cloud_name for c in catalog.images] == ["img-a", "img-b"]
    assert catalog.default_image() == Choice("Default image", "img-a")


def test_defaults_prefer_flagged_entries():
    catalog = Catalog(images=(Choice("a", "a"), Choice("b", "b", default=True)))
    assert catalog.default_image().cloud_name == "b"
    assert Catalog().default_size() is None


def test_manifest_choices_carry_the_images_accounts():
    accounts = [{"name": "root", "uid": 0, "sudo": True}, {"name": "jovyan", "uid": 1000, "sudo": False}]
    data = {"images": [{**_build("deb-1", "debian-12", {"c": {"image_id": "uuid-1"}}), "accounts": accounts}]}
    catalog = build_catalog([], [], manifest_images=manifest_choices(data, cloud="c"))
    assert catalog.image_accounts("uuid-1") == {"root", "jovyan"}
    assert catalog.image_accounts("not-offered") == frozenset()


def test_a_configured_image_keeps_the_accounts_the_manifest_records():
    recorded = Choice("B", "uuid-1", accounts=frozenset({"x"}))
    catalog = build_catalog([], [("Mine", "uuid-1")], manifest_images=[recorded])
    assert [c.display_name for c in catalog.images] == ["Mine"]
    assert catalog.image_accounts("uuid-1") == {"x"}


def test_entries_without_accounts_give_none():
    data = {"images": [_build("deb-1", "debian-12", {"c": {"image_id": "uuid-1"}})]}
    assert manifest_choices(data, cloud="c")[0].accounts == frozenset()

"""Form rendering and strict validation of form data and REST user_options."""

from __future__ import annotations

import html.parser

import pytest

from libcloudspawner.catalog import Catalog, Choice, normalize_profiles
from libcloudspawner.options import (
    InvalidUserOptions,
    options_from_form,
    render_form,
    validate_user_options,
)

LISTS = Catalog(
    sizes=(Choice("1vcpu 2Go RAM", "m1.small"), Choice("4vcpu 64Go RAM", "4c.extramem")),
    images=(Choice("Default image", "noo33u16-station-jpy-python"), Choice("R", "r-image")),
)
PROFILES = Catalog(
    sizes=LISTS.sizes,
    images=LISTS.images,
    profiles=normalize_profiles(
        [
            {
                "display_name": "Small",
                "slug": "small",
                "size": "m1.small",
                "image": "r-image",
                "description": "for <b>R</b>",
            },
            {
                "display_name": "Big",
                "slug": "big",
                "size": "4c.extramem",
                "image": "noo33u16-station-jpy-python",
                "default": True,
            },
        ],
        {"userserver_net"},
    ),
)


@pytest.mark.parametrize(
    ("options", "size", "image"),
    [
        ({}, "m1.small", "noo33u16-station-jpy-python"),
        (None, "m1.small", "noo33u16-station-jpy-python"),
        ({"size": "4c.extramem"}, "4c.extramem", "noo33u16-station-jpy-python"),
        ({"size": "m1.small", "image": "r-image"}, "m1.small", "r-image"),
    ],
)
def test_valid_list_options(options, size, image):
    selection = validate_user_options(options, LISTS)
    assert (selection.size, selection.image) == (size, image)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": "m1.huge"}, "Unknown size"),
        ({"image": "ubuntu"}, "Unknown image"),
        ({"size": "1vcpu 2Go RAM"}, "Unknown size"),  # display names are not accepted
        ({"size": ["m1.small"]}, "must be a string"),
        ({"size": 1}, "must be a string"),
        ({"size": None}, "must be a string"),
        ({"image": {"$ne": ""}}, "must be a string"),
        ({"size": "m1.small" * 100}, "too long"),
        ({"size": "m1.small", "flavor": "x"}, "Unknown option"),
        ({"profile": "small"}, "Unknown option"),
        ({"__class__": "x"}, "Unknown option"),
        ([], "JSON object"),
        ("size=m1.small", "JSON object"),
    ],
)
def test_invalid_list_options_refused(options, message):
    with pytest.raises(InvalidUserOptions, match=message):
        validate_user_options(options, LISTS)


@pytest.mark.parametrize(
    ("options", "slug", "size"),
    [({}, "big", "4c.extramem"), ({"profile": "small"}, "small", "m1.small")],
)
def test_valid_profile_options(options, slug, size):
    selection = validate_user_options(options, PROFILES)
    assert (selection.profile.slug, selection.size) == (slug, size)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "gpu"}, "Unknown profile"),
        ({"size": "m1.small"}, "Unknown option"),
        ({"profile": "small", "image": "r-image"}, "Unknown option"),
        ({"profile": 3}, "must be a string"),
    ],
)
def test_invalid_profile_options_refused(options, message):
    with pytest.raises(InvalidUserOptions, match=message):
        validate_user_options(options, PROFILES)


def test_error_message_does_not_echo_huge_values():
    with pytest.raises(InvalidUserOptions) as info:
        validate_user_options({"x" * 10000: "y"}, LISTS)
    assert len(str(info.value)) < 300


def test_invalid_options_is_a_value_error():
    assert issubclass(InvalidUserOptions, ValueError)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"size": ["m1.small"], "image": ["r-image"], "_xsrf": ["tok"]}, {"size": "m1.small", "image": "r-image"}),
        ({}, {}),
    ],
)
def test_options_from_form(form, expected):
    assert options_from_form(form) == expected


@pytest.mark.parametrize("form", [{"size": ["a", "b"]}, {"size": []}, {"size": "a"}])
def test_options_from_form_one_value_per_field(form):
    with pytest.raises(InvalidUserOptions):
        options_from_form(form)


class _FormReader(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields: dict[str, list[tuple[str, bool]]] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "option":
            self._option = a
        if tag == "select":
            self._select = a["name"]
        if tag == "option":
            self.fields.setdefault(self._select, []).append((a["value"], "selected" in a))
        if tag == "input" and a.get("type") == "radio":
            self.fields.setdefault(a["name"], []).append((a["value"], "checked" in a))

    def handle_data(self, data):
        self.text.append(data)


def _read(form_html):
    reader = _FormReader()
    reader.feed(form_html)
    return reader


def test_form_lists_configured_sizes_and_images():
    reader = _read(render_form(LISTS))
    assert reader.fields == {
        "size": [("m1.small", True), ("4c.extramem", False)],
        "image": [("noo33u16-station-jpy-python", True), ("r-image", False)],
    }
    assert "1vcpu 2Go RAM" in "".join(reader.text)


def test_form_preselects_previous_choice():
    reader = _read(render_form(LISTS, {"size": "4c.extramem", "image": "bogus"}))
    assert reader.fields["size"] == [("m1.small", False), ("4c.extramem", True)]
    assert reader.fields["image"][0] == ("noo33u16-station-jpy-python", True)


def test_form_profiles_are_radio_cards_with_default_checked():
    form = render_form(PROFILES)
    assert _read(form).fields == {"profile": [("small", False), ("big", True)]}
    assert "list-group-item" in form and "form-check-input" in form


def test_form_escapes_admin_text():
    catalog = Catalog(sizes=(Choice("<script>alert(1)</script>", 'a"b<'),), images=(Choice("i", "i"),))
    form = render_form(catalog)
    assert "<script>" not in form
    assert _read(form).fields["size"] == [('a"b<', True)]
    assert "<b>R</b>" not in render_form(PROFILES)

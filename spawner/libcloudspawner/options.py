"""The spawn form and the strict validation of what users send (pure: no libcloud, no spawner).

Two doors lead to ``user_options``: the form (``POST /hub/spawn``, a dict of lists of strings) and the REST
API (``POST /hub/api/users/<name>/server`` with any JSON). Both end in :func:`validate_user_options`, which
accepts only the choices the administrator configured: strings, bounded, no extra keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

from .catalog import Catalog, Choice, Profile

#: the longest option value accepted (cloud names are at most 255 characters)
MAX_OPTION_LENGTH = 255
#: form fields JupyterHub itself adds to the spawn form
FORM_IGNORED_KEYS = frozenset({"_xsrf"})


class InvalidUserOptions(ValueError):
    """What the user sent is not one of the configured choices. The message is safe to show them."""


@dataclass(frozen=True)
class Selection:
    """A validated choice: the cloud names to boot, what to tell the user, and the profile if any."""

    size: str
    image: str
    size_display: str
    image_display: str
    profile: Profile | None = None

    def as_user_options(self) -> dict[str, str]:
        if self.profile is not None:
            return {"profile": self.profile.slug}
        return {"size": self.size, "image": self.image}


def _show(value: object) -> str:
    """A short, safe rendering of a user's value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def options_from_form(form_data: Mapping[str, Any]) -> dict[str, str]:
    """Form data (a dict of lists of strings) -> ``{key: str}``; one value per field, nothing else.

    Raises ``InvalidUserOptions``.
    """
    options: dict[str, str] = {}
    for key, values in form_data.items():
        if key in FORM_IGNORED_KEYS:
            continue
        if not isinstance(key, str) or len(key) > 64:
            raise InvalidUserOptions(f"Unexpected form field {_show(key)}.")
        if not isinstance(values, list | tuple) or len(values) != 1:
            raise InvalidUserOptions(f"Form field {_show(key)} must have exactly one value.")
        options[key] = values[0]
    return options


def validate_user_options(user_options: Any, catalog: Catalog) -> Selection:
    """Check ``user_options`` against the catalog; return the selection (defaults fill what is missing).

    With profiles configured the only key is ``profile``; otherwise ``size`` and ``image``. Values must be
    strings naming a configured choice (the cloud name, as the form sends it). Anything else raises
    ``InvalidUserOptions`` with a message naming the problem and, where short, the valid values.
    """
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, Mapping):
        raise InvalidUserOptions("user_options must be a JSON object.")
    allowed = ("profile",) if catalog.profiles else ("size", "image")
    extra = [key for key in user_options if key not in allowed]
    if extra:
        shown = ", ".join(_show(k) for k in extra[:5])
        raise InvalidUserOptions(f"Unknown option(s) {shown}; this hub accepts: {', '.join(allowed)}.")
    for key, value in user_options.items():
        if not isinstance(value, str):
            raise InvalidUserOptions(f"Option {key!r} must be a string, not {type(value).__name__}.")
        if len(value) > MAX_OPTION_LENGTH:
            raise InvalidUserOptions(f"Option {key!r} is too long (at most {MAX_OPTION_LENGTH} characters).")

    if catalog.profiles:
        slug = user_options.get("profile")
        profile = catalog.default_profile() if slug is None else catalog.profile(slug)
        if profile is None:
            raise InvalidUserOptions(
                f"Unknown profile {_show(slug)}; choose one of: {_list(p.slug for p in catalog.profiles)}."
            )
        size = catalog.size(profile.size)
        image = catalog.image(profile.image)
        return Selection(
            size=profile.size,
            image=profile.image,
            size_display=size.display_name if size else profile.size,
            image_display=image.display_name if image else profile.image,
            profile=profile,
        )

    size = _pick(user_options.get("size"), catalog.sizes, catalog.default_size(), "size")
    image = _pick(user_options.get("image"), catalog.images, catalog.default_image(), "image")
    return Selection(size.cloud_name, image.cloud_name, size.display_name, image.display_name)


def _pick(value: str | None, choices: tuple[Choice, ...], default: Choice | None, what: str) -> Choice:
    if not choices:
        # the administrator configured nothing to choose from: a configuration error, not the user's
        raise LookupError(f"no {what} is configured (set userserver_{what}s or profiles)")
    if value is None:
        assert default is not None
        return default
    choice = next((c for c in choices if c.cloud_name == value), None)
    if choice is None:
        raise InvalidUserOptions(
            f"Unknown {what} {_show(value)}; choose one of: {_list(c.cloud_name for c in choices)}."
        )
    return choice


def _list(values, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(values[:limit])
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


# ----------------------------------------------------------------------------------------------- form


def render_form(catalog: Catalog, previous: Mapping[str, Any] | None = None) -> str:
    """The options form: radio cards for profiles, else selects for size and image (Bootstrap 5).

    ``previous`` (the last user_options) preselects the user's last choice when it is still valid.
    Every value is HTML-escaped.
    """
    previous = previous if isinstance(previous, Mapping) else {}
    if catalog.profiles:
        return _render_profiles(catalog, previous.get("profile"))
    parts = []
    if catalog.sizes:
        parts.append(_render_select("size", "Instance size", catalog.sizes, previous.get("size")))
    if catalog.images:
        parts.append(_render_select("image", "Image", catalog.images, previous.get("image")))
    return "\n".join(parts)


def _render_select(name: str, label: str, choices: tuple[Choice, ...], selected: Any) -> str:
    if not any(c.cloud_name == selected for c in choices):
        selected = next((c.cloud_name for c in choices if c.default), choices[0].cloud_name)
    options = "\n".join(
        f'    <option value="{escape(c.cloud_name)}"{" selected" if c.cloud_name == selected else ""}>'
        f"{escape(c.display_name)}</option>"
        for c in choices
    )
    return (
        f'<div class="mb-3">\n'
        f'  <label for="lcs-{name}" class="form-label">{escape(label)}</label>\n'
        f'  <select class="form-select" id="lcs-{name}" name="{name}">\n{options}\n  </select>\n'
        f"</div>"
    )


def _render_profiles(catalog: Catalog, selected: Any) -> str:
    if not (isinstance(selected, str) and catalog.profile(selected) is not None):
        selected = catalog.default_profile().slug
    cards = []
    for index, p in enumerate(catalog.profiles):
        checked = " checked" if p.slug == selected else ""
        description = (
            f'\n      <small class="d-block text-body-secondary">{escape(p.description)}</small>'
            if p.description
            else ""
        )
        cards.append(
            f'  <label class="list-group-item d-flex gap-3 py-3" for="lcs-profile-{index}">\n'
            f'    <input class="form-check-input flex-shrink-0" type="radio" name="profile"'
            f' id="lcs-profile-{index}" value="{escape(p.slug)}"{checked}>\n'
            f"    <span>\n      <strong>{escape(p.display_name)}</strong>{description}\n    </span>\n"
            f"  </label>"
        )
    return (
        '<div class="mb-3">\n<p class="form-label">Choose a server profile</p>\n'
        '<div class="list-group">\n' + "\n".join(cards) + "\n</div>\n</div>"
    )

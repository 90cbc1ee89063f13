"""The parts of systemd the double needs to "boot" a unit: unit files, ExecStart=, Environment=, env files.

Pure functions, no I/O. They follow systemd's own parsers (``src/basic/extract-word.c``,
``src/basic/env-file.c``, ``src/core/load-fragment.c``) closely enough that a unit which systemd would
run differently from what a reader of the unit file expects shows up as a test failure in the hub tier:

- ``ExecStart=`` is split into words on whitespace; a word may contain double- or single-quoted parts
  (quotes are removed, whitespace inside them kept); C escapes (``\\n``, ``\\t``, ``\\"``, ``\\\\``,
  ``\\xNN``, octal, ``\\uNNNN``...) are decoded inside and outside quotes; ``%%`` becomes ``%`` (and a few
  specifiers are resolved); at exec time ``$$`` becomes ``$``, ``${VAR}`` is substituted inside a word and
  a word that is exactly ``$VAR`` is replaced by the value split on whitespace.
- ``EnvironmentFile=`` files: ``KEY=value`` lines, ``#``/``;`` comment lines, single quotes literal,
  double quotes with backslash escapes of ``"`` ``\\`` `````` ``$`` only (other backslashes are kept),
  newlines allowed inside quotes, backslash-newline continues a line, trailing whitespace of unquoted
  values dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

WHITESPACE = " \t\n\r"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnitError(ValueError):
    """A unit file or a setting in it that systemd would refuse."""


# --------------------------------------------------------------------------------------------------
# word splitting (extract_first_word with EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE)
# --------------------------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
}


_HEX = "0123456789abcdefABCDEF"
# escape letter -> (digits, base, alphabet, offset of the first digit); octal escapes start with their digit
_NUMERIC_ESCAPES = {"x": (2, 16, _HEX, 1), "u": (4, 16, _HEX, 1), "U": (8, 16, _HEX, 1)}
_NUMERIC_ESCAPES.update({d: (3, 8, "01234567", 0) for d in "01234567"})


def _cunescape_one(text: str, i: int) -> tuple[str, int]:
    """Decode the C escape starting after the backslash at ``text[i]``; return (char, next index)."""
    if i >= len(text):
        raise UnitError("unterminated escape at end of line")
    c = text[i]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 1
    if c not in _NUMERIC_ESCAPES:
        raise UnitError(f"invalid escape sequence: \\{c}")
    n, base, alphabet, offset = _NUMERIC_ESCAPES[c]
    start = i + offset
    digits = text[start : start + n]
    if len(digits) != n or not all(d in alphabet for d in digits):
        raise UnitError(f"invalid \\{c} escape: \\{text[i : start + n]}")
    value = int(digits, base)
    if value == 0 or value > 0x10FFFF:
        raise UnitError(f"invalid \\{c} escape value: \\{text[i : start + n]} is not allowed")
    return chr(value), start + n


def split_words(text: str) -> list[str]:
    """Split a setting value into words the way systemd splits ``ExecStart=`` and ``Environment=``."""
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in WHITESPACE:
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        quote: str | None = None
        while i < n:
            c = text[i]
            if quote is None and c in WHITESPACE:
                break
            if quote is None and c in "'\"":
                quote = c
                i += 1
            elif quote is not None and c == quote:
                quote = None
                i += 1
            elif quote is None and c == "\\" and i + 1 < n and text[i + 1] in WHITESPACE:
                word.append(text[i + 1])  # EXTRACT_UNESCAPE_SEPARATORS
                i += 2
            elif c == "\\":
                ch, i = _cunescape_one(text, i + 1)
                word.append(ch)
            else:
                word.append(c)
                i += 1
        if quote is not None:
            raise UnitError(f"unbalanced quoting in: {text!r}")
        words.append("".join(word))


def expand_specifiers(word: str, specifiers: dict[str, str]) -> str:
    """Resolve ``%x`` specifiers (``%%`` -> ``%``); an unknown specifier is an error, as in systemd."""
    out: list[str] = []
    i = 0
    while i < len(word):
        c = word[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(word):
            raise UnitError(f"dangling % in {word!r}")
        spec = word[i + 1]
        if spec == "%":
            out.append("%")
        elif spec in specifiers:
            out.append(specifiers[spec])
        else:
            raise UnitError(f"unsupported specifier %{spec} in {word!r}")
        i += 2
    return "".join(out)


_VAR_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_VAR_WORD = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


def expand_env_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    """systemd's replace_env_argv: ``$VAR`` words split on whitespace, ``${VAR}`` inline, ``$$`` -> ``$``."""
    result: list[str] = []
    for word in argv:
        m = _VAR_WORD.match(word)
        if m:
            value = env.get(m.group(1), "")
            result.extend(value.split())
            continue
        out: list[str] = []
        i = 0
        while i < len(word):
            if word.startswith("$$", i):
                out.append("$")
                i += 2
                continue
            mb = _VAR_BRACED.match(word, i)
            if mb:
                out.append(env.get(mb.group(1), ""))
                i = mb.end()
                continue
            out.append(word[i])
            i += 1
        result.append("".join(out))
    return result


# --------------------------------------------------------------------------------------------------
# env files (src/basic/env-file.c, parse_env_file_internal)
# --------------------------------------------------------------------------------------------------


# what a character right after "=" opens
_VALUE_OPENERS = {"'": "SINGLE_QUOTE_VALUE", '"': "DOUBLE_QUOTE_VALUE", "\\": "VALUE_ESCAPE"}


def _append_marking_trailing_space(buffer: list[str], c: str, trailing_from: int | None) -> int | None:
    """Append ``c``; return where the run of trailing whitespace now starts in ``buffer`` (None: no such run)."""
    if c not in WHITESPACE:
        trailing_from = None
    elif trailing_from is None:
        trailing_from = len(buffer)
    buffer.append(c)
    return trailing_from


def parse_env_file(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse an ``EnvironmentFile=`` the way systemd does; return (assignments, warnings)."""
    newline = "\n\r"
    env: dict[str, str] = {}
    warnings: list[str] = []
    state = "PRE_KEY"
    key: list[str] = []
    value: list[str] = []
    last_ws: int | None = None  # index into value where trailing whitespace starts
    last_key_ws: int | None = None
    line = 1

    def push() -> None:
        k = "".join(key if last_key_ws is None else key[:last_key_ws])
        v = "".join(value if last_ws is None else value[:last_ws])
        if not _ENV_NAME.match(k):
            warnings.append(f"line {line}: invalid variable name {k!r}, ignoring")
            return
        env[k] = v

    for c in text:
        if state in ("PRE_VALUE", "VALUE") and c in newline:  # the end of an unquoted value
            push()
            state = "PRE_KEY"
        elif state == "PRE_KEY":
            if c in "#;":
                state = "COMMENT"
            elif c not in WHITESPACE:
                state = "KEY"
                key, value, last_ws, last_key_ws = [c], [], None, None
        elif state == "KEY":
            if c in newline:
                warnings.append(f"line {line}: no '=' on the line, ignoring it")
                state = "PRE_KEY"
            elif c == "=":
                state = "PRE_VALUE"  # last_ws is None already: set when the key started
            else:
                last_key_ws = _append_marking_trailing_space(key, c, last_key_ws)
        elif state == "PRE_VALUE":
            if c in _VALUE_OPENERS:
                state = _VALUE_OPENERS[c]
            elif c not in WHITESPACE:
                state = "VALUE"
                value.append(c)
        elif state == "VALUE":
            if c == "\\":
                state = "VALUE_ESCAPE"
                last_ws = None
            else:
                last_ws = _append_marking_trailing_space(value, c, last_ws)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if c not in newline:
                value.append(c)
        elif state == "SINGLE_QUOTE_VALUE":
            if c == "'":
                state = "PRE_VALUE"
            else:
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DOUBLE_QUOTE_VALUE_ESCAPE"
            else:
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE_ESCAPE":
            state = "DOUBLE_QUOTE_VALUE"
            if c in '"\\`$':
                value.append(c)
            elif c == "\n":
                pass
            else:
                value.append("\\")
                value.append(c)
        elif state == "COMMENT":
            if c == "\\":
                state = "COMMENT_ESCAPE"
            elif c in newline:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "COMMENT"
        if c == "\n":
            line += 1

    if state in (
        "PRE_VALUE",
        "VALUE",
        "VALUE_ESCAPE",
        "SINGLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE_ESCAPE",
    ):
        if state in ("SINGLE_QUOTE_VALUE", "DOUBLE_QUOTE_VALUE", "DOUBLE_QUOTE_VALUE_ESCAPE"):
            warnings.append("unterminated quote at end of file, value kept as read")
        push()
    elif state == "KEY" and key:
        warnings.append(f"line {line}: no '=' on the line, ignoring it")
    return env, warnings


# --------------------------------------------------------------------------------------------------
# unit files
# --------------------------------------------------------------------------------------------------


def parse_unit_text(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) lists; continuation lines joined as systemd does."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    pending = ""
    for raw in text.splitlines():
        if pending:
            stripped = raw.strip()
            if stripped.startswith(("#", ";")):
                continue  # comment lines inside a continuation are skipped
            line = pending + raw
            pending = ""
        else:
            line = raw
        if line.rstrip().endswith("\\") and not line.rstrip().endswith("\\\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
            sections.setdefault(current, [])
            continue
        if "=" not in stripped:
            raise UnitError(f"line without '=': {stripped!r}")
        if current is None:
            raise UnitError(f"assignment outside of any section: {stripped!r}")
        k, v = stripped.split("=", 1)
        sections[current].append((k.strip(), v.strip()))
    if pending:
        stripped = pending.strip()
        if stripped and current is not None and "=" in stripped:
            k, v = stripped.split("=", 1)
            sections[current].append((k.strip(), v.strip()))
    return sections


@dataclass
class ServiceSpec:
    """What the [Service] section of a unit (plus its drop-ins) says to run."""

    unit: str
    exec_start: list[str] = field(default_factory=list)  # raw ExecStart= values, in order
    environment: list[str] = field(default_factory=list)  # raw Environment= values
    environment_files: list[str] = field(default_factory=list)
    working_directory: str | None = None
    user: str | None = None
    group: str | None = None
    type: str = "simple"
    restart: str = "no"
    restart_sec: float = 0.1
    other: dict[str, str] = field(default_factory=dict)


_LIST_SETTINGS = {"ExecStart": "exec_start", "Environment": "environment", "EnvironmentFile": "environment_files"}


def service_spec(unit: str, texts: list[str]) -> ServiceSpec:
    """Merge a unit file and its drop-ins (in that order) into a ServiceSpec."""
    spec = ServiceSpec(unit=unit)
    for text in texts:
        for key, value in parse_unit_text(text).get("Service", []):
            if key in _LIST_SETTINGS:  # each line adds to the list; an empty assignment resets it
                attribute = _LIST_SETTINGS[key]
                setattr(spec, attribute, [*getattr(spec, attribute), value] if value else [])
            elif key == "WorkingDirectory":
                spec.working_directory = value or None
            elif key == "User":
                spec.user = value or None
            elif key == "Group":
                spec.group = value or None
            elif key == "Type":
                spec.type = value
            elif key == "Restart":
                spec.restart = value
            elif key == "RestartSec":
                spec.restart_sec = parse_timespan(value)
            else:
                spec.other[key] = value
    return spec


def parse_timespan(value: str) -> float:
    """systemd time spans: ``5``, ``5s``, ``500ms``, ``1min 30s``; a bare number is seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", value):
        if unit not in units:
            raise UnitError(f"bad time span {value!r}")
        total += float(number) * units[unit]
    return total


# Restart= policies: does systemd restart after this exit? (exit code, or -signal as asyncio reports it)
CLEAN_SIGNALS = {1, 2, 13, 15}  # SIGHUP, SIGINT, SIGPIPE, SIGTERM


def restart_wanted(policy: str, returncode: int) -> bool:
    clean = returncode == 0 or (returncode < 0 and -returncode in CLEAN_SIGNALS)
    signalled = returncode < 0 and not clean
    return {
        "always": True,
        "on-success": clean,
        "on-failure": not clean,
        "on-abnormal": signalled,
        "on-abort": signalled,
    }.get(policy, False)


EXEC_PREFIXES = "@-:+!"


def parse_exec_start(value: str, specifiers: dict[str, str]) -> tuple[str, list[str]]:
    """Return (prefix flags, argv template) for one ExecStart= value (no env expansion yet)."""
    value = value.strip()
    prefix = ""
    while value and value[0] in EXEC_PREFIXES:
        prefix += value[0]
        value = value[1:]
    words = split_words(value)
    if not words:
        raise UnitError("empty ExecStart=")
    words = [expand_specifiers(w, specifiers) for w in words]
    if "@" in prefix:
        # "@" means: the second word is argv[0]; the double runs the file (first word) with that argv[0]
        if len(words) < 2:
            raise UnitError("ExecStart=@ needs a second word")
        words = [words[0], *words[2:]]
    return prefix, words


def environment_assignments(values: list[str], specifiers: dict[str, str]) -> dict[str, str]:
    """Decode Environment= values: each is a list of quoted ``KEY=value`` words."""
    env: dict[str, str] = {}
    for value in values:
        for word in split_words(value):
            word = expand_specifiers(word, specifiers)
            if "=" not in word:
                raise UnitError(f"Environment= word without '=': {word!r}")
            k, v = word.split("=", 1)
            if not _ENV_NAME.match(k):
                raise UnitError(f"invalid environment variable name {k!r}")
            env[k] = v
    return env

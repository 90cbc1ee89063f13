"""Independent readers of the two systemd formats the user-data carries (test helpers, no spawner code).

Written from systemd's documentation and sources (``env-file.c``, ``extract-word.c``), not from the
renderer, so a round trip through them proves the rendering, not just its symmetry.
"""

from __future__ import annotations

_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
              '"': '"', "'": "'", "s": " "}  # fmt: skip


def parse_env_file(text: str) -> dict[str, str]:
    """systemd ``EnvironmentFile=``: ``KEY=value``; in double quotes ``\\`` escapes only ``"\\`$`` and
    newline (continuation); other backslashes are kept; raw newlines stay inside quotes."""
    env: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\r\n":
            i += 1
            continue
        if text[i] in "#;":
            while i < n and text[i] != "\n":
                i += 1
            continue
        eq = text.index("=", i)
        key = text[i:eq].strip()
        i = eq + 1
        value = []
        if i < n and text[i] == '"':
            i += 1
            while True:
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    nxt = text[i + 1]
                    if nxt in '"\\`$':
                        value.append(nxt)
                    elif nxt == "\n":
                        pass
                    else:
                        value.append("\\" + nxt)
                    i += 2
                    continue
                value.append(c)
                i += 1
            rest = ""
            while i < n and text[i] != "\n":
                rest += text[i]
                i += 1
            assert rest.strip() == "", f"garbage after the closing quote of {key}: {rest!r}"
        else:
            while i < n and text[i] != "\n":
                value.append(text[i])
                i += 1
            value = list("".join(value).rstrip())
        env[key] = "".join(value)
    return env


def split_exec_start(line: str) -> list[str]:
    """systemd ``ExecStart=`` words: quotes removed, C escapes decoded, ``%%`` -> ``%``, ``$$`` -> ``$``.

    Any other ``%`` specifier or ``$`` expansion fails the test: the renderer must never leave one.
    """
    words: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return words
        word = []
        quote = None
        while i < n:
            c = line[i]
            if quote is None and c in " \t":
                break
            if c in "\"'" and (quote is None or quote == c):
                quote = None if quote else c
                i += 1
            elif c == "\\":
                e = line[i + 1]
                if e == "x":
                    word.append(chr(int(line[i + 2 : i + 4], 16)))
                    i += 4
                elif e == "u":
                    word.append(chr(int(line[i + 2 : i + 6], 16)))
                    i += 6
                elif e in _C_ESCAPES:
                    word.append(_C_ESCAPES[e])
                    i += 2
                else:
                    raise AssertionError(f"unknown escape \\{e} in {line!r}")
            elif c == "%":
                assert line[i + 1] == "%", f"unescaped specifier in {line!r}"
                word.append("%")
                i += 2
            elif c == "$":
                assert line[i + 1] == "$", f"unescaped variable in {line!r}"
                word.append("$")
                i += 2
            else:
                word.append(c)
                i += 1
        assert quote is None, f"unbalanced quotes in {line!r}"
        words.append("".join(word))


def unit_settings(text: str) -> dict[str, str]:
    """``Key=value`` settings of a unit file (last one wins; sections flattened)."""
    settings = {}
    for raw in text.split("\n"):
        if not raw or raw.startswith(("[", "#", ";")):
            continue
        key, _, value = raw.partition("=")
        settings[key.strip()] = value
    return settings

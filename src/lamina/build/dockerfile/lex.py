"""Variable substitution and word splitting exactly as Docker's shell lexer does it.

A port of BuildKit's ``frontend/dockerfile/shell/lex.go`` (``ProcessWord``/``ProcessWords``): ``$X``,
``${X}``, ``${X:-d}``, ``${X-d}``, ``${X:+d}``, ``${X+d}``, ``${X:?msg}``, ``${X?msg}``, ``${X#p}``,
``${X##p}``, ``${X%p}``, ``${X%%p}``, ``${X/p/r}``, ``${X//p/r}``; single quotes are literal, double
quotes expand ``$`` and honour the escape character before ``"``, ``$`` and itself; the escape
character (``\\`` or the ``# escape=`` directive's backtick) escapes anything outside quotes. Which
instructions expand is the converter's business, not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ExpansionError", "Lexer", "process_word", "process_words"]

_SPECIAL_PARAMS = "@*#?-$!0"


class ExpansionError(ValueError):
    """A word could not be expanded (bad substitution, unset ``${X:?}``, unterminated quote)."""


@dataclass
class _Words:
    """Word splitting after expansion (Go's ``wordsStruct``): quoted text never splits."""

    word: str = ""
    words: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


@dataclass
class Lexer:
    """One configuration of the lexer (BuildKit's ``Lex`` flags)."""

    escape: str = "\\"
    raw_quotes: bool = False  # keep the quote characters in the result
    raw_escapes: bool = False  # keep the escape characters in the result
    skip_quotes: bool = False  # quotes are ordinary characters (heredoc bodies)
    skip_unset: bool = False  # leave references to unset variables as written

    def process(self, word: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
        """The expanded word and its split into words."""
        try:
            return _Scan(self, word, env).process_stop_on(None, self.raw_escapes)
        except ExpansionError as exc:
            raise ExpansionError(f"failed to process {word!r}: {exc}") from None


def process_word(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Docker's ``ProcessWord``: expand variables and remove quotes, keeping the spaces."""
    return Lexer(escape=escape).process(word, env)[0]


def process_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Docker's ``ProcessWords``: expand, then split on unquoted whitespace."""
    return Lexer(escape=escape).process(word, env)[1]


class _Scan:
    def __init__(self, lexer: Lexer, text: str, env: Mapping[str, str]) -> None:
        self.lx = lexer
        self.text = text
        self.pos = 0
        self.env = env
        self.raw_escapes = lexer.raw_escapes

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def next(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def process_stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str | None) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        escape = self.lx.escape
        while (ch := self.peek()) is not None:
            if stop is not None and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "$":
                text = self.dollar()
                result.append(text)
                words.add_string(text)
            elif ch in "'\"" and not self.lx.skip_quotes:
                text = self.single_quote() if ch == "'" else self.double_quote()
                result.append(text)
                words.add_raw(text)
            else:
                ch = self.next()
                assert ch is not None
                if ch == escape:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch is None:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop is not None:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        out: list[str] = []
        quote = self.next()
        if self.lx.raw_quotes and quote:
            out.append(quote)
        while True:
            ch = self.next()
            if ch is None:
                raise ExpansionError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        out: list[str] = []
        quote = self.next()
        if self.lx.raw_quotes and quote:
            out.append(quote)
        escape = self.lx.escape
        while True:
            ch = self.peek()
            if ch is None:
                raise ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            assert ch is not None
            if ch == escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following is None:
                    continue  # a trailing escape is dropped; the loop then reports the missing quote
                if following in ('"', "$", escape):
                    ch = self.next()
                    assert ch is not None
            out.append(ch)

    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    def name(self) -> str:
        out: list[str] = []
        while (ch := self.peek()) is not None:
            if not out and ch.isdecimal():
                while (d := self.peek()) is not None and d.isdecimal():
                    out.append(d)
                    self.next()
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                self.next()
                return ch
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            out.append(ch)
            self.next()
        return "".join(out)

    def dollar(self) -> str:
        self.next()  # the '$'
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lx.skip_unset:
                return "$" + name
            return value
        self.next()  # the '{'
        first = self.peek()
        if first is None:
            raise ExpansionError("syntax error: missing '}'")
        if first in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch is None:
            raise ExpansionError("syntax error: missing '}'")
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lx.skip_unset:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self._replace(name)
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            if ch is None:
                raise ExpansionError("syntax error: missing '}'")
            modifier += ch
        if ch not in "+-?#%":
            raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        word = self._word_until("}", ch in "#%", "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.lx.skip_unset and not found:
            return "${" + name + modifier + word + "}"
        unset = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if unset else value
        if ch == "+":
            return "" if unset else word
        if ch == "?":
            if not found:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        if ch == "%":
            return _trim_suffix(word, value, greedy)
        return _trim_prefix(word, value, greedy)

    def _word_until(self, stop: str, raw_escapes: bool, missing: str) -> str:
        """The word up to ``stop``; an error at the end of input becomes ``missing`` (the unclosed part)."""
        try:
            word, _ = self.process_stop_on(stop, raw_escapes)
        except ExpansionError:
            if self.peek() is None:
                raise ExpansionError(missing) from None
            raise
        return word

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self._word_until("/", True, "syntax error: missing '/' in ${}")
        replacement = self._word_until("}", True, "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.lx.skip_unset and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return regex.sub(lambda _m: replacement, value)
        return regex.sub(lambda _m: replacement, value, count=1)


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell wildcard pattern (``*``, ``?``, ``\\`` escapes; no brackets) as a regex, as lex.go does."""
    out = ["^"] if anchored else []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            if i < len(pattern) and pattern[i] in "}/":
                continue
            nxt = pattern[i] if i < len(pattern) else ""
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise ExpansionError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            out.append(re.escape(nxt))
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each escape before the character it escapes."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i : i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]

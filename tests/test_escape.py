"""gradgen.escape.one_line: the one gate between spec text and generated code."""

from __future__ import annotations

import ast
import io
import sys
import tokenize

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradgen.escape import ELLIPSIS, MAX_CHARS, one_line

# Every code point, lone surrogates included.
ANY_TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=sys.maxunicode), max_size=300)


def docstring_value(line: str) -> str:
    """What a docstring holding ``line`` (between other text, as the templates place it) evaluates to."""
    return ast.literal_eval(f'"""m: {line}\n\nmore"""').split("\n")[0][len("m: ") :]


def comment_tokens(line: str) -> list[tokenize.TokenInfo]:
    source = f"x = 1  # {line}\ny = 2\n"
    return [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.NL]


@pytest.mark.parametrize(
    "text, line",
    [
        (
            "Two-layer perceptron with softmax cross-entropy.",
            "Two-layer perceptron with softmax cross-entropy.",
        ),
        ("x @ W1 + b1", "x @ W1 + b1"),
        ("relu rule (relu'(0) = 0)", "relu rule (relu'(0) = 0)"),
        ("déjà vu 勾配 ∂L/∂x", "déjà vu 勾配 ∂L/∂x"),
        ("C:\\Users", "C:\\\\Users"),
        ('say "hi"', 'say \\"hi\\"'),
        ("a\nb\rc\td", "a\\\\nb\\\\rc\\\\td"),
        ("\x00\x07\x1b[31m", "\\\\x00\\\\x07\\\\x1b[31m"),
        (
            "\x85\u2028\u2029\x0b\x0c\x1c\x1d\x1e",
            "\\\\x85\\\\u2028\\\\u2029\\\\x0b\\\\x0c\\\\x1c\\\\x1d\\\\x1e",
        ),
        ("\u202e\u200b\ufeff", "\\\\u202e\\\\u200b\\\\ufeff"),  # bidi override, zero width, BOM
        ("\ud800\udfff", "\\\\ud800\\\\udfff"),  # lone surrogates
        ("\U000e0001\U0010ffff", "\\\\U000e0001\\\\U0010ffff"),  # a tag character, a private one
        ("\xa0nbsp", "\\\\xa0nbsp"),  # a space that is not U+0020
    ],
)
def test_one_line(text, line):
    assert one_line(text) == line


def test_docstring_shows_the_escapes_not_the_characters():
    assert docstring_value(one_line('C:\\Users "me"\n\x00')) == 'C:\\Users "me"\\n\\x00'


def test_cut_at_a_fixed_length_never_inside_an_escape():
    assert one_line("a" * MAX_CHARS) == "a" * MAX_CHARS
    assert one_line("a" * (MAX_CHARS + 1)) == "a" * (MAX_CHARS - 3) + ELLIPSIS
    cut = one_line("a" * (MAX_CHARS - 4) + "\n" + "b" * 10)
    assert cut == "a" * (MAX_CHARS - 4) + ELLIPSIS  # the 3-character escape of \n does not fit
    assert len(one_line("\x00" * 1000)) <= MAX_CHARS
    assert one_line("x" * 50, limit=10) == "xxxxxxx..."


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(ANY_TEXT)
def test_any_text_is_one_printable_line_safe_in_a_docstring_and_a_comment(text):
    line = one_line(text)
    assert len(line) <= MAX_CHARS
    assert line.isprintable() and len(line.splitlines()) <= 1
    line.encode("utf-8")  # no lone surrogate is left
    value = docstring_value(line)  # compiles inside a docstring and does not close it
    assert value.isprintable() and "\n" not in value
    tokens = comment_tokens(line)  # one comment token, then the next statement as usual
    kinds = [tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.COMMENT, tokenize.NEWLINE]
    assert [t.type for t in tokens][:5] == kinds
    assert tokens[3].string.rstrip() == f"# {line}".rstrip()
    assert [t.string for t in tokens[5:8]] == ["y", "=", "2"]


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S", "Zs"]), max_size=MAX_CHARS))
def test_ordinary_text_is_left_alone(text):
    assume('"' not in text and "\\" not in text)
    assert one_line(text) == text

"""Stage 6, format: black with one fixed Mode, never the user's configuration."""

from __future__ import annotations


def black_format(source: str) -> str:
    import black

    mode = black.Mode(
        target_versions={black.TargetVersion.PY310},
        line_length=100,
        string_normalization=True,
        is_pyi=False,
        magic_trailing_comma=True,
        preview=False,
    )
    return black.format_str(source, mode=mode)

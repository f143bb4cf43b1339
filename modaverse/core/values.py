"""Checks of single values typed by users (CLI flags, form fields), as plain functions raising ValueError.

The CLI turns the ValueError into argparse's one-line usage error; settings dataclasses
name the same functions for their fields, so a bound is written once.
"""

from __future__ import annotations


def number(text: str | float, cast: type = float):
    try:
        return cast(text)
    except (TypeError, ValueError):
        what = "whole number" if cast is int else "number"
        raise ValueError(f"{text!r} is not a {what}") from None


def positive_int(text: str | int) -> int:
    value = number(text, int)
    if value < 1:
        raise ValueError(f"{value} is not a positive number")
    return value


def count(text: str | int) -> int:
    value = number(text, int)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def positive_float(text: str | float) -> float:
    value = number(text)
    if not value > 0:
        raise ValueError(f"{value} is not a positive number")
    return value


def fraction(text: str | float) -> float:
    value = number(text)
    if not 0 <= value <= 1:
        raise ValueError(f"{value} is not between 0 and 1")
    return value

"""Counting the `--set` value parser and a configuration class's constructor (issue 22: an option
is parsed once and its configuration built once), for tests/test_parse_once.py and the CLI run
of tests/test_cli.py."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import harness.options as options


@contextmanager
def counting_parses_and_builds(config_cls: type) -> Iterator[tuple[Counter, list[dict]]]:
    """(parses by value text, keyword arguments of each `config_cls` construction), filled by
    every call inside the block."""
    parses: Counter = Counter()
    builds: list[dict] = []
    parse_value, init = options.parse_value, config_cls.__init__

    def counting_parse(text):
        parses[text] += 1
        return parse_value(text)

    def counting_init(self, *args, **kwargs):
        builds.append(kwargs)
        init(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(options, "parse_value", counting_parse)
        patch.setattr(config_cls, "__init__", counting_init)
        yield parses, builds

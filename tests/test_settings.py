"""xpcnn.settings: read once from the environment, checked when given, changed only inside a ``with`` block."""

from __future__ import annotations

import gc

import pytest

import xpcnn
from xpcnn.settings import from_environ


@pytest.mark.parametrize("changes, error", [
    ({"kernels": "no"}, "kernels must be True or False"),
    ({"num_threads": True}, "num_threads must be a whole number"),
    ({"split_min_bytes": -5}, "split_min_bytes must be a whole number >= 0"),
    ({"direct_max_channels": 0}, "direct_max_channels must be a whole number >= 1 or None"),
    ({"cache_dir": 123}, "cache_dir must be a folder path or None"),
    ({"bogus": 1}, "unknown setting.*bogus"),
])
def test_a_bad_setting_is_refused_when_given(changes, error) -> None:
    before = xpcnn.settings.current()
    with pytest.raises((TypeError, ValueError), match=error):
        xpcnn.settings(**changes)  # the call itself checks, before any `with`
    assert xpcnn.settings.current() == before


def test_a_call_without_with_changes_nothing_and_says_so() -> None:
    before = xpcnn.settings.current()
    with pytest.warns(RuntimeWarning, match="only inside a `with` block"):
        xpcnn.settings(kernels=not before.kernels)
        gc.collect()
    assert xpcnn.settings.current() == before


def test_overrides_nest_and_unwind() -> None:
    before = xpcnn.settings.current()
    with xpcnn.settings(num_threads=3) as outer:
        assert outer.num_threads == 3
        with xpcnn.settings(kernels=False):
            assert xpcnn.settings.current().num_threads == 3 and not xpcnn.settings.current().kernels
        assert xpcnn.settings.current() == outer
    assert xpcnn.settings.current() == before


@pytest.mark.parametrize("value, kernels", [("0", False), ("1", True), ("off", False), ("yes", True)])
def test_the_kernel_switch_reads_clear_values(value, kernels) -> None:
    assert from_environ({"XPCNN_KERNELS": value}).kernels is kernels
    assert from_environ({"XPCNN_NUMBA": value}).kernels is kernels


def test_the_kernel_switch_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="XPCNN_KERNELS must be 0 .* or 1, got 'maybe'"):
        from_environ({"XPCNN_KERNELS": "maybe"})

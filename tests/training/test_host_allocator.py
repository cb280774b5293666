"""The CPU allocator setting: applied on glibc, skipped when asked."""

import platform

import pytest

from megatron.training.host_allocator import keep_freed_host_memory


def test_opt_out(monkeypatch):
    monkeypatch.setenv("MEGATRON_LTD_KEEP_HOST_MEMORY", "0")
    assert keep_freed_host_memory() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_applied_on_glibc(monkeypatch):
    monkeypatch.delenv("MEGATRON_LTD_KEEP_HOST_MEMORY", raising=False)
    assert keep_freed_host_memory() is True
    assert keep_freed_host_memory() is True  # idempotent

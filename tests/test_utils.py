import platform

import pytest

from osteoscreen.core.utils import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's")
def test_glibc_accepts_the_allocator_settings():
    assert keep_freed_memory() is True
